"""Exceptions raised by pyro-lvae.

Every error a user can cause (bad data, impossible settings, unreadable files, a diverging run)
is one of these, with a message that names the problem and the fix. The command line prints the
message on one line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import math


class LVAEError(Exception):
    """Base class of the errors a user can cause."""


class ConfigError(LVAEError, ValueError):
    """An argument or setting is invalid (a negative scale, an unknown variant, ...)."""


class NotInitialized(ConfigError):
    """A query on a VAE whose data-dependent state (a learned sigma's data start, a VampPrior's
    pseudo-inputs, standardising layers) has not been measured yet: call
    ``vae.initialize(x)`` with a batch of training data first (training does it at its first
    batch)."""


class DataError(LVAEError, ValueError):
    """Data have the wrong shape, type or values (NaN, Inf, empty, outside the support)."""


class CheckpointError(LVAEError, OSError):
    """A checkpoint or model file is missing, unreadable, corrupt or from another setup."""


class TrainingDiverged(LVAEError, RuntimeError):
    """The loss or the parameters became NaN or infinite during training."""


def check_positive_int(name: str, value: object) -> int:
    """``value`` if it is an integer >= 1 (not a bool); else a :class:`ConfigError` naming
    ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"Expected {name} to be an integer >= 1 but got {value!r}")
    return value


def check_positive(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0; else a :class:`ConfigError` naming
    ``name``."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"Expected {name} to be a positive number but got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"Expected {name} > 0 (and finite) but got {number}")
    return number
