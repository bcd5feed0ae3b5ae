"""pyro-lvae reads a few of Pyro's private internals, where no public API says what it needs.
Each use is listed here, with the files allowed to make it, and each behaviour it relies on is
pinned by a test below, so that a Pyro release that changes one fails here first (and a new
use cannot slip in unlisted)."""

import ast
from pathlib import Path

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroParam

import pyro_lvae as lv

PACKAGE = Path(lv.__file__).parent

#: private Pyro name -> the package files allowed to use it (relative to pyro_lvae/)
ALLOWED = {
    "_PYRO_STACK": {"annealing.py", "direct_elbo.py", "observations/base.py"},
    "_Context": {"names.py"},
    "_pyro_context": {"names.py", "vae.py", "direct_elbo.py"},
    "_pyro_name": {"names.py", "priors.py"},
    "CompiledFunction": {"annealing.py"},
    "ReplayMessenger": {"annealing.py"},
    "_RETURN": {"annealing.py"},
}


def _uses():
    """Every private Pyro name in the package's code (imports and attribute reads), by file."""
    found = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.startswith(("experiments/", "cli/")):
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pyro"):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
            elif isinstance(node, ast.Constant) and node.value == "_RETURN":
                names = ["_RETURN"]
            for name in names:
                private = (name in ALLOWED or name.startswith("_pyro")
                           or (isinstance(node, ast.ImportFrom) and name.startswith("_")))
                if private:
                    found.setdefault(name, set()).add(rel)
    return found


def test_private_pyro_names_are_used_only_where_listed():
    uses = _uses()
    unlisted = {name: files for name, files in uses.items() if name not in ALLOWED}
    assert not unlisted, f"private Pyro names used but not listed in ALLOWED: {unlisted}"
    for name, files in uses.items():
        assert files <= ALLOWED[name], f"{name} used in {sorted(files - ALLOWED[name])}"


def test_the_handler_stack_lists_the_active_messengers_outermost_first():
    from pyro.poutine.runtime import _PYRO_STACK

    assert _PYRO_STACK == []
    with poutine.scale(scale=2.0) as outer, lv.weight_latents(0.5) as inner:
        assert _PYRO_STACK == [outer, inner]
    assert _PYRO_STACK == []


def test_a_pyro_module_reads_its_parameters_under_its_name_and_context():
    from pyro.nn.module import _Context

    class Holder(PyroModule):
        def __init__(self):
            super().__init__("holder")
            self.w = PyroParam(torch.tensor(2.0), constraint=dist.constraints.positive)

    pyro.clear_param_store()
    h = Holder()
    assert h._pyro_name == "holder" and isinstance(h._pyro_context, _Context)
    with poutine.trace(param_only=True) as tr:
        h.w  # noqa: B018  (an attribute read inside a program is a param statement)
    assert "holder.w" not in tr.trace.nodes  # outside the module's context: no statement
    with h._pyro_context, poutine.trace(param_only=True) as tr:
        value = h.w
    assert "holder.w" in tr.trace.nodes and float(value) == pytest.approx(2.0)
    assert hasattr(tr.trace.nodes["holder.w"]["value"], "unconstrained")


def test_rename_gives_a_module_and_its_children_a_new_store_prefix():
    vae = lv.mlp_vae(2, 1, lv.LearnedScalarScale(init_scale=0.5), hidden=4, blocks=1)
    copy = __import__("copy").deepcopy(vae)
    assert copy.model._pyro_name != vae.model._pyro_name
    assert copy.model.observation._pyro_name.startswith(copy.model._pyro_name + ".")


def test_a_finished_trace_ends_with_its_return_node_and_replay_holds_its_trace():
    from pyro.poutine.replay_messenger import ReplayMessenger

    def program():
        return pyro.sample("a", dist.Normal(0.0, 1.0))

    trace = poutine.trace(program).get_trace()
    assert "_RETURN" in trace.nodes
    messenger = ReplayMessenger(trace=trace)
    assert messenger.trace is trace


def test_pyros_jit_runs_the_program_inside_compiled_function_call():
    from pyro.ops.jit import CompiledFunction

    seen = []

    def program(x):
        import sys

        frame = sys._getframe()
        codes = set()
        while frame is not None:
            codes.add(frame.f_code)
            frame = frame.f_back
        seen.append(CompiledFunction.__call__.__code__ in codes)
        return x * 2

    compiled = pyro.ops.jit.trace(program)
    compiled(torch.tensor(1.0))
    assert seen and seen[0]
