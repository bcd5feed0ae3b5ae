"""The ``pyro-lvae`` command.

``demo``       F-VAE (two fixed sigmas), LS-VAE and LV-VAE on the artificial problem: a table and
               figures (a few minutes on a laptop CPU)
``train``      one variant on the artificial problem or images into a run folder (config,
               history, checkpoint, summary, figures); ``--resume DIR`` continues a run;
               ``--devices N`` trains data-parallel under torchrun
``tabular``    ``fit`` a VAE to a CSV table, ``sample`` synthetic rows from it (``-o -``: on
               standard output)
``reproduce``  one of the studies (manifold, collapse, sphere, tables): tables and figures
``theory``     Theorem 1 (the sphere): the objective, r*(sigma) and sigma_c
``bench``      the training step's speed against a hand-written PyTorch step

Each command lives in its own module (:mod:`.train`, :mod:`.tabular`, :mod:`.study`,
:mod:`.demo`); the flags several commands share are defined once in :mod:`.options`.
Errors a user can cause print one line (``pyro-lvae: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import LVAEError
from . import demo, study, tabular, train
from .options import DEFAULT_BETA
from .train import COLLAPSED_KL, collapse_note

__all__ = ["main", "build_parser", "collapse_note", "COLLAPSED_KL", "DEFAULT_BETA"]


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``pyro-lvae`` and its commands."""
    parser = argparse.ArgumentParser(
        prog="pyro-lvae",
        description="Learnable observation models for VAEs in Pyro (Berger & Sebag, "
                    "arXiv:2003.01972).",
    )
    parser.add_argument("--version", action="version", version=f"pyro-lvae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo.add_demo_parser(sub)
    train.add_parser(sub)
    demo.add_theory_parser(sub)
    study.add_parser(sub)
    tabular.add_parser(sub)
    demo.add_bench_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``pyro-lvae`` with ``argv`` (default: the process's arguments); the exit status."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.func(args)
    except LVAEError as e:
        print(f"pyro-lvae: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("pyro-lvae: interrupted; checkpoints already written are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
