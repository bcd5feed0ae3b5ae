"""Held-out evaluation from the model's own log-density.

- :func:`elbo_parts`: the ELBO per data point in nats, with its reconstruction / KL split (a
  dict; ``elbo`` is its former name);
- :func:`iwae`: the importance-weighted bound ``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` of
  Burda et al., which rises towards ``log p(x)`` as ``K`` grows; computed in chunks of samples
  with a running log-sum-exp, so ``K`` in the thousands needs little memory;
- :func:`active_units`: latent dimensions whose posterior mean varies across the data
  (``Var_x E_q[z_k] > threshold``, Burda et al. use 0.01); 0 means posterior collapse;
- :func:`kl_per_dim`: the analytic KL of each latent dimension, averaged over the data
  (priors that are a product of Normals);
- :func:`latent_surgery`: the ELBO-surgery split of the average KL into the index-code mutual
  information and the marginal KL (Hoffman & Johnson 2016);
- :func:`prior_hole`: the prior's mass where the aggregated posterior is thin (the hole
  problem);
- :func:`scale_summary`: the observation model's sigma, overall, per dimension, per group;
- :func:`summary`: all of the above at once;
- :func:`frechet_distance`: the Fréchet distance between Gaussians fitted to two feature sets
  (the FID of Heusel et al. in whatever features are given).

Every ELBO number comes from ``vae.model`` and ``vae.guide`` through Pyro's ``trace``/``replay``
handlers, the log-density used in training (constants and ``log sigma`` included). Every function
needs an initialized VAE (:attr:`~pyro_lvae.VAE.initialized`; training, or
``vae.initialize(x)`` with training data): held-out data never give a model its data start, and a
VAE with one pending is refused with :class:`~pyro_lvae.errors.NotInitialized`.

**The aggregated posterior.** Of ``N`` held-out points ``x_1..x_N``: the mixture
``q_N(z) = (1/N) sum_n q(z | x_n)``, evaluated exactly (every ``z`` against every point, in
float64). :func:`latent_surgery` and :func:`prior_hole` work on it; see their docstrings for the
estimators and their biases.

**References**

- Y. Burda, R. Grosse, R. Salakhutdinov. *Importance Weighted Autoencoders*. ICLR 2016.
- M. Hoffman, M. Johnson. *ELBO surgery: yet another way to carve up the variational evidence
  lower bound*. NIPS Workshop on Advances in Approximate Bayesian Inference, 2016.
- D. Rezende, F. Viola. *Taming VAEs*. arXiv:1810.00597, 2018 (the "holes" of the aggregated
  posterior under the prior).
- J. Aneja, A. Schwing, J. Kautz, A. Vahdat. *A Contrastive Learning Approach for Training
  Variational Autoencoder Priors*. NeurIPS 2021 (the prior hole problem).
- M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter. *GANs Trained by a Two
  Time-Scale Update Rule Converge to a Local Nash Equilibrium*. NIPS 2017 (the Fréchet
  Inception Distance).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import pyro
import torch
from pyro import poutine

from .errors import ConfigError, check_positive_int
from .objective import elbo_terms, likelihood_scale
from .registry import deprecated_aliases

__all__ = ["elbo_parts", "iwae", "active_units", "kl_per_dim", "latent_surgery", "prior_hole",
           "aggregate_log_density", "latent_diagnostics", "scale_summary", "summary",
           "frechet_distance"]


#: the default seed of the diagnostics' own draws: not a small number, so that their noise is
#: not the very stream of data drawn with a small seed (``torch.manual_seed(s)`` and
#: ``torch.Generator().manual_seed(s)`` give the same numbers)
DIAGNOSTIC_SEED = 20161204


def _batches(x: torch.Tensor, batch_size: int):
    for i in range(0, x.shape[0], batch_size):
        yield x[i: i + batch_size]


def _prepare(vae: Any, x: torch.Tensor, query: str) -> torch.Tensor:
    """``x`` on the VAE's device, checked; a VAE whose data-dependent state is pending is
    refused (held-out data never give a model its start: call ``vae.initialize`` with
    training data, as training does)."""
    x = x.to(vae.device)
    vae.model.check_data(x, finite=True)
    vae.check_initialized(f"evaluate.{query}")
    return x


@torch.no_grad()
def elbo_parts(
    vae: Any, x: torch.Tensor, num_particles: int = 1, batch_size: int = 1000
) -> dict[str, float]:
    """Held-out ELBO of ``vae`` on ``x``, per data point, in nats.

    :returns: ``{"elbo", "reconstruction", "kl"}`` with ``elbo = -(reconstruction + kl)``
    """
    num_particles = check_positive_int("num_particles", num_particles)
    batch_size = check_positive_int("batch_size", batch_size)
    x = _prepare(vae, x, "elbo_parts")
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
    num_samples, batch_size, chunk_size = (check_positive_int(name, value) for name, value in (
        ("num_samples", num_samples), ("batch_size", batch_size), ("chunk_size", chunk_size)))
    x = _prepare(vae, x, "iwae")
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
    x = _prepare(vae, x, "active_units")
    loc, _ = _posterior(vae, x, batch_size)
    var = loc.var(dim=0) if loc.shape[0] > 1 else torch.zeros(loc.shape[-1], device=loc.device)
    return int((var > threshold).sum()), var


@torch.no_grad()
def kl_per_dim(vae: Any, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """Analytic ``KL(q(z_k | x) || p(z_k))`` of each latent dimension, averaged over ``x``, for
    a prior that is a product of Normals (the standard Normal: ``N(0, 1)`` per dimension); a
    :class:`~pyro_lvae.errors.ConfigError` for other priors, whose KL does not split by
    dimension (use :func:`latent_surgery`)."""
    marginals = vae.prior.marginals()
    if marginals is None:
        raise ConfigError(f"the KL of a {type(vae.prior).__name__} does not split by latent "
                          f"dimension; use evaluate.latent_surgery for its parts")
    x = _prepare(vae, x, "kl_per_dim")
    loc, scale = _posterior(vae, x, batch_size)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(loc, scale), marginals)
    return kl.mean(dim=0)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """A context with torch's generators seeded, restored afterwards."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def aggregate_log_density(loc: torch.Tensor, scale: torch.Tensor, z: torch.Tensor,
                          leave_out: bool = False, chunk: int = 1024) -> torch.Tensor:
    """``log q_N(z)``, the log-density of the mixture ``(1/N) sum_n N(loc_n, diag scale_n^2)``
    at each row of ``z``, in float64 (every row against every component, ``chunk`` rows at a
    time).

    :param torch.Tensor loc: ``(N, K)`` posterior means
    :param torch.Tensor scale: ``(N, K)`` posterior scales
    :param torch.Tensor z: ``(M, K)`` points
    :param bool leave_out: ``M == N`` and row ``n`` of ``z`` was drawn from component ``n``:
        leave that component out (the mixture of the other ``N - 1``), so the value estimates
        the population's aggregated posterior without the draw's own component
    """
    loc, scale, z = loc.double(), scale.double(), z.double()
    n, k = loc.shape
    if leave_out and (z.shape[0] != n or n < 2):
        raise ConfigError("leave_out needs one draw per component and at least two components")
    precision = scale.pow(-2)
    const = (-0.5 * (loc.pow(2) * precision).sum(-1) - scale.log().sum(-1)
             - 0.5 * k * math.log(2 * math.pi))
    out = []
    for i in range(0, z.shape[0], chunk):
        zc = z[i: i + chunk]
        log_q = (-0.5 * zc.pow(2) @ precision.T + zc @ (loc * precision).T) + const
        if leave_out:
            rows = torch.arange(i, i + zc.shape[0], device=z.device)
            log_q[torch.arange(zc.shape[0], device=z.device), rows] = -math.inf
        out.append(torch.logsumexp(log_q, dim=1))
    return torch.cat(out) - math.log(n - 1 if leave_out else n)


@torch.no_grad()
def latent_surgery(vae: Any, x: torch.Tensor, draws: int = 1, batch_size: int = 1000,
                   seed: int = DIAGNOSTIC_SEED) -> dict[str, float]:
    """The ELBO-surgery split of the average KL (Hoffman & Johnson 2016) on held-out ``x``:

    ``E_n KL(q(z|x_n) || p(z)) = I_q(n; z) + KL(q_N(z) || p(z))``

    with ``q_N`` the aggregated posterior of the ``N`` points (module docstring) and ``n``
    uniform over them. Estimator: ``draws`` draws ``z ~ q(z | x_n)`` per point (a generator
    seeded with ``seed``; the global random stream is untouched) and the per-draw identity
    ``log q(z|x_n) - log p(z) = [log q(z|x_n) - log q_N(z)] + [log q_N(z) - log p(z)]``
    averaged over all draws, ``log q_N`` computed exactly. So ``kl = mutual_information +
    marginal_kl`` holds to rounding, and each term is an unbiased Monte-Carlo estimate of its
    value *for these N points*. As an estimate of the population's (``N -> infinity``) values
    it is biased: the index-code information is at most ``log N`` (reported as ``mi_bound``),
    and each draw's own component inflates ``q_N`` at the draw, so the mutual information is
    biased low and the marginal KL high, by about ``1/N`` of the gap between ``q(z|x_n)`` and
    the aggregate, large when posteriors are sharp and well separated.

    :returns: ``{"kl", "mutual_information", "marginal_kl", "mi_bound", "points", "draws"}``,
        nats per data point
    """
    draws = check_positive_int("draws", draws)
    x = _prepare(vae, x, "latent_surgery")
    if x.shape[0] < 2:
        raise ConfigError("the aggregated posterior needs at least two held-out points")
    loc, scale = _posterior(vae, x, batch_size)
    with _seeded(seed, x.device):
        z = loc + scale * torch.randn((draws,) + tuple(loc.shape), dtype=loc.dtype,
                                      device=loc.device)
    with poutine.block():
        prior = vae.prior()
    log_q = torch.distributions.Normal(loc, scale).log_prob(z).sum(-1).double()
    flat = z.reshape(-1, loc.shape[-1])
    # a few rows at a time: a mixture's log-density holds every component
    log_p = torch.cat([prior.log_prob(rows) for rows in flat.split(batch_size)])
    log_p = log_p.double().reshape(log_q.shape)
    log_agg = aggregate_log_density(loc, scale, flat).reshape(log_q.shape)
    mi, marginal = float((log_q - log_agg).mean()), float((log_agg - log_p).mean())
    return {"kl": mi + marginal, "mutual_information": mi, "marginal_kl": marginal,
            "mi_bound": math.log(x.shape[0]), "points": x.shape[0], "draws": draws}


@torch.no_grad()
def prior_hole(vae: Any, x: torch.Tensor, quantile: float = 0.05,
               prior_samples: int | None = None, batch_size: int = 1000,
               seed: int = DIAGNOSTIC_SEED) -> dict[str, float]:
    """How much of the prior's mass lies where the aggregated posterior is thin.

    Definition (ours, after the "holes" of Rezende & Viola 2018 and the prior hole problem of
    Aneja et al. 2021): with ``q`` the aggregated posterior, the region ``H`` where its
    density lies below its own ``quantile``-quantile (``q(H) = quantile`` under ``q`` itself);
    the hole mass is ``p(H)``, the prior's probability of falling there. When the aggregated
    posterior equals the prior it is ``quantile`` (0.05 by default); when the aggregated
    posterior covers half of the prior's mass, about ``0.5 + quantile / 2``; it tends to 1 as
    the posterior mass concentrates on a vanishing part of the prior.

    Estimator on the ``N`` held-out points ``x``: the threshold is the empirical quantile of
    ``log q_{-n}(z_n)`` over one draw ``z_n ~ q(z | x_n)`` per point, with the draw's own
    component left out (:func:`aggregate_log_density`, so it estimates the population's
    density, as the full ``q_N`` does at points drawn independently of ``x``); ``p(H)`` is the
    share of ``prior_samples`` draws from the prior (default ``N``) with ``log q_N(z)`` below
    it. Its Monte-Carlo error is about ``sqrt(p(H)(1 - p(H)) / prior_samples)``; with sharp
    posteriors far apart relative to ``N``, ``q_N`` itself is a noisy density estimate and the
    hole includes the gaps between them. Draws use a generator seeded with ``seed``.

    :returns: ``{"hole_mass", "hole_quantile", "prior_samples"}``
    """
    if not 0 < float(quantile) < 1:
        raise ConfigError(f"Expected 0 < quantile < 1 but got {quantile!r}")
    x = _prepare(vae, x, "prior_hole")
    if x.shape[0] < 2:
        raise ConfigError("the aggregated posterior needs at least two held-out points")
    loc, scale = _posterior(vae, x, batch_size)
    s = x.shape[0] if prior_samples is None else check_positive_int("prior_samples",
                                                                     prior_samples)
    with _seeded(seed, x.device), poutine.block():
        z_post = loc + scale * torch.randn_like(loc)
        z_prior = vae.prior().sample((s,))
    own = aggregate_log_density(loc, scale, z_post, leave_out=True)
    threshold = torch.quantile(own, float(quantile))
    at_prior = aggregate_log_density(loc, scale, z_prior)
    return {"hole_mass": float((at_prior < threshold).double().mean()),
            "hole_quantile": float(quantile), "prior_samples": s}


def latent_diagnostics(vae: Any, x: torch.Tensor, threshold: float = 0.01,
                       points: int = 2000, quantile: float = 0.05) -> dict[str, float]:
    """The latent side in a few numbers (what ``pyro-lvae train`` writes into summary.json),
    on the first ``points`` rows of held-out ``x``: :func:`active_units`, the
    :func:`latent_surgery` split (``mutual_information``, ``marginal_kl``, their sum
    ``surgery_kl`` and ``mi_bound = log N``) and :func:`prior_hole` (``hole_mass`` at
    ``hole_quantile``)."""
    x = x[:points]
    surgery = latent_surgery(vae, x)
    hole = prior_hole(vae, x, quantile=quantile)
    return {"active_units": active_units(vae, x, threshold)[0],
            "mutual_information": surgery["mutual_information"],
            "marginal_kl": surgery["marginal_kl"], "surgery_kl": surgery["kl"],
            "mi_bound": surgery["mi_bound"], "hole_mass": hole["hole_mass"],
            "hole_quantile": hole["hole_quantile"], "diagnostic_points": x.shape[0]}


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
    x = _prepare(vae, x, "scale_summary")
    scales = []
    with poutine.block():
        for xb in _batches(x, batch_size):
            scale = likelihood_scale(vae.model.likelihood(vae.guide.posterior(xb)[0], xb))
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
    """Held-out ELBO (and parts), IWAE bound, active units, KL per dimension (priors that are
    a product of Normals), the ELBO-surgery split, the prior's hole mass and sigma."""
    out: dict[str, Any] = dict(elbo_parts(vae, x, num_particles=num_particles))
    out["iwae"] = iwae(vae, x, num_samples=iwae_samples)
    if vae.prior.marginals() is not None:
        out["kl_per_dim"] = kl_per_dim(vae, x).cpu()
    out.update(latent_diagnostics(vae, x, threshold))
    out["active_units"], out["posterior_mean_variance"] = active_units(vae, x, threshold)
    scales = scale_summary(vae, x, groups)
    if scales is not None:
        out.update(scales)
    return out


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """The symmetric square root of a symmetric positive semi-definite matrix (eigenvalues
    below 0 from round-off are set to 0)."""
    values, vectors = torch.linalg.eigh(a)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


@torch.no_grad()
def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """The Fréchet (2-Wasserstein) distance between Gaussians fitted to two feature sets,
    ``|m_a - m_b|^2 + tr(C_a + C_b - 2 (C_a^1/2 C_b C_a^1/2)^1/2)``, with ``m`` the means and
    ``C`` the (unbiased) covariances of the rows: the FID of Heusel et al. (2017) when the
    features are Inception's. Computed in float64; the matrix square roots come from symmetric
    eigendecompositions, so the result is real (``tr (C_a C_b)^1/2`` written with symmetric
    matrices, negative round-off eigenvalues set to 0). Lower is closer; it is 0 only for
    equal means and covariances, and its estimate from finite samples is biased upwards
    (compare distances computed from equally many rows).

    :param torch.Tensor features_a: ``(N, F)`` features of one set (``N >= 2``)
    :param torch.Tensor features_b: ``(M, F)`` features of the other (``M >= 2``)
    :raises ConfigError: for sets that are not 2-D with the same number of columns and at
        least two rows

    Example::

        >>> import torch
        >>> from pyro_lvae.evaluate import frechet_distance
        >>> a = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
        >>> round(frechet_distance(a, a + torch.tensor([3.0, 4.0])), 6)
        25.0
    """
    if (features_a.dim() != 2 or features_b.dim() != 2
            or features_a.shape[1] != features_b.shape[1]
            or min(features_a.shape[0], features_b.shape[0]) < 2):
        raise ConfigError(f"Expected two (N, F) feature sets with the same F and N >= 2 but "
                          f"got shapes {tuple(features_a.shape)} and {tuple(features_b.shape)}")
    a, b = features_a.double(), features_b.double()
    ca, cb = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrt_psd(ca)
    cross = _sqrt_psd(root_a @ cb @ root_a)
    d = (a.mean(0) - b.mean(0)).pow(2).sum() + torch.trace(ca + cb - 2 * cross)
    return float(d)


#: the former name, kept for one release (a ``DeprecationWarning`` names the new one)
__getattr__ = deprecated_aliases(__name__, {"elbo": "elbo_parts"}, globals())
