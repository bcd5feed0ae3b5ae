"""KL annealing: weight the latent term of any Pyro program, and schedules for the weight.

:func:`weight_latents` multiplies the log-density of every *unobserved* sample site by ``beta``,
in the model and in the guide alike, and leaves observed sites alone. Used as a context around
``svi.step`` it covers both programs, so that under ``Trace_ELBO`` the loss becomes
``-E[log p(x|z)] + beta * KL`` and ``TraceMeanField_ELBO`` (which reads the guide's scale for its
analytic KL) agrees. Scaling only the model changes the objective (the model's log p(z) is
weighted but not the guide's log q(z|x)): wrap both programs or neither.

Under the JIT ELBOs (``JitTrace_ELBO``, ``JitTraceEnum_ELBO``, ...) the compiled function sees
only the programs' positional inputs: a beta set by a handler would be baked into the compiled
trace at the first step and ignored afterwards. :func:`annealed` makes beta such an input
(``svi.step(beta, x)``), exact under every ELBO; :func:`weight_latents` refuses to run inside a
JIT trace and names that remedy.

What counts as "latent": every sample site that is not observed, global latents (outside the
data plate) included, so their KL is weighted too. A discrete latent enumerated in the *guide*
under ``TraceEnum_ELBO`` (ss_vae_M2's ``y``: ``config_enumerate(guide)``) is weighted like any
other, in both programs, which is exactly ``poutine.scale(beta)`` around its sample statements:
the ELBO's term ``E_q[log p(y) - log q(y|x)]`` becomes ``beta`` times itself. A site enumerated
in the *model* only (absent from the guide, summed out of the model: a mixture's assignment)
cannot be weighted: its log-density sits inside a log-sum over its values, where a factor
``beta`` does not weight a KL (Pyro's sum of ``beta``-scaled terms is another objective), so
a ``beta`` other than 1 raises :class:`~pyro_lvae.errors.ConfigError` there (enumerate it in
the guide instead, or leave the model unannealed).

For a fixed-sigma Normal VAE, weighting the KL by beta is the same objective, up to a factor and
a constant, as a VAE with ``sigma' = sigma * sqrt(beta)``; KL annealing (Bowman et al.) is beta
rising from about 0 to 1.

**References**

- S. Bowman et al. *Generating Sentences from a Continuous Space*. CoNLL 2016.
- H. Fu et al. *Cyclical Annealing Schedule: A Simple Approach to Mitigating KL Vanishing*.
  NAACL 2019.
"""

from __future__ import annotations

import functools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.ops.jit import CompiledFunction
from pyro.poutine.messenger import Messenger
from pyro.poutine.replay_messenger import ReplayMessenger
from pyro.poutine.runtime import _PYRO_STACK

from .errors import ConfigError, as_integer
from .registry import Registry, deprecated_aliases

__all__ = [
    "weight_latents",
    "annealed",
    "annealed_program",
    "LatentScaleMessenger",
    "BetaSchedule",
    "ConstantBeta",
    "LinearWarmup",
    "SigmoidWarmup",
    "CyclicalWarmup",
    "parse_schedule",
    "BETA_SCHEDULES",
]

_JIT_REMEDY = (
    "annealing with a handler around the step is ignored under the JIT ELBOs (the compiled "
    "trace keeps the first beta); pass beta as an input instead: "
    "svi = SVI(lv.annealed(model), lv.annealed(guide), optim, JitTrace_ELBO()); "
    "svi.step(torch.tensor(beta), x) -- or use Trace_ELBO"
)


def _check_beta(beta: Any) -> float | torch.Tensor:
    if isinstance(beta, torch.Tensor):
        if beta.numel() != 1:
            raise ConfigError(f"Expected a scalar beta but got shape {tuple(beta.shape)}")
        return beta
    try:
        beta = float(beta)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected beta to be a number but got {beta!r}") from None
    if not math.isfinite(beta) or beta < 0:
        raise ConfigError(f"Expected beta >= 0 (and finite) but got {beta}")
    return beta


def _in_guide(name: str) -> bool | None:
    """Whether the guide trace that the running model replays holds the site ``name``; ``None``
    where the running program replays no finished trace (the guide itself, which
    ``TraceEnum_ELBO`` replays against partial traces of its own, or a program on its own).
    Reads Pyro's handler stack (``_PYRO_STACK``, ``ReplayMessenger.trace``, and the
    ``"_RETURN"`` node that ``poutine.trace`` adds to a finished program's trace)."""
    for frame in reversed(_PYRO_STACK):
        if isinstance(frame, ReplayMessenger) and frame.trace is not None:
            if "_RETURN" not in frame.trace:
                return None
            return name in frame.trace
    return None


def _is_one(beta: float | torch.Tensor) -> bool:
    if isinstance(beta, float):
        return beta == 1.0
    return not torch.jit.is_tracing() and bool(beta == 1)


def _in_jit_compilation() -> bool:
    """Whether the caller runs inside Pyro's JIT (``pyro.ops.jit.CompiledFunction``, behind
    ``JitTrace_ELBO`` and its siblings), whose inputs must all be tensors."""
    frame = sys._getframe(1)
    code = CompiledFunction.__call__.__code__
    while frame is not None:
        if frame.f_code is code:
            return True
        frame = frame.f_back
    return False


class LatentScaleMessenger(Messenger):
    """Multiplies the log-density of unobserved sample sites by ``beta``, discrete latents
    enumerated in the guide included; refuses a ``beta`` other than 1 on a site enumerated in
    the model only (module docstring).

    ``beta = 0`` (a Python number) masks the latent sites out instead of scaling them, since
    Pyro's ``poutine.scale`` refuses 0 and ``0 * log q`` would be NaN where ``log q`` is infinite.
    A tensor ``beta`` is used as is (no host synchronisation). ``pyro.factor`` statements count
    as observed and are not scaled. Inside a JIT trace it raises :class:`ConfigError` unless it
    was made by :func:`annealed` (whose beta is an input of the compiled function).
    """

    def __init__(self, beta: float | torch.Tensor, *, traced_input: bool = False) -> None:
        super().__init__()
        self.beta = _check_beta(beta)
        self.traced_input = traced_input

    def _process_message(self, msg: dict[str, Any]) -> None:
        if msg["type"] != "sample" or msg["is_observed"]:
            return
        if msg["infer"].get("enumerate") and _in_guide(msg["name"]) is False:
            # enumerated in the model only: summed out there, no KL term to weight
            if _is_one(self.beta):
                return
            raise ConfigError(
                f"the site {msg['name']!r} is enumerated in the model only (summed out of the "
                f"ELBO, absent from the guide): a KL weight beta = {_show(self.beta)} cannot be "
                f"applied to it exactly (its log-density sits inside a log-sum over its "
                f"values). Enumerate it in the guide instead (a distribution for it in the "
                f"guide, config_enumerate(guide)), where beta weights it exactly, or train "
                f"with beta = 1"
            )
        if not self.traced_input and torch.jit.is_tracing():
            raise ConfigError(_JIT_REMEDY)
        if isinstance(self.beta, float):
            if self.beta == 0.0:
                msg["mask"] = False
            elif self.beta != 1.0:
                msg["scale"] = self.beta * msg["scale"]
        else:
            msg["scale"] = self.beta * msg["scale"]


def _show(beta: float | torch.Tensor) -> str:
    if isinstance(beta, float):
        return f"{beta:g}"
    if torch.jit.is_tracing():  # its value is an input of the compiled step: any value
        return "(a tensor input of a JIT-compiled step)"
    return f"{float(beta):g}"


def weight_latents(beta: float | torch.Tensor) -> LatentScaleMessenger:
    """A handler that scales every unobserved site's log-density by ``beta`` (KL annealing).

    Use it as a context around a whole SVI step, so that it sees the model and the guide::

        with lv.weight_latents(0.3):
            svi.step(x)

    Wrapping one program (``lv.weight_latents(0.3)(model)``) scales only that program's latent
    sites: wrap the model *and* the guide, or use :func:`annealed` for both. Under the JIT
    ELBOs use :func:`annealed` (a handler's beta is fixed at compilation; this one refuses).
    Under ``TraceEnum_ELBO`` a discrete latent enumerated in the guide is weighted too (exactly
    ``poutine.scale(beta)`` around it in both programs); one enumerated in the model only
    refuses a beta other than 1 (module docstring).

    :param beta: weight of the latent term, ``>= 0``; a Python number or a scalar tensor
    """
    return LatentScaleMessenger(beta)


def annealed(program: Callable[..., Any]) -> Callable[..., Any]:
    """``program`` with the KL weight as its first argument: ``annealed(program)(beta, *args)``
    runs ``program(*args)`` under :func:`weight_latents` ``(beta)``.

    Wrap the model and the guide alike. Because beta is a positional input, it is exact under
    the JIT ELBOs too, where the compiled function sees only the programs' inputs: there it
    must be a tensor, ``torch.tensor(beta)`` (a Python number cannot be an input of
    ``torch.jit.trace``, and is refused with a :class:`ConfigError` that says so; a tensor
    also lets a new value run without recompiling)::

        svi = SVI(lv.annealed(vae.model), lv.annealed(vae.guide), optim, JitTrace_ELBO())
        for step in range(steps):
            svi.step(torch.tensor(schedule(step)), x)

    Example::

        >>> import torch, pyro, pyro_lvae as lv
        >>> vae = lv.mlp_vae(2, 1, lv.FixedScale(1.0), hidden=8, blocks=1)
        >>> model, guide = lv.annealed(vae.model), lv.annealed(vae.guide)
        >>> loss = pyro.infer.Trace_ELBO().loss(model, guide, torch.tensor(0.5), torch.zeros(4, 2))
    """
    if not callable(program):
        raise ConfigError(f"Expected a Pyro program (a callable) but got {program!r}")

    @functools.wraps(program)
    def run(beta: float | torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(beta, torch.Tensor) and _in_jit_compilation():
            like = next((a for a in args if isinstance(a, torch.Tensor)
                         and a.is_floating_point()), None)
            how = ("torch.tensor(beta)" if like is None else
                   f"torch.tensor(beta, dtype={like.dtype}, device='{like.device}')")
            raise ConfigError(
                f"under the JIT ELBOs beta is an input of the compiled function, and torch.jit "
                f"takes only tensors as inputs: pass {how} to svi.step (got the "
                f"{type(beta).__name__} {beta!r}), e.g. svi.step(torch.tensor(0.5), x)"
            )
        with LatentScaleMessenger(beta, traced_input=True):
            return program(*args, **kwargs)

    run._lvae_annealed = program  # type: ignore[attr-defined]
    return run


def annealed_program(program: Any) -> Any:
    """The program that :func:`annealed` wrapped, or ``None`` if ``program`` is not one."""
    return getattr(program, "_lvae_annealed", None)


#: every beta schedule by its command-line name: ``NAME[:ARG...]`` (:mod:`pyro_lvae.registry`;
#: a bare number is a constant beta)
BETA_SCHEDULES = Registry("beta schedule", number="constant")


class BetaSchedule:
    """A function of the training step returning beta, the KL weight (or any weight); its
    subclasses are registered in :data:`BETA_SCHEDULES`."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def spec(self) -> str:
        """The command-line form, parsed back by :func:`parse_schedule`:
        ``NAME:ARG:...``, the class's parameters in order (:data:`BETA_SCHEDULES`)."""
        return BETA_SCHEDULES.spec(self)

    def unfinished(self, steps: int) -> str | None:
        """Why this schedule has not reached its end by the end of a run of ``steps`` steps, so
        that the run's last steps train at a beta below the one it warms up to (a message
        naming the schedule, the beta of the last step and the fix); ``None`` where it has,
        or where it warms nothing up (a constant beta, :class:`~pyro_lvae.GECO`).
        :func:`~pyro_lvae.fit` logs it as a WARNING before training."""
        return None

    def _short_of(self, steps: int, end: float, why: str, fix: str) -> str:
        return (f"the beta schedule {self.spec()} {why}: the run's last step trains at "
                f"beta = {self(steps - 1):.3g}, not {end:g}; {fix}")


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"Expected {name} to be a number but got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a number but got {value!r}") from None


def _nonneg(name: str, value: Any) -> float:
    number = _number(name, value)
    if not math.isfinite(number) or number < 0:
        raise ConfigError(f"Expected {name} >= 0 (and finite) but got {value!r}")
    return number


def _steps(name: str, value: Any) -> int:
    """A step count: an integer >= 1 (a numpy integer, or a float with an integer value, such
    as ``1e3``, counts)."""
    number = as_integer(value)
    if number is None and not isinstance(value, bool):
        number = _number(name, value)
        number = int(number) if math.isfinite(number) and number == int(number) else None
    if number is None or number < 1:
        raise ConfigError(f"Expected {name} to be an integer >= 1 but got {value!r}")
    return number


@BETA_SCHEDULES.register("constant")
@dataclass(frozen=True)
class ConstantBeta(BetaSchedule):
    """beta = ``value`` at every step."""

    value: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", _nonneg("beta", self.value))

    def __call__(self, step: int) -> float:
        return float(self.value)


@BETA_SCHEDULES.register("linear")
@dataclass(frozen=True)
class LinearWarmup(BetaSchedule):
    """beta rises linearly from ``start`` to ``end`` over ``steps`` steps, then stays at ``end``."""

    steps: int
    start: float = 0.0
    end: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", _steps("steps", self.steps))
        object.__setattr__(self, "start", _nonneg("start", self.start))
        object.__setattr__(self, "end", _nonneg("end", self.end))

    def __call__(self, step: int) -> float:
        t = min(max(step / self.steps, 0.0), 1.0)
        return self.start + (self.end - self.start) * t

    def unfinished(self, steps: int) -> str | None:
        """A warm-up longer than the run (``self.steps > steps``): :meth:`BetaSchedule.unfinished`.
        """
        if self.steps <= steps or self.start == self.end:
            return None
        fix = LinearWarmup(steps, self.start, self.end).spec()
        return self._short_of(steps, self.end, f"warms up over {self.steps} steps, more than "
                              f"the run's {steps}", f"warm up over at most {steps} steps "
                              f"({fix}) or train for at least {self.steps} steps")


@BETA_SCHEDULES.register("sigmoid")
@dataclass(frozen=True)
class SigmoidWarmup(BetaSchedule):
    """beta = ``end / (1 + exp(-(step - midpoint) / width))``: a smooth warm-up centred on
    ``midpoint`` (default ``width = midpoint / 6``, so beta starts within 0.25% of 0; the
    attribute ``width`` holds the value used)."""

    midpoint: int
    width: float | None = None
    end: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "midpoint", _steps("midpoint", self.midpoint))
        if self.width is None:
            object.__setattr__(self, "width", self.midpoint / 6)
        width = _number("width", self.width)
        if not (math.isfinite(width) and width > 0):
            raise ConfigError(f"Expected width > 0 (and finite) but got {self.width!r}")
        object.__setattr__(self, "width", width)
        object.__setattr__(self, "end", _nonneg("end", self.end))

    def __call__(self, step: int) -> float:
        u = (step - self.midpoint) / self.width
        return self.end / (1.0 + math.exp(-u)) if u > -700 else 0.0

    def unfinished(self, steps: int) -> str | None:
        """A warm-up that is not within 1% of ``end`` at the run's end (beta reaches 99% of
        ``end`` at ``midpoint + width * ln 99``): :meth:`BetaSchedule.unfinished`."""
        reach = self.midpoint + self.width * math.log(99)
        if reach <= steps or self.end == 0:
            return None
        default = math.isclose(self.width, self.midpoint / 6)
        latest = math.floor(steps / (1 + math.log(99) / 6) if default
                            else steps - self.width * math.log(99))
        fix = f"train for at least {math.ceil(reach)} steps"
        if latest >= 1:
            moved = SigmoidWarmup(latest, None if default else self.width, self.end)
            fix = f"put its midpoint at step {latest} or earlier ({moved.spec()}) or " + fix
        return self._short_of(steps, self.end, f"reaches 99% of its end at step "
                              f"{reach:.0f}, after the run's {steps} steps", fix)


@BETA_SCHEDULES.register("cyclical")
@dataclass(frozen=True)
class CyclicalWarmup(BetaSchedule):
    """Cyclical annealing (Fu et al. 2019): in each period of ``period`` steps beta rises linearly
    from 0 to ``end`` during the first ``ramp`` fraction, then stays at ``end``."""

    period: int
    ramp: float = 0.5
    end: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "period", _steps("period", self.period))
        ramp = _number("ramp", self.ramp)
        if not 0 < ramp <= 1:
            raise ConfigError(f"Expected 0 < ramp <= 1 but got {self.ramp!r}")
        object.__setattr__(self, "ramp", ramp)
        object.__setattr__(self, "end", _nonneg("end", self.end))

    def __call__(self, step: int) -> float:
        phase = (step % self.period) / self.period
        return self.end * min(phase / self.ramp, 1.0)

    def unfinished(self, steps: int) -> str | None:
        """A run that ends within a ramp, before beta is back at ``end`` (a period longer than
        the run, or a run that stops early in a cycle): :meth:`BetaSchedule.unfinished`."""
        done = (steps - 1) % self.period + 1  # steps of the last cycle in the run
        ramp = math.ceil(self.ramp * self.period - 1e-9)  # steps of a cycle's ramp
        if done >= ramp or self.end == 0:
            return None
        runs = [f"{steps - done + ramp} steps (to the end of this ramp)"]
        if steps > done:
            runs.insert(0, f"{steps - done} steps (whole periods)")
        why = (f"has a period of {self.period} steps, more than the run's {steps}, and a ramp "
               f"of {ramp}" if self.period > steps else
               f"ends the run {done} steps into a cycle whose ramp lasts {ramp}")
        fix = f"train for {' or '.join(runs)}"
        if self.period > steps:
            fix += f", or use a period of at most {steps} steps"
        return self._short_of(steps, self.end, why, fix)


def parse_schedule(text: str) -> BetaSchedule:
    """Parse a beta schedule from its command-line form, ``NAME[:ARG...]`` (one of
    :data:`BETA_SCHEDULES`, read by :meth:`~pyro_lvae.registry.Registry.parse`).

    ``constant[:VALUE]``, ``linear:STEPS[:START[:END]]``, ``sigmoid:MIDPOINT[:WIDTH[:END]]``,
    ``cyclical:PERIOD[:RAMP[:END]]``,
    ``geco:TARGET[:RATE[:SMOOTHING[:MIN_BETA[:MAX_BETA[:PATIENCE]]]]]``
    (:class:`~pyro_lvae.GECO`); a bare number is a constant. Every schedule's :meth:`spec
    <BetaSchedule.spec>` parses back to it.

    Example::

        >>> from pyro_lvae.annealing import parse_schedule
        >>> parse_schedule("linear:100")(50)
        0.5
        >>> parse_schedule("0.5").spec()
        'constant:0.5'
    """
    return BETA_SCHEDULES.parse(str(text))


#: the former names, kept for one release (a ``DeprecationWarning`` names the new one)
__getattr__ = deprecated_aliases(__name__, {
    "scale_latents": "weight_latents", "Schedule": "BetaSchedule", "Constant": "ConstantBeta",
    "Sigmoid": "SigmoidWarmup", "Cyclical": "CyclicalWarmup"}, globals())
