"""Count data for ``pyro-lvae train`` and the counts study: the data sets, their fixed held-out
split, and what a trained count model is measured by.

- ``pbmc68k``: scanpy's ``pbmc68k_reduced``, 700 cells x 765 genes, 10 cell types
  (:func:`pyro_lvae.datasets.pbmc68k_reduced`; needs ``pip install pyro-lvae[counts]``);
- ``counts-synthetic``: :data:`SYNTHETIC_CELLS` cells x :data:`SYNTHETIC_GENES` genes of
  :func:`pyro_lvae.datasets.synthetic_counts` (5 cell types, a known inverse dispersion per
  gene, log-uniform in [0.5, 20]), drawn with the fixed seed :data:`DATA_SEED`.

Every run on a data set is scored on the same held-out cells: :data:`HELD_OUT` of them, drawn
with :data:`SPLIT_SEED` (:func:`pyro_lvae.datasets.held_out_split`), whatever the run's seed.
``pyro-lvae train`` also keeps :data:`VALIDATION` of the other cells apart for
``--eval-every`` and trains on the rest.

:func:`measure` gives a trained model's held-out numbers: the ELBO per cell with its
reconstruction / KL split, an importance-weighted bound on ``log p(x)`` per cell, the active
units, the agreement of the posterior means with the cell types (:func:`latent_agreement`: a
15-nearest-neighbour classifier's accuracy by 5-fold cross-validation, and the silhouette
score, both in scikit-learn) and, where the truth is known, how far the model's inverse
dispersion lies from it (:func:`theta_recovery`).
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import evaluate
from ..datasets import CountData, pbmc68k_reduced, synthetic_counts
from ..errors import ConfigError
from ..io import save_figure
from ..observations import Observation
from ..priors import prior_from_config
from ..training import History
from ..vae import VAE, mlp_vae
from .plots import training_figure

__all__ = ["COUNT_DATASETS", "COUNT_OBSERVATIONS", "CountTask", "load_counts", "split_counts",
           "measure", "latent_agreement", "theta_recovery", "model_theta",
           "decoder_theta", "posterior_means", "check_count_observation", "HELD_OUT", "VALIDATION",
           "SPLIT_SEED", "DATA_SEED", "SYNTHETIC_CELLS", "SYNTHETIC_GENES", "KNN_NEIGHBOURS"]

logger = logging.getLogger(__name__)

#: command-line name -> what it is
COUNT_DATASETS = {
    "pbmc68k": "scanpy's pbmc68k_reduced: 700 blood cells x 765 genes, 10 cell types",
    "counts-synthetic": "synthetic counts: 2000 cells x 200 genes, 5 cell types, known theta",
}
#: the observation models (registered kinds) of count data
COUNT_OBSERVATIONS = ("poisson", "negative-binomial", "zero-inflated-nb")
#: the fraction of cells held out, and the seed that draws them
HELD_OUT = 0.2
SPLIT_SEED = 0
#: the fraction of the other cells that ``pyro-lvae train`` keeps for ``--eval-every``
VALIDATION = 0.1
#: the synthetic set: its seed and size
DATA_SEED = 2026
SYNTHETIC_CELLS = 2000
SYNTHETIC_GENES = 200
#: neighbours of the k-NN classifier of :func:`latent_agreement`
KNN_NEIGHBOURS = 15


@functools.lru_cache(maxsize=4)
def load_counts(name: str) -> CountData:
    """The count data set ``name`` (a key of :data:`COUNT_DATASETS`), loaded once per
    process."""
    if name == "pbmc68k":
        return pbmc68k_reduced()
    if name == "counts-synthetic":
        return synthetic_counts(SYNTHETIC_CELLS, genes=SYNTHETIC_GENES, types=5,
                                generator=torch.Generator().manual_seed(DATA_SEED))
    raise ConfigError(f"unknown count data set {name!r}; expected one of "
                      f"{', '.join(COUNT_DATASETS)}")


def split_counts(name: str) -> tuple[CountData, CountData]:
    """``(training cells, held-out cells)`` of a count data set: the fixed split
    (:data:`HELD_OUT` of the cells, drawn with :data:`SPLIT_SEED`)."""
    return load_counts(name).split(HELD_OUT, SPLIT_SEED)


def check_count_observation(dataset: str, kind: str) -> None:
    """Refuse an observation model that is not one of counts on a count data set."""
    if kind not in COUNT_OBSERVATIONS:
        raise ConfigError(f"--dataset {dataset} holds counts; --obs {kind} is not a model of "
                          f"counts: use --obs {', '.join(COUNT_OBSERVATIONS)}")


@torch.no_grad()
def posterior_means(vae: VAE, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The posterior means ``E_q[z | x]`` of the cells ``x`` (on the CPU)."""
    return torch.cat([vae.encode(b.to(vae.device)).cpu() for b in x.split(batch_size)])


def latent_agreement(means: torch.Tensor, labels: torch.Tensor,
                     neighbours: int = KNN_NEIGHBOURS, folds: int = 5) -> dict[str, float]:
    """How well latent codes ``means`` tell the cell types ``labels`` apart:
    ``knn_accuracy``, the accuracy of a ``neighbours``-nearest-neighbour classifier (Euclidean,
    uniform weights) by ``folds``-fold cross-validation over these cells (shuffled with seed 0;
    scikit-learn's ``KNeighborsClassifier`` and ``cross_val_score``), and ``silhouette``,
    scikit-learn's ``silhouette_score`` of the codes with the types as clusters (Euclidean; -1
    to 1, higher is better separated). NaN where there are too few cells or a single type."""
    out = {"knn_accuracy": math.nan, "silhouette": math.nan}
    try:
        from sklearn.metrics import silhouette_score
        from sklearn.model_selection import KFold, cross_val_score
        from sklearn.neighbors import KNeighborsClassifier
    except ImportError:
        logger.warning("scikit-learn is not installed: no k-NN accuracy or silhouette score "
                       "(pip install scikit-learn)")
        return out
    z = means.detach().double().cpu().numpy()
    y = labels.cpu().numpy()
    if not np.isfinite(z).all() or len(np.unique(y)) < 2:
        return out
    per_fold = len(y) - math.ceil(len(y) / folds)
    if per_fold > neighbours:
        knn = KNeighborsClassifier(n_neighbors=neighbours)
        cv = KFold(folds, shuffle=True, random_state=0)
        out["knn_accuracy"] = float(cross_val_score(knn, z, y, cv=cv).mean())
    if len(np.unique(y)) < len(y):
        out["silhouette"] = float(silhouette_score(z, y))
    return out


def theta_recovery(estimate: Any, truth: torch.Tensor | None) -> float:
    """The median over genes of ``|log(estimate / truth)|`` (0 is exact; ``log 2 = 0.69`` a
    factor 2 off), for an inverse dispersion per gene (or one for all); NaN without a truth or
    an estimate."""
    if truth is None or estimate is None:
        return math.nan
    est = torch.as_tensor(estimate, dtype=torch.float64).detach().cpu().flatten()
    true = truth.detach().double().cpu().flatten()
    if est.numel() == 1:
        est = est.expand_as(true)
    if est.numel() != true.numel():
        return math.nan
    return float((est / true).log().abs().median())


def model_theta(observation: Observation) -> torch.Tensor | None:
    """The inverse dispersion per gene of a count model with one (learned per gene, or fixed),
    else ``None`` (Poisson, or a dispersion from the decoder)."""
    dispersion = getattr(observation, "dispersion", None)
    if isinstance(dispersion, (int, float)) and not isinstance(dispersion, bool):
        return torch.tensor(float(dispersion))
    if dispersion == "learned":
        theta = getattr(observation, "theta", None)
        return None if theta is None else torch.as_tensor(theta).detach()
    return None


def measure(vae: VAE, held_out: CountData, iwae_samples: int = 100,
            num_particles: int = 4) -> dict[str, Any]:
    """A trained count model's numbers on held-out cells (see the module's docstring): per
    cell in nats, ``elbo``, ``reconstruction``, ``kl`` (``num_particles`` draws per cell) and
    ``iwae`` (``iwae_samples`` importance samples); ``active_units``; ``knn_accuracy`` and
    ``silhouette`` of the posterior means; ``theta_error`` (:func:`theta_recovery`, NaN
    without a known truth or a per-gene theta)."""
    x = held_out.counts.to(vae.device)
    out: dict[str, Any] = dict(evaluate.elbo_parts(vae, x, num_particles=num_particles))
    out["iwae"] = evaluate.iwae(vae, x, num_samples=iwae_samples, batch_size=250,
                                chunk_size=min(iwae_samples, 50))
    out["iwae_samples"] = iwae_samples
    out["active_units"] = evaluate.active_units(vae, x)[0]
    out.update(latent_agreement(posterior_means(vae, x), held_out.labels))
    theta = model_theta(vae.observation)
    if theta is None:
        theta = decoder_theta(vae, x)
    out["theta_error"] = theta_recovery(theta, held_out.theta)
    out["theta_median"] = math.nan if theta is None else float(theta.double().median())
    out["cells"] = len(held_out)
    return out


@torch.no_grad()
def decoder_theta(vae: VAE, x: torch.Tensor) -> torch.Tensor | None:
    """For a count model whose theta comes from the decoder: theta per gene at the posterior
    means of the cells ``x``, the geometric mean over cells; else ``None``."""
    if getattr(vae.observation, "dispersion", None) != "decoder":
        return None
    logs = []
    for b in x.split(1000):
        b = b.to(vae.device)
        px = vae.model.likelihood(vae.encode(b), x=b)
        theta = getattr(getattr(px, "base_dist", px), "theta", None)
        if theta is None:
            return None
        logs.append(theta.double().log().reshape(b.shape[0], -1).cpu())
    return torch.cat(logs).mean(0).exp()


def latent_figure(means: torch.Tensor, data: CountData, title: str):
    """The held-out cells' posterior means on their first two principal axes, coloured by
    cell type."""
    from matplotlib.figure import Figure

    z = means.double()
    z = z - z.mean(0)
    axes = torch.linalg.svd(z, full_matrices=False).Vh[:2].T if z.shape[1] > 1 else None
    xy = (z @ axes if axes is not None else torch.cat([z, torch.zeros_like(z)], 1)).numpy()
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for t, name in enumerate(data.label_names):
        pick = (data.labels == t).numpy()
        if pick.any():
            ax.scatter(xy[pick, 0], xy[pick, 1], s=6, label=name)
    ax.set_xlabel("principal axis 1 of the posterior means")
    ax.set_ylabel("principal axis 2")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=6, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5),
              frameon=False)
    return fig


class CountTask:
    """A count data set for ``pyro-lvae train`` (one of :data:`COUNT_DATASETS`): an MLP VAE
    with one hidden layer per network by default (scvi-tools' size: latent 10), trained on
    the fixed training cells, scored on the fixed held-out cells."""

    defaults = {"latent_dim": 10, "blocks": 1, "batch_size": 128, "steps": 4000,
                "min_scale": 1e-3}
    figures = ("training.png", "latent.png")

    def __init__(self, name: str) -> None:
        self.name = name

    def _cells(self) -> tuple[CountData, CountData, CountData]:
        """``(training, validation, held-out)`` cells."""
        rest, test = split_counts(self.name)
        train, validation = rest.split(VALIDATION, SPLIT_SEED + 1)
        return train, validation, test

    def build(self, s: dict[str, Any], observation: Observation) -> VAE:
        check_count_observation(self.name, s["obs"])
        genes = load_counts(self.name).counts.shape[1]
        return mlp_vae(genes, s["latent_dim"], observation, hidden=s["hidden"],
                       blocks=s["blocks"], prior=prior_from_config(s.get("prior")))

    def channels(self, s: dict[str, Any]) -> int:
        return load_counts(self.name).counts.shape[1]

    def data(self, s: dict[str, Any]):
        train = self._cells()[0].counts
        per_epoch = math.ceil(len(train) / s["batch_size"])
        return train, None, s["steps"], per_epoch

    def sample(self, s: dict[str, Any], n: int = 10000) -> torch.Tensor:
        """The first ``n`` training cells."""
        check_count_observation(self.name, s["obs"])
        return self._cells()[0].counts[:n]

    def validation(self, s: dict[str, Any]) -> torch.Tensor:
        """The validation cells (apart from training and from the held-out cells)."""
        return self._cells()[1].counts

    def evaluate(self, vae: VAE, s: dict[str, Any]) -> dict[str, Any]:
        """The held-out ELBO of ``vae`` per cell with its parts."""
        return evaluate.elbo_parts(vae, self._cells()[2].counts, num_particles=4)

    def report(self, vae: VAE, history: History, run: Path, s: dict[str, Any]) -> dict[str, Any]:
        test = self._cells()[2]
        out = measure(vae, test)
        out["dataset"] = self.name
        save_figure(training_figure({s["obs"]: history}), run / "training.png")
        save_figure(latent_figure(posterior_means(vae, test.counts), test,
                                  f"{self.name}, {s['obs']}: held-out cells"),
                    run / "latent.png")
        return out
