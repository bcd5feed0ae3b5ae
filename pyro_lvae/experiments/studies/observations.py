"""Observation models beyond the paper, on points: which ``p(x|z)`` fits which data.

Three sets of 2D points, each drawn fresh at every training step:

- ``2d``: the paper's artificial problem (:func:`pyro_lvae.datasets.manifold2d`), a curve with
  isotropic noise of std 0.05, 0.01 and 0.20 in its three regions;
- ``normal-noise``: the same curve and noise levels, but the noise lies only along the curve's
  normal (:func:`normal_noise_curve`): its direction turns along the curve, so a diagonal sigma
  cannot describe the thickness (it can only widen the noise along both axes), while a rank-1
  factor can point along the normal;
- ``outliers``: the 2D problem with a fraction of its points (5%) replaced by points uniform
  over the box [-3, 3]^2 (:func:`with_outliers`), for the heavy-tailed Student-t.

Families: a fixed sigma (F-VAE, 0.1), the learned shared sigma (LS-VAE), the decoder's sigma
per dimension (LV-VAE) plain and with ``beta_nll=0.5``, the calibrated shared sigma of
sigma-VAE, Student-t, and the rank-1 plus diagonal Normal. Every learned scale starts at 1 (the
paper's start, as in the manifold study; the data's spread is about 1), above the floor 1e-3,
except in ``LV-VAE data start``: LV-VAE with the package's default start, half the spread of
its first batch (:func:`pyro_lvae.initial_scale`, about 0.48 here).

The latent is one-dimensional by default: the data are a curve, its position along the curve
is what the code should carry, and the thickness is left to ``p(x|z)``, which is what the
families differ in. (With a 2D latent on 2D data the code can also carry the noise, and the
observation model matters less.)

Each run is measured on held-out points of its own set: the ELBO (4 draws per point), an
importance-weighted bound (IWAE), the energy distance between samples of the model (``z`` from
the prior, then ``x ~ p(x|z)``) and held-out data, and whether training spiked
(:func:`spike_size` of the training loss per dimension). On the outlier set the ELBO of the
clean held-out points is reported too.
:func:`claims` checks three claims paired by seed.

Images (:mod:`.imagesets`): scikit-learn's digits (:func:`digits_8bit`, 8x8 grey levels
``k / 16``, ``k`` in 0..16, put on the 8-bit grid as ``round(255 k / 16) / 255``: the 17
levels land on 17 distinct bins of the 256, so the discretised models apply, and their
bits/dim are those of the digits written as 8-bit images) with a fixed split (70% training, 30%
held-out, the same for every seed), and a fixed subset of Fashion-MNIST (``fashion_train_size``
training and ``fashion_test_size`` held-out images of 784 pixels ``k / 255``; its files under
``data_root``). Each image run selects its weights on a validation split held out of the
training images (``digits_validation_size`` of the training digits, ``fashion_validation_size``
further Fashion-MNIST training images; :func:`~.imagesets.load_split`), never on the test
images: the held-out ELBO of the validation images every ``image_eval_every`` steps
(:class:`~pyro_lvae.experiments.selection.SelectedWeights`, fit's held-out evaluation), the
best weights kept; the image tables report the test numbers of those weights and the step they
were selected at, beside the test ELBO of the last weights. Families: fixed sigma 0.1,
LS-VAE, LV-VAE with the floors 1e-3 and 0.01 and with ``beta_nll=0.5``, and the discretised
Normal and logistic. A continuous density on these discrete values is not a likelihood: its
nats are comparable only between continuous models,
and only the discretised models get bits/dim. Measured beside: the error of the decoder mean
at the posterior mean (RMSE, pixel units of [0, 1]), its sharpness
(:func:`~pyro_lvae.experiments.sharpness.sharpness_ratio` against the held-out images) and the
spread of samples of ``p(x|z)`` around their means (RMS, ``z`` from the prior); an image grid
per image set (:func:`images_figure`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ... import evaluate, observations
from ...annealing import parse_schedule
from ...datasets import bits_per_dim, manifold2d
from ...datasets.artificial import MANIFOLD_NOISE
from ...errors import TrainingDiverged
from ...io import atomic_write_text, save_figure, write_csv
from ...training import ProgressBar, fit, fused_adam
from ...vae import mlp_vae
from ..jobs import run_jobs
from ..points import EVAL_SEED
from ..selection import SelectedWeights
from ..sharpness import sharpness_ratio
from . import Study, mean_and_se, mean_sd, paired_differences
from .imagesets import IMAGE_SET_NAMES, digits_8bit, levels, load_split
from .manifold import energy_distance

__all__ = ["ObservationStudy", "DATASETS", "FAMILIES", "normal_noise_curve", "with_outliers",
           "spike_size", "digits_8bit", "IMAGE_SETS", "IMAGE_FAMILIES", "run_job", "run_study",
           "aggregate", "claims", "verdict", "images_figure",
           "write_outputs", "SPIKE_WINDOW", "SPIKE_NATS", "CALIBRATED_MARGIN"]

#: the fraction of outliers in the ``outliers`` set and the half-width of their box
OUTLIER_FRACTION = 0.05
OUTLIER_BOX = 3.0
#: :func:`spike_size` compares each step's loss with the median of the previous this many
SPIKE_WINDOW = 100
#: a run "spiked" when its loss rose this many nats per dimension above that running median
#: (2 nats per point of the 2D sets, 64 per digit)
SPIKE_NATS = 1.0
#: the calibrated sigma "reaches" LS-VAE's ELBO unless it is this many nats per point below it
CALIBRATED_MARGIN = 0.05


def normal_noise_curve(n: int, generator: torch.Generator | None = None,
                       return_region: bool = False):
    """The 2D problem's curve with its noise along the curve's normal only.

    Point ``c(s) + e * sigma_region * nu(s)``, ``e ~ N(0, 1)``, where ``c(s) = (t, cos(pi t))``,
    ``t = 4 s - 2``, ``nu(s)`` the unit normal ``(pi sin(pi t), 1) / norm`` and
    ``sigma_region`` the 2D problem's noise (0.05, 0.01, 0.20 over thirds of ``s``). The noise
    is of rank 1 and its direction turns with the curve.

    :param int n: number of points
    :param torch.Generator generator: random source; ``None`` uses torch's global one
    :param bool return_region: also return each point's region index
    """
    s = torch.rand(n, generator=generator)
    e = torch.randn(n, generator=generator)
    region = torch.clamp((s * 3).long(), max=2)
    t = 4 * s - 2
    curve = torch.stack([t, torch.cos(math.pi * t)], dim=-1)
    normal = torch.stack([math.pi * torch.sin(math.pi * t), torch.ones_like(t)], dim=-1)
    normal = normal / normal.norm(dim=-1, keepdim=True)
    x = curve + (torch.tensor(MANIFOLD_NOISE)[region] * e)[:, None] * normal
    return (x, region) if return_region else x


def with_outliers(n: int, generator: torch.Generator | None = None,
                  return_outlier: bool = False):
    """The 2D problem with a fraction ``OUTLIER_FRACTION`` of its points replaced by points
    uniform over ``[-OUTLIER_BOX, OUTLIER_BOX]^2``.

    :param int n: number of points
    :param torch.Generator generator: random source; ``None`` uses torch's global one
    :param bool return_outlier: also return a boolean mask of the outliers
    """
    x = manifold2d(n, generator)
    outlier = torch.rand(n, generator=generator) < OUTLIER_FRACTION
    box = (torch.rand(n, 2, generator=generator) * 2 - 1) * OUTLIER_BOX
    x = torch.where(outlier[:, None], box, x)
    return (x, outlier) if return_outlier else x


#: name -> (data source ``f(n, generator)``, description)
DATASETS = {
    "2d": (manifold2d, "the 2D problem"),
    "normal-noise": (normal_noise_curve, "the curve with its noise along the normal"),
    "outliers": (with_outliers, f"the 2D problem with {OUTLIER_FRACTION:.0%} outliers"),
}
#: family name -> (registered kind, settings for ``observations.build``)
FAMILIES = {
    "F-VAE sigma=0.1": ("fixed", {"scale": 0.1}),
    "LS-VAE": ("learned-scalar", {"init_scale": 1.0}),
    "LV-VAE": ("learned-vector", {"init_scale": 1.0}),
    "LV-VAE data start": ("learned-vector", {}),
    "LV-VAE beta-NLL 0.5": ("learned-vector", {"init_scale": 1.0, "beta_nll": 0.5}),
    "calibrated (sigma-VAE)": ("calibrated", {"init_scale": 1.0}),
    "Student-t": ("student-t", {"init_scale": 1.0}),
    "low-rank r=1": ("low-rank", {"rank": 1, "init_scale": 1.0}),
}


#: family name -> (registered kind, settings) on images. LV-VAE's floor: the paper's 1e-3, and
#: 0.01, the command line's default for images (``pyro-lvae train``), which the paper's floor
#: needs on Fashion-MNIST's constant background pixels (docs/images.md)
IMAGE_FAMILIES = {
    "F-VAE sigma=0.1": ("fixed", {"scale": 0.1}),
    "LS-VAE": ("learned-scalar", {"init_scale": 1.0}),
    "LV-VAE": ("learned-vector", {"init_scale": 1.0, "min_scale": 1e-3}),
    "LV-VAE floor 0.01": ("learned-vector", {"init_scale": 1.0, "min_scale": 0.01}),
    "LV-VAE beta-NLL 0.5": ("learned-vector", {"init_scale": 1.0, "beta_nll": 0.5}),
    "discretized Normal": ("discretized-normal", {}),
    "discretized logistic": ("discretized-logistic", {}),
}

#: image set name -> description (:func:`~.imagesets.load_split` loads them)
IMAGE_SETS = dict(IMAGE_SET_NAMES)
#: held-out images shown per family in the image grids (seed 0)
GRID_IMAGES = 10


@dataclass
class ObservationStudy(Study):
    """Settings (``quick()``: minutes on one CPU core)."""

    QUICK = {"seeds": 2, "steps": 1500, "hidden": 48, "blocks": 1, "eval_points": 1000,
             "iwae_points": 200, "iwae_samples": 100, "image_hidden": 64}

    datasets: tuple[str, ...] = tuple(DATASETS)
    families: tuple[str, ...] = tuple(FAMILIES)
    seeds: int = 5
    steps: int = 6000
    batch_size: int = 100
    hidden: int = 100
    blocks: int = 2
    latent_dim: int = 1
    lr: float = 1e-3
    beta: str = "linear:1000:0.5:1"
    eval_points: int = 4000
    iwae_points: int = 1000
    iwae_samples: int = 500
    device: str = "cpu"
    images: tuple[str, ...] = ("digits",)
    image_families: tuple[str, ...] = tuple(IMAGE_FAMILIES)
    image_hidden: int = 200
    image_latent_dim: int = 8
    #: the folder that holds ``FashionMNIST/raw`` (for the ``fashion-mnist`` image set)
    data_root: str | None = None
    #: the fixed Fashion-MNIST subset (training and held-out images) and its latent size
    fashion_train_size: int = 10000
    fashion_test_size: int = 2000
    fashion_latent_dim: int = 16
    #: the validation splits (held out of the training images) on which the image runs select
    #: their weights, and the steps between two evaluations of their held-out ELBO
    digits_validation_size: int = 250
    fashion_validation_size: int = 1000
    image_eval_every: int = 250

    def jobs(self) -> list[dict[str, Any]]:
        """One run per seed, data set and family."""
        keep = ("steps", "batch_size", "hidden", "blocks", "latent_dim", "lr", "beta",
                "eval_points", "iwae_points", "iwae_samples", "device")
        common = {k: getattr(self, k) for k in keep}
        points = [{**common, "dataset": d, "family": f, "seed": seed,
                   "label": f"{d} {f} seed {seed}"}
                  for seed in range(self.seeds) for d in self.datasets for f in self.families]
        images = [{**common, **self._image_settings(d), "dataset": d, "family": f,
                   "seed": seed, "label": f"{d} {f} seed {seed}"}
                  for seed in range(self.seeds) for d in self.images
                  for f in self.image_families]
        return points + images

    def _image_settings(self, dataset: str) -> dict[str, Any]:
        """The network of an image set's runs, and for Fashion-MNIST its subset and files."""
        out: dict[str, Any] = {"hidden": self.image_hidden, "latent_dim": self.image_latent_dim,
                               "validation_size": self.digits_validation_size,
                               "eval_every": self.image_eval_every}
        if dataset == "fashion-mnist":
            out.update(latent_dim=self.fashion_latent_dim, train_size=self.fashion_train_size,
                       test_size=self.fashion_test_size, data_root=self.data_root,
                       validation_size=self.fashion_validation_size)
        return out


def spike_size(loss: np.ndarray, window: int = SPIKE_WINDOW) -> float:
    """The largest rise of a training loss above the median of its previous ``window`` steps
    (in the loss's units; the first ``window`` steps are only a reference). 0 for a loss that never
    rises above its running median; NaN for a trace shorter than ``window + 1`` steps."""
    loss = np.asarray(loss, dtype=float)
    if loss.size <= window:
        return float("nan")
    past = np.lib.stride_tricks.sliding_window_view(loss[:-1], window)
    jumps = loss[window:] - np.median(past, axis=1)
    return float(max(0.0, np.nanmax(jumps)))


@torch.no_grad()
def _measure(vae, job: dict[str, Any]) -> dict[str, Any]:
    source = DATASETS[job["dataset"]][0]
    x = source(job["eval_points"], torch.Generator().manual_seed(EVAL_SEED)).to(vae.device)
    out: dict[str, Any] = {}
    out["elbo"] = evaluate.elbo_parts(vae, x, num_particles=4)["elbo"]
    out["iwae"] = evaluate.iwae(vae, x[: job["iwae_points"]], num_samples=job["iwae_samples"])
    if job["dataset"] == "outliers":
        _, outlier = with_outliers(job["eval_points"], torch.Generator().manual_seed(EVAL_SEED),
                                   return_outlier=True)
        clean = x[~outlier.to(vae.device)]
        out["elbo_clean"] = evaluate.elbo_parts(vae, clean, num_particles=4)["elbo"]
    gen = torch.Generator().manual_seed(EVAL_SEED + 7)
    z = torch.randn(2000, vae.latent_dim, generator=gen).to(vae.device)
    samples = vae.likelihood(z).sample()
    out["energy_samples"] = energy_distance(samples, x[:2000])
    if job["seed"] == 0:  # arrays for the figure
        out["figure"] = {"data": x[:1000].cpu().numpy(), "samples": samples[:1000].cpu().numpy()}
    return out


def _pixels(x: torch.Tensor) -> np.ndarray:
    """Images in [0, 1] as 8-bit values (the figure's arrays stay small in the cache)."""
    return levels(x).cpu().numpy()


@torch.no_grad()
def _measure_images(vae, job: dict[str, Any], x: torch.Tensor, kind: str,
                    shape: tuple[int, int, int]) -> dict[str, Any]:
    x = x.to(vae.device)
    out: dict[str, Any] = {"elbo": evaluate.elbo_parts(vae, x, num_particles=4)["elbo"]}
    out["iwae"] = evaluate.iwae(vae, x[: job["iwae_points"]], num_samples=job["iwae_samples"])
    discrete = observations.describe(kind).discrete
    for key in ("elbo", "iwae"):
        out[f"bits_{key}"] = (bits_per_dim(-out[key], x.shape[-1], "unit-levels", discrete=True)
                              if discrete else math.nan)
    rec = vae.reconstruct(x)
    out["rec_rmse"] = float((rec - x).pow(2).mean().sqrt())
    out["sharpness"] = sharpness_ratio(rec, x, shape)
    z = torch.randn(1000, vae.latent_dim, generator=torch.Generator().manual_seed(EVAL_SEED + 7))
    px = vae.likelihood(z.to(vae.device))
    samples, means = px.sample(), px.mean
    out["sample_spread"] = float((samples - means).pow(2).mean().sqrt())
    out["energy_samples"] = energy_distance(samples, x[:1000])
    if job["seed"] == 0:  # arrays for the image grid
        n = GRID_IMAGES
        out["figure"] = {"shape": list(shape), "data": _pixels(x[:n]),
                         "reconstruction": _pixels(rec[:n]), "mean": _pixels(means[:n]),
                         "sample": _pixels(samples[:n])}
    return out


def _train_and_held_out(job: dict[str, Any]):
    """``(training data, held-out images or None, image shape or None, validation images or
    None)`` of a job's set."""
    if job["dataset"] not in IMAGE_SETS:
        return DATASETS[job["dataset"]][0], None, None, None
    sizes = {k: job[k] for k in ("train_size", "test_size", "validation_size") if k in job}
    split = load_split(job["dataset"], job.get("data_root"), **sizes)
    return split.train, split.test, split.shape, split.validation


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one run (module-level: it runs in worker processes). A run whose
    training diverges is kept, with ``diverged`` set and NaN measures."""
    image = job["dataset"] in IMAGE_SETS
    kind, settings = (IMAGE_FAMILIES if image else FAMILIES)[job["family"]]
    data, held_out, shape, validation = _train_and_held_out(job)
    dims = held_out.shape[-1] if image else 2
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    vae = mlp_vae(dims, job["latent_dim"], observations.build(kind, **settings),
                  hidden=job["hidden"], blocks=job["blocks"], standardize=False)
    result: dict[str, Any] = {k: job[k] for k in ("dataset", "family", "seed")}
    tools: list[Any] = [ProgressBar(False)]
    if validation is not None:  # image runs select their weights on the validation split
        tools.append(SelectedWeights(validation, job["eval_every"], seed=EVAL_SEED + 5))
    try:
        history = fit(vae, data, steps=job["steps"],
                      batch_size=job["batch_size"], optimizer=fused_adam(job["lr"]),
                      beta=parse_schedule(job["beta"]), device=job["device"], seed=job["seed"],
                      tools=tools)
    except TrainingDiverged as e:
        result.update(diverged=True, reason=str(e).splitlines()[0], spike=math.nan,
                      elbo=math.nan, iwae=math.nan, energy_samples=math.nan)
        return result
    loss = np.asarray(history["loss"], dtype=float)
    result["diverged"] = False
    result["dims"] = dims
    result["spike"] = spike_size(loss / dims)  # per dimension
    result["final_sigma"] = float(history["sigma"][-1])
    if image:
        result.update(_select(vae, tools[-1], held_out, job["steps"]))
    result.update(_measure_images(vae, job, held_out, kind, shape) if image
                  else _measure(vae, job))
    return result


@torch.no_grad()
def _select(vae, selection: SelectedWeights, test: torch.Tensor, steps: int) -> dict[str, Any]:
    """The test ELBO of the last weights, then the selected weights loaded into ``vae``: their
    step, validation ELBO and the validation curve."""
    pyro.set_rng_seed(EVAL_SEED)
    last = evaluate.elbo_parts(vae, test.to(vae.device), num_particles=4)["elbo"]
    step = selection.load(vae)
    curve = [(s, e) for s, e in selection.curve]
    return {"elbo_last": last, "selected_step": step, "steps": steps,
            "validation_elbo": dict(curve)[step], "validation_curve": curve}


def run_study(study: ObservationStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Every run of ``study``; ``cache``: a folder keeping finished runs (see
    :func:`pyro_lvae.experiments.jobs.run_jobs`)."""
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


# ---- analysis --------------------------------------------------------------------------------
KEYS = ("elbo", "iwae", "energy_samples", "spike", "elbo_clean", "bits_elbo", "bits_iwae",
        "rec_rmse", "sharpness", "sample_spread", "selected_step", "validation_elbo",
        "elbo_last")


def _groups(results: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["family"]), []).append(r)
    for rs in groups.values():
        rs.sort(key=lambda r: r["seed"])
    return groups


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (data set, family): mean and standard deviation over seeds of each measure,
    the number of seeds, of diverged runs and of runs that spiked (:data:`SPIKE_NATS`)."""
    rows = []
    for (d, f), rs in _groups(results).items():
        row: dict[str, Any] = {"dataset": d, "family": f, "seeds": len(rs),
                               "diverged": sum(bool(r.get("diverged")) for r in rs),
                               "spiked": sum(bool(r.get("spike", 0) > SPIKE_NATS) for r in rs)}
        for key in KEYS:
            v = np.array([r.get(key, math.nan) for r in rs], dtype=float)
            finite = v[np.isfinite(v)]
            row[key] = float(finite.mean()) if finite.size else math.nan
            row[key + "_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        rows.append(row)
    return rows


def verdict(diff: np.ndarray, margin: float = 0.0) -> tuple[bool | None, float, float]:
    """Whether paired differences ``a - b`` say that ``a`` is above ``b - margin``: ``True``
    when their mean, less two standard errors, is above ``-margin``; ``False`` when their mean,
    plus two standard errors, is below it; ``None`` (undecided) otherwise or with fewer than
    two pairs. Returns ``(holds, mean, standard error)``."""
    diff = np.asarray(diff, dtype=float)
    mean, se, n = mean_and_se(diff[np.isfinite(diff)])
    if n < 2:
        return None, mean, se
    if mean - 2 * se > -margin:
        return True, mean, se
    if mean + 2 * se < -margin:
        return False, mean, se
    return None, mean, se


CLAIMS = (
    ("normal-noise", "low-rank r=1", "LV-VAE", 0.0,
     "the low-rank Normal beats LV-VAE in held-out ELBO on the curve with noise along its normal"),
    ("outliers", "Student-t", "LV-VAE", 0.0,
     "Student-t beats LV-VAE in held-out ELBO on the set with outliers"),
    ("2d", "calibrated (sigma-VAE)", "LS-VAE", CALIBRATED_MARGIN,
     f"the calibrated sigma reaches LS-VAE's held-out ELBO on the 2D problem (within "
     f"{CALIBRATED_MARGIN} nats)"),
)


def claims(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The study's claims checked on the results, paired by seed: ``(claim, holds, evidence)``
    (``holds`` is ``None`` while the difference is within two standard errors)."""
    groups = _groups(results)
    out = []
    for dataset, a, b, margin, text in CLAIMS:
        if (dataset, a) not in groups or (dataset, b) not in groups:
            continue
        diff = paired_differences(groups[(dataset, a)], groups[(dataset, b)])
        holds, mean, se = verdict(diff, margin)
        n = int(np.isfinite(diff).sum())
        out.append((text, holds,
                    f"{a} - {b} = {mean:+.3f} nats per point (paired over {n} seeds, standard "
                    f"error {se:.3f}; {a} ahead in {int((diff > 0).sum())})"))
    return out


def _fmt(m: float, s: float, d: int = 3) -> str:
    return "n/a" if math.isnan(m) else mean_sd(m, s, d)


def markdown(study: ObservationStudy, results: list[dict[str, Any]]) -> str:
    """The report: a table per data set, the claims, the definitions."""
    lines = []
    rows = aggregate(results)
    for dataset in study.datasets:
        clean = " | held-out ELBO, clean points" if dataset == "outliers" else ""
        lines += [f"### {DATASETS[dataset][1]} (`{dataset}`)", "",
                  "| family | seeds | held-out ELBO | IWAE bound | energy distance of samples | "
                  f"largest loss jump | spiked / diverged{clean} |",
                  "|---|---:|---:|---:|---:|---:|---:" + ("|---:" if clean else "") + "|"]
        for r in (r for r in rows if r["dataset"] == dataset):
            extra = f" | {_fmt(r['elbo_clean'], r['elbo_clean_sd'])}" if clean else ""
            lines.append(
                f"| {r['family']} | {r['seeds']} | {_fmt(r['elbo'], r['elbo_sd'])} | "
                f"{_fmt(r['iwae'], r['iwae_sd'])} | "
                f"{_fmt(r['energy_samples'], r['energy_samples_sd'], 4)} | "
                f"{_fmt(r['spike'], r['spike_sd'], 2)} | {r['spiked']} / {r['diverged']}{extra} |")
        lines.append("")
    lines += _image_tables(study, rows, results)
    word = {True: "holds", False: "does not hold", None: "undecided"}
    verdicts = [f"- {c}: **{word[h]}**. {e}" for c, h, e in claims(results)]
    return ("# Observation models on points and images: the study\n\n"
            f"Settings: {asdict(study)}\n\n" + "\n".join(lines) + "\n"
            "Mean ± standard deviation over seeds (diverged runs left out of the means). "
            f"Points: ELBO (4 draws per point, {study.eval_points} held-out points of the "
            f"same set) and IWAE bound ({study.iwae_samples} samples, first "
            f"{study.iwae_points} points) in nats per point, higher is better; energy "
            "distance between 2000 samples of the model (z from the prior, x from p(x|z)) and "
            "held-out points, lower is better. Largest loss jump: the largest rise of the "
            f"training loss above the median of its previous {SPIKE_WINDOW} steps, in nats "
            "per dimension; a run spiked when it exceeds "
            f"{SPIKE_NATS}.\n\n"
            "## Claims\n\nPaired by seed; undecided while the mean difference is within two "
            "standard errors (of the margin, where a claim has one).\n\n" + "\n".join(verdicts)
            + "\n")


def _image_heading(study: ObservationStudy, dataset: str) -> str:
    if dataset == "fashion-mnist":
        return (f"a fixed subset of Fashion-MNIST, {study.fashion_train_size} training, "
                f"{study.fashion_validation_size} validation and "
                f"{study.fashion_test_size} held-out images (28x28)")
    return IMAGE_SETS[dataset]


def _validation_size(study: ObservationStudy, dataset: str) -> int:
    return (study.fashion_validation_size if dataset == "fashion-mnist"
            else study.digits_validation_size)


def _image_tables(study: ObservationStudy, rows: list[dict[str, Any]],
                  results: list[dict[str, Any]]) -> list[str]:
    lines = []
    for dataset in study.images:
        dims = next((r["dims"] for r in results if r["dataset"] == dataset and "dims" in r),
                    None)
        lines += [f"### {_image_heading(study, dataset)} (`{dataset}`)", "",
                  "| family | seeds | selected step | held-out ELBO (nats/image) | IWAE bound | "
                  "bits/dim (ELBO / IWAE) | reconstruction RMSE | sharpness | sample spread | "
                  "held-out ELBO, last weights | largest loss jump | spiked / diverged |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in (r for r in rows if r["dataset"] == dataset):
            bits = ("n/a" if math.isnan(r["bits_elbo"]) else
                    f"{_fmt(r['bits_elbo'], r['bits_elbo_sd'])} / {r['bits_iwae']:.3f}")
            lines.append(
                f"| {r['family']} | {r['seeds']} | "
                f"{_fmt(r['selected_step'], r['selected_step_sd'], 0)} | "
                f"{_fmt(r['elbo'], r['elbo_sd'], 1)} | "
                f"{_fmt(r['iwae'], r['iwae_sd'], 1)} | {bits} | "
                f"{_fmt(r['rec_rmse'], r['rec_rmse_sd'])} | "
                f"{_fmt(r['sharpness'], r['sharpness_sd'])} | "
                f"{_fmt(r['sample_spread'], r['sample_spread_sd'])} | "
                f"{_fmt(r['elbo_last'], r['elbo_last_sd'], 1)} | "
                f"{_fmt(r['spike'], r['spike_sd'], 1)} | {r['spiked']} / {r['diverged']} |")
        per = f" of {dims} pixels" if dims else ""
        lines += ["", f"Images: weights selected on a validation split of "
                  f"{_validation_size(study, dataset)} images held out of the training images "
                  f"(the best held-out ELBO, evaluated every {study.image_eval_every} steps and "
                  "at the last; selected step: the steps trained by then), never on the test "
                  "images; every other column but the last weights' ELBO is measured on the "
                  f"test images with those weights. ELBO and IWAE in nats per image{per}; a "
                  "continuous density "
                  "on these discrete values is not a likelihood, so only the discretised models "
                  "have bits/dim (of the images as 8-bit values) and their nats are not "
                  "comparable with the others'. Reconstruction RMSE: decoder mean at the "
                  "posterior mean against the image (pixel units of [0, 1]); sharpness: the "
                  "gradient energy (mean squared difference of adjacent pixels along rows and "
                  "columns) of those decoder means over that of the held-out images, 1 as sharp "
                  "as the data, below 1 blurrier; sample spread: RMS of samples of p(x|z) "
                  f"around their means, z from the prior. Image grid: `images-{dataset}.png`.",
                  ""]
    return lines


def images_figure(results: list[dict[str, Any]], dataset: str):
    """The image grid of one image set (seed 0): held-out images, then per family their
    reconstructions (decoder means), decoder means at ``z ~ p(z)`` and samples of ``p(x|z)``
    at those ``z``; ``None`` without seed-0 arrays."""
    from ..plots import image_grid_figure

    seed0 = [r for r in results if r["dataset"] == dataset and r["seed"] == 0
             and "figure" in r]
    if not seed0:
        return None

    def images(r, key):
        shape = tuple(r["figure"]["shape"])
        return torch.as_tensor(np.asarray(r["figure"][key])).reshape(-1, *shape).float() / 255

    rows = [("held-out images", images(seed0[0], "data"))]
    for r in seed0:
        rows += [(f"{r['family']}\nreconstruction", images(r, "reconstruction")),
                 ("mean of p(x|z)", images(r, "mean")), ("sample of p(x|z)", images(r, "sample"))]
    return image_grid_figure(rows, f"{dataset}, seed 0: reconstructions of held-out images; "
                             "z ~ p(z), decoder means and samples", columns=GRID_IMAGES)


def generations_figure(results: list[dict[str, Any]]):
    """Samples of each family (seed 0) over held-out data: one row per data set."""
    from matplotlib.figure import Figure

    seed0 = [r for r in results if r["seed"] == 0 and "figure" in r and r["dataset"] in DATASETS]
    datasets = list(dict.fromkeys(r["dataset"] for r in seed0))
    families = list(dict.fromkeys(r["family"] for r in seed0))
    fig = Figure(figsize=(2.6 * max(1, len(families)), 2.4 * max(1, len(datasets))),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(max(1, len(datasets)), max(1, len(families)),
                                      squeeze=False))
    for r in seed0:
        ax = axes[datasets.index(r["dataset"]), families.index(r["family"])]
        data, smp = np.asarray(r["figure"]["data"]), np.asarray(r["figure"]["samples"])
        ax.scatter(data[:, 0], data[:, 1], s=1, c="lightgray")
        ax.scatter(smp[:, 0], smp[:, 1], s=1, c="#2ca02c", alpha=0.6)
        ax.set_xlim(-3.2, 3.2)
        ax.set_ylim(-2.2, 2.2)
        ax.set_title(f"{r['family']}\n{r['dataset']}", fontsize=8)
        ax.tick_params(labelsize=6)
    return fig


def write_outputs(study: ObservationStudy, results: list[dict[str, Any]],
                  out: Path) -> list[Path]:
    """``observations.md``, ``summary.csv``, ``runs.csv``, ``generations.png`` and, per image
    set, ``images-<set>.png`` in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(markdown(study, results), out / "observations.md"),
               write_csv(aggregate(results), out / "summary.csv"),
               write_csv([{**dict.fromkeys(KEYS, math.nan), **r} for r in results],
                         out / "runs.csv")]
    written.append(save_figure(generations_figure(results), out / "generations.png", dpi=75))
    for dataset in study.images:
        fig = images_figure(results, dataset)
        if fig is not None:
            written.append(save_figure(fig, out / f"images-{dataset}.png", dpi=75))
    return written
