"""The training step of :func:`pyro_lvae.fit`: Pyro's objective, with its parts read off the
step's own traces, and a verified direct computation of it for pyro-lvae's own VAE.

- :class:`PyroLoss` computes an ELBO's loss (``Trace_ELBO`` by default) on
  :func:`~pyro_lvae.annealed` programs, so beta is an input (exact under the JIT ELBOs too), and
  records the traces the ELBO runs (:class:`TraceRecorder`, a ``poutine.trace`` nested inside the
  ELBO's own), from which :func:`~pyro_lvae.objective.trace_parts` reads the reconstruction and
  KL parts: no second draw and no second pass through the networks.
- :func:`verify_direct` checks on the first batch that
  :func:`~pyro_lvae.objective.direct_elbo_terms` is ``Trace_ELBO``'s objective for this VAE
  under the handlers fit runs in: the traces hold exactly the sites it knows, and its loss and
  gradients equal ``Trace_ELBO().differentiable_loss`` on the same draws. It leaves no trace on
  the run (random states and buffers restored, no update). Its verdict is kept for the VAE and
  reused while its modules, parameters and data shape stay the same and no handler surrounds
  fit.
- :class:`TorchStep` (a torch optimiser over :class:`LossModule`, which DDP can wrap) and
  :class:`SVIStep` (``pyro.infer.SVI``) take one step and return the step's
  :class:`~pyro_lvae.objective.ELBOTerms`.
"""

from __future__ import annotations

import logging
import math
import weakref
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
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_struct import Trace

from ..annealing import annealed
from ..errors import ConfigError
from ..objective import ELBOTerms, direct_elbo_terms, direct_mismatch, trace_parts
from ..vae import VAE
from .distributed import gather_objects

__all__ = ["DIRECT", "TraceRecorder", "PartsReader", "PyroLoss", "LossModule", "TorchStep",
           "SVIStep", "verify_direct", "build_step"]

logger = logging.getLogger(__name__)

#: the name of the verified direct objective (:attr:`History.objective`)
DIRECT = "direct (verified)"

_VERIFIED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


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
    """The step's loss as a module (so that ``DistributedDataParallel`` can wrap it): the
    verified direct computation, or a Pyro ELBO's."""

    def __init__(self, vae: VAE, elbo: Any = None, direct: bool = False) -> None:
        super().__init__()
        self.vae = vae
        self.direct = direct
        self.pyro_loss = None if direct else PyroLoss(vae, elbo or Trace_ELBO())

    def forward(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        if self.direct:
            return direct_elbo_terms(self.vae, x, beta=beta)
        return self.pyro_loss(x, beta)


class TorchStep:
    """A step of a torch optimiser on a :class:`LossModule` (possibly DDP-wrapped); with
    ``clip_grad_norm``, the norm of all the optimiser's gradients together is clipped to it
    first (:func:`torch.nn.utils.clip_grad_norm_`; with several processes, after DDP has
    averaged them, so every rank clips alike)."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 clip_grad_norm: float | None = None) -> None:
        self.module, self.optimizer = module, optimizer
        self.clip_grad_norm = clip_grad_norm
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        #: the last step's total gradient norm before clipping (``None`` without clipping)
        self.grad_norm: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor, beta: float) -> ELBOTerms:
        self.optimizer.zero_grad(set_to_none=True)
        terms = self.module(x, beta)
        if terms.loss.requires_grad:
            terms.loss.backward()
        if self.clip_grad_norm is not None:
            self.grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.clip_grad_norm)
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


def _signature(vae: VAE, x: torch.Tensor) -> tuple:
    """What the direct path's verdict depends on besides the handlers around fit."""
    modules = tuple((name, type(m), id(m)) for name, m in vae.named_modules())
    params = tuple((name, tuple(p.shape), p.requires_grad) for name, p in vae.named_parameters())
    return modules, params, tuple(x.shape[1:]), x.dtype, x.device


def _gradient_difference(names: list[str], grads: tuple, reference: tuple) -> str | None:
    total = math.sqrt(sum(float(r.norm()) ** 2 for r in reference if r is not None))
    for name, g, r in zip(names, grads, reference, strict=True):
        if (g is None) != (r is None):
            return f"only one of the two losses reaches parameter {name}"
        if g is not None and float((g - r).norm()) > 1e-4 * float(r.norm()) + 1e-6 * total:
            return f"its gradient for {name} differs from Trace_ELBO's"
    return None


def _rng_state(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The state of the generators that draw the model's noise on ``x``'s device."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(x.device) if x.is_cuda else None


def _set_rng_state(x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1], x.device)


def _compare(vae: VAE, x: torch.Tensor) -> str | None:
    """Trace_ELBO and the direct loss on the same draws: why they differ, or ``None``."""
    named = [(n, p) for n, p in vae.named_parameters() if p.requires_grad]
    names, params = [n for n, _ in named], [p for _, p in named]
    model, guide = TraceRecorder(vae.model), TraceRecorder(vae.guide)
    rng = _rng_state(x)
    reference = Trace_ELBO().differentiable_loss(model, guide, x)
    reason = direct_mismatch(vae, x, model.take(1)[0], guide.take(1)[0])
    if reason is not None:
        return reason
    reference_grads = torch.autograd.grad(reference, params, allow_unused=True)
    _set_rng_state(x, rng)
    direct = direct_elbo_terms(vae, x).loss
    grads = torch.autograd.grad(direct, params, allow_unused=True)
    ref, got = float(reference.detach()), float(direct.detach())
    if not math.isfinite(ref):
        return f"Trace_ELBO's loss is {ref} on the first batch"
    if not abs(got - ref) <= 1e-5 * max(abs(ref), 1.0):
        return f"its loss {got:.7g} differs from Trace_ELBO's {ref:.7g}"
    return _gradient_difference(names, grads, reference_grads)


def verify_direct(vae: VAE, x: torch.Tensor) -> str | None:
    """Why the direct objective is not ``Trace_ELBO``'s for ``vae`` on the batch ``x`` under
    the handlers now active, or ``None`` when it is (see the module docstring). Leaves the
    random states, the buffers and the parameters as they were, except a pending data start
    of the prior (a VampPrior's pseudo-inputs), which the model takes at its first batch as
    the first step would."""
    outside = bool(_PYRO_STACK)
    signature = _signature(vae, x)
    if not outside and _VERIFIED.get(vae) == signature:
        return None
    rng = _rng_state(x)
    buffers = {k: b.detach().clone() for k, b in vae.named_buffers()}
    try:
        reason = _compare(vae, x)
    finally:
        _set_rng_state(x, rng)
        with torch.no_grad():
            for name, b in vae.named_buffers():
                b.copy_(buffers[name])
    if reason is None and not outside:
        _VERIFIED[vae] = signature
    return reason


def build_step(vae: VAE, x: torch.Tensor, optimizer: Any, elbo: Any, world: int = 1,
               clip_grad_norm: float | None = None) -> tuple[Any, str]:
    """The step function for this run and the name of its objective, decided on the first
    batch ``x`` (with several processes, the direct path only where every rank verified it;
    the loss module is then wrapped in ``DistributedDataParallel``). ``clip_grad_norm``
    clips the gradients' total norm before each step of a torch optimiser (a ``pyro.optim``
    optimiser clips per parameter, through its own ``clip_args``)."""
    if isinstance(optimizer, pyro.optim.PyroOptim):
        if clip_grad_norm is not None:
            raise ConfigError("clip_grad_norm needs a torch optimiser; give a pyro.optim "
                              "optimiser clip_args={'clip_norm': ...} instead")
        elbo = elbo if elbo is not None else Trace_ELBO()
        return SVIStep(vae, optimizer, elbo), f"pyro {type(elbo).__name__}"
    if elbo is not None:
        if world > 1:
            raise ConfigError("distributed training uses fit's own ELBO step; elbo= is not "
                              "supported with several processes")
        return (TorchStep(LossModule(vae, elbo), optimizer, clip_grad_norm),
                f"pyro {type(elbo).__name__}")
    reasons = [r for r in gather_objects(verify_direct(vae, x)) if r is not None]
    direct = not reasons
    if reasons:
        logger.info("training on Trace_ELBO through Pyro, not the direct path: %s", reasons[0])
    module: torch.nn.Module = LossModule(vae, direct=direct)
    if world > 1:
        module = torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[x.device.index] if x.device.type == "cuda" else None)
    return (TorchStep(module, optimizer, clip_grad_norm),
            DIRECT if direct else "pyro Trace_ELBO")
