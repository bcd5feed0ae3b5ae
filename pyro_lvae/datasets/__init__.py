"""Data sets: the paper's artificial problem (more to come: images, tables)."""

from .artificial import MANIFOLD_NOISE, MANIFOLD_REGIONS, manifold2d, manifold2d_noise_profile

__all__ = ["manifold2d", "manifold2d_noise_profile", "MANIFOLD_NOISE", "MANIFOLD_REGIONS"]
