"""``pyro-lvae reproduce STUDY``: one of the studies (manifold, collapse, sphere, tables,
priors, observations, counts, blur) with its tables and figures."""

from __future__ import annotations

import argparse
import importlib
import time
from pathlib import Path
from typing import Any

from ..annealing import parse_schedule
from ..errors import ConfigError
from ..training import resolve_device
from ..training.averaging import parse_average
from ..training.schedules import check_schedule
from .options import add_device, add_network_options, add_out, add_quiet, add_training_options
from .output import int_list, make_dir

#: study name -> (module, main output file)
STUDIES = {
    "manifold": ("pyro_lvae.experiments.studies.manifold", "reproduction.md"),
    "collapse": ("pyro_lvae.experiments.studies.collapse", "collapse.md"),
    "sphere": ("pyro_lvae.experiments.studies.sphere", "sphere.md"),
    "tables": ("pyro_lvae.experiments.studies.tables", "tables.md"),
    "priors": ("pyro_lvae.experiments.studies.priors", "priors.md"),
    "observations": ("pyro_lvae.experiments.studies.observations", "observations.md"),
    "counts": ("pyro_lvae.experiments.studies.counts", "counts.md"),
    "blur": ("pyro_lvae.experiments.studies.blur", "blur.md"),
}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``reproduce``."""
    rp = sub.add_parser("reproduce", help="run one of the paper's studies and write its tables "
                                          "and figures",
                        description="manifold: the paper's Table 1 study on the artificial "
                        "problem (F-VAE over a sigma grid, LS-, LV-, F*-VAE, replayed schedule). "
                        "collapse: how often learned sigmas stay in the collapsed start, and "
                        "what frees them. sphere: Theorem 1 in training (radius against r*). "
                        "tables: fixed, learned and decoder-output sigma on scikit-learn's "
                        "tables against a TVAE-like setting. priors: LS- and LV-VAE with "
                        "each prior and with GECO, F-VAE with GECO (latent diagnostics, "
                        "generations); with --images also on digits and a Fashion-MNIST subset, "
                        "with a Fréchet distance in a classifier trained on each set. "
                        "observations: the families beyond the paper on points with tilted "
                        "noise and outliers and on images (digits; with --images "
                        "digits,fashion-mnist --data-root DIR also a fixed Fashion-MNIST "
                        "subset). counts: the negative binomial and zero-inflated NB with a "
                        "fixed inverse dispersion swept over a grid against one learned per "
                        "gene and one from the decoder, on scanpy's pbmc68k_reduced (needs "
                        "pip install pyro-lvae[counts]) and synthetic counts. blur: why the "
                        "learned per-pixel sigma blurs, a sweep of convolutional network sizes and "
                        "training lengths per observation model on digits at 28x28 (and the "
                        "Fashion-MNIST subset). Image runs select their weights on a validation "
                        "split of the training images. Sizes not given are the study's own "
                        "(smaller with --quick).")
    rp.add_argument("study", choices=list(STUDIES), help="which study")
    rp.add_argument("--quick", action="store_true",
                    help="fewer seeds and steps, smaller networks: minutes on 2 CPU cores")
    rp.add_argument("--seeds", type=int, default=None, help="seeds per setting")
    rp.add_argument("--dims", default=None, help="sphere: dimensions, comma-separated")
    add_training_options(rp, steps=None, steps_text="training steps per run", beta=None,
                         lr=False, notes={"beta_schedule": "manifold only: for every variant; "
                                                           "default linear:1000:0.5:1"})
    add_network_options(rp, hidden=None, blocks=None)
    tools = rp.add_argument_group("manifold only: training tools and variants")
    tools.add_argument("--average", default=None, metavar="AVG",
                       help="averaged weights for every run, measured instead of the last "
                            "weights: ema[:DECAY[:START[:EVERY]]] or swa[:START[:EVERY]]")
    tools.add_argument("--lr-schedule", default=None, metavar="SCHEDULE",
                       help="learning-rate schedule for every run: constant, cosine[:FINAL] "
                            "or step:EVERY[:GAMMA]")
    tools.add_argument("--learned-only", action="store_true",
                       help="only LS-VAE, LV-VAE and the replayed schedule")
    rp.add_argument("--size", default=None, choices=("cpu", "paper"),
                    help="blur only: the grid of network sizes and training lengths: cpu "
                         "(default; widths 4, 8, 16, 300 and 1000 steps) or paper (widths 16 to "
                         "64 with 2 to 4 residual blocks, latent 256, 5000 and 20000 steps: for "
                         "a GPU)")
    images = rp.add_argument_group("priors, observations and blur: image sets")
    images.add_argument("--images", default=None, metavar="NAMES",
                        help="comma-separated image sets: digits (scikit-learn's, bundled), "
                             "fashion-mnist (a fixed subset; needs --data-root); default: the "
                             "study's own")
    images.add_argument("--data-root", default=None, metavar="DIR",
                        help="the folder that holds FashionMNIST/raw (never downloaded here)")
    rp.add_argument("--workers", type=int, default=None,
                    help="parallel processes, >= 1 (default: one per CPU core; 1 on a GPU)")
    add_device(rp)
    add_out(rp, "output folder (default runs/STUDY)")
    add_quiet(rp, "no line per finished run")
    rp.add_argument("--fresh", action="store_true",
                    help="train every run again: by default, runs finished by an earlier "
                         "(perhaps interrupted) call with the same settings are read back from "
                         "OUT/jobs")
    rp.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    """Run a study's jobs (in parallel, reading back finished ones) and write its outputs."""
    from ..experiments.jobs import default_workers

    module = importlib.import_module(STUDIES[args.study][0])
    study_cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Study"))
    device = str(resolve_device(args.device))
    overrides = _overrides(args)
    overrides["device"] = device
    study = study_cls.quick(**overrides) if args.quick else study_cls(**overrides)
    workers = default_workers(device) if args.workers is None else args.workers
    out = make_dir(Path(args.out or f"runs/{args.study}"))
    images = getattr(study, "images", ())
    what = (study.describe() if hasattr(study, "describe") else
            f"{study.seeds} seed(s), {study.steps} steps per run, residual MLP "
            f"{study.blocks}x{study.hidden}"
            + (f" (image sets {', '.join(images)}: their own settings)" if images else ""))
    print(f"pyro-lvae reproduce {args.study}: {what}, on {device} with {workers} worker(s)",
          flush=True)
    t0 = time.perf_counter()
    cache = out / "jobs"
    if args.fresh and cache.is_dir():
        for old in cache.glob("*.json"):
            old.unlink()
    results = module.run_study(study, workers=workers, cache=cache,
                               report=None if args.quiet else lambda line: print(line, flush=True))
    written = module.write_outputs(study, results, out)
    print((out / STUDIES[args.study][1]).read_text())
    print(f"wrote {', '.join(p.name for p in written)} to {out}/ "
          f"({time.perf_counter() - t0:.0f} s in all)")
    return 0


def _image_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``--images`` and ``--data-root``, for the studies with image sets."""
    from ..experiments.studies.imagesets import IMAGE_SET_NAMES

    out: dict[str, Any] = {}
    if args.images is None and args.data_root is None:
        return out
    if args.study not in ("priors", "observations", "blur"):
        raise ConfigError("--images and --data-root apply to the priors, observations and "
                          "blur studies only")
    if args.images is not None:
        names = tuple(n.strip() for n in args.images.split(",") if n.strip())
        unknown = [n for n in names if n not in IMAGE_SET_NAMES]
        if unknown:
            raise ConfigError(f"unknown image set(s) {', '.join(unknown)} in --images; "
                              f"expected names from {', '.join(IMAGE_SET_NAMES)}")
        if "fashion-mnist" in names and args.data_root is None:
            raise ConfigError("--images fashion-mnist needs --data-root, the folder that holds "
                              "FashionMNIST/raw")
        out["images"] = names
    if args.data_root is not None:
        if not Path(args.data_root).is_dir():
            raise ConfigError(f"--data-root {args.data_root}: no such folder")
        out["data_root"] = str(args.data_root)
    return out


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The study settings given on the command line, checked."""
    given = (("steps", args.steps), ("seeds", args.seeds), ("hidden", args.hidden),
             ("blocks", args.blocks))
    overrides: dict[str, Any] = {k: v for k, v in given if v is not None}
    for name, value in (*overrides.items(), ("workers", args.workers)):
        if value is not None and value < 1:
            raise ConfigError(f"Expected --{name} >= 1 but got {value}")
    if args.study == "blur":
        fixed = [f"--{k}" for k in ("steps", "hidden", "blocks") if k in overrides]
        if fixed:
            raise ConfigError(f"{', '.join(fixed)} do not apply to the blur study: its grid of "
                              "network sizes and training lengths is set by --size (and "
                              "--quick)")
    if args.size is not None:
        if args.study != "blur":
            raise ConfigError("--size applies to the blur study only")
        overrides["size"] = args.size
    if args.dims is not None:
        if args.study != "sphere":
            raise ConfigError("--dims applies to the sphere study only")
        overrides["dims"] = tuple(int_list(args.dims, "--dims"))
    for flag, key in (("--average", "average"), ("--lr-schedule", "lr_schedule"),
                      ("--learned-only", "learned_only")):
        value = getattr(args, key)
        if value in (None, False):
            continue
        if args.study != "manifold":
            raise ConfigError(f"{flag} applies to the manifold study only")
        overrides[key] = value
    overrides.update(_image_overrides(args))
    if "average" in overrides:
        parse_average(overrides["average"])  # a bad form fails before any run starts
    if "lr_schedule" in overrides:
        check_schedule(overrides["lr_schedule"], 0)
    if args.beta_schedule is not None:
        if args.study != "manifold":
            raise ConfigError("--beta-schedule applies to the manifold study only")
        parse_schedule(args.beta_schedule)
        overrides["beta"] = args.beta_schedule
    return overrides
