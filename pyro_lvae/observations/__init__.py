"""Observation models p(x | z): the part of a VAE that the L-VAE variants change.

An observation model turns the decoder's output into a distribution over one data point, with
the full log-density (constants and ``log sigma`` included), so that the ELBOs of fixed-scale and
learned-scale models compare directly. The variants of Berger & Sebag differ only here:

=======================================  ========================================================
:class:`FixedScale`                      F-VAE: ``N(mu(z), sigma^2)`` with a fixed sigma (F*-VAE)
:class:`LearnedScalarScale`              LS-VAE (their Eq. 10): one learned sigma, a ``PyroParam``
:class:`LearnedChannelScale`             a learned sigma per channel (image channel, table column)
:class:`LearnedVectorScale`              LV-VAE (their Eq. 11): the decoder outputs a sigma per
                                         dimension (per pixel for images)
:class:`ScheduledScale`                  a fixed sigma that follows a per-step schedule
:class:`BernoulliObservation`            Bernoulli logits, for binary data only
:class:`ContinuousBernoulliObservation`  continuous Bernoulli, for data in [0, 1]
:class:`DiscretizedNormal`               the mass of a Normal on each of the 256 bins of an
                                         8-bit value ``k / 255`` (scale per pixel from the decoder)
:class:`DiscretizedLogistic`             the same for a logistic (PixelCNN++)
:class:`DiscretizedLogisticMixture`      a mixture of discretised logistics per pixel
:class:`CalibratedScale`                 sigma-VAE: one sigma set to the batch's RMSE at every
                                         training step, no gradient through it
:class:`StudentTObservation`             Student-t, scale per dimension from the decoder,
                                         learned degrees of freedom (outliers)
:class:`LowRankNormal`                   ``N(mu, W W^T + diag d^2)`` over the whole data point,
                                         ``W`` of rank r from the decoder (the manifold's tangent)
:class:`MixedObservation`                rows of a table: Normal, Bernoulli and Categorical
                                         columns
:class:`PoissonCounts`                   Poisson counts, mean in scVI's form (softmax times the
                                         observed library size) or plain
:class:`NegativeBinomialCounts`          negative binomial counts, inverse dispersion theta fixed,
                                         learned per dimension or from the decoder
:class:`ZeroInflatedNBCounts`            zero-inflated NB, the gate logit from the decoder
=======================================  ========================================================

Every model is registered by its ``kind`` (the command-line name); :func:`build` makes one from
its kind and keyword settings, and :func:`describe` says how studies and figures present it:

================================  ==========================  ======================================
kind                              class                       settings
================================  ==========================  ======================================
``fixed``                         FixedScale                  scale
``learned-scalar``                LearnedScalarScale          init_scale, min_scale
``learned-channel``               LearnedChannelScale         channels, init_scale, min_scale
``learned-vector``                LearnedVectorScale          init_scale, min_scale, beta_nll
``scheduled``                     ScheduledScale              schedule
``bernoulli``                     BernoulliObservation        (none)
``continuous-bernoulli``          ContinuousBernoulli..       (none)
``discretized-normal``            DiscretizedNormal           init_scale
``discretized-logistic``          DiscretizedLogistic         init_scale
``discretized-logistic-mixture``  DiscretizedLogisticMixture  components, init_scale
``calibrated``                    CalibratedScale             init_scale, min_scale
``student-t``                     StudentTObservation         init_scale, min_scale, init_df, min_df
``low-rank``                      LowRankNormal               rank, init_scale, min_scale
``mixed``                         MixedObservation            schema, sigma_mode, sigma, ...
``poisson``                       PoissonCounts               mean, dims
``negative-binomial``             NegativeBinomialCounts      dispersion, mean, init_theta, dims
``zero-inflated-nb``              ZeroInflatedNBCounts        dispersion, mean, init_theta, dims
================================  ==========================  ======================================

Learned scales are floored at ``min_scale``: on constant or quantised dimensions the Normal
likelihood is unbounded as sigma -> 0, and an unfloored per-dimension sigma shrinks until the
loss turns NaN. The floor keeps the likelihood bounded; set it near the data's quantisation step.
The discretised models need none: a pixel's probability is at most 1.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .base import OBSERVATIONS, Observation
from .binary import BernoulliObservation, ContinuousBernoulliObservation
from .calibrated import CalibratedScale
from .counts import NegativeBinomialCounts, PoissonCounts, ZeroInflatedNBCounts
from .discrete import DiscretizedLogistic, DiscretizedLogisticMixture, DiscretizedNormal
from .lowrank import LowRankNormal
from .normal import (
    BetaNLLNormal,
    FixedScale,
    LearnedChannelScale,
    LearnedScalarScale,
    LearnedVectorScale,
    ScheduledScale,
    initial_scale,
)
from .student import StudentTObservation
from .table import SIGMA_MODES, MixedColumns, MixedObservation

__all__ = [
    "Observation",
    "FixedScale",
    "LearnedScalarScale",
    "LearnedChannelScale",
    "LearnedVectorScale",
    "ScheduledScale",
    "BernoulliObservation",
    "ContinuousBernoulliObservation",
    "DiscretizedNormal",
    "DiscretizedLogistic",
    "DiscretizedLogisticMixture",
    "CalibratedScale",
    "StudentTObservation",
    "LowRankNormal",
    "MixedObservation",
    "MixedColumns",
    "PoissonCounts",
    "NegativeBinomialCounts",
    "ZeroInflatedNBCounts",
    "SIGMA_MODES",
    "BetaNLLNormal",
    "observation_from_config",
    "OBSERVATIONS",
    "build",
    "settings_of",
    "describe",
    "Variant",
    "initial_scale",
]


def settings_of(kind: str) -> tuple[str, ...]:
    """The keyword settings :func:`build` accepts for ``kind``, in the class's order.

    :param str kind: a registered kind (a key of :data:`OBSERVATIONS`)

    Example::

        >>> from pyro_lvae import observations
        >>> observations.settings_of("learned-channel")
        ('channels', 'init_scale', 'min_scale')
    """
    return OBSERVATIONS.settings_of(kind)


def build(kind: str, **settings: Any) -> Observation:
    """The observation model registered as ``kind``, made from keyword settings.

    This is the one place where a variant's name becomes its model: the command line, the
    studies and the benchmarks all call it (:meth:`OBSERVATIONS.build
    <pyro_lvae.registry.Registry.build>`). Each class takes only its own settings
    (:func:`settings_of`): ``scale`` (``fixed``), ``init_scale`` and ``min_scale`` (the learned
    kinds), ``channels`` (``learned-channel``), ``schedule`` (``scheduled``).

    :param str kind: a registered kind (a key of :data:`OBSERVATIONS`)
    :param settings: the class's keyword arguments
    :raises ConfigError: for an unknown kind, a setting the class does not take, or a missing
        required one (the message names the kind and the settings it takes)

    Example::

        >>> from pyro_lvae import observations
        >>> obs = observations.build("learned-scalar", init_scale=0.5, min_scale=0.01)
        >>> type(obs).__name__, obs.config()["init_scale"]
        ('LearnedScalarScale', 0.5)
    """
    return OBSERVATIONS.build(kind, **settings)


@dataclass(frozen=True)
class Variant:
    """How studies, figures and the command line present a registered observation model (read
    from the class attributes of the same names).

    :param str kind: the registered kind
    :param str label: the name of the VAE built with it (the paper's F-VAE, LS-VAE, LV-VAE)
    :param bool learned: sigma is trained with the networks
    :param bool constant: sigma is one constant that the user sets (F-VAE)
    :param bool shared: one sigma for every data dimension at each step, a trajectory that
        :class:`ScheduledScale` can replay
    :param bool binary: the model needs binary data (0 or 1)
    :param bool discrete: the model is a probability mass on the 8-bit levels ``k / 255``
        (images as :class:`pyro_lvae.datasets.UnitLevels` makes them); its negative log-likelihood
        is a code length, so bits/dim need no dequantisation offset
    """

    kind: str
    label: str
    learned: bool = False
    constant: bool = False
    shared: bool = False
    binary: bool = False
    discrete: bool = False


def _variant(kind: str, cls: type[Observation]) -> Variant:
    return Variant(kind, cls.label or cls.__name__, learned=cls.learned, constant=cls.constant,
                   shared=cls.shared, binary=cls.binary, discrete=cls.discrete)


OBSERVATIONS.display = _variant


def describe(kind: str) -> Variant:
    """The display properties of the observation model registered as ``kind``.

    Example::

        >>> from pyro_lvae import observations
        >>> v = observations.describe("learned-vector")
        >>> v.label, v.learned, v.shared
        ('LV-VAE', True, False)
    """
    return OBSERVATIONS.describe(kind)


def observation_from_config(config: dict[str, Any]) -> Observation:
    """Rebuild an observation model from :meth:`Observation.config` (weights not included)."""
    config = dict(config)
    kind = OBSERVATIONS.resolve(config.pop("kind", None))
    from_config = getattr(OBSERVATIONS[kind], "from_config", None)
    if from_config is not None:  # a model whose saved form is not its keyword settings
        return from_config(config)
    if kind == "scheduled":  # the schedule itself is a buffer, restored with the weights
        return build(kind, schedule=torch.ones(int(config["length"])))
    return build(kind, **config)
