"""``pyro-lvae demo``, ``theory`` and ``bench``: the short commands that print a table (and
draw figures) without a run folder to resume."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro

from ..annealing import parse_schedule
from ..datasets import manifold2d
from ..errors import ConfigError
from ..experiments.plots import points_figure, training_figure
from ..experiments.points import figure_row, held_out, summarize
from ..io import atomic_write_text, save_figure
from ..observations import FixedScale, LearnedScalarScale, LearnedVectorScale
from ..training import ProgressBar, fit, resolve_device
from ..vae import mlp_vae
from .options import (
    DEFAULT_BETA,
    add_device,
    add_network_options,
    add_out,
    add_quiet,
    add_seed,
    add_training_options,
)
from .output import STDOUT, check_output, info_stream, make_dir, write_output

#: the demo's variants: (name, folder, observation factory)
DEMO_VARIANTS = (
    ("F-VAE sigma=1", "f-vae-1", lambda: FixedScale(1.0)),
    ("F-VAE sigma=0.05", "f-vae-0.05", lambda: FixedScale(0.05)),
    ("LS-VAE", "ls-vae", lambda: LearnedScalarScale(init_scale=1.0)),  # the paper's start
    ("LV-VAE", "lv-vae", lambda: LearnedVectorScale(init_scale=1.0)),
)

#: file suffixes ``bench --out`` accepts (it writes Markdown)
MARKDOWN_SUFFIXES = (".md", ".txt")


def add_demo_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    demo = sub.add_parser("demo", help="train F-, LS- and LV-VAE on the artificial problem "
                                       "and write a table and figures")
    add_out(demo, "output folder", default="runs/demo")
    add_network_options(demo, hidden=200, blocks=4)
    add_training_options(demo, steps=3000, steps_text="steps per variant", beta=DEFAULT_BETA,
                         notes={"beta_schedule": f"for every variant; default {DEFAULT_BETA}"})
    add_seed(demo)
    add_device(demo)
    add_quiet(demo, "no progress bars")
    demo.set_defaults(func=cmd_demo)


def add_theory_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``theory``."""
    th = sub.add_parser("theory", help="draw Theorem 1: the objective on the sphere, r*(sigma) "
                                       "and the critical sigma")
    th.add_argument("--dim", type=int, default=2, help="dimension d of the space (default 2)")
    th.add_argument("--radius", type=float, default=1.0, help="sphere radius R (default 1)")
    add_out(th, "output folder", default="runs/theory")
    th.set_defaults(func=cmd_theory)


def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``bench``."""
    be = sub.add_parser("bench", help="time pyro-lvae's training step against a hand-written "
                                      "PyTorch step (same networks, loss and data)")
    be.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    be.add_argument("--repetitions", type=int, default=5,
                    help="alternating repetitions (default 5)")
    be.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall: wall-clock seconds on torch's threads (default); cpu: the "
                         "process's CPU seconds on one thread, which time the host gives to "
                         "other jobs does not inflate (for shared machines)")
    be.add_argument("--ablation", action="store_true",
                    help="also time the intermediate steps (Pyro-traced ELBO with a torch "
                         "optimiser; SVI with validation on)")
    add_device(be)
    add_out(be, "also write the Markdown table into FILE (.md, .txt or no suffix); - writes "
                "the table alone on standard output, the progress on standard error",
            metavar="FILE")
    be.set_defaults(func=cmd_bench)


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the four variants of :data:`DEMO_VARIANTS`; write their table and figures."""
    device = resolve_device(args.device)
    out = make_dir(Path(args.out))
    beta = parse_schedule(args.beta_schedule)
    x, region = held_out()
    rows, histories, results = [], {}, []
    t_start = time.perf_counter()
    print(f"pyro-lvae demo: {len(DEMO_VARIANTS)} variants x {args.steps} steps on the artificial "
          f"problem (residual MLP {args.blocks}x{args.hidden}, beta {beta.spec()}, device "
          f"{device})", flush=True)
    for name, folder, make in DEMO_VARIANTS:
        pyro.set_rng_seed(args.seed)  # the initial weights
        vae = mlp_vae(2, 2, make(), hidden=args.hidden, blocks=args.blocks, standardize=False)
        t0 = time.perf_counter()
        history = fit(vae, manifold2d, steps=args.steps, batch_size=100, lr=args.lr,
                      beta=beta, device=device, seed=args.seed,
                      tools=[ProgressBar(not args.quiet)])
        seconds = time.perf_counter() - t0
        history.to_csv(out / f"{folder}-history.csv")
        summary = summarize(vae, x, region)
        summary.update(name=name, seconds=seconds)
        results.append(summary)
        histories[name] = history
        row = figure_row(vae, name, x)
        rows.append(row)
        save_figure(points_figure([row]), out / f"{folder}.png")
        print(f"  {name:<17} ELBO {summary['elbo']:8.3f}  sigma {summary['sigma']:.4f}  "
              f"({seconds:.0f} s)", flush=True)
    save_figure(points_figure(rows), out / "overview.png")
    save_figure(training_figure(histories), out / "training.png")
    table = _demo_table(results)
    atomic_write_text(table + "\n", out / "results.md")
    print()
    print(table)
    print(f"\nwrote {out}/: results.md, overview.png, training.png, one figure and history per "
          f"variant ({time.perf_counter() - t_start:.0f} s in all)")
    return 0


def _demo_table(results: Sequence[dict[str, Any]]) -> str:
    head = ("| variant | held-out ELBO | reconstruction | KL | final sigma | "
            "sigma: moderate / small / large noise (true 0.05 / 0.01 / 0.20) |")
    lines = [head, "|---|---:|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r['name']} | {r['elbo']:.3f} | {r['reconstruction']:.3f} | {r['kl']:.3f} | "
            f"{r['sigma']:.4f} | {r['sigma_moderate']:.3f} / {r['sigma_small']:.3f} / "
            f"{r['sigma_large']:.3f} |")
    lines.append("")
    lines.append("ELBO and its parts in nats per point on 5000 held-out points (higher ELBO is "
                 "better); sigma is the model's observation scale at each point's posterior "
                 "mean, averaged over the points of each noise region.")
    return "\n".join(lines)


def cmd_theory(args: argparse.Namespace) -> int:
    """Draw Theorem 1 and tabulate r*(sigma) around the critical sigma."""
    from .. import theory
    from ..experiments.plots import theory_figure

    out = make_dir(Path(args.out))
    sigma_c = theory.critical_sigma(args.radius, args.dim)
    fig = theory_figure(args.dim, args.radius)
    save_figure(fig, out / "theory.png", dpi=90)
    ratios = [0.1, 0.25, 0.5, 0.8, 0.95, 1.0, 1.25, 2.0]
    r = theory.optimal_radius([q * sigma_c for q in ratios], args.radius, args.dim)
    lines = [f"Theorem 1, d = {args.dim}, R = {args.radius:g}: sigma_c = R / sqrt(d) = "
             f"{sigma_c:.6g}", "", "| sigma / sigma_c | sigma | r* | r* / R |",
             "|---:|---:|---:|---:|"]
    for q, rq in zip(ratios, r, strict=True):
        lines.append(f"| {q:g} | {q * sigma_c:.4g} | {rq:.4f} | {rq / args.radius:.4f} |")
    text = "\n".join(lines)
    atomic_write_text(text + "\n", out / "theory.md")
    print(text)
    print(f"\nwrote {out}/theory.png and theory.md")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """Time the hand-written step against pyro-lvae's; print (and write) the table."""
    from ..experiments import bench

    if args.repetitions < 1:
        raise ConfigError(f"Expected --repetitions >= 1 but got {args.repetitions}")
    if args.out:
        check_output(args.out, MARKDOWN_SUFFIXES, "a Markdown table", "--out")
    device = str(resolve_device(args.device))
    info = info_stream(args.out)
    print(f"pyro-lvae bench on {device}: hand-written PyTorch step against pyro-lvae's "
          f"training step, same networks, loss and data", file=info, flush=True)
    results = bench.run(device=device, repetitions=args.repetitions, quick=args.quick,
                        report=lambda line: print("  " + line, file=info, flush=True),
                        ablation=args.ablation, clock=args.clock)
    table = bench.markdown(results)
    if args.out == STDOUT:
        write_output(table.rstrip("\n") + "\n", STDOUT)
        return 0
    print()
    print(table)
    if args.out:
        write_output(table, args.out)
        print(f"wrote {args.out}")
    return 0
