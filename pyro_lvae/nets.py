"""Plain torch networks for encoders and decoders (no Pyro calls here).

The paper's networks for the artificial problem are residual MLPs with 4 blocks of 200 units
(:class:`ResidualMLP`). :class:`GaussianEncoder` turns any network with ``2 * latent_dim``
outputs into a conditional diagonal Normal ``q(z | x)``, floored so that its scale never
reaches zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ResidualBlock", "ResidualMLP", "GaussianEncoder", "ACTIVATIONS"]

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
