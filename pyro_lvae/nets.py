"""Plain torch networks for encoders and decoders (no Pyro calls here).

The paper's networks for the artificial problem are residual MLPs with 4 blocks of 200 units
(:class:`ResidualMLP`); for images, convolutional ResNets (:class:`ConvEncoder`,
:class:`ConvDecoder`). :class:`GaussianEncoder` turns any network with ``2 * latent_dim``
outputs into a conditional diagonal Normal ``q(z | x)``, floored so that its scale never
reaches zero. :class:`Standardize` puts a network's inputs (or outputs) in the data's units,
measured on the first batch, so that the same networks train alike on data of any scale.

The constructors check their sizes before allocating: a network whose parameters would not fit
in the machine's memory (:mod:`pyro_lvae.limits`) is a :class:`~pyro_lvae.errors.ConfigError`
naming the size.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .errors import ConfigError, DataError
from .limits import check_parameters

__all__ = ["Standardize", "Log1p", "initialize_from_data", "ResidualBlock", "ResidualMLP",
           "GaussianEncoder", "ConvResidualBlock", "ConvEncoder", "ConvDecoder", "ACTIVATIONS"]

#: activation functions by name
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}


def _activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class Standardize(nn.Module):
    """Per-feature standardisation measured on the first batch of data: ``(x - mean) / std``,
    or with ``inverse=True`` the map back, ``mean + std * y``, applied to the first ``features``
    outputs of a network (a decoder's mean; further outputs, such as a scale half, pass through).

    A data-dependent initialisation (as in Salimans & Kingma 2016 or Glow's actnorm), but kept
    fixed after the first batch: placed before an encoder and after a decoder's mean, it makes
    a VAE's training the same on the data times any factor (inputs and outputs of order 1 for
    the networks, whatever the data's units), without changing the model's family or its ELBO.
    The mean and standard deviation are buffers, saved with the weights together with whether
    they were measured; a constant feature keeps a standard deviation of 1.

    :param int features: the number of data features D
    :param bool inverse: map network outputs to the data's units instead of data to unit scale

    References: T. Salimans, D. P. Kingma, "Weight normalization", NeurIPS 2016 (data-dependent
    initialisation); D. P. Kingma, P. Dhariwal, "Glow", NeurIPS 2018 (actnorm).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, features: int, inverse: bool = False) -> None:
        super().__init__()
        if int(features) != features or features < 1:
            raise ValueError(f"Expected features >= 1 but got {features}")
        self.features = int(features)
        self.inverse = bool(inverse)
        self.register_buffer("mean", torch.zeros(self.features))
        self.register_buffer("std", torch.ones(self.features))
        self._started = False

    @property
    def started(self) -> bool:
        """Whether the mean and standard deviation have been measured (or loaded)."""
        return self._started

    @torch.no_grad()
    def initialize(self, x: torch.Tensor) -> None:
        """Measure the mean and standard deviation of the batch ``x`` ``(N, features)``, once."""
        if self._started:
            return
        flat = x.detach().reshape(x.shape[0], -1).to(torch.float64)
        if flat.shape[0] < 2 or flat.shape[1] != self.features:
            raise DataError(
                f"Standardize({self.features}) measures the data on its first batch and needs "
                f"at least two points of {self.features} features, but got shape "
                f"{tuple(x.shape)}; train or evaluate on a larger first batch"
            )
        if not torch.isfinite(flat).all():
            raise DataError("the data hold NaN or infinite values; clean them before training")
        std = flat.std(0, unbiased=False)
        std = torch.where(std > 0, std, torch.ones_like(std))
        self.mean.copy_(flat.mean(0).to(self.mean))
        self.std.copy_(std.to(self.std))
        self._started = True

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(self._started)  # saved with the weights: a loaded model is measured

    def set_extra_state(self, state: Any) -> None:
        self._started = bool(state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._started:
            raise ConfigError(
                "Standardize has not measured the data: a pyro_lvae VAE does so at its first "
                "batch of data, so one that has seen none cannot generate yet; call "
                "vae.initialize(x) with training data (or layer.initialize(x) in your own "
                "network), or build it with standardize=False"
            )
        if not self.inverse:
            return (x - self.mean) / self.std
        head = self.mean + self.std * x[..., : self.features]
        if x.shape[-1] == self.features:
            return head
        return torch.cat([head, x[..., self.features:]], dim=-1)

    def extra_repr(self) -> str:
        return f"features={self.features}, inverse={self.inverse}"


class Log1p(nn.Module):
    """``log(1 + x)``: the input layer of an encoder of counts (:func:`pyro_lvae.mlp_vae` puts
    it first for the count models), which are heavy-tailed where their logarithm is not. It has
    no weights; a :class:`Standardize` after it in the same ``nn.Sequential`` measures the
    transformed data (:func:`initialize_from_data`). Defined for ``x > -1`` (counts are
    ``>= 0``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log1p(x)


def initialize_from_data(module: nn.Module, x: torch.Tensor) -> None:
    """Give every :class:`Standardize` inside ``module`` that has no measure yet the measure of
    the batch ``x``, transformed by the :class:`Log1p` layers before it in the same
    ``nn.Sequential``."""
    inputs: dict[int, torch.Tensor] = {}
    for m in module.modules():
        if isinstance(m, nn.Sequential):
            y = x
            for child in m:
                if isinstance(child, Log1p):
                    with torch.no_grad():
                        y = child(y)
                elif isinstance(child, Standardize):
                    inputs.setdefault(id(child), y)
    for m in module.modules():
        if isinstance(m, Standardize):
            m.initialize(inputs.get(id(m), x))


class ResidualBlock(nn.Module):
    """``h + W2 act(W1 act(h))``: a pre-activation residual block of constant width."""

    def __init__(self, width: int, activation: str = "relu") -> None:
        super().__init__()
        self.act = _activation(activation)
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.act(h))))


class ResidualMLP(nn.Module):
    """A residual MLP: a linear map to ``hidden`` units, ``blocks`` residual blocks, a linear
    read-out. Any leading batch shape is accepted.

    :param int in_features: input size
    :param int out_features: output size
    :param int hidden: width of the residual blocks (the paper: 200)
    :param int blocks: number of residual blocks (the paper: 4)
    :param str activation: one of :data:`ACTIVATIONS`
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        hidden: int = 200,
        blocks: int = 4,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features),
                            ("hidden", hidden)):
            if int(value) != value or value < 1:
                raise ValueError(f"Expected {name} >= 1 but got {value}")
        if int(blocks) != blocks or blocks < 0:
            raise ValueError(f"Expected blocks >= 0 but got {blocks}")
        block = 2 * hidden * (hidden + 1)
        count = hidden * (in_features + 1) + blocks * block + out_features * (hidden + 1)
        check_parameters("hidden", hidden, hidden * (in_features + out_features) + block,
                         f"a residual MLP {in_features} -> {out_features}")
        check_parameters("blocks", blocks, count, f"{blocks} residual blocks of width {hidden}",
                         modules=blocks)
        self.inp = nn.Linear(in_features, hidden)
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, activation) for _ in range(blocks)))
        self.act = _activation(activation)
        self.out = nn.Linear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.act(self.blocks(self.inp(x))))


class GaussianEncoder(nn.Module):
    """Wraps a network with ``2 * latent_dim`` outputs as ``x -> (loc, scale)`` of ``q(z | x)``.

    ``scale = softplus(raw) + min_scale``.

    :param nn.Module net: maps a batch of data to ``(batch, 2 * latent_dim)``
    :param int latent_dim: K
    :param float min_scale: floor on the posterior scale
    """

    def __init__(self, net: nn.Module, latent_dim: int, min_scale: float = 1e-4) -> None:
        super().__init__()
        self.net = net
        self.latent_dim = latent_dim
        self.min_scale = min_scale

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(x)
        if out.shape[-1] != 2 * self.latent_dim:
            raise ValueError(
                f"encoder network returned {out.shape[-1]} features; expected 2 * latent_dim = "
                f"{2 * self.latent_dim}"
            )
        loc, raw = out.split(self.latent_dim, dim=-1)
        return loc, F.softplus(raw) + self.min_scale


def _check_image_shape(image_shape: tuple[int, ...], convs: int) -> tuple[int, int, int]:
    if (len(image_shape) != 3 or not all(isinstance(s, Integral) and not isinstance(s, bool)
                                         for s in image_shape) or min(image_shape) < 1):
        raise ValueError(f"Expected image_shape (channels, height, width) but got {image_shape}")
    if not isinstance(convs, Integral) or convs < 1:
        raise ValueError(f"Expected convs >= 1 but got {convs}")
    c, h, w = (int(s) for s in image_shape)
    if convs > max(h, w).bit_length():
        raise ValueError(f"Expected at most {max(h, w).bit_length()} convolutions for "
                         f"{h}x{w} images (each further one halves them) but got convs={convs}")
    factor = 2 ** (convs - 1)
    if h % factor or w % factor:
        raise ValueError(
            f"Expected height and width divisible by 2^(convs - 1) = {factor} but got {h}x{w}; "
            f"use fewer convolutions or pad the images"
        )
    return c, h, w


def _check_conv_size(image_shape: tuple[int, int, int], ends: int, width: int, convs: int,
                     blocks: int) -> None:
    """Refuse a convolutional network whose parameters would not fit in memory: ``ends`` is the
    size of its linear end (the encoder's outputs, the decoder's latent size)."""
    c, h, w = image_shape
    if not isinstance(width, Integral) or width < 1:
        raise ValueError(f"Expected width >= 1 but got {width}")
    if not isinstance(blocks, Integral) or blocks < 0:
        raise ValueError(f"Expected blocks >= 0 but got {blocks}")
    width, convs = int(width), int(convs)
    factor = 2 ** (convs - 1)
    ch = width * factor  # the channels of the smallest feature map
    convolutions = 9 * c * width + sum(16 * 2 * (width << i) ** 2 for i in range(convs - 1))
    linear = ch * (h // factor) * (w // factor) * (ends + 1)
    block = 2 * (9 * ch * ch + ch)
    check_parameters("width", width, convolutions + linear + block,
                     f"a convolutional network for {c}x{h}x{w} images")
    check_parameters("blocks", blocks, convolutions + linear + blocks * block,
                     f"{blocks} residual blocks of {ch} channels", modules=blocks)


class ConvResidualBlock(nn.Module):
    """``h + conv(act(conv(act(h))))`` with 3x3 convolutions of constant width; the second
    convolution starts at zero, so every block starts as the identity."""

    def __init__(self, channels: int, activation: str = "silu") -> None:
        super().__init__()
        self.act = _activation(activation)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.conv2(self.act(self.conv1(self.act(h))))


class ConvEncoder(nn.Module):
    """Convolutional ResNet encoder: ``convs`` convolutions (the first keeps the resolution, each
    further one halves it and doubles the channels), ``blocks`` residual blocks, a linear
    read-out. The paper's MNIST encoder is ``convs=3, blocks=4``; its CelebA one
    ``convs=4, blocks=5``.

    :param tuple image_shape: ``(channels, height, width)``
    :param int out_features: outputs (``2 * latent_dim`` for a Gaussian encoder)
    :param int width: channels after the first convolution
    """

    def __init__(self, image_shape: tuple[int, int, int], out_features: int, width: int = 32,
                 convs: int = 3, blocks: int = 4, activation: str = "silu") -> None:
        super().__init__()
        c, h, w = _check_image_shape(tuple(image_shape), convs)
        _check_conv_size((c, h, w), out_features, width, convs, blocks)
        layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1)]
        ch = width
        for _ in range(convs - 1):
            layers += [_activation(activation), nn.Conv2d(ch, 2 * ch, 4, stride=2, padding=1)]
            ch *= 2
        layers += [ConvResidualBlock(ch, activation) for _ in range(blocks)]
        layers += [_activation(activation), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        factor = 2 ** (convs - 1)
        self.out = nn.Linear(ch * (h // factor) * (w // factor), out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.features(x))


class ConvDecoder(nn.Module):
    """The mirror of :class:`ConvEncoder`: a linear map to the smallest feature map, ``blocks``
    residual blocks, ``convs - 1`` transposed convolutions (each doubling the resolution) and a
    last convolution to ``out_channels``.

    :param int latent_dim: K
    :param tuple image_shape: ``(channels, height, width)`` of the data
    :param int out_channels: output channels (``k * channels`` for an observation model with
        ``k`` outputs per channel)
    """

    def __init__(self, latent_dim: int, image_shape: tuple[int, int, int], out_channels: int,
                 width: int = 32, convs: int = 3, blocks: int = 4,
                 activation: str = "silu") -> None:
        super().__init__()
        _, h, w = _check_image_shape(tuple(image_shape), convs)
        _check_conv_size((out_channels, h, w), latent_dim, width, convs, blocks)
        factor = 2 ** (convs - 1)
        ch = width * factor
        self.shape = (ch, h // factor, w // factor)
        self.inp = nn.Linear(latent_dim, ch * self.shape[1] * self.shape[2])
        layers: list[nn.Module] = [ConvResidualBlock(ch, activation) for _ in range(blocks)]
        for _ in range(convs - 1):
            layers += [_activation(activation),
                       nn.ConvTranspose2d(ch, ch // 2, 4, stride=2, padding=1)]
            ch //= 2
        layers += [_activation(activation), nn.Conv2d(ch, out_channels, 3, padding=1)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.layers(self.inp(z).reshape((-1,) + self.shape))
