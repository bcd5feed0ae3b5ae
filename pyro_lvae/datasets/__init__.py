"""Data sets: the paper's artificial problem, a second curve, the sphere of Theorem 1, images
(MNIST, Fashion-MNIST, CelebA) and counts (scanpy's pbmc68k_reduced, a synthetic set)."""

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
from .counts import (
    PBMC_DEVIATION,
    PBMC_TOLERANCE,
    CountData,
    check_counts,
    held_out_split,
    pbmc68k_reduced,
    synthetic_counts,
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
           "spiral2d", "spiral2d_curve", "sphere", "MANIFOLD_NOISE", "MANIFOLD_REGIONS",
           "CountData", "pbmc68k_reduced", "synthetic_counts", "check_counts", "held_out_split",
           "PBMC_TOLERANCE", "PBMC_DEVIATION"]

#: the former name, kept for one release (a ``DeprecationWarning`` names the new one)
__getattr__ = deprecated_aliases(__name__, {"Scale": "UnitLevels"}, globals())
