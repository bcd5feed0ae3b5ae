"""The VAE as a Pyro model/guide pair, and the container that queries it.

:class:`VAE` holds a :class:`Model` (prior, decoder, observation model) and a :class:`Guide`
(encoder), two root :class:`~pyro.nn.PyroModule` objects with distinct names, so their
parameters never share param-store keys. Both are plain Pyro callables:

- ``SVI(vae.model, vae.guide, optim, Trace_ELBO())``, with any ELBO
  (``TraceMeanField_ELBO``, ``RenyiELBO``, ...), ``Predictive`` and any poutine handler;
- ``Trace_ELBO()(vae.model, vae.guide)``: a ``torch.nn.Module`` loss for torch optimisers.

The latent site is ``"z"`` (event dim 1), drawn from the model's prior (``N(0, I)`` by default;
any :class:`~pyro_lvae.priors.Prior`), the observed site is ``"x"`` (event dims the data shape),
both inside the plate ``"data"``. Queries (:meth:`VAE.reconstruct`,
:meth:`VAE.sample`) are built from poutine handlers, not from a parallel code path.

What a VAE measures on data (a learned sigma's data start, a VampPrior's pseudo-inputs,
standardising layers) is measured by :meth:`VAE.initialize`, which training makes on its first
batch (in a plain ``SVI`` loop, the programs' first observed batch does); queries refuse to run
before it (:class:`~pyro_lvae.errors.NotInitialized`).

Example::

    >>> import torch, pyro, pyro_lvae as lv
    >>> vae = lv.mlp_vae(2, 1, lv.LearnedScalarScale(), hidden=16, blocks=1)
    >>> svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}),
    ...                      pyro.infer.Trace_ELBO())
    >>> vae.initialized   # sigma and the standardising layers start from the data
    False
    >>> with lv.weight_latents(0.5):
    ...     loss = svi.step(torch.randn(8, 2))   # the first batch measures them
    >>> vae.initialized
    True
    >>> vae.sample(4).shape
    torch.Size([4, 2])
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer.util import is_validation_enabled
from pyro.nn import PyroModule
from pyro.poutine.runtime import am_i_wrapped
from torch import nn

from .errors import (
    CheckpointError,
    ConfigError,
    DataError,
    NotInitialized,
    as_integer,
    check_int,
    check_positive_int,
)
from .io import atomic_save, safe_load
from .limits import BudgetExceeded, ElementBudget
from .names import IndependentCopies, fresh_index, rename
from .nets import (
    ConvDecoder,
    ConvEncoder,
    GaussianEncoder,
    Log1p,
    ResidualMLP,
    Standardize,
    initialize_from_data,
)
from .objective import likelihood_scale
from .observations import FixedScale, LearnedScalarScale, Observation, observation_from_config
from .priors import Prior, StandardNormal, prior_from_config

__all__ = ["Model", "Guide", "VAE", "mlp_vae", "conv_vae", "fixed_star", "rebuild", "BUILDERS",
           "MODES", "upgrade_state_dict"]

#: the modes of the queries (:meth:`VAE.encode`, :meth:`VAE.reconstruct`, :meth:`VAE.sample`): the
#: mean of each distribution, or a draw from it
MODES = ("mean", "sample")
#: below this many nats of KL(q(z|x) || p(z)) per data point a VAE is reported as collapsed
COLLAPSE_NATS = 0.1
logger = logging.getLogger(__name__)
_FORMAT = "pyro-lvae-model"
_CHECKPOINT_FORMAT = "pyro-lvae-checkpoint"


#: configuration fields that size tensors: each is at most the number of weights in the file
_SIZE_FIELDS = frozenset({"data_dim", "latent_dim", "hidden", "blocks", "width", "convs", "dims",
                          "image_shape", "channels", "rank", "components", "length", "layers"})
#: fields that count layers or blocks: each is at most the number of tensors in the file
_COUNT_FIELDS = frozenset({"blocks", "convs", "layers"})
#: a VAE rebuilt from a file may create this many times the tensor elements the file holds ...
_BUILD_FACTOR = 4
#: ... plus these (the small parts built before any weight is read)
_BUILD_SLACK = 2**20
#: what building a VAE from a malformed configuration can raise
_BUILD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, IndexError, RuntimeError,
                 OverflowError, RecursionError, MemoryError)


def _model_blob(blob: Any, source: str) -> dict[str, Any]:
    """The model part of a saved model or of a training checkpoint."""
    if isinstance(blob, dict) and blob.get("format") == _CHECKPOINT_FORMAT:
        blob = blob.get("model")
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise CheckpointError(f"{source} is not a pyro-lvae model or checkpoint")
    return blob


def _a(value: Any) -> str:
    """``"a list"``, ``"an int"``: the type of ``value`` with its article."""
    name = type(value).__name__
    return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _corrupt(source: str, problem: str) -> CheckpointError:
    return CheckpointError(f"{source}: {problem}; the file is corrupt, was edited or was not "
                           f"written by pyro-lvae")


def _read_config(blob: dict[str, Any], source: str) -> dict[str, Any]:
    """The configuration of a saved model, checked for the structure :meth:`VAE.to_file_dict`
    writes (a JSON object with a known ``builder``, ``args``, ``observation`` and ``prior``)."""
    text = blob.get("config")
    if text is None:
        raise CheckpointError(
            f"{source} was saved from a hand-assembled VAE; build the same VAE and call "
            f"vae.load_state({source!r})"
        )
    if not isinstance(text, str):
        raise _corrupt(source, f"its configuration is {_a(text)}, not JSON text")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise _corrupt(source, f"its configuration is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise _corrupt(source, f"its configuration is a JSON {type(config).__name__}, not an "
                               f"object")
    builder = config.get("builder")
    if not isinstance(builder, str) or builder not in BUILDERS:
        raise _corrupt(source, f"unknown model builder {builder!r} in its configuration "
                               f"(expected one of {', '.join(BUILDERS)})")
    for key, optional in (("args", False), ("observation", False), ("prior", True)):
        value = config.get(key)
        if value is None and optional:
            continue
        if not isinstance(value, dict):
            what = "missing" if key not in config else _a(value)
            raise _corrupt(source, f"the configuration's {key!r} is {what}, not an object")
        if key != "args" and not isinstance(value.get("kind"), str):
            raise _corrupt(source, f"the configuration's {key!r} has no kind (got "
                                   f"{value.get('kind')!r})")
    return config


def _check_state(state: Any, source: str) -> int:
    """Check the weights of a file before anything is built from them: a dictionary of tensors,
    each backed by its own storage, free of NaN and Inf (extra states, which are flags, aside).
    Returns the number of tensor elements the file holds (its storages, each counted once)."""
    if not isinstance(state, dict):
        what = "missing" if state is None else _a(state)
        raise _corrupt(source, f"its state_dict is {what}, not a dictionary of tensors")
    stored: dict[int, int] = {}
    for key, tensor in state.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise _corrupt(source, f"its state_dict entry {key!r} is {_a(tensor)}, not a "
                                   f"tensor")
        storage = tensor.untyped_storage()
        if tensor.numel() * tensor.element_size() > storage.nbytes():
            raise _corrupt(source, f"the tensor {key} of shape {tuple(tensor.shape)} repeats "
                                   f"the {storage.nbytes()} bytes of its storage (an expanded "
                                   f"tensor, which pyro-lvae never saves)")
        stored[storage.data_ptr()] = max(stored.get(storage.data_ptr(), 0),
                                         storage.nbytes() // max(tensor.element_size(), 1))
    for key, tensor in state.items():
        if key.endswith("_extra_state") or not (tensor.is_floating_point()
                                                 or tensor.is_complex()):
            continue
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise CheckpointError(
                f"{source}: the weight {key} holds {bad} NaN or infinite value(s) (of "
                f"{tensor.numel()}): the model it was saved from had diverged, and pyro-lvae "
                f"refuses such weights. Use an earlier checkpoint, or read the raw tensors with "
                f"torch.load(path, weights_only=True) to inspect them"
            )
    return sum(stored.values())


def _size_fields(config: dict[str, Any]) -> list[tuple[str, Any]]:
    """``("args.hidden", 200)``, ...: the configuration's sizes of tensors (the flow prior's
    ``hidden`` where its transform uses it, each categorical column's classes)."""
    out = []
    prior = config.get("prior") or {}
    for part in ("args", "observation", "prior"):
        for name, value in (config.get(part) or {}).items():
            if name == "hidden" and part == "prior" and prior.get("transform") == "spline":
                continue  # element-wise splines have no hidden layers
            if name == "image_shape" and isinstance(value, list):
                out += [(f"{part}.{name}[{i}]", v) for i, v in enumerate(value)]
            elif name in _SIZE_FIELDS:
                out.append((f"{part}.{name}", value))
            elif name == "schema" and part == "observation" and isinstance(value, list):
                out += [(f"observation.schema[{j}] (classes)", c[1]) for j, c in
                        enumerate(value) if isinstance(c, list) and len(c) == 2
                        and c[0] == "categorical"]
    return out


def _check_sizes(config: dict[str, Any], tensors: int, stored: int, source: str) -> None:
    """Refuse a configuration whose sizes the file's weights cannot hold: each size of tensors
    is at most the weights in the file (a unit of any size has weights of its own), each count
    of layers or blocks at most its tensors. Values of other types are left to the builders'
    own checks."""
    for field, value in _size_fields(config):
        if not isinstance(value, int) or isinstance(value, bool):
            continue
        if value > stored:
            raise _corrupt(source, f"its configuration says {field}={value}, more than the "
                                   f"{stored} weights the file holds")
        if field.rsplit(".", 1)[-1] in _COUNT_FIELDS and value > tensors:
            raise _corrupt(source, f"its configuration says {field}={value}, more than the "
                                   f"{tensors} tensors the file holds (each layer or block has "
                                   f"tensors of its own)")


def _build_from_config(config: dict[str, Any], stored: int, source: str) -> VAE:
    """The VAE a checked configuration describes (fresh weights), built within a budget of
    tensor elements proportional to the weights the file holds
    (:class:`~pyro_lvae.limits.ElementBudget`)."""
    limit = _BUILD_FACTOR * stored + _BUILD_SLACK
    try:
        with ElementBudget(limit):
            args = {**_OLD_DEFAULTS.get(config["builder"], {}), **config["args"]}
            return BUILDERS[config["builder"]](
                observation=observation_from_config(config["observation"]),
                prior=prior_from_config(config.get("prior")), **args)
    except BudgetExceeded:
        sizes = ", ".join(f"{part}.{name}={value!r}" for part in ("args", "observation", "prior")
                          for name, value in (config.get(part) or {}).items()
                          if name in _SIZE_FIELDS)
        raise _corrupt(source, f"its configuration ({sizes}) describes a model larger than the "
                               f"weights it holds: building it would create more than {limit} "
                               f"tensor elements for {stored} in the file") from None
    except _BUILD_ERRORS as e:
        raise _corrupt(source, f"its configuration cannot be built ({type(e).__name__}: "
                               f"{e})") from None


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"Expected mode to be one of {MODES} but got {mode!r}")


def collapse_remedy(observation: Any) -> str:
    """What frees a collapsed VAE with this observation model, for its warnings."""
    if getattr(observation, "counts", False):
        first = ("Learn the inverse dispersion (dispersion='learned' or 'decoder'): a small fixed "
                 "theta calls every count noise")
    else:
        first = ("Start a learned sigma from the data (the default init_scale=None, or "
                 "lv.initial_scale(x))")
    return f"{first}, or warm the KL weight up (lv.LinearWarmup)"


def _check_observation(observation: Any) -> None:
    if not isinstance(observation, Observation):
        raise ConfigError(
            f"Expected observation to be an observation model such as lv.FixedScale(1.0) or "
            f"lv.LearnedVectorScale() but got {observation!r}"
        )


def _check_prior(prior: Any) -> Prior:
    """``prior``, or a new standard Normal for ``None``; a prior already in a VAE is refused."""
    if prior is None:
        return StandardNormal()
    if not isinstance(prior, Prior):
        raise ConfigError(f"Expected prior to be a prior such as lv.StandardNormal() or "
                          f"lv.MixturePrior(10) but got {prior!r}")
    if prior._owned:
        raise ConfigError("this prior already belongs to another model (it would share its "
                          "parameters); build a new prior for each VAE")
    return prior


#: state-dict keys of the standard Normal prior before priors were modules: old -> new
_OLD_PRIOR_KEYS = {"prior_loc": "prior.loc", "prior_scale": "prior.scale"}


def upgrade_state_dict(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``state`` with the keys of files saved before priors were swappable renamed
    (``prior_loc``, ``prior_scale`` of the model -> ``prior.loc``, ``prior.scale``)."""
    renamed = {}
    for key, value in state.items():
        for old, new in _OLD_PRIOR_KEYS.items():
            if key == prefix + old:
                key = prefix + new
        renamed[key] = value
    return renamed


def _check_data_shape(data_shape: Any) -> tuple[int, ...] | None:
    """``data_shape`` as a tuple of Python ints >= 1 (an int, a numpy integer or a sequence of
    them), or ``None``; else a :class:`ConfigError` naming it."""
    if data_shape is None:
        return None
    if as_integer(data_shape) is not None:
        data_shape = (data_shape,)
    if isinstance(data_shape, (str, bytes)) or not hasattr(data_shape, "__iter__"):
        raise ConfigError(f"Expected data_shape to be an integer or a tuple of integers but got "
                          f"{data_shape!r}")
    return tuple(check_positive_int(f"data_shape[{i}]", s) for i, s in enumerate(data_shape))


def _check_factory(latent_dim: Any, blocks: Any, observation: Any) -> tuple[int, int]:
    """The checks every VAE factory makes before building networks; ``latent_dim`` and
    ``blocks`` as ints."""
    latent_dim = check_positive_int("latent_dim", latent_dim)
    blocks = check_int("blocks", blocks, 0)
    _check_observation(observation)
    return latent_dim, blocks


def _flat_apply(net: Callable, inputs: torch.Tensor, event_dim: int):
    """Apply ``net`` to a tensor with any batch shape by flattening it to one batch axis."""
    batch = inputs.shape[: inputs.dim() - event_dim]
    if len(batch) == 1:
        return net(inputs)
    out = net(inputs.reshape((-1,) + inputs.shape[len(batch):]))
    if isinstance(out, tuple):
        return tuple(o.reshape(batch + o.shape[1:]) for o in out)
    return out.reshape(batch + out.shape[1:])


def _part_started(part: Any) -> bool:
    """Whether a part of a VAE has nothing data-dependent pending: its ``initialized`` flag
    (observation models), else its ``started`` flag (a VampPrior's pseudo-inputs, a
    :class:`~pyro_lvae.nets.Standardize` layer); a part with neither measures nothing."""
    flag = getattr(part, "initialized", None)
    if flag is None:
        flag = getattr(part, "started", True)
    return bool(flag)


def _pending_layers(net: nn.Module, where: str) -> list[str]:
    """The :class:`~pyro_lvae.nets.Standardize` layers of ``net`` that have not measured."""
    return [f"the Standardize layer {where}.{name}" for name, m in net.named_modules()
            if isinstance(m, Standardize) and not m.started]


class _DataChecks:
    """Data checks shared by the model and the guide."""

    data_shape: tuple[int, ...] | None

    @property
    def event_dim(self) -> int:
        return len(self.data_shape) if self.data_shape is not None else 1

    def check_data(self, x: Any, finite: bool | None = None) -> None:
        """Raise :class:`~pyro_lvae.errors.DataError` unless ``x`` is a non-empty floating-point
        batch of the right shape, dtype and device, and (if ``finite``; by default when Pyro's
        validation is on) free of NaN and Inf."""
        if not isinstance(x, torch.Tensor):
            raise DataError(
                f"Expected data x to be a torch.Tensor but got {type(x).__name__}; convert it "
                f"with torch.as_tensor(x, dtype=torch.float32)"
            )
        if not x.is_floating_point():
            raise DataError(
                f"Expected floating-point data but got dtype {x.dtype}; convert with x.float()"
            )
        ref = next(itertools.chain(self.parameters(), self.buffers()), None)
        if ref is not None and x.dtype != ref.dtype:
            raise DataError(
                f"data are {x.dtype} but the model is {ref.dtype}; convert the data with "
                f"x.to({ref.dtype}) (or the model with .to(dtype))"
            )
        if ref is not None and x.device != ref.device:
            raise DataError(
                f"data are on {x.device} but the model is on {ref.device}; move one of them "
                f"with .to(device)"
            )
        want = self.data_shape
        if x.dim() != 1 + self.event_dim or (want is not None and tuple(x.shape[1:]) != want):
            expected = f"(batch, {', '.join(map(str, want))})" if want else "(batch, features)"
            raise DataError(
                f"Expected data of shape {expected} but got {tuple(x.shape)}; check the number "
                f"of features and that one batch axis comes first"
            )
        if x.shape[0] == 0:
            raise DataError("the batch of data is empty (0 rows)")
        if finite or (finite is None and is_validation_enabled()):
            bad = int((~torch.isfinite(x)).sum())
            if bad:
                raise DataError(f"data contain {bad} NaN or infinite value(s); clean or impute "
                                f"them before training")


class Model(IndependentCopies, _DataChecks, PyroModule):
    """The generative model: ``z ~ prior``, ``x ~ observation(decoder(z))``.

    :param nn.Module decoder: maps ``(batch, latent_dim)`` to the observation model's
        parameters, ``(batch, k * C, ...)`` with ``k = observation.outputs_per_channel``
    :param int latent_dim: K
    :param Observation observation: the observation model p(x | z)
    :param tuple data_shape: shape of one data point (``None``: vectors of any length)
    :param str name: root name in Pyro's param store
    :param Prior prior: p(z) (default :class:`~pyro_lvae.priors.StandardNormal`, ``N(0, I)``);
        set up here for ``latent_dim``
    """

    def __init__(
        self,
        decoder: nn.Module,
        latent_dim: int,
        observation: Observation,
        data_shape: tuple[int, ...] | None = None,
        name: str = "model",
        prior: Prior | None = None,
    ) -> None:
        super().__init__(name)
        self.decoder = decoder
        self.observation = observation
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        if data_shape is not None:
            observation.setup(data_shape)
        prior = _check_prior(prior)
        self.prior = prior.setup(latent_dim, data_shape)
        prior._owned = True
        self._measured = False
        self._remember_root()

    def initialize(self, x: torch.Tensor) -> None:
        """Measure on the batch ``x`` what this program takes from data, where pending: the
        observation model's data-scaled start, the prior's (a VampPrior's pseudo-inputs) and
        the decoder's :class:`~pyro_lvae.nets.Standardize` layers; what is measured (or given,
        or loaded) is never measured again. :meth:`forward` calls it at every observed batch,
        so that the first batch of a plain ``SVI`` loop makes the start (then it is a no-op);
        :meth:`pyro_lvae.VAE.initialize` is the explicit call."""
        if self._measured:
            return
        self.observation.initialize(x)
        self.prior.initialize(x)
        initialize_from_data(self.decoder, x)
        self._measured = True

    def pending(self) -> list[str]:
        """The parts whose data-dependent state is not measured yet (empty once started)."""
        out = [] if _part_started(self.observation) else [
            f"the data start of {type(self.observation).__name__}"]
        if not _part_started(self.prior):
            out.append(f"the data start of {type(self.prior).__name__}")
        return out + _pending_layers(self.decoder, "decoder")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        self._measured = False  # what is pending is read again from the loaded parts
        # files saved before priors were modules hold the standard Normal's buffers as
        # prior_loc / prior_scale (torch loads a parent before its children)
        for old, new in _OLD_PRIOR_KEYS.items():
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def likelihood(self, z: torch.Tensor, x: torch.Tensor | None = None,
                   library: torch.Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)`` for a batch of latent codes ``z`` (any batch shape).

        :param torch.Tensor x: the data the distribution is for, where the observation model
            needs them (:attr:`~pyro_lvae.observations.Observation.needs_library`: a count
            model with the scVI mean takes each point's library size, ``x``'s total count);
            other models ignore it
        :param torch.Tensor library: the library sizes themselves, one per point, instead of
            ``x``'s. Without either, a count model with the scVI mean uses the median library
            size measured at its data start (``typical_library()`` of the count models,
            :mod:`pyro_lvae.observations.counts`)
        """
        # .forward, not __call__: inside the model's trace the observation shares the model's
        # Pyro context (its PyroParams are still pyro.param statements); outside, this skips
        # activating that context (a param-store round trip per parameter read)
        library = self._library(x, library)
        if library is None:
            return self.observation.forward(self._decode(z), self.event_dim)
        return self.observation.forward(self._decode(z), self.event_dim, library=library)

    def spread(self, z: torch.Tensor, x: torch.Tensor | None = None,
               library: torch.Tensor | None = None) -> torch.Tensor:
        """The standard deviation of ``p(x | z)`` per data dimension
        (:meth:`~pyro_lvae.observations.Observation.spread`), ``z.shape[:-1] + data shape``;
        ``x`` and ``library`` as in :meth:`likelihood`."""
        library = self._library(x, library)
        if library is None:
            return self.observation.spread(self._decode(z), self.event_dim)
        return self.observation.spread(self._decode(z), self.event_dim, library=library)

    def library_of(self, x: torch.Tensor) -> torch.Tensor | None:
        """Each point's library size, its total count (the sum of ``x`` over its dimensions),
        where the observation model needs it; ``None`` otherwise."""
        if not self.observation.needs_library:
            return None
        return x.sum(tuple(range(x.dim() - self.event_dim, x.dim())))

    def _library(self, x: torch.Tensor | None,
                 library: torch.Tensor | None) -> torch.Tensor | None:
        """The library sizes to give the observation model (``None``: it takes none)."""
        if not self.observation.needs_library:
            if library is not None:
                raise ConfigError(
                    f"library= is for the count models with the scVI mean, not for "
                    f"{type(self.observation).__name__}")
            return None
        if library is not None:
            return library
        if x is not None:
            return self.library_of(x)
        return self.observation.typical_library()

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        """The decoder's output for ``z``, checked against the observation model's shape."""
        out = _flat_apply(self.decoder, z, 1)
        if self.data_shape is not None:
            want = self.observation.output_shape(self.data_shape)
            got = tuple(out.shape[z.dim() - 1:])
            if got != want:
                raise ConfigError(
                    f"the decoder returned {got} per point but {type(self.observation).__name__} "
                    f"needs {want} for data of shape {self.data_shape} "
                    f"({self.observation.outputs_per_channel} output(s) per channel)"
                )
        return out

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None,
                library: torch.Tensor | None = None):
        """The program: observe ``x``, or generate ``batch_size`` points. A count model with
        the scVI mean takes each point's library size from ``x``; when generating, from
        ``library`` (one per point) if given, else from a sample site ``"library"`` drawn
        from the LogNormal measured at its data start."""
        if not self._store_checked and am_i_wrapped():
            self.check_param_store()
        if x is not None:
            self.check_data(x)
            if is_validation_enabled():
                self.observation.check_support(x)
            self.initialize(x)
            n = x.shape[0]
        elif batch_size is None:
            raise ConfigError("give the model data x or a batch_size to generate")
        else:
            n = batch_size
        if library is not None and (x is not None or not self.observation.needs_library):
            raise ConfigError("library= is for generating (no data x) with a count model with "
                              "the scVI mean; with data the library sizes are x's totals")
        prior = self.prior()
        with pyro.plate("data", n):
            z = pyro.sample("z", prior)
            if x is None and library is None and self.observation.needs_library:
                library = pyro.sample("library", self.observation.library_distribution())
            return pyro.sample("x", self.likelihood(z, x, library), obs=x)


class Guide(IndependentCopies, _DataChecks, PyroModule):
    """The inference model ``q(z | x) = N(loc(x), diag scale(x)^2)``.

    :param nn.Module encoder: maps a batch of data to ``(loc, scale)``, each
        ``(batch, latent_dim)`` (see :class:`~pyro_lvae.nets.GaussianEncoder`)
    """

    def __init__(
        self,
        encoder: nn.Module,
        latent_dim: int,
        data_shape: tuple[int, ...] | None = None,
        name: str = "guide",
    ) -> None:
        super().__init__(name)
        self.encoder = encoder
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        self._measured = False
        self._remember_root()

    def initialize(self, x: torch.Tensor) -> None:
        """Measure the batch ``x`` in the encoder's :class:`~pyro_lvae.nets.Standardize` layers
        that have not measured; :meth:`forward` calls it at every batch (a no-op once
        measured)."""
        if self._measured:
            return
        initialize_from_data(self.encoder, x)
        self._measured = True

    def pending(self) -> list[str]:
        """The encoder's layers whose data-dependent state is not measured yet."""
        return _pending_layers(self.encoder, "encoder")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        self._measured = False  # what is pending is read again from the loaded layers
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(loc, scale)`` of ``q(z | x)``."""
        loc, scale = _flat_apply(self.encoder, x, self.event_dim)
        return loc, scale

    def posterior_in_program(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`posterior` for another program (a VampPrior in the model): the encoder's
        parameters enter that program's trace under the guide's own param-store names, so they
        have one owner and train once under ``SVI`` and the JIT ELBOs."""
        with self._pyro_context:
            return self.posterior(x)

    def forward(self, x: torch.Tensor | None = None, batch_size: int | None = None):
        if x is None:
            raise ConfigError("the guide needs data x")
        if not self._store_checked and am_i_wrapped():
            self.check_param_store()
        self.check_data(x)
        self.initialize(x)
        with pyro.plate("data", x.shape[0]):
            loc, scale = self.posterior(x)
            return pyro.sample("z", dist.Normal(loc, scale).to_event(1))


class VAE(nn.Module):
    """A VAE whose model and guide are Pyro programs, with queries on top.

    :param nn.Module encoder: data -> ``(loc, scale)`` of ``q(z | x)``
    :param nn.Module decoder: z -> parameters of ``p(x | z)``
    :param int latent_dim: K
    :param Observation observation: the observation model (what the L-VAE variants change)
    :param data_shape: shape of one data point, e.g. ``(2,)`` or ``(1, 28, 28)``; ``None`` for
        vectors of unchecked length
    :param str name: prefix of the param-store names of model and guide (unique by default)
    :param Prior prior: p(z): :class:`~pyro_lvae.priors.StandardNormal` (default),
        :class:`~pyro_lvae.priors.MixturePrior`, :class:`~pyro_lvae.priors.VampPrior` (which
        uses this VAE's encoder), :class:`~pyro_lvae.priors.FlowPrior`

    **Data-dependent state.** Some parts take their start from data: a learned sigma with
    ``init_scale=None`` (half the data's spread), a VampPrior's pseudo-inputs, the
    :class:`~pyro_lvae.nets.Standardize` layers of ``mlp_vae(..., standardize=True)``. They are
    measured by one explicit call, :meth:`initialize` ``(x)`` with a batch of training data,
    which :func:`pyro_lvae.fit`, ``pyro-lvae train`` and the Lightning module make on their
    first batch. In a plain ``SVI`` loop the model's and the guide's first observed batch make
    it (``svi.step(x)`` the first time), so such a loop needs no extra line. Nothing else
    measures: a query (:meth:`reconstruct`, :meth:`sample`, :meth:`encode`, :meth:`sigma`,
    :meth:`spread`, :meth:`kl_per_point`, :meth:`likelihood`, :mod:`pyro_lvae.evaluate`) on a
    VAE with a start pending raises :class:`~pyro_lvae.errors.NotInitialized` instead of taking
    the start from the data it is asked about. :attr:`initialized` says whether anything is
    pending; a VAE with nothing data-dependent (a fixed sigma, ``standardize=False``, a
    standard Normal prior) is initialized from the start, and one loaded from a file
    (:func:`pyro_lvae.load`, :meth:`load_state`, a checkpoint) or copied (``copy.deepcopy``)
    is initialized where the saved one was.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        latent_dim: int,
        observation: Observation,
        *,
        data_shape: int | tuple[int, ...] | None = None,
        name: str | None = None,
        prior: Prior | None = None,
    ) -> None:
        super().__init__()
        latent_dim = check_positive_int("latent_dim", latent_dim)
        _check_observation(observation)
        data_shape = _check_data_shape(data_shape)
        name = f"vae{fresh_index()}" if name is None else str(name)
        self.name = name
        self.latent_dim = latent_dim
        self.data_shape = data_shape
        self.model = Model(decoder, latent_dim, observation, data_shape, f"{name}.model",
                           prior=prior)
        self.guide = Guide(encoder, latent_dim, data_shape, f"{name}.guide")
        self.model.prior.connect(self.guide)
        #: how a factory built this VAE (for save/load); None for hand-assembled VAEs
        self.config: dict[str, Any] | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> VAE:
        """An independent copy: same weights, new param-store names (a copy that kept the
        original's names would read and write the original's entries under SVI)."""
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        new.name = f"vae{fresh_index()}"
        rename(new.model, f"{new.name}.model")
        rename(new.guide, f"{new.name}.guide")
        return new

    @property
    def observation(self) -> Observation:
        """The observation model p(x | z) (``vae.model.observation``)."""
        return self.model.observation

    @property
    def prior(self) -> Prior:
        """The prior p(z) (``vae.model.prior``)."""
        return self.model.prior

    @property
    def device(self) -> torch.device:
        """The device of the VAE's parameters and buffers."""
        return next(itertools.chain(self.parameters(), self.buffers())).device

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the VAE's parameters."""
        return next(itertools.chain(self.parameters(), self.buffers())).dtype

    def initialize(self, x: torch.Tensor) -> None:
        """Measure the VAE's data-dependent state on the batch ``x`` of training data, where
        pending: a learned sigma's data start (half the spread of ``x``), a VampPrior's
        pseudo-inputs (the first points of ``x``), the :class:`~pyro_lvae.nets.Standardize`
        layers (the mean and standard deviation of each feature of ``x``). What is measured,
        given or loaded is never measured again (a second call is a no-op). :func:`pyro_lvae.fit`,
        ``pyro-lvae train`` and the Lightning module call it on their first batch, the model's
        and the guide's programs on their first observed batch; queries never do.

        :param torch.Tensor x: a batch of training data, ``(N, ...)`` (``N >= 2`` where a
            spread is measured)
        """
        if self.model._measured and self.guide._measured:
            return  # measured since built or loaded: a no-op
        self.model.check_data(x, finite=True)
        self.observation.check_support(x)
        self.model.initialize(x)
        self.guide.initialize(x)

    @property
    def initialized(self) -> bool:
        """Whether nothing data-dependent is pending (see :meth:`initialize`): queries need it.
        True from the start for a VAE that measures nothing on data, and for one loaded from a
        file whose saved state was started."""
        return not self.model.pending() and not self.guide.pending()

    def check_initialized(self, query: str = "this query") -> None:
        """Raise :class:`~pyro_lvae.errors.NotInitialized`, naming ``query`` and the pending
        parts, unless :attr:`initialized`.

        :param str query: what needs the state, for the message (e.g. ``"vae.sample"``)
        """
        pending = self.model.pending() + self.guide.pending()
        if pending:
            raise NotInitialized(
                f"{query} needs the VAE's data-dependent state, which is not measured yet "
                f"({', '.join(pending)}): call vae.initialize(x) with a batch of training data "
                f"first (fit, pyro-lvae train and the Lightning module do it at their first "
                f"batch, a plain SVI loop at its first step); a query never measures the data "
                f"it is given"
            )

    # ---- queries -------------------------------------------------------------------------------
    @torch.no_grad()
    def sigma(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The scale parameter of the observation model: the Normal's sigma (F-, LS-, LV-VAE,
        per-channel, scheduled and calibrated sigmas), which is its standard deviation.

        Without data: the sigma that does not depend on ``z`` (a scalar for F-, LS- and
        scheduled models, one per channel for a learned channel scale). With data ``x``: sigma
        at the reconstruction of each point (the posterior mean of ``z``), shape ``x.shape``;
        the only form for LV-VAE, whose decoder outputs sigma per dimension.

        For other families it is the family's scale, not its standard deviation (a Student-t's
        ``s``, a discretised model's continuous scale, a table's Normal columns), and families
        without one (Bernoulli, low-rank) raise: read the standard deviation of any family
        with :meth:`spread`.
        """
        self.check_initialized("vae.sigma")
        obs = self.observation
        if x is None:
            shared = obs.shared_scale
            if shared is None:
                raise ConfigError(
                    f"the sigma of {type(obs).__name__} depends on z (or it has none): pass "
                    f"data, vae.sigma(x), to read it at the reconstructions of x (or "
                    f"vae.spread(x) for the standard deviation of any observation model)"
                )
            return shared.detach()
        scale = likelihood_scale(self.likelihood(self.encode(x), x))
        if scale is None:
            raise ConfigError(f"{type(obs).__name__} has no sigma (it is not a Normal model); "
                              f"vae.spread(x) gives its standard deviation per dimension")
        return scale.expand(x.shape).clone()

    @torch.no_grad()
    def spread(self, x: torch.Tensor | None = None) -> torch.Tensor:
        """The standard deviation of ``p(x | z)`` per data dimension, for every observation
        model (:meth:`~pyro_lvae.observations.Observation.spread`): a Normal's sigma, a
        Student-t's ``s sqrt(df / (df - 2))`` (``inf`` for ``df <= 2``), the square root of a
        low-rank model's covariance diagonal, the exact standard deviation of a discretised
        model over the 256 levels, ``sqrt(p (1 - p))`` for a Bernoulli, per column for a table
        (``nan`` for categorical columns, whose values are codes).

        Without data: the spread that does not depend on ``z`` (the models whose sigma is
        shared: fixed, learned scalar or per channel, scheduled, calibrated); with data ``x``:
        the spread at the reconstruction of each point (the posterior mean of ``z``), shape
        ``x.shape``.
        """
        self.check_initialized("vae.spread")
        obs = self.observation
        if x is None:
            shared = obs.shared_scale
            if shared is None:
                raise ConfigError(
                    f"the spread of {type(obs).__name__} depends on z: pass data, "
                    f"vae.spread(x), to read it at the reconstructions of x"
                )
            return shared.detach().clone()
        z = self.encode(x)
        with poutine.block():
            spread = self.model.spread(z, x)
        return spread.expand(x.shape).clone()

    @torch.no_grad()
    def kl_per_point(self, x: torch.Tensor, num_samples: int = 64) -> float:
        """The mean over ``x`` of KL(q(z|x) || p(z)) in nats; below :data:`COLLAPSE_NATS` the
        VAE ignores its latent code. In closed form where it is known (the standard Normal
        prior), else the mean of ``log q(z|x) - log p(z)`` over ``num_samples`` draws per point
        (from a generator of its own, so the global random stream is untouched)."""
        self.guide.check_data(x)
        self.check_initialized("vae.kl_per_point")
        with poutine.block():
            loc, scale = self.guide.posterior(x)
            prior = self.model.prior()
        q = dist.Normal(loc, scale).to_event(1)
        try:
            return float(torch.distributions.kl_divergence(q, prior).mean())
        except NotImplementedError:
            pass
        generator, total = torch.Generator().manual_seed(0), 0.0
        for done in range(0, num_samples, 8):  # a few draws at a time: mixtures are wide
            k = min(8, num_samples - done)
            eps = torch.randn((k,) + tuple(loc.shape), dtype=loc.dtype, generator=generator)
            z = loc + eps.to(loc.device) * scale
            total += float((q.log_prob(z) - prior.log_prob(z)).sum())
        return total / (num_samples * loc.shape[0])

    def _warn_if_collapsed(self, x: torch.Tensor) -> None:
        if getattr(self, "_collapse_warned", False) or x.shape[0] < 2:
            return
        kl = self.kl_per_point(x)
        if kl < COLLAPSE_NATS:
            self._collapse_warned = True
            warnings.warn(
                f"this VAE is collapsed: KL(q(z|x) || p(z)) is {kl:.3g} nats per point on these "
                f"data, so its reconstructions ignore x (every z decodes near the data mean). "
                f"{collapse_remedy(self.observation)}",
                stacklevel=3,
            )

    @torch.no_grad()
    def encode(self, x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Latent codes of ``x``: the posterior mean (``mode="mean"``) or a draw from ``q(z|x)``."""
        _check_mode(mode)
        self.guide.check_data(x)
        self.check_initialized("vae.encode")
        with poutine.block():
            if mode == "mean":
                return self.guide.posterior(x)[0]
            return poutine.trace(self.guide).get_trace(x).nodes["z"]["value"]

    @torch.no_grad()
    def likelihood(self, z: torch.Tensor, x: torch.Tensor | None = None,
                   library: torch.Tensor | None = None) -> dist.TorchDistribution:
        """``p(x | z)``: the observation model's distribution at latent codes ``z``; ``x`` and
        ``library`` give a count model with the scVI mean its library sizes
        (:meth:`Model.likelihood`)."""
        self.check_initialized("vae.likelihood")
        with poutine.block():
            return self.model.likelihood(z, x, library)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        """Reconstructions of ``x``.

        ``mode="mean"``: the decoder mean at the posterior mean of ``z``. ``mode="sample"``:
        ``z ~ q(z | x)``, then ``x' ~ p(x | z)`` (with a learned sigma, this carries its noise).
        """
        _check_mode(mode)
        self.guide.check_data(x)
        self.check_initialized("vae.reconstruct")
        self._warn_if_collapsed(x)
        library = self.model.library_of(x)  # a count model's: x's own library sizes
        with poutine.block():
            if mode == "mean":
                loc = self.encode(x)
                model = poutine.condition(self.model, data={"z": loc})
                trace = poutine.trace(model).get_trace(batch_size=x.shape[0], library=library)
                return trace.nodes["x"]["fn"].mean
            guide_trace = poutine.trace(self.guide).get_trace(x)
            model = poutine.replay(self.model, trace=guide_trace)
            trace = poutine.trace(model).get_trace(batch_size=x.shape[0], library=library)
            return trace.nodes["x"]["value"]

    @torch.no_grad()
    def sample(self, n: int, mode: str = "mean",
               library: torch.Tensor | None = None) -> torch.Tensor:
        """Generate ``n`` points: ``z ~ p(z)`` (the model's prior), then the mean of ``p(x | z)``
        (``mode="mean"``) or a draw from it (``mode="sample"``).

        :param torch.Tensor library: for a count model with the scVI mean, the library size
            (total count) of each of the ``n`` points, shape ``(n,)`` or a scalar; by default
            they are drawn from the LogNormal measured at its data start
        """
        _check_mode(mode)
        n = check_positive_int("n", n)
        self.check_initialized("vae.sample")
        if library is not None:
            library = torch.as_tensor(library, dtype=self.dtype, device=self.device)
            library = library.expand(n)
        with poutine.block():
            trace = poutine.trace(self.model).get_trace(batch_size=n, library=library)
        site = trace.nodes["x"]
        return site["fn"].mean if mode == "mean" else site["value"]

    # ---- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write weights and configuration to ``path`` (atomically; loads with
        ``torch.load(weights_only=True)``)."""
        atomic_save(self.to_file_dict(), path)

    def to_file_dict(self) -> dict[str, Any]:
        """What :meth:`save` writes: format tag, configuration (JSON) and ``state_dict``."""
        config = None
        if self.config is not None:  # the observation's settings now (a start taken from data)
            config = json.dumps({**self.config, "observation": self.observation.config(),
                                 "prior": self.prior.config()})
        return {
            "format": _FORMAT,
            "version": 1,
            "config": config,
            "state_dict": self.state_dict(),
        }

    @classmethod
    def from_file_dict(cls, blob: Any, source: str = "file", map_location: Any = None) -> VAE:
        """Rebuild a VAE from :meth:`to_file_dict`'s dictionary (or a training checkpoint's);
        ``source`` names it in error messages. The dictionary is checked as :meth:`load`
        describes before anything is built."""
        blob = _model_blob(blob, source)
        config = _read_config(blob, source)
        state = blob.get("state_dict")
        stored = _check_state(state, source)
        _check_sizes(config, len(state), stored, source)
        vae = _build_from_config(config, stored, source)
        vae._load_checked(state, source)
        if map_location is not None:
            vae.to(map_location)
        return vae

    @classmethod
    def load(cls, path: str | os.PathLike, map_location: Any = None) -> VAE:
        """Rebuild a VAE saved by :meth:`save` (or from a training checkpoint of
        :func:`pyro_lvae.fit`). ``map_location`` as in :func:`torch.load`, e.g. ``"cpu"`` for a
        model trained on a GPU.

        A file is untrusted until checked, and nothing is built before it is: the file is read
        with ``torch.load(weights_only=True)`` (Python objects that could run code are refused,
        :func:`pyro_lvae.io.safe_load`); its configuration must have the structure that
        :meth:`save` writes; each size in it (``hidden``, ``blocks``, ``width``, ``convs``,
        ``latent_dim``, the data shape, the prior's ``components``, ``layers`` and ``hidden``,
        a low-rank ``rank``, a table's classes, ...) must be at most the weights the file
        holds, and each count of layers or blocks at most its tensors; the model is then built
        within a budget of 4 times the file's tensor elements (plus 2**20) and its tensors must
        have the file's shapes. Weights holding NaN or Inf (a diverged model) are refused:
        read such a file with ``torch.load(path, weights_only=True)`` to inspect it. Each
        refusal is a :class:`~pyro_lvae.errors.CheckpointError` naming the file and the field,
        tensor or object at fault."""
        return cls.from_file_dict(safe_load(path, map_location), str(path), map_location)

    def load_state(self, path: str | os.PathLike) -> None:
        """Load weights saved by :meth:`save` into this (same-shaped) VAE; weights holding NaN
        or Inf are refused as in :meth:`load`."""
        blob = _model_blob(safe_load(path, map_location=self.device), str(path))
        state = blob.get("state_dict")
        _check_state(state, str(path))
        self._load_checked(state, str(path))

    def _load_checked(self, state: dict[str, torch.Tensor], source: str) -> None:
        state = upgrade_state_dict(state, "model.")
        own = self.state_dict()
        # files written before learned sigmas saved their start lack its extra state
        missing = sorted(k for k in set(own) - set(state) if not k.endswith("_extra_state"))
        extra = sorted(set(state) - set(own))
        wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if missing or extra or wrong:
            parts = []
            if missing:
                parts.append(f"missing {', '.join(missing[:3])}")
            if extra:
                parts.append(f"unexpected {', '.join(extra[:3])}")
            if wrong:
                parts.append(f"shape mismatch in {', '.join(wrong[:3])}")
            raise CheckpointError(
                f"{source} was saved from a different configuration ({'; '.join(parts)})"
            )
        self.load_state_dict(state, strict=False)


def mlp_vae(
    data_dim: int,
    latent_dim: int,
    observation: Observation,
    hidden: int = 200,
    blocks: int = 4,
    activation: str = "relu",
    name: str | None = None,
    standardize: bool = True,
    prior: Prior | None = None,
    log1p: bool | None = None,
) -> VAE:
    """A VAE for vectors with residual-MLP encoder and decoder (the paper's 4 blocks of 200).

    :param int data_dim: D, the number of features
    :param int latent_dim: K
    :param Observation observation: the observation model; its ``outputs_per_channel`` sets the
        decoder's output size (D or 2 D)
    :param int hidden: units per residual block
    :param int blocks: residual blocks in each network
    :param str activation: ``relu``, ``elu``, ``silu`` or ``tanh``
    :param bool standardize: measure each feature's mean and standard deviation on the first
        batch (:class:`~pyro_lvae.nets.Standardize`), feed the encoder standardised data and,
        for observation models with a location (``observation.location_first``), let the
        decoder output the mean in standardised units; training is then the same on the data
        times any factor. ``False`` gives the paper's networks, which see the data as they are
        (the studies use it to reproduce the paper)
    :param Prior prior: p(z) (default ``N(0, I)``; see :mod:`pyro_lvae.priors`)
    :param bool log1p: feed the encoder ``log1p(x)`` (:class:`~pyro_lvae.nets.Log1p`, before
        the standardising layer): counts are heavy-tailed, their logarithm is not. ``None``
        (default): for the count models (``observation.counts``) only
    """
    data_dim = check_positive_int("data_dim", data_dim)
    if log1p is None:
        log1p = bool(observation.counts) if isinstance(observation, Observation) else False
    hidden = check_positive_int("hidden", hidden)
    latent_dim, blocks = _check_factory(latent_dim, blocks, observation)
    try:
        encoder_net = ResidualMLP(data_dim, 2 * latent_dim, hidden, blocks, activation)
        decoder = ResidualMLP(
            latent_dim, observation.output_shape((data_dim,))[0], hidden, blocks, activation
        )
    except ValueError as e:
        raise ConfigError(str(e)) from None
    inputs = ([Log1p()] if log1p else []) + ([Standardize(data_dim)] if standardize else [])
    if inputs:
        encoder_net = nn.Sequential(*inputs, encoder_net)
    if standardize and observation.location_first:
        decoder = nn.Sequential(decoder, Standardize(data_dim, inverse=True))
    encoder = GaussianEncoder(encoder_net, latent_dim)
    vae = VAE(encoder, decoder, latent_dim, observation, data_shape=(data_dim,), name=name,
              prior=prior)
    vae.config = {
        "builder": "mlp_vae",
        "args": {"data_dim": data_dim, "latent_dim": latent_dim, "hidden": hidden,
                 "blocks": blocks, "activation": activation, "standardize": bool(standardize),
                 "log1p": bool(log1p)},
        "observation": observation.config(),
        "prior": vae.prior.config(),
    }
    return vae


def conv_vae(
    image_shape: tuple[int, int, int],
    latent_dim: int,
    observation: Observation,
    width: int = 32,
    convs: int = 3,
    blocks: int = 4,
    activation: str = "silu",
    name: str | None = None,
    prior: Prior | None = None,
) -> VAE:
    """A VAE for images with convolutional ResNet encoder and decoder.

    The paper's shapes: MNIST-like 28x28 images ``convs=3, blocks=4, latent_dim=256``; CelebA
    64x64 ``convs=4, blocks=5, latent_dim=2048``. The decoder outputs
    ``observation.outputs_per_channel`` times the image's channels (a mean and a scale per
    pixel for :class:`~pyro_lvae.LearnedVectorScale`).

    :param tuple image_shape: ``(channels, height, width)``; height and width divisible by
        ``2 ** (convs - 1)``
    :param int latent_dim: K
    :param Observation observation: the observation model
    :param int width: channels after the first convolution (doubled at every downsampling)
    :param int convs: convolutions in the encoder (and transposed convolutions + 1 in the
        decoder)
    :param int blocks: residual blocks in each network
    :param Prior prior: p(z) (default ``N(0, I)``; see :mod:`pyro_lvae.priors`)
    """
    image_shape = tuple(image_shape)
    width, convs = check_positive_int("width", width), check_positive_int("convs", convs)
    latent_dim, blocks = _check_factory(latent_dim, blocks, observation)
    try:
        encoder = GaussianEncoder(
            ConvEncoder(image_shape, 2 * latent_dim, width, convs, blocks, activation),
            latent_dim)
        decoder = ConvDecoder(latent_dim, image_shape, observation.output_shape(image_shape)[0],
                              width, convs, blocks, activation)
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None
    vae = VAE(encoder, decoder, latent_dim, observation, data_shape=image_shape, name=name,
              prior=prior)
    vae.config = {
        "builder": "conv_vae",
        "args": {"image_shape": list(image_shape), "latent_dim": latent_dim, "width": width,
                 "convs": convs, "blocks": blocks, "activation": activation},
        "observation": observation.config(),
        "prior": vae.prior.config(),
    }
    return vae


#: factories that :meth:`VAE.load` can rebuild from a saved configuration
BUILDERS: dict[str, Callable[..., VAE]] = {"mlp_vae": mlp_vae, "conv_vae": conv_vae}
# builder arguments added since files were first written, at the value those files were built with
_OLD_DEFAULTS: dict[str, dict[str, Any]] = {"mlp_vae": {"standardize": False, "log1p": False}}


def rebuild(vae: VAE, observation: Observation) -> VAE:
    """A freshly initialised VAE of the same architecture (and kind of prior) as ``vae`` with
    another observation model (factory-built VAEs only). Like any new VAE, it measures its own
    data-dependent state (:meth:`VAE.initialize`, or training's first batch) where it has
    any; it does not take ``vae``'s."""
    if vae.config is None:
        raise ConfigError(
            "this VAE was assembled by hand, so its architecture cannot be rebuilt; build the "
            "new VAE with your own encoder and decoder"
        )
    return BUILDERS[vae.config["builder"]](observation=observation,
                                           prior=prior_from_config(vae.prior.config()),
                                           **vae.config["args"])


def fixed_star(vae: VAE) -> VAE:
    """The F*-VAE of a trained LS-VAE: same architecture, fresh weights, sigma fixed at the
    LS-VAE's final learned value (Berger & Sebag, Section 4.2). A fixed sigma measures nothing;
    with ``standardize=True`` its standardising layers are measured again on its own first
    batch (see :func:`rebuild`)."""
    obs = vae.observation
    if not isinstance(obs, LearnedScalarScale):
        raise ConfigError(
            f"F*-VAE needs a trained LS-VAE (LearnedScalarScale) but the observation model is "
            f"{type(obs).__name__}"
        )
    return rebuild(vae, FixedScale(float(obs.scale.detach())))
