"""Counts: does a fixed, mis-set dispersion fail the way a fixed sigma does, and does learning
it repair that?

The paper's fixed-sigma sweep, for count data. On two count data sets
(:mod:`pyro_lvae.experiments.count_tasks`: scanpy's ``pbmc68k_reduced``, 700 cells x 765 genes
with 10 cell types, and ``counts-synthetic``, 2000 cells x 200 genes of a known
negative-binomial model with 5 cell types and a known inverse dispersion per gene), each with a
fixed held-out split (20% of the cells, the same for every run), VAEs are trained with:

- the negative binomial (NB) and the zero-inflated NB (ZINB), each with the inverse dispersion
  ``theta`` (``Var = mu + mu^2 / theta``) fixed at every value of a grid (the analogue of
  F-VAE's fixed sigma: a small theta is a broad, a large theta a sharp observation model),
  learned per gene (a ``PyroParam``, scvi-tools' ``dispersion="gene"``, the analogue of
  LS-VAE's learned sigma, here per dimension) and output by the decoder per cell and gene
  (scvi-tools' ``"gene-cell"``, the analogue of LV-VAE);
- the Poisson model, NB's limit of an infinite theta, for reference.

The mean is scVI's (a softmax over genes times the cell's observed library size); the
networks have scvi-tools' default size (one hidden layer of 128 units: ``blocks=0``; a latent
of 10), the encoder sees ``log1p`` of the counts. Every run is scored on the held-out cells
(:func:`pyro_lvae.experiments.count_tasks.measure`): the ELBO per cell (4 draws per cell)
with its KL, an importance-weighted bound on ``log p(x)`` per cell, the active units, the
agreement of the posterior means with the cell types (15-nearest-neighbour accuracy by 5-fold
cross-validation over the held-out cells, and the silhouette score; scikit-learn) and, on the
synthetic set, the median absolute log-ratio of the model's theta to the true one per gene.
:func:`claims` checks the paper's claims for counts, paired by seed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyro

from ... import observations
from ...annealing import parse_schedule
from ...errors import TrainingDiverged
from ...io import atomic_write_text, save_figure, write_csv
from ...training import ProgressBar, fit, fused_adam
from ...vae import mlp_vae
from ..count_tasks import COUNT_DATASETS, measure, split_counts
from ..jobs import run_jobs
from . import Study, mean_sd, paired_differences
from .observations import verdict

__all__ = ["CountStudy", "FAMILIES", "THETA_GRID", "run_job", "run_study", "aggregate",
           "claims", "sweep_figure", "write_outputs"]

#: family name -> registered observation kind
FAMILIES = {"NB": "negative-binomial", "ZINB": "zero-inflated-nb", "Poisson": "poisson"}
#: the fixed inverse dispersions of the sweep
THETA_GRID = (0.01, 0.1, 1.0, 10.0, 100.0)
#: the learned dispersions, by their names in the tables
LEARNED = {"learned": "learned per gene", "decoder": "from the decoder"}


@dataclass
class CountStudy(Study):
    """The settings of the counts study (``pyro-lvae reproduce counts``)."""

    QUICK = {"seeds": 1, "steps": 600, "thetas": (0.01, 1.0, 100.0), "iwae_samples": 50}

    datasets: tuple[str, ...] = tuple(COUNT_DATASETS)
    families: tuple[str, ...] = ("NB", "ZINB")
    thetas: tuple[float, ...] = THETA_GRID
    learned: tuple[str, ...] = tuple(LEARNED)
    poisson: bool = True
    seeds: int = 3
    steps: int = 800
    latent_dim: int = 10
    hidden: int = 128
    blocks: int = 0
    batch_size: int = 128
    lr: float = 1e-3
    #: the KL weight (a schedule, :func:`pyro_lvae.parse_schedule`); ``None``: rising from 0.5
    #: to 1 over the first 1000 steps, or the first third of a shorter run
    beta: str | None = None
    iwae_samples: int = 200
    device: str = "cpu"

    def settings(self) -> list[tuple[str, Any]]:
        """``(family, dispersion)`` of every setting: a fixed theta (a float), ``"learned"``,
        ``"decoder"``, or ``None`` for the Poisson model."""
        out: list[tuple[str, Any]] = [(f, float(t)) for f in self.families for t in self.thetas]
        out += [(f, d) for f in self.families for d in self.learned]
        if self.poisson:
            out.append(("Poisson", None))
        return out

    def jobs(self) -> list[dict[str, Any]]:
        common = {k: getattr(self, k) for k in ("steps", "latent_dim", "hidden", "blocks",
                                                 "batch_size", "lr", "iwae_samples", "device")}
        common["beta"] = self.beta or f"linear:{max(1, min(1000, self.steps // 3))}:0.5:1"
        return [{"dataset": d, "family": f, "dispersion": disp, "seed": seed, **common,
                 "label": f"{d} {_setting_name(f, disp)} seed {seed}"}
                for seed in range(self.seeds) for d in self.datasets
                for f, disp in self.settings()]


def _setting_name(family: str, dispersion: Any) -> str:
    if dispersion is None:
        return family
    if isinstance(dispersion, str):
        return f"{family} theta {LEARNED.get(dispersion, dispersion)}"
    return f"{family} theta={dispersion:g}"


def _observation(family: str, dispersion: Any):
    kind = FAMILIES[family]
    settings = {} if dispersion is None else {"dispersion": dispersion}
    return observations.build(kind, **settings)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train and measure one run (module-level: it runs in worker processes). A run whose
    training diverges is kept, with ``diverged`` set and NaN measures."""
    train, test = split_counts(job["dataset"])
    pyro.set_rng_seed(job["seed"])
    pyro.clear_param_store()
    vae = mlp_vae(train.counts.shape[1], job["latent_dim"],
                  _observation(job["family"], job["dispersion"]), hidden=job["hidden"],
                  blocks=job["blocks"])
    result: dict[str, Any] = {k: job[k] for k in ("dataset", "family", "dispersion", "seed")}
    t0 = time.perf_counter()
    try:
        fit(vae, train.counts, steps=job["steps"], batch_size=job["batch_size"],
            optimizer=fused_adam(job["lr"]), beta=parse_schedule(job["beta"]),
            device=job["device"], seed=job["seed"], tools=[ProgressBar(False)])
    except TrainingDiverged as e:
        result.update(diverged=True, reason=str(e).splitlines()[0])
        return result
    result["train_seconds"] = time.perf_counter() - t0
    result["diverged"] = False
    result.update(measure(vae, test, iwae_samples=job["iwae_samples"]))
    return result


def run_study(study: CountStudy, workers: int = 1, report=None,
              cache=None) -> list[dict[str, Any]]:
    """Every run of ``study``; ``cache``: a folder keeping finished runs (see
    :func:`pyro_lvae.experiments.jobs.run_jobs`)."""
    return run_jobs(run_job, study.jobs(), workers=workers, report=report, cache=cache)


# ---- analysis --------------------------------------------------------------------------------
KEYS = ("elbo", "iwae", "reconstruction", "kl", "active_units", "knn_accuracy", "silhouette",
        "theta_error", "theta_median", "train_seconds")


def _key(r: dict[str, Any]) -> tuple[str, str, Any]:
    return r["dataset"], r["family"], r["dispersion"]


def _groups(results: list[dict[str, Any]]) -> dict[tuple[str, str, Any], list[dict[str, Any]]]:
    groups: dict[tuple[str, str, Any], list[dict[str, Any]]] = {}
    for r in results:
        groups.setdefault(_key(r), []).append(r)
    for rs in groups.values():
        rs.sort(key=lambda r: r["seed"])
    return groups


def aggregate(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (data set, family, dispersion): mean and standard deviation over seeds of
    each measure (diverged runs left out), the number of seeds and of diverged runs."""
    rows = []
    for (d, f, disp), rs in _groups(results).items():
        row: dict[str, Any] = {"dataset": d, "family": f, "dispersion": disp,
                               "setting": _setting_name(f, disp), "seeds": len(rs),
                               "diverged": sum(bool(r.get("diverged")) for r in rs)}
        for key in KEYS:
            v = np.array([r.get(key, math.nan) for r in rs], dtype=float)
            finite = v[np.isfinite(v)]
            row[key] = float(finite.mean()) if finite.size else math.nan
            row[key + "_sd"] = float(finite.std(ddof=1)) if finite.size > 1 else math.nan
        rows.append(row)
    order = {"learned": 1, "decoder": 2}
    rows.sort(key=lambda r: (r["dataset"], list(FAMILIES).index(r["family"]),
                             order.get(r["dispersion"], 0) if isinstance(r["dispersion"], str)
                             else (3 if r["dispersion"] is None else 0),
                             r["dispersion"] if isinstance(r["dispersion"], float) else 0.0))
    return rows


def _best_fixed(groups, dataset: str, family: str) -> Any:
    """The fixed theta with the highest mean held-out IWAE bound."""
    fixed = [(np.nanmean([r.get("iwae", math.nan) for r in rs]), disp)
             for (d, f, disp), rs in groups.items()
             if d == dataset and f == family and isinstance(disp, float)]
    fixed = [(m, t) for m, t in fixed if np.isfinite(m)]
    return max(fixed)[1] if fixed else None


def claims(results: list[dict[str, Any]]) -> list[tuple[str, bool | None, str]]:
    """The paper's claims for counts, per data set and family, paired by seed:
    ``(claim, holds, evidence)`` (``holds`` is ``None`` while the difference is within two
    standard errors). The best fixed theta is chosen by the mean IWAE bound (which favours
    it)."""
    groups = _groups(results)
    out = []
    datasets = list(dict.fromkeys(r["dataset"] for r in results))
    families = [f for f in ("NB", "ZINB") if any(r["family"] == f for r in results)]
    for d in datasets:
        for f in families:
            best = _best_fixed(groups, d, f)
            fixed = sorted(disp for (dd, ff, disp) in groups if dd == d and ff == f
                           and isinstance(disp, float))
            tests = []
            if best is not None and (d, f, "learned") in groups:
                tests.append((f"{d}, {f}: theta learned per gene reaches the best fixed theta "
                              f"of the grid ({best:g}) in held-out IWAE bound",
                              groups[(d, f, "learned")], groups[(d, f, best)], "iwae"))
            if fixed and (d, f, "learned") in groups and fixed[0] != best:
                tests.append((f"{d}, {f}: the broadest fixed theta ({fixed[0]:g}) is below the "
                              f"learned per-gene theta in held-out IWAE bound (a mis-set "
                              f"dispersion fails)",
                              groups[(d, f, "learned")], groups[(d, f, fixed[0])], "iwae"))
                tests.append((f"{d}, {f}: the broadest fixed theta ({fixed[0]:g}) loses "
                              f"active units against the learned per-gene theta (collapse)",
                              groups[(d, f, "learned")], groups[(d, f, fixed[0])],
                              "active_units"))
            if (d, f, "decoder") in groups and (d, f, "learned") in groups:
                tests.append((f"{d}, {f}: theta from the decoder beats theta learned per gene "
                              f"in held-out IWAE bound",
                              groups[(d, f, "decoder")], groups[(d, f, "learned")], "iwae"))
            for text, a, b, key in tests:
                diff = paired_differences(_finite(a, key), _finite(b, key), key)
                holds, mean, se = verdict(diff)
                unit = "units" if key == "active_units" else "nats per cell"
                out.append((text, holds, f"difference {mean:+.3f} {unit} (paired over "
                            f"{len(diff)} seeds, standard error {se:.3f})"))
    return out


def _finite(rs: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    return [r for r in rs if np.isfinite(r.get(key, math.nan))]


def _fmt(m: float, s: float, d: int = 2) -> str:
    return "n/a" if math.isnan(m) else mean_sd(m, s, d)


def markdown(study: CountStudy, results: list[dict[str, Any]]) -> str:
    """The report: a table per data set, the claims, the definitions."""
    rows = aggregate(results)
    lines = []
    for dataset in study.datasets:
        synthetic = any(np.isfinite(r["theta_error"]) for r in rows if r["dataset"] == dataset)
        theta_col = " | theta error |" if synthetic else " |"
        lines += [f"### {COUNT_DATASETS[dataset]} (`{dataset}`)", "",
                  "| setting | seeds | held-out ELBO | IWAE bound | KL | active units | "
                  f"k-NN accuracy | silhouette | median theta{theta_col} diverged |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if synthetic
                                                                     else "") + "---:|"]
        for r in (r for r in rows if r["dataset"] == dataset):
            theta = "-" if math.isnan(r["theta_median"]) else f"{r['theta_median']:.3g}"
            err = (f" | {_fmt(r['theta_error'], r['theta_error_sd'], 3)} |" if synthetic
                   else " |")
            lines.append(
                f"| {r['setting']} | {r['seeds']} | {_fmt(r['elbo'], r['elbo_sd'])} | "
                f"{_fmt(r['iwae'], r['iwae_sd'])} | {_fmt(r['kl'], r['kl_sd'])} | "
                f"{_fmt(r['active_units'], r['active_units_sd'], 1)} | "
                f"{_fmt(r['knn_accuracy'], r['knn_accuracy_sd'], 3)} | "
                f"{_fmt(r['silhouette'], r['silhouette_sd'], 3)} | {theta}{err} "
                f"{r['diverged']} |")
        lines.append("")
    word = {True: "holds", False: "does not hold", None: "undecided"}
    verdicts = [f"- {c}: **{word[h]}**. {e}" for c, h, e in claims(results)]
    return ("# Counts: fixed against learned dispersion\n\n"
            f"Settings: {asdict(study)}\n\n" + "\n".join(lines) + "\n"
            "Mean ± standard deviation over seeds (diverged runs left out of the means), on the "
            "held-out cells (20% of each data set, the same for every run). ELBO (4 draws per "
            f"cell) and IWAE bound ({study.iwae_samples} importance samples per cell) in nats "
            "per cell, higher is better; KL in nats per cell; active units: latent dimensions "
            f"whose posterior mean varies across cells by more than 0.01 (of {study.latent_dim})"
            "; k-NN accuracy: a 15-nearest-neighbour classifier of the cell type on the "
            "posterior means, 5-fold cross-validation over the held-out cells; silhouette: of "
            "the posterior means with the cell types as clusters (Euclidean, -1 to 1); median "
            "theta: the model's inverse dispersion (median over genes; learned or fixed); "
            "theta error (synthetic set): the median over genes of |log(theta / true theta)| "
            "(from the decoder: theta at the held-out cells' posterior means, geometric mean "
            "over cells).\n\n"
            "## Claims\n\nPaired by seed; undecided while the mean difference is within two "
            "standard errors, or with fewer than two seeds.\n\n" + "\n".join(verdicts) + "\n")


def sweep_figure(results: list[dict[str, Any]], key: str = "iwae",
                 ylabel: str = "held-out IWAE bound (nats per cell)"):
    """The fixed-theta sweep per data set (columns): ``key`` (mean and standard deviation
    over seeds) against the fixed theta for each family, with the learned settings (per gene,
    from the decoder) as horizontal lines and bands, and the Poisson model dotted."""
    from matplotlib.figure import Figure

    rows = aggregate(results)
    datasets = list(dict.fromkeys(r["dataset"] for r in rows))
    fig = Figure(figsize=(5.2 * max(1, len(datasets)), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(1, len(datasets)), squeeze=False)[0])
    colours = {"NB": "#1f77b4", "ZINB": "#d62728", "Poisson": "#7f7f7f"}
    styles = {"learned": "--", "decoder": ":"}
    for ax, dataset in zip(axes, datasets, strict=False):
        mine = [r for r in rows if r["dataset"] == dataset]
        for family in FAMILIES:
            fixed = sorted((r for r in mine if r["family"] == family
                            and isinstance(r["dispersion"], float)),
                           key=lambda r: r["dispersion"])
            if fixed:
                t = np.array([r["dispersion"] for r in fixed])
                m = np.array([r[key] for r in fixed])
                s = np.nan_to_num(np.array([r[key + "_sd"] for r in fixed]))
                ax.errorbar(t, m, yerr=s, marker="o", ms=4, capsize=3, color=colours[family],
                            label=f"{family}, fixed theta")
            for r in mine:
                if r["family"] != family or isinstance(r["dispersion"], float):
                    continue
                if not np.isfinite(r[key]):
                    continue
                style = styles.get(r["dispersion"], "-.")
                label = (f"{family}, theta {LEARNED[r['dispersion']]}"
                         if r["dispersion"] in LEARNED else family)
                ax.axhline(r[key], color=colours[family], ls=style, lw=1.2, label=label)
                sd = r[key + "_sd"]
                if np.isfinite(sd):
                    ax.axhspan(r[key] - sd, r[key] + sd, color=colours[family], alpha=0.12)
        ax.set_xscale("log")
        ax.set_xlabel("fixed inverse dispersion theta (Var = mu + mu^2 / theta)")
        ax.set_ylabel(ylabel)
        ax.set_title(COUNT_DATASETS.get(dataset, dataset), fontsize=9)
        ax.legend(fontsize=7, frameon=False)
    return fig


def write_outputs(study: CountStudy, results: list[dict[str, Any]], out: Path) -> list[Path]:
    """``counts.md``, ``summary.csv``, ``runs.csv``, ``counts-sweep.png`` (held-out IWAE
    bound against the fixed theta) and ``counts-knn.png`` (k-NN accuracy against it) in
    ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [atomic_write_text(markdown(study, results), out / "counts.md"),
            write_csv(aggregate(results), out / "summary.csv"),
            write_csv([{**dict.fromkeys(KEYS, math.nan), **r} for r in results],
                      out / "runs.csv"),
            save_figure(sweep_figure(results), out / "counts-sweep.png"),
            save_figure(sweep_figure(results, "knn_accuracy",
                                     "k-NN accuracy of the cell type (held-out cells)"),
                        out / "counts-knn.png")]
