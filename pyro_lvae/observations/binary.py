"""Observation models for binary data and for grey levels in [0, 1]."""

from __future__ import annotations

from typing import Any

import pyro.distributions as dist
import torch

from ..errors import DataError
from .base import Observation

__all__ = ["BernoulliObservation", "ContinuousBernoulliObservation"]


class BernoulliObservation(Observation):
    """``p(x | z) = Bernoulli(logits = decoder(z))``, for binary data (0 or 1) only.

    Non-binary data are refused (with Pyro's validation on, and by :func:`pyro_lvae.fit` on the
    first batch): a Bernoulli likelihood on grey levels is not a density of those data.
    Binarise them (:class:`pyro_lvae.datasets.Binarize`) or use
    :class:`ContinuousBernoulliObservation` or a Normal model.
    """

    kind = "bernoulli"
    label, binary = "Bernoulli", True

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.Bernoulli(logits=output).to_event(event_dim)

    def check_support(self, x: torch.Tensor) -> None:
        if not bool(((x == 0) | (x == 1)).all()):
            raise DataError(
                "the Bernoulli observation model needs binary data (0 or 1) but got other "
                "values; binarise the data (for instance x > 0.5) or use "
                "ContinuousBernoulliObservation or a Normal model for grey levels"
            )

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}


class ContinuousBernoulliObservation(Observation):
    """``p(x | z) = ContinuousBernoulli(logits = decoder(z))`` (Loaiza-Ganem & Cunningham 2019):
    a normalised density on [0, 1], for grey levels scaled to [0, 1]."""

    kind = "continuous-bernoulli"
    label = "continuous Bernoulli"

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        return dist.ContinuousBernoulli(logits=output).to_event(event_dim)

    def check_support(self, x: torch.Tensor) -> None:
        if not bool(((x >= 0) & (x <= 1)).all()):
            raise DataError(
                f"the continuous Bernoulli observation model needs data in [0, 1] but got values "
                f"in [{float(x.min()):.3g}, {float(x.max()):.3g}]; scale the data to [0, 1]"
            )

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}
