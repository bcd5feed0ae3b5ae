"""Theorem 1 (the sphere): checked against quadrature, Monte Carlo and asymptotics."""

import math

import numpy as np
import pytest
from scipy import integrate
from scipy.special import logsumexp

import pyro_lvae as lv
from pyro_lvae import theory


def log_mean_exp_cos_by_quadrature(k: float, d: int) -> float:
    """log of the mean of exp(k cos theta) over the sphere in R^d, d >= 2, by quadrature over
    the polar angle (density proportional to sin^(d-2)), in log space."""
    def logf(t, kk):
        return kk * (math.cos(t) - 1.0) + (d - 2) * math.log(max(math.sin(t), 1e-300))

    peak = min(math.pi, 20.0 / math.sqrt(max(k, 1e-12)))
    num, _ = integrate.quad(lambda t: math.exp(logf(t, k)), 0, math.pi, points=[peak],
                            limit=500, epsabs=0, epsrel=1e-12)
    den, _ = integrate.quad(lambda t: math.exp(logf(t, 0.0)), 0, math.pi, limit=500,
                            epsabs=0, epsrel=1e-12)
    return math.log(num) + k - math.log(den)


@pytest.mark.parametrize("d", [2, 3, 8, 50, 1000])
@pytest.mark.parametrize("k", [1e-3, 0.5, 3.0, 40.0, 900.0])
def test_log_mean_exp_cos_matches_quadrature(d, k):
    assert theory.log_mean_exp_cos(k, d) == pytest.approx(
        log_mean_exp_cos_by_quadrature(k, d), rel=1e-7, abs=1e-10)


def test_one_dimension_is_cosh():
    k = np.array([0.0, 0.3, 5.0, 200.0])
    assert np.allclose(theory.log_mean_exp_cos(k, 1), np.log(np.cosh(k)))


@pytest.mark.parametrize("r, sigma, radius, d", [
    (0.5, 0.5, 1.0, 2), (0.8, 0.7, 1.0, 3), (0.3, 0.3, 1.0, 8), (1.5, 2.0, 2.0, 20)])
def test_log_likelihood_matches_monte_carlo(r, sigma, radius, d):
    """log p(x) = log E_y N(x | y, sigma^2 I) for x on the sphere of radius R and y uniform on
    the sphere of radius r."""
    rng = np.random.default_rng(0)
    n = 400_000
    u = rng.standard_normal((n, d))
    y = r * u / np.linalg.norm(u, axis=1, keepdims=True)
    x = np.zeros(d)
    x[0] = radius
    log_normal = (-np.sum((x - y) ** 2, axis=1) / (2 * sigma**2)
                  - d / 2 * math.log(2 * math.pi * sigma**2))
    mc = logsumexp(log_normal) - math.log(n)
    assert theory.log_likelihood(r, sigma, radius, d) == pytest.approx(mc, abs=5e-3)


@pytest.mark.parametrize("d", [2, 3, 8, 100])
def test_optimal_radius_is_the_argmax_of_the_objective(d):
    radius = 1.5
    grid = np.linspace(0, radius, 30001)
    for ratio in (0.2, 0.6, 0.95, 1.1, 3.0):
        sigma = ratio * theory.critical_sigma(radius, d)
        best = grid[np.argmax(theory.objective(grid, sigma, radius, d))]
        assert float(theory.optimal_radius(sigma, radius, d)) == pytest.approx(best, abs=1e-3)


@pytest.mark.parametrize("d", [2, 3, 8, 1000])
def test_collapse_exactly_at_and_above_the_critical_sigma(d):
    sigma_c = theory.critical_sigma(2.0, d)
    assert sigma_c == pytest.approx(2.0 / math.sqrt(d))
    above = sigma_c * np.array([1.0, 1.001, 1.5, 10.0])
    assert np.all(theory.optimal_radius(above, 2.0, d) == 0)
    just_below = theory.optimal_radius(sigma_c * np.array([0.999, 0.99, 0.9]), 2.0, d)
    assert np.all(just_below > 0) and np.all(np.diff(just_below) > 0)
    # r* -> 0 continuously, as a pitchfork: r*^2 = R^2 (d + 2)/d (sigma_c^2/sigma^2 - 1) + ...
    sigma = sigma_c * 0.99999
    r = float(theory.optimal_radius(sigma, 2.0, d))
    assert r**2 == pytest.approx(4.0 * (d + 2) / d * (sigma_c**2 / sigma**2 - 1), rel=1e-3)


@pytest.mark.parametrize("d", [2, 3, 8, 1000])
def test_optimal_radius_tends_to_the_data_radius_as_sigma_vanishes(d):
    radius = 1.0
    sigma = np.array([1e-2, 3e-3, 1e-3]) * theory.critical_sigma(radius, d)
    r = theory.optimal_radius(sigma, radius, d)
    # small-sigma asymptotic: r* = R - (d - 1) sigma^2 / (2 R) + O(sigma^4)
    expected = radius - (d - 1) * sigma**2 / (2 * radius)
    assert np.allclose(r, expected, rtol=0, atol=5e-6)
    assert np.all(np.diff(r) > 0) and r[-1] > 0.99999


def test_large_dimension_and_large_k_stay_finite_and_accurate():
    k = np.array([1e-6, 1.0, 1e2, 1e4, 1e6, 1e8])
    for d in (1000, 5000):
        values = theory.log_mean_exp_cos(k, d)
        assert np.all(np.isfinite(values)) and np.all(np.diff(values) > 0)
        ratio = theory.bessel_ratio(k, d)
        assert np.all(np.isfinite(ratio)) and np.all((ratio >= 0) & (ratio < 1))
    # for k >> d^2, from I_nu(k) = e^k / sqrt(2 pi k) (1 - (4 nu^2 - 1) / (8 k) + ...):
    # log A_d(k) = k - (d-1)/2 log k + (d-3)/2 log 2 - 1/2 log pi + log Gamma(d/2) - (4nu^2-1)/(8k)
    d, big = 1000, 1e8
    nu = d / 2 - 1
    asymptotic = (big - (d - 1) / 2 * math.log(big) + (d - 3) / 2 * math.log(2)
                  - 0.5 * math.log(math.pi) + math.lgamma(d / 2) - (4 * nu**2 - 1) / (8 * big))
    assert float(theory.log_mean_exp_cos(big, d)) == pytest.approx(asymptotic, rel=1e-9)
    sigma = np.logspace(-4, 1, 50)
    r = theory.optimal_radius(sigma, 1.0, 1000)
    assert np.all(np.isfinite(r)) and np.all(np.diff(r) <= 0)


def test_vectorised_over_sigma_and_r():
    sigma = np.array([[0.1], [0.5], [1.0]])
    r = np.linspace(0, 1, 7)
    assert theory.objective(r, sigma, 1.0, 3).shape == (3, 7)
    assert theory.optimal_radius(np.array([0.1, 0.5, 1.0]), 1.0, 3).shape == (3,)


@pytest.mark.parametrize("call", [
    lambda: theory.optimal_radius(-1.0),
    lambda: theory.optimal_radius(0.5, radius=0.0),
    lambda: theory.critical_sigma(1.0, dim=0),
    lambda: theory.objective(-0.1, 1.0),
])
def test_theory_bad_arguments(call):
    with pytest.raises(lv.ConfigError):
        call()
