"""Held-out ELBO over training on the artificial problem, per variant and learning rate.

The manifold study scores each run by its final weights. This script follows the held-out ELBO
(2000 fixed points, one draw each) every ``--every`` steps, for LS-VAE and LV-VAE at Adam's 1e-3
(the study's setting) and at 3e-4, and for LV-VAE with its sigma floored at 0.01, on the study's
seeds and networks, so that one can see whether a final value is typical of the run or caught in a
swing. Runs are kept in ``OUT/jobs`` and read back on a rerun; each is the study's own run
(``pyro_lvae.experiments.studies.manifold.run_job``, the probe does not change the training).
Writes ``elbo-over-training.png`` and prints per setting the final ELBO, the mean over the last
half of the probes, and the largest swing between neighbouring probes.

    python examples/learning_rate_study.py           # 20 runs of 10000 steps: ~16 min on 2 cores
    python examples/learning_rate_study.py --smoke   # seconds: tiny networks
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from pyro_lvae.experiments.jobs import default_workers, run_jobs
from pyro_lvae.experiments.studies.manifold import ManifoldStudy, run_job
from pyro_lvae.io import save_figure

#: (label, variant of the study, changes to its job)
SETTINGS = (
    ("LS-VAE, lr 1e-3", "LS-VAE", {}),
    ("LS-VAE, lr 3e-4", "LS-VAE", {"lr": 3e-4}),
    ("LV-VAE, lr 1e-3", "LV-VAE", {}),
    ("LV-VAE, lr 3e-4", "LV-VAE", {"lr": 3e-4}),
    ("LV-VAE, lr 1e-3, floor 0.01", "LV-VAE", {"min_scale": 0.01}),
)


def jobs_for(study: ManifoldStudy, every: int) -> tuple[list[str], list[dict]]:
    """The setting of each job, and the jobs (the study's own, changed as SETTINGS says)."""
    base = {(j["variant"], j["seed"]): j for j in study.first_jobs()}
    settings, jobs = [], []
    for label, variant, change in SETTINGS:
        for seed in range(study.seeds):
            settings.append(label)
            jobs.append({**base[(variant, seed)], **change, "eval_every": every,
                         "label": f"{label}, seed {seed}"})
    return settings, jobs


def summarize(settings: list[str], results: list[dict]) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, list[float]]] = {}
    for setting, r in zip(settings, results, strict=True):
        trace = np.array([e for _, e in r["elbo_trace"]])
        row = table.setdefault(setting, {"final": [], "late mean": [], "swing": []})
        row["final"].append(r["elbo"])
        row["late mean"].append(float(trace[len(trace) // 2:].mean()))
        row["swing"].append(float(np.abs(np.diff(trace)).max()) if len(trace) > 1 else 0.0)
    return {s: {k: float(np.mean(v)) for k, v in row.items()} for s, row in table.items()}


def figure(settings: list[str], results: list[dict]) -> Figure:
    labels = [s[0] for s in SETTINGS]
    fig = Figure(figsize=(3.2 * len(labels), 3.2))
    axes = fig.subplots(1, len(labels), sharey=True)
    for ax, label in zip(np.atleast_1d(axes), labels, strict=True):
        for setting, r in zip(settings, results, strict=True):
            if setting == label:
                steps, elbo = zip(*r["elbo_trace"], strict=True)
                ax.plot(steps, elbo, lw=1, label=f"seed {r['seed']}")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
    np.atleast_1d(axes)[0].set_ylabel("held-out ELBO (nats per point)")
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if args.smoke:
        study = ManifoldStudy.quick(seeds=1, steps=200, hidden=8, blocks=1, eval_points=200,
                                    iwae_points=20, iwae_samples=5, device="cpu")
        every = 100
    else:
        study = ManifoldStudy(seeds=args.seeds, device=args.device)
        every = args.every
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings, jobs = jobs_for(study, every)
    results = run_jobs(run_job, jobs, workers=args.workers or default_workers(study.device),
                       report=print, cache=out / "jobs")
    table = summarize(settings, results)
    print("| setting | final ELBO | mean of the last half of the probes | largest swing |")
    print("|---|---:|---:|---:|")
    for setting, row in table.items():
        print(f"| {setting} | {row['final']:.3f} | {row['late mean']:.3f} | "
              f"{row['swing']:.2f} |")
    save_figure(figure(settings, results), out / "elbo-over-training.png", dpi=70)
    return table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny networks, a few steps")
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--every", type=int, default=500, help="steps between probes (x100)")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default="runs/learning-rate")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
