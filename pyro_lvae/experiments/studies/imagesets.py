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
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ...errors import ConfigError
from ..points import EVAL_SEED

__all__ = ["ImageSplit", "IMAGE_SET_NAMES", "digits_8bit", "load_split", "levels"]

#: the names :func:`load_split` knows, with a description for reports
IMAGE_SET_NAMES = {
    "digits": "scikit-learn's 8x8 digits on the 8-bit grid",
    "fashion-mnist": "a fixed subset of Fashion-MNIST (28x28)",
}


@dataclass(frozen=True)
class ImageSplit:
    """A training and a held-out set: ``(N, D)`` float pixels in [0, 1] on the grid ``k / 255``
    and their integer class labels; ``shape``: one image's ``(C, H, W)``."""

    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    shape: tuple[int, int, int]

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


def _digits() -> ImageSplit:
    x, y = digits_8bit(return_labels=True)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(EVAL_SEED))
    cut = int(0.7 * len(x))
    a, b = order[:cut], order[cut:]
    return ImageSplit(x[a], y[a], x[b], y[b], (1, 8, 8))


def _subset(root: str | Path, train: bool, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    import torchvision

    from ...datasets import load_images

    images = load_images("fashion-mnist", root, train=train)  # clear error if files are missing
    labels = torchvision.datasets.FashionMNIST(str(root), train=train).targets
    if not 0 < size <= len(images):
        raise ConfigError(f"a Fashion-MNIST subset of {size} images: choose 1 to {len(images)}")
    seed = EVAL_SEED + (0 if train else 1)
    pick = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))[:size]
    return images[pick].flatten(1).float() / 255, labels[pick].long()


def load_split(name: str, data_root: str | Path | None = None, train_size: int = 10000,
               test_size: int = 2000) -> ImageSplit:
    """The images of the study set ``name`` (:data:`IMAGE_SET_NAMES`).

    :param str name: ``digits`` or ``fashion-mnist``
    :param data_root: the folder that holds ``FashionMNIST/raw`` (Fashion-MNIST only)
    :param int train_size: Fashion-MNIST training images kept (a fixed random subset)
    :param int test_size: Fashion-MNIST held-out images kept (from the test split)
    """
    if name == "digits":
        return _digits()
    if name == "fashion-mnist":
        if data_root is None:
            raise ConfigError("the fashion-mnist image set needs the folder that holds "
                              "FashionMNIST/raw: pass --data-root (data_root=)")
        x, y = _subset(data_root, True, train_size)
        xt, yt = _subset(data_root, False, test_size)
        return ImageSplit(x, y, xt, yt, (1, 28, 28))
    raise ConfigError(f"unknown image set {name!r}; expected one of {', '.join(IMAGE_SET_NAMES)}")
