"""The Fréchet distance between fitted Gaussians: its closed form where the covariances
commute, zero between two samples of one distribution, and its errors."""

import math

import pytest
import torch

from pyro_lvae.errors import ConfigError
from pyro_lvae.evaluate import frechet_distance


def test_matches_the_closed_form_for_diagonal_covariances():
    g = torch.Generator().manual_seed(0)
    m1, m2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 0.5, -2.0])
    s1, s2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 2.0, 1.5])
    a = m1 + s1 * torch.randn(200_000, 3, generator=g)
    b = m2 + s2 * torch.randn(200_000, 3, generator=g)
    exact = float((m1 - m2).pow(2).sum() + (s1 - s2).pow(2).sum())  # 1.25 + 1.25
    assert frechet_distance(a, b) == pytest.approx(exact, abs=0.03)


def test_matches_the_closed_form_for_rotated_covariances():
    # the same rotation of both diagonal covariances: they commute, the formula above holds
    g = torch.Generator().manual_seed(1)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
    s1, s2 = torch.tensor([1.0, 0.2, 3.0, 1.0]), torch.tensor([2.0, 0.2, 1.0, 1.0])
    a = (s1 * torch.randn(200_000, 4, generator=g)) @ q.T
    b = (s2 * torch.randn(200_000, 4, generator=g)) @ q.T
    assert frechet_distance(a, b) == pytest.approx(float((s1 - s2).pow(2).sum()), abs=0.05)


def test_two_samples_of_one_distribution_are_close_and_a_set_to_itself_is_zero():
    g = torch.Generator().manual_seed(2)
    mix = torch.randn(8, 8, generator=g)
    a = torch.randn(20_000, 8, generator=g) @ mix
    b = torch.randn(20_000, 8, generator=g) @ mix
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    same = frechet_distance(a, b)
    shifted = frechet_distance(a, b + 0.5)
    assert 0 <= same < 0.05
    # a shift moves only the mean term: |d + 0.5|^2 - |d|^2 with d the means' difference
    d = b.double().mean(0) - a.double().mean(0)
    assert shifted - same == pytest.approx(float(d.sum() + 8 * 0.25), abs=1e-6)
    assert math.isfinite(frechet_distance(a[:10], b[:10]))  # rank-deficient covariances


def test_refuses_mismatched_feature_sets():
    with pytest.raises(ConfigError, match="same F"):
        frechet_distance(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ConfigError, match="N >= 2"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
