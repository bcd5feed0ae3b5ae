"""Synthetic data: the paper's artificial 2D problem (Section 4.1) and the sphere of Theorem 1.

The artificial 2D problem, with a documented formula.

The paper describes points on a 1D curve in the plane made of three regions with moderate,
small and large noise, and gives no formula. Ours: draw ``s ~ U(0, 1)``, put the point on the
cosine curve

    c(s) = (4 s - 2, cos(pi (4 s - 2)))          (two periods over x1 in [-2, 2])

and add isotropic Gaussian noise whose standard deviation depends on the third of the curve:

    ============  ===============  ============
    region        s                noise std
    ============  ===============  ============
    0 moderate    [0, 1/3)         0.05
    1 small       [1/3, 2/3)       0.01
    2 large       [2/3, 1]         0.20
    ============  ===============  ============

The noise levels span a factor 20. Each coordinate has a standard deviation close to 1 (1.16 and
0.72), so the data scale is that of the usual initial sigma of 1.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, check_positive_int

__all__ = ["manifold2d", "manifold2d_curve", "manifold2d_noise_profile", "distance_to_curve",
           "spiral2d", "spiral2d_curve", "sphere", "MANIFOLD_NOISE", "MANIFOLD_REGIONS"]

#: noise standard deviation per region
MANIFOLD_NOISE: tuple[float, float, float] = (0.05, 0.01, 0.20)
#: region names, in the order of their index
MANIFOLD_REGIONS: tuple[str, str, str] = ("moderate", "small", "large")


def manifold2d(
    n: int,
    generator: torch.Generator | None = None,
    return_region: bool = False,
    dtype: torch.dtype | None = None,
):
    """Draw ``n`` fresh points of the artificial problem.

    :param int n: number of points
    :param torch.Generator generator: random source (CPU); ``None`` uses torch's global one
    :param bool return_region: also return each point's region index (0 moderate, 1 small,
        2 large noise)
    :returns: an ``(n, 2)`` tensor, or ``(points, regions)``

    Example::

        >>> import torch
        >>> from pyro_lvae.datasets import manifold2d
        >>> x, region = manifold2d(5, torch.Generator().manual_seed(0), return_region=True)
        >>> x.shape, region.tolist()
        (torch.Size([5, 2]), [1, 2, 0, 0, 0])
    """
    n = check_positive_int("n", n)
    dtype = dtype or torch.get_default_dtype()
    s = torch.rand(n, generator=generator, dtype=dtype)
    eps = torch.randn(n, 2, generator=generator, dtype=dtype)
    region = torch.clamp((s * 3).long(), max=2)
    noise = torch.tensor(MANIFOLD_NOISE, dtype=dtype)[region]
    x = manifold2d_curve(s) + noise[:, None] * eps
    return (x, region) if return_region else x


def manifold2d_curve(s: torch.Tensor) -> torch.Tensor:
    """The noiseless curve ``c(s) = (4 s - 2, cos(pi (4 s - 2)))`` at parameters ``s``."""
    t = 4 * s - 2
    return torch.stack([t, torch.cos(math.pi * t)], dim=-1)


def distance_to_curve(points: torch.Tensor, curve=manifold2d_curve,
                      resolution: int = 4000) -> torch.Tensor:
    """Euclidean distance of each point to a parametrised curve ``curve(s)``, ``s`` in [0, 1]
    (by a dense search over ``resolution`` curve points; accurate to about
    ``length / resolution``)."""
    grid = curve(torch.linspace(0, 1, resolution, dtype=points.dtype, device=points.device))
    out = [torch.cdist(chunk, grid).min(dim=1).values for chunk in points.split(2048)]
    return torch.cat(out) if out else points.new_zeros(0)


def spiral2d(n: int, generator: torch.Generator | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """A second curve, smaller than the data scale of sigma = 1: two turns of a spiral,
    ``s ~ U(0, 1)``, angle ``4 pi s``, radius ``0.15 + 0.6 s``, with isotropic noise of standard
    deviation 0.02. Each coordinate has a standard deviation of about 0.34, a third of the usual
    initial sigma, so a learned sigma starts far above the collapsed solution's own scale."""
    n = check_positive_int("n", n)
    dtype = dtype or torch.get_default_dtype()
    s = torch.rand(n, generator=generator, dtype=dtype)
    eps = torch.randn(n, 2, generator=generator, dtype=dtype)
    return spiral2d_curve(s) + 0.02 * eps


def spiral2d_curve(s: torch.Tensor) -> torch.Tensor:
    """The noiseless spiral of :func:`spiral2d` at parameters ``s``."""
    angle, radius = 4 * math.pi * s, 0.15 + 0.6 * s
    return torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], dim=-1)


def manifold2d_noise_profile() -> tuple[torch.Tensor, torch.Tensor]:
    """The true noise standard deviation as a step function of the curve's abscissa x1:
    ``(x1 breakpoints, noise std)``, ready to draw as a line."""
    x1 = torch.tensor([-2.0, -2 / 3, -2 / 3, 2 / 3, 2 / 3, 2.0])
    noise = torch.tensor(MANIFOLD_NOISE).repeat_interleave(2)
    return x1, noise


def sphere(
    n: int,
    dim: int,
    radius: float = 1.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """``n`` points uniform on the sphere of radius ``radius`` centred at the origin of
    ``R^dim`` (the setting of Theorem 1; see :mod:`pyro_lvae.theory`).

    Example::

        >>> import torch
        >>> from pyro_lvae.datasets import sphere
        >>> x = sphere(4, 3, radius=2.0, generator=torch.Generator().manual_seed(0))
        >>> [round(v, 5) for v in x.norm(dim=-1).tolist()]
        [2.0, 2.0, 2.0, 2.0]
    """
    n, dim = check_positive_int("n", n), check_positive_int("dim", dim)
    if not (math.isfinite(radius) and radius > 0):
        raise ConfigError(f"Expected radius > 0 but got {radius}")
    u = torch.randn(n, dim, generator=generator, dtype=dtype or torch.get_default_dtype())
    return radius * u / u.norm(dim=-1, keepdim=True)
