"""Flags that several commands share, each defined once.

Every helper adds one group of related flags to a command's parser and returns the group, so a
command can add its own flags next to them. A command passes its own defaults; ``notes`` replace
the "(default ...)" of a flag's help where a default needs words (it depends on the data, say).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..annealing import BETA_SCHEDULES
from ..errors import ConfigError

#: default KL weight of the command line: a mild warm-up from 0.5 to 1 over 1000 steps. With a
#: learned sigma that starts at the data's own scale, the collapsed solution (KL = 0, sigma =
#: data std) is exactly marginal when the coordinates are uncorrelated; any beta < 1 makes it
#: unstable, and starting at 0.5 rather than 0 avoids the tiny-sigma optimum that beta = 0 invites.
#: With it, a learned sigma starts at half the data's spread (below the collapsed solution's
#: sigma) unless --sigma is given: docs/reproduction.md, "The collapsed start".
DEFAULT_BETA = "linear:1000:0.5:1"

#: the forms --beta-schedule accepts (pyro_lvae.annealing.parse_schedule)
BETA_FORMS = "a number, " + BETA_SCHEDULES.forms()

#: what --device accepts (pyro_lvae.training.resolve_device)
DEVICE_HELP = "auto, cpu, cuda or cuda:N (default auto)"

Group = argparse._ArgumentGroup


def _add(group: Group, flag: str, default: Any, text: str, notes: Mapping[str, str] | None,
         **kwargs: Any) -> None:
    """One flag whose help ends in its default: ``notes[name]`` if given, else the value (when
    there is one)."""
    name = flag.lstrip("-").replace("-", "_")
    note = (notes or {}).get(name, None if default is None else f"default {default}")
    group.add_argument(flag, default=default, help=f"{text} ({note})" if note else text,
                       **kwargs)


def add_device(parser: argparse.ArgumentParser | Group) -> None:
    """``--device``: where to compute."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


#: the largest seed: numpy's, and so Pyro's, seeds are 0 .. 2**32 - 1
MAX_SEED = 2**32 - 1


def seed_value(text: str) -> int:
    """``--seed``'s value: a whole number from 0 to :data:`MAX_SEED` (else argparse's error,
    naming the flag)."""
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a whole number from 0 to {MAX_SEED}, got "
                                         f"{text!r}")
    return value


def add_seed(parser: argparse.ArgumentParser | Group, default: int | None = 0) -> None:
    """``--seed``: the random seed, 0 to :data:`MAX_SEED` (``None``: not seeded unless
    given)."""
    _add(parser, "--seed", default, f"random seed, 0 to {MAX_SEED}", {}, type=seed_value,
         metavar="SEED")


def add_quiet(parser: argparse.ArgumentParser | Group, text: str = "no progress bar") -> None:
    """``--quiet``: ``text`` says what it leaves out."""
    parser.add_argument("--quiet", action="store_true", help=text)


def add_out(parser: argparse.ArgumentParser | Group, text: str, default: str | None = None,
            required: bool = False, metavar: str = "DIR") -> None:
    """``--out``: the folder (or file) a command writes; ``text`` says what it is."""
    note = f" (default {default})" if default is not None else ""
    parser.add_argument("--out", metavar=metavar, default=default, required=required,
                        help=text + note)


def add_network_options(parser: argparse.ArgumentParser, *, hidden: int | None,
                        blocks: int | None, latent_dim: int | None | bool = False,
                        notes: Mapping[str, str] | None = None) -> Group:
    """``--latent-dim`` (unless ``latent_dim`` is ``False``), ``--hidden`` and ``--blocks``: the
    sizes of the residual MLPs."""
    group = parser.add_argument_group("network")
    if latent_dim is not False:
        _add(group, "--latent-dim", latent_dim, "latent dimension", notes, type=int)
    _add(group, "--hidden", hidden, "units per residual block", notes, type=int)
    _add(group, "--blocks", blocks, "residual blocks per network", notes, type=int)
    return group


def add_training_options(parser: argparse.ArgumentParser, *, steps: int | None,
                         beta: str | None, steps_text: str = "training steps",
                         batch_size: int | None | bool = False, lr: bool = True,
                         notes: Mapping[str, str] | None = None) -> Group:
    """``--steps``, ``--batch-size`` (unless ``batch_size`` is ``False``), ``--lr`` (if ``lr``)
    and ``--beta-schedule``."""
    group = parser.add_argument_group("training")
    _add(group, "--steps", steps, steps_text, notes, type=int)
    if batch_size is not False:
        _add(group, "--batch-size", batch_size, "batch size", notes, type=int)
    if lr:
        group.add_argument("--lr", type=float, default=1e-3,
                           help="Adam learning rate (default 1e-3)")
    _add(group, "--beta-schedule", beta, f"weight of the KL term: {BETA_FORMS}", notes)
    return group


def add_observation_options(parser: argparse.ArgumentParser, *, sigma_text: str,
                            min_scale: float | None,
                            notes: Mapping[str, str] | None = None,
                            group: Group | None = None) -> Group:
    """``--sigma`` (``sigma_text`` says what it sets) and ``--min-scale``, the floor on learned
    sigmas, in ``group`` (default: a new group "observation model")."""
    group = group or parser.add_argument_group("observation model")
    group.add_argument("--sigma", type=float, default=None, help=sigma_text)
    _add(group, "--min-scale", min_scale, "floor on a learned sigma", notes, type=float)
    return group


def _dispersion(text: str) -> str | float:
    if text in ("learned", "decoder"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected learned, decoder or a positive number, "
                                         f"not {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"a fixed theta must be a positive number, not "
                                         f"{text!r}")
    return value


def add_count_options(group: Group) -> None:
    """``--dispersion`` and ``--count-mean``, the settings of the count models
    (:mod:`pyro_lvae.observations.counts`), in ``group``."""
    group.add_argument("--dispersion", type=_dispersion, default=None,
                       metavar="{learned,decoder,THETA}",
                       help="count models (negative-binomial, zero-inflated-nb): the inverse "
                            "dispersion theta, learned (one per dimension), decoder (per point "
                            "and dimension) or a positive number (fixed) (default learned)")
    group.add_argument("--count-mean", choices=("scvi", "plain"), default=None,
                       help="count models: the mean, scvi (a softmax over the dimensions times "
                            "the observed total count) or plain (exp of the decoder's output) "
                            "(default scvi)")


def _beta_nll(text: str) -> float:
    """``--beta-nll``'s value: a number from 0 to 1 (else argparse's error, naming the flag)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def add_beta_nll_option(group: Group) -> None:
    """``--beta-nll``, the beta-NLL exponent of ``learned-vector``
    (:class:`~pyro_lvae.observations.LearnedVectorScale`), in ``group``."""
    group.add_argument("--beta-nll", type=_beta_nll, default=None, metavar="B",
                       help="learned-vector only: beta-NLL (Seitzer et al. 2022), each "
                            "dimension's gradient weighted by its sigma^(2B), so that pixels "
                            "called noisy keep their pull on the decoder's mean (sharper "
                            "means on images); B from 0 to 1, 0 is the ELBO's gradient (default 0)")


#: flag, keyword setting, and the observation models it applies to (for the error message)
_MODEL_FLAGS = (
    ("--dispersion", "dispersion",
     "the count models that take it (--obs negative-binomial, zero-inflated-nb)"),
    ("--count-mean", "mean",
     "the count models that take it (--obs negative-binomial, zero-inflated-nb, poisson)"),
    ("--beta-nll", "beta_nll", "--obs learned-vector (a sigma per dimension from the decoder)"),
)


def _flag_settings(args: argparse.Namespace, flags: Sequence[tuple[str, str]],
                   takes: Sequence[str], refusal: Callable[[str], str]) -> dict[str, Any]:
    """``{setting: value}`` of the ``(flag, setting)`` pairs given on the command line; a flag
    given for a model that does not take its setting is a
    :class:`~pyro_lvae.errors.ConfigError` with the message ``refusal(flag)``."""
    settings: dict[str, Any] = {}
    for flag, name in flags:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value is None:
            continue
        if name not in takes:
            raise ConfigError(refusal(flag))
        settings[name] = value
    return settings


def observation_flag_settings(args: argparse.Namespace, kind: str, takes: Sequence[str]
                              ) -> dict[str, Any]:
    """The keyword settings of the observation model ``kind`` (whose settings are ``takes``)
    from ``--dispersion``, ``--count-mean`` and ``--beta-nll``; a flag given with a model that
    does not take its setting is a :class:`~pyro_lvae.errors.ConfigError`."""
    applies = {flag: models for flag, _, models in _MODEL_FLAGS}
    return _flag_settings(args, [(flag, name) for flag, name, _ in _MODEL_FLAGS], takes,
                          lambda flag: f"{flag} applies to {applies[flag]}, not --obs {kind}")


def add_training_tools(parser: argparse.ArgumentParser, *,
                       notes: Mapping[str, str] | None = None) -> Group:
    """``--clip-grad-norm``, ``--lr-schedule``, ``--lr-warmup``, ``--average`` and
    ``--eval-every``: the optional tools of :func:`pyro_lvae.fit`, each off by default and
    resumed exactly from the checkpoint (:mod:`pyro_lvae.training.tools`)."""
    group = parser.add_argument_group("training tools (each off by default)")
    _add(group, "--clip-grad-norm", None, "clip the norm of all gradients together to this "
         "value before every step", notes, type=float, metavar="NORM")
    _add(group, "--lr-schedule", None, "learning-rate schedule, stepped every step: constant, "
         "cosine[:FINAL] (cosine decay to FINAL x --lr at the last step) or step:EVERY[:GAMMA] "
         "(x GAMMA, default 0.5, every EVERY steps)", notes, metavar="SCHEDULE")
    _add(group, "--lr-warmup", 0, "steps of linear learning-rate warm-up (before "
         "--lr-schedule)", notes, type=int, metavar="STEPS")
    _add(group, "--average", None, "keep averaged weights of every parameter, sigma "
         "included: ema[:DECAY[:START[:EVERY]]] (exponential moving average, decay 0.999 by "
         "default) or swa[:START[:EVERY]] (the mean since START)", notes, metavar="AVG")
    _add(group, "--eval-every", None, "steps between held-out ELBO evaluations on a fixed "
         "validation set; the best model is kept as best.pt (with --geco, the best of those that "
         "meet its target)", notes, type=int, metavar="STEPS")
    return group


def add_prior_options(parser: argparse.ArgumentParser) -> Group:
    """``--prior`` (a kind of :data:`pyro_lvae.priors.PRIORS`) and its size settings:
    ``--prior-components`` (mixture, vamp) and ``--prior-layers`` (flow); each applies to the
    priors that take it (:func:`prior_settings`)."""
    from ..priors import PRIORS

    group = parser.add_argument_group("prior p(z)")
    group.add_argument("--prior", default="normal", choices=list(PRIORS),
                       help="normal (N(0, I)), mixture (a learned mixture of Gaussians), vamp "
                            "(VampPrior: the encoder's posteriors at learned pseudo-inputs), "
                            "flow (N(0, I) through learned masked autoregressive layers) "
                            "(default normal)")
    group.add_argument("--prior-components", type=int, default=None,
                       help="mixture and vamp: components (default 10 for mixture, 50 for "
                            "vamp)")
    group.add_argument("--prior-layers", type=int, default=None,
                       help="flow: learned layers (default 4)")
    return group


def prior_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The prior's configuration from ``--prior`` and its size flags (a flag that the prior
    does not take is a :class:`~pyro_lvae.errors.ConfigError`)."""
    from ..priors import build, settings_of

    settings = _flag_settings(
        args, (("--prior-components", "components"), ("--prior-layers", "layers")),
        settings_of(args.prior), lambda flag: f"{flag} does not apply to --prior {args.prior}")
    return build(args.prior, **settings).config()
