import math

import pytest
import torch

import pyro_lvae as lv
from pyro_lvae.datasets import MANIFOLD_NOISE, manifold2d


def test_manifold2d_shape_regions_and_reproducibility():
    x, region = manifold2d(3000, torch.Generator().manual_seed(0), return_region=True)
    assert x.shape == (3000, 2) and x.dtype == torch.float32
    assert set(region.tolist()) == {0, 1, 2}
    again = manifold2d(3000, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)
    assert not torch.equal(x, manifold2d(3000, torch.Generator().manual_seed(1)))


def test_manifold2d_noise_per_region_matches_the_documented_levels():
    x, region = manifold2d(60000, torch.Generator().manual_seed(0), return_region=True)
    # distance to the noiseless curve along x2 at the same x1; for tiny noise it is
    # approximately noise * sqrt(1 + (pi sin(pi x1))^2); compare the medians of that ratio
    for r, level in enumerate(MANIFOLD_NOISE):
        pts = x[region == r]
        slope = math.pi * torch.sin(math.pi * pts[:, 0])
        resid = (pts[:, 1] - torch.cos(math.pi * pts[:, 0])) / torch.sqrt(1 + slope**2)
        if level <= 0.05:  # the linearisation holds for the two sharper regions
            assert resid.std().item() == pytest.approx(level, rel=0.15)
    assert MANIFOLD_NOISE[2] / MANIFOLD_NOISE[1] >= 10


def test_manifold2d_bad_size():
    with pytest.raises(lv.ConfigError, match="n"):
        manifold2d(0)
