"""Why does the learned per-pixel sigma blur? A sweep of network size, training length and
observation model on small images.

On Fashion-MNIST the decoder means of LV-VAE (a sigma per pixel from the decoder) were the
blurriest of the families (docs/images.md). This study asks whether that is capacity, training
length or the objective: convolutional ResNet VAEs (:func:`pyro_lvae.conv_vae`, 3 convolutions,
latent ``latent_dim``) over a grid of ``sizes`` (``(width, blocks)`` pairs) and two or more
training ``lengths``, for the families of :data:`FAMILIES`:

- ``F-VAE sigma=0.1``: a fixed sigma;
- ``LS-VAE``: one learned sigma; ``LV-VAE``: a sigma per pixel from the decoder, both from the
  package's default start (half the data's spread, :func:`pyro_lvae.initial_scale`), LV-VAE
  also from 0.05 and 0.01 (``LV-VAE start 0.05``, ``LV-VAE start 0.01``, at the sizes of
  ``start_sizes``) and with beta-NLL (``beta_nll=0.5``, Seitzer et al. 2022; the option of
  :class:`~pyro_lvae.LearnedVectorScale`); every learned sigma floored at 1e-3 (the paper's
  floor, the library's default);
- ``discretized logistic``: a logistic per pixel on the 256 bins, trained on the levels
  ``k / 255`` (the others on dequantised pixels ``(k + u) / 256``);
- ``LV-VAE mean-first``: a candidate fix, LV-VAE whose sigma is held at 0.1 for the first
  ``mean_first_steps`` steps (the mean is trained as F-VAE's), then learned by the decoder
  (:class:`MeanFirstVectorScale`).

Data: scikit-learn's digits upscaled to 28x28 (:func:`~.imagesets.upscaled`, bilinear, back on
the 8-bit grid), and with ``images`` also the fixed Fashion-MNIST subset
(:func:`~.imagesets.load_split`). Every run selects its weights on a validation split held out
of the training images (the best held-out ELBO, every ``eval_every`` steps:
:class:`~pyro_lvae.experiments.selection.SelectedWeights`), separately for each training length
(a run of ``m`` steps is the first ``m`` steps of the longest run: a constant learning rate and
KL weight, so one run per setting gives every length). Measured on the test images with the
selected weights: the sharpness of the decoder means at the posterior mean
(:func:`~pyro_lvae.experiments.sharpness.sharpness_ratio` against the test images), their RMSE,
the test ELBO (nats per image) and bits/dim (of the 8-bit images: dequantised bound for the
Normal families, probability mass for the logistic), and the mean sigma.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from matplotlib.figure import Figure
from pyro import distributions as dist

from ... import evaluate, observations
from ...datasets import Dequantize, bits_per_dim
from ...datasets.images import UnitLevels
from ...errors import ConfigError, TrainingDiverged
from ...io import atomic_write_text, save_figure, write_csv
from ...observations.normal import LearnedVectorScale
from ...training import ProgressBar, fit, fused_adam
from ...vae import conv_vae
from ..jobs import run_jobs
from ..points import EVAL_SEED
from ..selection import SelectedWeights
from ..sharpness import sharpness_ratio
from . import Study, mean_sd
from .imagesets import ImageSplit, levels, load_split, upscaled

__all__ = ["BlurStudy", "FAMILIES", "START_FAMILIES", "SIZES", "MeanFirstVectorScale",
           "run_job", "run_study", "rows_of", "aggregate", "markdown", "size_figure",
           "length_figure", "write_outputs"]

#: the floor of every learned sigma (the paper's)
MIN_SCALE = 1e-3
#: F-VAE's sigma, and the mean-first phase's
FIXED_SCALE = 0.1
#: family -> (registered kind, settings); ``mean-first`` is :class:`MeanFirstVectorScale`
FAMILIES: dict[str, tuple[str, dict[str, Any]]] = {
    "F-VAE sigma=0.1": ("fixed", {"scale": FIXED_SCALE}),
    "LS-VAE": ("learned-scalar", {"min_scale": MIN_SCALE}),
    "LV-VAE": ("learned-vector", {"min_scale": MIN_SCALE}),
    "LV-VAE start 0.05": ("learned-vector", {"min_scale": MIN_SCALE, "init_scale": 0.05}),
    "LV-VAE start 0.01": ("learned-vector", {"min_scale": MIN_SCALE, "init_scale": 0.01}),
    "LV-VAE beta-NLL 0.5": ("learned-vector", {"min_scale": MIN_SCALE, "beta_nll": 0.5}),
    "discretized logistic": ("discretized-logistic", {}),
    "LV-VAE mean-first": ("mean-first", {"min_scale": MIN_SCALE, "init_scale": FIXED_SCALE}),
}
#: the families of LV-VAE's other starts, run only at the sizes of ``start_sizes``
START_FAMILIES = ("LV-VAE start 0.05", "LV-VAE start 0.01")
#: ``--size`` -> the grid: sizes ``(width, blocks)``, lengths (steps), evaluation interval,
#: latent size, batch size
SIZES: dict[str, dict[str, Any]] = {
    "cpu": {"sizes": ((4, 1), (8, 1), (16, 1)), "lengths": (300, 1000), "eval_every": 100,
            "latent_dim": 16, "batch_size": 64},
    "paper": {"sizes": ((16, 2), (32, 4), (64, 4)), "lengths": (5000, 20000),
              "eval_every": 500, "latent_dim": 256, "batch_size": 128},
}
#: measured per run and training length (mean and sd over seeds in the tables)
MEASURED = ("selected_step", "validation_elbo", "elbo", "bits_per_dim", "rec_rmse", "sharpness",
            "sigma")


class MeanFirstVectorScale(LearnedVectorScale):
    """LV-VAE whose sigma is held at ``init_scale`` for the first ``fixed_steps`` training steps
    (the decoder's scale half gets no gradient then: the mean is trained as with a fixed
    sigma), and is the decoder's afterwards, starting from ``init_scale`` for a raw output of 0.
    The phase follows :meth:`set_step` (:func:`pyro_lvae.fit` calls it before every step).

    :param int fixed_steps: steps with sigma held at ``init_scale``
    :param float init_scale: the held sigma and the learned one's start
    :param float min_scale: floor on every sigma
    """

    def __init__(self, *, fixed_steps: int, init_scale: float, min_scale: float = MIN_SCALE
                 ) -> None:
        super().__init__(init_scale=init_scale, min_scale=min_scale)
        self.fixed_steps = int(fixed_steps)
        self._step = 0

    def set_step(self, step: int) -> None:
        """Remember the training step (the phase)."""
        self._step = int(step)

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        """The Normal of the decoder's mean, with the held sigma in the first phase."""
        loc, scale = self.loc_and_scale(output, event_dim)
        if self._step < self.fixed_steps:
            scale = torch.full_like(loc, self.init_scale)
        return dist.Normal(loc, scale).to_event(event_dim)


@dataclass
class BlurStudy(Study):
    """Settings. ``size``: the grid of :data:`SIZES` (``cpu``: widths 4, 8 and 16 with one
    residual block, 300 and 1000 steps; ``paper``: for a GPU). ``QUICK``: minutes on two CPU
    cores (widths 2, 4 and 8, 60 and 180 steps, digits only, two seeds)."""

    QUICK = {"seeds": 2, "sizes": ((2, 1), (4, 1), (8, 1)), "lengths": (60, 180),
             "eval_every": 30, "fashion_train_size": 2000, "fashion_test_size": 500,
             "fashion_validation_size": 250, "test_images": 300}

    size: str = "cpu"
    images: tuple[str, ...] = ("digits",)
    data_root: str | None = None
    families: tuple[str, ...] = tuple(FAMILIES)
    seeds: int = 3
    #: ``None``: from ``size``
    sizes: tuple[tuple[int, int], ...] | None = None
    lengths: tuple[int, ...] | None = None
    eval_every: int | None = None
    latent_dim: int | None = None
    batch_size: int | None = None
    #: indices into ``sizes`` of the sizes that run :data:`START_FAMILIES`
    start_sizes: tuple[int, ...] = (1,)
    lr: float = 1e-3
    #: the mean-first phase (``None``: half the shortest length)
    mean_first_steps: int | None = None
    digits_validation_size: int = 250
    fashion_train_size: int = 10000
    fashion_test_size: int = 1000
    fashion_validation_size: int = 1000
    #: test images measured (the first ones of the test split; ``None``: all)
    test_images: int | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(f"unknown blur study size {self.size!r}; expected one of "
                              f"{', '.join(SIZES)}")
        for key, value in SIZES[self.size].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.sizes = tuple(tuple(s) for s in self.sizes)
        self.lengths = tuple(sorted(self.lengths))
        if self.mean_first_steps is None:
            self.mean_first_steps = self.lengths[0] // 2
        bad = [n for n in self.lengths if n < 1 or n % self.eval_every]
        if bad:
            raise ConfigError(f"training lengths {bad}: each must be a positive multiple of "
                              f"eval_every {self.eval_every}")
        unknown = [f for f in self.families if f not in FAMILIES]
        if unknown:
            raise ConfigError(f"unknown blur families {unknown}; expected names from "
                              f"{', '.join(FAMILIES)}")

    @property
    def steps(self) -> int:
        """The longest training length (every run trains this long)."""
        return max(self.lengths)

    def describe(self) -> str:
        """One line for the command line."""
        return (f"{self.seeds} seed(s), conv ResNets (width, blocks) {list(self.sizes)}, "
                f"lengths {list(self.lengths)} steps, image sets {', '.join(self.images)}")

    def jobs(self) -> list[dict[str, Any]]:
        """One run per seed, image set, family and size (:data:`START_FAMILIES` only at the
        sizes of ``start_sizes``)."""
        common = {"lengths": list(self.lengths), "eval_every": self.eval_every,
                  "latent_dim": self.latent_dim, "batch_size": self.batch_size, "lr": self.lr,
                  "mean_first_steps": self.mean_first_steps, "test_images": self.test_images,
                  "device": self.device}
        out = []
        for seed in range(self.seeds):
            for name in self.images:
                for family in self.families:
                    for i, (width, blocks) in enumerate(self.sizes):
                        if family in START_FAMILIES and i not in self.start_sizes:
                            continue
                        out.append({**common, **self._image_settings(name), "family": family,
                                    "width": width, "blocks": blocks, "seed": seed,
                                    "label": f"{name} {family} w{width}b{blocks} seed {seed}"})
        return out

    def _image_settings(self, name: str) -> dict[str, Any]:
        if name == "fashion-mnist":
            return {"images": name, "train_size": self.fashion_train_size,
                    "test_size": self.fashion_test_size,
                    "validation_size": self.fashion_validation_size,
                    "data_root": self.data_root}
        return {"images": name, "validation_size": self.digits_validation_size}


# ---- one run ---------------------------------------------------------------------------------
_SPLITS: dict[tuple, ImageSplit] = {}


def _split(job: dict[str, Any]) -> ImageSplit:
    """The job's images at 28x28 (kept for the process's later runs)."""
    key = (job["images"], job.get("train_size"), job.get("test_size"), job["validation_size"])
    if key not in _SPLITS:
        if job["images"] == "digits":
            split = upscaled(load_split("digits", validation_size=job["validation_size"]), 28)
        else:
            split = load_split(job["images"], job.get("data_root"), job["train_size"],
                               job["test_size"], job["validation_size"])
        _SPLITS[key] = split
    return _SPLITS[key]


def _observation(job: dict[str, Any]):
    kind, settings = FAMILIES[job["family"]]
    if kind == "mean-first":
        return MeanFirstVectorScale(fixed_steps=job["mean_first_steps"], **settings)
    return observations.build(kind, **settings)


def _images(x: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    return levels(x).reshape(-1, *shape)


@torch.no_grad()
def _measure(vae, x: torch.Tensor, clean: torch.Tensor, discrete: bool) -> dict[str, Any]:
    """The test numbers of ``vae``: ``x`` as the model sees the test images, ``clean`` the
    images ``k / 255``."""
    pyro.set_rng_seed(EVAL_SEED)
    elbo = evaluate.elbo_parts(vae, x, num_particles=2, batch_size=250)["elbo"]
    dims = x[0].numel()
    bits = bits_per_dim(-elbo, dims, "unit-levels" if discrete else "dequantize",
                        discrete=discrete)
    rec = torch.cat([vae.reconstruct(b) for b in x.split(250)])
    out = {"elbo": elbo, "bits_per_dim": bits,
           "rec_rmse": float((rec - clean).pow(2).mean().sqrt()),
           "sharpness": sharpness_ratio(rec, clean)}
    scales = evaluate.scale_summary(vae, x, batch_size=250)
    out["sigma"] = float(scales["sigma"]) if scales is not None else math.nan
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one run for the longest length; measure the weights selected up to each length
    (module-level: it runs in worker processes). A diverged run is kept with NaN measures."""
    split = _split(job)
    shape = split.shape
    kind = FAMILIES[job["family"]][0]
    discrete = kind != "mean-first" and observations.describe(kind).discrete
    transform = UnitLevels() if discrete else Dequantize()
    noise = torch.Generator().manual_seed(EVAL_SEED + 2)
    validation = transform(_images(split.validation, shape), noise)
    kept = split.test[: job["test_images"]]
    test = transform(_images(kept, shape), torch.Generator().manual_seed(EVAL_SEED))
    clean = kept.reshape(-1, *shape)
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    vae = conv_vae(shape, job["latent_dim"], _observation(job), width=job["width"], convs=3,
                   blocks=job["blocks"])
    lengths = tuple(job["lengths"])
    selection = SelectedWeights(validation, job["eval_every"], seed=EVAL_SEED + 5,
                                milestones=lengths)
    base = {k: job[k] for k in ("images", "family", "width", "blocks", "seed")}
    base["parameters"] = sum(p.numel() for p in vae.parameters())
    t0 = time.perf_counter()
    try:
        fit(vae, _images(split.train, shape), steps=max(lengths), batch_size=job["batch_size"],
            optimizer=fused_adam(job["lr"]), beta=1.0, device=job["device"], seed=job["seed"],
            tools=[ProgressBar(False), selection], transform=transform)
    except TrainingDiverged as e:
        return {**base, "diverged": True, "reason": str(e).splitlines()[0],
                "train_seconds": time.perf_counter() - t0,
                "rows": [{"length": n, **dict.fromkeys(MEASURED, math.nan)} for n in lengths]}
    seconds = time.perf_counter() - t0
    curve = dict(selection.curve)
    rows = []
    for n in lengths:
        step = selection.load(vae, upto=n)
        rows.append({"length": n, "selected_step": step, "validation_elbo": curve[step],
                     **_measure(vae, test.to(vae.device), clean.to(vae.device), discrete)})
    return {**base, "diverged": False, "train_seconds": seconds, "rows": rows,
            "validation_curve": list(selection.curve)}


def run_study(study: BlurStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Every run of ``study``; ``cache``: a folder keeping finished runs (see
    :func:`pyro_lvae.experiments.jobs.run_jobs`)."""
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


# ---- numbers and figures ---------------------------------------------------------------------
def _size(r: dict[str, Any]) -> str:
    return f"w{r['width']}b{r['blocks']}"


def rows_of(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run and training length (the run's settings beside each length's
    numbers)."""
    out = []
    for r in results:
        head = {k: v for k, v in r.items() if k not in ("rows", "validation_curve")}
        out += [{**head, "size": _size(r), **row} for row in r["rows"]]
    return out


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (image set, family, size, length): mean and sd over seeds of each measure
    (diverged runs left out of the means and counted)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows_of(results):
        key = (row["images"], row["family"], row["width"], row["blocks"], row["length"])
        groups.setdefault(key, []).append(row)
    out = []
    for (images, family, width, blocks, length), rs in groups.items():
        agg: dict[str, Any] = {"images": images, "family": family, "width": width,
                               "blocks": blocks, "size": f"w{width}b{blocks}",
                               "parameters": rs[0]["parameters"], "length": length,
                               "seeds": len(rs), "diverged": sum(bool(r["diverged"]) for r in rs),
                               "train_seconds": float(np.mean([r["train_seconds"] for r in rs]))}
        for key in MEASURED:
            v = np.array([r[key] for r in rs], dtype=float)
            v = v[np.isfinite(v)]
            agg[key] = float(v.mean()) if v.size else math.nan
            agg[key + "_sd"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
        out.append(agg)
    return out


def _fmt(m: float, s: float, d: int = 3) -> str:
    return "n/a" if math.isnan(m) else mean_sd(m, s, d)


def markdown(study: BlurStudy, results: list[dict[str, Any]]) -> str:
    """The report: per image set, a pivot of the sharpness and the full table."""
    rows = aggregate(results)
    lines = ["# Why the learned per-pixel sigma blurs: the sweep", "",
             f"Settings: {asdict(study)}", ""]
    for name in study.images:
        mine = [r for r in rows if r["images"] == name]
        if not mine:
            continue
        sizes = list(dict.fromkeys(r["size"] for r in mine))
        lengths = sorted({r["length"] for r in mine})
        families = list(dict.fromkeys(r["family"] for r in mine))
        cell = {(r["family"], r["size"], r["length"]): r for r in mine}
        cols = [(s, n) for s in sizes for n in lengths]
        lines += [f"## {name}", "", "Sharpness of the decoder means (test images, selected "
                  "weights; 1 as sharp as the data):", "",
                  "| family | " + " | ".join(f"{s}, {n} steps" for s, n in cols) + " |",
                  "|---|" + "---:|" * len(cols)]
        for f in families:
            vals = [cell.get((f, s, n)) for s, n in cols]
            lines.append(f"| {f} | " + " | ".join(
                "" if v is None else _fmt(v["sharpness"], v["sharpness_sd"]) for v in vals)
                + " |")
        lines += ["", "| family | size (parameters) | length | seeds | selected step | "
                  "sharpness | RMSE | bits/dim | test ELBO (nats/image) | validation ELBO | "
                  "sigma (mean) | diverged | train s |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in mine:
            lines.append(
                f"| {r['family']} | {r['size']} ({r['parameters']}) | {r['length']} | "
                f"{r['seeds']} | {_fmt(r['selected_step'], r['selected_step_sd'], 0)} | "
                f"{_fmt(r['sharpness'], r['sharpness_sd'])} | "
                f"{_fmt(r['rec_rmse'], r['rec_rmse_sd'], 4)} | "
                f"{_fmt(r['bits_per_dim'], r['bits_per_dim_sd'])} | "
                f"{_fmt(r['elbo'], r['elbo_sd'], 1)} | "
                f"{_fmt(r['validation_elbo'], r['validation_elbo_sd'], 1)} | "
                f"{_fmt(r['sigma'], r['sigma_sd'], 4)} | {r['diverged']} | "
                f"{r['train_seconds']:.0f} |")
        lines.append("")
    lines += ["Mean ± standard deviation over seeds. Size: wWIDTHbBLOCKS of conv_vae (3 "
              "convolutions). Length: training steps; the weights are those with the best "
              f"validation ELBO (every {study.eval_every} steps, on a split held out of the "
              "training images) up to that length, their step in the selected-step column; "
              "every other number is on the test images. Sharpness: gradient energy of the "
              "decoder means at the posterior mean over that of the test images; RMSE in pixel "
              "units of [0, 1]; bits/dim of the 8-bit images (dequantised bound for the Normal "
              "families, probability mass for the logistic); sigma: the mean sigma on the test "
              "images (the logistic's scale for the logistic). Train s: seconds per run for "
              "the longest length, mean over seeds."]
    return "\n".join(lines) + "\n"


def _family_lines(ax, rows: list[dict[str, Any]], x_key: str, y_key: str,
                  order: list[Any]) -> None:
    for family in dict.fromkeys(r["family"] for r in rows):
        rs = sorted((r for r in rows if r["family"] == family),
                    key=lambda r: order.index(r[x_key]))
        if not rs:
            continue
        x = [order.index(r[x_key]) for r in rs]
        y = np.array([r[y_key] for r in rs])
        sd = np.nan_to_num(np.array([r[y_key + "_sd"] for r in rs]))
        ax.errorbar(x, y, yerr=sd, marker="o", ms=3, capsize=2, lw=1, label=family)
    ax.set_xticks(range(len(order)))


def _figure(rows: list[dict[str, Any]], x_key: str, order: list[Any], labels: list[str],
            title: str) -> Figure:
    fig = Figure(figsize=(11, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, key, name in ((axes[0], "sharpness", "sharpness of decoder means"),
                          (axes[1], "rec_rmse", "reconstruction RMSE")):
        _family_lines(ax, rows, x_key, key, order)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_ylabel(name)
        ax.set_yscale("log")
    axes[0].legend(fontsize=6)
    fig.suptitle(title, fontsize=9)
    return fig


def size_figure(results: list[dict[str, Any]], name: str) -> Figure | None:
    """Sharpness and RMSE against network size per family, at the longest length (mean and sd
    over seeds; :data:`START_FAMILIES`, run at some sizes only, left out); ``None`` without
    runs of ``name``."""
    rows = [r for r in aggregate(results) if r["images"] == name
            and r["family"] not in START_FAMILIES]
    if not rows:
        return None
    length = max(r["length"] for r in rows)
    rows = [r for r in rows if r["length"] == length]
    order = sorted(dict.fromkeys(r["size"] for r in rows),
                   key=lambda s: next(r["parameters"] for r in rows if r["size"] == s))
    labels = [f"{s}\n{next(r['parameters'] for r in rows if r['size'] == s)} params"
              for s in order]
    return _figure(rows, "size", order, labels,
                   f"{name}: against network size, {length} steps (selected on validation)")


def length_figure(results: list[dict[str, Any]], name: str) -> Figure | None:
    """Sharpness and RMSE against training length per family, at the largest size; ``None``
    without runs of ``name``."""
    rows = [r for r in aggregate(results) if r["images"] == name]
    if not rows:
        return None
    biggest = max(rows, key=lambda r: r["parameters"])["size"]
    rows = [r for r in rows if r["size"] == biggest]
    order = sorted({r["length"] for r in rows})
    return _figure(rows, "length", order, [f"{n} steps" for n in order],
                   f"{name}: against training length, size {biggest} (selected on validation)")


def write_outputs(study: BlurStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """``blur.md``, ``summary.csv``, ``runs.csv`` and, per image set, ``blur-size-SET.png`` and
    ``blur-length-SET.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(markdown(study, results), out / "blur.md"),
               write_csv(aggregate(results), out / "summary.csv"),
               write_csv(rows_of(results), out / "runs.csv")]
    for name in study.images:
        for kind, make in (("size", size_figure), ("length", length_figure)):
            fig = make(results, name)
            if fig is not None:
                written.append(save_figure(fig, out / f"blur-{kind}-{name}.png", dpi=80))
    return written
