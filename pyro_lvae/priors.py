"""Priors p(z): the latent side of the VAE, swappable like the observation models.

A prior is a :class:`~pyro.nn.PyroModule` that returns a distribution over one latent code
(event shape ``(latent_dim,)``, batch shape ``()``); the VAE's model draws ``z`` from it inside
the plate ``"data"``, so it works under any ELBO, ``Predictive``, :func:`~pyro_lvae.weight_latents`
/ :func:`~pyro_lvae.annealed` and :func:`~pyro_lvae.fit`. Its learned parameters are module
parameters of the model (``PyroParam``\\ s and plain ``nn.Module`` weights, registered in Pyro's
param store under the model's name when the model runs), so they train on every path that
trains the model.

=================================  =========== ===========================================
class                              kind        p(z)
=================================  =========== ===========================================
:class:`StandardNormal`            ``normal``  ``N(0, I)`` (the default)
:class:`MixturePrior`              ``mixture`` ``sum_c w_c N(m_c, diag s_c^2)``, all learned
:class:`VampPrior`                 ``vamp``    ``(1/C) sum_c q(z | u_c)``, pseudo-inputs
                                               ``u_c`` learned, ``q`` the guide's encoder
:class:`FlowPrior`                 ``flow``    ``N(0, I)`` pushed through learned Pyro
                                               transforms (autoregressive, splines)
=================================  =========== ===========================================

A VAE builds its prior for its latent size (:meth:`Prior.setup`) and gives it its guide
(:meth:`Prior.connect`; the VampPrior uses the encoder). :func:`build` makes a prior from its
kind and keyword settings, :func:`prior_from_config` from :meth:`Prior.config`.

``TraceMeanField_ELBO`` uses the closed-form ``KL(q(z|x) || p(z))`` where
``torch.distributions.kl_divergence`` knows it (the standard Normal only, :attr:`Prior.analytic_kl`)
and otherwise falls back, site by site, to the one-draw estimate ``log q(z|x) - log p(z)`` of
``Trace_ELBO``: for the mixture, VampPrior and flow priors it is ``Trace_ELBO``'s objective.

**References**

- J. Tomczak, M. Welling. *VAE with a VampPrior*. AISTATS 2018.
- M. Hoffman, M. Johnson. *ELBO surgery: yet another way to carve up the variational evidence
  lower bound*. NIPS Workshop on Advances in Approximate Bayesian Inference, 2016.
- N. Dilokthanakul et al. *Deep Unsupervised Clustering with Gaussian Mixture Variational
  Autoencoders*. arXiv:1611.02648, 2016.
- C. Durkan, A. Bekasov, I. Murray, G. Papamakarios. *Neural Spline Flows*. NeurIPS 2019.
- G. Papamakarios, T. Pavlakou, I. Murray. *Masked Autoregressive Flow for Density
  Estimation*. NeurIPS 2017.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any

import pyro.distributions as dist
import pyro.distributions.transforms as T
import torch
from pyro.distributions import constraints
from pyro.nn import PyroModule, PyroParam
from pyro.poutine.runtime import am_i_wrapped
from torch import nn

from .errors import ConfigError, check_positive, check_positive_int
from .limits import check_parameters
from .names import IndependentCopies, registered_by_pyro_module
from .registry import Registry

__all__ = ["Prior", "StandardNormal", "MixturePrior", "VampPrior", "FlowPrior", "PRIORS",
           "build", "settings_of", "prior_from_config", "FLOW_TRANSFORMS"]

#: every prior by its command-line name (filled as the classes are defined)
PRIORS = Registry("prior")

_instances = itertools.count()


class Prior(IndependentCopies, PyroModule):
    """Base class: a learned or fixed distribution over one latent code.

    Subclasses set :attr:`kind` (which registers them in :data:`PRIORS`), create their
    parameters in :meth:`_build` and return the distribution from :meth:`forward`. A prior is
    built without its size; the VAE calls :meth:`setup` with the latent size (and the data
    shape), and :meth:`connect` with its guide. On its own (in your Pyro program), call
    ``prior.setup(latent_dim)`` once, then ``pyro.sample("z", prior())``.

    Where it can live in a Pyro program, as an observation model can: on its own (a root module
    with a unique param-store name), as an attribute of a ``PyroModule``, or inside a plain
    ``nn.Module`` registered with ``pyro.module`` (its parameters then live in the param store
    under that module's name only, under every ELBO, the JIT ones included).
    """

    #: short name used by the command line and in saved configurations
    kind: str = ""
    #: ``KL(N(loc, diag scale^2) || p)`` has a closed form (``TraceMeanField_ELBO`` uses it)
    analytic_kl: bool = False

    def __init__(self) -> None:
        super().__init__(f"{self.kind or 'prior'}{next(_instances)}")
        self._remember_root()
        self.latent_dim: int | None = None
        self._owned = False
        self._in_pyro_module = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("kind"):
            PRIORS[cls.kind] = cls

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # a child of a PyroModule (renamed by it) runs in its parent's context; a root may sit
        # in a plain nn.Module that the program registers with pyro.module
        root = self._pyro_name == self._root_name
        if self._in_pyro_module or (root and am_i_wrapped() and registered_by_pyro_module(self)):
            # pyro.module put this prior's parameters in the param store under its holder's
            # name (and keeps the module's tensors in sync): a second registration under the
            # prior's own name would give one tensor two entries and break the JIT ELBOs
            self._in_pyro_module = True
            return self.forward(*args, **kwargs)
        return super().__call__(*args, **kwargs)

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = super().__deepcopy__(memo)
        new._in_pyro_module = False  # the copy's holder registers it anew (or nobody does)
        return new

    def setup(self, latent_dim: int, data_shape: tuple[int, ...] | None = None) -> Prior:
        """Create the parameters for codes of size ``latent_dim`` (once; again with the same
        size does nothing). Returns the prior.

        :param int latent_dim: K
        :param tuple data_shape: shape of one data point (the VampPrior's pseudo-inputs)
        """
        latent_dim = check_positive_int("latent_dim", latent_dim)
        if self.latent_dim is not None:
            if self.latent_dim != latent_dim:
                raise ConfigError(f"this {type(self).__name__} was built for latent_dim "
                                  f"{self.latent_dim}, not {latent_dim}; build a new one")
            return self
        self.latent_dim = latent_dim
        self._build(latent_dim, data_shape)
        return self

    def _build(self, latent_dim: int, data_shape: tuple[int, ...] | None) -> None:
        """Create the parameters and buffers (subclasses)."""

    def connect(self, guide: Any) -> None:
        """Give the prior the VAE's guide (the VampPrior evaluates its encoder); most priors
        ignore it."""

    def initialize(self, x: torch.Tensor) -> None:
        """Take a data-dependent start from a batch of training data if one is pending (the
        VampPrior's pseudo-inputs); otherwise do nothing. The VAE's model calls it at every
        observed batch (it acts once)."""

    def marginals(self) -> dist.Normal | None:
        """The prior of each latent dimension as a ``Normal`` of batch shape ``(K,)`` when the
        prior is that product of independent Normals, else ``None`` (the KL then does not
        split by dimension)."""
        return None

    def _require_setup(self) -> int:
        if self.latent_dim is None:
            raise ConfigError(f"{type(self).__name__} has no size yet: give it to a VAE "
                              f"(prior=...), or call prior.setup(latent_dim) before using it")
        return self.latent_dim

    def forward(self) -> dist.TorchDistribution:
        """The distribution ``p(z)``: event shape ``(latent_dim,)``, batch shape ``()``."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """A JSON-serialisable description; :func:`prior_from_config` rebuilds from it."""
        return {"kind": self.kind}

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")


class StandardNormal(Prior):
    """``p(z) = N(0, I)``, the default prior of every VAE (its constants are buffers, so
    ``.to(device)`` moves them).

    Example::

        >>> import pyro_lvae as lv
        >>> lv.StandardNormal().setup(3)().event_shape
        torch.Size([3])
    """

    kind = "normal"
    analytic_kl = True

    def _build(self, latent_dim: int, data_shape: tuple[int, ...] | None) -> None:
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))

    def forward(self) -> dist.TorchDistribution:
        self._require_setup()
        return dist.Normal(self.loc, self.scale).to_event(1)

    def marginals(self) -> dist.Normal:
        self._require_setup()
        return dist.Normal(self.loc, self.scale)


class MixturePrior(Prior):
    """A learned mixture of ``components`` diagonal Gaussians,
    ``p(z) = sum_c w_c N(z | m_c, diag s_c^2)``: weights (a ``PyroParam`` on the simplex),
    means (drawn from ``N(0, I)`` when the VAE is built) and scales (start 1, floored at
    ``min_scale``) are all learned with the networks.

    :param int components: C, the number of Gaussians; its ``C (1 + 2 K)`` parameters must fit
        in the machine's memory (:mod:`pyro_lvae.limits`), else a
        :class:`~pyro_lvae.errors.ConfigError`
    :param float min_scale: floor on the components' scales (a component shrinking onto one
        posterior makes the density unbounded)

    Example::

        >>> import torch, pyro_lvae as lv
        >>> p = lv.MixturePrior(components=4).setup(2)
        >>> p().log_prob(torch.zeros(5, 2)).shape
        torch.Size([5])
    """

    kind = "mixture"

    def __init__(self, components: int = 10, min_scale: float = 1e-3) -> None:
        super().__init__()
        self.components = check_positive_int("components", components)
        # weights, means and scales: at least 3 C parameters whatever the latent size
        check_parameters("components", components, 3 * components, "the mixture's parameters")
        self.min_scale = check_positive("min_scale", min_scale)

    def _build(self, latent_dim: int, data_shape: tuple[int, ...] | None) -> None:
        c = self.components
        check_parameters("components", c, c * (1 + 2 * latent_dim),
                         f"the mixture's parameters at latent_dim={latent_dim}")
        self.weights = PyroParam(torch.full((c,), 1.0 / c), constraints.simplex)
        self.locs = nn.Parameter(torch.randn(c, latent_dim))
        self.scales = PyroParam(torch.ones(c, latent_dim),
                                constraints.greater_than(self.min_scale))

    def forward(self) -> dist.TorchDistribution:
        self._require_setup()
        gaussians = dist.Normal(self.locs, self.scales).to_event(1)
        return dist.MixtureSameFamily(dist.Categorical(probs=self.weights), gaussians)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "components": self.components, "min_scale": self.min_scale}


class VampPrior(Prior):
    """The VampPrior: the mixture of the encoder's posteriors at ``components`` learned
    pseudo-inputs ``u_c``, ``p(z) = (1/C) sum_c q(z | u_c)`` (Tomczak & Welling 2018).

    The encoder is the guide's own (:meth:`connect`): the prior holds no copy and no second
    reference in the module tree, so the weights have one owner, one state-dict entry and,
    inside a Pyro program, one set of param-store names (the guide's); under ``SVI`` the
    pseudo-inputs (a parameter of the model) and the encoder each train once per step, with
    the gradients of both terms. The pseudo-inputs start as the first ``components`` points of
    the first training batch the model sees (cycled, with a little noise, if the batch is
    smaller), the data start of Tomczak & Welling; that start is saved with the weights.

    In :class:`~pyro_lvae.VAE` the VAE connects its guide. In your own Pyro program, give it
    your guide's encoder, any network ``x -> (loc, scale)`` of ``q(z | x)`` (each of shape
    ``(batch, latent_dim)``), as ``encoder=`` (or :meth:`connect`), the shape of one data point
    in :meth:`setup`, and the data start with :meth:`initialize`::

        prior = lv.VampPrior(components=20, encoder=encoder).setup(latent_dim, x.shape[1:])
        prior.initialize(x[:500])            # the pseudo-inputs start at data points
        # model:  pyro.sample("z", prior())  # inside the plate, as any prior
        # guide:  pyro.module("encoder", encoder); loc, scale = encoder(x); ...

    The encoder is registered by your guide (``pyro.module`` or a ``PyroModule``), so it
    trains once per step with the gradients of both terms, as in the VAE.

    :param int components: C, the number of pseudo-inputs (the paper uses 500 on MNIST); C
        data points must fit in the machine's memory (:mod:`pyro_lvae.limits`), else a
        :class:`~pyro_lvae.errors.ConfigError`
    :param encoder: the network of ``q(z | x)`` for a program of your own (``None``: the VAE
        connects its guide)

    **References**

    - J. Tomczak, M. Welling. *VAE with a VampPrior*. AISTATS 2018.
    """

    kind = "vamp"

    def __init__(self, components: int = 50, encoder: Callable[..., Any] | None = None) -> None:
        super().__init__()
        self.components = check_positive_int("components", components)
        check_parameters("components", components, components, "the pseudo-inputs")
        # a list, so that nn.Module does not adopt the guide (or the encoder)
        self._guide: list[Any] = []
        self.started = False
        if encoder is not None:
            self.connect(encoder)

    def _build(self, latent_dim: int, data_shape: tuple[int, ...] | None) -> None:
        if data_shape is None:
            raise ConfigError("VampPrior needs the shape of one data point for its "
                              "pseudo-inputs: give data_shape to lv.VAE (the factories do), "
                              "or, in your own program, call "
                              "prior.setup(latent_dim, data_shape=x.shape[1:])")
        data_shape = tuple(int(s) for s in data_shape)
        check_parameters("components", self.components,
                         self.components * math.prod(data_shape),
                         f"the pseudo-inputs (data points of shape {data_shape})")
        self.pseudo_inputs = nn.Parameter(0.01 * torch.randn((self.components,) + data_shape))

    def connect(self, guide: Any) -> None:
        """Give the prior the encoder it evaluates at its pseudo-inputs: a VAE's guide
        (:class:`~pyro_lvae.VAE` does it), or, in your own program, any network
        ``x -> (loc, scale)`` of ``q(z | x)`` that your guide registers.

        :param guide: a :class:`~pyro_lvae.vae.Guide` or a callable encoder
        """
        if not callable(guide):
            raise ConfigError(f"VampPrior needs an encoder, a network x -> (loc, scale), but "
                              f"got {type(guide).__name__}")
        if self._guide and self._guide[0] is not guide:
            raise ConfigError("this VampPrior already has an encoder (another VAE's, or the "
                              "one given as encoder=): build one prior per model, and leave "
                              "encoder= out for a prior given to lv.VAE (it connects its own)")
        self._guide[:] = [guide]

    def initialize(self, x: torch.Tensor) -> None:
        """Start the pseudo-inputs at the first ``components`` points of ``x`` (once; needs
        :meth:`setup` first)."""
        if self.started or self.latent_dim is None:
            return
        if tuple(x.shape[1:]) != tuple(self.pseudo_inputs.shape[1:]):
            raise ConfigError(f"VampPrior's pseudo-inputs have the shape "
                              f"{tuple(self.pseudo_inputs.shape[1:])} of one data point, but "
                              f"the batch x has points of shape {tuple(x.shape[1:])}")
        n = x.shape[0]
        start = x.detach()[torch.arange(self.components) % n].to(self.pseudo_inputs)
        if self.components > n:  # repeated points: break their symmetry
            noise = torch.randn(start.shape, generator=torch.Generator().manual_seed(0),
                                dtype=start.dtype)
            start = start + 0.01 * x.detach().std() * noise.to(start.device)
        with torch.no_grad():
            self._parameters["pseudo_inputs"].copy_(start)
        self.started = True

    def get_extra_state(self) -> torch.Tensor:
        return torch.tensor(float(self.started))

    def set_extra_state(self, state: Any) -> None:
        self.started = bool(float(state))

    def forward(self) -> dist.TorchDistribution:
        k = self._require_setup()
        if not self._guide:
            raise ConfigError("VampPrior evaluates an encoder at its pseudo-inputs: use it "
                              "inside a VAE (lv.mlp_vae(..., prior=lv.VampPrior())), or give it "
                              "your guide's encoder: lv.VampPrior(components, encoder=net) or "
                              "prior.connect(net)")
        guide = self._guide[0]
        u = self.pseudo_inputs
        if not hasattr(guide, "posterior_in_program"):  # an encoder of the user's own guide
            loc, scale = _loc_scale(guide(u), self.components, k)
        elif am_i_wrapped():  # the encoder's parameters under the guide's names, once
            loc, scale = guide.posterior_in_program(u)
        else:
            loc, scale = guide.posterior(u)
        uniform = dist.Categorical(logits=torch.zeros(self.components, dtype=loc.dtype,
                                                      device=loc.device))
        return dist.MixtureSameFamily(uniform, dist.Normal(loc, scale).to_event(1))

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "components": self.components}


def _loc_scale(out: Any, components: int, latent_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Check what an encoder returned at the pseudo-inputs: ``(loc, scale)`` of shape
    ``(components, latent_dim)`` each."""
    want = (components, latent_dim)
    if (not isinstance(out, (tuple, list)) or len(out) != 2
            or not all(isinstance(t, torch.Tensor) and tuple(t.shape) == want for t in out)):
        got = (tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                     for t in out) if isinstance(out, (tuple, list)) else type(out).__name__)
        raise ConfigError(f"VampPrior's encoder must return (loc, scale) of q(z | x), each of "
                          f"shape (batch, latent_dim) = {want} at the {components} "
                          f"pseudo-inputs, but returned {got}")
    return out[0], out[1]


def _spline_coupling(latent_dim: int, hidden: int, bins: int) -> nn.Module:
    if latent_dim < 2:
        raise ConfigError("a spline-coupling flow needs latent_dim >= 2 (it transforms one "
                          "half of z given the other); use transform='spline' or "
                          "'affine-autoregressive' for a 1-dimensional latent")
    return T.spline_coupling(latent_dim, hidden_dims=[hidden, hidden], count_bins=bins)


def _affine_autoregressive(latent_dim: int, hidden: int, bins: int) -> nn.Module:
    return T.affine_autoregressive(latent_dim, hidden_dims=[hidden, hidden])


def _spline(latent_dim: int, hidden: int, bins: int) -> nn.Module:
    return T.spline(latent_dim, count_bins=bins)


def _flow_layer_size(transform: str, latent_dim: int, hidden: int, bins: int) -> int:
    """A lower bound on the parameters and masks of one flow layer (Pyro's networks)."""
    k = latent_dim
    if transform == "affine-autoregressive":  # weights and masks of K->H->H->2K
        return 2 * (hidden * hidden + 3 * k * hidden)
    if transform == "spline-coupling":  # a dense K/2->H->H->(K/2)(4 bins - 1) network
        return hidden * hidden + hidden * (k // 2) + hidden * (k - k // 2) * (4 * bins - 1)
    return k * (4 * bins - 1)  # element-wise splines


#: the transforms a :class:`FlowPrior` stacks, by name: ``(make, direction)``. ``"sample"``:
#: the layer maps base draws to ``z`` (its inverse, used by the density, is as cheap);
#: ``"density"``: the layer maps ``z`` to the base (a masked autoregressive flow: the density
#: costs one pass, a draw ``latent_dim`` passes).
FLOW_TRANSFORMS: dict[str, tuple[Any, str]] = {
    "spline-coupling": (_spline_coupling, "sample"),
    "affine-autoregressive": (_affine_autoregressive, "density"),
    "spline": (_spline, "sample"),
}


class FlowPrior(Prior):
    """A normalising-flow prior: ``N(0, I)`` pushed through ``layers`` learned bijections from
    :mod:`pyro.distributions.transforms`, with the coordinates reversed between layers.

    - ``"affine-autoregressive"`` (default): a masked autoregressive flow (Papamakarios et al.
      2017), Pyro's ``AffineAutoregressive`` used in its density direction: ``log p(z)`` costs
      one pass of each layer's network, a draw ``latent_dim`` passes.
    - ``"spline-coupling"``: neural spline coupling layers (Durkan et al. 2019), more flexible
      per layer, one pass in both directions, but Pyro's splines cost many small operations
      (a training step of the 2D problem took 3.6 times the autoregressive flow's:
      ``benchmarks/priors.py``, docs/priors.md); needs ``latent_dim >= 2``.
    - ``"spline"``: element-wise monotonic splines (no coupling between dimensions).

    :param str transform: one of :data:`FLOW_TRANSFORMS`
    :param int layers: the number of learned layers
    :param int hidden: units of the two hidden layers of each layer's network (at least
        ``latent_dim`` for ``"affine-autoregressive"``)
    :param int bins: spline bins (spline transforms)

    The layers' parameters must fit in the machine's memory (:mod:`pyro_lvae.limits`), else a
    :class:`~pyro_lvae.errors.ConfigError` names ``layers``, ``hidden`` or ``bins``.

    Example::

        >>> import torch, pyro_lvae as lv
        >>> p = lv.FlowPrior(layers=2, hidden=8).setup(2)
        >>> p().sample((3,)).shape
        torch.Size([3, 2])
    """

    kind = "flow"

    def __init__(self, transform: str = "affine-autoregressive", layers: int = 4, hidden: int = 64,
                 bins: int = 8) -> None:
        super().__init__()
        if transform not in FLOW_TRANSFORMS:
            raise ConfigError(f"unknown flow transform {transform!r}; expected one of "
                              f"{', '.join(FLOW_TRANSFORMS)}")
        self.transform = transform
        self.layers = check_positive_int("layers", layers)
        self.hidden = check_positive_int("hidden", hidden)
        self.bins = check_positive_int("bins", bins)
        self._check_size(1)  # the smallest latent size: what any use of the prior needs

    def _check_size(self, latent_dim: int) -> None:
        """Refuse sizes whose parameters would not fit in the machine's memory."""
        per_layer = _flow_layer_size(self.transform, latent_dim, self.hidden, self.bins)
        where = f"{self.transform} layers at latent_dim={latent_dim}"
        if self.transform != "spline":  # element-wise splines have no hidden units
            own = _flow_layer_size(self.transform, latent_dim, self.hidden, 1)
            check_parameters("hidden", self.hidden, own, f"one of the {where}")
        if self.transform != "affine-autoregressive":  # the others have bins
            check_parameters("bins", self.bins, per_layer, f"one of the {where}")
        check_parameters("layers", self.layers, self.layers * per_layer,
                         f"{self.layers} {where}", modules=self.layers)

    def _build(self, latent_dim: int, data_shape: tuple[int, ...] | None) -> None:
        make, _ = FLOW_TRANSFORMS[self.transform]
        if self.transform == "affine-autoregressive" and self.hidden < latent_dim:
            raise ConfigError(f"an affine-autoregressive flow needs hidden >= latent_dim (its "
                              f"masks give each unit one of the latent coordinates), but got "
                              f"hidden={self.hidden} for latent_dim={latent_dim}")
        self._check_size(latent_dim)
        self.register_buffer("loc", torch.zeros(latent_dim))
        self.register_buffer("scale", torch.ones(latent_dim))
        self.flows = nn.ModuleList(make(latent_dim, self.hidden, self.bins)
                                   for _ in range(self.layers))

    def forward(self) -> dist.TorchDistribution:
        k = self._require_setup()
        _, direction = FLOW_TRANSFORMS[self.transform]
        reverse = T.Permute(torch.arange(k - 1, -1, -1, device=self.loc.device))
        steps: list[Any] = []
        for i, layer in enumerate(self.flows):
            if i:
                steps.append(reverse)
            steps.append(layer if direction == "sample" else layer.inv)
        base = dist.Normal(self.loc, self.scale).to_event(1)
        return dist.TransformedDistribution(base, steps)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, "transform": self.transform, "layers": self.layers,
                "hidden": self.hidden, "bins": self.bins}


def settings_of(kind: str) -> tuple[str, ...]:
    """The keyword settings :func:`build` accepts for the prior ``kind``.

    Example::

        >>> from pyro_lvae import priors
        >>> priors.settings_of("flow")
        ('transform', 'layers', 'hidden', 'bins')
    """
    return PRIORS.settings_of(kind)


def build(kind: str, **settings: Any) -> Prior:
    """The prior registered as ``kind`` (a key of :data:`PRIORS`), made from its keyword
    settings (:func:`settings_of`); a :class:`ConfigError` names the settings it takes.

    Example::

        >>> from pyro_lvae import priors
        >>> priors.build("mixture", components=3).config()
        {'kind': 'mixture', 'components': 3, 'min_scale': 0.001}
    """
    return PRIORS.build(kind, **settings)


def prior_from_config(config: dict[str, Any] | None) -> Prior:
    """Rebuild a prior from :meth:`Prior.config` (weights not included); ``None`` (a file
    saved before priors were swappable) is the standard Normal."""
    if config is None:
        return StandardNormal()
    config = dict(config)
    return build(config.pop("kind", None), **config)
