"""Tables: learned sigmas started at 1 against 0.5, half the spread of standardised columns.

``pyro-lvae train`` starts a learned sigma at half the data's spread on points and images. This
script asks whether tables should too: it runs the three learned settings of the tables study
(learned scalar, learned per column, decoder output), with KL annealing off and on, from the
study's start (1) and from 0.5 (``pyro_lvae.experiments.studies.tables.HALF_START``), on the same
tables, splits, seeds and steps, and prints per setting the difference (start 0.5 minus start 1) of
each metric, averaged over the (table, seed) pairs, with its standard error and how many pairs
moved up. Runs are kept in ``OUT/jobs`` and read back on a rerun.

    python examples/table_start_study.py           # 108 runs of 4000 steps: ~21 min on 2 cores
    python examples/table_start_study.py --smoke   # seconds: one table, one seed, 50 steps

Needs the ``tabular`` extra (pandas, scikit-learn).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pyro_lvae.experiments.jobs import run_jobs
from pyro_lvae.experiments.studies.tables import HALF_START, HALF_START_SUFFIX, TableStudy, run_job
from pyro_lvae.io import atomic_write_text

#: metric -> column title
METRICS = {"active_units": "active units", "elbo": "held-out ELBO",
           "shape_similarity": "shape similarity",
           "association_difference": "association difference", "detection_auc": "detection AUC"}


def paired_differences(results: list[dict]) -> dict[tuple[str, str], dict[str, tuple]]:
    """(setting, annealing) -> metric -> (mean difference, standard error, pairs up, pairs)."""
    by_key = {(r["setting"], r["annealing"], r["dataset"], r["seed"]): r for r in results}
    table: dict[tuple[str, str], dict[str, tuple]] = {}
    for (setting, annealing, dataset, seed), low in by_key.items():
        if setting not in HALF_START:
            continue
        base = setting.removesuffix(HALF_START_SUFFIX)
        high = by_key[(base, annealing, dataset, seed)]
        row = table.setdefault((base, annealing), {m: [] for m in METRICS})
        for m in METRICS:
            row[m].append(low[m] - high[m])
    out: dict[tuple[str, str], dict[str, tuple]] = {}
    for key, row in table.items():
        out[key] = {}
        for m, d in row.items():
            d = np.asarray(d, dtype=float)
            se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
            out[key][m] = (float(d.mean()), se, int((d > 0).sum()), len(d))
    return out


def markdown(table: dict[tuple[str, str], dict[str, tuple]]) -> str:
    lines = ["| setting | KL annealing | " + " | ".join(METRICS.values()) + " |",
             "|---|---|" + "---:|" * len(METRICS)]
    for (setting, annealing), row in table.items():
        cells = []
        for m in METRICS:
            mean, se, up, n = row[m]
            digits = 0 if m == "elbo" else (2 if m == "active_units" else 4)
            cells.append(f"{mean:+.{digits}f} ± {se:.{digits}f} ({up}/{n})")
        lines.append(f"| {setting} | {annealing} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> dict[tuple[str, str], dict[str, tuple]]:
    learned = tuple(name.removesuffix(HALF_START_SUFFIX) for name in HALF_START)
    if args.smoke:
        study = TableStudy(datasets=("wine",), settings=learned[1:2] + tuple(HALF_START)[1:2],
                           seeds=1, steps=50, hidden=16, blocks=1)
    else:
        study = TableStudy(settings=learned + tuple(HALF_START), seeds=args.seeds,
                           steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = run_jobs(run_job, study.jobs(), workers=args.workers, report=print,
                       cache=out / "jobs")
    table = paired_differences(results)
    text = markdown(table)
    atomic_write_text(text, out / "differences.md")
    print("Start 0.5 minus start 1, mean ± standard error over (table, seed) pairs (pairs up):")
    print(text)
    return table


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="one table, one seed, a few steps")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="runs/table-start")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
