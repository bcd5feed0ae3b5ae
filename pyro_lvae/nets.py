"""Plain torch networks for encoders and decoders (no Pyro calls here).

The paper's networks for the artificial problem are residual MLPs with 4 blocks of 200 units
(:class:`ResidualMLP`); for images, convolutional ResNets (:class:`ConvEncoder`,
:class:`ConvDecoder`). :class:`GaussianEncoder` turns any network with ``2 * latent_dim``
outputs into a conditional diagonal Normal ``q(z | x)``, floored so that its scale never
reaches zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualBlock", "ResidualMLP", "GaussianEncoder", "ConvResidualBlock", "ConvEncoder",
           "ConvDecoder", "ACTIVATIONS"]

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
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"Expected image_shape (channels, height, width) but got {image_shape}")
    if convs < 1:
        raise ValueError(f"Expected convs >= 1 but got {convs}")
    c, h, w = image_shape
    factor = 2 ** (convs - 1)
    if h % factor or w % factor:
        raise ValueError(
            f"Expected height and width divisible by 2^(convs - 1) = {factor} but got {h}x{w}; "
            f"use fewer convolutions or pad the images"
        )
    return c, h, w


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
