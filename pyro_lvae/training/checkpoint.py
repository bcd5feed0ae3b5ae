"""Training checkpoints: written atomically by rank 0, loadable with
``torch.load(weights_only=True)``, holding the model, the optimiser, the history, the batches'
position and every rank's random states, so that ``fit(..., resume=True)`` continues a run
exactly where it stopped (with another number of processes, from fresh random streams)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import pyro
import pyro.optim
import torch

from ..errors import CheckpointError
from ..io import atomic_save, safe_load
from ..vae import _CHECKPOINT_FORMAT, VAE
from .batches import data_seed
from .distributed import gather_objects, rank_seed
from .history import History

__all__ = ["CHECKPOINT_NAME", "BEST_NAME", "RandomStreams", "prepare_folder", "save_checkpoint",
           "restore_checkpoint", "load_checkpoint_info"]

logger = logging.getLogger(__name__)

#: the checkpoint of a run, in its folder, rewritten at every save
CHECKPOINT_NAME = "checkpoint.pt"
#: the best checkpoint by held-out ELBO (fit(..., heldout=...)), beside ``checkpoint.pt``
BEST_NAME = "best.pt"


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


def prepare_folder(out: str | os.PathLike | None, rank: int) -> Path | None:
    """The checkpoint's path in ``out`` (created by rank 0, which also removes the temporary
    files of a write that was killed); ``None`` without a folder."""
    if out is None:
        return None
    folder = Path(out)
    if rank == 0:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise CheckpointError(f"cannot create output folder {folder}: {e.strerror}") from None
        for stale in [p for name in (CHECKPOINT_NAME, BEST_NAME)
                      for p in folder.glob(f".{name}.*.tmp")]:
            stale.unlink(missing_ok=True)
    return folder / CHECKPOINT_NAME


def save_checkpoint(path: Path, step: int, vae: VAE, optimizer: Any, history: History,
                    streams: RandomStreams, batches: Any, settings: dict[str, Any],
                    rank: int = 0, world: int = 1, tools: dict[str, Any] | None = None) -> None:
    """Write the checkpoint of ``step`` to ``path`` (every rank calls; rank 0 writes every
    rank's random states); ``tools`` is the state of the run's optional tools
    (by :attr:`~pyro_lvae.training.Tool.state_key`)."""
    states = gather_objects(streams.state())
    if rank != 0:
        return
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
    step, history and the state of the optional tools (empty in older checkpoints)."""
    blob = _load_blob(path, device)
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
    return step, History.from_state_dict(blob["history"]), blob.get("tools", {})


def load_checkpoint_info(path: str | os.PathLike) -> dict[str, Any]:
    """The step and training settings stored in a checkpoint."""
    blob = _load_blob(path, "cpu")
    return {"step": int(blob["step"]), **json.loads(blob["fit"])}
