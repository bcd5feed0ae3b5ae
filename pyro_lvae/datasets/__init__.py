"""Data sets: the paper's artificial problem and the sphere of Theorem 1."""

from .artificial import (
    MANIFOLD_NOISE,
    MANIFOLD_REGIONS,
    manifold2d,
    manifold2d_noise_profile,
    sphere,
)

__all__ = ["manifold2d", "manifold2d_noise_profile", "sphere", "MANIFOLD_NOISE",
           "MANIFOLD_REGIONS"]
