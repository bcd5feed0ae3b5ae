"""Theorem 1 in training: fixed-sigma VAEs on the sphere against the predicted radius r*.

For each dimension ``d`` and each ratio ``sigma / sigma_c`` a fixed-sigma VAE (latent dimension
``d``, residual MLPs) is trained on points drawn anew from the sphere of radius ``R`` at every
step. Afterwards the study measures the mean norm of the decoder means for ``z`` drawn from the
prior (the radius the decoder maps the prior to) and of the reconstructions of held-out points,
and compares them with ``r*(sigma)`` of :func:`pyro_lvae.theory.optimal_radius`. LS-VAEs
(learned scalar sigma, starting at 1 > sigma_c) are trained with the plain ELBO and with a KL
warm-up, to see whether a learned sigma escapes the collapsed solution.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ... import evaluate, observations, theory
from ...annealing import parse_schedule
from ...datasets import sphere
from ...io import atomic_write_text, save_figure, write_csv
from ...training import ProgressBar, fit, fused_adam
from ...vae import mlp_vae
from ..jobs import run_jobs
from . import Study, mean_sd

__all__ = ["SphereStudy", "run_job", "run_study", "write_outputs"]

EVAL_SEED = 31415


@dataclass
class SphereStudy(Study):
    """Settings of the sphere study (``quick()`` finishes in minutes on two CPU cores)."""

    QUICK = {"seeds": 1, "steps": 2500, "hidden": 64, "blocks": 2}

    dims: tuple[int, ...] = (2, 3, 8)
    ratios: tuple[float, ...] = (0.25, 0.5, 0.8, 1.25, 2.0)
    radius: float = 1.0
    seeds: int = 2
    steps: int = 10000
    batch_size: int = 256
    hidden: int = 128
    blocks: int = 3
    lr: float = 1e-3
    ls_betas: tuple[str, ...] = ("1", "linear:1000:0.5:1")
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    def jobs(self) -> list[dict[str, Any]]:
        common = {"radius": self.radius, "steps": self.steps, "batch_size": self.batch_size,
                  "hidden": self.hidden, "blocks": self.blocks, "lr": self.lr,
                  "device": self.device}
        jobs = []
        for seed in range(self.seeds):
            for d in self.dims:
                sigma_c = theory.critical_sigma(self.radius, d)
                for ratio in self.ratios:
                    jobs.append({**common, "dim": d, "seed": seed, "obs": "fixed",
                                 "sigma": ratio * sigma_c, "beta": "1",
                                 "label": f"d={d} fixed sigma/sigma_c={ratio:g} seed {seed}"})
                for beta in self.ls_betas:
                    jobs.append({**common, "dim": d, "seed": seed, "obs": "learned-scalar",
                                 "sigma": 1.0, "beta": beta,
                                 "label": f"d={d} LS-VAE beta {beta} seed {seed}"})
        return jobs


@torch.no_grad()
def _radii(vae, d: int, radius: float, n: int = 4000) -> tuple[float, float, float]:
    gen = torch.Generator().manual_seed(EVAL_SEED)
    z = torch.randn(n, vae.latent_dim, generator=gen).to(vae.device)
    means = vae.likelihood(z).mean
    x = sphere(n, d, radius, generator=gen).to(vae.device)
    rec = vae.reconstruct(x)
    return (float(means.norm(dim=-1).mean()), float(means.norm(dim=-1).std()),
            float(rec.norm(dim=-1).mean()))


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one VAE of the study and measure it (module-level, so that it can run in a
    worker process)."""
    d, radius = job["dim"], job["radius"]
    pyro.set_rng_seed(1000 + job["seed"])
    pyro.clear_param_store()
    # ``sigma``: the fixed sigma, or the start of a learned one
    offered = {"scale": job["sigma"], "init_scale": job["sigma"], "min_scale": 1e-3}
    takes = observations.settings_of(job["obs"])
    observation = observations.build(job["obs"],
                                     **{k: v for k, v in offered.items() if k in takes})
    vae = mlp_vae(d, d, observation, hidden=job["hidden"], blocks=job["blocks"],
                  standardize=False)
    history = fit(vae, partial(sphere, dim=d, radius=radius), steps=job["steps"],
                  batch_size=job["batch_size"], optimizer=fused_adam(job["lr"]),
                  beta=parse_schedule(job["beta"]), device=job["device"], seed=job["seed"],
                  tools=[ProgressBar(False)])
    sigma = float(history["sigma"][-1])
    prior_radius, prior_spread, rec_radius = _radii(vae, d, radius)
    x = sphere(4000, d, radius, generator=torch.Generator().manual_seed(EVAL_SEED + 1))
    held_out = evaluate.elbo_parts(vae, x, num_particles=2)
    r_star = float(theory.optimal_radius(sigma, radius, d))
    every = max(1, len(history) // 400)
    return {
        **{k: job[k] for k in ("dim", "seed", "obs", "beta", "radius", "steps")},
        "sigma": sigma,
        "sigma_c": theory.critical_sigma(radius, d),
        "ratio": sigma / theory.critical_sigma(radius, d),
        "r_star": r_star,
        "prior_radius": prior_radius,
        "prior_radius_std": prior_spread,
        "reconstruction_radius": rec_radius,
        "elbo": held_out["elbo"],
        "kl": held_out["kl"],
        "best_log_likelihood": float(theory.log_likelihood(r_star, sigma, radius, d)),
        "trace_step": history["step"][::every].tolist(),
        "trace_sigma": history["sigma"][::every].tolist(),
        "trace_kl": history["kl"][::every].tolist(),
    }


def run_study(study: SphereStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Run every job of ``study``; results in job order."""
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


def _learned(r: dict[str, Any]) -> bool:
    return observations.describe(r["obs"]).learned


def _variant(r: dict[str, Any]) -> str:
    if not _learned(r):
        return r["obs"]
    label = observations.describe(r["obs"]).label
    return label if r["beta"] == "1" else f"{label}, beta {r['beta']}"


def _aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over seeds per (d, variant, ratio)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        key = (r["dim"], _variant(r), None if _learned(r) else round(r["ratio"], 6))
        groups.setdefault(key, []).append(r)
    rows, learned = [], []
    for (d, variant, _), rs in groups.items():
        row = {"d": d, "variant": variant, "seeds": len(rs)}
        for name in ("ratio", "sigma", "r_star", "prior_radius", "reconstruction_radius", "elbo",
                     "kl", "best_log_likelihood"):
            values = np.array([r[name] for r in rs])
            row[name] = float(values.mean())
            row[name + "_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
        learned.append(_learned(rs[0]))
    order = sorted(range(len(rows)), key=lambda i: (rows[i]["d"], learned[i], rows[i]["ratio"]))
    return [rows[i] for i in order]


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| d | variant | sigma / sigma_c | r* (theory) | radius of decoder means (prior) | "
             "radius of reconstructions | held-out ELBO | best log p (theory) | KL |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['d']} | {r['variant']} | {mean_sd(r['ratio'], r['ratio_sd'], 2)} | "
            f"{mean_sd(r['r_star'], r['r_star_sd'])} | "
            f"{mean_sd(r['prior_radius'], r['prior_radius_sd'])} | "
            f"{mean_sd(r['reconstruction_radius'], r['reconstruction_radius_sd'])} | "
            f"{mean_sd(r['elbo'], r['elbo_sd'])} | "
            f"{mean_sd(r['best_log_likelihood'], float('nan'))} | "
            f"{mean_sd(r['kl'], r['kl_sd'], 2)} |")
    return "\n".join(lines)


def write_outputs(study: SphereStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """Write ``sphere.md``, ``sphere.csv``, ``runs.csv`` and one figure per dimension."""
    from ..plots import sphere_figure

    out.mkdir(parents=True, exist_ok=True)
    rows = _aggregate(results)
    table = markdown_table(rows)
    settings = {k: v for k, v in asdict(study).items() if k != "extra"}
    text = (f"# Theorem 1 in training\n\nSettings: {settings}\n\n{table}\n\n"
            "Radii are means over 4000 points; ± is the standard deviation over seeds. "
            "ELBO and log p in nats per point.\n")
    written = [atomic_write_text(text, out / "sphere.md")]
    for name, data in (("sphere.csv", rows), ("runs.csv", results)):
        written.append(write_csv(data, out / name))
    for d in study.dims:
        fig = sphere_figure(d, study.radius, [r for r in results if r["dim"] == d])
        written.append(save_figure(fig, out / f"sphere-d{d}.png", dpi=80))
    return written
