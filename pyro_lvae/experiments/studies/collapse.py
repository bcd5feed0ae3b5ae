"""The collapsed start: how often, and for how long, learned-sigma VAEs stay collapsed.

The collapsed solution (KL = 0, every z decoded to the data mean, sigma = the data's spread) is
a stable optimum when sigma is above the critical scale (Theorem 1). A learned sigma starting at
1 on data whose spread is near or below 1 starts there. This study trains LS-VAE and LV-VAE on
two curves (the paper's problem, :func:`~pyro_lvae.datasets.manifold2d`, and a smaller spiral,
:func:`~pyro_lvae.datasets.spiral2d`) under several settings and records, per run, whether the
model ends collapsed, when it escapes, and its held-out ELBO:

==========  =================================================================
setting     what changes from the paper's plain setup (beta = 1, sigma = 1)
==========  =================================================================
plain       nothing
init 0.1    the learned sigma starts at 0.1
lr 3e-3     a three times larger learning rate
warm 0.5    KL weight beta rises from 0.5 to 1 over the first 1000 steps
warm 0      beta rises from 0 to 1 over the first 1000 steps
half warm   sigma starts at half the curve's spread, with the warm-up from 0.5
==========  =================================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ... import evaluate, observations
from ...annealing import parse_schedule
from ...datasets import manifold2d, spiral2d
from ...io import atomic_write_text, save_figure, write_csv
from ...observations import initial_scale
from ...training import ProgressBar, fit, fused_adam
from ...vae import mlp_vae
from ..jobs import run_jobs
from ..plots import smooth
from ..points import EVAL_SEED
from . import Study

__all__ = ["CollapseStudy", "SETTINGS", "CURVES", "HALF_SPREAD", "spread", "run_job",
           "run_study", "write_outputs"]

#: settings: name -> (initial sigma, or HALF_SPREAD; learning rate factor, beta schedule)
HALF_SPREAD = "half the spread"
SETTINGS: dict[str, tuple[float | str, float, str]] = {
    "plain": (1.0, 1.0, "1"),
    "init 0.1": (0.1, 1.0, "1"),
    "lr 3e-3": (1.0, 3.0, "1"),
    "warm 0.5": (1.0, 1.0, "linear:1000:0.5:1"),
    "warm 0": (1.0, 1.0, "linear:1000:0:1"),
    "half warm": (HALF_SPREAD, 1.0, "linear:1000:0.5:1"),
}
CURVES = {"manifold2d": manifold2d, "spiral2d": spiral2d}
#: a run counts as collapsed while its KL per point (smoothed over the trace) is below this
KL_COLLAPSED = 0.1


@dataclass
class CollapseStudy(Study):
    QUICK = {"seeds": 2, "steps": 2500, "hidden": 64, "blocks": 2}

    curves: tuple[str, ...] = ("manifold2d", "spiral2d")
    variants: tuple[str, ...] = ("learned-scalar", "learned-vector")
    settings: tuple[str, ...] = tuple(SETTINGS)
    seeds: int = 3
    steps: int = 6000
    batch_size: int = 100
    hidden: int = 200
    blocks: int = 4
    lr: float = 1e-3
    device: str = "cpu"

    def jobs(self) -> list[dict[str, Any]]:
        jobs = []
        for seed in range(self.seeds):
            for curve in self.curves:
                for variant in self.variants:
                    for setting in self.settings:
                        jobs.append({
                            "curve": curve, "variant": variant, "setting": setting, "seed": seed,
                            "steps": self.steps, "batch_size": self.batch_size,
                            "hidden": self.hidden, "blocks": self.blocks, "lr": self.lr,
                            "device": self.device,
                            "label": f"{curve} {variant} {setting} seed {seed}"})
        return jobs


def spread(sampler) -> float:
    """Root-mean-square standard deviation of a curve's coordinates (20000 fixed points): the
    sigma of its collapsed solution."""
    x = sampler(20000, generator=torch.Generator().manual_seed(EVAL_SEED + 1))
    return initial_scale(x, fraction=1.0)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    init, lr_factor, beta = SETTINGS[job["setting"]]
    if init == HALF_SPREAD:
        init = 0.5 * spread(CURVES[job["curve"]])
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    obs = observations.build(job["variant"], init_scale=init, min_scale=1e-3)
    vae = mlp_vae(2, 2, obs, hidden=job["hidden"], blocks=job["blocks"], standardize=False)
    sampler = CURVES[job["curve"]]
    history = fit(vae, sampler, steps=job["steps"], batch_size=job["batch_size"],
                  optimizer=fused_adam(job["lr"] * lr_factor), beta=parse_schedule(beta),
                  device=job["device"], seed=job["seed"], tools=[ProgressBar(False)])
    x = sampler(3000, generator=torch.Generator().manual_seed(EVAL_SEED)).to(vae.device)
    held_out = evaluate.elbo_parts(vae, x, num_particles=2)
    units, _ = evaluate.active_units(vae, x)
    kl = smooth(history["kl"], 100)
    open_steps = np.nonzero(kl >= KL_COLLAPSED)[0]
    # the escape: the first step after which the KL stays above the threshold
    collapsed_after = np.nonzero(kl < KL_COLLAPSED)[0]
    last_collapsed = int(collapsed_after[-1]) if collapsed_after.size else -1
    every = max(1, len(history) // 500)
    return {
        **{k: job[k] for k in ("curve", "variant", "setting", "seed", "steps")},
        "elbo": held_out["elbo"], "kl": held_out["kl"], "active_units": units,
        "final_sigma": float(history["sigma"][-1]),
        "collapsed_at_end": bool(held_out["kl"] < KL_COLLAPSED or units == 0),
        "escape_step": (last_collapsed + 1) if last_collapsed < len(kl) - 1 else None,
        "collapsed_fraction": float((kl < KL_COLLAPSED).mean()),
        "ever_open": bool(open_steps.size),
        "trace_step": history["step"][::every].tolist(),
        "trace_kl": kl[::every].tolist(),
        "trace_sigma": history["sigma"][::every].tolist(),
    }


def run_study(study: CollapseStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


def _groups(results):
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["curve"], r["variant"], r["setting"]), []).append(r)
    return groups


def markdown(study: CollapseStudy, results: list[dict[str, Any]]) -> str:
    lines = ["| curve | variant | setting | collapsed at the end | escape step (median of "
             "escaped runs) | collapsed share of training | held-out ELBO | final sigma |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for (curve, variant, setting), rs in _groups(results).items():
        ends = sum(r["collapsed_at_end"] for r in rs)
        escapes = [r["escape_step"] for r in rs if not r["collapsed_at_end"]
                   and r["escape_step"] is not None]
        esc = f"{int(np.median(escapes))}" if escapes else "-"
        elbo = np.array([r["elbo"] for r in rs])
        sig = np.array([r["final_sigma"] for r in rs])
        label = observations.describe(variant).label
        lines.append(f"| {curve} | {label} | {setting} | {ends}/{len(rs)} | {esc} | "
                     f"{np.mean([r['collapsed_fraction'] for r in rs]):.2f} | "
                     f"{elbo.mean():.3f} ± {elbo.std(ddof=1) if len(rs) > 1 else 0:.3f} | "
                     f"{sig.mean():.3f} |")
    return ("# The collapsed start\n\n"
            f"Settings: {asdict(study)}\n\n" + "\n".join(lines) + "\n\n"
            f"A run is collapsed while its KL per point (smoothed over 100 steps) is below "
            f"{KL_COLLAPSED} nats, and at the end if its held-out KL is below that or it has no "
            "active unit. The escape step is the first step after which the KL stays above the "
            "threshold. ELBO in nats per point on 3000 held-out points.\n")


def write_outputs(study: CollapseStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    from ..plots import collapse_figure

    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(markdown(study, results), out / "collapse.md")]
    written.append(write_csv(results, out / "collapse.csv"))
    for curve in study.curves:
        fig = collapse_figure([r for r in results if r["curve"] == curve], curve)
        written.append(save_figure(fig, out / f"collapse-{curve}.png", dpi=75))
    return written
