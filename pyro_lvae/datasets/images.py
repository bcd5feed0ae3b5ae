"""Image data: MNIST, Fashion-MNIST and CelebA, kept as ``uint8`` until a batch is used.

Pixels are converted per batch by an explicit transform (``fit(..., transform=...)``):

============================  ==============================================================
:class:`Dequantize`           ``(k + u) / 256`` with ``u ~ U(0, 1)`` drawn anew per batch:
                              continuous data in [0, 1), for Normal and continuous Bernoulli
                              models. The reported ``bits/dim`` then bound the discrete data's
                              negative log-likelihood (see :func:`bits_per_dim`).
:class:`UnitLevels`           ``k / 255``: the 8-bit levels in [0, 1], without noise. A
                              continuous density on these values is not a likelihood of the
                              discrete images: constant pixels (image borders) let a learned
                              per-pixel sigma fall to its floor and the log-density grow
                              without bound.
:class:`Binarize`             ``k / 255 > 0.5`` (or drawn with probability ``k / 255``): binary
                              data for the Bernoulli model.
============================  ==============================================================

Each has a command-line name (``--pixels``): :data:`PIXEL_TRANSFORMS`. ``Scale`` and
``"scale"``, the former names of :class:`UnitLevels` and ``"unit-levels"``, still work (with a
``DeprecationWarning``).

Files are never downloaded unless asked (``download=True``, ``--download`` on the command
line); missing files raise :class:`~pyro_lvae.errors.DataError` naming the folder expected.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import ConfigError, DataError
from ..registry import Registry, deprecated_aliases

__all__ = ["IMAGE_DATASETS", "load_images", "CelebAFolder", "Dequantize", "UnitLevels",
           "Binarize", "bits_per_dim", "PIXEL_TRANSFORMS"]

#: command-line name -> (torchvision class name, folder torchvision expects under the root,
#: image shape)
IMAGE_DATASETS: dict[str, tuple[str, str, tuple[int, int, int]]] = {
    "mnist": ("MNIST", "MNIST", (1, 28, 28)),
    "fashion-mnist": ("FashionMNIST", "FashionMNIST", (1, 28, 28)),
    "celeba": ("CelebA", "celeba", (3, 64, 64)),
}


def load_images(name: str, root: str | Path, train: bool = True, download: bool = False):
    """The images of a data set: an ``(N, C, H, W)`` ``uint8`` tensor for MNIST and
    Fashion-MNIST; a :class:`CelebAFolder` (a ``Dataset`` of ``uint8`` images, too large to hold
    in memory) for CelebA.

    :param str name: ``mnist``, ``fashion-mnist`` or ``celeba``
    :param root: the folder that holds (or will hold) the data set's folder
    :param bool train: training split (else the test split)
    :param bool download: fetch the files if they are missing (needs a network)
    """
    if name not in IMAGE_DATASETS:
        raise ConfigError(f"unknown image data set {name!r}; expected one of "
                          f"{', '.join(IMAGE_DATASETS)}")
    cls_name, folder, _ = IMAGE_DATASETS[name]
    root = Path(root)
    if name == "celeba":
        if download:
            _download_celeba(root)
        return CelebAFolder(root / folder, split="train" if train else "test")
    import torchvision

    try:
        ds = getattr(torchvision.datasets, cls_name)(str(root), train=train, download=download)
    except RuntimeError as e:
        if "not found" in str(e).lower():
            raise DataError(
                f"{cls_name} files not found in {root / folder / 'raw'}; pass --download "
                f"(download=True) to fetch them, or --data-root (root=) pointing at the folder "
                f"that holds {folder}/"
            ) from None
        raise DataError(f"cannot read {cls_name} from {root}: {e}") from None
    except Exception as e:  # torchvision reports unreadable IDX files in several ways
        raise DataError(f"cannot read {cls_name} from {root / folder / 'raw'}: the files are "
                        f"corrupt or incomplete ({type(e).__name__}: {e})") from None
    return ds.data.unsqueeze(1).contiguous()


def _download_celeba(root: Path) -> None:
    import torchvision

    try:
        torchvision.datasets.CelebA(str(root), split="all", download=True)
    except Exception as e:
        raise DataError(f"downloading CelebA into {root} failed: {e}") from None


class CelebAFolder(torch.utils.data.Dataset):
    """CelebA aligned faces from ``root/img_align_celeba/*.jpg``, centre-cropped to 148x148 and
    resized to 64x64, as ``uint8`` tensors ``(3, 64, 64)``. The split follows
    ``root/list_eval_partition.txt`` (0 train, 1 validation, 2 test) when it exists; without
    it every image is used for every split.

    :param root: the ``celeba`` folder (as torchvision lays it out)
    :param str split: ``train``, ``valid``, ``test`` or ``all``
    :param int size: output height and width
    """

    SPLITS = {"train": "0", "valid": "1", "test": "2"}

    def __init__(self, root: str | Path, split: str = "train", size: int = 64,
                 crop: int = 148) -> None:
        root = Path(root)
        images = root / "img_align_celeba"
        if not images.is_dir():
            raise DataError(f"CelebA images not found in {images}; pass --download "
                            f"(download=True) to fetch them, or --data-root pointing at the "
                            f"folder that holds celeba/img_align_celeba/")
        if split not in (*self.SPLITS, "all"):
            raise ConfigError(f"unknown CelebA split {split!r}")
        partition = root / "list_eval_partition.txt"
        if split != "all" and partition.exists():
            names = [line.split()[0] for line in partition.read_text().splitlines()
                     if len(line.split()) == 2 and line.split()[1] == self.SPLITS[split]]
        else:
            names = sorted(p.name for p in images.glob("*.jpg"))
        if not names:
            raise DataError(f"no CelebA images for split {split!r} in {images}")
        self.files = [images / n for n in names]
        self.size, self.crop = size, crop

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        from PIL import Image
        from torchvision.transforms import functional as F

        try:
            with Image.open(self.files[i]) as img:
                img = img.convert("RGB")
                img = F.center_crop(img, [min(self.crop, *img.size[::-1])] * 2)
                img = F.resize(img, [self.size, self.size], antialias=True)
                return F.pil_to_tensor(img)
        except OSError as e:
            raise DataError(f"cannot read CelebA image {self.files[i]}: {e}") from None


def _noise(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    if generator is not None and x.device.type == "cpu":
        return torch.rand(x.shape, generator=generator)
    return torch.rand(x.shape, device=x.device)  # the device's own (seeded) generator


#: how ``uint8`` pixels become data, by command-line name (``--pixels``): :class:`Dequantize`,
#: :class:`UnitLevels` (former name ``scale``) and :class:`Binarize`
PIXEL_TRANSFORMS = Registry("pixel transform")


@PIXEL_TRANSFORMS.register("dequantize")
class Dequantize:
    """``uint8`` pixels -> ``(k + u) / levels``, ``u ~ U(0, 1)``: continuous data in [0, 1)."""

    name = "dequantize"

    def __init__(self, levels: int = 256) -> None:
        self.levels = levels

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return (x.float() + _noise(x, generator)) / self.levels


@PIXEL_TRANSFORMS.register("unit-levels", aliases=("scale",))
class UnitLevels:
    """``uint8`` pixels -> their 8-bit levels ``k / 255`` in [0, 1], without noise (the grid of
    the discretised observation models)."""

    name = "unit-levels"

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return x.float() / 255.0


@PIXEL_TRANSFORMS.register("binarize")
class Binarize:
    """``uint8`` pixels -> 0 or 1: ``k / 255 > threshold``, or, with ``stochastic=True``, 1 with
    probability ``k / 255`` (drawn anew per batch)."""

    name = "binarize"

    def __init__(self, threshold: float = 0.5, stochastic: bool = False) -> None:
        self.threshold, self.stochastic = threshold, stochastic

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        p = x.float() / 255.0
        if self.stochastic:
            return (_noise(x, generator) < p).float()
        return (p > self.threshold).float()


def bits_per_dim(nll_nats: float, dims: int, pixels: str = "dequantize",
                 levels: int = 256, discrete: bool = False) -> float:
    """Bits per dimension of a negative log-likelihood (or bound) in nats per image.

    For dequantised data in [0, 1) the density is rescaled to the discrete pixel values, which
    adds ``log2(levels)`` bits per dimension: the result bounds the discrete images' code
    length. For binary data it is ``nll / (dims ln 2)``. For the noise-free levels ``k / 255``
    (``unit-levels``) it is not defined (NaN): a density on discrete values is not a likelihood,
    unless the model is a probability mass on the levels (``discrete``, the discretised
    observation models of :mod:`pyro_lvae.observations.discrete`): then it is
    ``nll / (dims ln 2)``, with no dequantisation offset.

    :param float nll_nats: the negative log-likelihood (or bound) per image, in nats
    :param int dims: the values per image (``C H W``)
    :param str pixels: how pixels became data (a name of :data:`PIXEL_TRANSFORMS`)
    :param int levels: the pixel levels (256 for 8 bits)
    :param bool discrete: the model's likelihood is a probability mass on the levels
        (:attr:`pyro_lvae.observations.Observation.discrete`)
    """
    pixels = PIXEL_TRANSFORMS.resolve(pixels)
    if pixels == "binarize" or (discrete and pixels == "unit-levels"):
        return nll_nats / (dims * math.log(2))
    if pixels == "dequantize" and not discrete:
        return nll_nats / (dims * math.log(2)) + math.log2(levels)
    return float("nan")


#: the former name, kept for one release (a ``DeprecationWarning`` names the new one)
__getattr__ = deprecated_aliases(__name__, {"Scale": "UnitLevels"}, globals())
