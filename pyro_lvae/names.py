"""Param-store names of pyro-lvae's Pyro modules: unique roots, independent copies, and a
check that the entries under a module's name are its own.

Pyro keeps parameters in one global store, keyed by name; a ``PyroModule`` reads and writes the
entries under its own name, and ``pyro.module`` registers a plain network's weights there
without loading stored values back into the network. So two modules with one name share
entries (one side silently never trains), a copy that keeps its original's name reads and
writes the original's entries, and entries restored from a file or left by an earlier module
of the same name are silently used for some parameters and ignored for others. Here a copy
gets a name of its own, and a module whose name holds entries that are not its own tensors
refuses to run.
"""

from __future__ import annotations

import copy
import itertools
from typing import Any

import pyro
from pyro.nn import PyroModule
from pyro.nn.module import _Context
from torch import nn

from .errors import ConfigError

__all__ = ["fresh_index", "rename", "registered_by_pyro_module", "IndependentCopies"]

_counter = itertools.count()


def fresh_index() -> int:
    """A number never returned before in this process (for unique names)."""
    return next(_counter)


def rename(module: PyroModule, name: str) -> None:
    """Give a root PyroModule and its PyroModule descendants the param-store prefix ``name`` and
    a fresh context. PyroModules under a plain ``nn.Module`` are roots of their own: each
    top-most one gets a fresh name."""
    context = _Context()

    def under_plain(m: nn.Module) -> None:
        for child in m._modules.values():
            if isinstance(child, PyroModule):
                rename(child, f"{child._pyro_name}.copy{fresh_index()}")
            elif child is not None:
                under_plain(child)

    def visit(m: nn.Module, prefix: str) -> None:
        for key, child in m._modules.items():
            if isinstance(child, PyroModule):
                child._pyro_name = f"{prefix}.{key}"
                child._pyro_context = context
                visit(child, child._pyro_name)
            elif child is not None:
                under_plain(child)

    module._pyro_name = name
    module._pyro_context = context
    if "_root_name" in module.__dict__:
        module._root_name = name
    visit(module, name)


def registered_by_pyro_module(module: PyroModule) -> bool:
    """Whether ``pyro.module`` has put ``module``'s parameters in Pyro's param store under another
    module's name: ``module`` sits inside a plain ``nn.Module`` that the program registers with
    ``pyro.module`` (Pyro's ss_vae_M2 and dmm pattern), or that a parent ``PyroModule``
    registers for it. Its parameters are then that module's param-store entries, and running it
    as a ``PyroModule`` would register the same tensors a second time under its own name, which
    the JIT ELBOs refuse (an ``AssertionError`` in ``pyro.ops.jit``). Entries that the module
    registers itself (``name.child$$$...`` for a plain child of its own) do not count.

    :param PyroModule module: the module to look up
    """
    own = {p.data_ptr() for p in module.parameters()}
    if not own:
        return False
    prefix = module._pyro_name + "."
    return any("$$$" in name and not name.startswith(prefix) and value.data_ptr() in own
               for name, value in pyro.get_param_store().named_parameters())


class IndependentCopies:
    """For root PyroModules: ``copy.deepcopy`` gives the copy a name of its own, and the first
    run inside a Pyro program checks that the param-store entries under the module's name are
    its own tensors (:meth:`check_param_store`)."""

    _pyro_name: str

    def _remember_root(self) -> None:
        self._root_name = self._pyro_name  # a parent PyroModule renames its children
        self._store_checked = False

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        new = self.__class__.__new__(self.__class__)
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            new.__dict__[key] = copy.deepcopy(value, memo)
        new._store_checked = False
        if self._pyro_name == self.__dict__.get("_root_name"):  # a root: a name of its own
            rename(new, f"{self._pyro_name}.copy{fresh_index()}")
        return new

    def check_param_store(self) -> None:
        """Raise :class:`~pyro_lvae.errors.ConfigError` if Pyro's param store holds entries
        under this module's name that are not its own tensors (checked once per module)."""
        if self._store_checked:
            return
        self._store_checked = True
        store = pyro.get_param_store()
        prefix = self._pyro_name + "."
        own = {p.data_ptr() for p in self.parameters()}  # type: ignore[attr-defined]
        foreign = [k for k, v in store.named_parameters()
                   if k.startswith(prefix) and v.data_ptr() not in own]
        if foreign:
            entries = "entry" if len(foreign) == 1 else "entries"
            raise ConfigError(
                f"Pyro's param store holds {len(foreign)} {entries} "
                f"under this module's name {self._pyro_name!r} (e.g. {foreign[0]!r}) that are not "
                f"its parameters: a param store restored from a file, or left by an earlier "
                f"module of the same name. Pyro would use some of them and silently ignore "
                f"others (it does not load network weights from the store). Save and restore "
                f"models with vae.save and lv.load (or state_dicts), and call "
                f"pyro.clear_param_store() before building the module again"
            )
