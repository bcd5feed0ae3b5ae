"""How sharp reconstructions are: the gradient-energy ratio against the original images.

A blurry decoder mean has weaker differences between neighbouring pixels than the image it
reconstructs. :func:`gradient_energy` is the mean squared difference between horizontally and
vertically adjacent pixels (every channel, every image: ``(H (W - 1) + (H - 1) W) C`` differences
per image); :func:`sharpness_ratio` divides that of the reconstructions by that of the originals:

    ratio = gradient_energy(reconstructions) / gradient_energy(originals)

1 means edges as strong as the data's, below 1 blurrier (0: flat images), above 1 noisier or
with exaggerated edges. The ratio is pooled over the images (a ratio of means, not a mean of
per-image ratios), so a blank image does not divide by zero. It says nothing about *where* the
edges are; read it beside the reconstruction error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import DataError

__all__ = ["gradient_energy", "sharpness_ratio"]


def _as_images(x: torch.Tensor, shape: Sequence[int] | None) -> torch.Tensor:
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or x[0].numel() != torch.Size(shape).numel():
            raise DataError(f"images of {x[0].numel()} values do not have the shape {shape} "
                            "(C, H, W)")
        return x.reshape(-1, *shape)
    if x.dim() != 4:
        raise DataError(f"expected images (N, C, H, W), got a tensor of shape {tuple(x.shape)}; "
                        "give shape=(C, H, W) for flat images")
    return x


def gradient_energy(images: torch.Tensor, shape: Sequence[int] | None = None) -> float:
    """The mean squared difference between adjacent pixels along rows and columns.

    :param torch.Tensor images: ``(N, C, H, W)``, or ``(N, D)`` flat images with ``shape``
    :param shape: one image's ``(C, H, W)`` when ``images`` are flat
    :returns: ``mean((x[..., i, j+1] - x[..., i, j])^2 and (x[..., i+1, j] - x[..., i, j])^2)``
        over all images, channels and adjacent pairs
    """
    x = _as_images(images, shape).double()
    across = torch.diff(x, dim=-1).pow(2)
    down = torch.diff(x, dim=-2).pow(2)
    return float((across.sum() + down.sum()) / (across.numel() + down.numel()))


def sharpness_ratio(reconstructions: torch.Tensor, originals: torch.Tensor,
                    shape: Sequence[int] | None = None) -> float:
    """The gradient energy of ``reconstructions`` over that of ``originals``
    (:func:`gradient_energy`): 1 as sharp as the data, below 1 blurrier; NaN when the originals
    are flat.

    :param torch.Tensor reconstructions: decoder means, ``(N, C, H, W)`` or ``(N, D)``
    :param torch.Tensor originals: the images they reconstruct, the same shape
    :param shape: one image's ``(C, H, W)`` when the images are flat
    """
    if reconstructions.shape != originals.shape:
        raise DataError(f"reconstructions {tuple(reconstructions.shape)} and originals "
                        f"{tuple(originals.shape)} differ in shape")
    reference = gradient_energy(originals, shape)
    if reference == 0:
        return float("nan")
    return gradient_energy(reconstructions, shape) / reference
