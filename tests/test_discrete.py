"""The discretised likelihoods of 8-bit data: the mass of each of the 256 bins of ``k / 255``,
checked against a direct sum over bins of Pyro's Normal and Logistic CDFs in float64, stable in
the tails (against 50-digit arithmetic), bounded by 0 nats, with their draws, mean and bits/dim.
"""

import json
import math
import struct

import mpmath
import numpy as np
import pyro.distributions as dist
import pytest
import torch

import pyro_lvae as lv
from pyro_lvae import evaluate
from pyro_lvae.cli import main
from pyro_lvae.datasets import UnitLevels, bits_per_dim
from pyro_lvae.observations import discrete
from pyro_lvae.observations.discrete import LEVELS, Discretized
from pyro_lvae.training import ProgressBar

FAMILIES = {"normal": dist.Normal, "logistic": dist.Logistic}
H = 0.5 / 255
LOCS = torch.tensor([-0.3, 0.0, 0.1234, 0.5, 0.77, 1.0, 1.4], dtype=torch.float64)
SCALES = torch.tensor([3e-4, 2e-3, 0.01, 0.1, 1.0, 20.0], dtype=torch.float64)


def grid():
    loc, scale = torch.meshgrid(LOCS, SCALES, indexing="ij")
    return loc.reshape(-1), scale.reshape(-1)


def single(family, loc, scale):
    return Discretized(torch.zeros_like(loc).unsqueeze(-1), loc.unsqueeze(-1),
                       scale.unsqueeze(-1), family)


def direct_masses(family, loc, scale):
    """``P(k)`` for every level from the CDF, in float64: shape ``(points, 256)``."""
    c = FAMILIES[family](loc.unsqueeze(-1), scale.unsqueeze(-1))
    edges = (torch.arange(LEVELS - 1, dtype=torch.float64) + 0.5) / 255  # upper edges of 0..254
    cdf = c.cdf(edges.expand(loc.shape[0], -1))
    ones = torch.ones_like(loc).unsqueeze(-1)
    return torch.cat([cdf, ones], -1) - torch.cat([0 * ones, cdf], -1)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_256_masses_sum_to_one(family):
    loc, scale = grid()
    total = single(family, loc, scale).bin_log_probs().exp().sum(-1)
    torch.testing.assert_close(total, torch.ones_like(total), atol=1e-9, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_is_the_log_of_the_direct_bin_mass(family):
    loc, scale = grid()
    got = single(family, loc, scale).bin_log_probs()
    want = direct_masses(family, loc, scale)
    checked = want > 1e-8  # where the float64 difference of CDFs keeps its digits
    assert checked.sum() > 1000
    assert float((got[checked] - want[checked].log()).abs().max()) < 1e-5


def _mp_log_mass(family, k, loc, scale):
    mpmath.mp.dps = 50
    cdf = (mpmath.ncdf if family == "normal" else lambda u: 1 / (1 + mpmath.exp(-u)))
    c = mpmath.mpf(k) / 255
    lo = -mpmath.inf if k == 0 else (c - mpmath.mpf(1) / 510 - loc) / scale
    hi = mpmath.inf if k == 255 else (c + mpmath.mpf(1) / 510 - loc) / scale
    low = 0 if lo == -mpmath.inf else cdf(lo)
    high = 1 if hi == mpmath.inf else cdf(hi)
    return float(mpmath.log(high - low))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("family", FAMILIES)
def test_far_tails_are_accurate_where_the_direct_difference_underflows(family, dtype):
    cases = [(0, 0.9, 0.01), (255, 0.1, 0.01), (128, 0.0, 0.003), (3, 0.98, 0.02),
             (250, 0.5, 0.01), (0, 1.0, 1e-3), (255, 0.0, 1e-3), (100, 100.0, 1.0),
             (128, 0.5019, 5.0)]
    for k, loc, scale in cases:
        d = single(family, torch.tensor([loc], dtype=dtype), torch.tensor([scale], dtype=dtype))
        got = float(d.log_prob(torch.tensor([k / 255], dtype=dtype))[0])
        want = _mp_log_mass(family, k, loc, scale)
        tol = 1e-9 if dtype == torch.float64 else 2e-4
        assert math.isfinite(got) and abs(got - want) <= tol * max(1.0, abs(want)), \
            (k, loc, scale, got, want)


@pytest.mark.parametrize("family", FAMILIES)
def test_log_prob_is_at_most_zero_finite_at_the_edges_with_finite_gradients(family):
    loc = torch.tensor([-50.0, -1.0, 0.0, 0.5, 1.0, 2.0, 50.0]).repeat_interleave(4)
    scale = torch.tensor([1e-4, 1e-2, 1.0, 100.0]).repeat(7)
    loc.requires_grad_(True)
    scale.requires_grad_(True)
    d = single(family, loc, scale)
    for k in (0, 1, 127, 254, 255):
        log_p = d.log_prob(torch.full_like(loc, k / 255))
        assert torch.isfinite(log_p).all() and (log_p <= 1e-6).all(), k
        grads = torch.autograd.grad(log_p.sum(), [loc, scale])
        assert all(torch.isfinite(g).all() for g in grads), k


@pytest.mark.parametrize("family", FAMILIES)
def test_float32_agrees_with_float64(family):
    loc, scale = grid()
    f64 = single(family, loc, scale).bin_log_probs()
    f32 = single(family, loc.float(), scale.float()).bin_log_probs().double()
    assert float(((f32 - f64) / f64.abs().clamp(min=1.0)).abs().max()) < 2e-4


def test_a_mixture_is_the_weighted_sum_of_its_components_masses():
    logits = torch.tensor([[0.3, -1.0, 2.0]], dtype=torch.float64)
    locs = torch.tensor([[0.1, 0.5, 0.93]], dtype=torch.float64)
    scales = torch.tensor([[0.05, 0.2, 0.01]], dtype=torch.float64)
    got = Discretized(logits, locs, scales, "logistic").bin_log_probs()[0].exp()
    weights = torch.softmax(logits, -1)[0]
    want = sum(w * direct_masses("logistic", locs[0, j:j + 1], scales[0, j:j + 1])[0]
               for j, w in enumerate(weights))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-6)


@pytest.mark.parametrize("family", FAMILIES)
def test_mean_is_the_mean_over_the_levels(family):
    loc, scale = grid()
    d = single(family, loc, scale)
    levels = torch.arange(LEVELS, dtype=torch.float64) / 255
    want = (direct_masses(family, loc, scale) * levels).sum(-1)
    torch.testing.assert_close(d.mean, want, atol=1e-9, rtol=0)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("chunk", [2**21, 7 * 60])  # all 255 levels at once, or 7 per chunk
def test_a_mixture_s_mean_and_variance_are_those_of_its_bin_masses(family, chunk, monkeypatch):
    monkeypatch.setattr(discrete, "_CHUNK_VALUES", chunk)
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 3, 5, generator=g, dtype=torch.float64)
    locs = torch.rand(4, 3, 5, generator=g, dtype=torch.float64) * 1.2 - 0.1
    scales = torch.rand(4, 3, 5, generator=g, dtype=torch.float64) * 0.2 + 1e-3
    d = Discretized(logits, locs, scales, family)
    masses = d.bin_log_probs().exp()
    levels = torch.arange(LEVELS, dtype=torch.float64) / 255
    mean = (masses * levels).sum(-1)
    torch.testing.assert_close(d.mean, mean, atol=1e-12, rtol=0)
    variance = (masses * (levels - mean.unsqueeze(-1)) ** 2).sum(-1)
    torch.testing.assert_close(d.variance, variance, atol=1e-12, rtol=1e-9)
    # float32 parameters: the mean within float32's rounding of the exact one
    d32 = Discretized(logits.float(), locs.float(), scales.float(), family)
    assert float((d32.mean.double() - mean).abs().max()) < 1e-6


@pytest.mark.parametrize("family", FAMILIES)
def test_draws_follow_the_bin_masses(family):
    torch.manual_seed(0)
    loc, scale = torch.tensor([0.02]), torch.tensor([0.03])
    d = single(family, loc, scale)
    x = d.sample((40000,))[:, 0]
    k = (x * 255).round().long()
    assert torch.equal(k.double() / 255, x.double().mul(255).round() / 255)  # on the grid
    freq = torch.bincount(k, minlength=LEVELS).double() / x.numel()
    mass = d.bin_log_probs()[0].exp().double()
    assert float((freq - mass).abs().max()) < 0.01
    assert float(freq[0]) > 0.1  # the open edge bin holds the mass below 0


def test_draws_of_a_mixture_follow_its_masses():
    torch.manual_seed(1)
    d = Discretized(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.2, 0.8]]),
                    torch.tensor([[0.05, 0.02]]), "logistic")
    k = (d.sample((40000,))[:, 0] * 255).round().long()
    freq = torch.bincount(k, minlength=LEVELS).double() / k.numel()
    assert float((freq - d.bin_log_probs()[0].exp().double()).abs().max()) < 0.01


@pytest.mark.parametrize("kind", ["discretized-normal", "discretized-logistic",
                                  "discretized-logistic-mixture"])
def test_the_models_refuse_data_off_the_8_bit_grid(kind):
    obs = lv.observations.build(kind, init_scale=0.1)
    images = torch.randint(0, 256, (4, 1, 3, 3), dtype=torch.uint8)
    obs.check_support(UnitLevels()(images))
    with pytest.raises(lv.DataError, match="--pixels unit-levels"):
        obs.check_support(lv.datasets.Dequantize()(images))
    with pytest.raises(lv.DataError, match="k/255"):
        obs.check_support(torch.full((2, 3), 1.5))


def test_mixture_decoder_outputs_are_logits_locations_and_scales_per_component():
    obs = lv.DiscretizedLogisticMixture(components=2, init_scale=0.1)
    assert obs.output_shape((3, 4, 4)) == (18, 4, 4)
    out = torch.zeros(1, 18, 4, 4)
    out[:, 6:9] = 0.25  # locations of component 0, channels 0..2
    out[:, 9:12] = 0.75  # locations of component 1
    out[:, 0:3] = 5.0  # component 0 dominates
    d = obs(out, event_dim=3).base_dist
    assert d.batch_shape == (1, 3, 4, 4) and d.components == 2
    assert torch.allclose(d.locs[..., 0], torch.tensor(0.25))
    assert torch.allclose(d.locs[..., 1], torch.tensor(0.75))
    assert torch.allclose(d.scales, torch.tensor(0.1))
    assert float(d.mean.mean()) < 0.3


def test_bits_per_dim_of_a_discrete_model_have_no_dequantisation_offset():
    assert bits_per_dim(784 * math.log(2), 784, "unit-levels", discrete=True) == pytest.approx(1.0)
    assert bits_per_dim(784 * math.log(2), 784, "dequantize") == pytest.approx(9.0)
    assert math.isnan(bits_per_dim(1.0, 784, "unit-levels"))
    assert math.isnan(bits_per_dim(1.0, 784, "dequantize", discrete=True))
    assert lv.observations.describe("discretized-logistic").discrete
    assert not lv.observations.describe("learned-vector").discrete


@pytest.mark.parametrize("kind", ["discretized-normal", "discretized-logistic"])
def test_the_negative_elbo_of_8_bit_images_is_a_code_length(kind):
    """log p(x | z) <= 0 per pixel, so the reconstruction term is >= 0 whatever the network,
    even on constant pixels: bits/dim stay positive, unlike a density's."""
    torch.manual_seed(0)
    vae = lv.conv_vae((1, 8, 8), 2, lv.observations.build(kind), width=4, convs=2, blocks=0)
    x = UnitLevels()(torch.randint(0, 256, (16, 1, 8, 8), dtype=torch.uint8))
    x[:, :, :2] = 0  # constant background, where a continuous per-pixel density is unbounded
    lv.fit(vae, x, steps=30, batch_size=16, lr=1e-2, seed=0, tools=[ProgressBar(False)])
    result = evaluate.elbo_parts(vae, x)
    assert result["reconstruction"] >= 0
    assert bits_per_dim(-result["elbo"], 64, "unit-levels", discrete=True) > 0


TINY = ["--width", "4", "--blocks", "1", "--latent-dim", "4", "--steps", "2", "--eval-images",
        "8", "--iwae-images", "4", "--iwae-samples", "3", "--quiet"]


def _fake_fashion_mnist(root):
    rng = np.random.default_rng(0)
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for name, n in (("train", 40), ("t10k", 12)):
        images = rng.integers(0, 256, (n, 28, 28))
        images[:, :2] = 0  # constant border rows
        (raw / f"{name}-images-idx3-ubyte").write_bytes(
            struct.pack(">IIII", 2051, n, 28, 28) + images.astype(np.uint8).tobytes())
        (raw / f"{name}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 2049, n) + rng.integers(0, 10, n).astype(np.uint8).tobytes())
    return root


def test_the_command_line_trains_a_discretised_model_on_8_bit_images(tmp_path, capsys):
    root = _fake_fashion_mnist(tmp_path / "data")
    run = tmp_path / "run"
    argv = ["train", "--dataset", "fashion-mnist", "--data-root", str(root), "--obs",
            "discretized-logistic", "--out", str(run), *TINY]
    assert main(argv) == 0  # a discretised model's default: pixels k/255 (--pixels unit-levels)
    assert json.loads((run / "config.json").read_text())["pixels"] == "unit-levels"
    summary = json.loads((run / "summary.json").read_text())
    # a code length of the 8-bit images: bits/dim without a dequantisation offset
    assert summary["elbo_bits_per_dim"] == pytest.approx(
        -summary["elbo_nats"] / (784 * math.log(2)))
    assert summary["iwae_bits_per_dim"] > 0
    # dequantised pixels are refused, naming the fix
    argv[argv.index("--out") + 1] = str(tmp_path / "run2")
    assert main(argv + ["--pixels", "dequantize", "--quiet"]) != 0
    assert "--pixels unit-levels" in capsys.readouterr().err
