"""The API reference (docs/api, Sphinx autodoc) has a place for every public name of the library.

A page documents a name by an ``auto*`` directive that names it, or by ``automodule`` with
``:members:`` for a module whose ``__all__`` holds it (autodoc shows a constant only when it has a
``#:`` comment or a docstring). So a new public name without a reference page fails here, without
building the pages; ``.ci/run`` builds them with warnings as errors.
"""

import ast
import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest
from helpers import public_names

import pyro_lvae as lv

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "docs" / "api"
LIBRARY = ["pyro_lvae"] + sorted(
    m.name for m in pkgutil.walk_packages(lv.__path__, "pyro_lvae.")
    if not m.name.startswith(("pyro_lvae.experiments", "pyro_lvae.cli"))
)
DIRECTIVE = re.compile(r"^\.\. auto(\w+):: *(\S+)[ \t]*\n((?:[ \t]+:[\w-]+:.*\n)*)", re.M)


def _directives():
    for page in sorted(API.glob("*.rst")):
        for kind, target, options in DIRECTIVE.findall(page.read_text()):
            yield kind, target, dict(re.findall(r":([\w-]+):[ \t]*(.*)", options))


def _split(names):
    return [name.strip() for name in names.split(",") if name.strip()]


def _lookup(dotted):
    """The object named by ``dotted``, read as attributes first (``pyro_lvae.training.fit`` is
    the function that the package exports, not its module)."""
    parts = dotted.split(".")
    obj = importlib.import_module(parts[0])
    for cut in range(1, len(parts)):
        obj = (getattr(obj, parts[cut]) if hasattr(obj, parts[cut])
               else importlib.import_module(".".join(parts[:cut + 1])))
    return obj


def _is_constant(obj):
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))


def _commented_constants(module):
    """Module-level names assigned with a ``#:`` comment or a docstring, as autodoc reads them."""
    source = inspect.getsource(module)
    lines, body = source.splitlines(), ast.parse(source).body
    names = set()
    for i, node in enumerate(body):
        targets = (node.targets if isinstance(node, ast.Assign)
                   else [node.target] if isinstance(node, ast.AnnAssign) else [])
        after = body[i + 1] if i + 1 < len(body) else None
        documented = (
            lines[node.lineno - 2].lstrip().startswith("#:") if node.lineno > 1 else False
        ) or "#:" in lines[node.lineno - 1] or (
            isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str))
        names.update(t.id for t in targets if isinstance(t, ast.Name) and documented)
    return names


def _reference():
    """``(name, object)`` for everything the pages document."""
    entries = []
    for kind, target, options in _directives():
        entries.append((target.rsplit(".", 1)[-1], _lookup(target)))
        if kind != "module" or "members" not in options:
            continue
        module = importlib.import_module(target)
        excluded = set(_split(options.get("exclude-members", "")))
        constants = _commented_constants(module)
        for name in _split(options["members"]) or public_names(module):
            obj = getattr(module, name)
            if name in excluded or (_is_constant(obj) and name not in constants):
                continue  # autodoc leaves out a constant without a comment
            entries.append((name, obj))
    return entries


def test_the_reference_pages_exist_and_name_importable_objects():
    pages = {page.stem for page in API.glob("*.rst")}
    assert {"index", "vae", "observations", "priors", "annealing", "geco", "training",
            "evaluate", "datasets", "tabular", "theory", "errors", "objective"} <= pages
    assert (API / "conf.py").is_file()
    assert "sphinx.ext.intersphinx" not in (API / "conf.py").read_text()  # reads no network
    assert len(_reference()) > 100


@pytest.mark.parametrize("module_name", LIBRARY)
def test_every_public_name_has_a_place_in_the_api_reference(module_name):
    entries = _reference()
    module = importlib.import_module(module_name)
    missing = [
        f"{module_name}.{name}" for name in public_names(module)
        if not any(doc_name == name and obj is getattr(module, name) for doc_name, obj in entries)
    ]
    assert not missing, (
        "not in the API reference: " + ", ".join(missing) + ". Add it to a page of docs/api: "
        "an automodule with :members: of a module whose __all__ names it (a constant also needs a "
        "#: comment), or an autoclass/autofunction/autodata directive")


def test_the_package_ships_its_type_marker():
    tomllib = pytest.importorskip("tomllib")
    assert (ROOT / "pyro_lvae" / "py.typed").is_file()
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "py.typed" in config["tool"]["setuptools"]["package-data"]["pyro_lvae"]
    assert "sphinx" in " ".join(config["project"]["optional-dependencies"]["docs"])
