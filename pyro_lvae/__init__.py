"""pyro-lvae: learnable observation models for variational auto-encoders in Pyro.

A VAE fails when the sharpness of its observation model p(x|z) (1/sigma for a Normal) does not
match the scale of the data; a VAE that learns its sharpness anneals itself and escapes the bad
optima a fixed sigma falls into (Berger & Sebag, arXiv:2003.01972). This package makes the
observation model a swappable, learnable part of any Pyro model/guide pair.

**References**

- V. Berger, M. Sebag. *Variational Auto-Encoders: Not all failures are equal*. arXiv:2003.01972.
"""

from . import datasets, evaluate, objective, priors, tabular, theory
from .annealing import (
    BetaSchedule,
    ConstantBeta,
    CyclicalWarmup,
    LinearWarmup,
    SigmoidWarmup,
    annealed,
    parse_schedule,
    weight_latents,
)
from .direct_elbo import DirectELBO
from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    LVAEError,
    NotInitialized,
    TrainingDiverged,
)
from .geco import GECO
from .nets import GaussianEncoder, ResidualMLP
from .observations import (
    BernoulliObservation,
    CalibratedScale,
    ContinuousBernoulliObservation,
    DiscretizedLogistic,
    DiscretizedLogisticMixture,
    DiscretizedNormal,
    FixedScale,
    LearnedChannelScale,
    LearnedScalarScale,
    LearnedVectorScale,
    LowRankNormal,
    MixedObservation,
    NegativeBinomialCounts,
    Observation,
    PoissonCounts,
    ScheduledScale,
    StudentTObservation,
    ZeroInflatedNBCounts,
    initial_scale,
)
from .priors import FlowPrior, MixturePrior, Prior, StandardNormal, VampPrior
from .registry import deprecated_aliases
from .training import History, fit, fused_adam
from .vae import VAE, Guide, Model, conv_vae, fixed_star, mlp_vae, rebuild

__version__ = "0.1.0"


def load(path, map_location=None) -> VAE:
    """Load a VAE saved by :meth:`VAE.save` or a training checkpoint (see :meth:`VAE.load`)."""
    return VAE.load(path, map_location=map_location)


__all__ = [
    "VAE", "Model", "Guide", "mlp_vae", "conv_vae", "fixed_star", "rebuild", "load",
    "Observation", "FixedScale", "LearnedScalarScale", "LearnedChannelScale",
    "LearnedVectorScale", "ScheduledScale", "BernoulliObservation",
    "ContinuousBernoulliObservation", "MixedObservation", "DiscretizedNormal",
    "DiscretizedLogistic", "DiscretizedLogisticMixture", "CalibratedScale",
    "StudentTObservation", "LowRankNormal", "PoissonCounts", "NegativeBinomialCounts",
    "ZeroInflatedNBCounts", "initial_scale", "tabular",
    "Prior", "StandardNormal", "MixturePrior", "VampPrior", "FlowPrior", "priors",
    "weight_latents", "annealed", "BetaSchedule", "ConstantBeta", "LinearWarmup",
    "SigmoidWarmup", "CyclicalWarmup",
    "parse_schedule", "GECO", "fit", "fused_adam", "History", "GaussianEncoder", "ResidualMLP",
    "DirectELBO", "datasets", "evaluate", "objective", "theory",
    "LVAEError", "ConfigError", "DataError", "CheckpointError", "TrainingDiverged",
    "NotInitialized",
]

#: the former names, kept for one release (a ``DeprecationWarning`` names the new one)
__getattr__ = deprecated_aliases(__name__, {
    "scale_latents": "weight_latents", "Constant": "ConstantBeta", "Sigmoid": "SigmoidWarmup",
    "Cyclical": "CyclicalWarmup"}, globals())
