"""The held-out ELBO of :func:`pyro_lvae.fit` and its best checkpoint.

Every ``every`` steps (and at the last one), the model's ELBO per point on a fixed held-out
set is computed with :func:`pyro_lvae.evaluate.elbo_parts` under a fixed seed, inside
:func:`torch.random.fork_rng`: the value is a function of the weights alone, and training draws
the same numbers with or without it. The value goes into the :class:`History`
(``heldout_elbo``, and ``heldout_elbo_averaged`` for the averaged model); when it is the best so
far, the whole checkpoint is written as ``best.pt`` beside ``checkpoint.pt``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .. import evaluate
from ..errors import ConfigError, DataError
from ..vae import VAE
from .distributed import gather_objects

__all__ = ["HeldOut"]



class HeldOut:
    """A fixed held-out set, evaluated every ``every`` steps; remembers the best.

    :param data: the held-out points, a tensor or numpy array ``(N, ...)`` as the model sees
        them (after any transform)
    :param int every: steps between evaluations (fit checks its losses at those steps too)
    :param int seed: the seed of the evaluation's draws of ``z``
    :param int batch_size: points per evaluation batch
    """

    def __init__(self, data: Any, every: int, seed: int = 0, batch_size: int = 1000) -> None:
        if isinstance(data, np.ndarray):
            data = torch.as_tensor(data)
        if not isinstance(data, torch.Tensor) or data.ndim < 1 or data.shape[0] < 1:
            raise DataError(f"Expected heldout to be a tensor or numpy array of at least one "
                            f"point but got {type(data).__name__}")
        if not data.is_floating_point():
            raise DataError(f"Expected heldout data as the model sees them (floats, after any "
                            f"transform) but got {data.dtype}")
        if not (isinstance(every, int) and not isinstance(every, bool) and every >= 1):
            raise ConfigError(f"Expected eval_every >= 1 but got {every!r}")
        self.data, self.every, self.seed, self.batch_size = data, every, seed, batch_size
        self.best_elbo, self.best_step = -math.inf, -1

    def attach(self, vae: VAE) -> None:
        """Move the held-out set to ``vae``'s device and dtype, and check it against the
        model's data shape (before training starts)."""
        self.data = self.data.to(device=vae.device, dtype=vae.dtype)
        vae.model.check_data(self.data, finite=True)

    def due(self, done: int, steps: int) -> bool:
        """Whether to evaluate after ``done`` steps of ``steps``."""
        return done % self.every == 0 or done == steps

    def evaluate(self, vae: VAE) -> float:
        """The held-out ELBO per point of ``vae``, leaving every random state as it was (rank
        0's value on every process)."""
        if self.data.device != vae.device:
            self.attach(vae)
        devices = [vae.device] if vae.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            value = evaluate.elbo_parts(vae, self.data, batch_size=self.batch_size)["elbo"]
        return float(gather_objects(value)[0])

    def improved(self, elbo: float, step: int) -> bool:
        """Remember ``elbo`` after ``step`` steps if it is the best so far."""
        if not elbo > self.best_elbo:
            return False
        self.best_elbo, self.best_step = elbo, step
        return True

    def state_dict(self) -> dict[str, Any]:
        """The best so far (for checkpoints)."""
        return {"best_elbo": self.best_elbo, "best_step": self.best_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict`'s best."""
        self.best_elbo, self.best_step = float(state["best_elbo"]), int(state["best_step"])

    def best(self) -> dict[str, float] | None:
        """``{"step", "elbo"}`` of the best evaluation, or ``None`` before the first."""
        if self.best_step < 0:
            return None
        return {"step": self.best_step, "elbo": self.best_elbo}
