"""The layout of the code stays as docs/layout.md describes it: utils/ holds its subpackages and the four
leaf modules nets/ may use, nets/ uses nothing else of utils/, the subpackages import one another in one direction
only, and no project module imports itself back through others."""
import ast
import importlib
from pathlib import Path

import pytest

from conftest import REPO

SUBPACKAGES = ("runtime", "data", "deploy", "infer", "train")  # lower layers first
LEAVES = {"errors", "boxes", "model_spec", "sidecar"}  # what nets/ may import of utils/
PROJECT_PACKAGES = ("nets", "utils", "utils_coco", "benchmarks")


def project_files():
    files = [path for package in PROJECT_PACKAGES for path in (REPO / package).rglob("*.py")]
    return files + sorted(REPO.glob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports anywhere in it (function-level imports too)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {target for target in targets if target in known}
    return found - {name}


@pytest.fixture(scope="module")
def graph():
    files = project_files()
    known = {module_name(path) for path in files}
    return {module_name(path): imported_modules(path, known) for path in files}


def test_utils_holds_only_its_subpackages_and_the_allowed_leaves():
    entries = {path.name for path in (REPO / "utils").iterdir() if path.name != "__pycache__"}
    assert entries == {"__init__.py", *(f"{leaf}.py" for leaf in LEAVES), *SUBPACKAGES}, entries
    for package in SUBPACKAGES:
        assert (REPO / "utils" / package / "__init__.py").is_file(), package


def test_every_subpackage_and_module_imports():
    for package in SUBPACKAGES:
        importlib.import_module(f"utils.{package}")
        for path in sorted((REPO / "utils" / package).glob("*.py")):
            importlib.import_module(module_name(path))


def test_nets_imports_only_the_leaf_modules_of_utils(graph):
    allowed = {f"utils.{leaf}" for leaf in LEAVES}
    for name, imports in graph.items():
        if name.startswith("nets"):
            used = {module for module in imports if module.startswith("utils")}
            assert used <= allowed, (name, used - allowed)
    for leaf in LEAVES:
        assert {module for module in graph[f"utils.{leaf}"] if module.startswith(("utils", "nets"))} <= allowed, leaf


def test_subpackages_import_only_lower_layers(graph):
    for name, imports in graph.items():
        parts = name.split(".")
        if len(parts) < 3 or parts[0] != "utils":
            continue
        layer = SUBPACKAGES.index(parts[1])
        for module in imports:
            other = module.split(".")
            if other[0] == "utils" and len(other) > 1 and other[1] in SUBPACKAGES:
                assert SUBPACKAGES.index(other[1]) <= layer, f"{name} imports {module} (a higher layer)"


def test_no_import_circle_among_project_modules(graph):
    """Tarjan's strongly connected components: every component is a single module."""
    index, low, on_stack, stack, circles = {}, {}, set(), [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not circles, circles
