"""Low-rank plus diagonal covariance: ``p(x | z) = N(mu(z), W(z) W(z)^T + diag(d(z)^2))`` over
the whole data point, so the model can put its variance along the data manifold's tangent
(the columns of ``W``) at a cost linear in the dimension.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*.
  arXiv:2003.01972 (Section 6 asks for observation models that identify the local tangent to the
  data manifold, more scalably than a full covariance).
- G. Dorta, S. Vicente, L. Agapito, N. D. F. Campbell, I. Simpson. *Structured Uncertainty
  Prediction Networks*. CVPR 2018 (a structured covariance predicted per image).
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..errors import ConfigError, check_positive_int
from .normal import _DecoderScale

__all__ = ["LowRankNormal", "ReshapedEvent"]


class ReshapedEvent(TorchDistribution):
    """A distribution over vectors of length ``prod(event_shape)`` seen as tensors of
    ``event_shape`` (an image): same log-density, draws and mean, reshaped.

    :param base_dist: a distribution with event shape ``(D,)``
    :param event_shape: the shape of one data point, with ``D`` elements
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real

    def __init__(self, base_dist: TorchDistribution, event_shape: tuple[int, ...]) -> None:
        self.base_dist = base_dist
        super().__init__(base_dist.batch_shape, torch.Size(event_shape), validate_args=False)

    @property
    def has_rsample(self) -> bool:
        """Whether the base distribution draws with reparameterisation."""
        return self.base_dist.has_rsample

    def expand(self, batch_shape, _instance=None):
        return ReshapedEvent(self.base_dist.expand(batch_shape), self.event_shape)

    def _flat(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(value.shape[:value.dim() - len(self.event_shape)] + (-1,))

    def _shaped(self, value: torch.Tensor) -> torch.Tensor:
        return value.reshape(value.shape[:-1] + self.event_shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.base_dist.log_prob(self._flat(value))

    def rsample(self, sample_shape=()) -> torch.Tensor:
        return self._shaped(self.base_dist.rsample(sample_shape))

    def sample(self, sample_shape=()) -> torch.Tensor:
        return self._shaped(self.base_dist.sample(sample_shape))

    @property
    def mean(self) -> torch.Tensor:
        return self._shaped(self.base_dist.mean)

    @property
    def variance(self) -> torch.Tensor:
        return self._shaped(self.base_dist.variance)


class LowRankNormal(_DecoderScale):
    """``p(x | z) = N(mu(z), W(z) W(z)^T + diag(d(z)^2))`` over the whole data point, with Pyro's
    :class:`~pyro.distributions.LowRankMultivariateNormal`. The decoder gives ``2 + rank``
    outputs per channel, in blocks along the channel axis: the mean, a raw diagonal scale
    (``d = min_scale + softplus(raw + c)`` as in :class:`~pyro_lvae.LearnedVectorScale`) and
    ``rank`` blocks of the factor ``W`` (column ``j`` is block ``j``, flattened, times
    ``init_scale / sqrt(rank)`` so that the factor starts at the diagonal's scale).

    The event is the whole data point: for images the flattened image, ``D = C H W``, with
    ``W`` of shape ``(D, rank)``; the density (Woodbury identity and the ``rank x rank``
    capacitance) and draws cost memory ``O(D rank)``, never ``D^2``. A data point of several
    axes is scored through :class:`ReshapedEvent`, so the site ``x`` keeps the data's shape.

    :param int rank: the number of factor columns ``r``, at most the data's dimension ``D``
        (a covariance of ``D`` dimensions has rank at most ``D``): a larger one is a
        :class:`~pyro_lvae.errors.ConfigError` when the VAE is built (:meth:`output_shape`)
    :param float init_scale: ``d`` for a raw output of 0, and the factor's unit; ``None``
        (default): half the spread of the first batch of data
    :param float min_scale: floor on the diagonal scale ``d``

    **References**

    - V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*.
      arXiv:2003.01972, Section 6.
    - G. Dorta et al. *Structured Uncertainty Prediction Networks*. CVPR 2018.
    """

    kind = "low-rank"
    label, learned = "low-rank covariance", True

    def __init__(self, *, rank: int = 2, init_scale: float | None = None,
                 min_scale: float = 1e-3) -> None:
        super().__init__(init_scale=init_scale, min_scale=min_scale)
        self.rank = check_positive_int("rank", rank)
        #: mean, diagonal and ``rank`` factor blocks per channel
        self.outputs_per_channel = 2 + self.rank

    def _check_rank(self, dimension: int) -> None:
        if self.rank > dimension:
            raise ConfigError(
                f"LowRankNormal(rank={self.rank}) is beyond the data's dimension D={dimension}: "
                f"a covariance of D dimensions has rank at most D; use rank <= {dimension}"
            )

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """``(2 + rank) C`` outputs per point for data of shape ``(C, ...)``; a ``rank``
        beyond the data's dimension ``D`` (the product of ``data_shape``) is a
        :class:`~pyro_lvae.errors.ConfigError`, raised before any network is built."""
        self._check_rank(math.prod(data_shape))
        return super().output_shape(data_shape)

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        axis = output.dim() - event_dim
        channels = output.shape[axis] // self.outputs_per_channel
        self._check_rank(channels * math.prod(output.shape[axis + 1:]))
        loc, raw, factor = output.split([channels, channels, self.rank * channels], dim=axis)
        diag = self.scale_from_raw(raw)
        batch, event = loc.shape[:axis], loc.shape[axis:]
        size = event.numel()
        factor = factor.reshape(batch + (self.rank, size)).transpose(-1, -2)
        factor = factor * (self.init_scale / math.sqrt(self.rank))
        mvn = dist.LowRankMultivariateNormal(loc.reshape(batch + (size,)), factor,
                                             diag.reshape(batch + (size,)).pow(2))
        return mvn if event_dim == 1 else ReshapedEvent(mvn, tuple(event))

    def spread(self, output: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The standard deviation of each dimension: the square root of the covariance's
        diagonal, ``sqrt(sum_j W_ij^2 + d_i^2)`` (the marginal standard deviation; the
        correlations the factor adds are not in it), shaped like the data."""
        return super().spread(output, event_dim)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "rank": self.rank}
