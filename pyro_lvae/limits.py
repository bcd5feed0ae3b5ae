"""Bounds on sizes: the memory of the machine, and the check that refuses a size argument (a
number of components, layers, units, rows) whose tensors would need more of it, before anything
is allocated.

The bound is the machine's physical memory, :func:`machine_memory`: ``MemTotal`` of
``/proc/meminfo`` (Linux), else ``os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")``,
else :data:`FALLBACK_MEMORY` (1 TiB). Learned parameters count :data:`TRAINING_COPIES` times
(the weights, their gradients and the two moments of Adam), each of the default dtype's size
(4 bytes for ``float32``), and each layer or block :data:`MODULE_BYTES` more. A size that
passes may still not fit beside everything else that runs; one that fails could never be
trained (or held) on this machine, so it is refused with a
:class:`~pyro_lvae.errors.ConfigError` that names the argument, its value and the bound.

Example::

    >>> from pyro_lvae import limits
    >>> limits.machine_memory() > 0
    True
    >>> limits.check_parameters("components", 10, 30)  # 30 parameters fit anywhere

:class:`ElementBudget` bounds what code may allocate without knowing how it allocates: a model
rebuilt from the configuration of a file (:func:`pyro_lvae.load`) may create only as many tensor
elements as a multiple of the weights that the file holds.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from .errors import ConfigError

__all__ = ["FALLBACK_MEMORY", "TRAINING_COPIES", "MODULE_BYTES", "machine_memory",
           "format_bytes", "check_memory", "check_parameters", "ElementBudget",
           "BudgetExceeded"]

#: the memory assumed (bytes) where neither ``/proc/meminfo`` nor ``os.sysconf`` tells it
FALLBACK_MEMORY = 2**40
#: copies of every learned parameter that training holds: weights, gradients, Adam's two moments
TRAINING_COPIES = 4
#: bytes counted for the Python objects of each layer or block (a lower bound: a residual block
#: takes about 9 KiB, a masked autoregressive layer about 20 KiB)
MODULE_BYTES = 1024


_MEMINFO = "/proc/meminfo"


@functools.cache
def machine_memory() -> int:
    """The machine's physical memory in bytes: ``MemTotal`` of ``/proc/meminfo``, else
    ``SC_PAGE_SIZE * SC_PHYS_PAGES`` of :func:`os.sysconf`, else :data:`FALLBACK_MEMORY`
    (read once, then remembered)."""
    try:
        with open(_MEMINFO, encoding="ascii") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024  # the file counts kibibytes
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return pages * size
    except (AttributeError, OSError, ValueError):
        pass
    return FALLBACK_MEMORY


def format_bytes(n: float) -> str:
    """``n`` bytes in binary units (``"1.5 GiB"``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    raise AssertionError("unreachable")


def check_memory(name: str, value: object, nbytes: float, what: str) -> None:
    """Raise :class:`~pyro_lvae.errors.ConfigError` if ``nbytes`` exceeds :func:`machine_memory`.

    :param str name: the argument that sets the size (as the user wrote it)
    :param value: its value
    :param float nbytes: the bytes that ``value`` needs
    :param str what: what they hold (``"the mixture's parameters"``)
    """
    bound = machine_memory()
    if nbytes > bound:
        raise ConfigError(
            f"{name}={value} needs {format_bytes(nbytes)} for {what}, more than this machine's "
            f"{format_bytes(bound)} of memory; make {name} smaller"
        )


def check_parameters(name: str, value: object, count: float, what: str = "parameters",
                     modules: float = 0) -> None:
    """:func:`check_memory` for ``count`` learned parameters (elements) of the default dtype,
    held :data:`TRAINING_COPIES` times, in ``modules`` layers or blocks
    (:data:`MODULE_BYTES` each).

    :param str name: the argument that sets the size
    :param value: its value
    :param float count: the number of parameters (tensor elements)
    :param str what: what they are (``"the mixture's parameters"``)
    :param float modules: the number of layers or blocks they make
    """
    itemsize = torch.empty((), dtype=torch.get_default_dtype()).element_size()
    nbytes = float(count) * itemsize * TRAINING_COPIES + float(modules) * MODULE_BYTES
    check_memory(name, value, nbytes,
                 f"{what} ({float(count):.3g} of them, {TRAINING_COPIES} copies to train: "
                 f"weights, gradients and the optimiser's two moments)")


class BudgetExceeded(Exception):
    """Raised inside an :class:`ElementBudget` by the operation that would go beyond it (before
    it allocates). Not an :class:`~pyro_lvae.errors.LVAEError`: the code that sets the budget
    turns it into the error that names its cause.

    :param int used: the elements counted, this operation's included
    :param int limit: the budget
    """

    def __init__(self, used: int, limit: int) -> None:
        super().__init__(f"{used} tensor elements, beyond the budget of {limit}")
        self.used, self.limit = used, limit


#: factories whose size may be given as separate integers (``torch.empty(3, 4)``)
_VARARGS_SIZES = frozenset({"empty", "zeros", "ones", "rand", "randn", "new_empty",
                            "new_zeros", "new_ones"})
#: factories whose size is a sequence argument (or ``size=``)
_SEQUENCE_SIZES = _VARARGS_SIZES | {"full", "new_full", "empty_strided", "randint", "normal"}


def _product(values: Any) -> int:
    out = 1
    for v in values:
        out *= int(v)
    return out


def _factory_elements(name: str, args: tuple, kwargs: dict) -> int | None:
    """The elements a factory function creates, read from its arguments (``None``: ``name`` is
    no factory this knows)."""
    if name in _SEQUENCE_SIZES:
        if "size" in kwargs:
            return _product(kwargs["size"])
        positional = args[1:] if name.startswith("new_") else args
        for a in positional:
            if isinstance(a, (list, tuple, torch.Size)):
                return _product(a)
        if name in _VARARGS_SIZES:
            return _product(a for a in positional if isinstance(a, int))
        return 0
    if name == "arange":
        bounds = [float(a) for a in args[:3]]
        start, end, step = ([0.0] + bounds if len(bounds) == 1 else bounds + [1.0])[:3]
        return max(0, math.ceil((end - start) / step)) if step else 0
    if name == "eye":
        n = int(args[0] if args else kwargs["n"])
        m = args[1] if len(args) > 1 else kwargs.get("m")
        return n * (n if m is None else int(m))
    if name in ("linspace", "logspace"):
        return int(args[2] if len(args) > 2 else kwargs["steps"])
    if name == "randperm":
        return int(args[0] if args else kwargs["n"])
    if name in ("repeat", "tile") and args and isinstance(args[0], torch.Tensor):
        rest = args[1:] or (kwargs.get("repeats", kwargs.get("dims", ())),)
        sizes = rest[0] if len(rest) == 1 and not isinstance(rest[0], int) else rest
        return args[0].numel() * _product(sizes)
    return None


def _broadcast_elements(shapes: list[tuple[int, ...]]) -> int:
    """The elements of the broadcast of ``shapes`` (0 where they do not broadcast together:
    a matrix product, a concatenation)."""
    rank = max(len(s) for s in shapes)
    out = []
    for axis in range(1, rank + 1):
        sizes = {s[-axis] for s in shapes if len(s) >= axis} - {1}
        if len(sizes) > 1:
            return 0
        out.append(sizes.pop() if sizes else 1)
    return _product(out)


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    return []


def _new_elements(func: Any, args: tuple, kwargs: dict) -> int:
    """The tensor elements a torch function is about to create, read from its arguments: all of
    a factory's output (``torch.empty``, ``zeros``, ``full``, ``randn``, ``arange``, a
    ``repeat``, ...), and the broadcast of the tensors any other function is given where it is
    larger than every one of them (an outer comparison of two vectors). In-place and view
    functions, and functions of one tensor, create nothing beyond their input."""
    name = getattr(func, "__name__", "")
    if name.endswith("_") and not name.endswith("__"):  # in place
        return 0
    try:
        count = _factory_elements(name, args, kwargs)
        if count is not None:
            return count
        shapes = [tuple(t.shape) for t in _tensors((args, tuple(kwargs.values())))]
        if len(shapes) < 2:
            return 0
        grown = _broadcast_elements(shapes)
        return grown if grown > max(_product(s) for s in shapes) else 0
    except (TypeError, ValueError, KeyError, IndexError, OverflowError, ZeroDivisionError):
        return 0  # arguments this does not read: torch itself will judge them


class _Counter(TorchFunctionMode):
    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit, self.used = limit, 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self.used += _new_elements(func, args, kwargs)
        if self.used > self.limit:
            raise BudgetExceeded(self.used, self.limit)
        return func(*args, **kwargs)


class ElementBudget:
    """A context manager: the torch operations run inside it (in this thread) may create at most
    ``limit`` tensor elements in all; the one that would go beyond raises
    :class:`BudgetExceeded` before it allocates. Counted, from each torch function's arguments
    before it runs: every tensor that a factory makes (``torch.empty``, ``zeros``, ``full``,
    ``randn``, ``arange``, ``repeat``, ... and the layers built on them) and every broadcast
    larger than all the tensors it came from; elementwise, view and in-place functions count
    nothing, and elements are never given back (a bound on what is built, not on what stays).

    :param int limit: the elements allowed

    Example::

        >>> import torch
        >>> from pyro_lvae.limits import BudgetExceeded, ElementBudget
        >>> with ElementBudget(1000):
        ...     layer = torch.nn.Linear(10, 10)   # 110 elements
        >>> try:
        ...     with ElementBudget(1000):
        ...         layer = torch.nn.Linear(100, 100)
        ... except BudgetExceeded as e:
        ...     print(e.used > e.limit)
        True
    """

    def __init__(self, limit: int) -> None:
        self.limit = int(limit)
        self._mode: _Counter | None = None

    @property
    def used(self) -> int:
        """The elements counted so far."""
        return self._mode.used if self._mode is not None else 0

    def __enter__(self) -> ElementBudget:
        self._mode = _Counter(self.limit)
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._mode is not None
        self._mode.__exit__(*exc)
