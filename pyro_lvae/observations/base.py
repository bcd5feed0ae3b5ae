"""The contract every observation model ``p(x | z)`` follows, and the argument checks they share."""

from __future__ import annotations

import itertools
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule
from pyro.poutine.runtime import _PYRO_STACK, am_i_wrapped
from pyro.poutine.trace_messenger import TraceMessenger

from ..errors import ConfigError, check_positive
from ..names import IndependentCopies
from ..registry import Registry

__all__ = ["Observation", "OBSERVATIONS", "distribution_stddev"]

#: every observation model by its command-line name (filled as the classes are defined; its
#: display properties are :func:`pyro_lvae.observations.describe`'s)
OBSERVATIONS = Registry("observation model")


_instances = itertools.count()


def _init_and_floor(init_scale: Any, min_scale: Any) -> tuple[float, float]:
    init_scale = check_positive("init_scale", init_scale)
    min_scale = check_positive("min_scale", min_scale)
    if init_scale <= min_scale:
        raise ConfigError(
            f"Expected init_scale > min_scale but got init_scale={init_scale}, "
            f"min_scale={min_scale}"
        )
    return init_scale, min_scale


def distribution_stddev(distribution: Any) -> torch.Tensor:
    """The standard deviation of each element of ``distribution``'s value (batch and event
    shape): its ``stddev``, read through ``Independent`` wrappers (which do not change it).

    :raises ConfigError: for a distribution that has no ``stddev`` (torch's
        ``NotImplementedError``)
    """
    base = distribution
    while isinstance(base, dist.Independent):
        base = base.base_dist
    try:
        std = base.stddev
    except NotImplementedError:
        raise ConfigError(f"{type(base).__name__} does not give its standard deviation; its "
                          f"observation model must define spread()") from None
    return std.expand(distribution.batch_shape + distribution.event_shape)


class Observation(IndependentCopies, PyroModule):
    """Base class: maps decoder output to ``p(x | z)``.

    Subclasses set :attr:`outputs_per_channel`, the number of decoder outputs per data channel
    (1 for a location only, 2 for a location and a scale), and implement :meth:`forward`.
    The channel axis is the first event axis: features for vectors, channels for images.
    Defining a subclass with a :attr:`kind` registers it in :data:`OBSERVATIONS`.

    Where it can live in a Pyro program: as an attribute of a ``PyroModule`` (the VAE's
    model, or your own), on its own (a root module with a unique param-store name), or inside
    a plain ``nn.Module`` registered with ``pyro.module`` (Pyro's ss_vae_M2 and dmm pattern;
    its parameters then live in the param store under that module's name only). Build it
    once, outside the model function: a learned one built while a program is being traced is
    refused, since every call would build a fresh sigma (and add it to the param store).
    ``copy.deepcopy`` of one used on its own gives the copy a param-store name of its own.
    """

    #: decoder outputs per data channel
    outputs_per_channel: int = 1
    #: short name used by the command line and in saved configurations
    kind: str = ""
    #: how studies, figures and the command line name the VAE built with it
    label: str = ""
    #: sigma is trained with the networks
    learned: bool = False
    #: sigma is one constant that the user sets (F-VAE)
    constant: bool = False
    #: one sigma for every data dimension at each step (a trajectory that can be replayed)
    shared: bool = False
    #: the model needs binary data (0 or 1)
    binary: bool = False
    #: the first of each channel's decoder outputs is a location in the data's units (a Normal
    #: mean), which a network may produce in standardised units
    #: (:class:`~pyro_lvae.nets.Standardize` with ``inverse=True``)
    location_first: bool = False
    #: the model is a probability mass on 8-bit levels k/255: its negative log-likelihood is a
    #: code length (bits/dim without a dequantisation offset)
    discrete: bool = False
    #: the model is for counts (non-negative integers): :func:`pyro_lvae.mlp_vae` feeds its
    #: encoder ``log1p(x)`` (:class:`pyro_lvae.nets.Log1p`)
    counts: bool = False
    #: :meth:`forward` takes each point's library size (its total count), ``library=``: the
    #: count models with the scVI mean (:mod:`pyro_lvae.observations.counts`)
    needs_library: bool = False

    def __init__(self) -> None:
        if self.learned and any(isinstance(m, TraceMessenger) for m in _PYRO_STACK):
            raise ConfigError(
                f"{type(self).__name__} was built inside a running Pyro program: each call "
                f"would add a new observation model (and a new learned sigma) to the param "
                f"store. Build it once, outside the model function (for instance as an "
                f"attribute of your PyroModule or nn.Module), and call it inside"
            )
        # a unique root name, so that two observation models used on their own never share a
        # param-store entry; a parent PyroModule (the VAE's model) renames it on assignment
        super().__init__(f"{self.kind or 'observation'}{next(_instances)}")
        self._remember_root()
        self._in_pyro_module = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            OBSERVATIONS[cls.kind] = cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self._registered_by_pyro_module():
            # pyro.module put this model's parameters in the param store under its parent's
            # name (and keeps the module's tensors in sync): a second registration under this
            # module's own name would split sigma in two and break the JIT ELBOs
            return self.forward(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def _registered_by_pyro_module(self) -> bool:
        if self._in_pyro_module:
            return True
        if not am_i_wrapped():
            return False
        own = {p.data_ptr() for p in self.parameters()}
        if not own:
            return False
        store = pyro.get_param_store()
        self._in_pyro_module = any(
            "$$$" in name and value.data_ptr() in own
            for name, value in store.named_parameters()
        )
        return self._in_pyro_module

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        """The decoder output per data point for data of shape ``data_shape``:
        ``outputs_per_channel`` times the channels (first axis), the rest unchanged."""
        return (self.outputs_per_channel * data_shape[0],) + tuple(data_shape[1:])

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        """Return ``p(x | z)`` given the decoder output for ``z``.

        :param torch.Tensor output: decoder output, shape ``batch + (k * C,) + rest``
        :param int event_dim: number of event dimensions of one data point
        """
        raise NotImplementedError

    def setup(self, data_shape: tuple[int, ...]) -> None:
        """Size the parts that depend on the data's shape (a learned theta per dimension of a
        count model); a VAE calls it with the shape of one data point where it knows it. Most
        models have none and ignore it."""

    def initialize(self, x: torch.Tensor) -> None:
        """Take a data-dependent start from a batch of training data ``x`` if this model has
        one pending (learned scales started from the data); otherwise do nothing (a start
        once taken, given or loaded is never taken again). :meth:`pyro_lvae.VAE.initialize`
        calls it, and so does the VAE's model at its first observed batch; in your own Pyro
        program call it yourself before training."""

    @property
    def initialized(self) -> bool:
        """Whether nothing data-dependent is pending: ``False`` only for a learned scale that
        starts from the data and has not taken its start yet (:meth:`initialize`)."""
        return True

    @property
    def shared_scale(self) -> torch.Tensor | None:
        """sigma where it does not depend on ``z`` (a scalar, or one per channel); ``None`` for
        models whose sigma the decoder outputs or that have no sigma. Read any model's sigma
        with :meth:`pyro_lvae.VAE.sigma`, its standard deviation with
        :meth:`pyro_lvae.VAE.spread`."""
        return None

    def spread(self, output: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The standard deviation of ``p(x | z)`` per data dimension, given the decoder output
        for ``z``: shape ``batch + data shape``.

        By default the ``stddev`` of :meth:`forward`'s distribution (for a Normal, its sigma;
        for a Bernoulli, ``sqrt(p (1 - p))``; for a continuous Bernoulli, its exact standard
        deviation), through ``Independent`` wrappers. Families whose standard deviation is not
        finite report ``inf`` (a Student-t with ``df <= 2``); where a dimension has no standard
        deviation at all (a categorical column of a table, whose values are codes) it is
        ``nan``. Each subclass documents what its spread is.

        :param torch.Tensor output: decoder output, shape ``batch + (k * C,) + rest``
        :param int event_dim: number of event dimensions of one data point
        """
        return distribution_stddev(self.forward(output, event_dim))

    def set_step(self, step: int) -> None:
        """Tell the observation model the current training step (used by schedules)."""

    def check_support(self, x: torch.Tensor) -> None:
        """Raise :class:`~pyro_lvae.errors.DataError` if ``x`` lies outside the support.

        Normal models accept any finite value (finiteness is checked with the data's shape)."""

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description; :func:`observation_from_config` rebuilds from it."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")
