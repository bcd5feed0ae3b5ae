"""The latent side: do learned priors (or GECO) help a learned-sigma VAE generate?

Berger & Sebag's LV-VAE reconstructs more detail than LS-VAE but generates worse, and they name
the factorised Gaussian prior as the next bottleneck. This study trains LS-VAE and LV-VAE (the
paper's residual MLPs, data as they are, sigma learned from 1) on two curves, the paper's
problem (:func:`~pyro_lvae.datasets.manifold2d`) and a spiral
(:func:`~pyro_lvae.datasets.spiral2d`), with each prior of :mod:`pyro_lvae.priors` and, with the
standard Normal prior, with a :class:`~pyro_lvae.geco.GECO` KL weight, and measures per run on
held-out points: ELBO and IWAE bound, the latent diagnostics
(:func:`~pyro_lvae.evaluate.latent_diagnostics`: mutual information, marginal KL, hole mass,
active units) and the energy distance between generations (``z ~ p(z)``, then a draw of
``p(x | z)``) and held-out data.

=========  ==================================================================
method     p(z) and KL weight
=========  ==================================================================
normal     ``N(0, I)``, beta = 1
mixture    :class:`~pyro_lvae.priors.MixturePrior` (10 components), beta = 1
vamp       :class:`~pyro_lvae.priors.VampPrior` (50 pseudo-inputs), beta = 1
flow       :class:`~pyro_lvae.priors.FlowPrior` (4 affine autoregressive layers), beta = 1
geco       ``N(0, I)``, beta from :class:`~pyro_lvae.geco.GECO` (target ``geco_target``)
=========  ==================================================================

F-VAE (``fixed``, sigma = :data:`FIXED_SCALE`) runs with ``geco`` only (:data:`GECO_ONLY`):
GECO's balance against the learned sigma's, with a target from the data
(:func:`gaussian_target`): the curve's noise variance, or for images the residual variance of
PCA with as many components as latent dimensions (:func:`image_geco_target`).

**Images** (``images``: :mod:`.imagesets`): the same models on an MLP VAE over flat pixels,
trained on dequantised pixels ``(k + u) / 256`` (sigma floored at 0.01), measured on held-out
images: ELBO, IWAE, latent diagnostics and the Fréchet distance
(:func:`~pyro_lvae.evaluate.frechet_distance`) in the features of a classifier trained on the
image set (:mod:`.features`; not comparable with published FIDs) between the held-out images and
generations (decoder means and draws of ``p(x|z)`` at ``z ~ p(z)``) or reconstructions. Each
image run selects its weights on a validation split held out of the training images
(``digits_validation_size`` digits, ``fashion_validation_size`` further Fashion-MNIST training
images; :func:`~.imagesets.load_split`), never on the test images: the held-out ELBO of the
validation images (dequantised once, a fixed draw) every ``image_eval_every`` steps
(:class:`~pyro_lvae.experiments.selection.SelectedWeights`); every measure is of those weights,
on the test images, with the step they were selected at. A GECO run selects among the
evaluations whose validation reconstruction meets its target (GECO minimises the KL subject to
it; the ELBO alone would keep a collapsed start), and says whether one did (``target_met``).

The claims, paired by seed (:func:`claims`): per curve and learned prior, for LV-VAE against
``N(0, I)``, the learned prior lowers the energy distance of the generations, and it lowers the
hole mass; per image set, each learned prior lowers the Fréchet distance of LV-VAE's
generations, and LV-VAE with its best learned prior generates better than LS-VAE with
``N(0, I)`` (the paper's conjecture); per data set, GECO on F-VAE generates better than LS-VAE
at beta = 1. A claim holds when the mean paired difference is below 0 by more than two
standard errors, does not hold when above 0 by more than two, and is undecided otherwise (or
with one seed).

**References**

- M. Heusel et al. *GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
  Equilibrium*. NIPS 2017 (the Fréchet Inception Distance).
- D. Rezende, F. Viola. *Taming VAEs*. arXiv:1810.00597, 2018.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from matplotlib.figure import Figure

from ... import evaluate, observations, priors
from ...datasets import MANIFOLD_NOISE, Dequantize, manifold2d, spiral2d
from ...geco import GECO
from ...io import atomic_write_text, save_figure, write_csv
from ...training import ProgressBar, fit, fused_adam
from ...vae import mlp_vae
from ..jobs import run_jobs
from ..points import EVAL_SEED
from ..selection import SelectedWeights
from . import Study, mean_sd, paired
from .features import FeatureClassifier, classifier_for
from .imagesets import ImageSplit, levels, load_split
from .manifold import energy_distance

__all__ = ["PriorsStudy", "METHODS", "CURVES", "LEARNED_PRIORS", "GECO_ONLY", "FIXED_SCALE",
           "CURVE_NOISE_VARIANCE", "IMAGE_METRICS", "gaussian_target",
           "pca_residual_variance",
           "image_geco_target", "image_data", "run_job", "run_image_job", "run_study",
           "aggregate", "paired", "verdict", "claims", "markdown", "priors_figure",
           "image_figure", "write_outputs"]

#: method -> (prior kind, its settings, whether the KL weight is a GECO)
METHODS: dict[str, tuple[str, dict[str, Any], bool]] = {
    "normal": ("normal", {}, False),
    "mixture": ("mixture", {"components": 10}, False),
    "vamp": ("vamp", {"components": 50}, False),
    "flow": ("flow", {"transform": "affine-autoregressive", "layers": 4, "hidden": 64}, False),
    "geco": ("normal", {}, True),
}
#: the methods whose claims are checked against ``normal``
LEARNED_PRIORS = ("mixture", "vamp", "flow")
#: observation models run only with GECO (F-VAE: sigma fixed at :data:`FIXED_SCALE`; with
#: beta = 1 it is the paper's failure case, so GECO alone balances its two terms)
GECO_ONLY = ("fixed",)
FIXED_SCALE = 1.0
CURVES = {"manifold2d": manifold2d, "spiral2d": spiral2d}
#: the curves' noise variance per coordinate, averaged over the curve (manifold2d's three
#: regions are equally likely; the spiral's noise has standard deviation 0.02)
CURVE_NOISE_VARIANCE = {"manifold2d": float(np.mean(np.square(MANIFOLD_NOISE))),
                        "spiral2d": 0.02**2}
#: points of each kind drawn per panel of :func:`priors_figure`
FIGURE_POINTS = 500
#: measured per run (mean ± sd over seeds in the table)
METRICS = ("elbo", "iwae", "kl", "mutual_information", "marginal_kl", "hole_mass",
           "active_units", "energy_samples", "energy_means", "final_sigma")


@dataclass
class PriorsStudy(Study):
    """The study's settings: curves, observation models (``variants``), methods (keys of
    :data:`METHODS`), seeds, training and evaluation sizes; :meth:`jobs` lists one run per
    combination (image runs for each of ``images``). ``QUICK``: 2 seeds, 1500 steps, residual
    MLP 2x64 (curves: about 5 minutes on one core), the same for images, with 2000 / 500
    Fashion-MNIST images."""

    QUICK = {"seeds": 2, "steps": 1500, "hidden": 64, "blocks": 2, "eval_points": 1000,
             "iwae_points": 200, "iwae_samples": 100, "image_steps": 1500, "image_hidden": 64,
             "image_blocks": 2, "image_eval_points": 1000, "image_iwae_points": 100,
             "image_iwae_samples": 50, "fashion_train_size": 2000, "fashion_test_size": 500}

    curves: tuple[str, ...] = ("manifold2d", "spiral2d")
    variants: tuple[str, ...] = ("learned-vector", "learned-scalar", "fixed")
    methods: tuple[str, ...] = tuple(METHODS)
    seeds: int = 5
    steps: int = 6000
    batch_size: int = 100
    hidden: int = 200
    blocks: int = 4
    lr: float = 1e-3
    #: GECO's reconstruction target (nats per point) and rate
    geco_target: float = -3.0
    geco_rate: float = 1e-2
    eval_points: int = 2000
    iwae_points: int = 500
    iwae_samples: int = 500
    device: str = "cpu"
    #: image sets (:mod:`.imagesets`) and the folder that holds ``FashionMNIST/raw``
    images: tuple[str, ...] = ()
    data_root: str | None = None
    #: the image runs: residual MLP over flat pixels, latent size per image set
    image_hidden: int = 256
    image_blocks: int = 2
    digits_latent_dim: int = 8
    fashion_latent_dim: int = 16
    #: 3000 steps: 30 passes over the Fashion-MNIST subset, 240 over the digits (1 to 3
    #: minutes per run on one CPU core)
    image_steps: int = 3000
    image_batch_size: int = 100
    #: GECO's rate per value: ``rate = image_geco_rate / D`` for D values per image
    image_geco_rate: float = 0.1
    #: Fashion-MNIST subset sizes (:func:`~.imagesets.load_split`)
    fashion_train_size: int = 10000
    fashion_test_size: int = 2000
    #: held-out images measured (all of the digits' 540), and the IWAE's share
    image_eval_points: int = 2000
    image_iwae_points: int = 200
    image_iwae_samples: int = 100
    #: the validation splits (held out of the training images) on which the image runs select
    #: their weights, and the steps between two evaluations of their held-out ELBO
    digits_validation_size: int = 250
    fashion_validation_size: int = 1000
    image_eval_every: int = 250

    def _pairs(self) -> list[tuple[str, str]]:
        return [(v, m) for v in self.variants for m in self.methods
                if v not in GECO_ONLY or METHODS[m][2]]

    def jobs(self) -> list[dict[str, Any]]:
        common = {k: getattr(self, k) for k in (
            "steps", "batch_size", "hidden", "blocks", "lr", "geco_target", "geco_rate",
            "eval_points", "iwae_points", "iwae_samples", "device")}
        points = [{**common, "curve": c, "variant": v, "method": m, "seed": s,
                   "label": f"{c} {v} {m} seed {s}"}
                  for s in range(self.seeds) for c in self.curves for v, m in self._pairs()]
        return points + [{**self.image_settings(name), "variant": v, "method": m, "seed": s,
                          "label": f"{name} {v} {m} seed {s}", **_selection(m)}
                         for s in range(self.seeds) for name in self.images
                         for v, m in self._pairs()]

    def image_settings(self, name: str) -> dict[str, Any]:
        """The settings of every image run on the image set ``name``."""
        out = {"images": name, "steps": self.image_steps, "batch_size": self.image_batch_size,
               "hidden": self.image_hidden, "blocks": self.image_blocks, "lr": self.lr,
               "latent_dim": (self.fashion_latent_dim if name == "fashion-mnist"
                              else self.digits_latent_dim),
               "geco_rate": self.image_geco_rate, "eval_points": self.image_eval_points,
               "iwae_points": self.image_iwae_points, "iwae_samples": self.image_iwae_samples,
               "device": self.device, "validation_size": self.digits_validation_size,
               "eval_every": self.image_eval_every}
        if name == "fashion-mnist":
            out.update(train_size=self.fashion_train_size, test_size=self.fashion_test_size,
                       data_root=self.data_root, validation_size=self.fashion_validation_size)
        return out


def _selection(method: str) -> dict[str, str]:
    """A GECO image run selects among the validation evaluations that meet its reconstruction
    target (:class:`~pyro_lvae.training.HeldOutEvaluation`), a rule its job names."""
    return {"selection": "meets-target"} if METHODS[method][2] else {}


def _observation(variant: str, min_scale: float, init_scale: float | None = FIXED_SCALE):
    """``variant`` with sigma fixed at :data:`FIXED_SCALE`, or learned from ``init_scale``
    (``None``: measured on the first batch)."""
    offered = {"scale": FIXED_SCALE, "init_scale": init_scale, "min_scale": min_scale}
    takes = observations.settings_of(variant)
    return observations.build(variant, **{k: v for k, v in offered.items() if k in takes})


def _vae(job: dict[str, Any], dims: int = 2, latent_dim: int = 2, min_scale: float = 1e-3,
         init_scale: float | None = FIXED_SCALE):
    kind, settings, _ = METHODS[job["method"]]
    return mlp_vae(dims, latent_dim, _observation(job["variant"], min_scale, init_scale),
                   hidden=job["hidden"], blocks=job["blocks"], standardize=False,
                   prior=priors.build(kind, **settings))


def gaussian_target(variant: str, variances: Any, min_scale: float = 0.0) -> float:
    """GECO's target for a Normal ``p(x|z)`` whose mean misses value ``j`` by ``variances[j]``
    on average: ``-log p(x|z)`` per data point in nats, ``sum_j v_j / (2 s_j^2) +
    log(2 pi s_j^2) / 2``, with sigma where the observation model would put it: ``s_j^2 =
    v_j`` per value for a sigma per value (LV-VAE), one ``s^2 = mean_j v_j`` for a shared sigma
    (LS-VAE), both floored at ``min_scale^2``, and ``s = FIXED_SCALE`` for a fixed sigma
    (F-VAE).

    :param str variant: the observation model's kind
    :param variances: the mean squared error of each value, ``(D,)``
    :param float min_scale: the model's floor on sigma
    """
    v = np.asarray(variances, dtype=float)
    kind = observations.describe(variant)
    if kind.constant:
        s2 = np.full_like(v, FIXED_SCALE**2)
    else:
        s2 = np.maximum(np.full_like(v, v.mean()) if kind.shared else v, min_scale**2)
    return float(np.sum(v / s2 + np.log(2 * math.pi * s2)) / 2)


def _geco_target(job: dict[str, Any]) -> float:
    """The learned-sigma curve runs keep the study's ``geco_target``; F-VAE's target is the
    curve's own noise: a decoder on the noiseless curve misses by the noise variance."""
    if job["variant"] not in GECO_ONLY:
        return job["geco_target"]
    return gaussian_target(job["variant"], [CURVE_NOISE_VARIANCE[job["curve"]]] * 2)


@torch.no_grad()
def _measure(vae, job: dict[str, Any]) -> dict[str, Any]:
    x = CURVES[job["curve"]](job["eval_points"],
                             torch.Generator().manual_seed(EVAL_SEED)).to(vae.device)
    out: dict[str, Any] = dict(evaluate.elbo_parts(vae, x, num_particles=4))
    out["iwae"] = evaluate.iwae(vae, x[: job["iwae_points"]], num_samples=job["iwae_samples"])
    out.update(evaluate.latent_diagnostics(vae, x))
    pyro.set_rng_seed(EVAL_SEED + 7)  # the same prior draws for every run of a seed's jobs
    samples, means = vae.sample(x.shape[0], mode="sample"), vae.sample(x.shape[0])
    out["energy_samples"] = energy_distance(samples, x)
    out["energy_means"] = energy_distance(means, x)
    out["final_sigma"] = float(vae.sigma(x).mean())
    if job["seed"] == 0:  # arrays for the figure
        with pyro.poutine.block():
            z = vae.prior().sample((1000,))
        out["figure"] = {"data": x[:1000].cpu().numpy(), "samples": samples[:1000].cpu().numpy(),
                         "prior": z.cpu().numpy(), "codes": vae.encode(x[:1000]).cpu().numpy()}
    return {k: v for k, v in out.items() if not isinstance(v, (list, torch.Tensor))}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one run (module-level: it runs in worker processes); a job with
    ``images`` is an image run (:func:`run_image_job`)."""
    if "images" in job:
        return run_image_job(job)
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    vae = _vae(job)
    geco = METHODS[job["method"]][2]
    beta = GECO(_geco_target(job), rate=job["geco_rate"]) if geco else 1.0
    history = fit(vae, CURVES[job["curve"]], steps=job["steps"], batch_size=job["batch_size"],
                  optimizer=fused_adam(job["lr"]), beta=beta, device=job["device"],
                  seed=job["seed"], tools=[ProgressBar(False)])
    out = {k: job[k] for k in ("curve", "variant", "method", "seed", "steps")}
    out.update(_measure(vae, job))
    out["final_beta"] = float(history["beta"][-1])
    return out


# ---- image runs ------------------------------------------------------------------------------
#: (image set, its settings) -> (split, classifier), per process: every run of a worker on one
#: image set shares them (the classifier is deterministic, so every process has the same one)
_IMAGE_CACHE: dict[str, tuple[ImageSplit, FeatureClassifier]] = {}
#: generations shown per (observation model, method) in :func:`image_figure`
GRID = 16
#: the floor of a learned sigma on images (as ``pyro-lvae train`` uses for images)
IMAGE_MIN_SCALE = 0.01


def _image_key(job: dict[str, Any]) -> str:
    return json.dumps([job["images"], job.get("train_size"), job.get("test_size"),
                       job.get("validation_size", 0)])


def image_data(job: dict[str, Any], classifier_folder: str | Path | None = None
               ) -> tuple[ImageSplit, FeatureClassifier]:
    """The image set of ``job`` and its feature classifier
    (:func:`~.features.classifier_for`, read from or saved to ``classifier_folder``), kept
    for the process's later runs."""
    key = _image_key(job)
    if key not in _IMAGE_CACHE:
        split = load_split(job["images"], job.get("data_root"), job.get("train_size", 10000),
                           job.get("test_size", 2000), job.get("validation_size", 0))
        _IMAGE_CACHE[key] = split, classifier_for(job["images"], split, classifier_folder)
    return _IMAGE_CACHE[key]


def pca_residual_variance(x: torch.Tensor, components: int) -> np.ndarray:
    """The mean squared error of each value (column) of ``x`` when its rows are reconstructed
    from their first ``components`` principal components (the best linear reconstruction
    from that many codes): the diagonal of ``(I - P) C (I - P)``, ``C`` the covariance and
    ``P`` the projection on its leading eigenvectors.

    :param torch.Tensor x: ``(N, D)`` data
    :param int components: the number of principal components kept (``< D``)
    """
    c = torch.cov(x.double().T)
    _, vectors = torch.linalg.eigh(c)  # ascending eigenvalues
    rest = vectors[:, : x.shape[1] - components]
    return torch.diagonal(rest @ rest.T @ c @ rest @ rest.T).numpy()


def image_geco_target(job: dict[str, Any], split: ImageSplit) -> float:
    """GECO's target for an image run (:func:`gaussian_target`): reconstruct at least as well
    as PCA with as many components as the run has latent dimensions, on the training images
    as the run sees them (dequantised, one fixed draw), in the run's own observation model
    (sigma at its best for those residuals, floored at 0.01)."""
    train = Dequantize()(levels(split.train), torch.Generator().manual_seed(EVAL_SEED))
    return gaussian_target(job["variant"], pca_residual_variance(train, job["latent_dim"]),
                           IMAGE_MIN_SCALE)


def run_image_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one image run: an MLP VAE over flat pixels, trained on dequantised
    pixels ``(k + u) / 256`` (a fresh ``u ~ U(0, 1)`` per value and step); a learned sigma
    starts from the data (the package's default) and is floored at 0.01."""
    split, classifier = image_data(job)
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    vae = _vae(job, split.dims, job["latent_dim"], min_scale=IMAGE_MIN_SCALE, init_scale=None)
    geco = METHODS[job["method"]][2]
    target = image_geco_target(job, split) if geco else math.nan
    beta = GECO(target, rate=job["geco_rate"] / split.dims) if geco else 1.0
    validation = Dequantize()(levels(split.validation),
                              torch.Generator().manual_seed(EVAL_SEED + 2))
    selection = SelectedWeights(validation, job["eval_every"], seed=EVAL_SEED + 5)
    history = fit(vae, levels(split.train), steps=job["steps"], batch_size=job["batch_size"],
                  optimizer=fused_adam(job["lr"]), beta=beta, device=job["device"],
                  seed=job["seed"], tools=[ProgressBar(False), selection],
                  transform=Dequantize())
    out = {k: job[k] for k in ("images", "variant", "method", "seed", "steps", "latent_dim")}
    with torch.no_grad():  # the last weights' test ELBO, beside the selected weights' numbers
        pyro.set_rng_seed(EVAL_SEED)
        x = Dequantize()(levels(split.test[: job["eval_points"]]),
                         torch.Generator().manual_seed(EVAL_SEED)).to(vae.device)
        out["elbo_last"] = evaluate.elbo_parts(vae, x, num_particles=4)["elbo"]
    out["selected_step"] = selection.load(vae)
    out["validation_curve"] = list(selection.curve)
    out["validation_elbo"] = dict(selection.curve)[out["selected_step"]]
    if geco:  # selected among the evaluations that meet the target (if any did)
        out["target_met"] = bool(selection.best()["met"])
    out.update(_measure_images(vae, job, split, classifier))
    out.update(final_beta=float(history["beta"][-1]), geco_target=target,
               classifier_accuracy=classifier.accuracy)
    return out


def _pca_2d(codes: torch.Tensor, *others: torch.Tensor) -> list[np.ndarray]:
    """``codes`` and ``others`` on the first two principal axes of ``codes``."""
    mean = codes.mean(0)
    _, _, v = torch.linalg.svd(codes - mean, full_matrices=False)
    axes = v[:2].T
    return [((c - mean) @ axes).cpu().numpy() for c in (codes, *others)]


@torch.no_grad()
def _measure_images(vae, job: dict[str, Any], split: ImageSplit,
                    classifier: FeatureClassifier) -> dict[str, Any]:
    noise = torch.Generator().manual_seed(EVAL_SEED)
    x = Dequantize()(levels(split.test[: job["eval_points"]]), noise).to(vae.device)
    out: dict[str, Any] = dict(evaluate.elbo_parts(vae, x, num_particles=4))
    out["iwae"] = evaluate.iwae(vae, x[: job["iwae_points"]], num_samples=job["iwae_samples"])
    out.update(evaluate.latent_diagnostics(vae, x))
    pyro.set_rng_seed(EVAL_SEED + 7)  # the same prior draws for every run of a seed's jobs
    samples, means = vae.sample(x.shape[0], mode="sample"), vae.sample(x.shape[0])
    reference = classifier.features(x)
    for key, images in (("means", means), ("samples", samples),
                        ("reconstructions", vae.reconstruct(x)),
                        ("training", Dequantize()(levels(split.train[: x.shape[0]]), noise))):
        out[f"frechet_{key}"] = evaluate.frechet_distance(classifier.features(images),
                                                          reference)
    out["final_sigma"] = float(vae.sigma(x).mean())
    if job["seed"] == 0:  # arrays for the figure
        with pyro.poutine.block():
            z = vae.prior().sample((x.shape[0],))
        codes, prior = _pca_2d(vae.encode(x), z)
        out["figure"] = {"means": means[:GRID].cpu().numpy(), "codes": codes, "prior": prior,
                         "shape": split.shape}
    return {k: v for k, v in out.items() if not isinstance(v, (list, torch.Tensor))}


def run_study(study: PriorsStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Every run of ``study`` (:func:`~pyro_lvae.experiments.jobs.run_jobs`: ``workers``
    processes, finished runs read back from ``cache``). The image sets' feature classifiers
    are trained first, in this process, and kept in ``cache`` (read back when there)."""
    for name in study.images:
        image_data(study.image_settings(name), cache)
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


# ---- numbers ---------------------------------------------------------------------------------
#: measured per image run (mean ± sd over seeds in the image table)
IMAGE_METRICS = ("elbo", "iwae", "kl", "mutual_information", "marginal_kl", "hole_mass",
                 "active_units", "frechet_means", "frechet_samples", "frechet_reconstructions",
                 "final_sigma", "final_beta", "selected_step", "elbo_last")


def _place(r: dict[str, Any]) -> str:
    """The data set of a run: its curve or its image set."""
    return r["images"] if "images" in r else r["curve"]


def _groups(results: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((_place(r), r["variant"], r["method"]), []).append(r)
    for rs in groups.values():
        rs.sort(key=lambda r: r["seed"])
    return groups


def aggregate(results: list[dict[str, Any]], images: bool = False) -> list[dict[str, Any]]:
    """One row per (curve, observation, method) of the curve runs, or with ``images=True`` per
    (image set, observation, method) of the image runs: mean and sd over seeds of each
    metric (:data:`METRICS`, :data:`IMAGE_METRICS`)."""
    rows = []
    keys = IMAGE_METRICS if images else METRICS
    for (place, variant, method), rs in _groups(results).items():
        if ("images" in rs[0]) != images:
            continue
        row: dict[str, Any] = {"images" if images else "curve": place, "variant": variant,
                               "method": method, "seeds": len(rs)}
        for key in keys:
            v = np.array([r[key] for r in rs], dtype=float)
            row[key] = float(v.mean())
            row[key + "_sd"] = float(v.std(ddof=1)) if len(v) > 1 else float("nan")
        rows.append(row)
    return rows


def verdict(mean: float, se: float, n: int) -> bool | None:
    """``True`` when ``mean`` (a paired difference, lower is better) is below 0 by more than
    two standard errors, ``False`` when above 0 by more, ``None`` (undecided) otherwise or with
    fewer than two seeds."""
    if n < 2 or not math.isfinite(mean) or not math.isfinite(se) or abs(mean) <= 2 * se:
        return None
    return mean < 0


def _claim(text: str, a: list[dict[str, Any]], b: list[dict[str, Any]], key: str,
           names: str) -> tuple[str, bool | None, str]:
    mean, se, n = paired(a, b, key)
    return (text, verdict(mean, se, n), f"{names} = {mean:+.4f} in {key} (paired over {n} "
            f"seed(s), standard error {se:.4f})")


def _image_claims(groups, name: str) -> list[tuple[str, bool | None, str]]:
    out = []
    base = groups.get((name, "learned-vector", "normal"))
    learned = {m: rs for m in LEARNED_PRIORS if (rs := groups.get((name, "learned-vector", m)))}
    if base:
        out += [_claim(f"{name}: the {m} prior improves LV-VAE's generations (Fréchet "
                       f"distance of decoder means) against N(0, I)", rs, base,
                       "frechet_means", f"{m} - normal") for m, rs in learned.items()]
    ls = groups.get((name, "learned-scalar", "normal"))
    if learned and ls:  # the prior chosen on these very runs: the claim is optimistic
        best = min(learned, key=lambda m: np.mean([r["frechet_means"] for r in learned[m]]))
        out.append(_claim(f"{name}: LV-VAE with its best learned prior ({best}) generates "
                          f"better than LS-VAE with N(0, I) (Fréchet distance of decoder "
                          f"means)", learned[best], ls, "frechet_means",
                          f"LV-VAE {best} - LS-VAE normal"))
    return out


def _geco_claim(groups, place: str, key: str, what: str) -> list[tuple[str, bool | None, str]]:
    geco = [groups.get((place, v, m)) for v in GECO_ONLY for m in METHODS if METHODS[m][2]]
    ls = groups.get((place, "learned-scalar", "normal"))
    if not geco or not geco[0] or not ls:
        return []
    return [_claim(f"{place}: GECO on F-VAE (sigma = {FIXED_SCALE:g}) generates better than "
                   f"LS-VAE's learned sigma at beta = 1 ({what})", geco[0], ls, key,
                   "F-VAE GECO - LS-VAE normal")]


def claims(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """``(claim, holds, evidence)``: per curve and learned prior, for LV-VAE against its
    ``N(0, I)`` runs, lower energy distance of generations and lower hole mass; per image set
    and learned prior, a lower Fréchet distance of LV-VAE's generations, and whether LV-VAE
    with its best learned prior generates better than LS-VAE with ``N(0, I)``; per data set,
    whether GECO on F-VAE generates better than LS-VAE (the two automatic balances)."""
    groups = _groups(results)
    image_sets = {r["images"] for r in results if "images" in r}
    out = []
    for place in dict.fromkeys(_place(r) for r in results):
        if place in image_sets:
            out += _image_claims(groups, place)
            out += _geco_claim(groups, place, "frechet_means", "Fréchet distance of decoder "
                                                               "means")
            continue
        base = groups.get((place, "learned-vector", "normal"))
        for method in LEARNED_PRIORS:
            rs = groups.get((place, "learned-vector", method))
            if not base or not rs:
                continue
            for key, what in (("energy_samples", "improves LV-VAE's generations (energy "
                                                 "distance)"),
                              ("hole_mass", "reduces LV-VAE's hole mass")):
                out.append(_claim(f"{place}: the {method} prior {what} against N(0, I)", rs,
                                  base, key, f"{method} - normal"))
        out += _geco_claim(groups, place, "energy_samples", "energy distance")
    return out


def _image_table(study: PriorsStudy, results: list[dict[str, Any]]) -> str:
    rows = aggregate(results, images=True)
    if not rows:
        return ""
    lines = ["| images | model | method | seeds | selected step | ELBO | IWAE | KL | mutual "
             "information | marginal KL | hole mass | active units | Fréchet (means) | Fréchet "
             "(samples) | Fréchet (reconstructions) | final sigma | final beta | ELBO, last "
             "weights |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:"
             "|---:|"]
    for r in rows:
        f = {k: mean_sd(r[k], r[k + "_sd"], 4 if k == "hole_mass" else 3)
             for k in IMAGE_METRICS}
        lines.append(f"| {r['images']} | {observations.describe(r['variant']).label} | "
                     f"{r['method']} | {r['seeds']} | "
                     f"{mean_sd(r['selected_step'], r['selected_step_sd'], 0)} | "
                     f"{f['elbo']} | {f['iwae']} | {f['kl']} | "
                     f"{f['mutual_information']} | {f['marginal_kl']} | {f['hole_mass']} | "
                     f"{r['active_units']:.1f} | {f['frechet_means']} | {f['frechet_samples']} "
                     f"| {f['frechet_reconstructions']} | {f['final_sigma']} | "
                     f"{f['final_beta']} | {f['elbo_last']} |")
    sets = []
    for name in dict.fromkeys(r["images"] for r in results if "images" in r):
        rs = [r for r in results if r.get("images") == name]
        sets.append(f"- {name}: feature classifier's held-out accuracy "
                    f"{rs[0]['classifier_accuracy']:.3f}; Fréchet distance of as many "
                    f"training images (the floor at this sample size) "
                    f"{np.mean([r['frechet_training'] for r in rs]):.3f}; latent size "
                    f"{rs[0]['latent_dim']}; GECO target "
                    + ", ".join(sorted({f"{r['geco_target']:.1f}" for r in rs
                                        if math.isfinite(r["geco_target"])})) + " nats"
                    + _targets_met(rs))
    return ("## Images\n\n" + "\n".join(lines) + "\n\n" + "\n".join(sets) + "\n\n"
            f"MLP VAEs over flat pixels (residual MLP {study.image_blocks}x"
            f"{study.image_hidden}, {study.image_steps} steps, batch {study.image_batch_size}), "
            "trained and measured on dequantised pixels (k + u) / 256, sigma floored at 0.01. "
            "Weights selected on a validation split held out of the training images "
            f"({study.digits_validation_size} digits, {study.fashion_validation_size} "
            "Fashion-MNIST images; the best held-out ELBO, evaluated every "
            f"{study.image_eval_every} steps and at the last; selected step: the steps "
            "trained by then; a GECO run: the best of those whose validation reconstruction "
            "meets its target, or the nearest to it if none does), never on the test images; "
            "every column but the last weights' "
            "ELBO is of the selected weights on the test images (final sigma and final beta: "
            "the last training step's). "
            f"ELBO (4 draws) and IWAE ({study.image_iwae_samples} samples, first "
            f"{study.image_iwae_points} images) in nats per image on at most "
            f"{study.image_eval_points} held-out images; Fréchet distances in the feature "
            "classifier's penultimate layer (docs/priors.md; not comparable with published "
            "FIDs) between the held-out images and as many generations (z ~ p(z); decoder "
            "means, or draws of p(x|z)) or reconstructions (decoder means at the posterior "
            "means). GECO's target: reconstruct as well as probabilistic PCA with as many "
            "components as latent dimensions, in the run's own observation model.\n\n")


def _targets_met(runs: list[dict[str, Any]]) -> str:
    """How many GECO runs per model met their target at the selected weights."""
    counts: dict[str, list[bool]] = {}
    for r in runs:
        if "target_met" in r:
            counts.setdefault(observations.describe(r["variant"]).label, []).append(
                r["target_met"])
    if not counts:
        return ""
    return "; GECO runs whose selected weights meet the target: " + ", ".join(
        f"{label} {sum(met)} of {len(met)}" for label, met in counts.items())


def markdown(study: PriorsStudy, results: list[dict[str, Any]]) -> str:
    """The report: the tables of :func:`aggregate` (curves, then images) and the verdicts of
    :func:`claims`."""
    lines = ["| curve | model | method | seeds | ELBO | IWAE | KL | mutual information | "
             "marginal KL | hole mass | active units | energy distance | final sigma |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in aggregate(results):
        f = {k: mean_sd(r[k], r[k + "_sd"], 4 if k in ("energy_samples", "hole_mass") else 3)
             for k in METRICS}
        lines.append(f"| {r['curve']} | {observations.describe(r['variant']).label} | "
                     f"{r['method']} | {r['seeds']} | {f['elbo']} | {f['iwae']} | {f['kl']} | "
                     f"{f['mutual_information']} | {f['marginal_kl']} | {f['hole_mass']} | "
                     f"{r['active_units']:.1f} | {f['energy_samples']} | {f['final_sigma']} |")
    word = {True: "holds", False: "does not hold", None: "undecided"}
    verdicts = [f"- {c}: **{word[h]}**. {e}" for c, h, e in claims(results)]
    targets = ", ".join(f"{c} {gaussian_target(GECO_ONLY[0], [v, v]):.3f}"
                        for c, v in CURVE_NOISE_VARIANCE.items())
    return ("# Priors, GECO and the latent side\n\n"
            f"Settings: {asdict(study)}\n\n" + "\n".join(lines) + "\n\n"
            f"Mean ± standard deviation over seeds. ELBO (4 draws per point, "
            f"{study.eval_points} held-out points) and IWAE bound ({study.iwae_samples} "
            f"samples, first {study.iwae_points} points) in nats per point; mutual information, "
            "marginal KL, hole mass (at the 0.05 quantile) and active units from "
            "evaluate.latent_diagnostics on the held-out points; energy distance between as "
            "many generations (z ~ p(z), then a draw of p(x|z)) and the held-out points (lower "
            "is better); final sigma: the mean learned sigma on them. geco: N(0, I) with a GECO "
            f"KL weight (rate {study.geco_rate}); target {study.geco_target} nats with a "
            f"learned sigma; for F-VAE (sigma = {FIXED_SCALE:g}) the curve's own noise "
            f"({targets} nats).\n\n" + _image_table(study, results) +
            "## Claims (paired by seed)\n\n"
            + "\n".join(verdicts) + "\n\nA claim holds when the mean paired difference is "
            "below 0 by more than two standard errors, does not hold when above 0 by more, and "
            "is undecided otherwise.\n")


def _panel_grid(runs: dict[tuple[str, str], Any], width: float, height: float):
    """A figure with a row per method and two panels per observation model of ``runs``
    (``(variant, method) -> figure arrays``); returns the figure, its axes and, for every run,
    ``(left, right, label, method, arrays)``. The panels of missing runs are turned off."""
    variants = list(dict.fromkeys(v for v, _ in runs))
    methods = list(dict.fromkeys(m for _, m in runs))
    fig = Figure(figsize=(width * 2 * len(variants), height * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), 2 * len(variants), squeeze=False)
    cells = []
    for i, method in enumerate(methods):
        for j, variant in enumerate(variants):
            left, right = axes[i, 2 * j], axes[i, 2 * j + 1]
            if (variant, method) not in runs:
                left.set_axis_off()
                right.set_axis_off()
                continue
            cells.append((left, right, observations.describe(variant).label, method,
                          runs[(variant, method)]))
    return fig, axes, cells


def priors_figure(results: list[dict[str, Any]], curve: str) -> Figure:
    """Seed 0 of each method on ``curve``: per observation model, prior draws beside the
    held-out points' codes (latent space), and generations beside the held-out points (the
    first ``FIGURE_POINTS`` of each)."""
    runs = {(r["variant"], r["method"]): r["figure"] for r in results
            if r.get("curve") == curve and "figure" in r}
    fig, axes, cells = _panel_grid(runs, 3, 2.8)
    for left, right, label, method, f in cells:
        f = {k: v[:FIGURE_POINTS] for k, v in f.items()}
        left.scatter(*f["codes"].T, s=2, c="#1f77b4", alpha=0.4, label="codes of data")
        left.scatter(*f["prior"].T, s=2, c="#d62728", alpha=0.4, label="prior draws")
        left.set_title(f"{label}, {method}: z", fontsize=9)
        right.scatter(*f["data"].T, s=2, c="#1f77b4", alpha=0.3, label="held-out data")
        right.scatter(*f["samples"].T, s=2, c="#2ca02c", alpha=0.4, label="generations")
        right.set_title(f"{label}, {method}: x", fontsize=9)
    axes[0, 0].legend(fontsize=7, markerscale=4)
    axes[0, 1].legend(fontsize=7, markerscale=4)
    fig.suptitle(f"priors on {curve} (seed 0)")
    return fig


def _tile(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Flat grey images as one square mosaic (one pixel of white between tiles)."""
    side = math.ceil(math.sqrt(len(images)))
    _, h, w = shape
    out = np.ones((side * (h + 1) - 1, side * (w + 1) - 1))
    for k, image in enumerate(np.clip(images, 0, 1)):
        r, c = divmod(k, side)
        out[r * (h + 1): r * (h + 1) + h, c * (w + 1): c * (w + 1) + w] = image.reshape(h, w)
    return out


def image_figure(results: list[dict[str, Any]], name: str) -> Figure:
    """Seed 0 of each method on the image set ``name``: per observation model, generations
    (decoder means at ``z ~ p(z)``) beside the prior's draws and the held-out images' codes,
    both on the first two principal axes of the codes."""
    runs = {(r["variant"], r["method"]): r["figure"] for r in results
            if r.get("images") == name and "figure" in r}
    fig, axes, cells = _panel_grid(runs, 2.6, 2.6)
    for left, right, label, method, f in cells:
        left.set_axis_off()
        left.imshow(_tile(f["means"], f["shape"]), cmap="gray", vmin=0, vmax=1)
        left.set_title(f"{label}, {method}: x", fontsize=9)
        right.scatter(*f["codes"][:FIGURE_POINTS].T, s=2, c="#1f77b4", alpha=0.4,
                      label="codes of held-out images")
        right.scatter(*f["prior"][:FIGURE_POINTS].T, s=2, c="#d62728", alpha=0.4,
                      label="prior draws")
        right.set_title(f"{label}, {method}: z (PC 1-2)", fontsize=9)
    if runs:
        axes[0, 1].legend(fontsize=7, markerscale=4)
    fig.suptitle(f"priors on {name} (seed 0): decoder means at prior draws; the latent space")
    return fig


def write_outputs(study: PriorsStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write ``priors.md`` (:func:`markdown`), ``summary.csv`` (curves), ``images.csv`` (image
    sets, if any), ``runs.csv`` and ``image-runs.csv`` (one row per run), a
    :func:`priors_figure` per curve and an :func:`image_figure` per image set that have a seed-0
    run into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(markdown(study, results), out / "priors.md")]
    written.append(write_csv(aggregate(results), out / "summary.csv"))
    if study.images:
        written.append(write_csv(aggregate(results, images=True), out / "images.csv"))
    for name, rs in (("runs.csv", [r for r in results if "images" not in r]),
                     ("image-runs.csv", [r for r in results if "images" in r])):
        if rs:
            written.append(write_csv([{k: v for k, v in r.items() if k != "figure"}
                                      for r in rs], out / name))
    drawn = {r.get("curve") for r in results if "figure" in r}
    for curve in (c for c in study.curves if c in drawn):
        written.append(save_figure(priors_figure(results, curve), out / f"priors-{curve}.png",
                                   dpi=75))
    drawn = {r.get("images") for r in results if "figure" in r}
    for name in (n for n in study.images if n in drawn):
        written.append(save_figure(image_figure(results, name), out / f"priors-{name}.png",
                                   dpi=75))
    return written
