"""GECO: the KL weight as the Lagrange multiplier of a reconstruction constraint.

Rezende & Viola (2018) minimise the KL subject to a reconstruction target,
``min KL  s.t.  E[C] <= 0`` with ``C = reconstruction - target`` (here ``-log p(x|z)`` per data
point, in nats, the ``reconstruction`` column of :class:`~pyro_lvae.History`). The Lagrangian
``KL + lambda C`` has the gradient of ``lambda (reconstruction + KL / lambda)``: the ELBO's loss
with ``beta = 1 / lambda``, up to a positive factor. So :class:`GECO` is a KL weight for
:func:`~pyro_lvae.fit` that follows the constraint instead of a schedule: the multiplier rises
(beta falls, reconstruction gains weight) while the smoothed constraint is violated, and falls
(beta rises, the KL gains weight) while it holds. It is the other automatic way of balancing the
two terms; a learned sigma (Berger & Sebag) is the paper's.

The update (their Algorithm 1): ``C_ma <- smoothing * C_ma + (1 - smoothing) * C_t`` (``C_ma``
starts at the first step's ``C``), then ``lambda <- lambda * exp(rate * C_ma)``; beta is kept in
``[min_beta, max_beta]`` (and the multiplier with it, so it does not wind up). ``fit`` reads the
losses every ``check_every`` steps: the multiplier takes every step's constraint, in order, at
each check, and beta holds between checks (``check_every=1`` is the paper's per-step update).
Its state is a function of the run's history, so a resumed run continues exactly
(:meth:`GECO.restore`).

**References**

- D. Rezende, F. Viola. *Taming VAEs*. arXiv:1810.00597, 2018.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .annealing import BETA_SCHEDULES, BetaSchedule
from .errors import ConfigError

__all__ = ["GECO"]


def _finite(name: str, value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a number but got {value!r}") from None
    if not math.isfinite(value):
        raise ConfigError(f"Expected a finite {name} but got {value}")
    return value


@BETA_SCHEDULES.register("geco")
class GECO(BetaSchedule):
    """A KL weight ``beta = 1 / lambda`` with ``lambda`` the Lagrange multiplier of the
    constraint ``reconstruction <= target`` (module docstring). Pass it as ``beta=`` to
    :func:`~pyro_lvae.fit` (``pyro-lvae train --geco TARGET``). Its :meth:`spec` is
    ``geco:TARGET:RATE:SMOOTHING:MIN_BETA:MAX_BETA``, which :func:`~pyro_lvae.parse_schedule`
    reads back (a new multiplier: the state is the run's, see :meth:`restore`).

    :param float target: the reconstruction loss to reach, ``-log p(x|z)`` per data point in
        nats (with a learned sigma it can be negative)
    :param float rate: the multiplier's step, ``log lambda += rate * C_ma`` per training step
        (``C`` in nats per point: choose it so that ``rate * |C|`` is about 1e-3 to 1e-2)
    :param float smoothing: the moving average's weight on its past, in ``[0, 1)``
    :param float min_beta: the smallest KL weight (the largest multiplier)
    :param float max_beta: the largest KL weight

    Example::

        >>> import pyro_lvae as lv
        >>> geco = lv.GECO(target=1.0, rate=0.1, smoothing=0.0)
        >>> geco.observe({"reconstruction": [3.0]})   # violated: lambda rises, beta falls
        >>> round(geco(0), 4)
        0.8187
    """

    def __init__(self, target: float, rate: float = 1e-2, smoothing: float = 0.99,
                 min_beta: float = 1e-3, max_beta: float = 1e3) -> None:
        self.target = _finite("target", target)
        self.rate = _finite("rate", rate)
        if self.rate <= 0:
            raise ConfigError(f"Expected rate > 0 but got {self.rate}")
        self.smoothing = _finite("smoothing", smoothing)
        if not 0 <= self.smoothing < 1:
            raise ConfigError(f"Expected 0 <= smoothing < 1 but got {self.smoothing}")
        self.min_beta, self.max_beta = _finite("min_beta", min_beta), _finite("max_beta", max_beta)
        if not 0 < self.min_beta <= 1 <= self.max_beta:
            raise ConfigError(f"Expected 0 < min_beta <= 1 <= max_beta but got "
                              f"{self.min_beta}, {self.max_beta}")
        self.reset()

    def reset(self) -> None:
        """Back to the start: ``lambda = 1`` (beta 1, the ELBO), no constraint seen."""
        #: log of the multiplier lambda
        self.log_multiplier = 0.0
        #: the moving average of the constraint (None before the first step)
        self.constraint: float | None = None
        #: steps observed
        self.steps = 0

    @property
    def multiplier(self) -> float:
        """lambda, the Lagrange multiplier (``1 / beta``)."""
        return math.exp(self.log_multiplier)

    def __call__(self, step: int) -> float:
        return math.exp(-self.log_multiplier)

    def observe(self, rows: dict[str, Any]) -> None:
        """Update the multiplier with each step's ``reconstruction`` (per data point), in order
        (``fit`` calls it at every check with the rows recorded since the last one)."""
        values = np.asarray(rows["reconstruction"], dtype=np.float64).reshape(-1)
        if not np.isfinite(values).all():
            raise ConfigError("GECO needs each step's reconstruction loss, which this run's "
                              "ELBO does not log (the JIT ELBOs and RenyiELBO do not); train "
                              "with fit's default Trace_ELBO objective")
        low, high = -math.log(self.max_beta), -math.log(self.min_beta)
        for value in values:
            c = float(value) - self.target
            self.constraint = c if self.constraint is None else (
                self.smoothing * self.constraint + (1 - self.smoothing) * c)
            self.log_multiplier = min(max(self.log_multiplier + self.rate * self.constraint,
                                          low), high)
            self.steps += 1

    def restore(self, history: Any) -> None:
        """The state after the steps of ``history`` (a resumed run's), replayed from the
        start: the same state as the uninterrupted run."""
        self.reset()
        if len(history):
            self.observe({"reconstruction": history["reconstruction"]})

    def __repr__(self) -> str:
        return (f"GECO(target={self.target:g}, rate={self.rate:g}, "
                f"smoothing={self.smoothing:g}, beta={self(0):.4g})")
