"""Count data: cells x genes matrices of whole numbers, for the count observation models.

- :func:`pbmc68k_reduced`: 700 blood cells x 765 genes of real single-cell RNA counts with
  their cell types, recovered from the copy that scanpy ships (no download; needs the optional
  extra ``pip install pyro-lvae[counts]``);
- :func:`synthetic_counts`: counts from a known generative model (cell types on a
  low-dimensional latent, library sizes varying per cell, negative-binomial noise with a known
  inverse dispersion per gene, optional zero inflation);
- :func:`check_counts`: the check every count matrix passes (non-negative whole numbers, two
  dimensions, finite), refusing others with a :class:`~pyro_lvae.errors.DataError` that names
  the problem and the fix.

Each returns (or works on) a :class:`CountData`: the counts as a ``float32`` tensor of whole
numbers, integer cell-type labels with their names, the gene names and, for synthetic data,
the true inverse dispersion ``theta`` per gene (``Var = mu + mu^2 / theta``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError, check_positive, check_positive_int

__all__ = ["CountData", "pbmc68k_reduced", "synthetic_counts", "check_counts",
           "held_out_split", "PBMC_TOLERANCE", "PBMC_DEVIATION"]

logger = logging.getLogger(__name__)

#: the largest distance to the nearest whole number that :func:`pbmc68k_reduced` accepts in the
#: counts it recovers (the values stored with three decimals in log space give at most
#: :data:`PBMC_DEVIATION`)
PBMC_TOLERANCE = 0.1
#: the largest distance to the nearest whole number measured in the recovered counts of
#: scanpy 1.11's copy (at a count of 213: the log1p values are stored rounded to three
#: decimals, a relative error of at most 5e-4)
PBMC_DEVIATION = 0.0815
#: the largest count a ``float32`` holds exactly (2^24)
MAX_EXACT_COUNT = 2 ** 24


@dataclass(frozen=True)
class CountData:
    """A count matrix with its cell and gene annotations.

    :param torch.Tensor counts: ``(cells, genes)`` ``float32`` tensor of whole numbers
    :param torch.Tensor labels: ``(cells,)`` ``int64`` cell-type index into ``label_names``
    :param tuple label_names: the cell-type names
    :param tuple genes: the gene names, one per column
    :param torch.Tensor theta: the true inverse dispersion per gene (``Var = mu + mu^2 /
        theta``) for synthetic data, else ``None``
    """

    counts: torch.Tensor
    labels: torch.Tensor
    label_names: tuple[str, ...]
    genes: tuple[str, ...]
    theta: torch.Tensor | None = None

    def __len__(self) -> int:
        return self.counts.shape[0]

    def subset(self, index: torch.Tensor) -> CountData:
        """The cells at ``index`` (the genes, names and ``theta`` unchanged)."""
        return CountData(self.counts[index], self.labels[index], self.label_names, self.genes,
                         self.theta)

    def split(self, held_out: float = 0.2, seed: int = 0) -> tuple[CountData, CountData]:
        """``(training cells, held-out cells)``: a fraction ``held_out`` of the cells drawn at
        random with ``seed`` (:func:`held_out_split`)."""
        train, test = held_out_split(len(self), held_out, seed)
        return self.subset(train), self.subset(test)


def held_out_split(n: int, held_out: float = 0.2, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(training indices, held-out indices)`` of ``n`` items: ``round(held_out * n)`` of them
    (at least one, and at least one left for training) drawn at random with ``seed``, each part
    in increasing order. The same ``(n, held_out, seed)`` always give the same split.

    Example::

        >>> from pyro_lvae.datasets import held_out_split
        >>> train, test = held_out_split(10, 0.2, seed=0)
        >>> len(train), len(test), sorted(train.tolist() + test.tolist()) == list(range(10))
        (8, 2, True)
    """
    n = check_positive_int("n", n)
    if not (isinstance(held_out, (int, float)) and 0 < held_out < 1):
        raise ConfigError(f"Expected held_out in (0, 1) but got {held_out!r}")
    if n < 2:
        raise ConfigError(f"a split needs at least 2 items, got n={n}")
    m = min(max(1, round(held_out * n)), n - 1)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return order[m:].sort().values, order[:m].sort().values


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if hasattr(x, "toarray"):  # scipy sparse
        return np.asarray(x.toarray())
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as e:
        raise DataError(f"counts must be a matrix of numbers (cells x genes); cannot read a "
                        f"{type(x).__name__}: {e}") from None


def check_counts(x: Any, name: str = "counts") -> torch.Tensor:
    """``x`` as a ``float32`` tensor of counts, after checking that it is a matrix (cells x
    genes) of finite, non-negative whole numbers; a :class:`~pyro_lvae.errors.DataError` names
    the first problem found and its fix. Takes a tensor, a numpy array, a scipy sparse matrix
    or nested lists.

    :param x: the count matrix
    :param str name: what to call it in messages

    Example::

        >>> from pyro_lvae.datasets import check_counts
        >>> check_counts([[0, 3], [1, 0]]).dtype
        torch.float32
        >>> check_counts([[0.0, 1.386]])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        pyro_lvae.errors.DataError: counts: values look log-normalised (non-integers such as ...
    """
    a = _as_array(x)
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise DataError(f"{name}: expected numbers, got values of type {a.dtype}; pass a "
                        f"numeric matrix of counts (cells x genes)")
    if a.dtype == bool:
        raise DataError(f"{name}: got a boolean matrix; pass counts (whole numbers), e.g. "
                        f"x.astype(int) if presence/absence is meant")
    if a.ndim != 2:
        raise DataError(f"{name}: expected a matrix of cells x genes (2 dimensions), got shape "
                        f"{tuple(a.shape)}; reshape it to (cells, genes)")
    if a.size == 0:
        raise DataError(f"{name}: the matrix is empty (shape {tuple(a.shape)}); it needs at "
                        f"least one cell and one gene")
    if np.iscomplexobj(a):
        raise DataError(f"{name}: got complex numbers; pass real counts")
    a64 = a.astype(np.float64, copy=False)
    bad = ~np.isfinite(a64)
    if bad.any():
        i, j = (int(v) for v in np.argwhere(bad)[0])
        raise DataError(f"{name}: {int(bad.sum())} value(s) are NaN or infinite (first at cell "
                        f"{i}, gene {j}: {a64[i, j]}); remove or fill them before training")
    if (a64 < 0).any():
        i, j = (int(v) for v in np.argwhere(a64 < 0)[0])
        raise DataError(f"{name}: {int((a64 < 0).sum())} value(s) are negative (first at cell "
                        f"{i}, gene {j}: {a64[i, j]:g}); counts are >= 0: pass the raw counts, "
                        f"not centred or scaled values")
    frac = a64 != np.round(a64)
    if frac.any():
        i, j = (int(v) for v in np.argwhere(frac)[0])
        example = f"{a64[i, j]:.4g}"
        if a64.max() < 30:
            raise DataError(f"{name}: values look log-normalised (non-integers such as "
                            f"{example}); pass the raw counts (whole numbers), not normalised "
                            f"or log-transformed values")
        raise DataError(f"{name}: {int(frac.sum())} value(s) are not whole numbers (such as "
                        f"{example} at cell {i}, gene {j}); pass the raw counts, not "
                        f"normalised values (round them only if they are counts stored "
                        f"inexactly)")
    if a64.max() > MAX_EXACT_COUNT:
        raise DataError(f"{name}: counts up to {a64.max():.0f} are above {MAX_EXACT_COUNT}, "
                        f"the largest a float32 holds exactly; check that these are counts")
    return torch.as_tensor(a64, dtype=torch.float32).contiguous()


def _import_scanpy():
    try:
        import scanpy
    except ImportError as e:
        raise ImportError(f"pbmc68k_reduced needs scanpy, an optional dependency ({e}); "
                          f"install it with: pip install pyro-lvae[counts]") from None
    return scanpy


def pbmc68k_reduced(tolerance: float = PBMC_TOLERANCE) -> CountData:
    """The real counts of scanpy's ``pbmc68k_reduced``: 700 peripheral blood cells x 765
    genes with 10 cell types (``bulk_labels``), read from the copy bundled with scanpy (no
    download; ``pip install pyro-lvae[counts]``).

    scanpy stores log-normalised values, ``raw = log1p(10^4 c / n_counts)`` for a cell's
    counts ``c`` and its total ``n_counts`` (over all genes, before the 765 were selected).
    The counts are recovered as ``round(expm1(raw) * n_counts / 10^4)`` (in float64). Before
    rounding they lie within ``0.0815`` of whole numbers (measured with scanpy 1.11, largest at
    a count of 213: the stored values carry three decimals, a relative error below ``5e-4``);
    recoveries further than ``tolerance`` from whole numbers are refused with a
    :class:`~pyro_lvae.errors.DataError` (another copy of the data set would not be these
    counts).

    :param float tolerance: the largest accepted distance to the nearest whole number
    :returns: a :class:`CountData` (``theta`` is ``None``)
    """
    tolerance = check_positive("tolerance", tolerance)
    sc = _import_scanpy()
    adata = sc.datasets.pbmc68k_reduced()
    if adata.raw is None or "n_counts" not in adata.obs or "bulk_labels" not in adata.obs:
        raise DataError("scanpy's pbmc68k_reduced lacks .raw, obs['n_counts'] or "
                        "obs['bulk_labels']: not the data set this loader knows")
    raw = adata.raw.X
    raw = np.asarray(raw.toarray() if hasattr(raw, "toarray") else raw, dtype=np.float64)
    total = adata.obs["n_counts"].to_numpy(dtype=np.float64)
    values = np.expm1(raw) * total[:, None] / 1e4
    counts = np.round(values)
    deviation = float(np.abs(values - counts).max())
    logger.info("pbmc68k_reduced: recovered counts within %.4f of whole numbers", deviation)
    if not deviation <= tolerance:
        raise DataError(f"the counts recovered from scanpy's pbmc68k_reduced lie up to "
                        f"{deviation:.4f} from whole numbers, more than the tolerance "
                        f"{tolerance:g} (this loader measured {PBMC_DEVIATION}); this copy is "
                        f"not stored as log1p(1e4 counts / n_counts)")
    cats = adata.obs["bulk_labels"].astype("category")
    return CountData(counts=check_counts(counts, "pbmc68k_reduced"),
                     labels=torch.tensor(np.array(cats.cat.codes, dtype=np.int64)),
                     label_names=tuple(str(c) for c in cats.cat.categories),
                     genes=tuple(str(g) for g in adata.raw.var_names))


def _theta_per_gene(theta: Any, genes: int, generator: torch.Generator) -> torch.Tensor:
    if isinstance(theta, (int, float)) and not isinstance(theta, bool):
        return torch.full((genes,), check_positive("theta", theta), dtype=torch.float64)
    if isinstance(theta, tuple) and len(theta) == 2:
        low, high = (check_positive("theta", t) for t in theta)
        if not low <= high:
            raise ConfigError(f"theta=(low, high) draws theta log-uniform between low and "
                              f"high; got low {low} > high {high}")
        u = torch.rand(genes, generator=generator, dtype=torch.float64)
        return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))
    t = torch.as_tensor(theta, dtype=torch.float64).flatten()
    if t.numel() != genes or not (torch.isfinite(t).all() and (t > 0).all()):
        raise ConfigError(f"theta must be a positive number, a (low, high) pair or {genes} "
                          f"positive values (one per gene); got {theta!r}")
    return t


def synthetic_counts(
    n: int,
    genes: int = 200,
    types: int = 5,
    theta: float | tuple[float, float] | Sequence[float] | torch.Tensor = (0.5, 20.0),
    zero_inflation: float = 0.0,
    factors: int = 3,
    library: float = 1000.0,
    library_spread: float = 0.4,
    generator: torch.Generator | None = None,
) -> CountData:
    """``n`` cells of counts from a known generative model:

    1. the structure (drawn once, from the same random source): ``factors`` latent directions
       ``W`` (``factors x genes``, entries ``N(0, 1.5^2 / factors)``), a baseline
       ``b_g ~ N(0, 1)`` per gene, a centre ``c_t ~ N(0, I)`` per cell type in the latent
       space, and the inverse dispersion ``theta_g`` per gene;
    2. per cell: a type ``t`` (uniform), a latent ``u = c_t + 0.3 e``, the gene shares
       ``rho = softmax(b + u W)``, a library size ``l = library * exp(library_spread * e')``
       (``e, e' ~ N(0, 1)``), the mean ``mu = l rho``, a count
       ``x_g ~ NegativeBinomial(mean mu_g, inverse dispersion theta_g)`` (a Gamma-Poisson
       draw: ``Var = mu + mu^2 / theta``) and, with ``zero_inflation = pi > 0``, ``x_g = 0``
       with probability ``pi`` (independently per cell and gene).

    :param int n: cells
    :param int genes: genes (columns)
    :param int types: cell types (labels)
    :param theta: the true inverse dispersion: one positive number for every gene, a
        ``(low, high)`` pair drawn log-uniform per gene (the default, 0.5 to 20), or one value
        per gene
    :param float zero_inflation: the probability of an extra zero, in [0, 1)
    :param int factors: the latent dimension of the structure
    :param float library: the median library size (counts per cell before zero inflation)
    :param float library_spread: the standard deviation of the log library size
    :param torch.Generator generator: random source (CPU); ``None`` uses torch's global one
    :returns: a :class:`CountData` with ``theta`` (``float32``, per gene)

    Example::

        >>> import torch
        >>> from pyro_lvae.datasets import synthetic_counts
        >>> d = synthetic_counts(100, genes=50, theta=5.0,
        ...                      generator=torch.Generator().manual_seed(0))
        >>> d.counts.shape, d.theta[:2].tolist(), bool((d.counts == d.counts.round()).all())
        (torch.Size([100, 50]), [5.0, 5.0], True)
    """
    n, genes, types, factors = (check_positive_int(k, v) for k, v in (
        ("n", n), ("genes", genes), ("types", types), ("factors", factors)))
    library = check_positive("library", library)
    if not (isinstance(library_spread, (int, float)) and 0 <= library_spread < math.inf):
        raise ConfigError(f"Expected library_spread >= 0 but got {library_spread!r}")
    if not (isinstance(zero_inflation, (int, float)) and 0 <= zero_inflation < 1):
        raise ConfigError(f"Expected zero_inflation in [0, 1) but got {zero_inflation!r}")
    g = generator if generator is not None else torch.Generator().manual_seed(
        int(torch.randint(2 ** 62, (1,))))
    f64 = torch.float64
    w = torch.randn(factors, genes, generator=g, dtype=f64) * (1.5 / math.sqrt(factors))
    base = torch.randn(genes, generator=g, dtype=f64)
    centres = torch.randn(types, factors, generator=g, dtype=f64)
    true_theta = _theta_per_gene(theta, genes, g)
    labels = torch.randint(types, (n,), generator=g)
    u = centres[labels] + 0.3 * torch.randn(n, factors, generator=g, dtype=f64)
    rho = torch.softmax(base + u @ w, dim=-1)
    lib = library * torch.exp(library_spread * torch.randn(n, 1, generator=g, dtype=f64))
    counts = _negative_binomial_draw(lib * rho, true_theta, g)
    if zero_inflation > 0:
        counts = counts * (torch.rand(n, genes, generator=g, dtype=f64) >= zero_inflation)
    return CountData(counts=check_counts(counts, "synthetic counts"), labels=labels,
                     label_names=tuple(f"type {t}" for t in range(types)),
                     genes=tuple(f"gene {j}" for j in range(genes)),
                     theta=true_theta.float())


def _negative_binomial_draw(mu: torch.Tensor, theta: torch.Tensor,
                           generator: torch.Generator) -> torch.Tensor:
    """Counts ``x ~ NegativeBinomial(mean mu, inverse dispersion theta)`` (``Var = mu +
    mu^2 / theta``, broadcast), drawn as ``Poisson(Gamma(theta, rate theta / mu))`` from
    ``generator``, in float64."""
    mu = torch.as_tensor(mu, dtype=torch.float64)
    shape = torch.as_tensor(theta, dtype=torch.float64).expand_as(mu)
    # torch's gamma takes no generator: draw it from the global one, seeded from ``generator``,
    # and restore the global one afterwards
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        rate = torch._standard_gamma(shape) * (mu / shape)
    return torch.poisson(rate, generator=generator)
