"""The layers stay as designed: no import cycle inside `memomentum/` or `sweeps/` (imports inside
functions count too), the library never imports the Ray layer, and the registries are the only
lists of names."""
import ast
import os
from typing import Dict, List, Optional, Set

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def package_modules(root: str, package: str) -> Dict[str, str]:
    """Dotted module name -> file, for every module of `package` under `root`."""
    modules = {}
    for folder, _, files in os.walk(os.path.join(root, package)):
        for name in files:
            if name.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, name), root)[:-3].replace(os.sep, ".")
                modules[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, name)
    return modules


def module_graph(root: str, package: str) -> Dict[str, Set[str]]:
    """module -> the modules of `package` it imports, anywhere in its code (functions included).

    `from package import x` points at the module package.x when there is one, else at the package's
    __init__. A module's implicit import of its parent packages is not counted (every module would
    otherwise import the package __init__ and everything it imports)."""
    modules = package_modules(root, package)
    graph = {}
    for module, path in modules.items():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        is_pkg = path.endswith("__init__.py")
        targets = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolve against this module's package
                    parts = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                    source = ".".join(parts + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                names = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in modules:  # `import package.a.b` names package.a.b, or a parent
                    name = name.rpartition(".")[0]
                if name and name != module:
                    targets.add(name)
        graph[module] = targets
    return graph


def find_cycle(graph: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One import cycle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles_through_function_level_imports(tmp_path):
    pkg = tmp_path / "toy"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from toy import b\n")
    (pkg / "b.py").write_text("def f():\n    from toy.c import g\n")
    (pkg / "c.py").write_text("import os\n\ndef g():\n    from . import a\n")
    graph = module_graph(str(tmp_path), "toy")
    assert graph["toy.a"] == {"toy.b"} and graph["toy.b"] == {"toy.c"} and graph["toy.c"] == {"toy.a"}
    assert find_cycle(graph) == ["toy.a", "toy.b", "toy.c", "toy.a"]
    (pkg / "c.py").write_text("import os\n")
    assert find_cycle(module_graph(str(tmp_path), "toy")) is None


@pytest.mark.parametrize("package", ["memomentum", "sweeps"])
def test_no_import_cycle(package):
    graph = module_graph(ROOT, package)
    assert len(graph) > 5
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_library_never_imports_the_ray_layer():
    for module, path in package_modules(ROOT, "memomentum").items():
        with open(path) as fh:
            tree = ast.parse(fh.read(), path)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in ("ray", "sweeps", "run_sweep"), f"{module} imports {name}"


def test_errors_is_a_leaf():
    assert module_graph(ROOT, "memomentum")["memomentum.errors"] == set()


def test_the_collector_does_not_depend_on_the_trainable():
    """The tables can be rebuilt (--collect) without the Tune trainable: sweeps.results reaches neither it nor
    Ray, and every sweep-folder name comes from sweeps.layout."""
    graph = module_graph(ROOT, "sweeps")
    seen, todo = set(), ["sweeps.results"]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    assert "sweeps.trainable" not in seen and "sweeps.runner" not in seen
    assert "sweeps.layout" in graph["sweeps.results"]
