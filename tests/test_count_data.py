"""Count data: scanpy's pbmc68k_reduced recovered as whole numbers, the synthetic set with its
known inverse dispersion, and the check that refuses anything but counts."""

import numpy as np
import pytest
import torch

import pyro_lvae as lv
from pyro_lvae.datasets import (
    PBMC_DEVIATION,
    PBMC_TOLERANCE,
    CountData,
    check_counts,
    held_out_split,
    synthetic_counts,
)
from pyro_lvae.datasets.counts import _negative_binomial_draw
from pyro_lvae.errors import ConfigError, DataError


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


# ---- pbmc68k_reduced ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pbmc():
    pytest.importorskip("scanpy")
    return lv.datasets.pbmc68k_reduced()


def test_pbmc_shapes_labels_and_genes(pbmc):
    assert pbmc.counts.shape == (700, 765) and pbmc.counts.dtype == torch.float32
    assert pbmc.labels.shape == (700,) and pbmc.labels.dtype == torch.int64
    assert len(pbmc.label_names) == 10 and len(pbmc.genes) == 765
    assert pbmc.labels.min() == 0 and pbmc.labels.max() == 9
    assert "CD14+ Monocyte" in pbmc.label_names and pbmc.genes[0] == "HES4"
    # the largest type has 240 cells, the smallest 8
    sizes = torch.bincount(pbmc.labels).sort().values
    assert sizes[0] == 8 and sizes[-1] == 240
    assert pbmc.theta is None


def test_pbmc_counts_are_whole_numbers_within_the_measured_deviation(pbmc):
    import scanpy as sc

    c = pbmc.counts
    assert torch.equal(c, c.round()) and c.min() == 0 and c.max() == 259
    assert 0 < (c == 0).float().mean() < 1  # 67% zeros
    adata = sc.datasets.pbmc68k_reduced()
    raw = np.asarray(adata.raw.X.toarray(), dtype=np.float64)
    values = np.expm1(raw) * adata.obs["n_counts"].to_numpy()[:, None] / 1e4
    deviation = np.abs(values - np.round(values)).max()
    assert deviation == pytest.approx(PBMC_DEVIATION, abs=5e-4)
    assert deviation < PBMC_TOLERANCE
    # the counts give back scanpy's values: log1p(1e4 c / n_counts), stored to 3 decimals
    back = np.log1p(1e4 * c.double().numpy() / adata.obs["n_counts"].to_numpy()[:, None])
    assert np.abs(back - raw).max() < 6e-4


def test_pbmc_refuses_a_recovery_beyond_the_tolerance():
    pytest.importorskip("scanpy")
    with pytest.raises(DataError, match=r"up to 0\.08\d* from whole numbers.*tolerance 0\.01"):
        lv.datasets.pbmc68k_reduced(tolerance=0.01)


def test_pbmc_without_scanpy_names_the_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def no_scanpy(name, *args, **kwargs):
        if name == "scanpy" or name.startswith("scanpy."):
            raise ImportError("No module named 'scanpy'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scanpy)
    with pytest.raises(ImportError, match=r"pip install pyro-lvae\[counts\]"):
        lv.datasets.pbmc68k_reduced()


# ---- the synthetic set ------------------------------------------------------------------------
def test_synthetic_counts_are_reproducible_by_seed():
    a = synthetic_counts(300, genes=40, types=4, generator=_gen(3))
    b = synthetic_counts(300, genes=40, types=4, generator=_gen(3))
    c = synthetic_counts(300, genes=40, types=4, generator=_gen(4))
    assert torch.equal(a.counts, b.counts) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.theta, b.theta)
    assert not torch.equal(a.counts, c.counts)
    assert a.counts.shape == (300, 40) and torch.equal(a.counts, a.counts.round())
    assert a.counts.min() >= 0 and set(a.labels.tolist()) == {0, 1, 2, 3}
    assert a.label_names == ("type 0", "type 1", "type 2", "type 3") and len(a.genes) == 40
    # the default theta: log-uniform per gene in [0.5, 20]
    assert a.theta.shape == (40,) and 0.5 <= a.theta.min() and a.theta.max() <= 20


def test_synthetic_counts_do_not_touch_the_global_random_state():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    synthetic_counts(50, genes=10, generator=_gen(1))
    assert torch.equal(torch.rand(3), expected)


def test_synthetic_theta_is_the_stated_one():
    d = synthetic_counts(20, genes=6, theta=2.5, generator=_gen())
    assert d.theta.tolist() == [2.5] * 6
    per_gene = [0.1, 1.0, 10.0, 100.0]
    d = synthetic_counts(20, genes=4, theta=per_gene, generator=_gen())
    assert d.theta.tolist() == pytest.approx(per_gene)
    with pytest.raises(ConfigError, match="one per gene"):
        synthetic_counts(20, genes=5, theta=per_gene)
    with pytest.raises(ConfigError, match="low 3.0 > high 1.0"):
        synthetic_counts(20, genes=5, theta=(3.0, 1.0))
    with pytest.raises(ConfigError, match="zero_inflation"):
        synthetic_counts(20, zero_inflation=1.0)


@pytest.mark.parametrize("theta", [0.5, 5.0, 1e5])
def test_negative_binomial_draws_have_the_stated_moments(theta):
    mu = torch.tensor([0.5, 4.0, 40.0], dtype=torch.float64)
    x = _negative_binomial_draw(mu.expand(40000, 3), torch.tensor(theta), _gen(7))
    var = mu + mu ** 2 / theta
    se_mean = (var / 40000).sqrt()
    assert torch.all((x.mean(0) - mu).abs() < 5 * se_mean)
    assert torch.allclose(x.var(0), var, rtol=0.08)


def test_zero_inflation_adds_zeros():
    plain = synthetic_counts(2000, genes=30, generator=_gen(2))
    zi = synthetic_counts(2000, genes=30, zero_inflation=0.4, generator=_gen(2))
    p0, z0 = (plain.counts == 0).float().mean(), (zi.counts == 0).float().mean()
    # P(zero) = pi + (1 - pi) P_NB(zero)
    assert float(z0) == pytest.approx(0.4 + 0.6 * float(p0), abs=0.02)


# ---- splits and the check ---------------------------------------------------------------------
def test_split_is_fixed_by_the_seed_and_disjoint():
    d = synthetic_counts(101, genes=5, generator=_gen())
    train, test = d.split(0.2, seed=5)
    assert isinstance(train, CountData) and len(train) == 81 and len(test) == 20
    again = d.split(0.2, seed=5)[1]
    assert torch.equal(test.counts, again.counts)
    i_train, i_test = held_out_split(101, 0.2, seed=5)
    assert set(i_train.tolist()).isdisjoint(i_test.tolist())
    assert torch.equal(test.counts, d.counts[i_test])
    assert not torch.equal(held_out_split(101, 0.2, seed=6)[1], i_test)
    with pytest.raises(ConfigError, match="held_out"):
        held_out_split(10, 1.0)


def test_check_counts_takes_whole_numbers_in_any_form():
    import scipy.sparse

    want = torch.tensor([[0.0, 3.0], [1.0, 0.0]])
    for x in ([[0, 3], [1, 0]], np.array([[0, 3], [1, 0]], dtype=np.int64), want.double(),
              scipy.sparse.csr_matrix(np.array([[0, 3], [1, 0]]))):
        out = check_counts(x)
        assert out.dtype == torch.float32 and torch.equal(out, want)


@pytest.mark.parametrize("x, message", [
    ([[0.0, 1.386, 2.0]], r"look log-normalised \(non-integers such as 1\.386\); pass the raw"),
    ([[0.0, 100.5, 2.0]], r"1 value\(s\) are not whole numbers \(such as 100\.5 at cell 0, "
                          r"gene 1\)"),
    ([[0.0, -1.0]], r"negative \(first at cell 0, gene 1: -1\).*not centred or scaled"),
    ([[0.0, float("nan")]], r"NaN or infinite \(first at cell 0, gene 1"),
    ([[0.0, float("inf")]], r"NaN or infinite"),
    ([1.0, 2.0], r"2 dimensions\), got shape \(2,\); reshape it to \(cells, genes\)"),
    ([[[1.0]]], r"got shape \(1, 1, 1\)"),
    (np.zeros((0, 3)), r"empty"),
    ([["a", "b"]], r"expected numbers"),
    (np.array([[True, False]]), r"boolean"),
    ([[2.0 ** 25]], r"above 16777216"),
])
def test_check_counts_refuses_what_are_not_counts(x, message):
    with pytest.raises(DataError, match=message):
        check_counts(x)
