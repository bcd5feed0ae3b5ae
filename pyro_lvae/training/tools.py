"""The optional tools of a :func:`pyro_lvae.fit` run, in one place for the loop and the
checkpoints: a learning-rate schedule (:mod:`.schedules`), averaged weights
(:mod:`.averaging`) and the held-out ELBO with its best checkpoint (:mod:`.heldout`). Each is
off unless asked for; each keeps its state in the checkpoint so that a resumed run continues
exactly. (Gradient-norm clipping has no state: the step applies it, :mod:`.step`.)"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pyro.optim

from ..errors import ConfigError
from ..vae import VAE
from .averaging import Averager, WeightAverage
from .heldout import HeldOut
from .history import History
from .schedules import make_scheduler

__all__ = ["TrainingTools", "check_tools"]

logger = logging.getLogger(__name__)


def check_tools(optimizer: Any, clip_grad_norm: Any, lr_schedule: Any, lr_warmup: int,
                on_divergence: str) -> None:
    """Refuse the combinations the tools cannot honour, before anything runs."""
    if clip_grad_norm is not None and not (isinstance(clip_grad_norm, (int, float))
                                           and clip_grad_norm > 0):
        raise ConfigError(f"Expected clip_grad_norm > 0 but got {clip_grad_norm!r}")
    scheduled = lr_schedule is not None or lr_warmup
    if isinstance(optimizer, pyro.optim.PyroOptim):
        if clip_grad_norm is not None:
            raise ConfigError(
                "clip_grad_norm clips the norm of all gradients together, which needs a torch "
                "optimiser; a pyro.optim optimiser clips each parameter on its own: give it "
                "clip_args={'clip_norm': ...} (or use pyro.optim.ClippedAdam) instead")
        if scheduled:
            raise ConfigError(
                "lr_schedule and lr_warmup step a torch scheduler on fit's torch optimiser; "
                "with SVI use a pyro.optim scheduler (pyro.optim.ExponentialLR, ...) stepped "
                "by your own loop, or a torch optimiser")
    if scheduled and on_divergence == "rollback":
        raise ConfigError("on_divergence='rollback' halves the learning rate, which a "
                          "learning-rate schedule would overwrite: use one or the other")


class TrainingTools:
    """The run's schedule, averager and held-out evaluation (each ``None`` when off)."""

    def __init__(self, vae: VAE, optimizer: Any, steps: int, lr_schedule: Any = None,
                 lr_warmup: int = 0, average: WeightAverage | None = None,
                 heldout: HeldOut | None = None) -> None:
        self.vae = vae
        self.scheduler = (None if isinstance(optimizer, pyro.optim.PyroOptim)
                          else make_scheduler(lr_schedule, optimizer, steps, lr_warmup))
        self.average = average
        self.averager: Averager | None = None
        self.heldout = heldout

    def start(self) -> None:
        """Make the averaged copy (after the observation model took its start from the data,
        so the copy holds the same start)."""
        if self.average is not None and self.averager is None:
            self.averager = Averager(self.average, self.vae)

    @property
    def averaged(self) -> VAE | None:
        """The averaged model, if averaging."""
        return None if self.averager is None else self.averager.averaged

    def after_step(self, step: int) -> None:
        """After the optimiser's step ``step`` (0-based): the schedule's step, the average."""
        if self.scheduler is not None:
            self.scheduler.step()
        if self.averager is not None:
            self.averager.after_step(step)

    def check_due(self, done: int) -> bool:
        """Whether the loop must check after ``done`` steps (a held-out evaluation is due)."""
        return self.heldout is not None and done % self.heldout.every == 0

    def at_check(self, done: int, steps: int, history: History,
                 save_best: Callable[[int], None] | None) -> None:
        """After a good check at ``done`` steps: the held-out ELBO when due, recorded in
        ``history``, and ``best.pt`` (``save_best``) when it is the best so far."""
        if self.heldout is None or not self.heldout.due(done, steps):
            return
        elbo = self.heldout.evaluate(self.vae)
        history.record("heldout_elbo", elbo)
        if self.averaged is not None:
            history.record("heldout_elbo_averaged", self.heldout.evaluate(self.averaged))
        if self.heldout.improved(elbo, done):
            history.best = self.heldout.best()
            if save_best is not None:
                save_best(done)

    # ---- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The state of each tool that is on (the checkpoint's ``tools`` entry)."""
        state: dict[str, Any] = {}
        if self.scheduler is not None:
            state["scheduler"] = self.scheduler.state_dict()
        if self.averager is not None:
            state["averaged"] = self.averager.state_dict()
        if self.heldout is not None:
            state["heldout"] = self.heldout.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue each tool from a checkpoint's state; a tool the checkpoint lacks starts
        afresh (with a WARNING: the run is then not the uninterrupted one), and the state of a
        tool this run does not use is dropped (likewise)."""
        self.start()
        parts = {"scheduler": self.scheduler, "averaged": self.averager,
                 "heldout": self.heldout}
        for name, tool in parts.items():
            if tool is not None and name in state:
                tool.load_state_dict(state[name])
            elif tool is not None:
                logger.warning("the checkpoint holds no %s state (it was written without it): "
                               "it starts afresh at the resumed step", name)
            elif name in state:
                logger.warning("the checkpoint holds %s state that this run does not use: it "
                               "is dropped", name)
        if self.heldout is not None:
            self_best = self.heldout.best()
            if self_best is not None:
                logger.info("best held-out ELBO so far: %.4g at step %d", self_best["elbo"],
                            self_best["step"])

    def snapshot(self) -> Any:
        """The state the divergence guard restores (the averaged weights)."""
        return None if self.averager is None else self.averager.snapshot()

    def restore(self, snapshot: Any) -> None:
        """Go back to a :meth:`snapshot`."""
        if self.averager is not None and snapshot is not None:
            self.averager.restore(snapshot)
