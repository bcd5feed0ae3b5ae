"""Sphinx configuration of the pyro-lvae API reference, built from the docstrings.

Build: ``sphinx-build -W --keep-going -b html docs/api <out>`` (needs the ``docs`` extra). The
build reads nothing from the network: no intersphinx inventory is fetched.
"""

import importlib
import importlib.util
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, ROOT)

import pyro_lvae  # noqa: E402

project = "pyro-lvae"
author = "pyro-lvae authors"
copyright = "pyro-lvae authors"
release = version = pyro_lvae.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "sphinx.ext.viewcode"]

# Docstrings use Sphinx fields (``:param int x:``): no napoleon. Each page lists a module with
# ``:members:``, which documents the names of the module's ``__all__`` that have a docstring (a
# constant: a ``#:`` comment), in source order. Values of constants are left to their comments
# (some are tables of classes and functions whose repr is long and changes from run to run).
autodoc_default_options = {"member-order": "bysource", "show-inheritance": True,
                           "no-value": True}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

# The optional extras (Lightning, TensorBoard, the table's pandas and scikit-learn) are mocked
# only where they are not installed, so the reference builds from the ``docs`` extra alone.
autodoc_mock_imports = [name for name in ("lightning", "tensorboard", "pandas", "sklearn")
                        if importlib.util.find_spec(name) is None]

# Every reference to a public pyro-lvae name must resolve (a renamed or removed name fails the
# build). Names outside pyro-lvae (torch, Pyro, the standard library) stay plain text, since no
# inventory is fetched, and so do private base classes shown after "Bases:".
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(?!pyro_lvae\.).*"), (r"py:.*", r"pyro_lvae\.(.*\.)?_.*")]
# type variables in signatures are not documented objects
nitpick_ignore = [("py:class", "pyro_lvae.registry.F")]

html_theme = "alabaster"
html_title = f"pyro-lvae {release} API reference"
exclude_patterns = ["_build"]


def _lookup(name):
    """The Python object named by a dotted ``name``, read as attributes first (a package's
    ``fit`` is the function, not the module of that name), or None."""
    parts = name.split(".")
    obj = importlib.import_module(parts[0])
    for cut in range(1, len(parts)):
        if hasattr(obj, parts[cut]):
            obj = getattr(obj, parts[cut])
            continue
        try:
            obj = importlib.import_module(".".join(parts[:cut + 1]))
        except ImportError:
            return None
    return obj


def _resolve_in_package(app, env, node, contnode):
    """Resolve the references that the Python domain misses to the page that documents them.

    Docstrings name objects as users reach them: ``pyro_lvae.fit`` or ``VAE.save`` (the top-level
    name, or a name without its module), while each object is documented once, in its module
    (``pyro_lvae.training.fit``, ``pyro_lvae.vae.VAE.save``). A ``pyro_lvae.<name>`` target is
    followed to the documented object; a short target resolves when exactly one documented
    pyro-lvae object ends with it. Anything else is left to the Python domain's warning.
    """
    if node.get("refdomain") != "py":
        return None
    domain = env.get_domain("py")
    documented = {name for name, entry in domain.objects.items()
                  if name.startswith("pyro_lvae.") and not entry.aliased}
    target = node["reftarget"].lstrip("~.")
    if target.startswith("pyro_lvae."):
        head, _, rest = target.removeprefix("pyro_lvae.").partition(".")
        if head not in pyro_lvae.__all__:
            return None
        obj = getattr(pyro_lvae, head)
        homes = [name for name in documented if name.count(".") >= 2 and _lookup(name) is obj]
        candidates = [f"{home}.{rest}" if rest else home for home in homes]
    else:
        candidates = [name for name in documented if name.endswith("." + target)]
    if len(candidates) != 1 or candidates[0] not in domain.objects:
        return None
    found = domain.resolve_any_xref(env, node["refdoc"], app.builder, candidates[0], node,
                                    contnode)
    return found[0][1] if found else None


_INITIAL = re.compile(r"^(\s*[-*+] )([A-Z])\. ")


def _keep_citations_bullets(app, what, name, obj, options, lines):
    """Keep a reference that starts with an initial (``- V. Berger, M. Sebag. ...``) one bullet:
    docutils reads ``V.`` as the enumerator of a nested list (and prints "22. Berger")."""
    lines[:] = [_INITIAL.sub(r"\1\2\\. ", line) for line in lines]


def setup(app):
    """Register the reference resolver and the citation fix."""
    app.connect("missing-reference", _resolve_in_package)
    app.connect("autodoc-process-docstring", _keep_citations_bullets)
