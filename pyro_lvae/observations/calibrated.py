"""The calibrated shared sigma of sigma-VAE: ``p(x | z) = N(mu(z), sigma^2)`` with sigma set,
at every training batch, to the root-mean-square error of the batch.

**References**

- O. Rybkin, K. Daniilidis, S. Levine. *Simple and Effective VAE Training with Calibrated
  Decoders*. ICML 2021.
"""

from __future__ import annotations

import math
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..errors import ConfigError
from .base import Observation, _init_and_floor

__all__ = ["CalibratedScale", "CalibratedNormal"]


class CalibratedNormal(TorchDistribution):
    """``N(loc, sigma^2)`` over one data point (event: the last ``event_dim`` axes) whose shared
    sigma is calibrated on the data it scores (see :class:`CalibratedScale`).

    :param torch.Tensor loc: the decoder means, ``batch + event``
    :param CalibratedScale owner: the observation model that keeps sigma
    :param int event_dim: number of event axes
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc: torch.Tensor, owner: CalibratedScale, event_dim: int) -> None:
        self.loc, self.owner = loc, owner
        split = loc.dim() - event_dim
        super().__init__(loc.shape[:split], loc.shape[split:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return CalibratedNormal(self.loc.expand(torch.Size(batch_shape) + self.event_shape),
                                self.owner, len(self.event_shape))

    @property
    def scale(self) -> torch.Tensor:
        """The sigma in force: the last training batch's (or the start)."""
        return self.owner.scale.to(self.loc.dtype)

    @property
    def mean(self) -> torch.Tensor:
        return self.loc

    @property
    def variance(self) -> torch.Tensor:
        """``sigma^2`` (the sigma in force) for every element."""
        return self.scale.pow(2).expand(self.loc.shape)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # training: sigma is the RMSE of this batch
            sigma = self.owner.calibrate(value, self.loc)
        else:
            sigma = self.scale
        log_p = dist.Normal(self.loc, sigma).log_prob(value)
        event_dim = len(self.event_shape)
        return log_p.sum(tuple(range(-event_dim, 0))) if event_dim else log_p

    def rsample(self, sample_shape=()) -> torch.Tensor:
        shape = self._extended_shape(sample_shape)
        eps = torch.randn(shape, dtype=self.loc.dtype, device=self.loc.device)
        return self.loc.expand(shape) + eps * self.scale


class CalibratedScale(Observation):
    """sigma-VAE: one sigma for every data dimension, set analytically, at every training batch,
    to its maximum-likelihood value, the root-mean-square error of the batch,
    ``sigma = max(sqrt(mean over the batch and dimensions of (x - mu(z))^2), min_scale)``,
    detached (no gradient flows through it). It has no learned parameter.

    **The objective.** The reconstruction term at that sigma is
    ``(N D / 2) log(2 pi sigma^2) + N D / 2``, whose gradient for the networks is that of
    ``(N D / 2) log MSE``: training maximises, per batch, the ELBO *profiled* over a shared
    sigma, ``max_sigma ELBO_batch(sigma)`` (the detached sigma changes nothing above the floor:
    the ELBO is stationary in sigma there). This is not the ELBO of one fixed model, since every
    batch has its own sigma; the loss that training logs is the batch's profiled ELBO. Compared
    with a learned shared sigma (:class:`~pyro_lvae.LearnedScalarScale`), which follows the
    same optimum by gradient steps, sigma here is at its optimum at every step.

    **Evaluation.** The last training batch's sigma is kept (a buffer, saved with the model).
    With gradients enabled (training) ``log_prob`` calibrates on the data it scores and keeps
    that sigma; without (``torch.no_grad``: :mod:`pyro_lvae.evaluate`,
    :meth:`~pyro_lvae.VAE.reconstruct`, :meth:`~pyro_lvae.VAE.sigma`) it uses the kept sigma,
    so held-out ELBO and IWAE are those of one fixed Normal model, comparable with every other
    observation model, and never fitted to the held-out data. Samples use the kept sigma.

    :param float init_scale: sigma before the first training batch (for sampling from an
        untrained model)
    :param float min_scale: floor on sigma (Rybkin et al. floor ``log sigma`` at -6:
        ``exp(-6)``, the default)

    Example::

        >>> import torch, pyro_lvae as lv
        >>> obs = lv.CalibratedScale()
        >>> loc = torch.zeros(2, 2, requires_grad=True)  # gradients on: a training step
        >>> _ = obs(loc, event_dim=1).log_prob(torch.tensor([[3.0, 0.0], [0.0, 4.0]]))
        >>> float(obs.scale)  # sqrt((9 + 16) / 4)
        2.5

    **References**

    - O. Rybkin, K. Daniilidis, S. Levine. *Simple and Effective VAE Training with Calibrated
      Decoders*. ICML 2021.
    """

    kind = "calibrated"
    location_first = True
    label, shared = "sigma-VAE", True

    def __init__(self, *, init_scale: float = 1.0, min_scale: float = math.exp(-6)) -> None:
        super().__init__()
        self.init_scale, self.min_scale = _init_and_floor(init_scale, min_scale)
        self.register_buffer("scale", torch.tensor(self.init_scale))

    @property
    def shared_scale(self) -> torch.Tensor:
        return self.scale

    def forward(self, output: torch.Tensor, event_dim: int) -> CalibratedNormal:
        return CalibratedNormal(output, self, event_dim)

    @torch.no_grad()
    def calibrate(self, x: torch.Tensor, loc: torch.Tensor) -> torch.Tensor:
        """Set sigma to the root-mean-square error of ``x`` against ``loc`` (floored at
        ``min_scale``), keep it, and return it (detached)."""
        if torch.jit.is_tracing():
            raise ConfigError(
                "sigma-VAE's calibrated sigma is recomputed from every batch, which a compiled "
                "(JIT) ELBO would freeze at its first batch; train it with Trace_ELBO (or "
                "pyro_lvae.fit's default)"
            )
        rmse = (x - loc).pow(2).mean().sqrt()
        sigma = rmse.clamp(min=self.min_scale)
        self.scale.copy_(sigma.to(self.scale.dtype))
        return sigma

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "init_scale": self.init_scale, "min_scale": self.min_scale}
