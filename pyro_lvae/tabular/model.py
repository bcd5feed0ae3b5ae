"""A VAE for one table: the encoding, the mixed observation model and training in one object."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyro
import torch

from ..errors import CheckpointError, check_positive_int
from ..limits import check_memory
from ..observations.table import MixedObservation
from ..training import ProgressBar
from ..training import fit as train
from ..vae import VAE, mlp_vae
from .encoding import TableTransformer

__all__ = ["TabularModel"]


class TabularModel:
    """A VAE trained on a table, with the table's encoding: fit on a ``DataFrame`` or numpy
    array, sample new rows with the original columns, types and categories.

    Example::

        >>> import pandas as pd, pyro_lvae as lv
        >>> df = pd.DataFrame({"x": [0.5, 1.25, 2.0, 2.5] * 10, "c": list("abab") * 10})
        >>> model = lv.tabular.TabularModel.fit(df, steps=20, hidden=16, blocks=1, seed=0)
        >>> synth = model.sample(5, seed=0)
        >>> list(synth.columns), set(synth["c"]) <= {"a", "b"}
        (['x', 'c'], True)
    """

    MODEL_FILE = "model.pt"
    TRANSFORM_FILE = "transform.json"

    def __init__(self, vae: Any, transformer: TableTransformer, history: Any = None) -> None:
        self.vae, self.transformer, self.history = vae, transformer, history

    @classmethod
    def fit(cls, table: Any, *, categorical=(), numeric=(), continuous: str = "standard",
            integers: str = "discrete", missing: str = "error",
            sigma_mode: str = "learned-channel", sigma: float | None = None,
            min_scale: float = 1e-3, latent_dim: int = 8, hidden: int = 128, blocks: int = 2,
            steps: int = 3000, batch_size: int = 128, lr: float = 1e-3, beta: Any = 1.0,
            seed: int | None = 0, device: str = "auto", progress: bool | None = None,
            out: str | Path | None = None) -> TabularModel:
        """Encode ``table`` and train a residual-MLP VAE with a
        :class:`~pyro_lvae.observations.MixedObservation` on it (see
        :class:`TableTransformer` and :func:`pyro_lvae.fit` for the arguments; ``integers``:
        integer-valued columns on their lattice, ``"discrete"``, or as continuous)."""
        transformer = TableTransformer.fit(table, categorical=categorical, numeric=numeric,
                                           continuous=continuous, missing=missing,
                                           integers=integers)
        x = transformer.transform(table, missing=missing)
        if seed is not None:
            pyro.set_rng_seed(seed)
        observation = MixedObservation(transformer.schema(), sigma_mode, sigma=sigma,
                                       min_scale=min_scale)
        vae = mlp_vae(x.shape[1], latent_dim, observation, hidden=hidden, blocks=blocks,
                      standardize=False)  # the transformer already standardises
        history = train(vae, x, steps=steps, batch_size=min(batch_size, len(x)), lr=lr,
                        beta=beta, seed=seed, device=device, out=out,
                        tools=[ProgressBar(progress)])
        model = cls(vae, transformer, history)
        if out is not None:
            model.save(out)
        return model

    @torch.no_grad()
    def sample(self, n: int, continuous: str = "sample", discrete: str = "sample",
               seed: int | None = None):
        """``n`` synthetic rows as a ``DataFrame``: ``z ~ N(0, I)``, then each column drawn
        (or at its mean / likelier value, see :meth:`MixedColumns.draw`). The rows are drawn at
        once: an ``n`` whose latent codes, decoder activations and table cells would need more
        than the machine's memory (:mod:`pyro_lvae.limits`) is a
        :class:`~pyro_lvae.errors.ConfigError`, raised before anything is drawn."""
        n = check_positive_int("n", n)
        widths = [m.out_features for m in self.vae.model.decoder.modules()
                  if isinstance(m, torch.nn.Linear)] or [0]
        # a row's code, two layers of activations alive at once, the decoder's output, and the
        # table's cells (float64 arrays and the DataFrame's values)
        per_row = (4 * (self.vae.latent_dim + 2 * max(widths) + widths[-1])
                   + 32 * len(self.transformer.columns))
        check_memory("n", n, n * per_row, "the rows, drawn at once (latent codes, the decoder's "
                     "activations and the table's cells)")
        if seed is not None:
            torch.manual_seed(seed)
        z = torch.randn(n, self.vae.latent_dim, device=self.vae.device)
        rows = self.vae.likelihood(z).draw(continuous, discrete)
        return self.transformer.inverse_transform(rows)

    def encode(self, table: Any) -> torch.Tensor:
        """The table's rows as the model sees them (:meth:`TableTransformer.transform`)."""
        return self.transformer.transform(table)

    def save(self, folder: str | Path) -> None:
        """Write the model and the encoding into ``folder`` (created if needed)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.vae.save(folder / self.MODEL_FILE)
        self.transformer.save(folder / self.TRANSFORM_FILE)

    @classmethod
    def load(cls, folder: str | Path, map_location: Any = None) -> TabularModel:
        """Read a model written by :meth:`save`; ``map_location`` as in :func:`torch.load`."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"no such folder: {folder}")
        transformer = TableTransformer.load(folder / cls.TRANSFORM_FILE)
        model_path = folder / cls.MODEL_FILE
        if not model_path.exists():
            model_path = folder / "checkpoint.pt"
        vae = VAE.load(model_path, map_location=map_location)
        obs = vae.observation
        if getattr(obs, "schema", None) != transformer.schema():
            raise CheckpointError(f"{folder}: the model's columns do not match "
                                  f"{cls.TRANSFORM_FILE}")
        return cls(vae, transformer)
