"""Exceptions raised by pyro-lvae.

Every error a user can cause (bad data, impossible settings, unreadable files, a diverging run)
is one of these, with a message that names the problem and the fix. The command line prints the
message on one line and exits with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import math
import operator


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


def as_integer(value: object) -> int | None:
    """``value`` as a Python int if it is an integer: an ``int``, a numpy integer, or a 0-d
    integer array or tensor (``np.int64(5)``, ``torch.tensor(5)``); ``None`` for anything
    else, booleans and floats (even integral ones, ``5.0``) included."""
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
        return None
    if getattr(value, "ndim", 0) != 0:
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_int(name: str, value: object, least: int = 1, most: int | None = None) -> int:
    """``value`` as a Python int if it is an integer >= ``least`` (and <= ``most`` where
    given; :func:`as_integer`: numpy integers and 0-d integer tensors count, booleans and
    floats do not); else a :class:`ConfigError` naming ``name``."""
    number = as_integer(value)
    if most is not None and (number is None or not least <= number <= most):
        raise ConfigError(f"Expected {name} to be an integer in [{least}, {most}] but got "
                          f"{value!r}")
    if number is None or number < least:
        raise ConfigError(f"Expected {name} to be an integer >= {least} but got {value!r}")
    return number


def check_positive_int(name: str, value: object) -> int:
    """``value`` as a Python int if it is an integer >= 1 (:func:`check_int`: numpy integers
    and 0-d integer tensors count, booleans and floats do not); else a :class:`ConfigError`
    naming ``name``."""
    return check_int(name, value, 1)


def check_positive(name: str, value: object) -> float:
    """``value`` as a float if it is a finite number > 0 (numpy numbers and 0-d tensors count,
    booleans do not); else a :class:`ConfigError` naming ``name``."""
    try:
        if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
            raise TypeError
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, RuntimeError):
        raise ConfigError(f"Expected {name} to be a positive number but got {value!r}") from None
    if not math.isfinite(number) or number <= 0:
        raise ConfigError(f"Expected {name} > 0 (and finite) but got {number}")
    return number
