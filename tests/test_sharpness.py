"""The gradient-energy ratio: 1 for the originals, below 1 for blurred, known on a tiny image."""

import math

import pytest
import torch

from pyro_lvae.errors import DataError
from pyro_lvae.experiments.sharpness import gradient_energy, sharpness_ratio


def test_gradient_energy_of_a_hand_made_image():
    # columns 0 | 1: two horizontal steps of 1, two vertical steps of 0 -> (1 + 1 + 0 + 0) / 4
    edge = torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])
    assert gradient_energy(edge) == pytest.approx(0.5)
    soft = torch.tensor([[[[0.25, 0.75], [0.25, 0.75]]]])  # steps of 0.5: (0.25 + 0.25) / 4
    assert gradient_energy(soft) == pytest.approx(0.125)
    assert sharpness_ratio(soft, edge) == pytest.approx(0.25)
    # flat images with their shape give the same; rows and columns both count
    assert sharpness_ratio(soft.flatten(1), edge.flatten(1), (1, 2, 2)) == pytest.approx(0.25)
    assert gradient_energy(edge.transpose(-1, -2)) == pytest.approx(0.5)
    # a 3-pixel row 0, 1, 3 (one channel, one row): steps 1 and 2, no vertical pairs
    assert gradient_energy(torch.tensor([0.0, 1.0, 3.0]).reshape(1, 1, 1, 3)) == 2.5


def test_the_originals_score_one_blurred_images_less_and_noise_more():
    x = torch.rand(20, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    assert sharpness_ratio(x, x) == pytest.approx(1.0)
    box = torch.full((1, 1, 3, 3), 1 / 9)
    blurred, inner = torch.nn.functional.conv2d(x, box), x[..., 1:-1, 1:-1]
    # neighbouring 3x3 means of independent pixels differ by (3 new - 3 old) / 9: variance
    # 6 / 81 of a pixel's, against 2 for neighbouring pixels -> 1 / 27
    assert sharpness_ratio(blurred, inner) == pytest.approx(1 / 27, rel=0.1)
    smooth, core = torch.nn.functional.conv2d(blurred, box), x[..., 2:-2, 2:-2]
    assert sharpness_ratio(smooth, core) < sharpness_ratio(blurred[..., 1:-1, 1:-1], core) / 2
    noisy = blurred + 0.3 * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(1))
    assert sharpness_ratio(noisy, blurred) > 1


def test_flat_originals_give_nan_and_bad_shapes_are_named():
    flat = torch.full((3, 1, 4, 4), 0.5)
    assert math.isnan(sharpness_ratio(torch.rand(3, 1, 4, 4), flat))
    with pytest.raises(DataError, match="differ in shape"):
        sharpness_ratio(torch.rand(3, 16), torch.rand(3, 1, 4, 4))
    with pytest.raises(DataError, match=r"\(1, 5, 5\)"):
        gradient_energy(torch.rand(3, 16), (1, 5, 5))
    with pytest.raises(DataError, match="shape="):
        gradient_energy(torch.rand(3, 16))
