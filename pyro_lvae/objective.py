"""The objective of a Pyro model/guide pair, split into its reconstruction and latent parts.

Pyro's ELBO is the definition. :func:`trace_parts` reads the parts off the traces of one step
(the traces the ELBO itself ran, recorded by a ``poutine.trace`` nested inside it, so their values
and scales are the ELBO's own):

- ``reconstruction = -sum over observed sites of log p(x | z)``
- ``kl = sum over latent sites of [log q(z | x) - log p(z)] / beta`` (the single-draw estimate
  that ``Trace_ELBO`` uses; its expectation is the KL divergence), or the analytic KL where
  ``TraceMeanField_ELBO`` uses it

so that ``loss = reconstruction + beta * kl`` is the ELBO's loss under
:func:`~pyro_lvae.annealed` / :func:`~pyro_lvae.weight_latents` ``(beta)``. Sums run over the batch
and every dimension (the full log-density, constants and ``log sigma`` included); scales set by
handlers outside (``poutine.scale``) are part of both terms.

:func:`elbo_terms` runs the guide, replays the model on its draws (as ``Trace_ELBO`` does) and
returns those parts. :func:`direct_elbo_terms` computes them for pyro-lvae's own model and guide
without Pyro's handler stack (the same ``rsample`` call, so the same random numbers);
:func:`pyro_lvae.fit` uses it only where :func:`direct_mismatch` finds nothing that it would
miss and its loss and gradients were checked against ``Trace_ELBO`` on the first batch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.poutine.trace_struct import Trace
from pyro.poutine.util import prune_subsample_sites
from torch.distributions import kl_divergence

__all__ = ["ELBOTerms", "elbo_terms", "trace_parts", "direct_elbo_terms", "direct_mismatch",
           "likelihood_scale", "scale_stats"]


class ELBOTerms(NamedTuple):
    """Summed over the batch: ``loss = reconstruction + beta * kl``."""

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    #: the observation site's distribution (for scale summaries); None where unknown
    likelihood: Any


def _site_log_prob(site: dict[str, Any], weight: Any) -> torch.Tensor:
    log_p = site["fn"].log_prob(site["value"], *site["args"], **site["kwargs"])
    return scale_and_mask(log_p, weight, site["mask"]).sum()


def _latent_weight(site: dict[str, Any], beta: float) -> Any:
    """The site's scale without beta (outer handlers' scales kept); beta 0: unscaled."""
    return site["scale"] / beta if beta != 0 else 1.0


def _analytic_kl(guide_site: dict[str, Any], model_site: dict[str, Any],
                 beta: float) -> torch.Tensor | None:
    try:
        kl = kl_divergence(guide_site["fn"], model_site["fn"])
    except NotImplementedError:
        return None
    kl = scale_and_mask(kl, _latent_weight(guide_site, beta), guide_site["mask"])
    if torch.is_tensor(kl):
        return kl.sum()
    return torch.as_tensor(kl * torch.Size(guide_site["fn"].batch_shape).numel())


def trace_parts(model_traces: Sequence[Trace], guide_traces: Sequence[Trace],
                beta: float = 1.0, analytic_kl: bool = False,
                particles: int | None = None) -> ELBOTerms:
    """The parts of an ELBO's loss from its traces, averaged over particles.

    :param model_traces: the model's trace of each particle (values replayed from the guide)
    :param guide_traces: the guide's trace of each particle
    :param float beta: the weight the latent sites carry in the traces
    :param bool analytic_kl: use ``KL(q || p)`` in closed form where it is known (as
        ``TraceMeanField_ELBO`` does) instead of the one-draw estimate
    :param int particles: the number of particles the traces hold (default: one per trace;
        an ELBO with ``vectorize_particles=True`` runs all of them in one trace)
    """
    reconstruction: Any = 0.0
    kl: Any = 0.0
    likelihood = None
    for model_trace, guide_trace in zip(model_traces, guide_traces, strict=True):
        model_trace = prune_subsample_sites(model_trace)
        guide_trace = prune_subsample_sites(guide_trace)
        done = set()
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                reconstruction = reconstruction - _site_log_prob(site, site["scale"])
                if likelihood is None or name == "x":
                    likelihood = site["fn"]
                continue
            guide_site = guide_trace.nodes.get(name)
            if analytic_kl and guide_site is not None:
                closed = _analytic_kl(guide_site, site, beta)
                if closed is not None:
                    kl = kl + closed
                    done.add(name)
                    continue
            kl = kl - _site_log_prob(site, _latent_weight(site, beta))
        for name, site in guide_trace.nodes.items():
            if site["type"] != "sample" or name in done:
                continue
            if site["is_observed"]:  # enters the loss unweighted, as -log q
                reconstruction = reconstruction + _site_log_prob(site, site["scale"])
            else:
                kl = kl + _site_log_prob(site, _latent_weight(site, beta))
    particles = particles or max(len(model_traces), 1)
    reconstruction = torch.as_tensor(reconstruction) / particles
    kl = torch.as_tensor(kl) / particles
    return ELBOTerms(reconstruction + beta * kl, reconstruction, kl, likelihood)


def elbo_terms(model, guide, *args, beta: float | torch.Tensor = 1.0, **kwargs) -> ELBOTerms:
    """One-draw ELBO terms of ``model``/``guide`` on ``args`` (see the module docstring)."""
    guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
    model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
        *args, **kwargs
    )
    terms = trace_parts([model_trace], [guide_trace])
    return ELBOTerms(terms.reconstruction + beta * terms.kl, terms.reconstruction, terms.kl,
                     terms.likelihood)


def direct_elbo_terms(vae: Any, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> ELBOTerms:
    """The terms of :func:`elbo_terms` for a pyro-lvae VAE, without Pyro's tracing.

    The draw ``z = loc + eps * scale`` takes ``eps`` exactly as ``Normal.rsample`` does, so a
    seed gives the same ``z`` as Pyro's guide. With ``eps = (z - loc) / scale``,
    ``log q(z|x) = sum(-eps^2 / 2 - log scale) - (K / 2) log(2 pi)`` per point, and
    ``log p(z)`` is the log-density of the model's prior (any :class:`~pyro_lvae.priors.Prior`,
    evaluated outside Pyro's handlers). It knows the sites ``z`` and ``x`` and nothing else:
    see :func:`direct_mismatch`.
    """
    model = vae.model
    vae.initialize(x)  # as the programs do at every batch (measures once, then a no-op)
    loc, scale = vae.guide.posterior(x)
    eps = torch.empty_like(loc).normal_()
    z = loc + eps * scale
    likelihood = model.likelihood(z)
    reconstruction = -likelihood.log_prob(x).sum()
    log_q = (-0.5 * eps**2 - scale.log()).sum() - 0.5 * math.log(2 * math.pi) * eps.numel()
    kl = log_q - model.prior.forward().log_prob(z).sum()
    return ELBOTerms(reconstruction + beta * kl, reconstruction, kl, likelihood)


def _is_diagonal_normal(fn: Any, event_dim: int = 1) -> bool:
    if isinstance(fn, dist.Independent):
        return isinstance(fn.base_dist, dist.Normal) and fn.reinterpreted_batch_ndims == event_dim
    return False


def _site_mismatch(name: str, site: dict[str, Any], n: int) -> str | None:
    if site["scale"] is not None and not (isinstance(site["scale"], float)
                                          and site["scale"] == 1.0):
        return f"site {name!r} is scaled (a handler around fit, such as poutine.scale)"
    if site["mask"] is not None:
        return f"site {name!r} is masked (a handler around fit)"
    if site["infer"].get("enumerate"):
        return f"site {name!r} is enumerated"
    frames = [(f.name, f.size, f.dim) for f in site["cond_indep_stack"]]
    if frames != [("data", n, -1)]:
        return f"site {name!r} is not in the plate 'data' alone"
    return None


def direct_mismatch(vae: Any, x: torch.Tensor, model_trace: Trace,
                    guide_trace: Trace) -> str | None:
    """Why :func:`direct_elbo_terms` would not compute the ELBO of ``vae`` on ``x``, read off a
    model trace (replayed on the guide trace) taken under the handlers fit runs under; ``None``
    when the traces hold exactly the sites it knows: a reparameterised diagonal-Normal latent
    ``z`` in both programs, the observed ``x`` (this batch), both in the plate ``data``,
    unscaled and unmasked, and no parameters but the VAE's own module parameters (the prior's
    log-density itself is checked by the comparison of losses and gradients that follows)."""
    own = {id(p) for p in vae.parameters()}
    n = x.shape[0]
    for label, trace, expected in (("model", model_trace, {"z", "x"}),
                                   ("guide", guide_trace, {"z"})):
        trace = prune_subsample_sites(trace)
        sites = {k: s for k, s in trace.nodes.items() if s["type"] == "sample"}
        if set(sites) != expected:
            extra = sorted(set(sites) ^ expected)
            return f"the {label} has sample sites {', '.join(map(repr, extra))} beyond z and x"
        for name, site in sites.items():
            reason = _site_mismatch(name, site, n)
            if reason is not None:
                return f"in the {label}, {reason}"
        for name, site in trace.nodes.items():
            if site["type"] != "param":
                continue
            value = site["value"]
            unconstrained = getattr(value, "unconstrained", None)
            if id(value) not in own and (unconstrained is None or id(unconstrained()) not in own):
                return f"the {label} has a parameter {name!r} that is not the VAE's own"
    z_model, z_guide = model_trace.nodes["z"], guide_trace.nodes["z"]
    x_site = model_trace.nodes["x"]
    if z_model["is_observed"] or z_guide["is_observed"]:
        return "z is observed (a handler around fit conditions it)"
    if not (_is_diagonal_normal(z_guide["fn"]) and z_guide["fn"].has_rsample):
        return "the guide's z is not a reparameterised diagonal Normal"
    if tuple(z_model["fn"].event_shape) != (vae.latent_dim,):
        return "the model's prior on z is not a distribution over one latent code"
    if not x_site["is_observed"] or x_site["value"] is not x:
        return "the model's x is not observed as this batch"
    return None


def likelihood_scale(likelihood: Any) -> torch.Tensor | None:
    """The ``scale`` tensor of a (possibly ``Independent``-wrapped) Normal-family likelihood,
    broadcast to its batch and event shape; ``None`` for families without a scale."""
    base = likelihood
    while hasattr(base, "base_dist"):
        base = base.base_dist
    scale = getattr(base, "scale", None)
    return scale if isinstance(scale, torch.Tensor) else None


def scale_stats(likelihood: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """``(mean, min, max)`` of the scale of a Normal-family likelihood, else ``None``."""
    scale = likelihood_scale(likelihood)
    if scale is None:
        return None
    scale = scale.detach()
    return scale.mean(), scale.min(), scale.max()
