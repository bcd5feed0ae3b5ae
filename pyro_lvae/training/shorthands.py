"""The keyword arguments that :func:`pyro_lvae.fit` took before the training tools
(:mod:`.tools`), kept for one release: each builds its tool, with a DeprecationWarning that
names the replacement. This module goes when they do."""

from __future__ import annotations

import warnings
from typing import Any

from ..errors import ConfigError
from .averaging import AveragedWeights, parse_average
from .heldout import HeldOutEvaluation
from .schedules import LRSchedule
from .tools import Callback, Checkpoints, Checks, ClipGradNorm, ProgressBar, Tool, Validation

__all__ = ["tools_from_shorthands"]

#: fit's keyword arguments before the training tools, and the tool each one builds
_SHORTHANDS = {
    "progress": "ProgressBar(progress)",
    "check_every": "Checks(every=..., on_divergence=..., max_rollbacks=...)",
    "on_divergence": "Checks(every=..., on_divergence=..., max_rollbacks=...)",
    "max_rollbacks": "Checks(every=..., on_divergence=..., max_rollbacks=...)",
    "checkpoint_every": "Checkpoints(every)",
    "validate": "Validation()",
    "callbacks": "Callback(f) for each function",
    "clip_grad_norm": "ClipGradNorm(max_norm)",
    "lr_schedule": "LRSchedule(schedule, warmup=...)",
    "lr_warmup": "LRSchedule(schedule, warmup=...)",
    "average": "AveragedWeights(average)",
    "heldout": "HeldOutEvaluation(data, every=...)",
    "eval_every": "HeldOutEvaluation(data, every=...)",
}


def tools_from_shorthands(options: dict[str, Any]) -> list[Tool]:
    """The tools that fit's earlier keyword arguments name (each a DeprecationWarning)."""
    unknown = sorted(set(options) - set(_SHORTHANDS))
    if unknown:
        raise TypeError(f"fit() got an unexpected keyword argument {unknown[0]!r}")
    if options:
        replacements = ", ".join(dict.fromkeys(_SHORTHANDS[k] for k in sorted(options)))
        warnings.warn(f"fit's keyword arguments {', '.join(sorted(options))} are deprecated: "
                      f"pass training tools instead, tools=[{replacements}] "
                      f"(pyro_lvae.training)", DeprecationWarning, stacklevel=4)
    o = options
    tools: list[Tool] = []
    if {"check_every", "on_divergence", "max_rollbacks"} & set(o):
        tools.append(Checks(o.get("check_every", 100), o.get("on_divergence", "stop"),
                            o.get("max_rollbacks", 3)))
    if o.get("progress") is not None:
        tools.append(ProgressBar(o["progress"]))
    if o.get("checkpoint_every") is not None:
        tools.append(Checkpoints(o["checkpoint_every"]))
    if o.get("validate"):
        tools.append(Validation())
    for f in o.get("callbacks") or ():
        tools.append(f if isinstance(f, Tool) else Callback(f))
    if o.get("clip_grad_norm") is not None:
        tools.append(ClipGradNorm(o["clip_grad_norm"]))
    if o.get("lr_schedule") is not None or o.get("lr_warmup"):
        tools.append(LRSchedule(o.get("lr_schedule"), o.get("lr_warmup", 0)))
    average = parse_average(o.get("average"))
    if average is not None:
        tools.append(AveragedWeights(average))
    if o.get("heldout") is not None:
        tools.append(HeldOutEvaluation(o["heldout"], o.get("eval_every")))
    elif o.get("eval_every") is not None:
        raise ConfigError("eval_every needs heldout= (the held-out set to evaluate)")
    return tools
