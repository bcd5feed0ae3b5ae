"""Theorem 1 of Berger & Sebag: a fixed sigma too large for the data's scale makes a VAE fail.

Setting and assumptions (the large-sample, unlimited-capacity limit of the paper's Section 3):

- data ``x`` uniform on the sphere of radius ``R`` in ``R^d`` (centred at the origin without loss
  of generality);
- observation model ``p(x | z) = N(mu(z), sigma^2 I)`` with a fixed ``sigma``;
- the decoder can be any map, and the encoder is exact, so the ELBO reaches the log-likelihood;
  by symmetry the best decoder pushes the prior onto a concentric sphere of radius ``r`` (radius
  0 is the collapsed solution: every ``z`` decodes to the centre).

Then the log-likelihood of a data point is, with ``k = R r / sigma^2``,

    log p(x) = -d/2 log(2 pi sigma^2) - (R^2 + r^2) / (2 sigma^2) + log A_d(k),
    A_d(k)   = E_u[exp(k cos theta)] = Gamma(d/2) (2/k)^(d/2 - 1) I_(d/2 - 1)(k) = 0F1(; d/2; k^2/4)

(the mean of ``exp(k cos theta)`` over the sphere; ``I_nu`` the modified Bessel function).
:func:`objective` is ``L(r)``, the part that depends on ``r``. Its stationary points satisfy

    r = R I_(d/2)(k) / I_(d/2 - 1)(k),   k = R r / sigma^2,

whose right-hand side has slope ``R^2 / (d sigma^2)`` at ``r = 0`` and is concave: a positive
solution exists exactly when ``sigma < sigma_c = R / sqrt(d)`` (:func:`critical_sigma`). Above
``sigma_c`` the optimum is ``r* = 0``: the VAE models the ball's centre, not the sphere, however
much data and capacity it has. Below, ``r*`` grows towards ``R`` as ``sigma -> 0``.

The Bessel functions are evaluated in log space: exponentially scaled ``scipy.special.ive``
wherever it does not underflow, and the series ``scipy.special.hyp0f1`` where it does (large
``d``, moderate ``k``), so ``d`` in the thousands and ``R r / sigma^2`` in the millions stay
finite and accurate.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972,
  Theorem 1 and Figure 2 (the formulas are re-derived here; tests check them against
  quadrature and Monte Carlo).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import gammaln, hyp0f1, ive

from .errors import ConfigError

__all__ = ["log_mean_exp_cos", "bessel_ratio", "objective", "log_likelihood",
           "optimal_radius", "critical_sigma"]


def _check(radius: float, dim: int) -> None:
    if not (np.isfinite(radius) and radius > 0):
        raise ConfigError(f"Expected radius > 0 but got {radius}")
    if int(dim) != dim or dim < 1:
        raise ConfigError(f"Expected dim to be an integer >= 1 but got {dim}")


def log_mean_exp_cos(k: ArrayLike, dim: int) -> np.ndarray:
    """``log A_d(k)``: the log of the mean of ``exp(k cos theta)`` over the sphere in ``R^dim``
    (``k >= 0``). ``A_d(0) = 1``."""
    k = np.asarray(k, dtype=float)
    if np.any(~(k >= 0)):
        raise ConfigError("Expected every k >= 0")
    b = dim / 2.0
    nu = b - 1.0
    out = np.zeros_like(k)
    with np.errstate(under="ignore"):
        scaled = ive(nu, k)
    bessel = (k > 0) & (scaled > 1e-280)
    kb = k[bessel]
    out[bessel] = gammaln(b) + nu * np.log(2.0 / kb) + np.log(scaled[bessel]) + kb
    # where the scaled Bessel function underflows (large d, moderate k) the series is finite
    series = (k > 0) & ~bessel
    out[series] = np.log(hyp0f1(b, k[series] ** 2 / 4.0))
    return out


def bessel_ratio(k: ArrayLike, dim: int) -> np.ndarray:
    """``I_(d/2)(k) / I_(d/2 - 1)(k)`` = ``d/dk log A_d(k)``, in ``[0, 1)``."""
    k = np.asarray(k, dtype=float)
    b = dim / 2.0
    with np.errstate(under="ignore"):
        num, den = ive(b, k), ive(b - 1.0, k)
    out = np.zeros_like(k)
    bessel = den > 1e-250
    out[bessel] = num[bessel] / den[bessel]
    series = (k > 0) & ~bessel
    q = k[series] ** 2 / 4.0
    out[series] = k[series] / (2.0 * b) * hyp0f1(b + 1.0, q) / hyp0f1(b, q)
    return out


def objective(r: ArrayLike, sigma: ArrayLike, radius: float = 1.0, dim: int = 2) -> np.ndarray:
    """``L(r) = -(R^2 + r^2) / (2 sigma^2) + log A_d(R r / sigma^2)``, broadcast over ``r`` and
    ``sigma``: the part of the best VAE's log-likelihood that depends on the radius ``r`` of the
    sphere the decoder maps the prior to (see the module docstring)."""
    _check(radius, dim)
    r, sigma = np.broadcast_arrays(np.asarray(r, float), np.asarray(sigma, float))
    if np.any(sigma <= 0) or np.any(r < 0):
        raise ConfigError("Expected sigma > 0 and r >= 0")
    return -(radius**2 + r**2) / (2 * sigma**2) + log_mean_exp_cos(radius * r / sigma**2, dim)


def log_likelihood(r: ArrayLike, sigma: ArrayLike, radius: float = 1.0,
                   dim: int = 2) -> np.ndarray:
    """The full ``log p(x)`` per data point (nats) of the decoder with radius ``r``:
    :func:`objective` plus ``-d/2 log(2 pi sigma^2)``. At ``r = optimal_radius(...)`` it is the
    best log-likelihood any fixed-``sigma`` VAE can reach on the sphere."""
    sigma = np.asarray(sigma, float)
    return objective(r, sigma, radius, dim) - dim / 2 * np.log(2 * np.pi * sigma**2)


def critical_sigma(radius: float = 1.0, dim: int = 2) -> float:
    """``sigma_c = R / sqrt(d)``: for ``sigma >= sigma_c`` the best VAE is collapsed (r* = 0)."""
    _check(radius, dim)
    return radius / np.sqrt(dim)


def optimal_radius(sigma: ArrayLike, radius: float = 1.0, dim: int = 2,
                   iterations: int = 200) -> np.ndarray:
    """``r*(sigma)``, the radius maximising :func:`objective`, vectorised over ``sigma``.

    0 for ``sigma >= sigma_c``; otherwise the positive root of ``r = R I_(d/2)(k)/I_(d/2-1)(k)``
    with ``k = R r / sigma^2``, found by bisection on ``(0, R)`` to machine precision.
    """
    _check(radius, dim)
    sigma = np.asarray(sigma, dtype=float)
    if np.any(~np.isfinite(sigma)) or np.any(sigma <= 0):
        raise ConfigError("Expected every sigma > 0 and finite")
    lo = np.zeros_like(sigma)
    hi = np.full_like(sigma, radius)
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        above = radius * bessel_ratio(radius * mid / sigma**2, dim) > mid
        lo = np.where(above, mid, lo)
        hi = np.where(above, hi, mid)
    r = 0.5 * (lo + hi)
    return np.where(sigma >= critical_sigma(radius, dim), 0.0, r)
