"""The package's structure, read from its source: the import graph has no cycle and points
one way, no module outside the spec modules switches on a spec's type, and the backend
and Flow base classes leave no hook silently unimplemented."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from flowbench import adapters
from flowbench.adapters.base import Flow

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("adapters", "datasets", "benchmarks")
SPEC_MODULES = ("adapters.spec", "adapters.image")
MATCHED_BACKENDS = ("adapters.torch", "adapters.jax", "adapters.tfp")


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py of the package's own folders."""
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(tree: ast.AST):
    """Every import statement, inside functions and classes too; not those under
    ``if TYPE_CHECKING:`` (they never run)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _unprefixed(module: str) -> str:
    """flowbench.adapters.x -> adapters.x (the folder module installed under flowbench);
    flowbench alone -> "" (``from flowbench import adapters`` names adapters)."""
    return module.removeprefix("flowbench").lstrip(".")


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that module ``name`` imports (the one it names: ``from a
    import b`` is a.b when that is a module, else a)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [_unprefixed(alias.name) for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = _unprefixed(node.module or "")
            dotted = [f"{origin}.{alias.name}".lstrip(".") for alias in node.names]
            targets = [d if d in modules else origin for d in dotted]
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 on the current path, 2 done
    path: list[str] = []

    def visit(node):
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


def test_the_graph_reader_sees_relative_function_level_and_absolute_imports():
    graph = import_graph()
    assert "adapters.canonical" in graph["adapters.image"]          # from . import canonical
    assert "adapters.errors" in graph["adapters.spec"]              # from .errors import ...
    assert "adapters.native.torch" in graph["adapters.torch"]       # from ..native.torch
    assert "adapters.image" in graph["benchmarks.worker"]           # inside a function
    assert "benchmarks.environment" in graph["benchmarks.suite._common"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle_in_the_package():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_dependencies_point_one_way():
    """benchmarks -> adapters, datasets; adapters and datasets never import benchmarks;
    no backend imports another backend."""
    graph = import_graph()
    bad = [(a, b) for a, deps in graph.items() for b in deps
           if a.split(".")[0] in ("adapters", "datasets") and b.startswith("benchmarks")]
    for backend in MATCHED_BACKENDS:
        others = [o for o in MATCHED_BACKENDS if o != backend]
        bad += [(a, b) for a, deps in graph.items() for b in deps
                if (a == backend or a.startswith(backend + "."))
                and any(b == o or b.startswith(o + ".") for o in others)]
    assert not bad, f"imports against the layering: {bad}"


def _type_switches(path: Path) -> list[int]:
    """Lines of isinstance/issubclass calls whose class argument names FlowSpec or
    ImageSpec."""
    hits = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "issubclass") and len(node.args) == 2):
            continue
        names = {n.id if isinstance(n, ast.Name) else n.attr
                 for n in ast.walk(node.args[1]) if isinstance(n, (ast.Name, ast.Attribute))}
        if names & {"FlowSpec", "ImageSpec"}:
            hits.append(node.lineno)
    return hits


def test_the_switch_reader_finds_a_type_switch(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("def f(spec):\n    return isinstance(spec, (image.ImageSpec, int))\n")
    assert _type_switches(probe) == [2]


def test_no_spec_type_switches_outside_the_spec_modules():
    hits = [f"{path.relative_to(ROOT)}:{line}" for name, path in _modules().items()
            if name not in SPEC_MODULES for line in _type_switches(path)]
    assert not hits, ("behaviour that differs by kind of spec belongs on the spec; "
                      f"isinstance on a spec type at {hits}")


@pytest.mark.parametrize("name", adapters.names())
def test_registry_backends_leave_no_abstract_method(name):
    """The registry names a class; it and the Flow class it builds implement every hook."""
    if adapters.available()[name] is not None:
        pytest.skip(adapters.available()[name])
    entry = adapters.REGISTRY[name]
    module, _, cls_name = entry.path.partition(":")
    cls = getattr(importlib.import_module(module), cls_name)
    assert not cls.__abstractmethods__, f"{cls.__name__} leaves {set(cls.__abstractmethods__)}"
    assert issubclass(cls.flow_class, Flow)
    assert not cls.flow_class.__abstractmethods__, (
        f"{cls.flow_class.__name__} leaves {set(cls.flow_class.__abstractmethods__)}")
    assert isinstance(adapters.load(name), cls)


def test_a_flow_without_its_backend_hook_cannot_be_made():
    class Incomplete(Flow):
        def _sample(self, n, seed): ...
        def _train_step(self, x): ...
        def _gradients(self, x): ...
        def get_weights(self): ...
        def set_weights(self, weights): ...

    with pytest.raises(TypeError, match="_call"):
        Incomplete(None, adapters.FlowSpec(), "cpu", adapters.TrainConfig(), "eager")
    assert "_call" in Flow.__abstractmethods__
