"""Registries: one way to map a name to what it makes, and one text form for all of them.

Observation models (:data:`~pyro_lvae.observations.base.OBSERVATIONS`), priors
(:data:`pyro_lvae.priors.PRIORS`), beta schedules (:data:`pyro_lvae.annealing.BETA_SCHEDULES`),
learning-rate schedules (:data:`pyro_lvae.training.schedules.LR_SCHEDULES`), weight averaging
(:data:`pyro_lvae.training.averaging.AVERAGES`) and the sigma modes of the table model
(:data:`pyro_lvae.observations.table.SIGMA_MODES`) are each a :class:`Registry`: a read-only
mapping from a name to a class (or a function), filled by :meth:`Registry.register`.

A registry builds from keyword settings (:meth:`~Registry.build`, whose errors name the thing,
the setting and the settings it takes), lists what each name takes
(:meth:`~Registry.settings_of`), gives display properties where its kind has them
(:meth:`~Registry.describe`) and reads and writes one text form, the *spec*::

    NAME[:ARG[:ARG ...]]

The ARGs are the class's parameters in its own order. Each is a finite number (an integer where
it is written as one; ``0`` or ``1`` for a parameter whose default is a boolean; ``nan`` and
``inf`` are refused) unless the parameter's default is a text; an empty ARG takes the default.
:meth:`~Registry.parse` reads a spec and :meth:`~Registry.spec` writes one that parses back to an
equal object. A name may have deprecated aliases: they keep working and warn
(``DeprecationWarning``) with the name to use.

Example::

    >>> from pyro_lvae.registry import Registry
    >>> shapes = Registry("shape")
    >>> @shapes.register("box", aliases=("cube",))
    ... class Box:
    ...     def __init__(self, width: float, height: float = 1.0) -> None:
    ...         self.width, self.height = width, height
    >>> shapes.form("box")
    'box:WIDTH[:HEIGHT]'
    >>> box = shapes.parse("box:2")
    >>> box.width, box.height
    (2, 1.0)
    >>> shapes.spec(shapes.build("box", width=2.5))
    'box:2.5:1'
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["Registry", "deprecated_aliases"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class Registry(Mapping[str, Callable[..., Any]]):
    """Named classes (or functions) of one kind of thing, built by name.

    ``registry[name]`` is the class registered as ``name``; iterating gives the names in the
    order they were registered (deprecated aliases are accepted everywhere but not listed).

    :param str thing: what the registry holds, as error messages name it (``"observation
        model"``, ``"beta schedule"``)
    :param str number: a registered name that a bare number stands for in :meth:`parse` (the
        beta schedules' ``"constant"``: ``"0.5"`` is ``"constant:0.5"``); ``None``: no such
        shorthand
    :param display: ``display(name, cls)``, the display properties :meth:`describe` returns;
        ``None``: the kind has none
    """

    def __init__(self, thing: str, *, number: str | None = None,
                 display: Callable[[str, Any], Any] | None = None) -> None:
        self.thing = thing
        self.number = number
        self.display = display
        self._entries: dict[str, Callable[..., Any]] = {}
        self._aliases: dict[str, str] = {}

    # ---- filling -------------------------------------------------------------------------
    def register(self, name: str, *, aliases: Iterable[str] = ()) -> Callable[[F], F]:
        """A decorator that registers a class (or a function) as ``name``.

        :param str name: the name (no ``":"``)
        :param aliases: former names, still accepted with a ``DeprecationWarning``
        """
        def add(factory: F) -> F:
            self.add(name, factory, aliases=aliases)
            return factory

        return add

    def add(self, name: str, factory: Callable[..., Any], *, aliases: Iterable[str] = ()) -> None:
        """Register ``factory`` as ``name`` (what :meth:`register` does); a name registered
        again is replaced."""
        for text in (name, *aliases):
            if not isinstance(text, str) or not text or ":" in text:
                raise ConfigError(f"a {self.thing} name is a non-empty text without ':'; got "
                                  f"{text!r}")
        if not callable(factory):
            raise ConfigError(f"Expected a class or a function to register as the {self.thing} "
                              f"{name!r} but got {factory!r}")
        if name in self._entries and self._entries[name] is not factory:
            logger.debug("the %s %r is registered again: %r", self.thing, name, factory)
        self._entries[name] = factory
        for alias in aliases:
            self._aliases[alias] = name

    def __setitem__(self, name: str, factory: Callable[..., Any]) -> None:
        self.add(name, factory)

    # ---- the mapping ---------------------------------------------------------------------
    def __getitem__(self, name: str) -> Callable[..., Any]:
        if name in self._entries:
            return self._entries[name]
        if isinstance(name, str) and name in self._aliases:
            return self._entries[self.resolve(name)]
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def __repr__(self) -> str:
        return f"Registry({self.thing!r}: {', '.join(self._entries)})"

    def names(self) -> tuple[str, ...]:
        """The registered names, in the order they were registered (aliases not included)."""
        return tuple(self._entries)

    def aliases(self) -> dict[str, str]:
        """The deprecated aliases: ``{old name: name}``."""
        return dict(self._aliases)

    def resolve(self, name: Any, *, warn: bool = True) -> str:
        """The registered name of ``name``: itself, or the name a deprecated alias stands for
        (with a ``DeprecationWarning`` unless ``warn`` is false).

        :raises ConfigError: for a name that is not registered (the message lists the names)
        """
        if isinstance(name, str):
            if name in self._entries:
                return name
            if name in self._aliases:
                new = self._aliases[name]
                if warn:
                    warnings.warn(f"the {self.thing} name {name!r} is deprecated; use {new!r}",
                                  DeprecationWarning, stacklevel=3)
                return new
        raise ConfigError(f"unknown {self.thing} {name!r}; expected one of "
                          f"{', '.join(self._entries)}")

    def lookup(self, name: Any) -> Callable[..., Any]:
        """The class registered as ``name`` (an alias warns); a :class:`ConfigError` lists the
        names for an unknown one."""
        return self._entries[self.resolve(name)]

    # ---- settings ------------------------------------------------------------------------
    def parameters(self, name: str) -> list[inspect.Parameter]:
        """The parameters of the class registered as ``name``, in its own order (``self``,
        ``*args`` and ``**kwargs`` left out)."""
        factory = self.lookup(name)
        if inspect.isclass(factory):
            params = list(inspect.signature(factory.__init__).parameters.values())[1:]
        else:
            params = list(inspect.signature(factory).parameters.values())
        return [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def settings_of(self, name: str) -> tuple[str, ...]:
        """The keyword settings :meth:`build` accepts for ``name``, in the class's order."""
        return tuple(p.name for p in self.parameters(name))

    def build(self, name: str, **settings: Any) -> Any:
        """The thing registered as ``name``, made from keyword settings.

        :raises ConfigError: for an unknown name, a setting the class does not take, or a
            missing required one (the message names the thing and the settings it takes); the
            class's own checks raise their own errors
        """
        name = self.resolve(name)
        factory = self._entries[name]
        params = self.parameters(name)
        takes = ", ".join(p.name for p in params) or "no settings"
        what = f"the {self.thing} {name!r}" + (f" ({factory.__name__})"
                                               if inspect.isclass(factory) else "")
        unknown = sorted(set(settings) - {p.name for p in params})
        if unknown:
            raise ConfigError(f"{what} does not take {', '.join(unknown)}; it takes {takes}")
        missing = [p.name for p in params if p.default is p.empty and p.name not in settings]
        if missing:
            raise ConfigError(f"{what} needs {', '.join(missing)}; it takes {takes}")
        return factory(**settings)

    def describe(self, name: str) -> Any:
        """The display properties of the thing registered as ``name`` (where its kind has
        them: the observation models' :class:`~pyro_lvae.observations.Variant`)."""
        name = self.resolve(name)
        if self.display is None:
            raise ConfigError(f"a {self.thing} has no display properties")
        return self.display(name, self._entries[name])

    # ---- the text form -------------------------------------------------------------------
    def form(self, name: str) -> str:
        """The spec form of ``name``: ``NAME:REQUIRED[:OPTIONAL[...]]``, the parameters in
        upper case."""
        name = self.resolve(name, warn=False)
        text, optional = name, 0
        for p in self.parameters(name):
            if p.default is p.empty and not optional:
                text += f":{p.name.upper()}"
            else:
                text += f"[:{p.name.upper()}"
                optional += 1
        return text + "]" * optional

    def forms(self) -> str:
        """Every name's spec form, comma-separated."""
        return ", ".join(self.form(name) for name in self._entries)

    def parse(self, text: Any) -> Any:
        """The thing a spec ``NAME[:ARG[:ARG ...]]`` describes (module docstring).

        :raises ConfigError: for an unknown name (the message lists the forms), a wrong number
            of arguments, or a non-numeric or non-finite one (``nan``, ``inf``) where a number is
            expected; the class's own checks raise their own errors
        """
        if not isinstance(text, str):
            raise ConfigError(f"Expected a {self.thing} as text, NAME[:ARG...], but got "
                              f"{text!r}")
        text = text.strip()
        if self.number is not None:
            try:
                number = float(text)
            except ValueError:
                pass
            else:
                if not math.isfinite(number):
                    raise ConfigError(f"{self.thing} {text!r} is not a finite number; expected "
                                      f"a finite number or one of {self.forms()}")
                return self.parse(f"{self.number}:{text}")
        name, *args = text.split(":")
        if name not in self:
            expected = ("a number or one of " if self.number is not None else "one of ")
            raise ConfigError(f"unknown {self.thing} {text!r}; expected {expected}"
                              f"{self.forms()}")
        name = self.resolve(name)
        params = self.parameters(name)
        required = sum(p.default is p.empty for p in params)
        if not required <= len(args) <= len(params):
            raise ConfigError(f"{self.thing} {text!r} has the wrong number of arguments; "
                              f"expected {self.form(name)}")
        settings = {p.name: self._read(name, p, arg, text)
                    for p, arg in zip(params, args, strict=False) if arg != ""}
        return self.build(name, **settings)

    def _read(self, name: str, param: inspect.Parameter, arg: str, text: str) -> Any:
        if isinstance(param.default, str):
            return arg
        try:
            value = int(arg)
        except ValueError:
            pass
        else:
            return bool(value) if isinstance(param.default, bool) else value
        try:
            number = float(arg)
        except ValueError:
            raise ConfigError(f"{self.thing} {text!r} has a non-numeric argument {arg!r} for "
                              f"{param.name.upper()}; expected {self.form(name)}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{self.thing} {text!r} has a non-finite argument {arg!r} for "
                              f"{param.name.upper()}; expected a finite number: "
                              f"{self.form(name)}")
        return number

    def name_of(self, obj: Any) -> str:
        """The name ``obj`` is registered under: its ``kind`` attribute where that names an
        entry, else the name of its class."""
        kind = getattr(obj, "kind", None)
        if isinstance(kind, str) and kind in self._entries:
            factory = self._entries[kind]
            if factory is type(obj) or not inspect.isclass(factory):
                return kind
        names = [n for n, factory in self._entries.items() if factory is type(obj)]
        if len(names) == 1:
            return names[0]
        raise ConfigError(f"{obj!r} is not a registered {self.thing} (one of "
                          f"{', '.join(self._entries)}), so it has no spec")

    def spec(self, obj: Any, name: str | None = None) -> str:
        """The spec of ``obj`` (:meth:`parse` reads it back): its name and every parameter's
        value, read from ``obj.config()`` where it has one, else from its attributes.

        :param obj: a thing this registry built (or an equal one)
        :param str name: its registered name (default :meth:`name_of`)
        :raises ConfigError: where a value is not a number (or a text for a text parameter)
        """
        name = self.name_of(obj) if name is None else self.resolve(name)
        config = obj.config() if callable(getattr(obj, "config", None)) else {}
        parts = [name]
        for p in self.parameters(name):
            value = config[p.name] if p.name in config else getattr(obj, p.name, p.default)
            parts.append(self._write(name, p, value))
        return ":".join(parts)

    def _write(self, name: str, param: inspect.Parameter, value: Any) -> str:
        if value is None and param.default is None:
            return ""
        if isinstance(value, bool):
            return str(int(value))
        if isinstance(value, numbers.Integral):
            return str(int(value))
        if isinstance(value, numbers.Real):
            value = float(value)
            short = f"{value:g}"
            return short if float(short) == value else repr(value)
        if isinstance(value, str) and isinstance(param.default, str) and value and ":" not in value:
            return value
        raise ConfigError(f"the {self.thing} {name!r} has no spec: its {param.name} is "
                          f"{type(value).__name__} {value!r}, not a number; use its config "
                          f"instead")


def deprecated_aliases(module: str, aliases: Mapping[str, str],
                       namespace: Mapping[str, Any]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that keeps former names working: ``module.OLD`` is the object
    now named ``aliases[OLD]`` in ``namespace`` (the very same object), with a
    ``DeprecationWarning`` that names its new name.

    Use it at the end of the module: ``__getattr__ = deprecated_aliases(__name__, {"Old":
    "New"}, globals())``.
    """
    def __getattr__(name: str) -> Any:
        if name in aliases:
            new = aliases[name]
            warnings.warn(f"{module}.{name} is deprecated; use {module}.{new}",
                          DeprecationWarning, stacklevel=2)
            return namespace[new]
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
