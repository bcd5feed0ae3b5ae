"""Training-step speed of pyro-lvae against a hand-written PyTorch step (and plain Pyro SVI).

The same networks, loss, optimiser and data work in one process, repetitions alternating; see
``pyro_lvae.experiments.bench``. Equivalent to ``pyro-lvae bench``.

    python benchmarks/speed.py                 # all cases, 5 repetitions
    python benchmarks/speed.py --quick         # fewer steps and repetitions
    python benchmarks/speed.py --device cuda --markdown out.md
"""

from __future__ import annotations

import argparse

from pyro_lvae.experiments import bench


def main(args: argparse.Namespace) -> list:
    results = bench.run(device=args.device, repetitions=args.repetitions, quick=args.quick,
                        ablation=args.ablation)
    table = bench.markdown(results)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table)
    return results


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--repetitions", type=int, default=5)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--ablation", action="store_true", help="time the intermediate steps too")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    return p


if __name__ == "__main__":
    main(parser().parse_args())
