"""Held-out evaluation from the model's own log-density.

- :func:`elbo`: the ELBO per data point in nats, with its reconstruction / KL split;
- :func:`iwae`: the importance-weighted bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` of
  Burda et al., which rises towards ``log p(x)`` as ``K`` grows; computed in chunks of samples
  with a running log-sum-exp, so ``K`` in the thousands needs little memory;
- :func:`active_units`: latent dimensions whose posterior mean varies across the data
  (``Var_x E_q[z_k] > threshold``, Burda et al. use 0.01); 0 means posterior collapse;
- :func:`kl_per_dim`: the analytic KL of each latent dimension, averaged over the data;
- :func:`scale_summary`: the observation model's sigma, overall, per dimension, per group;
- :func:`summary`: all of the above at once.

Every number comes from ``vae.model`` and ``vae.guide`` through Pyro's ``trace``/``replay``
handlers, the log-density used in training (constants and ``log sigma`` included).

**References**

- Y. Burda, R. Grosse, R. Salakhutdinov. *Importance Weighted Autoencoders*. ICLR 2016.
"""

from __future__ import annotations

import math
from typing import Any

import pyro
import torch
from pyro import poutine

from .errors import check_positive_int
from .objective import elbo_terms, likelihood_scale

__all__ = ["elbo", "iwae", "active_units", "kl_per_dim", "scale_summary", "summary"]


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i: i + batch_size]


def _prepare(vae: Any, x: torch.Tensor) -> torch.Tensor:
    x = x.to(vae.device)
    vae.model.check_data(x, finite=True)
    vae.initialize(x)  # an untrained model takes its start from the first data
    return x


@torch.no_grad()
def elbo(
    vae: Any, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1000
) -> dict[str, float]:
    """Held-out ELBO of ``vae`` on ``x``, per data point, in nats.

    :returns: ``{"elbo", "reconstruction", "kl"}`` with ``elbo = -(reconstruction + kl)``
    """
    check_positive_int("num_particles", num_particles)
    check_positive_int("batch_size", batch_size)
    x = _prepare(vae, x)
    rec = kl = 0.0
    with poutine.block():
        for _ in range(num_particles):
            for xb in _batches(x, batch_size):
                t = elbo_terms(vae.model, vae.guide, xb)
                rec += float(t.reconstruction)
                kl += float(t.kl)
    n = x.shape[0] * num_particles
    return {"elbo": -(rec + kl) / n, "reconstruction": rec / n, "kl": kl / n}


def _log_weights(vae: Any, x: torch.Tensor, k: int) -> torch.Tensor:
    """``log p(x, z) - log q(z | x)`` for ``k`` draws per point: shape ``(k, batch)``."""
    with pyro.plate("importance_samples", k, dim=-2):
        guide_trace = poutine.trace(vae.guide).get_trace(x)
        model_trace = poutine.trace(poutine.replay(vae.model, trace=guide_trace)).get_trace(x)
    model_trace.compute_log_prob()
    guide_trace.compute_log_prob()
    log_w = 0.0
    for name, site in model_trace.nodes.items():
        if site["type"] == "sample":
            log_w = log_w + site["log_prob"]
            if not site["is_observed"]:
                log_w = log_w - guide_trace.nodes[name]["log_prob"]
    return torch.as_tensor(log_w).expand(k, x.shape[0])


@torch.no_grad()
def iwae(
    vae: Any,
    x: torch.Tensor,
    num_samples: int = 1000,
    batch_size: int = 500,
    chunk_size: int = 250,
    return_per_point: bool = False,
) -> float | torch.Tensor:
    """Importance-weighted bound on ``log p(x)`` with ``num_samples`` draws, per point (nats).

    With ``num_samples = 1`` it is a one-draw ELBO; it never decreases in expectation as
    ``num_samples`` grows, and tends to ``log p(x)``. Memory grows with
    ``batch_size * chunk_size``, not with ``num_samples``.

    :param bool return_per_point: return the bound of every point instead of the mean
    """
    for name, value in (("num_samples", num_samples), ("batch_size", batch_size),
                        ("chunk_size", chunk_size)):
        check_positive_int(name, value)
    x = _prepare(vae, x)
    out = []
    with poutine.block():
        for xb in _batches(x, batch_size):
            running = torch.full((xb.shape[0],), -math.inf, device=x.device, dtype=x.dtype)
            done = 0
            while done < num_samples:
                k = min(chunk_size, num_samples - done)
                log_w = _log_weights(vae, xb, k)
                running = torch.logaddexp(running, torch.logsumexp(log_w, dim=0))
                done += k
            out.append(running - math.log(num_samples))
    per_point = torch.cat(out)
    return per_point if return_per_point else float(per_point.mean())


@torch.no_grad()
def _posterior(vae: Any, x: torch.Tensor, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    locs, scales = [], []
    with poutine.block():
        for xb in _batches(x, batch_size):
            loc, scale = vae.guide.posterior(xb)
            locs.append(loc)
            scales.append(scale)
    return torch.cat(locs), torch.cat(scales)


@torch.no_grad()
def active_units(
    vae: Any, x: torch.Tensor, threshold: float = 0.01, batch_size: int = 1000
) -> tuple[int, torch.Tensor]:
    """``(count, variance per latent dimension)`` of the posterior mean over the data; a
    dimension is active when its variance exceeds ``threshold``."""
    x = _prepare(vae, x)
    loc, _ = _posterior(vae, x, batch_size)
    var = loc.var(dim=0) if loc.shape[0] > 1 else torch.zeros(loc.shape[-1], device=loc.device)
    return int((var > threshold).sum()), var


@torch.no_grad()
def kl_per_dim(vae: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Analytic ``KL(q(z_k | x) || N(0, 1))`` of each latent dimension, averaged over ``x``."""
    x = _prepare(vae, x)
    loc, scale = _posterior(vae, x, batch_size)
    kl = 0.5 * (loc**2 + scale**2 - 1.0) - scale.log()
    return kl.mean(dim=0)


@torch.no_grad()
def scale_summary(
    vae: Any, x: torch.Tensor, groups: torch.Tensor | None = None, batch_size: int = 1000,
    floor: float | None = None,
) -> dict[str, Any] | None:
    """The observation model's sigma at each point's posterior mean: overall mean, mean per data
    dimension, and mean per group of points (``groups``: an integer label per point, such as
    the noise region of :func:`pyro_lvae.datasets.manifold2d`). With ``floor`` (a learned
    sigma's ``min_scale``), also ``share_at_floor``: the share of (point, dimension) sigmas
    below 1.1 times it. ``None`` for models without a scale."""
    x = _prepare(vae, x)
    scales = []
    with poutine.block():
        for xb in _batches(x, batch_size):
            scale = likelihood_scale(vae.model.likelihood(vae.guide.posterior(xb)[0]))
            if scale is None:
                return None
            # a mixed table's scale covers its continuous columns only
            scales.append(scale.expand_as(xb) if scale.dim() < xb.dim() or
                          scale.shape[1:] == xb.shape[1:] else scale)
    scale = torch.cat(scales)
    per_point = scale.reshape(scale.shape[0], -1).mean(dim=1)
    out: dict[str, Any] = {
        "sigma": float(per_point.mean()),
        "sigma_per_dim": scale.mean(dim=0).cpu(),
    }
    if floor is not None:
        out["share_at_floor"] = float((scale < 1.1 * floor).sum()) / scale.numel()
    if groups is not None:
        groups = groups.to(per_point.device)
        out["sigma_per_group"] = {int(g): float(per_point[groups == g].mean())
                                  for g in torch.unique(groups)}
    return out


def summary(
    vae: Any,
    x: torch.Tensor,
    iwae_samples: int = 1000,
    num_particles: int = 4,
    groups: torch.Tensor | None = None,
    threshold: float = 0.01,
) -> dict[str, Any]:
    """Held-out ELBO (and parts), IWAE bound, active units, KL per dimension and sigma."""
    out: dict[str, Any] = dict(elbo(vae, x, num_particles=num_particles))
    out["iwae"] = iwae(vae, x, num_samples=iwae_samples)
    out["active_units"], out["posterior_mean_variance"] = active_units(vae, x, threshold)
    out["kl_per_dim"] = kl_per_dim(vae, x).cpu()
    scales = scale_summary(vae, x, groups)
    if scales is not None:
        out.update(scales)
    return out
