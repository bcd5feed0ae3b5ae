""":class:`DirectELBO`: ``Trace_ELBO``'s objective for pyro-lvae's own model and guide, computed
without Pyro's tracing.

``Trace_ELBO`` runs the guide under ``poutine.trace``, replays the model on its draws and sums
the sites' log-densities: per step that is a handler stack, a trace of every site and a
param-store round trip per parameter read, which cost more than the networks of a small VAE
(docs/performance.md). For a :class:`~pyro_lvae.vae.Model` / :class:`~pyro_lvae.vae.Guide`
pair the sites are known in advance (``z`` in the guide and the model, the observed ``x``, both
in the plate ``data``), so the same loss is a few lines of torch:

- ``z = loc + eps * scale``, drawn by the same ``rsample`` call as the guide's
  (same random numbers under the same seed);
- ``reconstruction = -sum log p(x | z)`` with the model's own observation model;
- ``kl = sum [log q(z | x) - log p(z)]`` (the one-draw estimate ``Trace_ELBO`` uses) with the
  model's own prior;
- ``loss = reconstruction + beta * kl``, averaged over ``num_particles`` draws.

It is a Pyro ELBO: ``SVI(vae.model, vae.guide, optim, DirectELBO())``,
``DirectELBO()(vae.model, vae.guide)`` (an ``ELBOModule`` for torch optimisers) and
:func:`~pyro_lvae.annealed` programs (``svi.step(beta, x)``) work as with ``Trace_ELBO``, with
equal values and gradients (checked for every registered observation model and prior by the
test suite). Where it would not be exact it refuses with a :class:`~pyro_lvae.errors.ConfigError`
that says why (:meth:`DirectELBO.why_not`): programs other than pyro-lvae's own ``Model`` and
``Guide`` (subclasses that override ``forward`` included), observation models or priors that
are not registered (their programs are not known in advance), generation without data, and
Pyro handlers around the call other than :func:`~pyro_lvae.weight_latents` (which it applies) and
``SVI``'s own parameter capture, and networks that are ``PyroModule`` s (they may hold sample
sites of their own, which only tracing sees; plain ``nn.Module`` networks are taken to hold no
Pyro statements). :func:`pyro_lvae.fit` trains on it by default and falls back to
``Trace_ELBO`` with a WARNING that gives the reason.

Example::

    >>> import torch, pyro, pyro_lvae as lv
    >>> from pyro.infer import SVI, Trace_ELBO
    >>> vae = lv.mlp_vae(2, 1, lv.FixedScale(0.5), hidden=8, blocks=1)
    >>> x = torch.randn(16, 2)
    >>> pyro.set_rng_seed(0)
    >>> direct = lv.DirectELBO().loss(vae.model, vae.guide, x)
    >>> pyro.set_rng_seed(0)
    >>> reference = Trace_ELBO().loss(vae.model, vae.guide, x)
    >>> abs(direct - reference) < 1e-4 * abs(reference)
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import torch
from pyro.infer.elbo import ELBO
from pyro.infer.util import is_validation_enabled, torch_item
from pyro.nn import PyroModule
from pyro.poutine.runtime import _PYRO_STACK
from pyro.poutine.trace_messenger import TraceMessenger

from .annealing import LatentScaleMessenger, annealed_program
from .errors import ConfigError, check_positive_int
from .objective import ELBOTerms
from .observations import OBSERVATIONS
from .priors import PRIORS
from .vae import VAE, Guide, Model

__all__ = ["DirectELBO", "direct_elbo_terms"]


def _own_forward(module: Any, cls: type) -> bool:
    return isinstance(module, cls) and type(module).forward is cls.forward


def _registered_forward(module: Any, registry: Any) -> bool:
    """Whether ``module`` computes its distribution with the ``forward`` of a registered class
    (that class or a subclass that does not override it), whose log-density the test suite
    checks against ``Trace_ELBO``'s."""
    cls = registry.get(getattr(module, "kind", None))
    return cls is not None and isinstance(module, cls) and type(module).forward is cls.forward


def _foreign_pyro_module(label: str, root: Any, known: tuple) -> str | None:
    """Why a network of ``root`` may hold sample sites (it is a ``PyroModule`` other than the
    root, the observation model and the prior, and their parts), or ``None``."""
    pyro_modules = [m for m in root.modules() if isinstance(m, PyroModule) and m is not root]
    if len(pyro_modules) <= len(known):  # the common case: nothing but the known ones
        if all(any(m is k for k in known) for m in pyro_modules):
            return None
    allowed = {id(m) for part in known for m in part.modules()}
    for name, module in root.named_modules():
        if isinstance(module, PyroModule) and module is not root and id(module) not in allowed:
            return (f"the {label}'s {name} is a PyroModule ({type(module).__name__}) that may "
                    f"hold sample sites of its own (PyroSample weights, pyro.sample "
                    f"statements), which only tracing sees")
    return None


def _handler_beta() -> tuple[Any, str | None]:
    """The product of the betas of the :func:`~pyro_lvae.weight_latents` handlers around the
    call, and the name of the first other Pyro handler (``None`` if there is none). ``SVI``'s
    parameter capture (a ``poutine.trace(param_only=True)``) is not a handler of the loss."""
    beta: Any = 1.0
    for messenger in _PYRO_STACK:
        if isinstance(messenger, LatentScaleMessenger):
            beta = beta * messenger.beta
        elif isinstance(messenger, TraceMessenger) and messenger.param_only:
            continue
        else:
            return beta, type(messenger).__name__
    return beta, None


class _Call:
    """One call's model, guide, data and beta, unwrapped from the programs and arguments."""

    def __init__(self, model: Any, guide: Any, args: tuple, kwargs: dict) -> None:
        inner_model, inner_guide = annealed_program(model), annealed_program(guide)
        self.reason: str | None = None
        if (inner_model is None) != (inner_guide is None):
            self.reason = ("only one of the model and the guide is lv.annealed: wrap both "
                           "(the KL weight must reach both programs)")
            return
        self.beta: Any = 1.0
        self.outer: Any = 1.0
        if inner_model is not None:
            model, guide = inner_model, inner_guide
            if not args:
                self.reason = "lv.annealed programs take beta as their first argument"
                return
            self.beta, args = args[0], args[1:]
        self.model, self.guide = model, guide
        self.x = kwargs.get("x", args[0] if args else None)
        if self.x is None:
            self.reason = "the model is generating (no data x): there is no ELBO to compute"
            return
        extra = set(kwargs) - {"x"}
        if len(args) > 1 or extra:
            self.reason = (f"the model and guide take the data x alone, but got "
                           f"{len(args)} positional argument(s) and {sorted(extra) or 'no'} "
                           f"keyword(s)")
            return
        self.reason = self._check()

    def _check(self) -> str | None:
        if not _own_forward(self.model, Model):
            return (f"the model is {type(self.model).__name__}, not pyro-lvae's Model (or a "
                    f"subclass that overrides forward): its program is not known in advance")
        if not _own_forward(self.guide, Guide):
            return (f"the guide is {type(self.guide).__name__}, not pyro-lvae's Guide (or a "
                    f"subclass that overrides forward)")
        observation, prior = self.model.observation, self.model.prior
        if not _registered_forward(observation, OBSERVATIONS):
            return (f"the observation model {type(observation).__name__} computes its "
                    f"distribution with a forward of its own, not a registered model's: it "
                    f"is not checked against Trace_ELBO")
        if not _registered_forward(prior, PRIORS):
            return (f"the prior {type(prior).__name__} computes its distribution with a "
                    f"forward of its own, not a registered prior's")
        for label, root in (("model", self.model), ("guide", self.guide)):
            reason = _foreign_pyro_module(label, root, (observation, prior))
            if reason is not None:
                return reason
        if self.guide.latent_dim != self.model.latent_dim:
            return "the model and the guide have different latent sizes"
        handler_beta, handler = _handler_beta()
        if handler is not None:
            return (f"a Pyro handler ({handler}) is active around the call: DirectELBO "
                    f"computes the loss without Pyro's handlers, so it cannot apply it; use "
                    f"Trace_ELBO")
        self.outer = handler_beta
        return None


def _is_zero(value: Any) -> bool:
    return isinstance(value, float) and value == 0.0


def _terms(model: Model, guide: Guide, x: torch.Tensor, beta: Any, outer: Any) -> ELBOTerms:
    """One draw of the loss and its parts (the programs' checks and data starts first, as
    their ``forward`` makes them): ``beta`` is the programs' weight, ``outer`` that of the
    :func:`~pyro_lvae.weight_latents` handlers around the call, part of the KL term as the
    scales of outer handlers are in :func:`~pyro_lvae.objective.trace_parts`."""
    if not model._store_checked:
        model.check_param_store()
    if not guide._store_checked:
        guide.check_param_store()
    guide.check_data(x)
    model.check_data(x)
    if is_validation_enabled():
        model.observation.check_support(x)
    guide.initialize(x)
    model.initialize(x)
    loc, scale = guide.posterior(x)
    if is_validation_enabled():  # as Pyro validates the guide's Normal
        dist.Normal(loc, scale, validate_args=True)
    eps = torch.empty_like(loc).normal_()
    z = loc + eps * scale
    likelihood = model.likelihood(z, x)
    reconstruction = -likelihood.log_prob(x).sum()
    log_q = (-0.5 * eps**2 - scale.log()).sum() - 0.5 * math.log(2 * math.pi) * eps.numel()
    kl = log_q - model.prior.forward().log_prob(z).sum()
    if _is_zero(outer):  # masked, as lv.weight_latents(0) masks
        kl = torch.zeros_like(kl)
    elif not (isinstance(outer, float) and outer == 1.0):
        kl = outer * kl
    loss = reconstruction if _is_zero(beta) else reconstruction + beta * kl
    return ELBOTerms(loss, reconstruction, kl, likelihood)


def direct_elbo_terms(vae: VAE, x: torch.Tensor, beta: float | torch.Tensor = 1.0) -> ELBOTerms:
    """One draw of :class:`DirectELBO`'s loss of ``vae`` on ``x`` at weight ``beta``, with its
    parts (sums over the batch): ``DirectELBO().terms(vae.model, vae.guide, x)`` at that beta."""
    return DirectELBO().terms(vae.model, vae.guide, x, beta=beta)


class DirectELBO(ELBO):
    """``Trace_ELBO``'s loss for pyro-lvae's ``Model``/``Guide`` pair without Pyro's tracing
    (see the module docstring): equal values and gradients on the same draws, several times
    faster per step on small networks.

    :param int num_particles: draws of ``z`` per data point; the loss is their mean
    :raises ConfigError: at a call it cannot compute exactly (:meth:`why_not` says why)
    """

    def __init__(self, num_particles: int = 1) -> None:
        num_particles = check_positive_int("num_particles", num_particles)
        super().__init__(num_particles=num_particles)

    def _get_trace(self, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
        raise NotImplementedError("DirectELBO computes its loss without traces")

    @staticmethod
    def why_not(model: Any, guide: Any, *args: Any, **kwargs: Any) -> str | None:
        """Why this ELBO cannot compute the loss of ``model``/``guide`` on these arguments
        under the handlers now active, or ``None`` when it can."""
        return _Call(model, guide, args, kwargs).reason

    def terms(self, model: Any, guide: Any, *args: Any, beta: Any = None,
              **kwargs: Any) -> ELBOTerms:
        """The loss and its parts, ``loss = reconstruction + beta * kl`` (sums over the
        batch, means over particles). ``beta`` is the programs' weight where they take none
        (not :func:`~pyro_lvae.annealed`); the weight of :func:`~pyro_lvae.weight_latents`
        handlers around the call is part of ``kl``."""
        call = _Call(model, guide, args, kwargs)
        if call.reason is not None:
            raise ConfigError(f"DirectELBO cannot compute this loss exactly: {call.reason}")
        weight = call.beta if beta is None else beta
        if isinstance(weight, torch.Tensor) and weight.numel() != 1:
            raise ConfigError(f"Expected a scalar beta but got shape {tuple(weight.shape)}")
        if not isinstance(weight, torch.Tensor):
            weight = float(weight)
        draws = [_terms(call.model, call.guide, call.x, weight, call.outer)
                 for _ in range(self.num_particles)]
        if len(draws) == 1:
            return draws[0]
        n = len(draws)
        return ELBOTerms(sum(d.loss for d in draws) / n, sum(d.reconstruction for d in draws) / n,
                         sum(d.kl for d in draws) / n, draws[-1].likelihood)

    def prepared(self, model: Model, guide: Guide, x: torch.Tensor
                 ) -> Callable[[torch.Tensor, Any], ELBOTerms]:
        """The terms as a function ``f(x, beta)`` for a training loop whose programs and
        surrounding handlers stay as they are now: checked once here, on the batch ``x``,
        instead of at every call (what :func:`pyro_lvae.fit` uses). ``model`` and ``guide``
        are the plain programs (not :func:`~pyro_lvae.annealed`); ``beta`` is the step's
        weight."""
        call = _Call(model, guide, (x,), {})
        if call.reason is not None:
            raise ConfigError(f"DirectELBO cannot compute this loss exactly: {call.reason}")
        outer, particles = call.outer, self.num_particles
        if particles != 1:
            raise ConfigError("DirectELBO.prepared computes one particle; for several call "
                              "terms() or use pyro.infer.SVI")

        def terms(batch: torch.Tensor, beta: Any) -> ELBOTerms:
            return _terms(model, guide, batch, beta, outer)

        return terms

    def differentiable_loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any
                            ) -> torch.Tensor:
        """The loss, differentiable (for torch optimisers and ``ELBOModule``)."""
        return self.terms(model, guide, *args, **kwargs).loss

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The loss as a number, without gradients."""
        with torch.no_grad():
            return torch_item(self.differentiable_loss(model, guide, *args, **kwargs))

    def loss_and_grads(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        """The loss, back-propagated into the parameters (what ``SVI.step`` calls). The
        networks run inside the programs' Pyro contexts, so ``SVI`` sees their parameters
        as it does under ``Trace_ELBO``."""
        call = _Call(model, guide, args, kwargs)
        if call.reason is not None:
            raise ConfigError(f"DirectELBO cannot compute this loss exactly: {call.reason}")
        with call.model._pyro_context, call.guide._pyro_context:
            loss = self.differentiable_loss(model, guide, *args, **kwargs)
        if loss.requires_grad:
            loss.backward()
        return torch_item(loss)
