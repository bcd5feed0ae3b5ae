"""Likelihoods for 8-bit data: the mass of a Normal, a logistic or a mixture of logistics on each
of the 256 bins of a pixel value.

**Data convention.** The package keeps images as ``uint8`` and converts them per batch; these
models take the noise-free levels of :class:`pyro_lvae.datasets.UnitLevels`
(``pixels="unit-levels"``, ``--pixels unit-levels``): a pixel ``k`` in ``0..255`` is the value
``x = k / 255`` in ``[0, 1]``. Bin ``k`` is ``(x - 1/510, x + 1/510]`` (width ``1/255``, centred
on ``k / 255``); the edge bins are open, bin 0 is ``(-inf, 1/510]`` and bin 255 is
``(254.5/255, inf)``, so that the 256 masses sum to 1 for any location and scale. Dequantised
data (``(k + u) / 256``) are not on this grid and are refused: by the distribution itself
(:meth:`Discretized.log_prob`, whatever Pyro's validation setting, in a program of your own
too; its ``support`` is the grid, :data:`eight_bit_levels`), with a
:class:`~pyro_lvae.errors.DataError` that names the fix. A value counts as the level ``k`` when
``255 x`` lies within :data:`LEVEL_TOLERANCE` of ``k`` (float32 keeps ``k / 255`` within about
``2e-5`` of it; a dequantised value lands that close to a level with probability about
``2e-3`` per pixel, so an image of dequantised pixels is refused).

For a continuous family with CDF ``F``, location ``mu`` and scale ``s`` (both from the decoder,
per pixel), ``P(k) = F((x + h - mu) / s) - F((x - h - mu) / s)`` with ``h = 1/510``, computed in
log space:

- Normal: ``log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(d))``, ``d = log Phi(a) - log
  Phi(b)``, on the side of the mean where ``Phi`` is small (the bin is mirrored through the mean
  when it lies above it), with ``log Phi(u) = log(erfcx(-u / sqrt 2) / 2) - u^2 / 2``, so that
  ``d = (b^2 - a^2) / 2 + log erfcx(-a / sqrt 2) - log erfcx(-b / sqrt 2)`` is computed
  without subtracting two large log-CDFs: both tails are accurate, gradients included. Where
  ``d > -1e-3`` (``-5e-2`` in float32; a bin narrow against the scale) ``1 - exp(d)`` would
  lose digits, and the mass is the density at the bin's centre ``c`` times its width ``w``
  with the midpoint rule's second-order term, ``w phi(c) (1 + w^2 (c^2 - 1) / 24)``, whose
  relative error is of order ``d^4 / 2000`` there.
- logistic: exactly ``log(sigmoid(b) - sigmoid(a)) = log(-expm1(a - b)) - softplus(a) -
  softplus(-b)``, finite and accurate everywhere.

A mass is at most 1, so the likelihood is bounded (``log p(x | z) <= 0``) and needs no floor
on the scale beyond a numerical one (:data:`SCALE_FLOOR`, a fortieth of a bin). The negative
log-likelihood in nats is a code length for the 8-bit images: bits/dim are ``nll / (D ln 2)``,
with no dequantisation offset (:func:`pyro_lvae.datasets.bits_per_dim` with
``discrete=True``).

**References**

- T. Salimans, A. Karpathy, X. Chen, D. P. Kingma. *PixelCNN++: Improving the PixelCNN with
  Discretized Logistic Mixture Likelihood and Other Modifications*. ICLR 2017.
- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*.
  arXiv:2003.01972 (the unbounded likelihood of a learned per-pixel sigma on quantised data).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..errors import DataError, check_positive_int
from .normal import _DecoderScale

__all__ = ["DiscretizedNormal", "DiscretizedLogistic", "DiscretizedLogisticMixture",
           "Discretized", "lattice_normal_log_prob", "check_levels", "eight_bit_levels",
           "LEVELS", "LEVEL_TOLERANCE", "SCALE_FLOOR"]

#: pixel levels of 8-bit data
LEVELS = 256
#: half a bin, on the [0, 1] scale of ``k / 255``
_HALF = 0.5 / (LEVELS - 1)
#: the numerical floor on the scale (a fortieth of a bin): the likelihood is bounded without it
SCALE_FLOOR = 1e-4
#: below this difference of log-CDFs the Normal's bin mass takes the corrected midpoint rule
#: (float64; float32 switches earlier, where the difference keeps fewer digits)
_NARROW = {torch.float64: 1e-3, torch.float32: 5e-2}
_SQRT2 = math.sqrt(2)
#: how far ``255 x`` may lie from an integer ``k`` for ``x`` to count as the level ``k / 255``
LEVEL_TOLERANCE = 1e-3


class _EightBitLevels(constraints.Constraint):
    """The 256 values ``k / 255``, ``k = 0..255`` (within :data:`LEVEL_TOLERANCE`)."""

    is_discrete = True
    event_dim = 0

    def check(self, value: torch.Tensor) -> torch.Tensor:
        levels = value * (LEVELS - 1)
        return (((levels - levels.round()).abs() <= LEVEL_TOLERANCE)
                & (levels >= -LEVEL_TOLERANCE) & (levels <= LEVELS - 1 + LEVEL_TOLERANCE))

    def __repr__(self) -> str:
        return "EightBitLevels(k/255, k = 0..255)"


#: the support of the discretised models: the 8-bit levels ``k / 255`` in [0, 1]
eight_bit_levels = _EightBitLevels()


def _levels_error(value: torch.Tensor, on_grid: torch.Tensor, who: str) -> DataError:
    bad = value.detach()[~on_grid]
    return DataError(
        f"{who} models 8-bit values k/255 in [0, 1], but {bad.numel()} of {value.numel()} "
        f"values are off that grid (e.g. {float(bad.reshape(-1)[0]):.6g}; the values span "
        f"[{float(value.min()):.4g}, {float(value.max()):.4g}]). Feed it the levels k/255: "
        f"lv.datasets.UnitLevels() turns uint8 pixels k into k/255 without noise "
        f"(pixels='unit-levels', --pixels unit-levels); dequantised data ((k + u)/256, "
        f"lv.datasets.Dequantize) need a continuous model (e.g. lv.LearnedVectorScale)"
    )


def _all(flags: torch.Tensor) -> bool:
    """``bool(flags.all())``; inside a JIT trace without its warning (the traced batch's values
    are concrete, and the compiled step keeps no trace of the answer)."""
    if not torch.jit.is_tracing():
        return bool(flags.all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return bool(flags.all())


def check_levels(value: torch.Tensor, who: str = "a discretised likelihood") -> None:
    """Raise :class:`~pyro_lvae.errors.DataError` unless every value is an 8-bit level
    ``k / 255`` in [0, 1] (:data:`eight_bit_levels`): one vectorised check, the one behind
    :meth:`Discretized.log_prob` and the discretised models' ``check_support``.

    :param torch.Tensor value: the data
    :param str who: the model named in the message
    """
    on_grid = eight_bit_levels.check(value)
    if not _all(on_grid):
        raise _levels_error(value, on_grid, who)


def _log1mexp(d: torch.Tensor) -> torch.Tensor:
    """``log(1 - exp(d))`` for ``d < 0``, accurate near 0 and far from it (Maechler 2012)."""
    return torch.where(d > -math.log(2), torch.log(-torch.expm1(d)), torch.log1p(-torch.exp(d)))


def _log_ndtr(u: torch.Tensor) -> torch.Tensor:
    """``log Phi(u)`` through ``erfcx``: below 0, ``log(erfcx(-u / sqrt 2) / 2) - u^2 / 2``,
    accurate with accurate gradients far into the tail (where ``torch.special.log_ndtr``'s
    float32 gradient falls to 0); above 0, ``log1p(-Phi(-u))``."""
    neg = u < 0
    x = torch.where(neg, u, torch.zeros_like(u))
    lower = torch.log(torch.special.erfcx(-x / _SQRT2) / 2) - x**2 / 2
    y = torch.where(neg, torch.zeros_like(u), u)
    upper = torch.log1p(-torch.special.erfcx(y / _SQRT2) / 2 * torch.exp(-(y**2) / 2))
    return torch.where(neg, lower, upper)


def _normal_log_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(Phi(b) - Phi(a))`` for standardised edges ``a < b`` (see the module docstring)."""
    flip = (a + b) > 0  # mirror the bin to the lower side, where log Phi keeps its digits
    a, b = torch.where(flip, -b, a), torch.where(flip, -a, b)
    log_b = _log_ndtr(b)
    # below the mean, log Phi(a) - log Phi(b) without subtracting two large numbers:
    # (b^2 - a^2) / 2 + log erfcx(-a / sqrt 2) - log erfcx(-b / sqrt 2)
    tail = b <= 0
    one = torch.ones_like(a)
    d_tail = ((b - a) * (a + b) / 2 + torch.log(torch.special.erfcx(torch.where(tail, -a, one)
                                                                     / _SQRT2))
              - torch.log(torch.special.erfcx(torch.where(tail, -b, one) / _SQRT2)))
    d = torch.where(tail, d_tail, _log_ndtr(a) - log_b)
    narrow = d > -_NARROW.get(d.dtype, 5e-2)
    exact = log_b + _log1mexp(torch.where(narrow, torch.full_like(d, -1.0), d))
    # midpoint rule with its second-order term: w phi(c) (1 + w^2 (c^2 - 1) / 24), error O(w^4)
    centre, width = 0.5 * (a + b), b - a
    midpoint = (-0.5 * centre**2 - 0.5 * math.log(2 * math.pi) + torch.log(width)
                + torch.log1p(width**2 * (centre**2 - 1) / 24))
    return torch.where(narrow, midpoint, exact)


def lattice_normal_log_prob(x: torch.Tensor, loc: torch.Tensor, scale: torch.Tensor,
                            step: torch.Tensor, low: torch.Tensor,
                            high: torch.Tensor) -> torch.Tensor:
    """``log P(x)`` for ``x`` on the lattice ``low, low + step, ..., high`` under
    ``N(loc, scale^2)`` discretised on it: the mass of ``(x - step/2, x + step/2]``, with the
    edge bins open (``x <= low`` takes everything below ``low + step/2``, ``x >= high``
    everything above ``high - step/2``), so the masses sum to 1 (a lattice of one value has
    mass 1). Computed in log space as the 8-bit
    models are; used for the integer columns of tables.

    :param torch.Tensor x: values on the lattice
    :param torch.Tensor loc: the Normal's mean
    :param torch.Tensor scale: its standard deviation
    :param torch.Tensor step: the lattice spacing (broadcasts with ``x``)
    :param torch.Tensor low: the lowest lattice value
    :param torch.Tensor high: the highest lattice value
    """
    x = torch.minimum(torch.maximum(x, low), high)  # beyond the range: the edge bins
    a = (x - 0.5 * step - loc) / scale
    b = (x + 0.5 * step - loc) / scale
    first = x <= low + 0.25 * step
    last = x >= high - 0.25 * step
    inner = _normal_log_mass(a, b)
    edge = torch.where(first, _log_ndtr(b), _log_ndtr(-a))
    log_p = torch.where(first | last, edge, inner)
    return torch.where(first & last, torch.zeros_like(log_p), log_p)  # a one-value lattice


def _logistic_log_mass(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``log(sigmoid(b) - sigmoid(a))`` for standardised edges ``a < b``, exactly."""
    return torch.log(-torch.expm1(a - b)) - F.softplus(a) - F.softplus(-b)


def _standard_logistic(like: torch.Tensor) -> torch.Tensor:
    info = torch.finfo(like.dtype)
    u = torch.rand_like(like).clamp(info.tiny, 1 - info.eps)
    return torch.log(u) - torch.log1p(-u)


#: the components' cumulative distribution functions, for the mean and variance
_CDFS: dict[str, Any] = {"normal": torch.special.ndtr, "logistic": torch.sigmoid}
#: values per chunk of levels in :meth:`Discretized.mean` and ``variance``
_CHUNK_VALUES = 2**21

def _level_edges(like: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The levels ``j = 1..255`` and their lower edges ``(j - 1/2) / 255``, in chunks shaped to
    broadcast against ``like`` along a new first axis (at most :data:`_CHUNK_VALUES` values of
    ``like``'s size per chunk)."""
    chunk = max(1, min(LEVELS - 1, _CHUNK_VALUES // max(1, like.numel())))
    ones = (1,) * like.dim()
    levels = torch.arange(1, LEVELS, dtype=like.dtype, device=like.device)
    for start in range(0, LEVELS - 1, chunk):
        j = levels[start:start + chunk].reshape((-1,) + ones)
        yield j, (j - 0.5) / (LEVELS - 1)


#: family -> (log-CDF, log bin mass, standard draws shaped like a tensor)
_FAMILIES: dict[str, Any] = {
    "normal": (_log_ndtr, _normal_log_mass, torch.randn_like),
    "logistic": (lambda u: -F.softplus(-u), _logistic_log_mass, _standard_logistic),
}


class Discretized(TorchDistribution):
    """A mixture of ``K`` continuous components (Normal or logistic) discretised on the 256 bins
    of an 8-bit value ``k / 255`` (edge bins open; see :mod:`pyro_lvae.observations.discrete`).
    Batch shape: ``loc.shape[:-1]``; event shape ``()``; the last axis of the parameters holds
    the components.

    :param torch.Tensor logits: unnormalised log-weights of the components, ``batch + (K,)``
    :param torch.Tensor locs: locations, ``batch + (K,)``, on the ``[0, 1]`` scale
    :param torch.Tensor scales: scales, ``batch + (K,)``, positive
    :param str family: ``"normal"`` or ``"logistic"``
    """

    arg_constraints = {"logits": constraints.real, "locs": constraints.real,
                       "scales": constraints.positive}
    support = eight_bit_levels
    has_rsample = False

    def __init__(self, logits: torch.Tensor, locs: torch.Tensor, scales: torch.Tensor,
                 family: str = "logistic", validate_args: bool | None = None) -> None:
        self.logits, self.locs, self.scales = torch.broadcast_tensors(logits, locs, scales)
        self.family = family
        super().__init__(self.locs.shape[:-1], torch.Size(), validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape) + self.locs.shape[-1:]
        return Discretized(self.logits.expand(shape), self.locs.expand(shape),
                           self.scales.expand(shape), self.family, validate_args=False)

    @property
    def components(self) -> int:
        """``K``, the number of mixture components."""
        return self.locs.shape[-1]

    @property
    def scale(self) -> torch.Tensor:
        """The scale per value (of one component; of a mixture, the components' scales
        averaged with the mixture weights), for sigma summaries."""
        if self.components == 1:
            return self.scales[..., 0]
        return (self.scales * torch.softmax(self.logits, -1)).sum(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """``log P(value)`` for values on the 8-bit grid ``k / 255``; any other value raises
        :class:`~pyro_lvae.errors.DataError`, validation on or off (rounding it to its level
        would score dequantised data silently wrong). Inside a JIT trace the check runs on the
        batch that is traced, and later batches off the grid get a NaN log-probability."""
        on_grid = eight_bit_levels.check(value)
        if not _all(on_grid):
            raise _levels_error(value, on_grid, f"Discretized({self.family!r})")
        if self._validate_args:
            self._validate_sample(value)
        log_cdf, log_mass, _ = _FAMILIES[self.family]
        k = (value * (LEVELS - 1)).round().clamp(0, LEVELS - 1).unsqueeze(-1)
        centre = k / (LEVELS - 1)
        a = (centre - _HALF - self.locs) / self.scales
        b = (centre + _HALF - self.locs) / self.scales
        inner = log_mass(a, b)
        first = log_cdf(b)  # bin 0: (-inf, 1/510]
        last = log_cdf(-a)  # bin 255 (both families are symmetric): 1 - F(a) = F(-a)
        log_p = torch.where(k <= 0, first, torch.where(k >= LEVELS - 1, last, inner))
        if self.components == 1:
            log_p = log_p.squeeze(-1)
        else:
            log_p = torch.logsumexp(log_p + torch.log_softmax(self.logits, -1), dim=-1)
        if torch.jit.is_tracing():  # a compiled step cannot raise: off the grid is NaN
            log_p = torch.where(on_grid, log_p, torch.full_like(log_p, math.nan))
        return log_p

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = torch.Size(sample_shape) + self.batch_shape
        if self.components == 1:
            loc, scale = self.locs[..., 0].expand(shape), self.scales[..., 0].expand(shape)
        else:
            which = dist.Categorical(logits=self.logits).sample(sample_shape).unsqueeze(-1)
            size = shape + self.locs.shape[-1:]
            loc = self.locs.expand(size).gather(-1, which).squeeze(-1)
            scale = self.scales.expand(size).gather(-1, which).squeeze(-1)
        y = loc + scale * _FAMILIES[self.family][2](loc)
        return (y * (LEVELS - 1)).round().clamp(0, LEVELS - 1) / (LEVELS - 1)

    @property
    def mean(self) -> torch.Tensor:
        """The exact mean over the 256 levels, ``sum_{j=1}^{255} P(k >= j) / 255``, per
        component then mixed (the levels in chunks: memory a bounded multiple of the
        batch's)."""
        cdf = _CDFS[self.family]
        total = torch.zeros_like(self.locs)
        for _, edge in _level_edges(self.locs):
            total = total + cdf((self.locs - edge) / self.scales).sum(0)  # P(k >= j)
        return (total * torch.softmax(self.logits, -1)).sum(-1) / (LEVELS - 1)

    @property
    def variance(self) -> torch.Tensor:
        """The exact variance over the 256 levels (of the discretised distribution, not of the
        continuous one before discretisation), in float64 with memory linear in the batch:
        around the level ``c`` nearest the mean, ``sum_k (k - c)^2 P(k) = sum_{j <= c}
        (2c + 1 - 2j) P(k < j) + sum_{j > c} (2j - 1 - 2c) P(k >= j)`` (terms of one sign, so
        a narrow distribution keeps its digits), less ``(E[k] - c)^2``, over ``255^2``."""
        wide = Discretized(self.logits.double(), self.locs.double(), self.scales.double(),
                           self.family, validate_args=False)
        cdf, weights = _CDFS[self.family], torch.softmax(wide.logits, -1)
        centre = (wide.mean * (LEVELS - 1)).round()
        shift = second = torch.zeros_like(centre)
        for j, edge in _level_edges(wide.locs):
            u = (edge - wide.locs) / wide.scales
            below = (cdf(u) * weights).sum(-1)  # P(k < j)
            above = (cdf(-u) * weights).sum(-1)  # P(k >= j)
            j = j.squeeze(-1)
            low = j <= centre
            shift = shift + torch.where(low, -below, above).sum(0)
            second = second + torch.where(low, (2 * centre + 1 - 2 * j) * below,
                                          (2 * j - 1 - 2 * centre) * above).sum(0)
        return ((second - shift**2) / (LEVELS - 1) ** 2).clamp(min=0).to(self.locs.dtype)

    def bin_log_probs(self) -> torch.Tensor:
        """``log P(k)`` for every level ``k``, shape ``batch + (256,)`` (256 times the memory
        of the batch: for checks and small batches)."""
        levels = torch.arange(LEVELS, dtype=self.locs.dtype, device=self.locs.device)
        values = (levels / (LEVELS - 1)).reshape((LEVELS,) + (1,) * len(self.batch_shape))
        return self.log_prob(values.expand((LEVELS,) + self.batch_shape)).movedim(0, -1)


class _Discretized(_DecoderScale):
    """A discretised family with its scale from the decoder (one component per pixel unless
    :attr:`components` > 1, then mixture logits too)."""

    family = "logistic"
    label, learned, discrete = "", True, True

    def __init__(self, *, init_scale: float | None = None, components: int = 1) -> None:
        super().__init__(init_scale=init_scale, min_scale=SCALE_FLOOR)
        self.components = check_positive_int("components", components)
        #: a mixture's decoder gives logits, locations and scales: 3 K outputs per channel
        self.outputs_per_channel = 2 if self.components == 1 else 3 * self.components

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        if self.components == 1:
            loc, raw = output.chunk(2, dim=-event_dim)
            loc, raw = loc.unsqueeze(-1), raw.unsqueeze(-1)
            logits = torch.zeros_like(loc)
        else:
            logits, loc, raw = (self._components(t, event_dim)
                                for t in output.chunk(3, dim=-event_dim))
        return Discretized(logits, loc, self.scale_from_raw(raw),
                           self.family).to_event(event_dim)

    def spread(self, output: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The standard deviation of each pixel's distribution over the 256 levels ``k / 255``
        (the discretised distribution's, exact: :attr:`Discretized.variance`; not the scale
        of the continuous family, which :meth:`pyro_lvae.VAE.sigma` reports)."""
        return super().spread(output, event_dim)

    def _components(self, t: torch.Tensor, event_dim: int) -> torch.Tensor:
        """``batch + (K * C,) + rest`` -> ``batch + (C,) + rest + (K,)``."""
        axis = t.dim() - event_dim
        k = self.components
        t = t.reshape(t.shape[:axis] + (k, t.shape[axis] // k) + t.shape[axis + 1:])
        return t.movedim(axis, -1)

    def check_support(self, x: torch.Tensor) -> None:
        check_levels(x, type(self).__name__)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "init_scale": self.init_scale}


class DiscretizedNormal(_Discretized):
    """``p(x | z)``: the mass of ``N(mu(z), s(z)^2)`` on the bin of each 8-bit pixel value
    ``k / 255`` (edge bins open), with ``mu`` and ``s`` from the decoder per pixel (2 outputs per
    channel). The likelihood of a pixel is at most 1: no floor on ``s`` is needed, and the
    negative ELBO bounds the images' code length (see :mod:`pyro_lvae.observations.discrete`
    for the bins and the log-space computation).

    :param float init_scale: ``s`` for a raw decoder output of 0; ``None`` (default): half the
        spread of the first batch of data

    **References**

    - T. Salimans et al. *PixelCNN++*. ICLR 2017 (the discretisation, for a logistic).
    """

    kind = "discretized-normal"
    label = "discretised Normal"
    family = "normal"

    def __init__(self, *, init_scale: float | None = None) -> None:
        super().__init__(init_scale=init_scale)


class DiscretizedLogistic(_Discretized):
    """``p(x | z)``: the mass of a logistic with location ``mu(z)`` and scale ``s(z)`` on the bin
    of each 8-bit pixel value ``k / 255`` (edge bins open), computed exactly in log space;
    ``mu`` and ``s`` from the decoder per pixel (2 outputs per channel).

    :param float init_scale: ``s`` for a raw decoder output of 0; ``None`` (default): half the
        spread of the first batch of data

    Example::

        >>> import torch, pyro_lvae as lv
        >>> obs = lv.DiscretizedLogistic(init_scale=0.01)
        >>> p = obs(torch.zeros(1, 2), event_dim=1)  # one pixel: location 0, scale 0.01
        >>> round(float(p.log_prob(torch.zeros(1, 1)).exp()), 4)  # bin 0: sigmoid(1/510 / 0.01)
        0.5489

    **References**

    - T. Salimans, A. Karpathy, X. Chen, D. P. Kingma. *PixelCNN++*. ICLR 2017.
    """

    kind = "discretized-logistic"
    label = "discretised logistic"

    def __init__(self, *, init_scale: float | None = None) -> None:
        super().__init__(init_scale=init_scale)


class DiscretizedLogisticMixture(_Discretized):
    """``p(x | z)``: a mixture of ``components`` discretised logistics per pixel, as in
    PixelCNN++ (each channel independent given ``z``). The decoder gives ``3 K`` outputs per
    channel: ``K`` mixture logits, ``K`` locations, ``K`` raw scales (in that order of blocks
    along the channel axis, each block ``K x C`` with the component first).

    :param int components: ``K``
    :param float init_scale: every component's scale for a raw decoder output of 0; ``None``
        (default): half the spread of the first batch of data

    **References**

    - T. Salimans, A. Karpathy, X. Chen, D. P. Kingma. *PixelCNN++*. ICLR 2017.
    """

    kind = "discretized-logistic-mixture"
    location_first = False  # its first outputs are one component's locations, not the mean
    label = "discretised logistic mixture"

    def __init__(self, *, components: int = 5, init_scale: float | None = None) -> None:
        super().__init__(init_scale=init_scale, components=components)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "components": self.components}
