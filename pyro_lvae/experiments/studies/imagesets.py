"""Small image sets for the studies, as flat vectors on the 8-bit grid ``k / 255``, with labels.

=================  =============================================================================
``digits``         scikit-learn's 1797 8x8 digits (bundled, no download): grey level ``k`` of
                   0..16 becomes ``round(255 k / 16) / 255`` (17 distinct bins of the 256), 64
                   values per image; a fixed 70% / 30% split
``fashion-mnist``  a fixed random subset of Fashion-MNIST (torchvision's files under a data
                   root, never downloaded here): ``train_size`` of the 60000 training images and
                   ``test_size`` of the 10000 test images, 784 values per image
=================  =============================================================================

The subsets and the split depend only on :data:`~pyro_lvae.experiments.points.EVAL_SEED`, so
every run of a study (every seed, family and method) sees the same images.

**Validation split** (``validation_size > 0``): images held out of the *training* images, on
which the studies select their weights (the best held-out ELBO during training); the test images
stay as they are and are never used for selection. ``digits``: the last ``validation_size`` of
the 1257 training digits in the fixed permutation (seed ``EVAL_SEED``) that makes the 70% / 30%
split, so the training digits shrink to ``1257 - validation_size``; ``fashion-mnist``: the next
``validation_size`` images of the same fixed permutation of the 60000 training images that
picks the ``train_size`` training images, so the training subset is the one it was without a
validation split. :func:`upscaled` puts a split on a larger grid (the digits at 28x28 for
convolutional networks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import ConfigError
from ..points import EVAL_SEED

__all__ = ["ImageSplit", "IMAGE_SET_NAMES", "digits_8bit", "load_split", "levels", "upscaled"]

#: the names :func:`load_split` knows, with a description for reports
IMAGE_SET_NAMES = {
    "digits": "scikit-learn's 8x8 digits on the 8-bit grid",
    "fashion-mnist": "a fixed subset of Fashion-MNIST (28x28)",
}


@dataclass(frozen=True)
class ImageSplit:
    """A training and a held-out (test) set: ``(N, D)`` float pixels in [0, 1] on the grid
    ``k / 255`` and their integer class labels; ``shape``: one image's ``(C, H, W)``;
    ``validation`` (and its labels): images held out of the training images for weight
    selection, ``None`` without a validation split."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    shape: tuple[int, int, int]
    validation: torch.Tensor | None = None
    validation_labels: torch.Tensor | None = None

    @property
    def dims(self) -> int:
        """Values per image."""
        return self.train.shape[-1]


def levels(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] as their nearest 8-bit levels ``k`` (``uint8``; values outside [0, 1]
    are clamped first): the inverse of ``k / 255`` on the grid."""
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8)


def digits_8bit(return_labels: bool = False):
    """scikit-learn's 1797 digits as ``(1797, 64)`` values on the 8-bit grid ``j / 255``:
    grey level ``k`` of 0..16 becomes ``round(255 k / 16) / 255`` (17 distinct bins).

    :param bool return_labels: also return the ``(1797,)`` class labels
    """
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.round(torch.as_tensor(d.data, dtype=torch.float32) * 255 / 16) / 255
    return (x, torch.as_tensor(d.target, dtype=torch.long)) if return_labels else x


def _digits(validation_size: int) -> ImageSplit:
    x, y = digits_8bit(return_labels=True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(EVAL_SEED))
    cut = int(0.7 * len(x))
    if not 0 <= validation_size <= cut // 2:
        raise ConfigError(f"a digits validation split of {validation_size} images: choose 0 to "
                          f"{cut // 2} (at most half of the {cut} training digits)")
    a, v, b = order[:cut - validation_size], order[cut - validation_size:cut], order[cut:]
    if not validation_size:
        return ImageSplit(x[a], y[a], x[b], y[b], (1, 8, 8))
    return ImageSplit(x[a], y[a], x[b], y[b], (1, 8, 8), x[v], y[v])


def _subset(root: str | Path, train: bool, size: int,
            extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images (and labels) of a fixed permutation of a Fashion-MNIST split, then the
    next ``extra`` ones (the validation split), all as one tensor."""
    import torchvision

    from ...datasets import load_images

    images = load_images("fashion-mnist", root, train=train)  # clear error if files are missing
    labels = torchvision.datasets.FashionMNIST(str(root), train=train).targets
    if not 0 < size <= len(images):
        raise ConfigError(f"a Fashion-MNIST subset of {size} images: choose 1 to {len(images)}")
    if not 0 <= extra <= len(images) - size:
        raise ConfigError(f"a Fashion-MNIST validation split of {extra} images beside {size} "
                          f"training images: choose 0 to {len(images) - size}")
    seed = EVAL_SEED + (0 if train else 1)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    pick = pick[:size + extra]
    return images[pick].flatten(1).float() / 255, labels[pick].long()


def load_split(name: str, data_root: str | Path | None = None, train_size: int = 10000,
               test_size: int = 2000, validation_size: int = 0) -> ImageSplit:
    """The images of the study set ``name`` (:data:`IMAGE_SET_NAMES`).

    :param str name: ``digits`` or ``fashion-mnist``
    :param data_root: the folder that holds ``FashionMNIST/raw`` (Fashion-MNIST only)
    :param int train_size: Fashion-MNIST training images kept (a fixed random subset)
    :param int test_size: Fashion-MNIST held-out images kept (from the test split)
    :param int validation_size: images held out of the training images for weight selection
        (0: no validation split; see the module docstring for which)
    """
    if isinstance(validation_size, bool) or not isinstance(validation_size, int):
        raise ConfigError(f"Expected validation_size to be an integer >= 0 but got "
                          f"{validation_size!r}")
    if name == "digits":
        return _digits(validation_size)
    if name == "fashion-mnist":
        if data_root is None:
            raise ConfigError("the fashion-mnist image set needs the folder that holds "
                              "FashionMNIST/raw: pass --data-root (data_root=)")
        x, y = _subset(data_root, True, train_size, validation_size)
        xt, yt = _subset(data_root, False, test_size)
        if not validation_size:
            return ImageSplit(x, y, xt, yt, (1, 28, 28))
        return ImageSplit(x[:train_size], y[:train_size], xt, yt, (1, 28, 28),
                          x[train_size:], y[train_size:])
    raise ConfigError(f"unknown image set {name!r}; expected one of {', '.join(IMAGE_SET_NAMES)}")


def upscale_images(x: torch.Tensor, side: int) -> torch.Tensor:
    """Flat one-channel square images ``x`` (``(N, h * h)``, values in [0, 1]) resized to
    ``side x side`` (bilinear, ``align_corners=False``) and put back on the 8-bit grid
    ``k / 255`` (rounded): ``(N, side * side)``."""
    import torch.nn.functional as F

    h = math.isqrt(x.shape[-1])
    if h * h != x.shape[-1]:
        raise ConfigError(f"upscale_images takes flat square images, not {x.shape[-1]} values")
    big = F.interpolate(x.reshape(-1, 1, h, h), size=(side, side), mode="bilinear",
                        align_corners=False)
    return torch.round(big.clamp(0, 1).flatten(1) * 255) / 255


def upscaled(split: ImageSplit, side: int) -> ImageSplit:
    """``split`` with every image resized to ``side x side`` (bilinear, ``align_corners=False``,
    on one channel) and put back on the 8-bit grid ``k / 255`` (rounded); labels unchanged.

    :param ImageSplit split: a split of one-channel square images
    :param int side: the new height and width
    """
    c, h, w = split.shape
    if c != 1 or h != w:
        raise ConfigError(f"upscaled takes one-channel square images, not {split.shape}")

    def resize(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else upscale_images(x.reshape(len(x), h * w), side)

    return ImageSplit(resize(split.train), split.train_labels, resize(split.test),
                      split.test_labels, (1, side, side), resize(split.validation),
                      split.validation_labels)
