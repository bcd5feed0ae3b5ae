"""Tables: fixed, learned and decoder-output sigma, with and without KL annealing, against a
TVAE-like setting, on scikit-learn's bundled tables.

For each data set (shuffled, 70% training rows, 30% held-out) and each setting, a VAE is fitted
with :class:`pyro_lvae.tabular.TabularModel` on the training rows; as many synthetic rows are
sampled; and the synthetic table is compared with the held-out real rows
(:mod:`pyro_lvae.tabular.metrics`), beside the held-out ELBO per row and the active units.

The TVAE-like setting follows CTGAN's TVAE: one sigma per continuous column clamped to
[0.01, 1], and categories decoded by argmax when sampling.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro
import torch

from ... import evaluate
from ...annealing import parse_schedule
from ...io import atomic_write_text, write_csv
from ...tabular import TabularModel
from ...tabular.metrics import all_metrics
from ..jobs import run_jobs
from . import Study, mean_sd

__all__ = ["TableStudy", "DATASETS", "SETTINGS", "HALF_START", "HALF_START_SUFFIX",
           "run_job", "run_study", "write_outputs"]

#: name -> (loader in sklearn.datasets, target column, categorical columns)
DATASETS = {
    "wine": ("load_wine", "target", ("target",)),
    "breast-cancer": ("load_breast_cancer", "target", ()),
    "diabetes": ("load_diabetes", "target", ()),
}
#: name -> (sigma mode, sigma, discrete decoding when sampling)
SETTINGS = {
    "fixed sigma 0.1": ("fixed", 0.1, "sample"),
    "learned scalar": ("learned-scalar", 1.0, "sample"),
    "learned per column": ("learned-channel", 1.0, "sample"),
    "decoder output": ("learned-vector", 1.0, "sample"),
    "TVAE-like": ("tvae", None, "argmax"),  # CTGAN's start, 0.1
}
#: the learned settings started at 0.5, half the spread of standardised columns (the start
#: ``pyro-lvae train`` uses on points and images); not in the default study, see
#: examples/table_start_study.py and docs/tabular.md, "The start of a learned sigma"
HALF_START_SUFFIX = ", start 0.5"
HALF_START = {name + HALF_START_SUFFIX: (mode, 0.5, discrete)
              for name, (mode, sigma, discrete) in SETTINGS.items() if sigma == 1.0}
ANNEALING = {"off": "1", "on": "linear:1000"}


def load_table(name: str):
    import sklearn.datasets

    loader, target, categorical = DATASETS[name]
    df = getattr(sklearn.datasets, loader)(as_frame=True).frame
    if "target" in categorical:
        df["target"] = df["target"].map(lambda v: f"class {v}")
    return df, target, list(categorical)


@dataclass
class TableStudy(Study):
    QUICK = {"seeds": 1, "steps": 1000, "datasets": ("wine", "breast-cancer")}

    datasets: tuple[str, ...] = tuple(DATASETS)
    settings: tuple[str, ...] = tuple(SETTINGS)
    annealing: tuple[str, ...] = ("off", "on")
    seeds: int = 3
    steps: int = 4000
    latent_dim: int = 8
    hidden: int = 128
    blocks: int = 2
    batch_size: int = 128
    device: str = "cpu"

    def jobs(self) -> list[dict[str, Any]]:
        return [{"dataset": d, "setting": s, "annealing": a, "seed": seed, "steps": self.steps,
                 "latent_dim": self.latent_dim, "hidden": self.hidden, "blocks": self.blocks,
                 "batch_size": self.batch_size, "device": self.device,
                 "label": f"{d} {s} annealing {a} seed {seed}"}
                for seed in range(self.seeds) for d in self.datasets for s in self.settings
                for a in self.annealing]


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    df, target, categorical = load_table(job["dataset"])
    rng = np.random.default_rng(job["seed"])
    order = rng.permutation(len(df))
    cut = int(0.7 * len(df))
    train, test = df.iloc[order[:cut]], df.iloc[order[cut:]]
    mode, sigma, discrete = {**SETTINGS, **HALF_START}[job["setting"]]
    pyro.clear_param_store()
    model = TabularModel.fit(train, categorical=categorical, sigma_mode=mode, sigma=sigma,
                             latent_dim=job["latent_dim"], hidden=job["hidden"],
                             blocks=job["blocks"], steps=job["steps"],
                             batch_size=job["batch_size"],
                             beta=parse_schedule(ANNEALING[job["annealing"]]), seed=job["seed"],
                             device=job["device"], progress=False)
    torch.manual_seed(job["seed"] + 100)
    synth = model.sample(len(train), discrete=discrete)
    metrics = all_metrics(train, test, synth, model.transformer, target=target, seed=job["seed"])
    x_test = model.transformer.transform(test).to(model.vae.device)
    metrics.pop("per_column")
    return {**{k: job[k] for k in ("dataset", "setting", "annealing", "seed")}, **metrics,
            "elbo": evaluate.elbo_parts(model.vae, x_test, num_particles=8)["elbo"],
            "active_units": evaluate.active_units(model.vae, x_test)[0],
            "final_sigma": float(model.history["sigma"][-1])}


def run_study(study: TableStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


KEYS = ("shape_similarity", "association_difference", "detection_auc", "utility_synthetic",
        "utility_real", "elbo", "active_units", "final_sigma")


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["dataset"], r["setting"], r["annealing"]), []).append(r)
    rows = []
    for (d, s, a), rs in groups.items():
        row: dict[str, Any] = {"dataset": d, "setting": s, "annealing": a, "seeds": len(rs),
                               "utility_metric": rs[0]["utility_metric"]}
        for k in KEYS:
            v = np.array([r[k] for r in rs], dtype=float)
            row[k], row[k + "_sd"] = float(np.nanmean(v)), (float(np.nanstd(v, ddof=1))
                                                            if len(v) > 1 else float("nan"))
        rows.append(row)
    return rows


def markdown(study: TableStudy, results: list[dict[str, Any]]) -> str:
    lines = ["| data | setting | KL annealing | shape similarity | association difference | "
             "detection AUC | utility: synthetic (real) | held-out ELBO | active units |",
             "|---|---|---|---:|---:|---:|---|---:|---:|"]
    for r in aggregate(results):
        lines.append(
            f"| {r['dataset']} | {r['setting']} | {r['annealing']} | "
            f"{mean_sd(r['shape_similarity'], r['shape_similarity_sd'])} | "
            f"{mean_sd(r['association_difference'], r['association_difference_sd'])} | "
            f"{mean_sd(r['detection_auc'], r['detection_auc_sd'])} | "
            f"{mean_sd(r['utility_synthetic'], r['utility_synthetic_sd'])} "
            f"({r['utility_real']:.3f}) {r['utility_metric']} | "
            f"{mean_sd(r['elbo'], r['elbo_sd'], 2)} | {r['active_units']:.1f} |")
    return ("# Tables: the study\n\n" f"Settings: {asdict(study)}\n\n" + "\n".join(lines) +
            "\n\nMean ± standard deviation over seeds (each seed its own 70/30 split). Shape "
            "similarity: mean over columns of 1 - KS (continuous) or 1 - total variation "
            "(categorical), 1 is identical; association difference: mean absolute difference of "
            "pairwise associations, 0 is identical; detection AUC: a logistic regression telling "
            "held-out real rows from synthetic ones, 0.5 is ideal; utility: a gradient-boosting "
            "model trained on the synthetic rows (or, in brackets, on the real training rows) "
            "and scored on the held-out rows for the target column; ELBO in nats per held-out "
            "row; active units out of the latent dimension.\n")


def write_outputs(study: TableStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(markdown(study, results), out / "tables.md"),
            write_csv(aggregate(results), out / "summary.csv"),
            write_csv(results, out / "runs.csv")]
