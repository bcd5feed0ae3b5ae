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

The claims, per curve and learned prior, for LV-VAE, paired by seed against ``N(0, I)``
(:func:`claims`): the learned prior lowers the energy distance of the generations, and it
lowers the hole mass. A claim holds when the mean paired difference is below 0 by more than two
standard errors, does not hold when above 0 by more than two, and is undecided otherwise (or
with one seed).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch
from matplotlib.figure import Figure

from ... import evaluate, observations, priors
from ...datasets import manifold2d, spiral2d
from ...geco import GECO
from ...io import atomic_write_text, save_figure, write_csv
from ...training import fit, fused_adam
from ...vae import mlp_vae
from ..jobs import run_jobs
from ..points import EVAL_SEED
from . import Study, mean_sd, paired
from .manifold import energy_distance

__all__ = ["PriorsStudy", "METHODS", "CURVES", "LEARNED_PRIORS", "run_job", "run_study",
           "aggregate", "paired", "verdict", "claims", "markdown", "priors_figure",
           "write_outputs"]

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
CURVES = {"manifold2d": manifold2d, "spiral2d": spiral2d}
#: points of each kind drawn per panel of :func:`priors_figure`
FIGURE_POINTS = 500
#: measured per run (mean ± sd over seeds in the table)
METRICS = ("elbo", "iwae", "kl", "mutual_information", "marginal_kl", "hole_mass",
           "active_units", "energy_samples", "energy_means", "final_sigma")


@dataclass
class PriorsStudy(Study):
    """The study's settings: curves, observation models (``variants``), methods (keys of
    :data:`METHODS`), seeds, training and evaluation sizes; :meth:`jobs` lists one run per
    combination. ``QUICK``: 2 seeds, 1500 steps, residual MLP 2x64 (about 5 minutes on one
    core)."""

    QUICK = {"seeds": 2, "steps": 1500, "hidden": 64, "blocks": 2, "eval_points": 1000,
             "iwae_points": 200, "iwae_samples": 100}

    curves: tuple[str, ...] = ("manifold2d", "spiral2d")
    variants: tuple[str, ...] = ("learned-vector", "learned-scalar")
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

    def jobs(self) -> list[dict[str, Any]]:
        common = {k: getattr(self, k) for k in (
            "steps", "batch_size", "hidden", "blocks", "lr", "geco_target", "geco_rate",
            "eval_points", "iwae_points", "iwae_samples", "device")}
        return [{**common, "curve": c, "variant": v, "method": m, "seed": s,
                 "label": f"{c} {v} {m} seed {s}"}
                for s in range(self.seeds) for c in self.curves for v in self.variants
                for m in self.methods]


def _vae(job: dict[str, Any]):
    kind, settings, _ = METHODS[job["method"]]
    obs = observations.build(job["variant"], init_scale=1.0, min_scale=1e-3)
    return mlp_vae(2, 2, obs, hidden=job["hidden"], blocks=job["blocks"], standardize=False,
                   prior=priors.build(kind, **settings))


@torch.no_grad()
def _measure(vae, job: dict[str, Any]) -> dict[str, Any]:
    x = CURVES[job["curve"]](job["eval_points"],
                             torch.Generator().manual_seed(EVAL_SEED)).to(vae.device)
    out: dict[str, Any] = dict(evaluate.elbo(vae, x, num_particles=4))
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
    """Train and measure one run (module-level: it runs in worker processes)."""
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    vae = _vae(job)
    geco = METHODS[job["method"]][2]
    beta = GECO(job["geco_target"], rate=job["geco_rate"]) if geco else 1.0
    history = fit(vae, CURVES[job["curve"]], steps=job["steps"], batch_size=job["batch_size"],
                  optimizer=fused_adam(job["lr"]), beta=beta, device=job["device"],
                  seed=job["seed"], progress=False)
    out = {k: job[k] for k in ("curve", "variant", "method", "seed", "steps")}
    out.update(_measure(vae, job))
    out["final_beta"] = float(history["beta"][-1])
    return out


def run_study(study: PriorsStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Every run of ``study`` (:func:`~pyro_lvae.experiments.jobs.run_jobs`: ``workers``
    processes, finished runs read back from ``cache``)."""
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


# ---- numbers ---------------------------------------------------------------------------------
def _groups(results: list[dict[str, Any]]) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["curve"], r["variant"], r["method"]), []).append(r)
    for rs in groups.values():
        rs.sort(key=lambda r: r["seed"])
    return groups


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (curve, observation, method): mean and sd over seeds of each metric."""
    rows = []
    for (curve, variant, method), rs in _groups(results).items():
        row: dict[str, Any] = {"curve": curve, "variant": variant, "method": method,
                               "seeds": len(rs)}
        for key in METRICS:
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


def claims(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """``(claim, holds, evidence)`` per curve and learned prior, for LV-VAE against its
    ``N(0, I)`` runs: lower energy distance of generations, lower hole mass."""
    groups = _groups(results)
    out = []
    for curve in dict.fromkeys(r["curve"] for r in results):
        base = groups.get((curve, "learned-vector", "normal"))
        for method in LEARNED_PRIORS:
            rs = groups.get((curve, "learned-vector", method))
            if not base or not rs:
                continue
            for key, what in (("energy_samples", "improves LV-VAE's generations (energy "
                                                 "distance)"),
                              ("hole_mass", "reduces LV-VAE's hole mass")):
                mean, se, n = paired(rs, base, key)
                out.append((f"{curve}: the {method} prior {what} against N(0, I)",
                            verdict(mean, se, n),
                            f"{method} - normal = {mean:+.4f} (paired over {n} seed(s), "
                            f"standard error {se:.4f})"))
    return out


def markdown(study: PriorsStudy, results: list[dict[str, Any]]) -> str:
    """The report: the table of :func:`aggregate` and the verdicts of :func:`claims`."""
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
    return ("# Priors, GECO and the latent side\n\n"
            f"Settings: {asdict(study)}\n\n" + "\n".join(lines) + "\n\n"
            f"Mean ± standard deviation over seeds. ELBO (4 draws per point, "
            f"{study.eval_points} held-out points) and IWAE bound ({study.iwae_samples} "
            f"samples, first {study.iwae_points} points) in nats per point; mutual information, "
            "marginal KL, hole mass (at the 0.05 quantile) and active units from "
            "evaluate.latent_diagnostics on the held-out points; energy distance between as "
            "many generations (z ~ p(z), then a draw of p(x|z)) and the held-out points (lower "
            "is better); final sigma: the mean learned sigma on them. geco: N(0, I) with a GECO "
            f"KL weight (target {study.geco_target} nats, rate {study.geco_rate}).\n\n"
            "## Claims (LV-VAE, each learned prior against N(0, I), paired by seed)\n\n"
            + "\n".join(verdicts) + "\n\nA claim holds when the mean paired difference is "
            "below 0 by more than two standard errors, does not hold when above 0 by more, and "
            "is undecided otherwise.\n")


def priors_figure(results: list[dict[str, Any]], curve: str) -> Figure:
    """Seed 0 of each method on ``curve``: per observation model, prior draws beside the
    held-out points' codes (latent space), and generations beside the held-out points (the
    first ``FIGURE_POINTS`` of each)."""
    runs = {(r["variant"], r["method"]): r["figure"] for r in results
            if r["curve"] == curve and "figure" in r}
    variants = list(dict.fromkeys(v for v, _ in runs))
    methods = list(dict.fromkeys(m for _, m in runs))
    fig = Figure(figsize=(3 * 2 * len(variants), 2.8 * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), 2 * len(variants), squeeze=False)
    for i, method in enumerate(methods):
        for j, variant in enumerate(variants):
            f = runs.get((variant, method))
            left, right = axes[i, 2 * j], axes[i, 2 * j + 1]
            if f is None:
                continue
            f = {k: v[:FIGURE_POINTS] for k, v in f.items()}
            label = observations.describe(variant).label
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


def write_outputs(study: PriorsStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write ``priors.md`` (:func:`markdown`), ``summary.csv``, ``runs.csv`` and a
    :func:`priors_figure` per curve into ``out``; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(markdown(study, results), out / "priors.md")]
    written.append(write_csv(aggregate(results), out / "summary.csv"))
    written.append(write_csv([{k: v for k, v in r.items() if k != "figure"} for r in results],
                             out / "runs.csv"))
    for curve in study.curves:
        written.append(save_figure(priors_figure(results, curve), out / f"priors-{curve}.png",
                                   dpi=75))
    return written
