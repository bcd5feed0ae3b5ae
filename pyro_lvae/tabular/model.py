"""A VAE for one table: the encoding, the mixed observation model and training in one object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyro
import torch

from ..errors import CheckpointError, ConfigError, check_positive_int
from ..io import atomic_write_text, safe_load
from ..limits import check_memory
from ..observations.table import MixedObservation
from ..training import ProgressBar
from ..training import fit as train
from ..training.checkpoint import (
    BEST_NAME,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    RUN_FORMAT,
    checkpoint_identity,
    marker_of,
    new_run_id,
    other_kind_error,
    resume_identity,
    run_identity,
)
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
    #: the files :meth:`fit` writes into ``out`` (config.json marks the folder as a tabular
    #: model's, with the run's identity that its checkpoint carries too)
    FILES = (MODEL_FILE, TRANSFORM_FILE, CONFIG_NAME, CHECKPOINT_NAME, BEST_NAME)

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
        integer-valued columns on their lattice, ``"discrete"``, or as continuous). With
        ``out``, a folder that already holds any of :attr:`FILES` is refused before anything
        is done."""
        if out is not None:
            cls.check_new_folder(out)
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
        run_id = new_run_id()
        with run_identity("tabular", run_id):
            history = train(vae, x, steps=steps, batch_size=min(batch_size, len(x)), lr=lr,
                            beta=beta, seed=seed, device=device, out=out,
                            tools=[ProgressBar(progress)])
        model = cls(vae, transformer, history)
        if out is not None:
            from .. import __version__

            model.save(out)
            spec = getattr(beta, "spec", None)
            config = {
                "format": RUN_FORMAT, "kind": "tabular", "run_id": run_id,
                "version": __version__, "categorical": _names(categorical),
                "numeric": _names(numeric), "continuous": continuous, "integers": integers,
                "missing": missing, "sigma_mode": sigma_mode, "sigma": sigma,
                "min_scale": min_scale, "latent_dim": latent_dim, "hidden": hidden,
                "blocks": blocks, "steps": steps, "batch_size": batch_size, "lr": lr,
                "beta": spec() if callable(spec) else beta if isinstance(beta, (int, float))
                else repr(beta), "seed": seed, "device": str(device)}
            atomic_write_text(json.dumps(config, indent=2) + "\n", Path(out) / CONFIG_NAME)
        return model

    @classmethod
    def check_new_folder(cls, folder: str | Path, also: tuple[str, ...] = (),
                         flag: str = "out=") -> None:
        """Refuse to fit a model into ``folder`` if it holds any of :attr:`FILES` (or of
        ``also``): a model, a run of ``pyro-lvae train`` or anyone's files would be
        replaced. ``flag`` names the argument in the message."""
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"{flag} {folder} is a file; give the folder to write the "
                              f"model into")
        taken = [n for n in (*cls.FILES, *also) if (folder / n).exists()]
        if not taken:
            return
        kind = _folder_kind(folder)
        what = (f"is a run of pyro-lvae train ({', '.join(taken)})" if kind == "train"
                else f"already holds a model ({', '.join(taken)})"
                if cls.MODEL_FILE in taken or kind == "tabular"
                else f"already holds {', '.join(taken)}, which fitting a model would replace")
        raise ConfigError(f"{folder} {what}; choose another folder ({flag})")

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
        _check_tabular_folder(folder)
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


def _names(columns: Any) -> Any:
    """Column names as config.json records them (a list; one name as given)."""
    return columns if isinstance(columns, str) else [str(c) for c in columns]


def _folder_kind(folder: Path) -> str | None:
    """Which command wrote ``folder``: its config.json's marker, ``"train"`` for the
    config.json of a train run of an earlier version, else ``None``."""
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return None
    marker = marker_of(config)
    if marker is not None:
        return marker["kind"]
    return "train" if isinstance(config, dict) and "dataset" in config else None


def _check_tabular_folder(folder: Path) -> None:
    """Refuse a folder that is not a tabular model's: a config.json that marks another kind of
    run (or a train run of an earlier version, or cannot be read), or a checkpoint of another
    run than config.json's. Folders of earlier versions hold no config.json."""
    path = folder / CONFIG_NAME
    if not path.exists():
        return
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CheckpointError(f"{path} is corrupt: cannot tell which command wrote {folder}"
                              ) from None
    marker = marker_of(config)
    if marker is None:
        if _folder_kind(folder) == "train":
            raise other_kind_error(folder, "tabular", "train", f"its {CONFIG_NAME} says so")
        return
    resume_identity(folder, "tabular", marker, marker)  # refuses another kind
    checkpoint = folder / CHECKPOINT_NAME
    if checkpoint.exists():
        try:
            blob = safe_load(checkpoint, map_location="cpu")
        except CheckpointError:
            return  # sampling reads model.pt; a damaged checkpoint is not its concern
        found = checkpoint_identity(blob) if isinstance(blob, dict) else None
        if found is not None:
            resume_identity(folder, "tabular", marker, found)  # refuses another run
