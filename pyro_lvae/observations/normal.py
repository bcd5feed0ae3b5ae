"""Normal observation models: a fixed, learned, per-channel, per-dimension or scheduled sigma.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.nn import PyroParam

from ..errors import ConfigError, DataError, check_positive, check_positive_int
from .base import Observation, _init_and_floor

__all__ = ["FixedScale", "LearnedScalarScale", "LearnedChannelScale", "LearnedVectorScale",
           "ScheduledScale", "BetaNLLNormal", "initial_scale"]


def initial_scale(data: torch.Tensor, fraction: float = 0.5) -> float:
    """A start for a learned sigma scaled to the data: ``fraction`` times the data's spread, the
    root-mean-square standard deviation of its coordinates over the first axis.

    The spread is the sigma of the collapsed solution (every z decoded to the data mean, KL = 0;
    Theorem 1 of Berger & Sebag). A learned sigma that starts at or above it starts in that
    solution's basin, and on some data never leaves it; half the spread (the default) avoided
    the collapsed start in every run of docs/reproduction.md, "The collapsed start". It is the
    default start of every learned sigma (``init_scale=None``: measured on the first batch the
    model sees); ``pyro-lvae train`` measures it on 10000 training points unless ``--sigma`` is
    given.

    :param torch.Tensor data: a sample of training data, ``(N, ...)`` with ``N >= 2``
    :param float fraction: the share of the spread to start at; 1 gives the spread itself
    """
    if not isinstance(data, torch.Tensor):
        raise DataError(f"Expected the data as a torch.Tensor but got {type(data).__name__}")
    if data.dim() < 2 or data.shape[0] < 2:
        raise DataError(f"Expected at least two data points, shape (N, ...) with N >= 2, but got "
                        f"shape {tuple(data.shape)}")
    fraction = check_positive("fraction", fraction)
    x = data.detach().reshape(data.shape[0], -1).to(torch.float64)  # no overflow on large data
    if not torch.isfinite(x).all():
        raise DataError("the data hold NaN or infinite values; clean them before measuring "
                        "their spread")
    spread = float(x.var(dim=0).mean().sqrt())
    if spread == 0:
        raise DataError("every data point is the same (spread 0): there is nothing to model; "
                        "give the initial sigma yourself if this is intended")
    return fraction * spread


def _normal(loc: torch.Tensor, scale: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
    return dist.Normal(loc, scale).to_event(event_dim)


class _OneScale(Observation):
    """A sigma given, not learned, shared by every dimension: ``self.scale``."""

    location_first = True

    scale: torch.Tensor

    @property
    def shared_scale(self) -> torch.Tensor:
        return self.scale

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return _normal(output, self.scale.to(output.dtype), event_dim)


class FixedScale(_OneScale):
    """F-VAE: ``p(x | z) = N(mu(z), scale^2)`` with a fixed ``scale``.

    Training with a mean squared error is this model with ``scale = 1/sqrt(2)`` (up to constants).

    :param float scale: the fixed standard deviation sigma (> 0)

    Example::

        >>> import torch, pyro_lvae as lv
        >>> p = lv.FixedScale(0.1)(torch.zeros(3, 2), event_dim=1)
        >>> round(float(p.log_prob(torch.zeros(3, 2))[0]), 4)   # 2 log N(0 | 0, 0.1^2)
        2.7673
    """

    kind = "fixed"
    label, constant, shared = "F-VAE", True, True

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(check_positive("scale", scale)))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": float(self.scale)}


_PAPER_START = 1.0  # the paper's start, and the value every learned sigma had before it started


class _LearnedStart:
    """The start of a learned sigma: given (``init_scale``) or taken from the data
    (``init_scale=None``: :func:`initial_scale` of the first batch, through :meth:`initialize`).

    The start is saved with the weights (the module's extra state), so that a loaded or resumed
    model keeps it and is never re-started from other data."""

    init_scale: float | None
    min_scale: float

    def _set_floor_and_start(self, init_scale: Any, min_scale: Any) -> None:
        self.min_scale = check_positive("min_scale", min_scale)
        self.init_scale = None
        if init_scale is not None:
            self.init_scale, _ = _init_and_floor(init_scale, self.min_scale)

    @property
    def started(self) -> bool:
        """Whether sigma has its start (given, measured, or loaded)."""
        return self.init_scale is not None

    @property
    def initialized(self) -> bool:
        """Whether sigma has its start (:attr:`started`): nothing data-dependent is pending."""
        return self.started

    def initialize(self, x: torch.Tensor) -> None:
        """Start sigma at :func:`initial_scale` ``(x)`` (half the spread of the batch ``x``) if
        no start was given; a no-op once started."""
        if self.started:
            return
        start = initial_scale(x)
        if start <= self.min_scale:
            raise ConfigError(
                f"the data's spread gives a start of {start:.4g} for sigma, at or below "
                f"min_scale={self.min_scale}; lower min_scale or give init_scale"
            )
        self._take_start(start)
        self._write_start(start)

    def _take_start(self, start: float) -> None:
        self.init_scale = float(start)

    def _write_start(self, start: float) -> None:
        """Set the learned parameter to ``start`` (models whose sigma is a parameter)."""

    def _require_start(self) -> None:
        if not self.started:
            raise ConfigError(
                f"{type(self).__name__}() starts sigma from the data, but it has not seen any: "
                f"call .initialize(x) with a batch of training data before training "
                f"(vae.initialize(x) for a pyro_lvae VAE, which fit and the model's first "
                f"observed batch make), or give init_scale (lv.initial_scale(x), or 1.0 for "
                f"the paper's start)"
            )

    def get_extra_state(self) -> torch.Tensor:
        start = math.nan if self.init_scale is None else self.init_scale
        return torch.tensor(start, dtype=torch.float64)  # the exact start, as measured

    def set_extra_state(self, state: Any) -> None:
        value = float(state)
        if math.isfinite(value):
            self._take_start(value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        saved_start = prefix + "_extra_state" in state_dict
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if not saved_start and not self.started:  # written before starts were saved: 1
            self._take_start(_PAPER_START)


class _LearnedParameter(_LearnedStart):
    """A learned sigma held as a ``PyroParam`` named ``scale`` (one, or one per channel),
    ``min_scale + exp(u)`` with ``u`` unconstrained."""

    def _make_scale(self, shape: tuple[int, ...] = ()) -> None:
        start = _PAPER_START if self.init_scale is None else self.init_scale
        if start <= self.min_scale:  # a data start comes later; any value above the floor
            start = 2 * self.min_scale
        self.scale = PyroParam(torch.full(shape, start), constraints.greater_than(self.min_scale),
                               event_dim=len(shape))

    def _write_start(self, start: float) -> None:
        with torch.no_grad():
            self.scale_unconstrained.fill_(math.log(start - self.min_scale))

    @property
    def shared_scale(self) -> torch.Tensor:
        return self.scale


class LearnedScalarScale(_LearnedParameter, Observation):
    """LS-VAE: one learned sigma shared by every data dimension (Berger & Sebag, Eq. 10).

    sigma is a :class:`~pyro.nn.PyroParam` of this module, constrained to ``(min_scale, inf)``,
    so it trains on every path that trains the module: ``SVI`` with a Pyro optimiser, a torch
    optimiser over ``Trace_ELBO()(model, guide).parameters()``, Lightning and DDP. The
    parametrisation ``sigma = min_scale + exp(u)`` reaches any value above the floor.

    :param float init_scale: initial sigma. ``None`` (default): half the spread of the first
        batch of data (:func:`initial_scale`), below the collapsed solution at any data scale.
        ``1.0`` is the paper's start (the latent term dominates early training, the
        self-annealing start); on data whose spread is near or below 1 it sits in the
        collapsed solution's basin
    :param float min_scale: floor on sigma, below ``init_scale``

    Example::

        >>> import torch, pyro_lvae as lv
        >>> obs = lv.LearnedScalarScale()
        >>> obs.initialize(torch.tensor([[0.0], [2.0]]))   # spread 1.414: start at 0.707
        >>> round(float(obs.scale), 3)
        0.707
    """

    location_first = True
    kind = "learned-scalar"
    label, learned, shared = "LS-VAE", True, True

    def __init__(self, *, init_scale: float | None = None, min_scale: float = 1e-3) -> None:
        super().__init__()
        self._set_floor_and_start(init_scale, min_scale)
        self._make_scale()

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        self._require_start()
        return _normal(output, self.scale.to(output.dtype), event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "init_scale": self.init_scale, "min_scale": self.min_scale}


class LearnedChannelScale(_LearnedParameter, Observation):
    """A learned sigma per channel: the first event axis (an image's colour channels, a table's
    columns), shared over the rest (the pixels). A ``PyroParam`` of shape ``(channels,)``,
    floored like :class:`LearnedScalarScale`; it does not depend on ``z``.

    :param int channels: size of the first event axis
    :param float init_scale: initial sigma of every channel; ``None`` (default): half the
        spread of the first batch of data (:func:`initial_scale`)
    :param float min_scale: floor on every sigma
    """

    location_first = True
    kind = "learned-channel"
    label, learned = "learned sigma per channel", True

    def __init__(self, channels: int, *, init_scale: float | None = None,
                 min_scale: float = 1e-3) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self._set_floor_and_start(init_scale, min_scale)
        self._make_scale((channels,))

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        channels = output.shape[output.dim() - event_dim]
        if channels != self.channels:
            raise ConfigError(f"LearnedChannelScale has {self.channels} channel(s) but the data "
                              f"have {channels}")
        self._require_start()
        scale = self.scale.to(output.dtype).reshape((channels,) + (1,) * (event_dim - 1))
        return _normal(output, scale, event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "init_scale": self.init_scale,
                "min_scale": self.min_scale}


class _DecoderScale(_LearnedStart, Observation):
    """A scale per data dimension output by the decoder: the output's first half along the
    channel axis is the location, the second a raw scale turned into
    ``sigma = min_scale + softplus(raw + c)``, with ``c`` chosen so that a raw output of 0
    gives ``init_scale``. Subclasses make the distribution from :meth:`loc_and_scale`."""

    outputs_per_channel = 2
    location_first = True

    def __init__(self, *, init_scale: float | None = None, min_scale: float = 1e-3) -> None:
        super().__init__()
        self._set_floor_and_start(init_scale, min_scale)
        self._offset = math.nan
        if self.init_scale is not None:
            self._take_start(self.init_scale)
        self._checked_outputs = False

    def _take_start(self, start: float) -> None:
        super()._take_start(start)
        # softplus(offset) = init_scale - min_scale
        self._offset = math.log(math.expm1(start - self.min_scale))

    def scale_from_raw(self, raw: torch.Tensor) -> torch.Tensor:
        """``min_scale + softplus(raw + c)``: the scale for a raw decoder output."""
        self._require_start()
        if not self._checked_outputs and not torch.jit.is_tracing():
            self._check_unsquashed(raw)
        return self.min_scale + F.softplus(raw + self._offset)

    def loc_and_scale(self, output: torch.Tensor,
                      event_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The location and the scale (floored) from the decoder output."""
        loc, raw = output.chunk(2, dim=-event_dim)
        return loc, self.scale_from_raw(raw)

    def _check_unsquashed(self, raw: torch.Tensor) -> None:
        """Warn when every scale output of the first batch lies in [0, 1] around its middle
        (mean between 0.2 and 0.8), the sign of a sigmoid; judged only on 8 dimensions or more
        and 256 values. A linear head at its random start gives outputs spread around its
        bias, often small (a convolutional decoder's lie within a few hundredths of 0): those
        are not taken for a sigmoid's."""
        self._checked_outputs = True
        dims = raw[0].numel() if raw.dim() else 0
        if dims < 8 or raw.numel() < 256:
            return
        raw = raw.detach()
        middle = 0.2 < float(raw.float().mean()) < 0.8
        if middle and bool(((raw >= 0) & (raw <= 1)).all()):
            warnings.warn(
                f"every scale output of the decoder lies in [0, 1] (squashed by a sigmoid?): "
                f"sigma = min_scale + softplus(raw + c) then stays between "
                f"{self.init_scale:.4g} and {self.init_scale + 1:.4g} and cannot sharpen. "
                f"Leave the scale half of the decoder's output linear (unsquashed)",
                stacklevel=5,
            )

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "init_scale": self.init_scale, "min_scale": self.min_scale}


class LearnedVectorScale(_DecoderScale):
    """LV-VAE: the decoder outputs a sigma per data dimension (Berger & Sebag, Eq. 11).

    The decoder has twice the output channels: the first half is the location, the second a raw
    scale turned into ``sigma = min_scale + softplus(raw + c)``, with ``c`` chosen so that a raw
    output of 0 gives ``init_scale``. softplus does not overflow for large raw values and, unlike
    a ``1 + softplus`` form, lets sigma fall anywhere above the floor.

    The scale half must be *unsquashed* (a linear output): a decoder that passes it through a
    sigmoid or a ReLU (as Pyro's example decoders do for their means) pins sigma at or above
    ``init_scale``. A one-time check on the first batch warns when every scale output lies in
    [0, 1] (for 8 dimensions or more).

    **beta-NLL** (``beta_nll > 0``, after Seitzer et al. 2022): the gradient of each
    dimension's negative log-density is weighted by ``w_i = sg(sigma_i^(2 beta_nll))``,
    normalised to mean 1 over the dimensions of each data point, for the location and the
    scale alike, while the *value* stays the Normal log-density. The loss that Pyro's ELBOs,
    :func:`pyro_lvae.fit` and :mod:`pyro_lvae.evaluate` report is then still the true ELBO, but
    training follows the gradient field ``sum_i w_i grad NLL_i + grad KL``, which is not the
    ELBO's gradient (nor in general the gradient of any objective): dimensions the model calls
    noisy (large sigma) keep their pull on the mean, countering the ``1/sigma^2`` weighting by
    which a heteroscedastic Normal learns to call structure noise. ``beta_nll = 0`` is the
    ELBO; ``beta_nll = 1`` gives the location the gradient of a squared error (divided by the
    point's mean variance). The normalisation is ours: Seitzer et al. (regression, no latent
    term) weight by ``sigma_i^(2 beta)`` alone, which in a VAE also shrinks the whole
    reconstruction term against the KL term as sigma falls; on the artificial problem that
    kept sigma near 0.7 for 6000 steps (docs/observations.md).

    :param float init_scale: sigma for a raw decoder output of 0 (the start of training);
        ``None`` (default): half the spread of the first batch of data (:func:`initial_scale`)
    :param float min_scale: floor on every sigma; keeps the likelihood bounded on constant or
        quantised dimensions
    :param float beta_nll: the beta-NLL exponent in [0, 1] (0: the ELBO's gradient)

    **References**

    - M. Seitzer, A. Tavakoli, D. Antic, G. Martius. *On the Pitfalls of Heteroscedastic
      Uncertainty Estimation with Probabilistic Neural Networks*. ICLR 2022.
    """

    kind = "learned-vector"
    label, learned = "LV-VAE", True

    def __init__(self, *, init_scale: float | None = None, min_scale: float = 1e-3,
                 beta_nll: float = 0.0) -> None:
        super().__init__(init_scale=init_scale, min_scale=min_scale)
        try:
            beta_nll = float(beta_nll)
        except (TypeError, ValueError):
            raise ConfigError(f"Expected beta_nll to be a number in [0, 1] but got "
                              f"{beta_nll!r}") from None
        if not 0.0 <= beta_nll <= 1.0:
            raise ConfigError(f"Expected beta_nll in [0, 1] but got {beta_nll}")
        self.beta_nll = beta_nll

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        loc, scale = self.loc_and_scale(output, event_dim)
        if self.beta_nll:
            return BetaNLLNormal(loc, scale, self.beta_nll, event_dim).to_event(event_dim)
        return _normal(loc, scale, event_dim)

    def config(self) -> dict[str, Any]:
        config = super().config()
        if self.beta_nll:  # absent from configs that predate it: 0
            config["beta_nll"] = self.beta_nll
        return config


class BetaNLLNormal(dist.Normal):
    """A Normal whose ``log_prob`` has the Normal's value and the beta-NLL gradient: each
    element's gradient is multiplied by ``stop_gradient(scale^(2 beta))``, normalised to mean 1
    over the last ``event_dim`` axes (the dimensions of one data point; see
    :class:`LearnedVectorScale`). Used by :class:`LearnedVectorScale` with ``beta_nll > 0``.

    :param torch.Tensor loc: the mean
    :param torch.Tensor scale: the standard deviation
    :param float beta: the exponent in [0, 1]
    :param int event_dim: the axes of one data point, over which the weights have mean 1
        (0: no normalisation, Seitzer et al.'s weights)
    """

    def __init__(self, loc: torch.Tensor, scale: torch.Tensor, beta: float,
                 event_dim: int = 0, validate_args: bool | None = None) -> None:
        super().__init__(loc, scale, validate_args=validate_args)
        self.beta, self.weight_dim = float(beta), int(event_dim)

    def expand(self, batch_shape, _instance=None):
        """This distribution over a new ``batch_shape``, with the same beta and weighting."""
        new = self._get_checked_instance(BetaNLLNormal, _instance)
        new = super().expand(batch_shape, _instance=new)
        new.beta, new.weight_dim = self.beta, self.weight_dim
        return new

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        log_p = super().log_prob(value)
        weight = self.scale.detach().expand(log_p.shape) ** (2 * self.beta)
        if self.weight_dim:
            weight = weight / weight.mean(tuple(range(-self.weight_dim, 0)), keepdim=True)
        # value: log_p exactly; gradient: weight * grad(log_p)
        return log_p.detach() + weight * (log_p - log_p.detach())


class ScheduledScale(_OneScale):
    """A fixed sigma that follows a per-step schedule (the paper's annealing replay).

    At training step ``t`` sigma is ``schedule[min(t, len(schedule) - 1)]``. :func:`pyro_lvae.fit`
    calls :meth:`set_step` before every step; in a hand-written loop call it yourself. The
    schedule is a buffer, so it is saved with the model.

    :param schedule: sigma per step (a sequence or 1-D tensor of positive numbers), for instance
        the trajectory recorded by an LS-VAE run (see :meth:`from_history`)
    """

    kind = "scheduled"
    label, shared = "scheduled sigma", True

    def __init__(self, schedule: Sequence[float] | torch.Tensor) -> None:
        super().__init__()
        values = torch.as_tensor(schedule, dtype=torch.get_default_dtype()).detach().clone()
        if values.ndim != 1 or values.numel() == 0:
            raise ConfigError(
                f"Expected schedule to be a non-empty 1-D sequence of scales but got shape "
                f"{tuple(values.shape)}"
            )
        if not (torch.isfinite(values).all() and (values > 0).all()):
            raise ConfigError("Expected every scale in schedule to be positive and finite")
        self.register_buffer("schedule", values)
        self._step = 0

    @classmethod
    def from_history(cls, history: Any) -> ScheduledScale:
        """Replay the sigma trajectory of a training history (a :class:`~pyro_lvae.History`
        or a mapping with a ``"sigma"`` column)."""
        sigma = torch.as_tensor(history["sigma"], dtype=torch.get_default_dtype())
        if sigma.numel() == 0 or not torch.isfinite(sigma).all():
            raise ConfigError("the history has no finite 'sigma' trajectory to replay")
        return cls(sigma)

    def set_step(self, step: int) -> None:
        self._step = int(step)

    @property
    def scale(self) -> torch.Tensor:
        """sigma at the current step."""
        return self.schedule[min(self._step, self.schedule.numel() - 1)]

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "length": self.schedule.numel()}

    def extra_repr(self) -> str:
        s = self.schedule
        return f"steps={s.numel()}, first={float(s[0]):.4g}, last={float(s[-1]):.4g}"


