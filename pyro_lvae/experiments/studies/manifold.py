"""The paper's study of the artificial 2D problem (Berger & Sebag, Section 4 and Appendix A).

Variants, all on fresh points of :func:`pyro_lvae.datasets.manifold2d` at every step:

- F-VAE over a grid of fixed sigma (1 down to 0.01);
- LS-VAE (learned scalar sigma from 1) and LV-VAE (sigma per dimension from the decoder);
- F*-VAE: sigma fixed from the start at the final sigma of the LS-VAE of the same seed;
- replay: a fixed-sigma VAE whose sigma follows, step by step, the trajectory recorded by the
  LS-VAE of the same seed.

F*-VAE and the replay start from other initial weights and another data stream than the LS-VAE
they derive from (``REPLAY_SEED_OFFSET``): from the same ones, a replay would repeat the LS-VAE
run almost exactly (each network update depends on the current sigma, not on how it got there),
and claim (c) would hold by construction.

Each run is evaluated on the same held-out points: ELBO (and its parts), an importance-weighted
bound, active units, sigma per noise region, the distance of reconstructions to the noiseless
curve (denoising), the reconstruction error (missed details) and the energy distance between
generated samples and data (generation quality). The paper's claims are then checked in
numbers (:func:`claims`).
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
from ...datasets import MANIFOLD_REGIONS, distance_to_curve, manifold2d
from ...io import atomic_write_text, save_figure, write_csv
from ...training import AveragedWeights, Callback, LRSchedule, ProgressBar, fit, fused_adam
from ...vae import mlp_vae
from ..jobs import run_jobs
from ..points import EVAL_SEED
from . import Study, mean_and_se, mean_sd, paired_differences

__all__ = ["ManifoldStudy", "run_job", "run_study", "claims", "write_outputs",
           "energy_distance", "REPLAY_SEED_OFFSET", "EQUIVALENCE_MARGIN"]

#: the start of a learned sigma (the paper's)
LEARNED_START = 1.0
#: F*-VAE and replay runs of seed s start from seed s + REPLAY_SEED_OFFSET
REPLAY_SEED_OFFSET = 10_000
#: claim (c) holds when the paired replay - LS difference, plus two standard errors, stays
#: within this many nats per point; fails when, minus two standard errors, it exceeds it; else the
#: seeds are too few to tell (inconclusive)
EQUIVALENCE_MARGIN = 0.05


@dataclass
class ManifoldStudy(Study):
    """Settings (``quick()``: minutes on two CPU cores; the defaults: the paper's networks)."""

    QUICK = {"sigmas": (1.0, 0.3, 0.1, 0.03, 0.01), "seeds": 3, "steps": 3000, "hidden": 100,
             "blocks": 2, "eval_points": 2000, "iwae_points": 500, "iwae_samples": 200}

    sigmas: tuple[float, ...] = (1.0, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    seeds: int = 10
    steps: int = 10000
    batch_size: int = 100
    hidden: int = 200
    blocks: int = 4
    latent_dim: int = 2
    lr: float = 1e-3
    beta: str = "linear:1000:0.5:1"
    eval_points: int = 5000
    iwae_points: int = 1000
    iwae_samples: int = 1000
    device: str = "cpu"
    #: averaged weights for every run (``fit``'s ``average``, e.g. ``"ema:0.999"``); the runs
    #: are then measured on the averaged model
    average: str | None = None
    #: a learning-rate schedule for every run (``fit``'s ``lr_schedule``, e.g. ``"cosine"``)
    lr_schedule: str | None = None
    #: only the learned variants: LS-VAE, LV-VAE and the replayed schedule
    learned_only: bool = False

    def _common(self) -> dict[str, Any]:
        keep = ("steps", "batch_size", "hidden", "blocks", "latent_dim", "lr", "beta",
                "eval_points", "iwae_points", "iwae_samples", "device")
        common = {k: getattr(self, k) for k in keep}
        for key in ("average", "lr_schedule"):  # only when set: earlier runs stay cached
            if getattr(self, key) is not None:
                common[key] = getattr(self, key)
        return common

    def first_jobs(self) -> list[dict[str, Any]]:
        """F-VAE grid, LS-VAE and LV-VAE for every seed."""
        jobs = []
        for seed in range(self.seeds):
            for sigma in () if self.learned_only else self.sigmas:
                jobs.append({**self._common(), "seed": seed, "variant": f"F-VAE sigma={sigma:g}",
                             "obs": "fixed", "sigma": sigma})
            jobs.append({**self._common(), "seed": seed, "variant": "LS-VAE",
                         "obs": "learned-scalar"})
            jobs.append({**self._common(), "seed": seed, "variant": "LV-VAE",
                         "obs": "learned-vector"})
        for job in jobs:
            job["label"] = f"{job['variant']} seed {job['seed']}"
        return jobs

    def second_jobs(self, first: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """F*-VAE and the replayed schedule, from each seed's LS-VAE run."""
        jobs = []
        for r in first:
            if r["variant"] != "LS-VAE":
                continue
            common = {**self._common(), "seed": r["seed"],
                      "init_seed": r["seed"] + REPLAY_SEED_OFFSET}
            if not self.learned_only:
                jobs.append({**common, "variant": "F*-VAE", "obs": "fixed",
                             "sigma": r["final_sigma"], "label": f"F*-VAE seed {r['seed']}"})
            jobs.append({**common, "variant": "LS replay", "obs": "scheduled",
                         "schedule": r["sigma_trajectory"], "label": f"LS replay seed {r['seed']}"})
        return jobs


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance ``2 E|A-B| - E|A-A'| - E|B-B'|`` between two samples (0 iff the
    distributions agree; larger is worse)."""
    ab = torch.cdist(a, b).mean()
    aa = torch.cdist(a, a).sum() / (a.shape[0] * (a.shape[0] - 1))
    bb = torch.cdist(b, b).sum() / (b.shape[0] * (b.shape[0] - 1))
    return float(2 * ab - aa - bb)


def _observation(job: dict[str, Any]) -> observations.Observation:
    """The job's observation model: a fixed sigma (``sigma``), a replayed one (``schedule``) or
    a learned one, from 1 (the paper's start) above the floor ``min_scale`` (default 1e-3)."""
    offered = {"scale": job.get("sigma"), "schedule": job.get("schedule"),
               "init_scale": LEARNED_START, "min_scale": job.get("min_scale", 1e-3)}
    takes = observations.settings_of(job["obs"])
    return observations.build(job["obs"], **{k: v for k, v in offered.items() if k in takes})


def _held_out_probe(every: int, points: int = 2000):
    """A ``fit`` callback recording the held-out ELBO (one draw per point, fixed points) every
    ``every`` steps, with torch's random state restored afterwards so that training runs exactly
    as without it; and the list it appends ``(step, elbo)`` to."""
    x = manifold2d(points, torch.Generator().manual_seed(EVAL_SEED + 11))
    record: list[tuple[int, float]] = []

    def callback(step: int, rows: dict[str, np.ndarray], vae) -> None:
        if step % every:
            return
        cuda = [vae.device] if vae.device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda), torch.no_grad():
            record.append((step, evaluate.elbo_parts(vae, x.to(vae.device))["elbo"]))

    return callback, record


@torch.no_grad()
def _measure(vae, job: dict[str, Any]) -> dict[str, Any]:
    x, region = manifold2d(job["eval_points"], torch.Generator().manual_seed(EVAL_SEED),
                           return_region=True)
    x, region = x.to(vae.device), region.to(vae.device)
    out = evaluate.summary(vae, x, iwae_samples=1, groups=region)
    out["iwae"] = evaluate.iwae(vae, x[: job["iwae_points"]], num_samples=job["iwae_samples"])
    out["elbo_on_iwae_points"] = evaluate.elbo_parts(vae, x[: job["iwae_points"]],
                                               num_particles=4)["elbo"]
    rec = vae.reconstruct(x)
    rec_dist, data_dist = distance_to_curve(rec), distance_to_curve(x)
    error = (rec - x).norm(dim=-1)
    for i, name in enumerate(MANIFOLD_REGIONS):
        mask = region == i
        out[f"sigma_{name}"] = out.get("sigma_per_group", {}).get(i, float("nan"))
        out[f"rec_to_curve_{name}"] = float(rec_dist[mask].mean())
        out[f"data_to_curve_{name}"] = float(data_dist[mask].mean())
        out[f"rec_error_{name}"] = float(error[mask].mean())
    out["rec_error"] = float(error.mean())
    gen = torch.Generator(device="cpu").manual_seed(EVAL_SEED + 7)
    z = torch.randn(2000, vae.latent_dim, generator=gen).to(vae.device)
    px = vae.likelihood(z)
    samples, means = px.sample(), px.mean
    out["energy_samples"] = energy_distance(samples, x[:2000])
    out["energy_means"] = energy_distance(means, x[:2000])
    out.pop("sigma_per_group", None)
    for key in ("kl_per_dim", "posterior_mean_variance", "sigma_per_dim"):
        if key in out:
            out[key] = [float(v) for v in out[key]]
    if job["seed"] == 0:  # arrays for the figures
        out["figure"] = {"data": x[:1500].cpu().numpy(), "rec": rec[:1500].cpu().numpy(),
                         "samples": samples[:1500].cpu().numpy(),
                         "means": means[:1500].cpu().numpy()}
    return out


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one run (module-level: it runs in worker processes).

    Beyond the study's settings a job may set ``min_scale`` (the floor of a learned sigma) and
    ``eval_every`` (record the held-out ELBO every so many steps, a multiple of 100, into
    ``elbo_trace``; training is unchanged by it)."""
    seed = job.get("init_seed", job["seed"])
    pyro.set_rng_seed(seed)
    pyro.clear_param_store()
    vae = mlp_vae(2, job["latent_dim"], _observation(job), hidden=job["hidden"],
                  blocks=job["blocks"], standardize=False)
    tools, record = [ProgressBar(False)], None
    if job.get("eval_every"):
        probe, record = _held_out_probe(job["eval_every"])
        tools.append(Callback(probe))
    if job.get("average") is not None:
        tools.append(AveragedWeights(job["average"]))
    if job.get("lr_schedule") is not None:
        tools.append(LRSchedule(job["lr_schedule"]))
    history = fit(vae, manifold2d, steps=job["steps"], batch_size=job["batch_size"],
                  optimizer=fused_adam(job["lr"]), beta=parse_schedule(job["beta"]),
                  device=job["device"], seed=seed, tools=tools)
    result = {k: job[k] for k in ("variant", "seed", "obs")}
    if record is not None:
        result["elbo_trace"] = record
    if history.averaged is not None:  # measured on the averaged model; the last weights too
        x = manifold2d(job["eval_points"], torch.Generator().manual_seed(EVAL_SEED))
        result["last_weights_elbo"] = evaluate.elbo_parts(vae, x.to(vae.device))["elbo"]
        vae = history.averaged
    result.update(_measure(vae, job))
    result["final_sigma"] = float(history["sigma"][-1])
    every = max(1, len(history) // 1000)
    result["trace"] = {c: history[c][::every] for c in
                       ("step", "loss", "reconstruction", "kl", "beta", "sigma")}
    variant = observations.describe(job["obs"])
    if variant.learned and variant.shared:  # LS-VAE: the trajectory a replay follows
        result["sigma_trajectory"] = history["sigma"].tolist()
    return result


def run_study(study: ManifoldStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Every run of ``study``; ``cache``: a folder keeping finished runs (see
    :func:`pyro_lvae.experiments.jobs.run_jobs`)."""
    first = run_jobs(run_job, study.first_jobs(), workers=workers, report=report, cache=cache)
    second = run_jobs(run_job, study.second_jobs(first), workers=workers, report=report,
                      cache=cache)
    return first + second


# ---- analysis --------------------------------------------------------------------------------
def _by_variant(results: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(r["variant"], []).append(r)
    for rs in groups.values():
        rs.sort(key=lambda r: r["seed"])
    return groups


def _stats(rs: list[dict[str, Any]], key: str) -> tuple[float, float]:
    v = np.array([r[key] for r in rs], dtype=float)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else float("nan"))


SUMMARY_KEYS = ("elbo", "iwae", "reconstruction", "kl", "final_sigma", "active_units",
                "rec_error", "energy_samples", "energy_means", "sigma_moderate", "sigma_small",
                "sigma_large", "rec_to_curve_moderate", "rec_to_curve_small",
                "rec_to_curve_large")


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for variant, rs in _by_variant(results).items():
        row: dict[str, Any] = {"variant": variant, "seeds": len(rs)}
        for key in SUMMARY_KEYS:
            row[key], row[key + "_sd"] = _stats(rs, key)
        rows.append(row)
    return rows


def sigma_elbo_coupling(trace: dict[str, np.ndarray], window: int = 20) -> float:
    """Correlation, over windows of the recorded trace, between the fall of log sigma and the
    rise of the (negative) loss: close to 1 when sigma's drops coincide with ELBO leaps."""
    log_sigma = np.log(np.asarray(trace["sigma"], dtype=float))
    loss = np.asarray(trace["loss"], dtype=float)
    n = len(loss) // window
    if n < 3:
        return float("nan")
    ls = log_sigma[: n * window].reshape(n, window).mean(1)
    lo = loss[: n * window].reshape(n, window).mean(1)
    d_sigma, d_elbo = -np.diff(ls), -np.diff(lo)
    if d_sigma.std() == 0 or d_elbo.std() == 0:
        return float("nan")
    return float(np.corrcoef(d_sigma, d_elbo)[0, 1])


def claims(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The paper's claims (a)-(e) checked on the results: ``(claim, holds, evidence)``."""
    groups = _by_variant(results)
    mean = {v: _stats(rs, "elbo")[0] for v, rs in groups.items()}
    sd = {v: _stats(rs, "elbo")[1] for v, rs in groups.items()}
    fixed = {v: m for v, m in mean.items() if v.startswith("F-VAE")}
    out: list[tuple[str, bool | None, str]] = []
    best_f = max(fixed, key=fixed.get) if fixed else None
    if {"LV-VAE", "LS-VAE"} <= set(mean) and best_f:
        holds = mean["LV-VAE"] > mean["LS-VAE"] > fixed[best_f]
        out.append(("(a) LV-VAE > LS-VAE > every F-VAE in ELBO", holds,
                    f"LV {mean['LV-VAE']:.3f} ± {sd['LV-VAE']:.3f}, LS {mean['LS-VAE']:.3f} ± "
                    f"{sd['LS-VAE']:.3f}, best F ({best_f}) {fixed[best_f]:.3f} ± "
                    f"{sd[best_f]:.3f}"))
    if {"LV-VAE", "LS-VAE"} <= set(mean):
        diff = paired_differences(groups["LV-VAE"], groups["LS-VAE"])
        _, se, n = mean_and_se(diff)
        holds = None if not n > 1 or abs(diff.mean()) <= 2 * se else bool(diff.mean() > 0)
        out.append(("(a2) LV-VAE > LS-VAE beyond the seeds' noise, paired by seed", holds,
                    f"LV - LS = {diff.mean():+.3f} nats (paired over {n} seeds, standard error "
                    f"{se:.3f}; LV ahead in {int((diff > 0).sum())}); undecided while the "
                    f"difference is within two standard errors"))
    if {"F*-VAE", "LS-VAE"} <= set(mean):
        out.append(("(b) F*-VAE < LS-VAE", mean["F*-VAE"] < mean["LS-VAE"],
                    f"F* {mean['F*-VAE']:.3f} ± {sd['F*-VAE']:.3f}, LS {mean['LS-VAE']:.3f} ± "
                    f"{sd['LS-VAE']:.3f}"))
    if {"LS replay", "LS-VAE"} <= set(mean):
        diff = paired_differences(groups["LS replay"], groups["LS-VAE"])
        _, se, n = mean_and_se(diff)
        holds = None  # inconclusive: the interval straddles the margin (or one seed)
        if n > 1 and abs(diff.mean()) + 2 * se <= EQUIVALENCE_MARGIN:
            holds = True
        elif n > 1 and abs(diff.mean()) - 2 * se > EQUIVALENCE_MARGIN:
            holds = False
        out.append(("(c) the replayed sigma schedule matches LS-VAE", holds,
                    f"replay - LS = {diff.mean():+.3f} nats (paired over {n} seeds, "
                    f"standard error {se:.3f}; equivalence margin {EQUIVALENCE_MARGIN} nats); "
                    f"replay {mean['LS replay']:.3f}, LS {mean['LS-VAE']:.3f}, F* "
                    f"{mean.get('F*-VAE', math.nan):.3f}"))
    if len(fixed) >= 2:
        big = max(fixed, key=lambda v: float(v.split("=")[1]))
        small = min(fixed, key=lambda v: float(v.split("=")[1]))
        rec_curve = _stats(groups[big], "rec_to_curve_large")[0]
        data_curve = float(np.mean([r["data_to_curve_large"] for r in groups[big]]))
        err_big = _stats(groups[big], "rec_error")[0]
        err_small = _stats(groups[small], "rec_error")[0]
        e_small = _stats(groups[small], "energy_samples")[0]
        e_ls = _stats(groups["LS-VAE"], "energy_samples")[0] if "LS-VAE" in groups else math.nan
        holds = rec_curve < data_curve and err_big > err_small and e_small > e_ls
        out.append((f"(d) large fixed sigma ({big}) denoises and misses details; small fixed "
                    f"sigma ({small}) generates poorly", bool(holds),
                    f"{big}: reconstructions lie {rec_curve:.3f} from the curve in the "
                    f"large-noise region (the data {data_curve:.3f}), reconstruction error "
                    f"{err_big:.3f} (against {err_small:.3f} for {small}); energy distance of "
                    f"samples: {small} {e_small:.4f}, LS-VAE {e_ls:.4f}"))
    if "LS-VAE" in groups:
        coupling = [sigma_elbo_coupling(r["trace"]) for r in groups["LS-VAE"]]
        finite = [v for v in coupling if np.isfinite(v)]
        c = float(np.mean(finite)) if finite else math.nan
        out.append(("(e) LS-VAE's sigma falls in steps that coincide with ELBO leaps",
                    bool(c > 0.3) if np.isfinite(c) else None,
                    f"correlation between drops of log sigma and rises of the ELBO over "
                    f"windows: {c:.2f} (mean over seeds; per seed "
                    f"{', '.join(f'{v:.2f}' for v in coupling)})"))
    return out


def markdown(study: ManifoldStudy, results: list[dict[str, Any]]) -> str:
    rows = aggregate(results)
    lines = ["| variant | seeds | held-out ELBO | IWAE bound | final sigma | KL | active units | "
             "sigma moderate / small / large | energy distance of samples |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seeds']} | {mean_sd(r['elbo'], r['elbo_sd'])} | "
            f"{mean_sd(r['iwae'], r['iwae_sd'])} | "
            f"{mean_sd(r['final_sigma'], r['final_sigma_sd'], 4)} | "
            f"{mean_sd(r['kl'], r['kl_sd'], 2)} | {r['active_units']:.1f} | "
            f"{r['sigma_moderate']:.3f} / {r['sigma_small']:.3f} / {r['sigma_large']:.3f} | "
            f"{mean_sd(r['energy_samples'], r['energy_samples_sd'], 4)} |")
    word = {True: "holds", False: "does not hold", None: "inconclusive"}
    verdicts = [f"- {c}: **{word[h]}**. {e}" for c, h, e in claims(results)]
    settings = asdict(study)
    return ("# The artificial problem: the paper's study\n\n"
            f"Settings: {settings}\n\n" + "\n".join(lines) + "\n\n"
            "Mean ± standard deviation over seeds. ELBO (4 draws per point, "
            f"{study.eval_points} held-out points) and IWAE bound ({study.iwae_samples} samples, "
            f"first {study.iwae_points} points) in nats per point; sigma per noise region (true "
            "0.05 / 0.01 / 0.20) at each point's posterior mean; energy distance between 2000 "
            "samples of p(x|z), z ~ N(0, I), and held-out data (lower is better).\n\n"
            "## The paper's claims\n\n" + "\n".join(verdicts) + "\n")


def write_outputs(study: ManifoldStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    from ..plots import manifold_study_figures

    out.mkdir(parents=True, exist_ok=True)
    written = [atomic_write_text(markdown(study, results), out / "reproduction.md")]
    rows = aggregate(results)
    for name, data in (("summary.csv", rows), ("runs.csv", results)):
        written.append(write_csv(data, out / name))
    for name, fig in manifold_study_figures(results).items():
        written.append(save_figure(fig, out / name, dpi=75))
    return written
