"""Learning-rate schedules of :func:`pyro_lvae.fit`: torch's own
:mod:`torch.optim.lr_scheduler`, stepped once per optimisation step, with their state in the
checkpoint.

A schedule is given by name (``"constant"``, ``"cosine[:FINAL]"``, ``"step:EVERY[:GAMMA]"``;
the command line's ``--lr-schedule``; :data:`LR_SCHEDULES`) or as the object the name stands
for (:class:`ConstantRate`, :class:`CosineDecay`, :class:`StepDecay`), as a scheduler built on
fit's optimiser, or as a function ``optimizer -> scheduler``. ``warmup=STEPS`` puts a linear
warm-up in front of any of them (:class:`~torch.optim.lr_scheduler.LinearLR` then the schedule,
joined by :class:`~torch.optim.lr_scheduler.SequentialLR`).

Example::

    >>> import torch
    >>> from pyro_lvae.training.schedules import make_scheduler
    >>> opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    >>> sched = make_scheduler("cosine", opt, steps=10, warmup=2)
    >>> lrs = []
    >>> for _ in range(4):
    ...     lrs.append(round(opt.param_groups[0]["lr"], 3))
    ...     opt.step()
    ...     sched.step()
    >>> lrs
    [0.333, 0.667, 1.0, 0.962]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch.optim import lr_scheduler

from ..errors import ConfigError, check_int
from ..registry import Registry
from .tools import Checks, Tool

__all__ = ["LR_SCHEDULES", "RateSchedule", "ConstantRate", "CosineDecay", "StepDecay",
           "make_scheduler", "check_schedule", "check_warmup", "LRSchedule"]

#: the named schedules (``--lr-schedule``): ``NAME[:ARG...]`` (:mod:`pyro_lvae.registry`)
LR_SCHEDULES = Registry("learning-rate schedule")


def _number(name: str, value: Any) -> float:
    try:
        if isinstance(value, bool):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a number but got {value!r}") from None


class RateSchedule:
    """A named learning-rate schedule: it makes the torch scheduler of a run (one of
    :data:`LR_SCHEDULES`; its :meth:`spec` is its command-line form)."""

    def scheduler(self, optimizer: torch.optim.Optimizer,
                  steps: int) -> lr_scheduler.LRScheduler:
        """The torch scheduler of ``steps`` steps on ``optimizer``."""
        raise NotImplementedError

    def spec(self) -> str:
        """The command-line form, ``NAME:ARG:...``, read back by :data:`LR_SCHEDULES`."""
        return LR_SCHEDULES.spec(self)

    def __repr__(self) -> str:
        name = LR_SCHEDULES.name_of(self)
        args = ", ".join(f"{n}={getattr(self, n)!r}" for n in LR_SCHEDULES.settings_of(name))
        return f"{type(self).__name__}({args})"


@LR_SCHEDULES.register("constant")
class ConstantRate(RateSchedule):
    """``constant``: the learning rate stays at its start (``--lr``)."""

    def scheduler(self, optimizer: torch.optim.Optimizer,
                  steps: int) -> lr_scheduler.LRScheduler:
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


@LR_SCHEDULES.register("cosine")
class CosineDecay(RateSchedule):
    """``cosine[:FINAL]``: cosine decay from the learning rate to ``final`` times it at the
    last step.

    :param float final: the last step's factor, in ``[0, 1]``
    """

    def __init__(self, final: float = 0.0) -> None:
        self.final = _number("the final factor FINAL of cosine[:FINAL]", final)
        if not 0 <= self.final <= 1:
            raise ConfigError(f"Expected the final factor FINAL of cosine[:FINAL] in [0, 1] "
                              f"but got {final}")

    def scheduler(self, optimizer: torch.optim.Optimizer,
                  steps: int) -> lr_scheduler.LRScheduler:
        return lr_scheduler.LambdaLR(optimizer, _Cosine(max(steps, 1), self.final))


@LR_SCHEDULES.register("step")
class StepDecay(RateSchedule):
    """``step:EVERY[:GAMMA]``: the learning rate times ``gamma`` every ``every`` steps.

    :param int every: steps between decays, an integer ``>= 1``
    :param float gamma: the factor, in ``(0, 1]``
    """

    def __init__(self, every: int, gamma: float = 0.5) -> None:
        every_, self.gamma = _number("EVERY", every), _number("GAMMA", gamma)
        if not (math.isfinite(every_) and every_ >= 1 and every_ == int(every_)
                and 0 < self.gamma <= 1):
            raise ConfigError(f"Expected step:EVERY[:GAMMA] with an integer EVERY >= 1 and "
                              f"GAMMA in (0, 1] but got EVERY={every}, GAMMA={gamma}")
        self.every = int(every_)

    def scheduler(self, optimizer: torch.optim.Optimizer,
                  steps: int) -> lr_scheduler.LRScheduler:
        return lr_scheduler.StepLR(optimizer, self.every, self.gamma)


def check_schedule(schedule: Any, warmup: Any) -> None:
    """Refuse a bad ``lr_schedule`` or ``lr_warmup`` before anything runs."""
    check_int("lr_warmup", warmup, 0)
    if isinstance(schedule, str):
        LR_SCHEDULES.parse(schedule)
    elif isinstance(schedule, lr_scheduler.ReduceLROnPlateau):
        raise ConfigError("ReduceLROnPlateau needs a metric at every step; fit steps its "
                          "schedule without one: use a step-based torch scheduler")
    elif not (schedule is None or isinstance(schedule, (RateSchedule, lr_scheduler.LRScheduler))
              or callable(schedule)):
        raise ConfigError(f"Expected lr_schedule to be None, a name ({LR_SCHEDULES.forms()}), "
                          f"a RateSchedule, a torch LRScheduler or a function optimizer -> "
                          f"scheduler but got {schedule!r}")


def check_warmup(warmup: int, steps: int) -> None:
    """Refuse a learning-rate warm-up that does not end before the last of the run's
    ``steps`` steps: the rate rises from ``lr / (warmup + 1)`` and reaches ``lr`` at step
    ``warmup`` (counted from 0), so with ``warmup >= steps`` the run never trains at ``lr``.

    :raises ConfigError: naming both numbers and the fix
    """
    if warmup >= steps:
        raise ConfigError(f"Expected lr_warmup (--lr-warmup) shorter than the run but got "
                          f"{warmup} warm-up steps for a run of {steps}: the learning rate "
                          f"would never reach lr; use at most {steps - 1} warm-up steps or "
                          f"train for more than {warmup} steps")


class _Cosine:
    """``FINAL + (1 - FINAL) (1 + cos(pi t / T)) / 2``: a picklable multiplier for LambdaLR
    (its state is its two numbers, so the checkpoint holds it)."""

    def __init__(self, total: int, final: float) -> None:
        self.total, self.final = total, final

    def __call__(self, t: int) -> float:
        t = min(t, self.total)
        return self.final + (1 - self.final) * (1 + math.cos(math.pi * t / self.total)) / 2


def make_scheduler(schedule: str | Callable | lr_scheduler.LRScheduler | None,
                   optimizer: torch.optim.Optimizer, steps: int,
                   warmup: int = 0) -> lr_scheduler.LRScheduler | None:
    """The scheduler of a run of ``steps`` steps, stepped after every optimiser step.

    :param schedule: ``None`` (none, unless ``warmup``), a name (:data:`LR_SCHEDULES`) or its
        :class:`RateSchedule`, a torch scheduler built on ``optimizer``, or a function
        ``optimizer -> scheduler``
    :param optimizer: the run's torch optimiser
    :param int steps: the run's total number of steps (a named schedule spans those after
        the warm-up)
    :param int warmup: steps of linear warm-up from ``lr / (warmup + 1)`` to ``lr`` first
    """
    check_schedule(schedule, warmup)
    if schedule is None and not warmup:
        return None
    if isinstance(schedule, str):
        schedule = LR_SCHEDULES.parse(schedule)
    if isinstance(schedule, RateSchedule):
        main = schedule.scheduler(optimizer, steps - warmup)
    elif isinstance(schedule, lr_scheduler.LRScheduler):
        main = schedule
    elif schedule is None:
        main = ConstantRate().scheduler(optimizer, steps)
    else:
        main = schedule(optimizer)
        if not isinstance(main, lr_scheduler.LRScheduler) or isinstance(
                main, lr_scheduler.ReduceLROnPlateau):
            raise ConfigError(f"lr_schedule(optimizer) returned {main!r}; expected a "
                              f"step-based torch LRScheduler")
    if main.optimizer is not optimizer:
        raise ConfigError("the learning-rate scheduler was built on another optimiser than "
                          "fit's: pass a function optimizer -> scheduler, or fit's own "
                          "optimiser (optimizer=) and a scheduler built on it")
    if not warmup:
        return main
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0,
                                 total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, main], milestones=[warmup])


class LRSchedule(Tool):
    """A training tool (:mod:`pyro_lvae.training.tools`): a learning-rate schedule stepped
    after every optimiser step, its state in the checkpoint (torch optimisers only; with
    ``SVI`` step a ``pyro.optim`` scheduler in your own loop).

    :param schedule: a name (``"constant"``, ``"cosine[:FINAL]"``, ``"step:EVERY[:GAMMA]"``;
        :data:`LR_SCHEDULES`) or its :class:`RateSchedule` object (``CosineDecay(0.1)``), a
        torch scheduler built on fit's optimiser, a function ``optimizer -> scheduler``, or
        ``None`` (the warm-up alone)
    :param int warmup: steps of linear warm-up from ``lr / (warmup + 1)`` to ``lr`` first,
        fewer than the run's steps (:func:`check_warmup`: a :class:`ConfigError` at the
        start of the run otherwise)
    """

    state_key = "scheduler"

    def __init__(self, schedule: str | Callable | lr_scheduler.LRScheduler | None = "constant",
                 warmup: int = 0) -> None:
        check_schedule(schedule, warmup)
        self.schedule, self.warmup = schedule, check_int("lr_warmup", warmup, 0)
        self.scheduler: lr_scheduler.LRScheduler | None = None

    def setup(self, run: Any) -> None:
        if not run.torch_optimizer:
            raise ConfigError(
                "lr_schedule and lr_warmup step a torch scheduler on fit's torch optimiser; "
                "with SVI use a pyro.optim scheduler (pyro.optim.ExponentialLR, ...) stepped "
                "by your own loop, or a torch optimiser")
        checks = run.find(Checks)
        if checks is not None and checks.on_divergence == "rollback":
            raise ConfigError("on_divergence='rollback' halves the learning rate, which a "
                              "learning-rate schedule would overwrite: use one or the other")
        check_warmup(self.warmup, run.steps)
        self.scheduler = make_scheduler(self.schedule, run.optimizer, run.steps, self.warmup)

    def on_step_end(self, run: Any, step: int) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> Any:
        return None if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: Any) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)

    def settings(self) -> dict[str, Any]:
        name = (self.schedule if self.schedule is None or isinstance(self.schedule, str)
                else self.schedule.spec() if isinstance(self.schedule, RateSchedule)
                else repr(self.schedule))
        return {k: v for k, v in (("lr_schedule", name), ("lr_warmup", self.warmup or None))
                if v is not None}
