"""The package's import graph is a DAG, imports inside functions included, and ``import
pyro_lvae`` leaves out the research layer and the command line."""

import ast
import subprocess
import sys
from pathlib import Path

import pyro_lvae as lv

ROOT = Path(lv.__file__).parent


def _modules(root: Path) -> dict[str, tuple[Path, bool]]:
    """Every module of the package at ``root``: dotted name -> (file, is a package)."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def _imported(module: str, package: bool, node: ast.AST) -> list[str]:
    """The dotted names an ``import`` or ``from ... import`` statement can load (a
    ``from X import name`` may load the module ``X.name``); relative imports resolved."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    if node.level:
        base = module.split(".") if package else module.split(".")[:-1]
        base = base[:len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module
    return [target] + [f"{target}.{alias.name}" for alias in node.names]


def module_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports, anywhere in its file (module level and inside
    functions). Importing ``a.b.c`` runs ``a`` and ``a.b`` first: those are edges too, except
    the importer's own parent packages (already running when it is imported)."""
    modules = _modules(root)
    graph = {}
    for module, (path, package) in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(module, package, node):
                parts = name.split(".")
                for i in range(1, len(parts) + 1):
                    target = ".".join(parts[:i])
                    if target in modules and not (module == target
                                                  or module.startswith(target + ".")):
                        edges.add(target)
        graph[module] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as its modules in import order (the first repeated at the end), or
    ``None`` for a DAG."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_import_graph_has_no_cycle():
    graph = module_graph(ROOT)
    assert len(graph) > 50
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_table_observation_sits_below_training_and_the_table_package_above():
    graph = module_graph(ROOT)
    below = {"pyro_lvae.observations", "pyro_lvae.observations.table"}
    reach = set()
    todo = list(below)
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in reach:
                reach.add(nxt)
                todo.append(nxt)
    assert not {m for m in reach if m.startswith(("pyro_lvae.tabular", "pyro_lvae.training"))}
    assert "pyro_lvae.training" in graph["pyro_lvae.tabular.model"]


def test_the_checker_finds_a_cycle_through_an_import_inside_a_function(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from .sub import b\n")
    (package / "sub" / "__init__.py").write_text("")
    (package / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (package / "c.py").write_text("import pkg.a\n")
    graph = module_graph(package)
    assert graph["pkg.a"] == {"pkg.sub", "pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.c"}
    assert find_cycle(graph) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_import_pyro_lvae_imports_neither_the_studies_nor_the_command_line():
    code = ("import sys, pyro_lvae; print([m for m in sys.modules if m.startswith("
            "('pyro_lvae.experiments', 'pyro_lvae.cli'))])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"
