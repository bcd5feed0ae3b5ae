"""The paper's study of the artificial problem from Python (Berger & Sebag, Table 1, Figs 4, 8-10).

The same study as ``pyro-lvae reproduce manifold``, driven through
``pyro_lvae.experiments.studies.manifold``: F-VAE over a grid of fixed sigma, LS-VAE, LV-VAE,
F*-VAE and LS-VAE's replayed sigma schedule, over several seeds in parallel processes. It prints
the table and the paper's claims checked in numbers, and writes the figures. Change the settings
(the sigma grid, the networks, the KL schedule) to extend the study.

    python examples/reproduce_manifold.py --quick          # minutes on two CPU cores
    python examples/reproduce_manifold.py                  # the full study (hours on a CPU)
    python examples/reproduce_manifold.py --smoke          # seconds: tiny networks
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pyro_lvae.experiments.jobs import default_workers
from pyro_lvae.experiments.studies.manifold import ManifoldStudy, claims, run_study, write_outputs
from pyro_lvae.training.fit import resolve_device


def main(args: argparse.Namespace) -> list:
    device = str(resolve_device(args.device))
    if args.smoke:
        study = ManifoldStudy.quick(seeds=2, steps=30, hidden=8, blocks=1, sigmas=(1.0, 0.05),
                                    iwae_samples=10, device=device)
    elif args.quick:
        study = ManifoldStudy.quick(device=device)
    else:
        study = ManifoldStudy(seeds=args.seeds, device=device)
    out = Path(args.out)
    workers = default_workers(device) if args.workers is None else args.workers
    results = run_study(study, workers=workers, report=print,
                        cache=out / "jobs")  # a rerun reads finished runs back
    write_outputs(study, results, out)
    verdicts = claims(results)
    word = {True: "holds", False: "does not hold", None: "inconclusive"}
    for claim, holds, evidence in verdicts:
        print(f"{claim}: {word[holds]} ({evidence})")
    return verdicts


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--smoke", action="store_true", help="tiny networks, a few steps")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/manifold")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
