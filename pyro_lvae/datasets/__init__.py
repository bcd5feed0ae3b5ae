"""Data sets: the paper's artificial problem, a second curve, the sphere of Theorem 1, and
images (MNIST, Fashion-MNIST, CelebA)."""

from ..registry import deprecated_aliases
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
from .images import (
    IMAGE_DATASETS,
    PIXEL_TRANSFORMS,
    Binarize,
    CelebAFolder,
    Dequantize,
    UnitLevels,
    bits_per_dim,
    load_images,
)

__all__ = ["IMAGE_DATASETS", "PIXEL_TRANSFORMS", "Binarize", "CelebAFolder", "Dequantize",
           "UnitLevels", "bits_per_dim", "load_images",
           "manifold2d", "manifold2d_curve", "manifold2d_noise_profile", "distance_to_curve",
           "spiral2d", "spiral2d_curve", "sphere", "MANIFOLD_NOISE", "MANIFOLD_REGIONS"]

#: the former name, kept for one release (a ``DeprecationWarning`` names the new one)
__getattr__ = deprecated_aliases(__name__, {"Scale": "UnitLevels"}, globals())
