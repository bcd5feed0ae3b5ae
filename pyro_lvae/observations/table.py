"""``p(x | z)`` for rows of a table of mixed columns: Normal, Bernoulli and Categorical terms.

An observation model like the others of :mod:`pyro_lvae.observations` (registered as ``mixed``);
the encoding of a table into such rows, the table VAE and the metrics are in
:mod:`pyro_lvae.tabular`, which re-exports :class:`MixedObservation`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.distributions.torch_distribution import TorchDistribution

from ..errors import ConfigError, DataError, check_positive
from ..registry import Registry
from .base import OBSERVATIONS, Observation
from .discrete import lattice_normal_log_prob
from .normal import FixedScale, LearnedChannelScale, LearnedScalarScale, LearnedVectorScale

__all__ = ["MixedObservation", "MixedColumns", "SIGMA_MODES"]


class _ClampedColumnScale(Observation):
    """A sigma per column, a plain parameter clamped to ``[min_scale, max_scale]`` (CTGAN's
    TVAE). Its arguments are checked by :class:`MixedObservation`: the start lies strictly inside
    the clamp, where the clamp passes gradients."""

    def __init__(self, columns: int, *, init_scale: float, min_scale: float,
                 max_scale: float) -> None:
        super().__init__()
        self.init_scale, self.min_scale, self.max_scale = init_scale, min_scale, max_scale
        self.raw_scale = torch.nn.Parameter(torch.full((columns,), init_scale))

    def forward(self, output: torch.Tensor, event_dim: int) -> dist.TorchDistribution:
        scale = self.raw_scale.clamp(self.min_scale, self.max_scale)
        scale = scale.reshape(scale.shape + (1,) * (event_dim - 1))
        return dist.Normal(output, scale).to_event(event_dim)

    def config(self) -> dict[str, Any]:
        return {"columns": self.raw_scale.numel(), "init_scale": self.init_scale,
                "min_scale": self.min_scale, "max_scale": self.max_scale}


@dataclass(frozen=True)
class _SigmaMode:
    """How a sigma mode models the continuous columns.

    ``make(columns, sigma, min_scale, max_scale)`` makes the Normal observation model (calling
    the mode does); ``sigma``: the default start; ``bounds``: a clamp that replaces
    ``min_scale`` and ``max_scale``; ``keys``: the names the model's state had in the table
    model's own state before it was composed (a key not listed kept its name)."""

    make: Callable[[int, float, float, float], Observation]
    sigma: float = 1.0
    bounds: tuple[float, float] | None = None
    keys: dict[str, str] = field(default_factory=dict)

    def __call__(self, columns: int, sigma: float, min_scale: float,
                 max_scale: float) -> Observation:
        return self.make(columns, sigma, min_scale, max_scale)


#: how a mixed table's continuous columns get their sigma: the observation models of the same
#: names (``fixed``, ``learned-scalar``, ``learned-channel``: one per column, ``learned-vector``:
#: output by the decoder per row and column) and ``tvae`` (one per column, clamped to
#: [0.01, 1] as in CTGAN's TVAE). ``learned-column`` and ``decoder``, the former names of
#: ``learned-channel`` and ``learned-vector``, are deprecated aliases.
SIGMA_MODES = Registry("sigma mode")
SIGMA_MODES.add("fixed", _SigmaMode(lambda n, s, lo, hi: FixedScale(scale=s),
                                    keys={"scale": "fixed_scale"}))
SIGMA_MODES.add("learned-scalar", _SigmaMode(
    lambda n, s, lo, hi: LearnedScalarScale(init_scale=s, min_scale=lo)))
SIGMA_MODES.add("learned-channel", _SigmaMode(
    lambda n, s, lo, hi: LearnedChannelScale(n, init_scale=s, min_scale=lo)),
    aliases=("learned-column",))
SIGMA_MODES.add("learned-vector", _SigmaMode(
    lambda n, s, lo, hi: LearnedVectorScale(init_scale=s, min_scale=lo)), aliases=("decoder",))
SIGMA_MODES.add("tvae", _SigmaMode(
    lambda n, s, lo, hi: _ClampedColumnScale(n, init_scale=s, min_scale=lo, max_scale=hi),
    sigma=0.1, bounds=(0.01, 1.0)))


class MixedColumns(TorchDistribution):
    """The distribution of a row of mixed columns (event shape: the number of columns).

    ``mean``: the Normal mean of continuous columns, the probability of binary ones and the most
    probable category of categorical ones; ``sample``: a draw of every column;
    ``scale``: the continuous columns' sigma.
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real_vector

    def __init__(self, layout: dict[str, Any], loc: torch.Tensor, scale: torch.Tensor,
                 bin_logits: torch.Tensor, cat_logits: list[torch.Tensor]) -> None:
        self.layout = layout
        self.loc, self.scale, self.bin_logits, self.cat_logits = loc, scale, bin_logits, cat_logits
        super().__init__(loc.shape[:-1], torch.Size([layout["n"]]), validate_args=False)

    def expand(self, batch_shape, _instance=None):
        shape = torch.Size(batch_shape)
        return MixedColumns(self.layout, self.loc.expand(shape + self.loc.shape[-1:]),
                            self.scale.expand(shape + self.scale.shape[-1:]),
                            self.bin_logits.expand(shape + self.bin_logits.shape[-1:]),
                            [c.expand(shape + c.shape[-1:]) for c in self.cat_logits])

    def _lattice(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(step, low, high)`` of the integer columns' lattices, as tensors."""
        lattice = torch.tensor(self.layout["lattice"], dtype=self.loc.dtype,
                               device=self.loc.device)
        return lattice[:, 0], lattice[:, 1], lattice[:, 2]

    def _continuous_log_prob(self, xc: torch.Tensor) -> torch.Tensor:
        """The Normal terms: a density per real column, a lattice mass per integer column."""
        lay = self.layout
        if not lay["int"]:
            return dist.Normal(self.loc, self.scale).log_prob(xc).sum(-1)
        loc, scale = torch.broadcast_tensors(self.loc, self.scale)
        real, ints = lay["real"], lay["int"]
        lp = dist.Normal(loc[..., real], scale[..., real]).log_prob(xc[..., real]).sum(-1)
        step, low, high = self._lattice()
        return lp + lattice_normal_log_prob(xc[..., ints], loc[..., ints], scale[..., ints],
                                            step, low, high).sum(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        lay = self.layout
        lp = self._continuous_log_prob(x[..., lay["cont"]])
        if lay["bin"]:
            lp = lp + dist.Bernoulli(logits=self.bin_logits).log_prob(
                x[..., lay["bin"]]).sum(-1)
        for j, logits in zip(lay["cat"], self.cat_logits, strict=True):
            lp = lp + dist.Categorical(logits=logits).log_prob(x[..., j].long())
        return lp

    def _assemble(self, cont, binary, cats) -> torch.Tensor:
        lay = self.layout
        out = self.loc.new_zeros(self.batch_shape + (lay["n"],))
        out[..., lay["cont"]] = cont
        if lay["bin"]:
            out[..., lay["bin"]] = binary
        for j, c in zip(lay["cat"], cats, strict=True):
            out[..., j] = c.to(out.dtype)
        return out

    def sample(self, sample_shape=()):
        if sample_shape:
            return self.expand(torch.Size(sample_shape) + self.batch_shape).sample()
        return self.draw("sample", "sample")

    @property
    def mean(self) -> torch.Tensor:
        return self._assemble(self.loc, torch.sigmoid(self.bin_logits),
                              [lg.argmax(-1) for lg in self.cat_logits])

    @property
    def mode(self) -> torch.Tensor:
        """Decoder means for continuous columns, the likelier value of binary and categorical
        ones."""
        return self.draw("mean", "argmax")

    @torch.no_grad()
    def draw(self, continuous: str = "sample", discrete: str = "sample") -> torch.Tensor:
        """Rows with continuous columns drawn (``"sample"``) or at their mean (``"mean"``),
        and binary and categorical columns drawn (``"sample"``) or at their likelier value
        (``"argmax"``: TVAE's decoding)."""
        if continuous not in ("sample", "mean") or discrete not in ("sample", "argmax"):
            raise ConfigError(f"Expected continuous in (sample, mean) and discrete in (sample, "
                              f"argmax) but got {continuous!r}, {discrete!r}")
        cont = dist.Normal(self.loc, self.scale).sample() if continuous == "sample" else self.loc
        if self.layout["int"] and continuous == "sample":  # the bin of the draw: a lattice value
            step, low, high = self._lattice()
            ints = self.layout["int"]
            cont = cont.clone()
            cont[..., ints] = low + step * ((cont[..., ints] - low) / step).round().clamp(
                min=torch.zeros_like(low), max=(high - low) / step)
        if discrete == "sample":
            binary = dist.Bernoulli(logits=self.bin_logits).sample()
            cats = [dist.Categorical(logits=lg).sample() for lg in self.cat_logits]
        else:
            binary = (self.bin_logits > 0).to(self.loc.dtype)
            cats = [lg.argmax(-1) for lg in self.cat_logits]
        return self._assemble(cont, binary, cats)


class MixedObservation(Observation):
    """``p(x | z)`` for rows of mixed columns (a table encoded by
    :class:`pyro_lvae.tabular.TableTransformer`): one observed site per row whose log-density
    sums a Normal term per continuous column, the mass of a Normal on its lattice per integer
    column (bounded: a learned sigma cannot sink to its floor on the lattice as a density's
    does), a Bernoulli term per binary column and a Categorical term per categorical column.
    The continuous and integer columns' sigma is ``fixed``, ``learned-scalar`` (one for all
    columns), ``learned-channel`` (one per column, not depending on z), ``learned-vector``
    (output by the decoder per column and row: the LV-VAE of tables) or ``tvae`` (one per
    column, clamped to [0.01, 1], as in CTGAN's TVAE): :data:`SIGMA_MODES`, named as the
    observation models they use (the former names ``learned-column`` and ``decoder`` still
    work, with a ``DeprecationWarning``). The Normal terms come
    from an observation model of :mod:`pyro_lvae.observations` (:class:`FixedScale`,
    :class:`LearnedScalarScale`, :class:`LearnedChannelScale`, :class:`LearnedVectorScale`),
    the attribute ``continuous``.

    :param schema: per column ``["continuous"]``, ``["integer", step, low, high]`` (a Normal
        discretised on the lattice ``low, low + step, ..., high`` of encoded values, edge bins
        open, so held-out values beyond the range fall in them:
        :func:`~pyro_lvae.observations.discrete.lattice_normal_log_prob`),
        ``["binary"]`` or ``["categorical", K]`` (:meth:`TableTransformer.schema`)
    :param str sigma_mode: one of :data:`SIGMA_MODES`
    :param float sigma: the fixed sigma (``fixed``) or the initial one (learned modes); by
        default 1, and 0.1 for ``tvae`` (CTGAN's start, strictly inside the clamp: at a bound
        the clamp passes no gradient and sigma would never move)
    :param float min_scale: floor on learned sigmas (``tvae``: 0.01)
    :param float max_scale: ceiling, for ``tvae`` only (1.0)
    """

    kind = "mixed"
    label = "mixed columns"  # its sigma depends on the sigma mode

    def __init__(self, schema: list[list[Any]], sigma_mode: str = "learned-channel",
                 sigma: float | None = None, min_scale: float = 1e-3,
                 max_scale: float = 1.0) -> None:
        super().__init__()
        self.sigma_mode = SIGMA_MODES.resolve(sigma_mode)
        self.schema = [list(c) for c in schema]
        self.layout = _layout(self.schema)
        cont = self.layout["cont"]
        mode = SIGMA_MODES[self.sigma_mode]
        if sigma is None:
            sigma = mode.sigma
        if mode.bounds is not None:
            min_scale, max_scale = mode.bounds
            if not min_scale < sigma < max_scale:
                raise ConfigError(f"a TVAE-like sigma starts strictly inside ({min_scale:g}, "
                                  f"{max_scale:g}), where its clamp passes gradients; got "
                                  f"sigma={sigma} (leave it unset for CTGAN's {mode.sigma:g})")
        self.init_scale = check_positive("sigma", sigma)
        self.min_scale = check_positive("min_scale", min_scale)
        self.max_scale = check_positive("max_scale", max_scale)
        self._keys = mode.keys
        self.continuous = mode(max(len(cont), 1), self.init_scale, self.min_scale,
                               self.max_scale)
        self._register_state_dict_hook(_flatten_state)

    @property
    def raw_scale(self) -> torch.Tensor:
        """The unclamped sigma per continuous column of the ``tvae`` mode (a parameter)."""
        return self.continuous.raw_scale

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # the continuous columns' state is saved under the table model's own names (the layout
        # of the checkpoints written before the Normal model was a part of its own)
        for name, flat in self._flat_names().items():
            if prefix + flat in state_dict:
                state_dict[prefix + "continuous." + name] = state_dict.pop(prefix + flat)
        extra = prefix + "continuous._extra_state"
        if type(self.continuous).get_extra_state is not torch.nn.Module.get_extra_state:
            # the start of a learned sigma is the table model's own setting (``sigma``)
            state_dict.setdefault(extra, self.continuous.get_extra_state())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _flat_names(self) -> dict[str, str]:
        """The continuous model's state names -> the table model's."""
        return {name: self._keys.get(name, name) for name in self.continuous.state_dict()
                if not name.endswith("_extra_state")}

    def output_shape(self, data_shape: tuple[int, ...]) -> tuple[int, ...]:
        lay = self.layout
        if tuple(data_shape) != (lay["n"],):
            raise ConfigError(f"the mixed observation model has {lay['n']} columns but the data "
                              f"shape is {tuple(data_shape)}")
        n_cont = len(lay["cont"]) * self.continuous.outputs_per_channel
        return (n_cont + len(lay["bin"]) + sum(lay["k"]),)

    def forward(self, output: torch.Tensor, event_dim: int) -> MixedColumns:
        lay = self.layout
        width = len(lay["cont"]) * self.continuous.outputs_per_channel
        normal, rest = output[..., :width], output[..., width:]
        if width:
            base = self.continuous(normal, event_dim=1).base_dist
            loc, scale = base.loc, base.scale
        else:  # no continuous column
            loc = scale = normal
        n_b = len(lay["bin"])
        bin_logits, rest = rest[..., :n_b], rest[..., n_b:]
        cats = list(rest.split(lay["k"], dim=-1)) if lay["k"] else []
        return MixedColumns(lay, loc, scale, bin_logits, cats)

    def spread(self, output: torch.Tensor, event_dim: int) -> torch.Tensor:
        """The standard deviation per column: a continuous column's sigma; an integer
        column's sigma of the Normal before its discretisation on the lattice; a binary
        column's ``sqrt(p (1 - p))``; ``nan`` for a categorical column (its values are codes,
        which have no standard deviation)."""
        rows = self.forward(output, event_dim)
        lay = self.layout
        out = rows.loc.new_full(rows.batch_shape + (lay["n"],), float("nan"))
        if lay["cont"]:
            out[..., lay["cont"]] = rows.scale.expand(rows.loc.shape)
        if lay["bin"]:
            out[..., lay["bin"]] = dist.Bernoulli(logits=rows.bin_logits).stddev
        return out

    def check_support(self, x: torch.Tensor) -> None:
        lay = self.layout
        for i, (step, low, _) in zip(lay["int"], lay["lattice"], strict=True):
            v = (x[..., lay["cont"][i]] - low) / step  # beyond the range: the open edge bins
            if not bool(((v - v.round()).abs() <= 1e-3).all()):
                raise DataError(f"integer column {lay['cont'][i]} must hold values of its "
                                f"lattice (encode the table with TableTransformer)")
        if lay["bin"]:
            b = x[..., lay["bin"]]
            if not bool(((b == 0) | (b == 1)).all()):
                raise DataError("binary columns must hold 0 or 1 (encode the table with "
                                "TableTransformer)")
        for j, k in zip(lay["cat"], lay["k"], strict=True):
            c = x[..., j]
            if not bool(((c == c.round()) & (c >= 0) & (c < k)).all()):
                raise DataError(f"categorical column {j} must hold codes 0..{k - 1} (encode the "
                                f"table with TableTransformer)")

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "schema": self.schema, "sigma_mode": self.sigma_mode,
                "sigma": self.init_scale, "min_scale": self.min_scale,
                "max_scale": self.max_scale}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MixedObservation:
        """The model of :meth:`config` (without its ``kind``); a file saved with a former sigma
        mode name (``learned-column``, ``decoder``) loads as the mode's current name."""
        config = dict(config)
        if "sigma_mode" in config:
            config["sigma_mode"] = SIGMA_MODES.resolve(config["sigma_mode"], warn=False)
        return OBSERVATIONS.build(cls.kind, **config)

    def extra_repr(self) -> str:
        lay = self.layout
        return (f"continuous={len(lay['cont'])}, binary={len(lay['bin'])}, "
                f"categorical={lay['k']}, sigma_mode={self.sigma_mode}")


_KINDS = {"continuous": 1, "integer": 4, "binary": 1, "categorical": 2}


def _layout(schema: list[list[Any]]) -> dict[str, Any]:
    """Where each kind of column sits: ``cont`` (Normal terms: continuous and integer columns),
    ``real`` and ``int`` (positions within ``cont``), ``lattice`` (``step, low, high`` of each
    integer column, encoded), ``bin``, ``cat`` and ``k`` (categories per categorical column)."""
    bad = [c for c in schema if not c or _KINDS.get(c[0]) != len(c)]
    if bad or not schema:
        raise ConfigError(f"a schema lists columns as ['continuous'], ['integer', step, low, "
                          f"high], ['binary'] or ['categorical', K]; got {bad or 'no columns'}")
    cont = [j for j, c in enumerate(schema) if c[0] in ("continuous", "integer")]
    ints = [i for i, j in enumerate(cont) if schema[j][0] == "integer"]
    cat = [j for j, c in enumerate(schema) if c[0] == "categorical"]
    real = [i for i in range(len(cont)) if i not in ints]
    lattice = [[float(v) for v in schema[cont[i]][1:]] for i in ints]
    return {"n": len(schema), "cont": cont, "real": real, "int": ints, "lattice": lattice,
            "bin": [j for j, c in enumerate(schema) if c[0] == "binary"], "cat": cat,
            "k": [int(schema[j][1]) for j in cat]}


def _flatten_state(module: MixedObservation, state: dict[str, Any], prefix: str,
                   local_metadata: Any) -> None:
    """Save the continuous columns' state under the table model's own names (see
    :meth:`MixedObservation._load_from_state_dict`)."""
    for name, flat in module._flat_names().items():
        key = prefix + "continuous." + name
        if key in state:
            state[prefix + flat] = state.pop(key)
    state.pop(prefix + "continuous._extra_state", None)  # the start is the model's ``sigma``
