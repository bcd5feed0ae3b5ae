"""Observation models for count data (single-cell RNA counts and the like): Poisson, negative
binomial (NB) and zero-inflated negative binomial (ZINB), with the NB's inverse dispersion
``theta`` fixed, learned per dimension, or output by the decoder per point and dimension.

**Parametrisation** (scVI's): the NB has mean ``mu`` and inverse dispersion ``theta``,
``Var = mu + mu^2 / theta``; ``theta -> inf`` is the Poisson. The ZINB adds a zero-inflation
(dropout) probability ``pi = sigmoid(g)`` per point and dimension from the decoder:
``p(x) = pi [x = 0] + (1 - pi) NB(x | mu, theta)``. The inverse dispersion is the sharpness of a
count model, as ``1 / sigma`` is a Normal's (Berger & Sebag): ``dispersion`` chooses how it is
set:

==============  ================================================================================
``dispersion``  theta
==============  ================================================================================
``"learned"``   one per data dimension (gene), a ``PyroParam`` trained with the networks
                (scvi-tools' ``dispersion="gene"``; the analogue of a learned sigma per dimension)
``"decoder"``   per point and dimension, output by the decoder (scvi-tools' ``"gene-cell"``; the
                analogue of LV-VAE): ``theta = exp(raw + c)``, ``c`` per dimension such that a
                raw output of 0 gives the start
a number        fixed at that value (the analogue of F-VAE)
==============  ================================================================================

**The mean** (``mean``): ``"scvi"``: ``mu = l * softmax(raw)``, a softmax over the dimensions of
the decoder's mean output times the point's *library size* ``l``, its observed total count
(the sum of ``x`` over its dimensions), given as an input, not inferred. ``"plain"``:
``mu = exp(raw)``, the decoder's output as a log-mean. An exponential is safe here because the
log-density is computed from ``log mu`` alone (never from ``mu``; see below), so it cannot
overflow, and it spans the decades that counts span with outputs of order 1 (a softplus link
would need outputs of order 1e4 for large counts).

The decoder's outputs per data channel, in this order of blocks along the channel axis: the
mean, then the raw theta (``dispersion="decoder"``), then the gate logit (ZINB).

**Numerics.** ``log NB(x | mu, theta) = lgamma(x + theta) - lgamma(theta) - lgamma(x + 1) -
theta log(1 + mu / theta) + x log(mu / (mu + theta))`` loses every digit in float32 when theta is
large: ``lgamma(x + theta) - lgamma(theta)`` cancels (at ``theta = 1e6``, ``lgamma(theta)`` is
1.3e7, so float32 keeps about one nat of it), the failure scvi-tools' users meet as overflowing
log-gamma. Here every log-density is computed in float64 (and returned in the parameters'
dtype), from ``log mu`` and ``log theta``, with ``log(1 + mu / theta) = softplus(log mu -
log theta)``; for ``theta >= 10`` (:data:`STIRLING_FROM`) the log-gamma difference is taken
through Stirling's series, ``lgamma(y) = (y - 1/2) log y - y + log(2 pi) / 2 + e(y)``, which
cancels ``x log theta`` analytically:

``log NB = x log mu - lgamma(x + 1) - (theta + x) log1p(mu / theta)
+ (theta + x - 1/2) log1p(x / theta) - x + e(theta + x) - e(theta)``

(four terms of ``e``, error below 1e-12 from ``theta = 10``), whose terms tend to the Poisson's
``x log mu - mu - lgamma(x + 1)`` as ``theta -> inf`` without cancelling. Measured (tests/
test_counts.py) over ``theta`` in [1e-3, 1e6], ``mu`` in [1e-3, 1e4], ``x`` in 0..1e4 against a
direct float64 computation: see :func:`negative_binomial_log_prob`.

**Data.** Counts are non-negative integers, stored as floats (exact up to 2^24 in float32);
anything else is refused by :meth:`~pyro_lvae.observations.Observation.check_support` with a
:class:`~pyro_lvae.errors.DataError` that names the problem. Encoders see ``log1p(x)``
(:class:`pyro_lvae.nets.Log1p`, which :func:`pyro_lvae.mlp_vae` puts in front of the encoder
of a count model).

**References**

- R. Lopez, J. Regier, M. B. Cole, M. I. Jordan, N. Yosef. *Deep generative modeling for
  single-cell transcriptomics*. Nature Methods 15, 2018 (scVI).
- C. Gayoso et al. *A Python library for probabilistic analysis of single-cell omics data*.
  Nature Biotechnology 40, 2022 (scvi-tools).
- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import pyro.distributions as dist
import torch
import torch.nn.functional as F
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution
from pyro.distributions.util import broadcast_shape
from pyro.nn import PyroParam

from ..errors import ConfigError, DataError, check_positive, check_positive_int
from .base import Observation

__all__ = ["PoissonCounts", "NegativeBinomialCounts", "ZeroInflatedNBCounts",
           "PoissonLogMean", "NegativeBinomialLogMean", "ZeroInflatedNBLogMean",
           "poisson_log_prob", "negative_binomial_log_prob", "zinb_log_prob",
           "theta_start", "check_counts", "MEANS", "DISPERSIONS", "STIRLING_FROM",
           "THETA_RANGE", "THETA_START_FACTOR"]

#: the decoder's mean: softmax times the observed library size, or exp of the output
MEANS = ("scvi", "plain")
#: the named ways to set theta (or a positive number: fixed)
DISPERSIONS = ("learned", "decoder")
#: from this theta on, the NB's log-gamma difference is taken through Stirling's series
STIRLING_FROM = 10.0
#: the range a data start of theta is clamped to: 1e-2 (an NB that is nearly all zeros) to
#: 1e4 (indistinguishable from a Poisson for counts below about 100)
THETA_RANGE = (1e-2, 1e4)
#: a data start of theta is this multiple of the collapsed model's method-of-moments theta (a
#: quarter of its excess variance, as a learned sigma starts at half the collapsed spread)
THETA_START_FACTOR = 4.0
#: the floor on a log-parameter inside the float64 computation (``exp(-700)`` is 1e-304)
_LOG_FLOOR = -700.0
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


# ---- log-densities in float64 ------------------------------------------------------------------
def _stirling_correction(y: torch.Tensor) -> torch.Tensor:
    """``e(y) = lgamma(y) - [(y - 1/2) log y - y + log(2 pi) / 2]`` for ``y >= 10`` (four terms
    of the series; the next is below 1e-12)."""
    r = 1.0 / y
    r2 = r * r
    return r * (1.0 / 12 - r2 * (1.0 / 360 - r2 * (1.0 / 1260 - r2 / 1680)))


def _wide(*tensors: torch.Tensor) -> list[torch.Tensor]:
    return [torch.as_tensor(t).to(torch.float64) for t in tensors]


def poisson_log_prob(x: torch.Tensor, log_mean: torch.Tensor) -> torch.Tensor:
    """``log Poisson(x | mu)`` from ``log mu``, computed in float64 (returned in float64):
    ``x log mu - mu - lgamma(x + 1)``.

    :param torch.Tensor x: counts
    :param torch.Tensor log_mean: ``log mu`` (broadcasts with ``x``)
    """
    x, log_mu = _wide(x, log_mean)
    log_mu = log_mu.clamp(min=_LOG_FLOOR)
    return x * log_mu - log_mu.exp() - torch.lgamma(x + 1)


def negative_binomial_log_prob(x: torch.Tensor, log_mean: torch.Tensor,
                               log_theta: torch.Tensor) -> torch.Tensor:
    """``log NB(x | mu, theta)`` (mean ``mu``, inverse dispersion ``theta``) from ``log mu`` and
    ``log theta``, in float64 (returned in float64), with Stirling's series for ``theta >=``
    :data:`STIRLING_FROM` (module docstring). Over ``theta`` in [1e-3, 1e6], ``mu`` in
    [1e-3, 1e4] and ``x`` in 0..1e4 it agrees with a direct float64 computation to 1e-9 nats
    (tests/test_counts.py measures it), and it stays finite, gradients included, for any
    ``theta`` up to ``exp(700)``, where it is the Poisson's value.

    :param torch.Tensor x: counts
    :param torch.Tensor log_mean: ``log mu``
    :param torch.Tensor log_theta: ``log theta``
    """
    x, log_mu, log_theta = _wide(x, log_mean, log_theta)
    log_mu = log_mu.clamp(min=_LOG_FLOOR)
    log_theta = log_theta.clamp(_LOG_FLOOR, -_LOG_FLOOR)
    large = log_theta >= math.log(STIRLING_FROM)
    # each branch sees safe values where the other is taken (no NaN in either's gradient)
    log_t_big = torch.where(large, log_theta, torch.full_like(log_theta, math.log(STIRLING_FROM)))
    log_t_small = torch.where(large, torch.zeros_like(log_theta), log_theta)
    # theta >= 10: Stirling
    theta = log_t_big.exp()
    log1p_mu = F.softplus(log_mu - log_t_big)  # log(1 + mu / theta)
    log1p_x = torch.log1p(x * torch.exp(-log_t_big))  # log(1 + x / theta)
    big = (x * log_mu - torch.lgamma(x + 1) - (theta + x) * log1p_mu
           + (theta + x - 0.5) * log1p_x - x
           + _stirling_correction(theta + x) - _stirling_correction(theta))
    # theta < 10: log-gamma directly
    theta = log_t_small.exp()
    small = (torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1)
             - theta * F.softplus(log_mu - log_t_small)
             - x * F.softplus(log_t_small - log_mu))
    return torch.where(large, big, small)


def zinb_log_prob(x: torch.Tensor, log_mean: torch.Tensor, log_theta: torch.Tensor,
                  gate_logits: torch.Tensor) -> torch.Tensor:
    """``log [pi [x = 0] + (1 - pi) NB(x | mu, theta)]`` with ``pi = sigmoid(gate_logits)``, in
    float64 (returned in float64): ``log(1 - pi) + log NB(x)`` for ``x > 0`` and
    ``logaddexp(log pi, log(1 - pi) + log NB(0))`` at 0, each log-probability of the gate a
    softplus.

    :param torch.Tensor x: counts
    :param torch.Tensor log_mean: ``log mu`` of the NB
    :param torch.Tensor log_theta: ``log theta`` of the NB
    :param torch.Tensor gate_logits: ``logit(pi)``, the zero-inflation logits
    """
    x, g = _wide(x, gate_logits)
    nb = negative_binomial_log_prob(x, log_mean, log_theta)
    log_keep = -F.softplus(g)  # log(1 - pi)
    log_gate = -F.softplus(-g)  # log pi
    zero = torch.logaddexp(log_gate, log_keep + nb)
    return torch.where(x == 0, zero, log_keep + nb)


# ---- distributions -----------------------------------------------------------------------------
class _LogMeanCounts(TorchDistribution):
    """A count distribution parametrised by its log-mean (and log inverse dispersion, gate
    logits); ``log_prob`` in float64, returned in the parameters' dtype."""

    support = constraints.nonnegative_integer
    has_rsample = False
    _params: tuple[str, ...] = ("log_mean",)

    def _setup(self, batch_shape: torch.Size | None, validate_args: bool | None,
               **params: Any) -> None:
        tensors = [torch.as_tensor(v) for v in params.values()]
        shape = broadcast_shape(*(t.shape for t in tensors))
        for name, t in zip(params, tensors, strict=True):
            setattr(self, name, t.expand(shape))
        super().__init__(torch.Size(shape) if batch_shape is None else batch_shape,
                         validate_args=validate_args)

    def expand(self, batch_shape, _instance=None):
        new = self._get_checked_instance(type(self), _instance)
        batch_shape = torch.Size(batch_shape)
        for name in self._params:
            setattr(new, name, getattr(self, name).expand(batch_shape))
        super(_LogMeanCounts, new).__init__(batch_shape, validate_args=False)
        new._validate_args = self._validate_args
        return new

    def _dtype(self) -> torch.dtype:
        return self.log_mean.dtype

    @property
    def mean(self) -> torch.Tensor:
        return self.log_mean.exp()

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return self._log_prob(value).to(self._dtype())

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class PoissonLogMean(_LogMeanCounts):
    """``Poisson(mu)`` parametrised by ``log_mean = log mu`` (any real; its ``log_prob`` is
    :func:`poisson_log_prob`, in float64).

    :param torch.Tensor log_mean: ``log mu``
    """

    arg_constraints = {"log_mean": constraints.real}

    def __init__(self, log_mean: torch.Tensor, validate_args: bool | None = None) -> None:
        self._setup(None, validate_args, log_mean=log_mean)

    @property
    def variance(self) -> torch.Tensor:
        return self.mean

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return poisson_log_prob(value, self.log_mean)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.poisson(self.mean.expand(shape))


class NegativeBinomialLogMean(_LogMeanCounts):
    """The negative binomial with mean ``mu = exp(log_mean)`` and inverse dispersion
    ``theta = exp(log_theta)`` (``Var = mu + mu^2 / theta``): Pyro's
    ``GammaPoisson(theta, theta / mu)``, with the ``log_prob`` of
    :func:`negative_binomial_log_prob` (float64, accurate and finite at any ``theta``).

    :param torch.Tensor log_mean: ``log mu``
    :param torch.Tensor log_theta: ``log theta``
    """

    arg_constraints = {"log_mean": constraints.real, "log_theta": constraints.real}
    _params = ("log_mean", "log_theta")

    def __init__(self, log_mean: torch.Tensor, log_theta: torch.Tensor,
                 validate_args: bool | None = None) -> None:
        self._setup(None, validate_args, log_mean=log_mean, log_theta=log_theta)

    @property
    def theta(self) -> torch.Tensor:
        """The inverse dispersion."""
        return self.log_theta.exp()

    @property
    def variance(self) -> torch.Tensor:
        return self.mean + (2 * self.log_mean - self.log_theta).exp()

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return negative_binomial_log_prob(value, self.log_mean, self.log_theta)

    def _rate(self, shape: torch.Size) -> torch.Tensor:
        """A draw of the Poisson rate: ``Gamma(theta, theta / mu)``, in float64."""
        log_mu = self.log_mean.expand(shape).double()
        theta = self.log_theta.expand(shape).double().exp()
        return torch._standard_gamma(theta) * (log_mu.exp() / theta)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        return torch.poisson(self._rate(shape)).to(self._dtype())


class ZeroInflatedNBLogMean(NegativeBinomialLogMean):
    """The zero-inflated negative binomial: 0 with probability ``pi = sigmoid(gate_logits)``,
    else :class:`NegativeBinomialLogMean` ``(log_mean, log_theta)``; ``log_prob`` from
    :func:`zinb_log_prob` (float64). Its ``mean`` is ``(1 - pi) mu``.

    :param torch.Tensor log_mean: ``log mu`` of the NB
    :param torch.Tensor log_theta: ``log theta`` of the NB
    :param torch.Tensor gate_logits: ``logit(pi)``
    """

    arg_constraints = {"log_mean": constraints.real, "log_theta": constraints.real,
                       "gate_logits": constraints.real}
    _params = ("log_mean", "log_theta", "gate_logits")

    def __init__(self, log_mean: torch.Tensor, log_theta: torch.Tensor,
                 gate_logits: torch.Tensor, validate_args: bool | None = None) -> None:
        self._setup(None, validate_args, log_mean=log_mean, log_theta=log_theta,
                    gate_logits=gate_logits)

    @property
    def gate(self) -> torch.Tensor:
        """``pi``, the probability of an extra zero."""
        return torch.sigmoid(self.gate_logits)

    @property
    def mean(self) -> torch.Tensor:
        return (1 - self.gate) * self.log_mean.exp()

    @property
    def variance(self) -> torch.Tensor:
        keep = 1 - self.gate
        mu = self.log_mean.exp()
        nb = mu + (2 * self.log_mean - self.log_theta).exp()
        return keep * nb + keep * self.gate * mu**2

    def _log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return zinb_log_prob(value, self.log_mean, self.log_theta, self.gate_logits)

    @torch.no_grad()
    def sample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        counts = torch.poisson(self._rate(shape)).to(self._dtype())
        extra = torch.bernoulli(self.gate.expand(shape)).bool()
        return counts.masked_fill(extra, 0.0)


# ---- data checks and starts --------------------------------------------------------------------
def check_counts(x: torch.Tensor, who: str = "a count model") -> None:
    """Raise :class:`~pyro_lvae.errors.DataError` unless every value of ``x`` is a finite
    non-negative integer (counts stored as floats). The message names what the values look
    like (log-normalised, centred) and the fix: pass the raw counts.

    :param torch.Tensor x: the data
    :param str who: the model named in the message
    """
    if not isinstance(x, torch.Tensor):
        raise DataError(f"Expected the counts as a torch.Tensor but got {type(x).__name__}")
    flat = x.detach()
    if not bool(torch.isfinite(flat).all()):
        raise DataError(f"{who} needs counts, but the data hold NaN or infinite values; "
                        f"clean them first")
    if not flat.is_floating_point():
        flat = flat.double()
    negative = int((flat < 0).sum())
    if negative:
        raise DataError(
            f"{who} needs counts (non-negative integers), but {negative} of {flat.numel()} "
            f"values are negative (minimum {float(flat.min()):.4g}): these look centred or "
            f"scaled; pass the raw counts (for instance an AnnData's .raw or "
            f"layers['counts'])")
    fractional = flat != flat.round()
    bad = int(fractional.sum())
    if bad:
        example = float(flat[fractional].reshape(-1)[0])
        looks = ("these look log-normalised (log1p of normalised counts)"
                 if float(flat.max()) < 20 else "these look normalised or scaled")
        raise DataError(
            f"{who} needs counts (non-negative integers), but {bad} of {flat.numel()} values "
            f"are not integers (e.g. {example:.6g}; the values span [{float(flat.min()):.4g}, "
            f"{float(flat.max()):.4g}]): {looks}; pass the raw counts, or use a continuous "
            f"observation model")


def _moments_theta(x: torch.Tensor, mean: str) -> torch.Tensor:
    """The method-of-moments theta per channel of the collapsed model (every point decoded to
    the same proportions, times its library for the scVI mean): ``sum mu^2 / sum[(x - mu)^2 -
    mu]``, ``inf`` where the data show no overdispersion (or no counts)."""
    n, c = x.shape[0], x.shape[1]
    flat = x.detach().reshape(n, c, -1).to(torch.float64)
    if mean == "scvi":
        library = flat.sum(dim=(1, 2), keepdim=True)
        share = flat.sum(0, keepdim=True) / library.sum().clamp(min=1)
        mu = library * share
    else:
        mu = flat.mean(0, keepdim=True).expand_as(flat)
    signal = (mu**2).sum(dim=(0, 2))
    excess = ((flat - mu) ** 2 - mu).sum(dim=(0, 2))
    return torch.where(excess > 0, signal / excess.clamp(min=1e-300),
                       torch.full_like(signal, math.inf))


def theta_start(x: torch.Tensor, mean: str = "scvi") -> torch.Tensor:
    """The data start of theta, one per channel (per dimension for vectors) of the batch
    ``x``: :data:`THETA_START_FACTOR` times the method-of-moments theta of the collapsed model
    (every point decoded to the data's average proportions, times its own library size for the
    scVI mean; the average count for the plain mean), clamped to :data:`THETA_RANGE`. Channels
    without overdispersion in the batch (a variance at or below the Poisson's, or no counts)
    start at the range's upper end.

    The collapsed model's theta plays the role of a Normal's spread: starting sharper (four
    times theta, a quarter of its excess variance, as a learned sigma starts at half the
    spread) starts outside the collapsed solution.

    :param torch.Tensor x: counts, ``(N, C, ...)`` with ``N >= 2``
    :param str mean: ``"scvi"`` or ``"plain"``, the model's mean
    """
    if x.dim() < 2 or x.shape[0] < 2:
        raise DataError(f"Expected at least two points of counts, shape (N, C, ...) with N >= 2, "
                        f"but got shape {tuple(x.shape)}")
    check_counts(x)
    low, high = THETA_RANGE
    return (THETA_START_FACTOR * _moments_theta(x, mean)).clamp(low, high)


# ---- observation models ------------------------------------------------------------------------
def _check_mean(mean: Any) -> str:
    if mean not in MEANS:
        raise ConfigError(f"Expected mean to be one of {', '.join(MEANS)} (scvi: a softmax over "
                          f"the dimensions times the observed library size; plain: exp of the "
                          f"decoder's output) but got {mean!r}")
    return mean


def _check_dispersion(dispersion: Any) -> str | float:
    if isinstance(dispersion, str) and dispersion in DISPERSIONS:
        return dispersion
    value = dispersion
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            value = None
    if (isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value)
            or value <= 0):
        raise ConfigError(f"Expected dispersion to be 'learned' (one theta per dimension), "
                          f"'decoder' (theta per point and dimension from the decoder) or a "
                          f"positive number (theta fixed at it) but got {dispersion!r}")
    return float(value)


class _Counts(Observation):
    """What every count model shares: the mean (scVI or plain), the library size's prior for
    generation (a LogNormal fitted at the data start), the support check."""

    counts = True
    label = ""
    #: decoder output blocks per channel before the dispersion's
    _mean_blocks = 1
    library_loc: torch.Tensor
    library_scale: torch.Tensor

    def __init__(self, *, mean: str = "scvi", dims: int | None = None) -> None:
        super().__init__()
        self.mean = _check_mean(mean)
        self.dims = None if dims is None else check_positive_int("dims", dims)
        # the LogNormal of the library sizes, for generation without data (scVI mean)
        self.register_buffer("library_loc", torch.tensor(0.0))
        self.register_buffer("library_scale", torch.tensor(1.0))
        self._library_measured = False

    # ---- the library ----------------------------------------------------------------------
    @property
    def needs_library(self) -> bool:
        """Whether the mean needs each point's library size (the scVI mean)."""
        return self.mean == "scvi"

    def library_distribution(self) -> dist.TorchDistribution:
        """The prior of a point's library size for generation without data: a LogNormal fitted
        at the data start to the log library sizes of the first batch (their mean and standard
        deviation, points without counts left out; buffers, saved with the weights)."""
        self._require_library()
        return dist.LogNormal(self.library_loc, self.library_scale)

    def typical_library(self) -> torch.Tensor:
        """The median of :meth:`library_distribution`, ``exp(loc)``: the library size that
        :meth:`pyro_lvae.Model.likelihood` uses without data."""
        self._require_library()
        return self.library_loc.exp()

    def _require_library(self) -> None:
        if not self._library_measured:
            raise ConfigError(
                f"{type(self).__name__} generates library sizes from those of the training "
                f"data, which it has not seen: call .initialize(x) with a batch of training "
                f"counts (vae.initialize(x) for a pyro_lvae VAE, which training does), or pass "
                f"the library sizes yourself (library=...)")

    @torch.no_grad()
    def _measure_library(self, x: torch.Tensor) -> None:
        totals = x.detach().reshape(x.shape[0], -1).to(torch.float64).sum(-1)
        totals = totals[totals > 0]
        if totals.numel() == 0:
            raise DataError(f"{type(self).__name__}: every point of the batch has no counts "
                            f"(library size 0); there is nothing to model")
        logs = totals.log()
        scale = float(logs.std()) if logs.numel() > 1 else 0.0
        self.library_loc.fill_(float(logs.mean()))
        self.library_scale.fill_(max(scale, 1e-3))
        self._library_measured = True

    # ---- dimensions ---------------------------------------------------------------------------
    def setup(self, data_shape: tuple[int, ...]) -> None:
        """Size the per-dimension parts for data of shape ``data_shape`` (its first axis, the
        channels: the dimensions of a vector); a VAE calls it when it knows the shape."""
        self._set_dims(int(data_shape[0]))

    def _set_dims(self, dims: int) -> None:
        if self.dims is not None and self.dims != dims:
            raise ConfigError(f"{type(self).__name__} was built for {self.dims} dimension(s) "
                              f"(channels) but the data have {dims}; build a new one")
        if self.dims is None:
            self.dims = dims
            self._build_dims(dims)

    def _build_dims(self, dims: int) -> None:
        """Create the per-dimension parameters and buffers (subclasses)."""

    # ---- the contract -----------------------------------------------------------------------
    def check_support(self, x: torch.Tensor) -> None:
        check_counts(x, type(self).__name__)

    @property
    def initialized(self) -> bool:
        return not self.needs_library or self._library_measured

    def initialize(self, x: torch.Tensor) -> None:
        """Take the data starts that are pending from the batch ``x`` of training counts: the
        library sizes' LogNormal (scVI mean) and, for a learned or decoder theta without
        ``init_theta``, theta's start (:func:`theta_start`); each once."""
        if x.dim() >= 2:
            self._set_dims(int(x.shape[1]))
        if self.needs_library and not self._library_measured:
            check_counts(x, type(self).__name__)
            self._measure_library(x)

    def _log_mean(self, raw: torch.Tensor, event_dim: int,
                  library: torch.Tensor | None) -> torch.Tensor:
        if self.mean == "plain":
            if library is not None:
                raise ConfigError(f"{type(self).__name__}(mean='plain') takes no library size "
                                  f"(its mean is the decoder's output); give library only with "
                                  f"mean='scvi'")
            return raw
        if library is None:
            raise ConfigError(
                f"{type(self).__name__}(mean='scvi') needs each point's library size: call it "
                f"as obs(output, event_dim, library=x.sum(-1)) with the observed counts x (or "
                f"library=obs.typical_library() to generate)")
        batch = raw.shape[: raw.dim() - event_dim]
        library = torch.as_tensor(library, dtype=raw.dtype, device=raw.device)
        if library.dim() > len(batch):
            raise ConfigError(f"Expected the library sizes with the batch shape {tuple(batch)} "
                              f"(one per point) but got shape {tuple(library.shape)}")
        library = library.reshape(library.shape + (1,) * event_dim)
        flat = raw.reshape(batch + (-1,))
        log_share = torch.log_softmax(flat, dim=-1).reshape(raw.shape)
        return log_share + library.log()

    def _split(self, output: torch.Tensor, event_dim: int) -> tuple[torch.Tensor, ...]:
        return output.chunk(self.outputs_per_channel, dim=-event_dim)

    def spread(self, output: torch.Tensor, event_dim: int,
               library: torch.Tensor | None = None) -> torch.Tensor:
        """The standard deviation per dimension: ``sqrt(mu)`` (Poisson), ``sqrt(mu + mu^2 /
        theta)`` (NB), and for the ZINB ``sqrt((1 - pi)(mu + mu^2 / theta) + pi (1 - pi)
        mu^2)``."""
        return self.forward(output, event_dim, library=library).base_dist.stddev

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "mean": self.mean, "dims": self.dims}

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([float(self._library_measured)], dtype=torch.float64)

    def set_extra_state(self, state: Any) -> None:
        state = torch.as_tensor(state).reshape(-1)
        self._library_measured = bool(state[0] > 0)


class PoissonCounts(_Counts):
    """``p(x_i | z) = Poisson(mu_i(z))`` independently per dimension: counts whose variance is
    their mean (no dispersion to learn). One decoder output per channel, the mean (see
    :mod:`pyro_lvae.observations.counts` for ``mean``).

    :param str mean: ``"scvi"`` (default: ``mu = l softmax(raw)`` with ``l`` the point's observed
        total count) or ``"plain"`` (``mu = exp(raw)``)
    :param int dims: the number of dimensions (channels); ``None``: the data's, when the VAE
        or :meth:`initialize` sees them

    Example::

        >>> import torch, pyro_lvae as lv
        >>> obs = lv.PoissonCounts(mean="plain")
        >>> p = obs(torch.zeros(1, 2), event_dim=1)  # mu = exp(0) = 1 in both dimensions
        >>> round(float(p.log_prob(torch.tensor([[0.0, 1.0]]))), 4)  # 2 log(exp(-1))
        -2.0
    """

    kind = "poisson"
    label = "Poisson"

    def __init__(self, *, mean: str = "scvi", dims: int | None = None) -> None:
        super().__init__(mean=mean, dims=dims)

    def forward(self, output: torch.Tensor, event_dim: int,
                library: torch.Tensor | None = None) -> dist.TorchDistribution:
        log_mean = self._log_mean(output, event_dim, library)
        return PoissonLogMean(log_mean).to_event(event_dim)


class NegativeBinomialCounts(_Counts):
    """``p(x_i | z) = NB(mu_i(z), theta_i)`` independently per dimension, with ``Var = mu +
    mu^2 / theta`` (scVI's inverse dispersion ``theta``; see
    :mod:`pyro_lvae.observations.counts` for the choices and the numerics).

    :param dispersion: ``"learned"`` (default: one theta per dimension, a ``PyroParam``),
        ``"decoder"`` (theta per point and dimension from the decoder) or a positive number
        (theta fixed at it)
    :param str mean: ``"scvi"`` (default: ``mu = l softmax(raw)``, ``l`` the point's observed
        total count) or ``"plain"`` (``mu = exp(raw)``)
    :param float init_theta: the start of a learned or decoder theta; ``None`` (default):
        measured per dimension on the first batch (:func:`theta_start`)
    :param int dims: the number of dimensions (channels) for the per-dimension parts;
        ``None``: the data's, when the VAE or :meth:`initialize` sees them

    Example::

        >>> import torch, pyro_lvae as lv
        >>> obs = lv.NegativeBinomialCounts(dispersion=2.0, mean="plain")
        >>> p = obs(torch.zeros(1, 1), event_dim=1)  # mu = 1, theta = 2: P(0) = (2/3)^2
        >>> round(float(p.log_prob(torch.zeros(1, 1)).exp()), 4)
        0.4444
    """

    kind = "negative-binomial"
    label, learned = "negative binomial", True
    _gate = False
    theta_offset: torch.Tensor
    fixed_theta: torch.Tensor

    def __init__(self, *, dispersion: str | float = "learned", mean: str = "scvi",
                 init_theta: float | None = None, dims: int | None = None) -> None:
        super().__init__(mean=mean, dims=dims)
        self.dispersion = _check_dispersion(dispersion)
        self.init_theta = None if init_theta is None else check_positive("init_theta",
                                                                          init_theta)
        if isinstance(self.dispersion, float):
            if init_theta is not None:
                raise ConfigError(f"init_theta applies to dispersion='learned' or 'decoder', "
                                  f"not to a fixed theta ({self.dispersion:g})")
            self.register_buffer("fixed_theta", torch.tensor(self.dispersion))
        self.outputs_per_channel = (1 + (self.dispersion == "decoder") + self._gate)
        self._theta_started = self.init_theta is not None or isinstance(self.dispersion, float)
        if self.dims is not None:
            self._build_dims(self.dims)

    # ---- theta ------------------------------------------------------------------------------
    def _build_dims(self, dims: int) -> None:
        start = 1.0 if self.init_theta is None else self.init_theta
        if self.dispersion == "learned":
            self.theta_param = PyroParam(torch.full((dims,), start), constraints.positive,
                                         event_dim=1)
        elif self.dispersion == "decoder":
            self.register_buffer("theta_offset", torch.full((dims,), math.log(start)))

    @property
    def theta(self) -> torch.Tensor | None:
        """theta where it does not depend on ``z``: the learned one per dimension (a tensor of
        shape ``(dims,)``), or the fixed one (a scalar); ``None`` for theta from the decoder."""
        if self.dispersion == "learned":
            self._require_dims()
            return self.theta_param
        if isinstance(self.dispersion, float):
            return self.fixed_theta
        return None

    def _require_dims(self) -> None:
        if self.dims is None:
            raise ConfigError(
                f"{type(self).__name__}(dispersion={self.dispersion!r}) has one theta per "
                f"dimension but does not know how many: give dims=, build the VAE with its "
                f"data shape, or call .initialize(x) with a batch of training counts")

    def _require_start(self) -> None:
        self._require_dims()
        if not self._theta_started:
            raise ConfigError(
                f"{type(self).__name__}() starts theta from the data, but it has not seen any: "
                f"call .initialize(x) with a batch of training counts before training "
                f"(vae.initialize(x) for a pyro_lvae VAE, which fit and the model's first "
                f"observed batch make), or give init_theta")

    @property
    def initialized(self) -> bool:
        return self._theta_started and super().initialized

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        super().initialize(x)
        if self._theta_started:
            return
        start = theta_start(x, self.mean).to(torch.get_default_dtype())
        if self.dispersion == "learned":
            self.theta_param_unconstrained.copy_(start.log().to(self.theta_param_unconstrained))
        else:
            self.theta_offset.copy_(start.log().to(self.theta_offset))
        self._theta_started = True

    def _log_theta(self, raw: torch.Tensor | None, like: torch.Tensor,
                   event_dim: int) -> torch.Tensor:
        if isinstance(self.dispersion, float):
            return self.fixed_theta.to(like.dtype).log()
        self._require_start()
        channels = like.shape[like.dim() - event_dim]
        if channels != self.dims:
            raise ConfigError(f"{type(self).__name__} has {self.dims} dimension(s) (channels) "
                              f"but the data have {channels}")
        per_channel = (channels,) + (1,) * (event_dim - 1)
        if self.dispersion == "learned":
            return self.theta_param.to(like.dtype).clamp(min=1e-38).log().reshape(per_channel)
        return raw + self.theta_offset.to(like.dtype).reshape(per_channel)

    def forward(self, output: torch.Tensor, event_dim: int,
                library: torch.Tensor | None = None) -> dist.TorchDistribution:
        parts = self._split(output, event_dim)
        log_mean = self._log_mean(parts[0], event_dim, library)
        log_theta = self._log_theta(parts[1] if self.dispersion == "decoder" else None,
                                    parts[0], event_dim)
        if self._gate:
            return ZeroInflatedNBLogMean(log_mean, log_theta, parts[-1]).to_event(event_dim)
        return NegativeBinomialLogMean(log_mean, log_theta).to_event(event_dim)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "dispersion": self.dispersion, "init_theta": self.init_theta}

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor([float(self._library_measured), float(self._theta_started)],
                            dtype=torch.float64)

    def set_extra_state(self, state: Any) -> None:
        super().set_extra_state(state)
        state = torch.as_tensor(state).reshape(-1)
        if state.numel() > 1 and bool(state[1] > 0):
            self._theta_started = True


class ZeroInflatedNBCounts(NegativeBinomialCounts):
    """The zero-inflated negative binomial, ``p(x_i | z) = pi_i [x_i = 0] + (1 - pi_i)
    NB(x_i | mu_i, theta_i)``, with the zero-inflation (dropout) logit ``logit(pi_i)`` per point
    and dimension from the decoder (as in scVI); theta and the mean as in
    :class:`NegativeBinomialCounts`. Decoder outputs per channel: the mean, the raw theta
    (``dispersion="decoder"`` only), the gate logit.

    :param dispersion: ``"learned"`` (default), ``"decoder"`` or a positive number
    :param str mean: ``"scvi"`` (default) or ``"plain"``
    :param float init_theta: the start of a learned or decoder theta; ``None``: measured on
        the first batch (:func:`theta_start`)
    :param int dims: the number of dimensions (channels); ``None``: the data's
    """

    kind = "zero-inflated-nb"
    label = "zero-inflated NB"
    _gate = True

    def __init__(self, *, dispersion: str | float = "learned", mean: str = "scvi",
                 init_theta: float | None = None, dims: int | None = None) -> None:
        super().__init__(dispersion=dispersion, mean=mean, init_theta=init_theta, dims=dims)
