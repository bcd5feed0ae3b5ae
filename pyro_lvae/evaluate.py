"""Held-out evaluation from the model's own log-density.

:func:`elbo` estimates the ELBO per data point in nats, with its reconstruction / KL split,
averaged over data and draws of ``q(z | x)``.
"""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine

from .elbo import elbo_terms
from .errors import ConfigError

__all__ = ["elbo"]


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i: i + batch_size]


@torch.no_grad()
def elbo(
    vae: Any, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1000
) -> dict[str, float]:
    """Held-out ELBO of ``vae`` on ``x``, per data point, in nats.

    :returns: ``{"elbo", "reconstruction", "kl"}`` with ``elbo = -(reconstruction + kl)``
    """
    if num_particles < 1 or batch_size < 1:
        raise ConfigError("Expected num_particles >= 1 and batch_size >= 1")
    x = x.to(vae.device)
    vae.model.check_data(x)
    rec = kl = 0.0
    with poutine.block():
        for _ in range(num_particles):
            for xb in _batches(x, batch_size):
                t = elbo_terms(vae.model, vae.guide, xb)
                rec += float(t.reconstruction)
                kl += float(t.kl)
    n = x.shape[0] * num_particles
    return {"elbo": -(rec + kl) / n, "reconstruction": rec / n, "kl": kl / n}
