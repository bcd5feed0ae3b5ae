"""The ``pyro-lvae`` command.

``demo``       F-VAE (two fixed sigmas), LS-VAE and LV-VAE on the artificial problem: a table and
               figures (a few minutes on a laptop CPU)
``train``      one variant on the artificial problem or images into a run folder (config,
               history, checkpoint, summary, figures); ``--resume DIR`` continues a run;
               ``--devices N`` trains data-parallel under torchrun
``tabular``    ``fit`` a VAE to a CSV table, ``sample`` synthetic rows from it
``reproduce``  one of the studies (manifold, collapse, sphere, tables): tables and figures
``theory``     Theorem 1 (the sphere): the objective, r*(sigma) and sigma_c
``bench``      the training step's speed against a hand-written PyTorch step

Errors a user can cause print one line (``pyro-lvae: error: ...``) and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyro
import torch.distributed as dist

from .. import __version__
from ..annealing import parse_schedule
from ..datasets import manifold2d
from ..errors import CheckpointError, ConfigError, LVAEError
from ..experiments.plots import points_figure, training_figure
from ..experiments.points import figure_row, held_out, summarize
from ..experiments.tasks import TASKS, build_observation
from ..io import atomic_write_text, save_figure
from ..observations import (
    OBSERVATIONS,
    FixedScale,
    LearnedScalarScale,
    LearnedVectorScale,
    describe,
    initial_scale,
)
from ..tabular import SIGMA_MODES
from ..training import CHECKPOINT_NAME, History, fit, resolve_device
from ..training.distributed import check_launch, init_from_env, rank_info
from ..vae import VAE, mlp_vae

logger = logging.getLogger("pyro_lvae")

#: default KL weight of the command line: a mild warm-up from 0.5 to 1 over 1000 steps. With a
#: learned sigma that starts at the data's own scale, the collapsed solution (KL = 0, sigma =
#: data std) is exactly marginal when the coordinates are uncorrelated; any beta < 1 makes it
#: unstable, and starting at 0.5 rather than 0 avoids the tiny-sigma optimum that beta = 0 invites.
#: With it, a learned sigma starts at half the data's spread (below the collapsed solution's
#: sigma) unless --sigma is given: docs/reproduction.md, "The collapsed start".
DEFAULT_BETA = "linear:1000:0.5:1"


def _run_history(source: str) -> History:
    path = Path(source)
    return History.from_csv(path / "history.csv" if path.is_dir() else path)


def _write_json(data: dict[str, Any], path: Path) -> None:
    """Strict JSON: a value that is not a finite number (bits/dim of scaled pixels) is null."""
    clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v
             for k, v in data.items()}
    atomic_write_text(json.dumps(clean, indent=2, allow_nan=False) + "\n", path)


def _train_settings(args: argparse.Namespace, task) -> dict[str, Any]:
    """The run's settings from the command line and the task's defaults (saved as
    config.json; --resume reads them back)."""
    d = task.defaults

    def given(value, name):  # 0 is a value the user gave (and will be refused), not "unset"
        return d[name] if value is None else value

    s = {
        "version": __version__, "dataset": args.dataset, "obs": args.obs,
        "latent_dim": given(args.latent_dim, "latent_dim"), "blocks": given(args.blocks, "blocks"),
        "batch_size": given(args.batch_size, "batch_size"), "steps": args.steps,
        "lr": args.lr, "beta_schedule": args.beta_schedule, "device": args.device,
        "seed": args.seed, "checkpoint_every": args.checkpoint_every,
        "on_divergence": args.on_divergence, "min_scale": given(args.min_scale, "min_scale"),
    }
    if args.dataset == "manifold2d":
        s.update(hidden=args.hidden, steps=given(args.steps, "steps"))
    else:
        s.update(width=args.width, convs=given(args.convs, "convs"),
                 epochs=given(args.epochs, "epochs"),
                 pixels=args.pixels or ("binarize" if describe(args.obs).binary else "dequantize"),
                 data_root=args.data_root, download=args.download,
                 num_workers=args.num_workers, eval_images=args.eval_images,
                 iwae_images=args.iwae_images, iwae_samples=args.iwae_samples)
    for name in ("latent_dim", "batch_size", "steps", "epochs", "eval_images", "iwae_images",
                 "iwae_samples", "width", "convs", "hidden", "checkpoint_every"):
        if s.get(name) is not None and s[name] < 1:
            raise ConfigError(f"Expected --{name.replace('_', '-')} >= 1 but got {s[name]}")
    return s


def _train_run(vae: VAE, run: Path, settings: dict[str, Any], resume: bool,
               progress: bool = True, tensorboard: str | None = None,
               rank: int = 0) -> dict[str, Any]:
    task = TASKS[settings["dataset"]]
    data, transform, steps, per_epoch = task.data(settings)
    settings["steps"] = steps
    every = settings.get("checkpoint_every") or per_epoch or 1000
    callbacks = []
    if tensorboard and rank == 0:
        from ..training.tensorboard import TensorBoardCallback

        callbacks.append(TensorBoardCallback(tensorboard))
    t0 = time.perf_counter()
    history = fit(
        vae, data, steps=steps, batch_size=settings["batch_size"], lr=settings["lr"],
        beta=parse_schedule(settings["beta_schedule"]), device=settings["device"],
        seed=settings["seed"], progress=progress, out=run, checkpoint_every=every,
        resume=resume, on_divergence=settings.get("on_divergence", "stop"),
        transform=transform, callbacks=callbacks,
    )
    seconds = time.perf_counter() - t0
    if rank != 0:  # rank 0 evaluates and writes; the others wait for it
        dist.barrier()
        return {}
    history.to_csv(run / "history.csv")
    summary = task.report(vae, history, run, settings)
    world = rank_info()[1]
    summary.update(steps=len(history), train_seconds=round(seconds, 2), device=str(vae.device),
                   processes=world)
    _write_json(summary, run / "summary.json")
    if world > 1:
        dist.barrier()
    return summary


def _launch(args: argparse.Namespace) -> int:
    """Run this same command under torchrun, on --devices processes per machine."""
    from torch.distributed.run import main as torchrun

    from ..training.distributed import torchrun_argv

    skip = {"--devices", "--num-nodes", "--node-rank", "--master-addr", "--master-port"}
    command, it = [], iter(args.argv)
    for a in it:
        if a.split("=")[0] in skip:
            if "=" not in a:
                next(it, None)
            continue
        command.append(a)
    argv = torchrun_argv(args.devices, args.num_nodes, args.node_rank, args.master_addr,
                         args.master_port, command)
    os.environ["PYRO_LVAE_LAUNCHED"] = "1"  # the launcher has checked the run folder
    print(f"pyro-lvae: starting {args.devices} process(es) per machine on {args.num_nodes} "
          f"machine(s) with torchrun", flush=True)
    try:
        torchrun(argv)
    except SystemExit as e:
        return int(e.code or 0)
    except Exception as e:  # torchrun reports a worker's failure as ChildFailedError
        print(f"pyro-lvae: error: a training process failed ({type(e).__name__}); see the "
              f"messages above", file=sys.stderr)
        return 1
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    check_launch(args.devices, args.num_nodes, args.node_rank)
    worker = "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1
    if (args.devices > 1 or args.num_nodes > 1) and not worker:
        if args.resume is None:
            _check_new_run(args)
        return _launch(args)
    rank = 0
    if worker:
        device = init_from_env(args.device)
        rank = dist.get_rank()
        args.device = str(device)
        args.quiet = args.quiet or rank != 0
    try:
        return _train(args, rank, check=not os.environ.get("PYRO_LVAE_LAUNCHED"))
    finally:
        if worker:
            dist.destroy_process_group()


def _check_new_run(args: argparse.Namespace) -> None:
    if args.out is None:
        raise ConfigError("give --out DIR (the run folder to write) or --resume DIR")
    run = Path(args.out)
    if (run / CHECKPOINT_NAME).exists():
        raise ConfigError(f"{run} already holds a run; continue it with --resume {run} or "
                          f"choose another --out")


def _train(args: argparse.Namespace, rank: int, check: bool) -> int:
    if args.resume is not None:
        run = Path(args.resume)
        try:
            settings = json.loads((run / "config.json").read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{run} holds no config.json; is it a pyro-lvae run folder?"
                                  ) from None
        except json.JSONDecodeError:
            raise CheckpointError(f"{run / 'config.json'} is corrupt") from None
        if not (run / CHECKPOINT_NAME).exists():
            raise CheckpointError(f"{run} holds no {CHECKPOINT_NAME} to resume from")
        if args.steps is not None:
            settings["steps"] = args.steps
        if rank != 0 or args.devices > 1 or args.num_nodes > 1:
            settings["device"] = args.device
        vae = VAE.load(run / CHECKPOINT_NAME)
        resume = True
    else:
        if check:
            _check_new_run(args)
        run = Path(args.out)
        if args.dataset not in TASKS:
            raise ConfigError(f"unknown dataset {args.dataset!r}; expected one of "
                              f"{', '.join(TASKS)}")
        task = TASKS[args.dataset]
        settings = _train_settings(args, task)
        parse_schedule(args.beta_schedule)
        resolve_device(args.device)
        pyro.set_rng_seed(args.seed)  # the initial weights
        history = _run_history(args.sigma_from) if args.sigma_from is not None else None
        sigma = args.sigma
        if sigma is None and describe(args.obs).learned:
            sigma = _data_scaled_start(task, settings, say=rank == 0 and not args.quiet)
        observation = build_observation(args.obs, sigma, settings["min_scale"],
                                        task.channels(settings), history)
        settings["observation"] = observation.config()
        vae = task.build(settings, observation)
        if rank == 0:
            try:
                run.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CheckpointError(f"cannot create run folder {run}: {e.strerror}") from None
            _write_json(settings, run / "config.json")
        resume = False
    summary = _train_run(vae, run, settings, resume, progress=not args.quiet,
                         tensorboard=getattr(args, "tensorboard", None), rank=rank)
    if rank != 0:
        return 0
    print(_format_summary(settings["obs"], summary))
    note = collapse_note(settings["obs"], summary)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    files = ["config.json", "history.csv", CHECKPOINT_NAME, "summary.json",
             *TASKS[settings["dataset"]].figures]
    print(f"wrote {run}/: {' '.join(files)}")
    return 0


def _data_scaled_start(task, settings: dict[str, Any], say: bool) -> float:
    """The default start of a learned sigma: half the training data's spread (the collapsed
    solution's sigma); see :func:`pyro_lvae.observations.initial_scale`."""
    sigma = initial_scale(task.sample(settings))
    if sigma <= settings["min_scale"]:
        raise ConfigError(
            f"half the training data's spread ({sigma:.3g}), the default start of a learned "
            f"sigma, is not above the floor --min-scale {settings['min_scale']:g}; lower "
            f"--min-scale or give the start with --sigma")
    settings["sigma_start"] = "half the training data's spread"
    if say:
        print(f"pyro-lvae: the learned sigma starts at {sigma:.4g}, half the training data's "
              f"spread ({2 * sigma:.4g}); --sigma sets another start", flush=True)
    return sigma


def _format_summary(name: str, s: dict[str, Any]) -> str:
    tail = f"{s['steps']} steps in {s['train_seconds']:.0f} s on {s['device']}"
    if "elbo_nats" in s:  # images
        bpd = s["elbo_bits_per_dim"]
        bits = f" = {bpd:.3f} bits/dim" if math.isfinite(bpd) else ""
        return (f"{name}: held-out ELBO {s['elbo_nats']:.1f} nats/image{bits}, IWAE "
                f"({s['iwae_samples']} samples) {s['iwae_nats']:.1f} nats/image, spread of "
                f"samples around their means {s['sample_spread']:.4f}; {tail}")
    sig = f"{s['sigma']:.4g}" if "sigma" in s else "-"
    return (f"{name}: held-out ELBO {s['elbo']:.3f} nats/point (reconstruction "
            f"{s['reconstruction']:.3f}, KL {s['kl']:.3f}), sigma {sig}, {tail}")


#: held-out KL per data point (nats) below which a trained model counts as collapsed
COLLAPSED_KL = 0.1


def collapse_note(obs: str, summary: dict[str, Any]) -> str | None:
    """What to do when a trained model ended in the collapsed solution (the decoder ignores
    ``z``: held-out KL per data point below :data:`COLLAPSED_KL`), else ``None``."""
    kl = summary.get("kl", summary.get("kl_nats"))
    if kl is None or not kl < COLLAPSED_KL:
        return None
    head = (f"the model ended collapsed (held-out KL {kl:.3f} nats per data point: every z "
            f"decodes to about the same output, the optimum of Theorem 1 for a sigma above the "
            f"data's critical scale); ")
    variant = describe(obs)
    if variant.constant:
        return head + "train again with a smaller --sigma, or learn it (--obs learned-scalar)"
    if variant.learned:
        return head + ("start sigma lower (--sigma; the default, half the data's spread, "
                       "never collapsed in our runs), keep a KL warm-up (--beta-schedule "
                       "linear:1000:0.5:1), or try --obs learned-vector; see "
                       "docs/reproduction.md, 'The collapsed start'")
    return head + "a KL warm-up (--beta-schedule linear:1000:0.5:1) may free it"


#: the demo's variants: (name, folder, observation factory)
DEMO_VARIANTS = (
    ("F-VAE sigma=1", "f-vae-1", lambda: FixedScale(1.0)),
    ("F-VAE sigma=0.05", "f-vae-0.05", lambda: FixedScale(0.05)),
    ("LS-VAE", "ls-vae", lambda: LearnedScalarScale()),
    ("LV-VAE", "lv-vae", lambda: LearnedVectorScale()),
)


def cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    device = resolve_device(args.device)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create output folder {out}: {e.strerror}") from None
    beta = parse_schedule(args.beta_schedule)
    x, region = held_out()
    rows, histories, results = [], {}, []
    t_start = time.perf_counter()
    print(f"pyro-lvae demo: {len(DEMO_VARIANTS)} variants x {args.steps} steps on the artificial "
          f"problem (residual MLP {args.blocks}x{args.hidden}, beta {beta.spec()}, device "
          f"{device})", flush=True)
    for name, folder, make in DEMO_VARIANTS:
        pyro.set_rng_seed(args.seed)  # the initial weights
        vae = mlp_vae(2, 2, make(), hidden=args.hidden, blocks=args.blocks)
        t0 = time.perf_counter()
        history = fit(vae, manifold2d, steps=args.steps, batch_size=100, lr=args.lr,
                      beta=beta, device=device, seed=args.seed, progress=not args.quiet)
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
    from .. import theory
    from ..experiments.plots import theory_figure

    out = _make_dir(Path(args.out))
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
    from ..experiments import bench

    if args.repetitions < 1:
        raise ConfigError(f"Expected --repetitions >= 1 but got {args.repetitions}")
    device = str(resolve_device(args.device))
    print(f"pyro-lvae bench on {device}: hand-written PyTorch step against pyro-lvae's "
          f"training step, same networks, loss and data", flush=True)
    results = bench.run(device=device, repetitions=args.repetitions, quick=args.quick,
                        report=lambda line: print("  " + line, flush=True),
                        ablation=args.ablation)
    table = bench.markdown(results)
    print()
    print(table)
    if args.out:
        atomic_write_text(table, Path(args.out))
        print(f"wrote {args.out}")
    return 0


def _names(text: str | None) -> list[str]:
    return [c.strip() for c in text.split(",") if c.strip()] if text else []


def cmd_tabular_fit(args: argparse.Namespace) -> int:
    from ..tabular import TabularModel, read_csv

    out = Path(args.out)
    if (out / TabularModel.MODEL_FILE).exists():
        raise ConfigError(f"{out} already holds a model; choose another --out")
    table = read_csv(args.data)
    beta = parse_schedule(args.beta_schedule)
    resolve_device(args.device)
    out = _make_dir(out)
    model = TabularModel.fit(
        table, categorical=_names(args.categorical), numeric=_names(args.numeric),
        continuous=args.continuous, missing=args.missing, sigma_mode=args.sigma_mode,
        sigma=args.sigma, min_scale=args.min_scale, latent_dim=args.latent_dim,
        hidden=args.hidden, blocks=args.blocks, steps=args.steps, batch_size=args.batch_size,
        lr=args.lr, beta=beta, seed=args.seed, device=args.device, progress=not args.quiet,
        out=out)
    model.history.to_csv(out / "history.csv")
    from .. import evaluate

    x = model.transformer.transform(table, missing=args.missing).to(model.vae.device)
    summary = {"rows": len(x), "columns": {c.name: c.kind for c in model.transformer.columns},
               **evaluate.elbo(model.vae, x, num_particles=4),
               "active_units": evaluate.active_units(model.vae, x)[0],
               "latent_dim": args.latent_dim, "sigma_mode": args.sigma_mode,
               "final_sigma": float(model.history["sigma"][-1])}
    _write_json(summary, out / "summary.json")
    kinds = ", ".join(f"{n} {k}" for n, k in summary["columns"].items())
    print(f"fitted {len(x)} rows ({kinds}); ELBO {summary['elbo']:.3f} nats/row on the "
          f"training table, {summary['active_units']} of {args.latent_dim} latent units active")
    print(f"wrote {out}/: model.pt transform.json checkpoint.pt history.csv summary.json")
    return 0


def cmd_tabular_sample(args: argparse.Namespace) -> int:
    from ..tabular import TabularModel

    if args.n < 1:
        raise ConfigError(f"Expected -n >= 1 but got {args.n}")
    model = TabularModel.load(args.model, map_location="cpu")
    table = model.sample(args.n, continuous=args.continuous, discrete=args.discrete,
                         seed=args.seed)
    atomic_write_text(table.to_csv(index=False), Path(args.output))
    print(f"wrote {args.n} rows of {len(table.columns)} columns to {args.output}")
    return 0


#: study name -> (module, main output file)
STUDIES = {
    "manifold": ("pyro_lvae.experiments.studies.manifold", "reproduction.md"),
    "collapse": ("pyro_lvae.experiments.studies.collapse", "collapse.md"),
    "sphere": ("pyro_lvae.experiments.studies.sphere", "sphere.md"),
    "tables": ("pyro_lvae.experiments.studies.tables", "tables.md"),
}


def cmd_reproduce(args: argparse.Namespace) -> int:
    import importlib

    from ..experiments.jobs import default_workers

    module = importlib.import_module(STUDIES[args.study][0])
    study_cls = next(getattr(module, n) for n in module.__all__ if n.endswith("Study"))
    device = str(resolve_device(args.device))
    given = (("steps", args.steps), ("seeds", args.seeds), ("hidden", args.hidden),
             ("blocks", args.blocks))
    overrides: dict[str, Any] = {k: v for k, v in given if v is not None}
    for name, value in overrides.items():
        if value < 1:
            raise ConfigError(f"Expected --{name} >= 1 but got {value}")
    overrides["device"] = device
    if args.dims is not None:
        if args.study != "sphere":
            raise ConfigError("--dims applies to the sphere study only")
        overrides["dims"] = tuple(_int_list(args.dims, "--dims"))
    if args.beta_schedule is not None:
        if args.study != "manifold":
            raise ConfigError("--beta-schedule applies to the manifold study only")
        parse_schedule(args.beta_schedule)
        overrides["beta"] = args.beta_schedule
    study = study_cls.quick(**overrides) if args.quick else study_cls(**overrides)
    workers = args.workers or default_workers(device)
    out = _make_dir(Path(args.out or f"runs/{args.study}"))
    print(f"pyro-lvae reproduce {args.study}: {study.seeds} seed(s), {study.steps} steps per "
          f"run, residual MLP {study.blocks}x{study.hidden}, on {device} with {workers} "
          f"worker(s)", flush=True)
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


def _int_list(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{flag} takes integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ConfigError(f"{flag} takes integers >= 1, got {text!r}")
    return values


def _make_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointError(f"cannot create output folder {path}: {e.strerror}") from None
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pyro-lvae",
        description="Learnable observation models for VAEs in Pyro (Berger & Sebag, "
                    "arXiv:2003.01972).",
    )
    parser.add_argument("--version", action="version", version=f"pyro-lvae {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser("demo", help="train F-, LS- and LV-VAE on the artificial problem "
                                       "and write a table and figures")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--steps", type=int, default=3000, help="steps per variant (default 3000)")
    demo.add_argument("--hidden", type=int, default=200,
                  help="units per residual block (default 200)")
    demo.add_argument("--blocks", type=int, default=4,
                  help="residual blocks per network (default 4)")
    demo.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    demo.add_argument("--beta-schedule", default=DEFAULT_BETA,
                      help=f"KL weight for every variant (default {DEFAULT_BETA})")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.set_defaults(func=cmd_demo)

    train = sub.add_parser("train", help="train one variant into a run folder",
                           description="Train one VAE variant on the artificial problem or on "
                           "images. Writes config.json, history.csv, checkpoint.pt, "
                           "summary.json and figures into --out.")
    train.add_argument("--dataset", default="manifold2d",
                       help=f"data: {', '.join(TASKS)} (default manifold2d)")
    train.add_argument("--obs", default="learned-scalar",
                       choices=[k for k in OBSERVATIONS if k != "mixed"],
                       help="observation model: fixed (F-VAE; MSE training is a fixed sigma), "
                            "learned-scalar (LS-VAE), learned-channel (a sigma per channel or "
                            "column), learned-vector (LV-VAE: a sigma per dimension or pixel "
                            "from the decoder), scheduled (fixed sigma on a recorded "
                            "trajectory), bernoulli (binary data), continuous-bernoulli (data "
                            "in [0, 1]) (default learned-scalar)")
    train.add_argument("--sigma", type=float, default=None,
                       help="fixed sigma (fixed, default 1) or initial sigma (learned-*, "
                            "default: half the training data's spread, measured on 10000 "
                            "points or the first 10000 images; 1 is the paper's start)")
    train.add_argument("--sigma-from", metavar="RUN", default=None,
                       help="a run folder or history.csv of a learned-sigma run: with --obs "
                            "fixed, fix sigma at its final value (F*-VAE); with --obs "
                            "scheduled, replay its sigma trajectory")
    train.add_argument("--min-scale", type=float, default=None,
                       help="floor on a learned sigma (default 1e-3 for points, 0.01 for "
                            "images)")
    train.add_argument("--latent-dim", type=int, default=None,
                       help="latent dimension (default 2 for points, 256 for 28x28 images, "
                            "2048 for CelebA)")
    train.add_argument("--hidden", type=int, default=200,
                       help="points: units per residual block (default 200)")
    train.add_argument("--blocks", type=int, default=None,
                       help="residual blocks per network (default 4; 5 for CelebA)")
    train.add_argument("--width", type=int, default=32,
                       help="images: channels after the first convolution (default 32)")
    train.add_argument("--convs", type=int, default=None,
                       help="images: convolutions in the encoder (default 3; 4 for CelebA)")
    train.add_argument("--steps", type=int, default=None,
                       help="total steps (default 5000 for points; images: --epochs)")
    train.add_argument("--epochs", type=int, default=None,
                       help="images: passes over the training set (default 10)")
    train.add_argument("--batch-size", type=int, default=None,
                       help="batch size (default 100 for points, 128 for images)")
    train.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (default 1e-3)")
    train.add_argument("--beta-schedule", default=DEFAULT_BETA,
                       help="weight of the KL term: a number, constant:B, linear:STEPS[:START"
                            "[:END]], sigmoid:MID[:WIDTH[:END]], cyclical:PERIOD[:RAMP[:END]] "
                            f"(default {DEFAULT_BETA}: a mild warm-up that keeps learned "
                            "sigmas out of the collapsed start; 1 is the paper's plain ELBO)")
    train.add_argument("--pixels", choices=("dequantize", "scale", "binarize"), default=None,
                       help="images: how pixels become data: dequantize ((k + u)/256, the "
                            "default), scale (k/255, no noise), binarize (default for "
                            "bernoulli)")
    train.add_argument("--data-root", default="data",
                       help="images: folder holding MNIST/, FashionMNIST/ or celeba/ "
                            "(default ./data)")
    train.add_argument("--download", action="store_true",
                       help="images: download missing files (needs a network)")
    train.add_argument("--num-workers", type=int, default=2,
                       help="images: DataLoader worker processes for CelebA (default 2)")
    train.add_argument("--eval-images", type=int, default=2000,
                       help="images: held-out images for the ELBO (default 2000)")
    train.add_argument("--iwae-images", type=int, default=256,
                       help="images: held-out images for the IWAE bound (default 256)")
    train.add_argument("--iwae-samples", type=int, default=100,
                       help="images: importance samples per image (default 100)")
    train.add_argument("--tensorboard", metavar="DIR", default=None,
                       help="log losses, sigma and image grids for TensorBoard into DIR "
                            "(needs the tensorboard package)")
    train.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument("--checkpoint-every", type=int, default=None,
                       help="steps between checkpoints (default: every epoch for images, "
                            "1000 steps for points)")
    train.add_argument("--on-divergence", choices=("stop", "rollback"), default="stop",
                       help="when the loss turns NaN/Inf: stop with a diagnosis (default), or "
                            "roll back to the last good check and halve the learning rate (at "
                            "most 3 times)")
    train.add_argument("--devices", type=int, default=1,
                       help="processes per machine for data-parallel training (one per GPU; "
                            "on a CPU, processes sharing its cores); started with torchrun")
    train.add_argument("--num-nodes", type=int, default=1,
                       help="machines taking part (run the same command on each)")
    train.add_argument("--node-rank", type=int, default=0,
                       help="this machine's index, 0 .. --num-nodes - 1")
    train.add_argument("--master-addr", default="127.0.0.1",
                       help="address of machine 0 (several machines)")
    train.add_argument("--master-port", type=int, default=29500,
                       help="port on machine 0 (several machines)")
    train.add_argument("--out", metavar="DIR", default=None, help="run folder to create")
    train.add_argument("--resume", metavar="DIR", default=None,
                       help="continue the run in DIR from its last checkpoint (its settings "
                            "are reused; --steps may raise the total)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.set_defaults(func=cmd_train)

    th = sub.add_parser("theory", help="draw Theorem 1: the objective on the sphere, r*(sigma) "
                                       "and the critical sigma")
    th.add_argument("--dim", type=int, default=2, help="dimension d of the space (default 2)")
    th.add_argument("--radius", type=float, default=1.0, help="sphere radius R (default 1)")
    th.add_argument("--out", default="runs/theory", help="output folder (default runs/theory)")
    th.set_defaults(func=cmd_theory)

    rp = sub.add_parser("reproduce", help="run one of the paper's studies and write its tables "
                                          "and figures",
                        description="manifold: the paper's Table 1 study on the artificial "
                        "problem (F-VAE over a sigma grid, LS-, LV-, F*-VAE, replayed schedule). "
                        "collapse: how often learned sigmas stay in the collapsed start, and "
                        "what frees them. sphere: Theorem 1 in training (radius against r*). "
                        "tables: fixed, learned and decoder-output sigma on scikit-learn's "
                        "tables against a TVAE-like setting.")
    rp.add_argument("study", choices=list(STUDIES), help="which study")
    rp.add_argument("--quick", action="store_true",
                    help="fewer seeds and steps, smaller networks: minutes on 2 CPU cores")
    rp.add_argument("--seeds", type=int, default=None, help="seeds per setting")
    rp.add_argument("--steps", type=int, default=None, help="training steps per run")
    rp.add_argument("--hidden", type=int, default=None, help="units per residual block")
    rp.add_argument("--blocks", type=int, default=None, help="residual blocks per network")
    rp.add_argument("--dims", default=None, help="sphere: dimensions, comma-separated")
    rp.add_argument("--beta-schedule", default=None,
                    help="manifold: KL weight for every variant (default linear:1000:0.5:1)")
    rp.add_argument("--workers", type=int, default=None,
                    help="parallel processes (default: one per CPU core; 1 on a GPU)")
    rp.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    rp.add_argument("--out", default=None, help="output folder (default runs/STUDY)")
    rp.add_argument("--quiet", action="store_true", help="no line per finished run")
    rp.add_argument("--fresh", action="store_true",
                    help="train every run again: by default, runs finished by an earlier "
                         "(perhaps interrupted) call with the same settings are read back from "
                         "OUT/jobs")
    rp.set_defaults(func=cmd_reproduce)

    tab = sub.add_parser("tabular", help="fit a VAE to a CSV table and sample synthetic rows")
    tsub = tab.add_subparsers(dest="tabular_command", metavar="ACTION", required=True)
    tf = tsub.add_parser("fit", help="fit a VAE to a CSV table",
                         description="Encode a CSV table (continuous, integer, binary and "
                         "categorical columns; exact inverse) and train a VAE with a mixed "
                         "observation model. Writes model.pt, transform.json, checkpoint.pt, "
                         "history.csv and summary.json into --out.")
    tf.add_argument("data", help="the CSV file (a header row, one row per record)")
    tf.add_argument("--out", required=True, help="folder to write the model into")
    tf.add_argument("--categorical", default=None,
                    help="numeric columns to treat as categories, comma-separated (text and "
                         "boolean columns always are)")
    tf.add_argument("--numeric", default=None,
                    help="two-valued numeric columns to keep continuous (else binary)")
    tf.add_argument("--continuous", choices=("standard", "quantile"), default="standard",
                    help="encoding of continuous columns: standardise (default) or map to "
                         "normal scores through their empirical distribution (multi-modal or "
                         "skewed columns)")
    tf.add_argument("--missing", choices=("error", "drop"), default="error",
                    help="missing values: refuse them (default) or drop their rows")
    tf.add_argument("--sigma-mode", choices=SIGMA_MODES, default="learned-column",
                    help="sigma of continuous columns: fixed, learned-scalar, learned-column "
                         "(default), decoder (per row and column, the LV-VAE of tables) or tvae "
                         "(per column, clamped to [0.01, 1])")
    tf.add_argument("--sigma", type=float, default=None,
                    help="fixed sigma, or the initial sigma of learned modes (default 1; 0.1 "
                         "for tvae)")
    tf.add_argument("--min-scale", type=float, default=1e-3, help="floor on learned sigmas")
    tf.add_argument("--latent-dim", type=int, default=8, help="latent dimension (default 8)")
    tf.add_argument("--hidden", type=int, default=128, help="units per block (default 128)")
    tf.add_argument("--blocks", type=int, default=2, help="residual blocks (default 2)")
    tf.add_argument("--steps", type=int, default=3000, help="training steps (default 3000)")
    tf.add_argument("--batch-size", type=int, default=128, help="rows per step (default 128)")
    tf.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    tf.add_argument("--beta-schedule", default="1",
                    help="KL weight: a number or a schedule such as linear:1000 (default 1)")
    tf.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    tf.add_argument("--device", default="auto", help="auto, cpu or cuda")
    tf.add_argument("--quiet", action="store_true", help="no progress bar")
    tf.set_defaults(func=cmd_tabular_fit)
    ts = tsub.add_parser("sample", help="sample synthetic rows from a fitted model",
                         description="Write synthetic rows with the original columns, types "
                         "and categories.")
    ts.add_argument("model", help="the folder written by pyro-lvae tabular fit")
    ts.add_argument("-n", type=int, required=True, help="number of rows")
    ts.add_argument("-o", "--output", required=True, help="CSV file to write")
    ts.add_argument("--continuous", choices=("sample", "mean"), default="sample",
                    help="continuous columns drawn from p(x|z) (default) or at its mean")
    ts.add_argument("--discrete", choices=("sample", "argmax"), default="sample",
                    help="binary and categorical columns drawn (default) or at their likelier "
                         "value (TVAE's decoding)")
    ts.add_argument("--seed", type=int, default=None, help="random seed")
    ts.set_defaults(func=cmd_tabular_sample)

    be = sub.add_parser("bench", help="time pyro-lvae's training step against a hand-written "
                                      "PyTorch step (same networks, loss and data)")
    be.add_argument("--quick", action="store_true", help="fewer steps and repetitions")
    be.add_argument("--repetitions", type=int, default=5, help="alternating repetitions")
    be.add_argument("--ablation", action="store_true",
                    help="also time the intermediate steps (Pyro-traced ELBO with a torch "
                         "optimiser; SVI with validation on)")
    be.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    be.add_argument("--out", default=None, help="also write the Markdown table here")
    be.set_defaults(func=cmd_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
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
