"""Training checkpoints: written atomically by rank 0, loadable with
``torch.load(weights_only=True)``, holding the model, the optimiser, the history, the batches'
position and every rank's random states, so that ``fit(..., resume=True)`` continues a run
exactly where it stopped (with another number of processes, from fresh random streams).

A run folder is marked as such: every checkpoint carries the run's identity (``run``: the kind
of run that wrote it, ``train``, ``tabular`` or ``fit``, and a random id), and the folder's
``config.json``, where a command writes one, carries the same (``format``
:data:`RUN_FORMAT`, ``kind``, ``run_id``). :func:`prepare_folder` refuses, before anything is
written, a new run in a folder that already holds one, and a resume from a checkpoint of another
run or another kind of run, or from a damaged checkpoint or ``best.pt``."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import math
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import torch

from ..errors import CheckpointError, ConfigError, LVAEError
from ..io import atomic_save, safe_load
from ..vae import _CHECKPOINT_FORMAT, VAE
from .batches import data_seed
from .distributed import gather_objects, rank_seed
from .history import History

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "CONFIG_NAME", "RUN_FORMAT", "RUN_KINDS",
           "RandomStreams", "prepare_folder", "save_checkpoint", "restore_checkpoint",
           "load_checkpoint_info", "load_checkpoint", "run_identity", "new_run_id",
           "marker_of", "read_marker", "checkpoint_identity", "resume_identity", "check_best",
           "check_checkpoint", "other_kind_error", "config_differences"]

logger = logging.getLogger(__name__)

#: the checkpoint of a run, in its folder, rewritten at every save
CHECKPOINT_NAME = "checkpoint.pt"
#: the best checkpoint by held-out ELBO (fit(..., heldout=...)), beside ``checkpoint.pt``
BEST_NAME = "best.pt"
#: the settings of a run folder written by a command (``pyro-lvae train``, ``tabular fit``)
CONFIG_NAME = "config.json"
#: the ``format`` entry of a run folder's ``config.json``
RUN_FORMAT = "pyro-lvae-run"
#: the kinds of run folder, by what wrote them
RUN_KINDS = {"train": "a run of pyro-lvae train", "tabular": "a model of pyro-lvae tabular fit",
             "fit": "a run of pyro_lvae.fit() in Python"}
#: what to do with a folder of each kind instead of writing into it
_KIND_HINTS = {"train": "continue it with pyro-lvae train --resume {folder}",
               "tabular": "sample from it with pyro-lvae tabular sample {folder}",
               "fit": "continue it with fit(..., out={folder!r}, resume=True)"}
#: the entries a training checkpoint cannot do without
_CHECKPOINT_KEYS = ("step", "model", "optimizer", "history", "rng", "batches")

#: the run identity that a command gives the checkpoints of the fit it runs (run_identity)
_EXPECTED: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "pyro_lvae_run_identity", default=None)


def new_run_id() -> str:
    """A new run's identity: 32 random hexadecimal digits."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def run_identity(kind: str, run_id: str) -> Iterator[dict[str, str]]:
    """Within the block, :func:`~pyro_lvae.fit` with ``out=`` writes its checkpoints as the run
    ``{"kind": kind, "id": run_id}`` (a command that writes its own files into the run folder
    names the run so) and refuses a folder of another run.

    :param str kind: one of :data:`RUN_KINDS`
    :param str run_id: the run's identity (:func:`new_run_id`; the one in its config.json)
    """
    identity = {"kind": kind, "id": run_id}
    token = _EXPECTED.set(identity)
    try:
        yield identity
    finally:
        _EXPECTED.reset(token)


def marker_of(config: Any) -> dict[str, str] | None:
    """The run identity ``{"kind", "id"}`` that a run folder's parsed ``config.json`` carries,
    or ``None`` (no marker: not a run folder's, or written by an earlier version)."""
    if not isinstance(config, dict) or config.get("format") != RUN_FORMAT:
        return None
    return {"kind": str(config.get("kind")), "id": str(config.get("run_id"))}


def read_marker(folder: Path) -> dict[str, str] | None:
    """The run identity of ``folder/config.json``; ``None`` if there is none or it cannot be
    read (then it is not a run folder's configuration)."""
    try:
        return marker_of(json.loads((folder / CONFIG_NAME).read_text()))
    except (OSError, ValueError):
        return None


def checkpoint_identity(blob: dict[str, Any]) -> dict[str, str] | None:
    """The run identity a loaded checkpoint carries; ``None`` for checkpoints written before
    run folders were marked."""
    run = blob.get("run")
    if isinstance(run, dict) and isinstance(run.get("kind"), str) and isinstance(
            run.get("id"), str):
        return {"kind": run["kind"], "id": run["id"]}
    return None


def _kind_text(kind: str) -> str:
    return RUN_KINDS.get(kind, f"a run of an unknown kind ({kind!r})")


def other_kind_error(folder: Path, kind: str, found: str, what: str) -> ConfigError:
    """The error for ``folder``, :data:`RUN_KINDS` ``[found]`` (``what`` says how that is
    known), used as a folder of ``kind``."""
    hint = _KIND_HINTS.get(found)
    fix = f"; {hint.format(folder=str(folder))}" if hint else ""
    return ConfigError(f"{folder} is {_kind_text(found)} ({what}), not "
                       f"{_kind_text(kind)}{fix}, or choose another folder")


def resume_identity(folder: Path, kind: str, marker: dict[str, str] | None,
                    found: dict[str, str] | None, new_id: str | None = None
                    ) -> dict[str, str]:
    """The identity of the run to resume in ``folder`` as a run of ``kind``, from its
    ``config.json``'s marker and its checkpoint's identity (either may be missing in folders
    written before runs were marked: the run takes ``new_id``, or a new one); a
    :class:`~pyro_lvae.errors.ConfigError` for another kind of run, a
    :class:`~pyro_lvae.errors.CheckpointError` for a checkpoint of another run."""
    if marker is not None and marker["kind"] != kind:
        raise other_kind_error(folder, kind, marker["kind"], f"its {CONFIG_NAME} says so")
    if found is not None and found["kind"] != kind:
        raise other_kind_error(folder, kind, found["kind"], f"its {CHECKPOINT_NAME} says so")
    if marker is not None and found is None:
        raise CheckpointError(
            f"{folder / CHECKPOINT_NAME} carries no run identity but {folder / CONFIG_NAME} "
            f"does: the checkpoint was not written by this run (copied from another folder?); "
            f"put the run's own {CHECKPOINT_NAME} back")
    if marker is not None and found is not None and marker["id"] != found["id"]:
        raise CheckpointError(
            f"{folder / CHECKPOINT_NAME} belongs to another run than {folder / CONFIG_NAME} "
            f"(run {found['id'][:8]}, the folder's {marker['id'][:8]}): it was copied from "
            f"another folder; put the run's own {CHECKPOINT_NAME} back")
    return marker or found or {"kind": kind, "id": new_id or new_run_id()}


def check_checkpoint(blob: dict[str, Any], path: Path) -> int:
    """Refuse a training checkpoint that lacks an entry or whose step is not between 0 and the
    run's total; return its step."""
    missing = [k for k in _CHECKPOINT_KEYS if k not in blob]
    if missing:
        raise CheckpointError(f"{path} is damaged: it lacks {', '.join(missing)}")
    step = blob["step"]
    if isinstance(step, bool) or not isinstance(step, int):
        raise CheckpointError(f"{path} is damaged: its step is {step!r}, not a whole number")
    try:
        total = json.loads(blob.get("fit") or "{}").get("steps")
    except (TypeError, ValueError, AttributeError):
        raise CheckpointError(f"{path} is damaged: its training settings are not JSON") from None
    if step < 0 or (isinstance(total, int) and step > total):
        raise CheckpointError(f"{path} is damaged: its step {step} is outside 0..{total}, the "
                              f"steps of the run that wrote it")
    return step


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """A training checkpoint read on the CPU and checked (:func:`check_checkpoint`)."""
    blob = _load_blob(path, "cpu")
    check_checkpoint(blob, Path(path))
    return blob


def check_best(folder: Path, identity: dict[str, str] | None) -> None:
    """Refuse to resume a run whose ``best.pt`` cannot be read, is not a training checkpoint
    or belongs to another run: a resume would keep it and announce it as the best model."""
    path = folder / BEST_NAME
    if not path.exists():
        return
    fix = ("; move it away to resume (the best model is then chosen among the evaluations "
           "still to come)")
    try:
        blob = _load_blob(path, "cpu")
        check_checkpoint(blob, path)
    except CheckpointError as e:
        raise CheckpointError(f"{e}: the run's best model is lost{fix}") from None
    found = checkpoint_identity(blob)
    if found is not None and identity is not None and found != identity:
        raise CheckpointError(f"{path} belongs to another run (run {found['id'][:8]}, this "
                              f"one {identity['id'][:8]}){fix}")


#: observation and prior settings that are starts, measured on data or given, not the model
_STARTS = ("init_scale", "init_df")


def _named(part: Any, registry: Any) -> dict[str, Any]:
    """A configuration's dictionary with its ``kind`` by its registered name (a deprecated
    alias resolved)."""
    part = dict(part) if isinstance(part, dict) else {}
    if part.get("kind") in registry:
        part["kind"] = registry.resolve(part["kind"], warn=False)
    return part


def _part_differences(name: str, own: Any, saved: Any) -> list[str]:
    own = own if isinstance(own, dict) else {}
    saved = saved if isinstance(saved, dict) else {}
    out = []
    for key in sorted(set(own) & set(saved)):
        if key in _STARTS or own[key] is None or saved[key] is None:
            continue
        if own[key] != saved[key]:
            label = name if key == "kind" else f"{name} {key}"
            out.append(f"{label} {saved[key]!r} (expected {own[key]!r})")
    return out


def config_differences(own: dict[str, Any] | None, saved: dict[str, Any] | None) -> list[str]:
    """How the model configuration ``saved`` (a checkpoint's) differs from ``own`` (the run's):
    the builder, its sizes, the observation model and the prior, each ``"what saved
    (expected own)"``; empty when either is unknown or they agree (the starts of learned
    scales aside)."""
    if not isinstance(own, dict) or not isinstance(saved, dict):
        return []
    out = []
    if own.get("builder") != saved.get("builder"):
        return [f"network {saved.get('builder')!r} (expected {own.get('builder')!r})"]
    from ..observations import OBSERVATIONS
    from ..priors import PRIORS
    from ..vae import _OLD_DEFAULTS

    args = {**_OLD_DEFAULTS.get(str(saved.get("builder")), {}), **(saved.get("args") or {})}
    out += _part_differences("network", own.get("args"), args)
    out += _part_differences("observation", _named(own.get("observation"), OBSERVATIONS),
                             _named(saved.get("observation"), OBSERVATIONS))
    out += _part_differences("prior", _named(own.get("prior") or {"kind": "normal"}, PRIORS),
                             _named(saved.get("prior") or {"kind": "normal"}, PRIORS))
    return out


class RandomStreams:
    """The random streams of one rank: torch's global generator (the model's noise; CUDA's
    too), the data generator and, with several ranks, the shared shuffling generator."""

    def __init__(self, data: torch.Generator, shuffle: torch.Generator | None = None) -> None:
        self.data, self.shuffle = data, shuffle

    def state(self) -> dict[str, Any]:
        """Every stream's state (the checkpoint's ``rng`` entry of this rank)."""
        state = {"torch": torch.get_rng_state(), "data": self.data.get_state()}
        if self.shuffle is not None:
            state["shuffle"] = self.shuffle.get_state()
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue every stream from ``state``."""
        torch.set_rng_state(state["torch"])
        self.data.set_state(state["data"])
        if self.shuffle is not None and "shuffle" in state:
            self.shuffle.set_state(state["shuffle"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def reseed(self, seed: int | None, step: int, rank: int) -> None:
        """Fresh streams for ``rank`` derived from the run's seed and the step."""
        base = rank_seed((seed or 0) + step, rank)
        pyro.set_rng_seed(base)
        self.data.manual_seed(data_seed(base))
        if self.shuffle is not None:
            self.shuffle.manual_seed(data_seed((seed or 0) + step))


def _new_run_identity(folder: Path, expected: dict[str, str] | None) -> dict[str, str]:
    """A new run in ``folder``: refused where it would replace a run's files."""
    taken = [name for name in (CHECKPOINT_NAME, BEST_NAME) if (folder / name).exists()]
    if taken:
        raise ConfigError(f"{folder} already holds a run ({', '.join(taken)}): continue it "
                          f"with resume=True, or give out= another folder")
    marker = read_marker(folder)
    if marker is not None and marker != expected:
        if expected is None:
            raise other_kind_error(folder, "fit", marker["kind"], f"its {CONFIG_NAME} says so")
        raise ConfigError(f"{folder} holds the {CONFIG_NAME} of another run; choose another "
                          f"folder")
    return expected or {"kind": "fit", "id": new_run_id()}


def _resumed_identity(folder: Path, expected: dict[str, str] | None) -> dict[str, str]:
    """The run to resume in ``folder``: its checkpoint read and checked, and its identity,
    ``config.json``'s and the expected one (a command's) agreeing; ``best.pt`` readable."""
    blob = load_checkpoint(folder / CHECKPOINT_NAME)
    kind = "fit" if expected is None else expected["kind"]
    identity = resume_identity(folder, kind, read_marker(folder), checkpoint_identity(blob),
                               None if expected is None else expected["id"])
    if expected is not None and identity != expected:
        raise CheckpointError(f"{folder / CHECKPOINT_NAME} belongs to another run (run "
                              f"{identity['id'][:8]}, not {expected['id'][:8]})")
    check_best(folder, identity)
    return identity


def prepare_folder(out: str | os.PathLike | None, rank: int, resume: bool = False
                   ) -> tuple[Path | None, dict[str, str] | None]:
    """The checkpoint's path in ``out`` and the identity of the run (``None, None`` without a
    folder). Rank 0 checks the folder before anything is written (every rank raises its
    error): a new run is refused where a run's ``checkpoint.pt`` or ``best.pt`` would be
    replaced, or where ``config.json`` marks another run; a resume reads and checks the
    checkpoint, its run identity (against ``config.json``'s and, under :func:`run_identity`,
    the command's) and ``best.pt``. Rank 0 then creates the folder."""
    if out is None:
        return None, None
    folder = Path(out)
    outcome: Any = None
    if rank == 0:
        expected = _EXPECTED.get()
        try:
            if resume and (folder / CHECKPOINT_NAME).exists():
                outcome = _resumed_identity(folder, expected)
            else:
                outcome = _new_run_identity(folder, expected)
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise CheckpointError(f"cannot create output folder {folder}: "
                                      f"{e.strerror or e}") from None
        except LVAEError as e:
            outcome = e
    outcome = gather_objects(outcome)[0]
    if isinstance(outcome, LVAEError):
        raise outcome
    return folder / CHECKPOINT_NAME, outcome


def _remove_stale(folder: Path) -> None:
    """Remove the temporary files of checkpoint writes that were killed."""
    for stale in [p for name in (CHECKPOINT_NAME, BEST_NAME)
                  for p in folder.glob(f".{name}.*.tmp")]:
        stale.unlink(missing_ok=True)


def save_checkpoint(path: Path, step: int, vae: VAE, optimizer: Any, history: History,
                    streams: RandomStreams, batches: Any, settings: dict[str, Any],
                    rank: int = 0, world: int = 1, tools: dict[str, Any] | None = None,
                    identity: dict[str, str] | None = None) -> None:
    """Write the checkpoint of ``step`` to ``path`` (every rank calls; rank 0 writes every
    rank's random states); ``tools`` is the state of the run's optional tools
    (by :attr:`~pyro_lvae.training.Tool.state_key`), ``identity`` the run's
    (:func:`prepare_folder`). The temporary files of earlier writes that were killed go."""
    states = gather_objects(streams.state())
    if rank != 0:
        return
    _remove_stale(Path(path).parent)
    blob = {
        "format": _CHECKPOINT_FORMAT,
        "version": 1,
        "step": step,
        "model": vae.to_file_dict(),
        "optimizer": (optimizer.get_state() if isinstance(optimizer, pyro.optim.PyroOptim)
                      else optimizer.state_dict()),
        "history": history.state_dict(),
        "rng": states[0] if world == 1 else states,
        "batches": batches.state_dict(),
        "fit": json.dumps(settings),
        "tools": tools or {},
    }
    if identity is not None:
        blob["run"] = dict(identity)
    atomic_save(blob, path)


def _load_blob(path: str | os.PathLike, device: Any) -> dict[str, Any]:
    blob = safe_load(path, map_location=device)
    if not isinstance(blob, dict) or blob.get("format") != _CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a pyro-lvae training checkpoint")
    return blob


def restore_checkpoint(path: Path, vae: VAE, optimizer: Any, batches: Any,
                       streams: RandomStreams, device: Any, seed: int | None = None,
                       rank: int = 0, world: int = 1
                       ) -> tuple[int, History, dict[str, Any]]:
    """Load a checkpoint into the model, optimiser, batches and random streams; return its
    step, history and the state of the optional tools (empty in older checkpoints). A
    checkpoint of a model configured otherwise than ``vae`` (observation model, prior, sizes)
    is refused before anything is loaded. Where ``best.pt`` is missing, the best held-out
    evaluation starts afresh (with a WARNING)."""
    blob = _load_blob(path, device)
    check_checkpoint(blob, Path(path))
    model = blob["model"]
    saved = model.get("config") if isinstance(model, dict) else None
    own = vae.config and {**vae.config, "observation": vae.observation.config(),
                          "prior": vae.prior.config()}
    differences = config_differences(own, json.loads(saved) if saved else None)
    if differences:
        raise CheckpointError(f"{path} holds a model configured otherwise than the one to "
                              f"resume: {'; '.join(differences)}")
    vae.load_state(path)
    if isinstance(optimizer, pyro.optim.PyroOptim):
        optimizer.set_state(blob["optimizer"])
    else:
        try:
            optimizer.load_state_dict(blob["optimizer"])
        except (ValueError, KeyError) as e:
            raise CheckpointError(
                f"{path}: the optimiser state does not fit this model ({e})"
            ) from None
    batches.load_state_dict(blob["batches"])
    step = int(blob["step"])
    states = blob["rng"] if isinstance(blob["rng"], list) else [blob["rng"]]
    if len(states) == world:  # the same number of processes: continue exactly
        streams.set_state(states[rank])
    else:
        streams.reseed(seed, step, rank)
        logger.warning("resumed on %d process(es) from a checkpoint of %d: training continues "
                       "from step %d with fresh random streams", world, len(states), step)
    tools = dict(blob.get("tools") or {})
    best = tools.get("heldout")
    if (isinstance(best, dict) and best.get("best_step", -1) >= 0
            and not (Path(path).parent / BEST_NAME).exists()):
        logger.warning("%s is missing: the best held-out evaluation starts afresh at step %d",
                       Path(path).parent / BEST_NAME, step)
        tools["heldout"] = {**best, "best_elbo": -math.inf, "best_step": -1}
    return step, History.from_state_dict(blob["history"]), tools


def load_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The step and training settings stored in a checkpoint."""
    blob = _load_blob(path, "cpu")
    return {"step": int(blob["step"]), **json.loads(blob["fit"])}
