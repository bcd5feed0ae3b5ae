"""Observation models p(x | z): the part of a VAE that the L-VAE variants change.

An observation model turns the decoder's output into a distribution over one data point, with
the full log-density (constants and ``log sigma`` included), so that the ELBOs of fixed-scale and
learned-scale models compare directly. The variants of Berger & Sebag differ only here:

=====================================  ========================================================
:class:`FixedScale`                    F-VAE: ``N(mu(z), sigma^2)`` with a fixed sigma (F*-VAE)
:class:`LearnedScalarScale`            LS-VAE (their Eq. 10): one learned sigma, a ``PyroParam``
:class:`LearnedChannelScale`           a learned sigma per channel (image channel, table column)
:class:`LearnedVectorScale`            LV-VAE (their Eq. 11): the decoder outputs a sigma per
                                       dimension (per pixel for images)
:class:`ScheduledScale`                a fixed sigma that follows a per-step schedule
:class:`BernoulliObservation`          Bernoulli logits, for binary data only
:class:`ContinuousBernoulliObservation`  continuous Bernoulli, for data in [0, 1]
:class:`MixedObservation`              rows of a table: Normal, Bernoulli and Categorical
                                       columns
=====================================  ========================================================

Learned scales are floored at ``min_scale``: on constant or quantised dimensions the Normal
likelihood is unbounded as sigma -> 0, and an unfloored per-dimension sigma shrinks until the
loss turns NaN. The floor keeps the likelihood bounded; set it near the data's quantisation step.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972.
"""

from __future__ import annotations

from typing import Any

import torch

from ..errors import ConfigError
from .base import OBSERVATIONS, Observation
from .binary import BernoulliObservation, ContinuousBernoulliObservation
from .normal import (
    FixedScale,
    LearnedChannelScale,
    LearnedScalarScale,
    LearnedVectorScale,
    ScheduledScale,
    initial_scale,
)

__all__ = [
    "Observation",
    "FixedScale",
    "LearnedScalarScale",
    "LearnedChannelScale",
    "LearnedVectorScale",
    "ScheduledScale",
    "BernoulliObservation",
    "ContinuousBernoulliObservation",
    "observation_from_config",
    "OBSERVATIONS",
    "initial_scale",
]


def observation_from_config(config: dict[str, Any]) -> Observation:
    """Rebuild an observation model from :meth:`Observation.config` (weights not included)."""
    from .. import tabular  # noqa: F401  (registers the table model, "mixed")

    config = dict(config)
    kind = config.pop("kind", None)
    if kind not in OBSERVATIONS:
        raise ConfigError(
            f"unknown observation model {kind!r}; expected one of {', '.join(OBSERVATIONS)}"
        )
    if kind == "scheduled":
        return ScheduledScale(torch.ones(int(config["length"])))
    return OBSERVATIONS[kind](**config)
