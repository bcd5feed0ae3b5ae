"""The training step of :func:`pyro_lvae.fit`: an ELBO's loss, with its parts, and one
optimiser step.

- By default the loss is :class:`~pyro_lvae.DirectELBO`'s (``Trace_ELBO``'s objective for
  pyro-lvae's own model and guide, without Pyro's tracing), whose parts come with it; where it
  does not apply (:meth:`~pyro_lvae.DirectELBO.why_not`), ``Trace_ELBO``, with a WARNING that
  says why.
- :class:`PyroLoss` computes any other Pyro ELBO's loss on :func:`~pyro_lvae.annealed`
  programs, so beta is an input (exact under the JIT ELBOs too), and records the traces the
  ELBO runs (:class:`TraceRecorder`, a ``poutine.trace`` nested inside the ELBO's own), from
  which :func:`~pyro_lvae.objective.trace_parts` reads the reconstruction and KL parts for the
  history: no second draw and no second pass through the networks.
- :class:`TorchStep` (a torch optimiser over :class:`LossModule`, which DDP can wrap) and
  :class:`SVIStep` (``pyro.infer.SVI``) take one step and return the step's
  :class:`~pyro_lvae.objective.ELBOTerms`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

import pyro
import pyro.optim
import torch
from pyro import poutine
from pyro.infer import (
    SVI,
    Trace_ELBO,
    TraceEnum_ELBO,
    TraceGraph_ELBO,
    TraceMeanField_ELBO,
)
from pyro.poutine.trace_struct import Trace

from ..annealing import annealed
from ..direct_elbo import DirectELBO
from ..errors import ConfigError
from ..objective import ELBOTerms, trace_parts
from ..vae import VAE

__all__ = ["DIRECT", "TraceRecorder", "PartsReader", "PyroLoss", "LossModule", "TorchStep",
           "SVIStep", "build_step"]

logger = logging.getLogger(__name__)

#: the name of the default objective in :attr:`History.objective`
DIRECT = "DirectELBO"


class TraceRecorder:
    """A Pyro program that keeps the trace of each of its runs.

    Called inside an ELBO, its ``poutine.trace`` sits inside the ELBO's own: it records the same
    values, distributions and scales (set by every handler, inner and outer)."""

    def __init__(self, program: Any) -> None:
        self.program = program
        self.traces: list[Trace] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        tracer = poutine.trace(self.program)
        value = tracer(*args, **kwargs)
        self.traces.append(tracer.trace)
        return value

    def take(self, count: int) -> list[Trace]:
        """The last ``count`` runs' traces (earlier ones, such as the ELBO's guess of the plate
        nesting, are dropped); forgets them all."""
        traces, self.traces = self.traces[len(self.traces) - count:], []
        return traces


def _jit(elbo: Any) -> bool:
    return type(elbo).__name__.startswith("Jit")


class PartsReader:
    """The programs an ELBO runs (annealed, recorded where the parts can be read) and the
    parts of each step's loss, read from their traces or NaN (with one INFO line saying why)."""

    def __init__(self, vae: VAE, elbo: Any) -> None:
        kind = type(elbo)
        self.analytic_kl = kind is TraceMeanField_ELBO
        self.enum = kind is TraceEnum_ELBO
        self.reason = None
        if _jit(elbo):
            self.reason = (f"{kind.__name__} runs compiled programs, whose traces are not "
                           f"recorded after the first step")
        elif kind not in (Trace_ELBO, TraceGraph_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO):
            self.reason = f"the loss of {kind.__name__} is not reconstruction + beta * KL"
        model, guide = annealed(vae.model), annealed(vae.guide)
        if self.reason is None:
            model, guide = TraceRecorder(model), TraceRecorder(guide)
        else:
            logger.info("reconstruction and kl are not logged (NaN): %s", self.reason)
        self.model, self.guide = model, guide
        self.particles = int(getattr(elbo, "num_particles", 1))
        #: runs traced per step: all particles in one trace when they are vectorised
        self.runs = 1 if getattr(elbo, "vectorize_particles", False) else self.particles

    def read(self, beta: float, device: torch.device) -> ELBOTerms:
        """The parts of the step just taken (a loss slot of NaN: the caller has the loss)."""
        nan = torch.full((), math.nan, device=device)
        if not isinstance(self.model, TraceRecorder):
            return ELBOTerms(nan, nan, nan, None)
        model_traces = self.model.take(self.runs)
        guide_traces = self.guide.take(self.runs)
        if self.reason is not None:
            return ELBOTerms(nan, nan, nan, None)
        if self.enum and any(site["infer"].get("enumerate")
                             for trace in model_traces + guide_traces
                             for site in trace.nodes.values()):
            self.reason = "TraceEnum_ELBO sums enumerated sites out of the loss"
            logger.info("reconstruction and kl are not logged (NaN): %s", self.reason)
            return ELBOTerms(nan, nan, nan, None)
        with torch.no_grad():
            return trace_parts(model_traces, guide_traces, beta, self.analytic_kl,
                               self.particles)


class PyroLoss:
    """One step of a Pyro ELBO's loss on ``x`` at weight ``beta``, with its parts.

    ELBOs without ``differentiable_loss`` (``RenyiELBO``, ``TraceGraph_ELBO``) run their
    ``loss_and_grads``, which has already back-propagated when this returns."""

    def __init__(self, vae: VAE, elbo: Any) -> None:
        self.elbo = elbo
        self.parts = PartsReader(vae, elbo)
        self.differentiable = hasattr(elbo, "differentiable_loss")
        self.dtype = vae.dtype

    def __call__(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        b = torch.tensor(beta, dtype=self.dtype, device=x.device)
        model, guide = self.parts.model, self.parts.guide
        if self.differentiable:
            loss = self.elbo.differentiable_loss(model, guide, b, x)
        else:
            loss = torch.as_tensor(self.elbo.loss_and_grads(model, guide, b, x),
                                   dtype=self.dtype, device=x.device)
        parts = self.parts.read(beta, x.device)
        return parts._replace(loss=loss)


class LossModule(torch.nn.Module):
    """The step's loss as a module (so that ``DistributedDataParallel`` can wrap it):
    :class:`~pyro_lvae.DirectELBO`'s terms, or a Pyro ELBO's (:class:`PyroLoss`)."""

    def __init__(self, vae: VAE, elbo: Any = None, direct: torch.Tensor | None = None) -> None:
        super().__init__()
        self.vae = vae
        #: DirectELBO's terms, checked once on the first batch ``direct``
        self.direct = (None if direct is None
                       else DirectELBO().prepared(vae.model, vae.guide, direct))
        self.pyro_loss = None if direct is not None else PyroLoss(vae, elbo or Trace_ELBO())

    def forward(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        if self.direct is not None:
            return self.direct(x, beta)
        return self.pyro_loss(x, beta)


class TorchStep:
    """A step of a torch optimiser on a :class:`LossModule` (possibly DDP-wrapped);
    ``after_backward`` runs between the backward pass and the update (gradient clipping)."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 after_backward: Callable[[], None] | None = None) -> None:
        self.module, self.optimizer = module, optimizer
        self.after_backward = after_backward

    def __call__(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.module(x, beta)
        if terms.loss.requires_grad:
            terms.loss.backward()
        if self.after_backward is not None:
            self.after_backward()
        self.optimizer.step()
        return terms._replace(loss=terms.loss.detach(),
                              reconstruction=terms.reconstruction.detach(),
                              kl=terms.kl.detach())


class SVIStep:
    """A step of ``pyro.infer.SVI`` with a ``pyro.optim`` optimiser."""

    def __init__(self, vae: VAE, optimizer: pyro.optim.PyroOptim, elbo: Any) -> None:
        self.parts = PartsReader(vae, elbo)
        self.svi = SVI(self.parts.model, self.parts.guide, optimizer, loss=elbo)
        self.dtype = vae.dtype

    def __call__(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        b = torch.tensor(beta, dtype=self.dtype, device=x.device)
        loss = torch.as_tensor(self.svi.step(b, x), dtype=self.dtype, device=x.device)
        return self.parts.read(beta, x.device)._replace(loss=loss)


def build_step(vae: VAE, x: torch.Tensor, optimizer: Any, elbo: Any, world: int = 1,
               after_backward: Callable[[], None] | None = None) -> tuple[Any, str]:
    """The step function for this run and the name of its objective (for
    :attr:`History.objective`): ``elbo`` (a Pyro ELBO) if given, else
    :class:`~pyro_lvae.DirectELBO` where it applies to ``vae`` on the first batch ``x``, else
    ``Trace_ELBO`` with a WARNING that says why. With several processes the loss module is
    wrapped in ``DistributedDataParallel``."""
    if isinstance(optimizer, pyro.optim.PyroOptim):
        elbo = elbo if elbo is not None else Trace_ELBO()
        return SVIStep(vae, optimizer, elbo), f"pyro {type(elbo).__name__}"
    if elbo is not None and not isinstance(elbo, DirectELBO):
        if world > 1:
            raise ConfigError("distributed training uses fit's own ELBO step; elbo= is not "
                              "supported with several processes")
        return (TorchStep(LossModule(vae, elbo), optimizer, after_backward),
                f"pyro {type(elbo).__name__}")
    reason = DirectELBO.why_not(vae.model, vae.guide, x)
    if elbo is not None:  # asked for by name: exact or an error
        if reason is not None:
            raise ConfigError(f"elbo=DirectELBO() cannot train this model exactly: {reason}")
        if elbo.num_particles != 1:
            raise ConfigError("fit trains DirectELBO with one particle; for several use "
                              "pyro.infer.SVI with DirectELBO(num_particles=...)")
    elif reason is not None:
        logger.warning("training on Trace_ELBO through Pyro, not DirectELBO: %s", reason)
    direct = reason is None
    module: torch.nn.Module = LossModule(vae, direct=x if direct else None)
    if world > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[x.device.index] if x.device.type == "cuda" else None)
    return TorchStep(module, optimizer, after_backward), (DIRECT if direct
                                                          else "pyro Trace_ELBO")
