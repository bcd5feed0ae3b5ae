"""The divergence guard of a training run: at each check the recorded losses and the parameters
must be finite; if not, the parameters (and a torch optimiser's state) of the last good check
come back, and the run stops with a diagnosis or goes on at half the learning rate."""

from __future__ import annotations

import copy
import logging
from typing import Any

import pyro.optim
import torch

from ..errors import TrainingDiverged
from ..vae import VAE

__all__ = ["DivergenceGuard", "diagnose"]

logger = logging.getLogger(__name__)


def diagnose(vae: VAE, x: torch.Tensor, step: int, rows: dict[str, torch.Tensor]) -> str:
    """The message of a divergence at ``step``: the last finite sigma, the encoder's scales and
    the data's range, with the remedies."""
    with torch.no_grad():
        sigma = rows["sigma"]
        finite_sigma = sigma[torch.isfinite(sigma)]
        try:
            _, q_scale = vae.guide.posterior(x)
            enc = f"encoder scale in [{q_scale.min():.3g}, {q_scale.max():.3g}]"
        except Exception:  # the diagnosis must not hide the divergence itself
            enc = "encoder scale unavailable"
    last_sigma = f"{float(finite_sigma[-1]):.4g}" if finite_sigma.numel() else "nan"
    return (
        f"training diverged at step {step}: the loss or the parameters became NaN or infinite "
        f"(last finite sigma "
        f"{last_sigma}; {enc}; data range [{x.min():.3g}, {x.max():.3g}]). The parameters were "
        f"restored to the last good check; lower the learning rate, raise min_scale, or "
        f"rescale the data"
    )


class DivergenceGuard:
    """Snapshot at each good check; restore, then stop or roll back, at a bad one.

    :param VAE vae: the model being trained
    :param optimizer: a torch optimiser (its state is kept too) or a ``pyro.optim`` one
    :param str policy: ``"stop"`` or ``"rollback"`` (torch optimisers only)
    :param int max_rollbacks: rollbacks allowed before giving up
    :param tools: an object with ``snapshot()`` and ``restore(snapshot)`` for the state of
        the run's training tools (the averaged weights), kept and restored with the
        parameters; or ``None``
    """

    def __init__(self, vae: VAE, optimizer: Any, policy: str, max_rollbacks: int,
                 tools: Any = None) -> None:
        self.vae, self.optimizer, self.tools = vae, optimizer, tools
        self.torch_optimizer = not isinstance(optimizer, pyro.optim.PyroOptim)
        self.policy, self.max_rollbacks = policy, max_rollbacks
        self.rollbacks = 0
        self.remember()

    def remember(self) -> None:
        """Take an in-memory copy of the parameters (and optimiser state) of a good check."""
        self.snapshot = {"model": {k: v.detach().clone()
                                   for k, v in self.vae.state_dict().items()}}
        if self.torch_optimizer:
            self.snapshot["optimizer"] = copy.deepcopy(self.optimizer.state_dict())
        if self.tools is not None:
            self.snapshot["tools"] = self.tools.snapshot()

    def _restore(self) -> None:
        self.vae.load_state_dict(self.snapshot["model"])
        if self.tools is not None:
            self.tools.restore(self.snapshot["tools"])
        if self.torch_optimizer:
            lrs = [g["lr"] for g in self.optimizer.param_groups]
            self.optimizer.load_state_dict(self.snapshot["optimizer"])
            for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
                group["lr"] = lr  # keep lowered rates

    def check(self, rows: dict[str, torch.Tensor], x: torch.Tensor, first: int,
              done: int) -> bool:
        """Whether the steps ``first .. done - 1`` (``rows``, on the host) are good. If not,
        restore the last good check and raise :class:`TrainingDiverged` or, rolling back, halve
        the learning rate and return ``False`` (the caller repeats from step ``first``)."""
        finite = torch.isfinite(rows["loss"])
        params_finite = bool(torch.stack(
            [torch.isfinite(p).all() for p in self.vae.parameters()]).all())
        if bool(finite.all()) and params_finite:
            return True
        bad = first + int((~finite).nonzero()[0]) if not finite.all() else done
        self._restore()
        message = diagnose(self.vae, x, bad, rows)
        if self.policy == "stop" or self.rollbacks >= self.max_rollbacks:
            raise TrainingDiverged(message + (
                f" (after {self.rollbacks} rollback(s))" if self.rollbacks else ""))
        self.rollbacks += 1
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        logger.warning("%s; rolled back to step %d with learning rate %.3g",
                       message.split(":")[0], first, self.optimizer.param_groups[0]["lr"])
        return False
