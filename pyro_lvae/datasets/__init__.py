"""Data sets: the paper's artificial problem, a second curve, and the sphere of Theorem 1."""

from .artificial import (
    MANIFOLD_NOISE,
    MANIFOLD_REGIONS,
    distance_to_curve,
    manifold2d,
    manifold2d_curve,
    manifold2d_noise_profile,
    sphere,
    spiral2d,
    spiral2d_curve,
)

__all__ = ["manifold2d", "manifold2d_curve", "manifold2d_noise_profile", "distance_to_curve",
           "spiral2d", "spiral2d_curve", "sphere", "MANIFOLD_NOISE", "MANIFOLD_REGIONS"]
