"""Every public name of the core package has a docstring, and `import pyro_lvae` stays light."""

import importlib
import inspect
import pkgutil
import subprocess
import sys

from helpers import public_names

import pyro_lvae as lv

CORE = sorted(
    m.name for m in pkgutil.walk_packages(lv.__path__, "pyro_lvae.")
    if not m.name.startswith(("pyro_lvae.experiments", "pyro_lvae.cli"))
)


def _public(module):
    return [(n, getattr(module, n)) for n in public_names(module)]


def _documented(cls, attr):
    for base in cls.__mro__:
        if attr in vars(base):
            member = vars(base)[attr]
            member = getattr(member, "fget", None) or getattr(member, "__func__", member)
            if (getattr(member, "__doc__", None) or "").strip():
                return True
    return False


def test_every_public_name_of_the_core_has_a_docstring():
    missing = []
    for name in ["pyro_lvae"] + CORE:
        module = importlib.import_module(name)
        if not (module.__doc__ or "").strip():
            missing.append(name)
        for attr, obj in _public(module):
            if inspect.ismodule(obj) or not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue
            if not (obj.__doc__ or "").strip():
                missing.append(f"{name}.{attr}")
            if inspect.isclass(obj):
                for member, value in vars(obj).items():
                    if member.startswith("_") or not (
                            inspect.isfunction(value) or isinstance(value, (property,
                                                                            classmethod))):
                        continue
                    if not _documented(obj, member):
                        missing.append(f"{name}.{attr}.{member}")
    assert not missing, "no docstring: " + ", ".join(sorted(set(missing)))


def test_import_pyro_lvae_does_not_import_the_heavy_layers():
    code = ("import sys, pyro_lvae; print(sorted(m for m in ('matplotlib', 'torchvision', "
            "'pandas', 'sklearn', 'pyro_lvae.experiments', 'pyro_lvae.cli') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
