"""PyTorch Lightning adapter (the ``lightning`` extra: ``pip install pyro-lvae[lightning]``).

:class:`PyroLVAEModule` is a :class:`lightning.pytorch.LightningModule` that trains a pyro-lvae
:class:`~pyro_lvae.VAE`, or any Pyro model/guide pair of modules, on a Pyro ELBO
(``Trace_ELBO`` by default), with the KL weight beta as an input of
:func:`~pyro_lvae.annealed` programs (exact under the JIT ELBOs too) following a schedule of
the global step. Lightning's ``Trainer`` then supplies what it is made for: DDP over devices
and machines, precision, loggers, callbacks and checkpoints. Every parameter, the learned
sigma included, is a module parameter, so Lightning's optimiser, DDP and checkpoints see it.

Logged at every step, per data point in nats as in :class:`~pyro_lvae.training.History`:
``loss`` (``= reconstruction + beta * kl``), ``reconstruction``, ``kl``, ``beta`` and, for
Normal-family likelihoods, ``sigma`` (mean over the batch and dimensions). The parts are read
off the traces the ELBO itself runs, as in :func:`pyro_lvae.fit`.

Example::

    import lightning.pytorch as pl
    import pyro_lvae as lv
    from pyro_lvae.training.lightning import PyroLVAEModule

    vae = lv.mlp_vae(2, 2, lv.LearnedScalarScale())
    module = PyroLVAEModule(vae, beta=lv.LinearWarmup(1000, 0.5, 1.0), lr=1e-3)
    loader = torch.utils.data.DataLoader(lv.datasets.manifold2d(10000), batch_size=100)
    pl.Trainer(max_steps=5000).fit(module, loader)

``fit`` and this module compute the same loss on the same batch and draws (tested); ``fit``
keeps its own extras (DirectELBO by default, exact resume of every random stream, the
divergence guard, averaged weights), Lightning its own (its ``WeightAveraging`` and
``StochasticWeightAveraging`` callbacks, ``gradient_clip_val``, its schedulers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import torch
from pyro.infer import Trace_ELBO
from torch import nn

from ..annealing import BetaSchedule, ConstantBeta, weight_latents
from ..errors import ConfigError
from ..objective import ELBOTerms, scale_stats
from ..vae import VAE
from .distributed import gather_objects, rank_info
from .schedules import make_scheduler
from .step import PartsReader

__all__ = ["PyroLVAEModule", "initialize_modules"]


def initialize_modules(module: nn.Module, x: Any) -> list[str]:
    """Give ``module`` its data start: call ``initialize(x)`` on ``module`` if it has that
    method, else on the highest modules inside it that have one (a module with ``initialize``
    answers for the modules inside it). Returns the names of the modules called (``""``: the
    module itself).

    This is the protocol by which :class:`PyroLVAEModule` starts a model/guide pair of your
    own on its first batch: a pyro-lvae observation model or prior held anywhere in your
    networks (``Observation.initialize``, ``Prior.initialize``), a
    :class:`~pyro_lvae.nets.Standardize` layer, or a method ``initialize(x)`` of your model or
    guide module that measures what it needs on a batch of training data.

    :param nn.Module module: the model or the guide
    :param x: the batch's first argument (the data)
    """
    called: list[str] = []

    def visit(name: str, m: nn.Module) -> None:
        init = getattr(m, "initialize", None)
        if callable(init):
            init(x)
            called.append(name)
            return
        for child_name, child in m.named_children():
            visit(f"{name}.{child_name}" if name else child_name, child)

    visit("", module)
    return called


class PyroLVAEModule(pl.LightningModule):
    """A LightningModule training a VAE or a model/guide pair on a Pyro ELBO.

    :param model: a :class:`~pyro_lvae.VAE`, or a Pyro model that is an ``nn.Module`` (a
        ``PyroModule``) whose parameters are its own
    :param guide: the guide (an ``nn.Module``) of a model/guide pair; ``None`` for a VAE
    :param elbo: a Pyro ELBO instance (default ``Trace_ELBO()``)
    :param beta: the KL weight: a number, a :class:`~pyro_lvae.BetaSchedule` (a
        :class:`~pyro_lvae.GECO` is fed each step's reconstruction loss, the mean over
        processes) or a
        function of the global step
    :param float lr: the learning rate of the default Adam optimiser
    :param optimizer: ``None`` (Adam) or a function ``params -> torch optimiser``
    :param lr_schedule: a learning-rate schedule stepped every step, as for
        :func:`pyro_lvae.fit` (a name needs ``Trainer(max_steps=...)``)
    :param int lr_warmup: steps of linear learning-rate warm-up

    A VAE takes its batches as ``x`` (or ``(x, y)``, ``y`` dropped); a model/guide pair gets
    each batch as its arguments (a tuple is spread). What starts from data is measured on the
    first batch (rank 0's, with several processes), before the first step: a VAE's
    :meth:`~pyro_lvae.VAE.initialize`; for a model/guide pair, :func:`initialize_modules` on
    the model and on the guide with the batch's first argument, which calls ``initialize(x)``
    on each of them that has one, else on the highest modules inside them that have one (an
    observation model with a learned sigma started from the data, a prior, a
    :class:`~pyro_lvae.nets.Standardize` layer, or your own method).
    """

    def __init__(self, model: Any, guide: nn.Module | None = None, *, elbo: Any = None,
                 beta: float | BetaSchedule | Callable[[int], float] = 1.0, lr: float = 1e-3,
                 optimizer: Callable | None = None, lr_schedule: Any = None,
                 lr_warmup: int = 0) -> None:
        super().__init__()
        if isinstance(model, VAE):
            if guide is not None:
                raise ConfigError("a VAE holds its own guide; pass guide=None")
            self.vae: VAE | None = model
            pair = model
        else:
            if not (isinstance(model, nn.Module) and isinstance(guide, nn.Module)):
                raise ConfigError("Expected a pyro_lvae.VAE, or a model and a guide that are "
                                  "nn.Modules (PyroModules), so that their parameters train")
            self.vae = None
            self.pair = nn.ModuleDict({"model": model, "guide": guide})
            pair = SimpleNamespace(model=model, guide=guide)
        if not callable(beta):
            weight_latents(beta)  # validates the number
        if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
            raise ConfigError(f"Expected lr > 0 but got {lr!r}")
        self.elbo = elbo if elbo is not None else Trace_ELBO()
        self.beta = beta if callable(beta) else ConstantBeta(beta)
        self.lr, self.optimizer_factory = lr, optimizer
        self.lr_schedule, self.lr_warmup = lr_schedule, lr_warmup
        self._checked = False
        self.parts = PartsReader(pair, self.elbo)
        self.differentiable = hasattr(self.elbo, "differentiable_loss")
        if not self.differentiable:
            raise ConfigError(f"{type(self.elbo).__name__} has no differentiable_loss: "
                              f"Lightning back-propagates the loss itself; use Trace_ELBO, "
                              f"TraceMeanField_ELBO or a JIT ELBO")

    def _args(self, batch: Any) -> tuple:
        if self.vae is not None:
            return (batch[0] if isinstance(batch, (tuple, list)) else batch,)
        return tuple(batch) if isinstance(batch, (tuple, list)) else (batch,)

    def elbo_terms(self, batch: Any, beta: float) -> ELBOTerms:
        """The ELBO's loss on ``batch`` at weight ``beta`` with its parts (sums over the
        batch, as :func:`pyro_lvae.fit`'s step computes them)."""
        args = self._args(batch)
        b = torch.tensor(float(beta), dtype=args[0].dtype if args[0].is_floating_point()
                         else torch.get_default_dtype(), device=args[0].device)
        loss = self.elbo.differentiable_loss(self.parts.model, self.parts.guide, b, *args)
        return self.parts.read(float(beta), args[0].device)._replace(loss=loss)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """On the first batch, measure what starts from data (see the class); at every
        batch, give a VAE's observation model the step (scheduled sigmas)."""
        if not self._checked:
            self._initialize(self._args(batch)[0])
            self._checked = True
        if self.vae is not None:
            self.vae.observation.set_step(self.global_step)

    def _initialize(self, x: Any) -> None:
        """The data start from the first batch ``x``; with several processes, every rank
        takes rank 0's batch."""
        if self.vae is not None:  # this rank's own batch is checked too
            self.vae.model.check_data(x, finite=True)
            self.vae.observation.check_support(x)
        if self.trainer.world_size > 1 and isinstance(x, torch.Tensor):
            rank, _ = rank_info()
            x = gather_objects(x.cpu() if rank == 0 else None)[0].to(x.device)
        if self.vae is not None:
            self.vae.initialize(x)
            return
        for part in (self.pair["model"], self.pair["guide"]):
            initialize_modules(part, x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        """One step's loss (summed over the batch, as :func:`pyro_lvae.fit` and ``SVI``
        minimise it), with loss, reconstruction, KL, beta and sigma logged per point."""
        beta = float(self.beta(self.global_step))
        terms = self.elbo_terms(batch, beta)
        n = self._args(batch)[0].shape[0]
        logs = {"loss": terms.loss.detach() / n, "reconstruction": terms.reconstruction / n,
                "kl": terms.kl / n, "beta": beta}
        stats = scale_stats(terms.likelihood)
        if stats is not None:
            logs["sigma"] = stats[0]
        self.log_dict(logs, on_step=True, on_epoch=False, prog_bar=True, batch_size=n,
                      sync_dist=self.trainer.world_size > 1)
        update = getattr(self.beta, "update", None)  # a weight that follows the run (GECO)
        if update is not None:
            reconstruction = terms.reconstruction.detach() / n
            if self.trainer.world_size > 1:  # every rank's GECO takes the same mean
                reconstruction = self.trainer.strategy.reduce(reconstruction, reduce_op="mean")
            update(reconstruction)
        return terms.loss

    def configure_optimizers(self) -> Any:
        """Adam (or ``optimizer(params)``) over every parameter, with the learning-rate
        schedule, if any, stepped every step."""
        params = self.parameters()
        opt = (torch.optim.Adam(params, lr=self.lr) if self.optimizer_factory is None
               else self.optimizer_factory(params))
        if self.lr_schedule is None and not self.lr_warmup:
            return opt
        steps = self.trainer.max_steps
        if isinstance(self.lr_schedule, str) and (steps is None or steps < 0):
            raise ConfigError("a named learning-rate schedule spans the run: give "
                              "Trainer(max_steps=...)")
        scheduler = make_scheduler(self.lr_schedule, opt, max(steps or 0, 1), self.lr_warmup)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
