"""Observation models p(x | z): the part of a VAE that the L-VAE variants change.

An observation model turns the decoder's output into a distribution over one data point, with
the full log-density (constants and ``log sigma`` included), so that the ELBOs of fixed-scale and
learned-scale models compare directly. The variants of Berger & Sebag differ only here:

=====================================  ========================================================
:class:`FixedScale`                    F-VAE: ``N(mu(z), sigma^2)`` with a fixed sigma (F*-VAE)
:class:`LearnedScalarScale`            LS-VAE (their Eq. 10): one learned sigma, a ``PyroParam``
:class:`LearnedChannelScale`           a learned sigma per channel (image channel, table column)
:class:`LearnedVectorScale`            LV-VAE (their Eq. 11): the decoder outputs a sigma per
                                       dimension (per pixel for images)
:class:`ScheduledScale`                a fixed sigma that follows a per-step schedule
:class:`BernoulliObservation`          Bernoulli logits, for binary data only
:class:`ContinuousBernoulliObservation`  continuous Bernoulli, for data in [0, 1]
:class:`MixedObservation`              rows of a table: Normal, Bernoulli and Categorical
                                       columns
=====================================  ========================================================

Learned scales are floored at ``min_scale``: on constant or quantised dimensions the Normal
likelihood is unbounded as sigma -> 0, and an unfloored per-dimension sigma shrinks until the
loss turns NaN. The floor keeps the likelihood bounded; set it near the data's quantisation step.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.nn import PyroModule, PyroParam

from .errors import ConfigError, DataError, check_positive_int

__all__ = [
    "Observation",
    "FixedScale",
    "LearnedScalarScale",
    "LearnedChannelScale",
    "LearnedVectorScale",
    "ScheduledScale",
    "BernoulliObservation",
    "ContinuousBernoulliObservation",
    "MixedObservation",
    "MixedColumns",
    "SIGMA_MODES",
    "observation_from_config",
    "OBSERVATIONS",
    "initial_scale",
]


_instances = itertools.count()


def _positive(name: str, value: Any) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a positive number but got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"Expected {name} > 0 (and finite) but got {value}")
    return value


def _init_and_floor(init_scale: Any, min_scale: Any) -> tuple[float, float]:
    init_scale = _positive("init_scale", init_scale)
    min_scale = _positive("min_scale", min_scale)
    if init_scale <= min_scale:
        raise ConfigError(
            f"Expected init_scale > min_scale but got init_scale={init_scale}, "
            f"min_scale={min_scale}"
        )
    return init_scale, min_scale


def initial_scale(data: torch.Tensor, fraction: float = 0.5) -> float:
    """A start for a learned sigma scaled to the data: ``fraction`` times the data's spread, the
    root-mean-square standard deviation of its coordinates over the first axis.

    The spread is the sigma of the collapsed solution (every z decoded to the data mean, KL = 0;
    Theorem 1 of Berger & Sebag). A learned sigma that starts at or above it starts in that
    solution's basin, and on some data never leaves it; half the spread (the default) avoided
    the collapsed start in every run of docs/reproduction.md, "The collapsed start". Use it as
    ``LearnedScalarScale(init_scale=initial_scale(x))``; ``pyro-lvae train`` does so when
    ``--sigma`` is not given.

    :param torch.Tensor data: a sample of training data, ``(N, ...)`` with ``N >= 2``
    :param float fraction: the share of the spread to start at; 1 gives the spread itself
    """
    if not isinstance(data, torch.Tensor):
        raise DataError(f"Expected the data as a torch.Tensor but got {type(data).__name__}")
    if data.dim() < 2 or data.shape[0] < 2:
        raise DataError(f"Expected at least two data points, shape (N, ...) with N >= 2, but got "
                        f"shape {tuple(data.shape)}")
    fraction = _positive("fraction", fraction)
    x = data.detach().reshape(data.shape[0], -1)
    if not x.is_floating_point():  # raw pixels, counts
        x = x.to(torch.get_default_dtype())
    if not torch.isfinite(x).all():
        raise DataError("the data hold NaN or infinite values; clean them before measuring "
                        "their spread")
    spread = float(x.var(dim=0).mean().sqrt())
    if spread == 0:
        raise DataError("every data point is the same (spread 0): there is nothing to model; "
                        "give the initial sigma yourself if this is intended")
    return fraction * spread


class Observation(PyroModule):
    """Base class: maps decoder output to ``p(x | z)``.

    Subclasses set :attr:`outputs_per_channel`, the number of decoder outputs per data channel
    (1 for a location only, 2 for a location and a scale), and implement :meth:`forward`.
    The channel axis is the first event axis: features for vectors, channels for images.
    """

    #: decoder outputs per data channel
    outputs_per_channel: int = 1
    #: short name used by the command line and in saved configurations
    kind: str = ""

    def __init__(self) -> None:
        # a unique root name, so that two observation models used on their own never share a
        # param-store entry; a parent PyroModule (the VAE's model) renames it on assignment
        super().__init__(f"{self.kind or 'observation'}{next(_instances)}")

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The decoder output per data point for data of shape ``data_shape``:
        ``outputs_per_channel`` times the channels (first axis), the rest unchanged."""
        return (self.outputs_per_channel * data_shape[0],) + tuple(data_shape[1:])

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        """Return ``p(x | z)`` given the decoder output for ``z``.

        :param torch.Tensor output: decoder output, shape ``batch + (k * C,) + rest``
        :param int event_dim: number of event dimensions of one data point
        """
        raise NotImplementedError

    def set_step(self, step: int) -> None:
        """Tell the observation model the current training step (used by schedules)."""

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`~pyro_lvae.errors.DataError` if ``x`` lies outside the support.

        Normal models accept any finite value (finiteness is checked with the data's shape)."""

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description; :func:`observation_from_config` rebuilds from it."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")


def _normal(loc: torch.Tensor, scale: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
    return dist.Normal(loc, scale).to_event(event_dim)


class FixedScale(Observation):
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

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.register_buffer("scale", torch.tensor(_positive("scale", scale)))

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return _normal(output, self.scale.to(output.dtype), event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "scale": float(self.scale)}


class LearnedScalarScale(Observation):
    """LS-VAE: one learned sigma shared by every data dimension (Berger & Sebag, Eq. 10).

    sigma is a :class:`~pyro.nn.PyroParam` of this module, constrained to ``(min_scale, inf)``,
    so it trains on every path that trains the module: ``SVI`` with a Pyro optimiser, a torch
    optimiser over ``Trace_ELBO()(model, guide).parameters()``, Lightning and DDP. The
    parametrisation ``sigma = min_scale + exp(u)`` reaches any value above the floor.

    :param float init_scale: initial sigma; the paper starts at 1 so that the latent term
        dominates early training (the self-annealing start). On data whose spread is near or
        below 1 that start sits in the collapsed solution's basin; :func:`initial_scale` (half
        the data's spread) is the start that never collapsed in our runs
    :param float min_scale: floor on sigma, below ``init_scale``
    """

    kind = "learned-scalar"

    def __init__(self, init_scale: float = 1.0, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.init_scale, self.min_scale = _init_and_floor(init_scale, min_scale)
        self.scale = PyroParam(torch.tensor(self.init_scale),
                               constraints.greater_than(self.min_scale))

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return _normal(output, self.scale.to(output.dtype), event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "init_scale": self.init_scale, "min_scale": self.min_scale}


class LearnedChannelScale(Observation):
    """A learned sigma per channel: the first event axis (an image's colour channels, a table's
    columns), shared over the rest (the pixels). A ``PyroParam`` of shape ``(channels,)``,
    floored like :class:`LearnedScalarScale`; it does not depend on ``z``.

    :param int channels: size of the first event axis
    :param float init_scale: initial sigma of every channel
    :param float min_scale: floor on every sigma
    """

    kind = "learned-channel"

    def __init__(self, channels: int, init_scale: float = 1.0, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.channels = check_positive_int("channels", channels)
        self.init_scale, self.min_scale = _init_and_floor(init_scale, min_scale)
        self.scale = PyroParam(torch.full((channels,), self.init_scale),
                               constraints.greater_than(self.min_scale), event_dim=1)

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        channels = output.shape[output.dim() - event_dim]
        if channels != self.channels:
            raise ConfigError(f"LearnedChannelScale has {self.channels} channel(s) but the data "
                              f"have {channels}")
        scale = self.scale.to(output.dtype).reshape((channels,) + (1,) * (event_dim - 1))
        return _normal(output, scale, event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "channels": self.channels, "init_scale": self.init_scale,
                "min_scale": self.min_scale}


class LearnedVectorScale(Observation):
    """LV-VAE: the decoder outputs a sigma per data dimension (Berger & Sebag, Eq. 11).

    The decoder has twice the output channels: the first half is the location, the second a raw
    scale turned into ``sigma = min_scale + softplus(raw + c)``, with ``c`` chosen so that a raw
    output of 0 gives ``init_scale``. softplus does not overflow for large raw values and, unlike
    a ``1 + softplus`` form, lets sigma fall anywhere above the floor.

    :param float min_scale: floor on every sigma; keeps the likelihood bounded on constant or
        quantised dimensions
    :param float init_scale: sigma for a raw decoder output of 0 (the start of training)
    """

    kind = "learned-vector"
    outputs_per_channel = 2

    def __init__(self, min_scale: float = 1e-3, init_scale: float = 1.0) -> None:
        super().__init__()
        self.init_scale, self.min_scale = _init_and_floor(init_scale, min_scale)
        # softplus(offset) = init_scale - min_scale
        self._offset = math.log(math.expm1(self.init_scale - self.min_scale))

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        loc, raw = output.chunk(2, dim=-event_dim)
        scale = self.min_scale + F.softplus(raw + self._offset)
        return _normal(loc, scale, event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "min_scale": self.min_scale, "init_scale": self.init_scale}


class ScheduledScale(Observation):
    """A fixed sigma that follows a per-step schedule (the paper's annealing replay).

    At training step ``t`` sigma is ``schedule[min(t, len(schedule) - 1)]``. :func:`pyro_lvae.fit`
    calls :meth:`set_step` before every step; in a hand-written loop call it yourself. The
    schedule is a buffer, so it is saved with the model.

    :param schedule: sigma per step (a sequence or 1-D tensor of positive numbers), for instance
        the trajectory recorded by an LS-VAE run (see :meth:`from_history`)
    """

    kind = "scheduled"

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

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return _normal(output, self.scale.to(output.dtype), event_dim)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "length": self.schedule.numel()}

    def extra_repr(self) -> str:
        s = self.schedule
        return f"steps={s.numel()}, first={float(s[0]):.4g}, last={float(s[-1]):.4g}"


class BernoulliObservation(Observation):
    """``p(x | z) = Bernoulli(logits = decoder(z))``, for binary data (0 or 1) only.

    Non-binary data are refused (with Pyro's validation on, and by :func:`pyro_lvae.fit` on the
    first batch): a Bernoulli likelihood on grey levels is not a density of those data.
    Binarise them (:class:`pyro_lvae.datasets.Binarize`) or use
    :class:`ContinuousBernoulliObservation` or a Normal model.
    """

    kind = "bernoulli"

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=output).to_event(event_dim)

    def check_support(self, x: torch.Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            raise DataError(
                "the Bernoulli observation model needs binary data (0 or 1) but got other "
                "values; binarise the data (for instance x > 0.5) or use "
                "ContinuousBernoulliObservation or a Normal model for grey levels"
            )

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}


class ContinuousBernoulliObservation(Observation):
    """``p(x | z) = ContinuousBernoulli(logits = decoder(z))`` (Loaiza-Ganem & Cunningham 2019):
    a normalised density on [0, 1], for grey levels scaled to [0, 1]."""

    kind = "continuous-bernoulli"

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=output).to_event(event_dim)

    def check_support(self, x: torch.Tensor) -> None:
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise DataError(
                f"the continuous Bernoulli observation model needs data in [0, 1] but got values "
                f"in [{float(x.min()):.3g}, {float(x.max()):.3g}]; scale the data to [0, 1]"
            )

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}


#: how a mixed table's continuous columns get their sigma
SIGMA_MODES = ("fixed", "learned-scalar", "learned-column", "decoder", "tvae")


class MixedColumns(TorchDistribution):
    """The distribution of a row of mixed columns (event shape: the number of columns).

    ``mean``: the Normal mean of continuous columns, the probability of binary ones and the most
    probable category of categorical ones; ``sample``: a draw of every column;
    ``scale``: the continuous columns' sigma.
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector

    def __init__(self, layout: dict[str, Any], loc: torch.Tensor, scale: torch.Tensor,
                 bin_logits: torch.Tensor, cat_logits: list[torch.Tensor]) -> None:
        self.layout = layout
        self.loc, self.scale, self.bin_logits, self.cat_logits = loc, scale, bin_logits, cat_logits
        super().__init__(loc.shape[:-1], torch.Size([layout["n"]]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return MixedColumns(self.layout, self.loc.expand(shape + self.loc.shape[-1:]),
                            self.scale.expand(shape + self.scale.shape[-1:]),
                            self.bin_logits.expand(shape + self.bin_logits.shape[-1:]),
                            [c.expand(shape + c.shape[-1:]) for c in self.cat_logits])

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        lp = dist.Normal(self.loc, self.scale).log_prob(x[..., lay["cont"]]).sum(-1)
        if lay["bin"]:
            lp = lp + dist.Bernoulli(logits=self.bin_logits).log_prob(
                x[..., lay["bin"]]).sum(-1)
        for j, logits in zip(lay["cat"], self.cat_logits, strict=True):
            lp = lp + dist.Categorical(logits=logits).log_prob(x[..., j].long())
        return lp

    def _assemble(self, cont, binary, cats) -> torch.Tensor:
        lay = self.layout
        out = self.loc.new_zeros(self.batch_shape + (lay["n"],))
        out[..., lay["cont"]] = cont
        if lay["bin"]:
            out[..., lay["bin"]] = binary
        for j, c in zip(lay["cat"], cats, strict=True):
            out[..., j] = c.to(out.dtype)
        return out

    def sample(self, sample_shape=()):
        if sample_shape:
            return self.expand(torch.Size(sample_shape) + self.batch_shape).sample()
        return self.draw("sample", "sample")

    @property
    def mean(self) -> torch.Tensor:
        return self._assemble(self.loc, torch.sigmoid(self.bin_logits),
                              [lg.argmax(-1) for lg in self.cat_logits])

    @property
    def mode(self) -> torch.Tensor:
        """Decoder means for continuous columns, the likelier value of binary and categorical
        ones."""
        return self.draw("mean", "argmax")

    @torch.no_grad()
    def draw(self, continuous: str = "sample", discrete: str = "sample") -> torch.Tensor:
        """Rows with continuous columns drawn (``"sample"``) or at their mean (``"mean"``),
        and binary and categorical columns drawn (``"sample"``) or at their likelier value
        (``"argmax"``: TVAE's decoding)."""
        if continuous not in ("sample", "mean") or discrete not in ("sample", "argmax"):
            raise ConfigError(f"Expected continuous in (sample, mean) and discrete in (sample, "
                              f"argmax) but got {continuous!r}, {discrete!r}")
        cont = dist.Normal(self.loc, self.scale).sample() if continuous == "sample" else self.loc
        if discrete == "sample":
            binary = dist.Bernoulli(logits=self.bin_logits).sample()
            cats = [dist.Categorical(logits=lg).sample() for lg in self.cat_logits]
        else:
            binary = (self.bin_logits > 0).to(self.loc.dtype)
            cats = [lg.argmax(-1) for lg in self.cat_logits]
        return self._assemble(cont, binary, cats)


class MixedObservation(Observation):
    """``p(x | z)`` for rows of mixed columns (a table encoded by
    :class:`pyro_lvae.tabular.TableTransformer`): one observed site per row whose log-density
    sums a Normal term per continuous column, a Bernoulli term per binary column and a
    Categorical term per categorical column. The continuous columns' sigma is ``fixed``,
    ``learned-scalar`` (one for all columns), ``learned-column`` (one per column, not depending
    on z), ``decoder`` (output by the decoder per column and row: the LV-VAE of tables) or
    ``tvae`` (one per column, clamped to [0.01, 1], as in CTGAN's TVAE).

    :param schema: per column ``["continuous"]``, ``["binary"]`` or ``["categorical", K]``
        (:meth:`TableTransformer.schema`)
    :param str sigma_mode: one of :data:`SIGMA_MODES`
    :param float sigma: the fixed sigma (``fixed``) or the initial one (learned modes); by
        default 1, and 0.1 for ``tvae`` (CTGAN's start, strictly inside the clamp: at a bound
        the clamp passes no gradient and sigma would never move)
    :param float min_scale: floor on learned sigmas (``tvae``: 0.01)
    :param float max_scale: ceiling, for ``tvae`` only (1.0)
    """

    kind = "mixed"

    def __init__(self, schema: list[list[Any]], sigma_mode: str = "learned-column",
                 sigma: float | None = None, min_scale: float = 1e-3,
                 max_scale: float = 1.0) -> None:
        super().__init__()
        if sigma_mode not in SIGMA_MODES:
            raise ConfigError(f"unknown sigma mode {sigma_mode!r}; expected one of "
                              f"{', '.join(SIGMA_MODES)}")
        self.schema = [list(c) for c in schema]
        cont = [j for j, c in enumerate(self.schema) if c[0] == "continuous"]
        binary = [j for j, c in enumerate(self.schema) if c[0] == "binary"]
        cat = [j for j, c in enumerate(self.schema) if c[0] == "categorical"]
        bad = [c for c in self.schema if c[0] not in ("continuous", "binary", "categorical")]
        if bad or not self.schema:
            raise ConfigError(f"a schema lists columns as ['continuous'], ['binary'] or "
                              f"['categorical', K]; got {bad or 'no columns'}")
        self.layout = {"n": len(self.schema), "cont": cont, "bin": binary, "cat": cat,
                       "k": [int(self.schema[j][1]) for j in cat]}
        self.sigma_mode = sigma_mode
        if sigma is None:
            sigma = 0.1 if sigma_mode == "tvae" else 1.0
        if sigma_mode == "tvae":
            min_scale, max_scale = 0.01, 1.0
            if not 0.01 < sigma < 1.0:
                raise ConfigError(f"a TVAE-like sigma starts strictly inside (0.01, 1), where "
                                  f"its clamp passes gradients; got sigma={sigma} (leave it "
                                  f"unset for CTGAN's 0.1)")
        self.init_scale, self.min_scale = (_positive("sigma", sigma), _positive("min_scale",
                                                                               min_scale))
        self.max_scale = _positive("max_scale", max_scale)
        n_cont = max(len(cont), 1)
        if sigma_mode == "fixed":
            self.register_buffer("fixed_scale", torch.tensor(self.init_scale))
        elif sigma_mode in ("learned-scalar", "learned-column"):
            _init_and_floor(sigma, min_scale)
            size = () if sigma_mode == "learned-scalar" else (n_cont,)
            self.scale = PyroParam(torch.full(size, self.init_scale),
                                   constraints.greater_than(self.min_scale),
                                   event_dim=len(size))
        elif sigma_mode == "tvae":
            self.raw_scale = torch.nn.Parameter(torch.full((n_cont,), self.init_scale))
        else:  # decoder
            _init_and_floor(sigma, min_scale)
            self._offset = math.log(math.expm1(self.init_scale - self.min_scale))

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        lay = self.layout
        if tuple(data_shape) != (lay["n"],):
            raise ConfigError(f"the mixed observation model has {lay['n']} columns but the data "
                              f"shape is {tuple(data_shape)}")
        n_cont = len(lay["cont"]) * (2 if self.sigma_mode == "decoder" else 1)
        return (n_cont + len(lay["bin"]) + sum(lay["k"]),)

    def forward(self, output: torch.Tensor, event_dim: int) -> MixedColumns:
        lay = self.layout
        n_c = len(lay["cont"])
        loc, rest = output[..., :n_c], output[..., n_c:]
        if self.sigma_mode == "decoder":
            raw, rest = rest[..., :n_c], rest[..., n_c:]
            scale = self.min_scale + F.softplus(raw + self._offset)
        elif self.sigma_mode == "fixed":
            scale = self.fixed_scale.to(loc.dtype).expand_as(loc)
        elif self.sigma_mode == "tvae":
            scale = self.raw_scale[:n_c].clamp(self.min_scale, self.max_scale).expand_as(loc)
        else:
            s = self.scale.to(loc.dtype)
            scale = (s if s.dim() else s.expand(max(n_c, 1)))[:n_c].expand_as(loc)
        n_b = len(lay["bin"])
        bin_logits, rest = rest[..., :n_b], rest[..., n_b:]
        cats = list(rest.split(lay["k"], dim=-1)) if lay["k"] else []
        return MixedColumns(lay, loc, scale, bin_logits, cats)

    def check_support(self, x: torch.Tensor) -> None:
        lay = self.layout
        if lay["bin"]:
            b = x[..., lay["bin"]]
            if not bool(((b == 0) | (b == 1)).all()):
                raise DataError("binary columns must hold 0 or 1 (encode the table with "
                                "TableTransformer)")
        for j, k in zip(lay["cat"], lay["k"], strict=True):
            c = x[..., j]
            if not bool(((c == c.round()) & (c >= 0) & (c < k)).all()):
                raise DataError(f"categorical column {j} must hold codes 0..{k - 1} (encode the "
                                f"table with TableTransformer)")

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "schema": self.schema, "sigma_mode": self.sigma_mode,
                "sigma": self.init_scale, "min_scale": self.min_scale,
                "max_scale": self.max_scale}

    def extra_repr(self) -> str:
        lay = self.layout
        return (f"continuous={len(lay['cont'])}, binary={len(lay['bin'])}, "
                f"categorical={lay['k']}, sigma_mode={self.sigma_mode}")


#: observation models by their command-line name
OBSERVATIONS: dict[str, type[Observation]] = {
    cls.kind: cls for cls in (FixedScale, LearnedScalarScale, LearnedChannelScale,
                              LearnedVectorScale, ScheduledScale, BernoulliObservation,
                              ContinuousBernoulliObservation, MixedObservation)
}


def observation_from_config(config: dict[str, Any]) -> Observation:
    """Rebuild an observation model from :meth:`Observation.config` (weights not included)."""
    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in OBSERVATIONS:
        raise ConfigError(
            f"unknown observation model {kind!r}; expected one of {', '.join(OBSERVATIONS)}"
        )
    if kind == "scheduled":
        return ScheduledScale(torch.ones(int(config["length"])))
    return OBSERVATIONS[kind](**config)
