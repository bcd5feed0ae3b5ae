"""``pyro-lvae train``: one variant on the artificial problem or images into a run folder;
``--resume DIR`` continues a run, ``--devices N`` trains data-parallel under torchrun."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import pyro
import torch.distributed as dist

from .. import __version__
from ..annealing import parse_schedule
from ..datasets import IMAGE_DATASETS, PIXEL_TRANSFORMS
from ..errors import CheckpointError, ConfigError, LVAEError
from ..experiments.tasks import TASKS, build_observation
from ..geco import GECO
from ..observations import OBSERVATIONS, build, describe, initial_scale, settings_of
from ..training import (
    BEST_NAME,
    CHECKPOINT_NAME,
    AveragedWeights,
    Checkpoints,
    Checks,
    ClipGradNorm,
    HeldOutEvaluation,
    History,
    LRSchedule,
    ProgressBar,
    Tool,
    fit,
    parse_average,
    resolve_device,
)
from ..training.checkpoint import (
    CONFIG_NAME,
    RUN_FORMAT,
    check_best,
    checkpoint_identity,
    config_differences,
    load_checkpoint,
    marker_of,
    new_run_id,
    resume_identity,
    run_identity,
)
from ..training.distributed import check_launch, init_from_env, rank_info
from ..training.records import RunClock
from ..training.schedules import check_schedule
from ..vae import COLLAPSE_NATS, VAE
from .options import (
    DEFAULT_BETA,
    MAX_SEED,
    add_beta_nll_option,
    add_count_options,
    add_device,
    add_network_options,
    add_observation_options,
    add_out,
    add_prior_options,
    add_quiet,
    add_seed,
    add_training_options,
    add_training_tools,
    observation_flag_settings,
    prior_settings,
)
from .output import check_folder_name, check_log_folder, finite_or_none, write_json

#: held-out KL per data point (nats) below which a trained model counts as collapsed
COLLAPSED_KL = COLLAPSE_NATS

#: the averaged model of a run with --average, beside checkpoint.pt
AVERAGED_NAME = "averaged.pt"

#: the files of a run folder besides the task's figures (and the files of a tabular model,
#: which a new run refuses too)
_RUN_FILES = (CONFIG_NAME, CHECKPOINT_NAME, "history.csv", "summary.json", BEST_NAME,
              AVERAGED_NAME)
_TABULAR_FILES = ("model.pt", "transform.json")

#: the flags that start several processes; the launcher leaves them out of the workers' command
_LAUNCH_FLAGS = ("--devices", "--num-nodes", "--node-rank", "--master-addr", "--master-port")

#: the flags --resume takes: the run's new length, where its data lie, how it is run; the
#: model and training settings are the run's own (config.json)
_RESUME_FLAGS = ("--resume", "--steps", "--epochs", "--device", "--quiet", "--tensorboard",
                 "--data-root", "--download", "--num-workers", *_LAUNCH_FLAGS)


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``train``."""
    train = sub.add_parser("train", help="train one variant into a run folder",
                           description="Train one VAE variant on the artificial problem or on "
                           "images. Writes config.json, history.csv, checkpoint.pt, "
                           "summary.json and figures into --out (and best.pt with "
                           "--eval-every, averaged.pt with --average).")
    _add_model_flags(train)
    _add_fit_flags(train)
    _add_image_flags(train)
    _add_run_flags(train)
    train.set_defaults(func=cmd_train, train_flags=tuple(
        flag for action in train._actions for flag in action.option_strings))


def _add_model_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument("--dataset", default="manifold2d",
                       help=f"data: {', '.join(TASKS)} (default manifold2d)")
    obs = train.add_argument_group("observation model")
    # the order of the help text; kinds registered elsewhere follow
    order = ("fixed", "learned-scalar", "learned-channel", "learned-vector", "scheduled",
             "bernoulli", "continuous-bernoulli", "calibrated", "student-t", "low-rank",
             "discretized-normal", "discretized-logistic", "discretized-logistic-mixture",
             "poisson", "negative-binomial", "zero-inflated-nb")
    not_tables = sorted((k for k in OBSERVATIONS if "schema" not in settings_of(k)),
                        key=lambda k: order.index(k) if k in order else len(order))
    obs.add_argument("--obs", default="learned-scalar", choices=not_tables,
                     help="observation model: fixed (F-VAE; MSE training is a fixed sigma), "
                          "learned-scalar (LS-VAE), learned-channel (a sigma per channel or "
                          "column), learned-vector (LV-VAE: a sigma per dimension or pixel "
                          "from the decoder; see --beta-nll), scheduled (fixed sigma on a "
                          "recorded trajectory), bernoulli (binary data), continuous-bernoulli "
                          "(data in [0, 1]), calibrated (sigma-VAE: sigma = the batch's RMSE), "
                          "student-t, low-rank (a rank-2 covariance factor from the decoder), "
                          "discretized-normal, discretized-logistic, "
                          "discretized-logistic-mixture (8-bit images; see "
                          "docs/observations.md), poisson, negative-binomial, "
                          "zero-inflated-nb (counts: see --dispersion, --count-mean) "
                          "(default learned-scalar)")
    add_observation_options(
        train, group=obs, min_scale=None,
        notes={"min_scale": "default 1e-3 for points, 0.01 for images"},
        sigma_text="fixed sigma (fixed, default 1) or initial sigma (learned-*, default: half "
                   "the training data's spread, measured on 10000 points or the first 10000 "
                   "images; 1 is the paper's start)")
    add_beta_nll_option(obs)
    add_count_options(obs)
    obs.add_argument("--sigma-from", metavar="RUN", default=None,
                     help="a run folder or history.csv of a learned-sigma run: with --obs "
                          "fixed, fix sigma at its final value (F*-VAE); with --obs "
                          "scheduled, replay its sigma trajectory")
    add_prior_options(train)
    net = add_network_options(train, hidden=200, blocks=None, latent_dim=None, notes={
        "latent_dim": "default 2 for points, 256 for 28x28 images, 2048 for CelebA",
        "hidden": "points; default 200", "blocks": "default 4; 5 for CelebA"})
    net.add_argument("--width", type=int, default=32,
                     help="images: channels after the first convolution (default 32)")
    net.add_argument("--convs", type=int, default=None,
                     help="images: convolutions in the encoder (default 3; 4 for CelebA)")


def _add_fit_flags(train: argparse.ArgumentParser) -> None:
    fitting = add_training_options(
        train, steps=None, steps_text="total steps", batch_size=None, beta=DEFAULT_BETA, notes={
            "steps": "default 5000 for points; images: --epochs",
            "batch_size": "default 100 for points, 128 for images",
            "beta_schedule": f"default {DEFAULT_BETA}: a mild warm-up that keeps learned sigmas "
                             "out of the collapsed start; 1 is the paper's plain ELBO"})
    fitting.add_argument("--epochs", type=int, default=None,
                         help="images: passes over the training set (default 10)")
    fitting.add_argument("--checkpoint-every", type=int, default=None,
                         help="steps between checkpoints (default: every epoch for images, "
                              "1000 steps for points)")
    fitting.add_argument("--geco", type=float, metavar="TARGET", default=None,
                         help="GECO (Rezende & Viola 2018): instead of --beta-schedule, a KL "
                              "weight 1/lambda whose multiplier lambda keeps the reconstruction "
                              "loss (nats per data point) at or below TARGET")
    fitting.add_argument("--geco-rate", type=float, default=None,
                         help="with --geco: the multiplier's step per training step (default "
                              "1e-2)")
    fitting.add_argument("--on-divergence", choices=("stop", "rollback"), default="stop",
                         help="when the loss turns NaN/Inf: stop with a diagnosis (default), or "
                              "roll back to the last good check and halve the learning rate (at "
                              "most 3 times)")
    add_training_tools(train, notes={
        "eval_every": "default: off; the validation set is 1000 fresh points, or, for "
                      "images, the last --validation-images training images, held out of "
                      "training (the test split stays for summary.json)"})


def _default_pixels(variant: Any) -> str:
    """binarize for binary models, unit-levels (k/255) for models of 8-bit levels, else
    dequantize."""
    if variant.binary:
        return "binarize"
    return "unit-levels" if variant.discrete else "dequantize"


def _add_image_flags(train: argparse.ArgumentParser) -> None:
    images = train.add_argument_group("images")
    images.add_argument("--pixels", choices=PIXEL_TRANSFORMS, default=None,
                        metavar="{" + ",".join(PIXEL_TRANSFORMS) + "}",
                        help="how pixels become data: dequantize ((k + u)/256, the default), "
                             "unit-levels (the 8-bit levels k/255, no noise; default for the "
                             "discretised models; its former name scale still works), "
                             "binarize (default for bernoulli)")
    images.add_argument("--data-root", default="data",
                        help="folder holding MNIST/, FashionMNIST/ or celeba/ (default ./data)")
    images.add_argument("--download", action="store_true",
                        help="download missing files (needs a network)")
    images.add_argument("--num-workers", type=int, default=2,
                        help="DataLoader worker processes for CelebA (default 2)")
    images.add_argument("--eval-images", type=int, default=2000,
                        help="held-out images for the ELBO (default 2000)")
    images.add_argument("--validation-images", type=int, default=None,
                        help="with --eval-every: the last N training images, held out of "
                             "training, on which the best weights are selected (default 5000, "
                             "at most a tenth of the training set)")
    images.add_argument("--iwae-images", type=int, default=256,
                        help="held-out images for the IWAE bound (default 256)")
    images.add_argument("--iwae-samples", type=int, default=100,
                        help="importance samples per image (default 100)")


def _add_run_flags(train: argparse.ArgumentParser) -> None:
    run = train.add_argument_group("run")
    add_out(run, "run folder to create")
    run.add_argument("--resume", metavar="DIR", default=None,
                     help="continue the run in DIR from its last checkpoint with the settings "
                          "in its config.json; --steps (or, for images, --epochs) sets a new "
                          "total; --device, --data-root and how the run is shown or started "
                          "may change; other flags must repeat the run's settings")
    add_device(run)
    add_seed(run)
    add_quiet(run)
    run.add_argument("--tensorboard", metavar="DIR", default=None,
                     help="log losses, sigma and image grids for TensorBoard into DIR (needs "
                          "the tensorboard package)")
    par = train.add_argument_group("several processes (data-parallel, started with torchrun)")
    par.add_argument("--devices", type=int, default=1,
                     help="processes per machine for data-parallel training (one per GPU; on a "
                          "CPU, processes sharing its cores)")
    par.add_argument("--num-nodes", type=int, default=1,
                     help="machines taking part (run the same command on each)")
    par.add_argument("--node-rank", type=int, default=0,
                     help="this machine's index, 0 .. --num-nodes - 1")
    par.add_argument("--master-addr", default="127.0.0.1",
                     help="address of machine 0 (several machines)")
    par.add_argument("--master-port", type=int, default=29500,
                     help="port on machine 0 (several machines)")


def cmd_train(args: argparse.Namespace) -> int:
    """Train (or resume) one run; with ``--devices``/``--num-nodes`` above 1, start the
    processes under torchrun, or be one of them."""
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


def _launch(args: argparse.Namespace) -> int:
    """Run this same command under torchrun, on --devices processes per machine."""
    from torch.distributed.run import main as torchrun

    from ..training.distributed import torchrun_argv

    command, it = [], iter(args.argv)
    for a in it:
        if a.split("=")[0] in _LAUNCH_FLAGS:
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


def _check_new_run(args: argparse.Namespace) -> None:
    """Refuse, before anything is written, a new run whose folder holds files it would
    replace (a run's, a tabular model's or anyone's)."""
    if args.out is None:
        raise ConfigError("give --out DIR (the run folder to write) or --resume DIR")
    check_folder_name(args.out, "--out")
    check_log_folder(args.tensorboard, "--tensorboard")
    run = Path(args.out)
    if run.exists() and not run.is_dir():
        raise ConfigError(f"--out {run} is a file; give the folder to write the run into")
    task = TASKS.get(args.dataset)
    figures = task.figures if task else {f for t in TASKS.values() for f in t.figures}
    taken = [n for n in (*_RUN_FILES, *figures, *_TABULAR_FILES) if (run / n).exists()]
    if not taken:
        return
    if any(n in _TABULAR_FILES for n in taken):
        raise ConfigError(f"{run} holds a model of pyro-lvae tabular fit ({', '.join(taken)}); "
                          f"choose another --out")
    if CHECKPOINT_NAME in taken:
        raise ConfigError(f"{run} already holds a run; continue it with --resume {run} or "
                          f"choose another --out")
    raise ConfigError(f"{run} already holds {', '.join(taken)}, which a new run would replace; "
                      f"choose another --out (a new or empty folder)")


def _train(args: argparse.Namespace, rank: int, check: bool) -> int:
    if args.resume is not None:
        run, settings, vae, identity = _resumed_run(args, rank)
    else:
        if check:
            _check_new_run(args)
        run, settings, vae = _new_run(args, rank)
        identity = {"kind": "train", "id": settings["run_id"]}
    created = not run.exists()
    try:
        with run_identity(identity["kind"], identity["id"]):
            summary = _train_run(vae, run, settings, resume=args.resume is not None,
                                 progress=not args.quiet, tensorboard=args.tensorboard,
                                 rank=rank, identity=identity)
    except BaseException:
        if args.resume is None and rank == 0:
            _undo_new_run(run, settings["run_id"], created)
        raise
    if rank != 0:
        return 0
    print(_format_summary(settings["obs"], summary))
    for line in _tool_lines(summary):
        print(line)
    note = collapse_note(settings["obs"], summary)
    if note:
        print(f"warning: {note}", file=sys.stderr)
    files = ["config.json", "history.csv", CHECKPOINT_NAME, "summary.json",
             *TASKS[settings["dataset"]].figures]
    files += [name for name in (BEST_NAME, AVERAGED_NAME) if (run / name).exists()]
    print(f"wrote {run}/: {' '.join(files)}")
    return 0


def _undo_new_run(run: Path, run_id: str, created: bool) -> None:
    """After a new run failed before its first checkpoint: remove its config.json (and the
    folder, if the run created it and it is empty), so that the run can be started again."""
    if (run / CHECKPOINT_NAME).exists() or (run / BEST_NAME).exists():
        return
    config = run / CONFIG_NAME
    try:
        if marker_of(json.loads(config.read_text())) == {"kind": "train", "id": run_id}:
            config.unlink()
        if created:
            run.rmdir()
    except (OSError, ValueError):
        pass


#: what config.json of a train run names (besides beta_schedule or geco), and for points or
#: images
_CONFIG_KEYS = ("dataset", "obs", "latent_dim", "blocks", "batch_size", "lr", "seed", "device")
_POINTS_KEYS = ("hidden", "steps")
_IMAGE_KEYS = ("width", "convs", "pixels", "data_root", "download", "num_workers",
               "eval_images", "iwae_images", "iwae_samples")


def _read_config(run: Path) -> dict[str, Any]:
    """A train run's config.json, checked: an object with the settings of a train run."""
    path = run / CONFIG_NAME
    try:
        settings = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{run} holds no config.json; is it a pyro-lvae run folder?"
                              ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}"
                              ) from None
    except json.JSONDecodeError:
        raise CheckpointError(f"{path} is corrupt") from None
    if not isinstance(settings, dict):
        raise CheckpointError(f"{path} holds a JSON {type(settings).__name__}, not the settings "
                              f"of a pyro-lvae train run")
    marker = marker_of(settings)
    if marker is not None:
        resume_identity(run, "train", marker, marker)  # refuses a folder of another kind
    images = settings.get("dataset", "manifold2d") in IMAGE_DATASETS
    missing = [k for k in (*_CONFIG_KEYS, *(_IMAGE_KEYS if images else _POINTS_KEYS))
               if k not in settings]
    if "geco" not in settings and "beta_schedule" not in settings:
        missing.append("beta_schedule")
    if images and "steps" not in settings and "epochs" not in settings:
        missing.append("epochs")
    if missing:
        raise CheckpointError(f"{path} names no {', '.join(missing)}: it is not the settings of "
                              f"a pyro-lvae train run (or was edited); restore the run's own")
    seed = settings["seed"]
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)
                             or not 0 <= seed <= MAX_SEED):
        raise CheckpointError(f"{path}: seed is {seed!r}, not a whole number from 0 to "
                              f"{MAX_SEED}")
    if settings["dataset"] not in TASKS:
        raise CheckpointError(f"{path}: unknown dataset {settings['dataset']!r}; expected one "
                              f"of {', '.join(TASKS)}")
    if settings["obs"] not in OBSERVATIONS:
        raise CheckpointError(f"{path}: unknown observation model {settings['obs']!r}")
    for name in ("latent_dim", "blocks", "batch_size", "steps", "epochs", "hidden", "width",
                 "convs", "checkpoint_every", "eval_every"):
        value = settings.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            raise CheckpointError(f"{path}: {name} is {value!r}, not a whole number >= 1")
    lr = settings["lr"]
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise CheckpointError(f"{path}: lr is {lr!r}, not a number > 0")
    return settings


def _check_same_model(settings: dict[str, Any], model: Any, path: Path) -> None:
    """Refuse a model (a saved model's dictionary, or a checkpoint's ``model`` entry) that is
    not the one config.json describes (observation model, prior, network sizes)."""
    try:
        saved = json.loads(model["config"])
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(f"{path} holds no model configuration to check against "
                              f"config.json") from None
    args = saved.get("args") or {}
    own_args = {"latent_dim": settings["latent_dim"], "blocks": settings["blocks"]}
    for name in ("hidden", "width", "convs"):
        if settings.get(name) is not None:
            own_args[name] = settings[name]
    own = {"builder": saved.get("builder"), "args": {k: v for k, v in own_args.items()
                                                     if k in args},
           "observation": {**(settings.get("observation") or {}), "kind": settings["obs"]},
           "prior": settings.get("prior") or {"kind": "normal"}}
    differences = config_differences(own, saved)
    if differences:
        raise CheckpointError(f"{path} holds another model than {CONFIG_NAME} describes: "
                              f"{'; '.join(differences)}; it is not this run's {path.name}")


def _check_averaged(run: Path, settings: dict[str, Any]) -> None:
    """Refuse to resume where averaged.pt is not a readable model of this run's
    configuration (the resume would replace it)."""
    path = run / AVERAGED_NAME
    if not path.exists():
        return
    try:
        averaged = VAE.load(path, map_location="cpu")
    except CheckpointError as e:
        raise CheckpointError(f"{e}; move it away to resume (the resume writes the averaged "
                              f"model again)") from None
    _check_same_model(settings, averaged.to_file_dict(), path)


def _resumed_run(args: argparse.Namespace, rank: int
                 ) -> tuple[Path, dict[str, Any], VAE, dict[str, str]]:
    """The run folder of ``--resume``, its settings (config.json), its last checkpoint and
    the run's identity, everything read and checked before anything is written."""
    run = Path(args.resume)
    if run.is_file():
        inside = run.parent if run.name in (*_RUN_FILES, "model.pt") else None
        fix = f"--resume {inside}" if inside is not None else "the run folder"
        raise ConfigError(f"--resume takes a run folder, and {run} is a file; give {fix}")
    if not run.is_dir():
        raise CheckpointError(f"no such run folder: {run}")
    check_log_folder(args.tensorboard, "--tensorboard")
    settings = _read_config(run)
    if not (run / CHECKPOINT_NAME).exists():
        raise CheckpointError(f"{run} holds no {CHECKPOINT_NAME} to resume from")
    given = _given_flags(getattr(args, "argv", ()), getattr(args, "train_flags", ()))
    ignored = [f for f in given if f not in _RESUME_FLAGS and not _same(f, args, settings)]
    if ignored:
        them = "it" if len(ignored) == 1 else "them"
        takes = ", ".join(_RESUME_FLAGS[1:])
        raise ConfigError(
            f"--resume continues {run} with the settings in its config.json, so "
            f"{', '.join(ignored)} would be ignored (not the run's own); remove {them} "
            f"(--resume takes {takes}), or start a new run with --out")
    images = settings["dataset"] in IMAGE_DATASETS
    if args.epochs is not None and not images:
        raise ConfigError("--epochs is for image runs; give the total --steps to continue a run "
                          "on points")
    if args.steps is not None:
        settings["steps"] = args.steps
    elif args.epochs is not None:
        settings.update(steps=None, epochs=args.epochs)
    for flag in ("--data-root", "--num-workers", "--download"):
        if images and flag in given:
            name = flag[2:].replace("-", "_")
            settings[name] = getattr(args, name)
    if "--device" in given or rank != 0 or args.devices > 1 or args.num_nodes > 1:
        settings["device"] = args.device
    resolve_device(settings["device"])
    path = run / CHECKPOINT_NAME
    blob = load_checkpoint(path)
    identity = resume_identity(run, "train", marker_of(settings), checkpoint_identity(blob))
    _check_same_model(settings, blob["model"], path)
    check_best(run, identity)
    _check_averaged(run, settings)
    return run, settings, VAE.from_file_dict(blob, str(path)), identity


#: how a flag's value is saved in config.json, where that differs from the value itself
_SAVED_FORMS = {
    "prior": lambda a, s: (s.get("prior") or {"kind": "normal"}).get("kind") == a.prior,
    "prior_components": lambda a, s: (s.get("prior") or {}).get("components")
    == a.prior_components,
    "prior_layers": lambda a, s: (s.get("prior") or {}).get("layers") == a.prior_layers,
    "average": lambda a, s: _spec(parse_average, a.average) == s.get("average"),
    "pixels": lambda a, s: s.get("pixels") is not None and _spec(
        PIXEL_TRANSFORMS.resolve, a.pixels) == PIXEL_TRANSFORMS.resolve(s["pixels"], warn=False),
    "geco": lambda a, s: _geco_spec(a) == s.get("geco"),
    "geco_rate": lambda a, s: _geco_spec(a) == s.get("geco"),
    "beta_nll": lambda a, s: "beta_nll" in settings_of(s["obs"]) and a.beta_nll == (
        s.get("observation") or {}).get("beta_nll", 0.0),
    "sigma": lambda a, s: a.sigma is not None and a.sigma in (
        (s.get("observation") or {}).get("scale"), (s.get("observation") or {}).get(
            "init_scale")),
}


def _spec(parse: Any, value: Any) -> Any:
    """``value`` parsed (its saved form), or a value that matches nothing if it is invalid."""
    try:
        out = parse(value)
    except (LVAEError, ValueError, TypeError):  # an invalid value repeats nothing
        return object()
    return out.spec() if hasattr(out, "spec") else out


def _geco_spec(args: argparse.Namespace) -> Any:
    if args.geco is None:
        return object()
    rate = 1e-2 if args.geco_rate is None else args.geco_rate
    return _spec(lambda target: GECO(target, rate=rate), args.geco)


def _same(flag: str, args: argparse.Namespace, settings: dict[str, Any]) -> bool:
    """Whether ``flag`` repeats the run's own setting (the command that started the run, given
    again with --resume), compared in the form config.json saves it in."""
    name = flag[2:].replace("-", "_")
    if name in _SAVED_FORMS:
        return bool(_SAVED_FORMS[name](args, settings))
    return name in settings and getattr(args, name, None) == settings[name]


def _given_flags(argv: Any, flags: Any) -> list[str]:
    """The long flags in ``argv``, once each and spelled in full (argparse also takes a
    flag's unique prefix)."""
    given = []
    for token in argv:
        if not token.startswith("--") or token == "--":
            continue
        name = token.split("=")[0]
        given.append(name if name in flags else next(
            (f for f in flags if f.startswith(name)), name))
    return list(dict.fromkeys(given))


def _new_run(args: argparse.Namespace, rank: int) -> tuple[Path, dict[str, Any], VAE]:
    """A new model from the command line, and its run folder holding config.json."""
    run = Path(args.out)
    if args.dataset not in TASKS:
        raise ConfigError(f"unknown dataset {args.dataset!r}; expected one of "
                          f"{', '.join(TASKS)}")
    task = TASKS[args.dataset]
    settings = _train_settings(args, task)
    _beta(settings)
    resolve_device(args.device)
    pyro.set_rng_seed(args.seed)  # the initial weights
    history = _run_history(args.sigma_from) if args.sigma_from is not None else None
    sigma = args.sigma
    takes = settings_of(args.obs)
    extra = observation_flag_settings(args, args.obs, takes)
    if getattr(OBSERVATIONS[args.obs], "counts", False):  # theta starts from the data itself
        if sigma is not None or history is not None:
            raise ConfigError(f"--sigma and --sigma-from do not apply to --obs {args.obs}; "
                              f"--dispersion sets theta")
        observation = build(args.obs, **extra)
    else:
        if sigma is None and describe(args.obs).learned:
            sigma = _data_scaled_start(task, settings, say=rank == 0 and not args.quiet)
        observation = build_observation(args.obs, sigma, settings["min_scale"],
                                        task.channels(settings), history, **extra)
    settings["observation"] = observation.config()
    vae = task.build(settings, observation)
    return run, settings, vae


def _run_history(source: str) -> History:
    path = Path(source)
    return History.from_csv(path / "history.csv" if path.is_dir() else path)


def _train_settings(args: argparse.Namespace, task) -> dict[str, Any]:
    """The run's settings from the command line and the task's defaults (saved as
    config.json; --resume reads them back)."""
    d = task.defaults

    def given(value, name):  # 0 is a value the user gave (and will be refused), not "unset"
        return d[name] if value is None else value

    s = {
        "format": RUN_FORMAT, "kind": "train", "run_id": new_run_id(),
        "version": __version__, "dataset": args.dataset, "obs": args.obs,
        "latent_dim": given(args.latent_dim, "latent_dim"), "blocks": given(args.blocks, "blocks"),
        "batch_size": given(args.batch_size, "batch_size"), "steps": args.steps,
        "lr": args.lr, "beta_schedule": args.beta_schedule, "device": args.device,
        "seed": args.seed, "checkpoint_every": args.checkpoint_every,
        "on_divergence": args.on_divergence, "min_scale": given(args.min_scale, "min_scale"),
        **_tool_settings(args),
        "prior": prior_settings(args),
    }
    if args.geco is None and args.geco_rate is not None:
        raise ConfigError("--geco-rate sets the step of GECO's multiplier and applies only with "
                          "--geco TARGET; add --geco or remove --geco-rate")
    if args.geco is not None:
        if args.beta_schedule != DEFAULT_BETA:
            raise ConfigError("give either --geco (a KL weight that follows a reconstruction "
                              "target) or --beta-schedule, not both")
        rate = 1e-2 if args.geco_rate is None else args.geco_rate
        s.update(geco=GECO(args.geco, rate=rate).spec(), beta_schedule=None)
    if args.dataset not in IMAGE_DATASETS:  # points and counts
        s.update(hidden=args.hidden, steps=given(args.steps, "steps"))
    else:
        s.update(width=args.width, convs=given(args.convs, "convs"),
                 epochs=given(args.epochs, "epochs"),
                 pixels=PIXEL_TRANSFORMS.resolve(args.pixels or
                                                 _default_pixels(describe(args.obs))),
                 data_root=args.data_root, download=args.download,
                 num_workers=args.num_workers, eval_images=args.eval_images,
                 iwae_images=args.iwae_images, iwae_samples=args.iwae_samples,
                 validation_images=_validation_images(args))
    for name in ("latent_dim", "batch_size", "steps", "epochs", "eval_images", "iwae_images",
                 "iwae_samples", "width", "convs", "hidden", "checkpoint_every"):
        if s.get(name) is not None and s[name] < 1:
            raise ConfigError(f"Expected --{name.replace('_', '-')} >= 1 but got {s[name]}")
    return s


def _validation_images(args: argparse.Namespace) -> int | None:
    """The training images held out for ``--eval-every`` (0 without it): ``--validation-images``,
    or ``None``: the task's default (5000, at most a tenth of the training set), decided when
    the data are read and saved in config.json then."""
    if args.validation_images is not None:
        if args.eval_every is None:
            raise ConfigError("--validation-images holds out training images for --eval-every; "
                              "add --eval-every STEPS or remove --validation-images")
        if isinstance(args.validation_images, bool) or args.validation_images < 1:
            raise ConfigError(f"Expected --validation-images >= 1 but got "
                              f"{args.validation_images}")
        return args.validation_images
    return 0 if args.eval_every is None else None


def _tool_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The training tools of the command line (:func:`pyro_lvae.fit`'s), checked."""
    if args.clip_grad_norm is not None and not args.clip_grad_norm > 0:
        raise ConfigError(f"Expected --clip-grad-norm > 0 but got {args.clip_grad_norm}")
    if args.eval_every is not None and args.eval_every < 1:
        raise ConfigError(f"Expected --eval-every >= 1 but got {args.eval_every}")
    if args.lr_warmup < 0:
        raise ConfigError(f"Expected --lr-warmup >= 0 but got {args.lr_warmup}")
    check_schedule(args.lr_schedule, args.lr_warmup)
    average = parse_average(args.average)
    return {"clip_grad_norm": args.clip_grad_norm, "lr_schedule": args.lr_schedule,
            "lr_warmup": args.lr_warmup, "eval_every": args.eval_every,
            "average": None if average is None else average.spec()}


class _RunConfig(Tool):
    """Writes the run's config.json (rank 0) once :func:`~pyro_lvae.fit` has checked the run
    folder, the device, the first batch and, on resume, restored the checkpoint: a run refused
    before that leaves its folder as it was. A resumed run's config.json gets its new totals
    for the next resume."""

    order = 0

    def __init__(self, settings: dict[str, Any], path: Path) -> None:
        self.settings_, self.path = settings, path

    def on_train_start(self, run: Any) -> None:
        if run.rank == 0:
            write_json(self.settings_, self.path)


def _train_run(vae: VAE, run: Path, settings: dict[str, Any], resume: bool,
               progress: bool = True, tensorboard: str | None = None,
               rank: int = 0, identity: dict[str, str] | None = None) -> dict[str, Any]:
    task = TASKS[settings["dataset"]]
    data, transform, steps, per_epoch = task.data(settings)
    record = dict(settings)  # config.json: the totals as given, for the next resume
    settings["steps"] = steps
    tools = training_tools(settings, task, per_epoch, progress, tensorboard, rank)
    with RunClock() as clock:
        history = fit(vae, data, steps=steps, batch_size=settings["batch_size"],
                      lr=settings["lr"], beta=_beta(settings), transform=transform,
                      tools=[*tools, _RunConfig(record, run / CONFIG_NAME)],
                      device=settings["device"], seed=settings["seed"], out=run,
                      resume=resume)
    if rank != 0:  # rank 0 evaluates and writes; the others wait for it
        dist.barrier()
        return {}
    if marker_of(record) is None and identity is not None:  # a run of an earlier version,
        record = {"format": RUN_FORMAT, "kind": "train", "run_id": identity["id"],  # resumed
                  **record}
        write_json(record, run / CONFIG_NAME)
    history.to_csv(run / "history.csv")
    summary = task.report(vae, history, run, settings)
    world = rank_info()[1]
    summary.update(steps=len(history), processes=world, **clock.record(vae.device))
    summary.update(_tool_results(task, history, run, settings))
    write_json(summary, run / "summary.json")
    if world > 1:
        dist.barrier()
    return summary


def training_tools(settings: dict[str, Any], task: Any, per_epoch: int | None,
                   progress: bool, tensorboard: str | None, rank: int) -> list[Tool]:
    """The run's training tools (:mod:`pyro_lvae.training.tools`), from its settings (the
    command line's flags, or a resumed run's config.json): the one place where those flags
    become objects."""
    tools: list[Tool] = [
        Checks(on_divergence=settings.get("on_divergence", "stop")),
        Checkpoints(settings.get("checkpoint_every") or per_epoch or 1000),
        ProgressBar(progress),
    ]
    if settings.get("clip_grad_norm") is not None:
        tools.append(ClipGradNorm(settings["clip_grad_norm"]))
    if settings.get("lr_schedule") is not None or settings.get("lr_warmup"):
        tools.append(LRSchedule(settings.get("lr_schedule"), settings.get("lr_warmup", 0)))
    if settings.get("average") is not None:
        tools.append(AveragedWeights(settings["average"]))
    if settings.get("eval_every") is not None:
        tools.append(HeldOutEvaluation(task.validation(settings), settings["eval_every"]))
    if tensorboard and rank == 0:
        from ..training.tensorboard import TensorBoardCallback

        tools.append(TensorBoardCallback(tensorboard))
    return tools


def _tool_results(task, history: History, run: Path, settings: dict[str, Any]
                  ) -> dict[str, Any]:
    """The averaged model (saved as averaged.pt, evaluated like the raw one) and the best
    held-out evaluation, for the summary."""
    out: dict[str, Any] = {}
    if history.averaged is not None:
        history.averaged.save(run / AVERAGED_NAME)
        out["averaged"] = finite_or_none(task.evaluate(history.averaged, settings))
    if history.best is not None:
        out["best"] = {"step": int(history.best["step"]),
                       "validation_elbo": history.best["elbo"], "file": BEST_NAME}
        if "target" in history.best:  # a GECO run: chosen among those that meet its target
            out["best"].update(validation_reconstruction=history.best["reconstruction"],
                               reconstruction_target=history.best["target"],
                               target_met=history.best["met"])
        if (run / BEST_NAME).exists():  # the selected weights, on the summary's test images
            best = VAE.load(run / BEST_NAME, map_location=resolve_device(settings["device"]))
            out["best"].update(finite_or_none(task.evaluate(best, settings)))
    return out


def _beta(settings: dict[str, Any]) -> Any:
    """The run's KL weight: its GECO (a new one; fit restores its state on resume) or its
    schedule."""
    spec = settings.get("geco")
    return parse_schedule(spec if spec is not None else settings["beta_schedule"])


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


def _tool_lines(s: dict[str, Any]) -> list[str]:
    """What the averaged model and the best checkpoint scored (when the run kept them)."""
    lines = []
    if "averaged" in s:
        a = s["averaged"]
        value = a.get("elbo", a.get("elbo_nats"))
        lines.append(f"averaged model ({AVERAGED_NAME}): held-out ELBO {value:.4g} nats per "
                     f"data point")
    if "best" in s:
        b = s["best"]
        lines.append(f"best model ({BEST_NAME}): validation ELBO {b['validation_elbo']:.4g} "
                     f"nats per data point at step {b['step']}")
    return lines


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
    if getattr(OBSERVATIONS[obs], "counts", False):
        return head + ("learn the inverse dispersion (--dispersion learned or decoder; a small "
                       "fixed theta calls every count noise) or keep a KL warm-up "
                       "(--beta-schedule linear:1000:0.5:1); see docs/counts.md")
    if variant.constant:
        return head + "train again with a smaller --sigma, or learn it (--obs learned-scalar)"
    if variant.learned:
        return head + ("start sigma lower (--sigma; the default, half the data's spread, "
                       "never collapsed in our runs), keep a KL warm-up (--beta-schedule "
                       "linear:1000:0.5:1), or try --obs learned-vector; see "
                       "docs/reproduction.md, 'The collapsed start'")
    return head + "a KL warm-up (--beta-schedule linear:1000:0.5:1) may free it"
