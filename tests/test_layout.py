"""The package's imports follow the pipeline: a module imports only from its own layer or the layers
before it (config -> run-folder contract -> data -> folds -> models -> train -> infer -> tools), never
from a later one, lazily or not. Read from the source, so a lazy import inside a function counts too."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "kagglekit"

# In pipeline order. The run-folder contract (kagglekit.run: file names, FoldMeta, the card, OOF) sits
# right after config: training writes it and every later stage reads it, so it may import only the base.
LAYERS = [
    ("base", ["kagglekit", "kagglekit._io", "kagglekit._keys", "kagglekit._frames", "kagglekit.kaggle", "kagglekit.metrics",
              "kagglekit.losses", "kagglekit.targets"]),
    ("config", ["kagglekit.config", "kagglekit.config_pretrain", "kagglekit.configs"]),
    ("run", ["kagglekit.run", "kagglekit.discover", "kagglekit._paths"]),
    ("data", ["kagglekit.data"]),
    ("folds", ["kagglekit.folds"]),
    ("models", ["kagglekit.models"]),
    ("train", ["kagglekit.train"]),
    ("infer", ["kagglekit.infer"]),
    ("tools", ["kagglekit.tools"]),
    ("entry points", ["kagglekit.cli", "kagglekit.__main__", "kagglekit.testing"]),
]


def layer_of(module: str) -> int:
    """The layer of the longest prefix that names `module`."""
    best, length = None, -1
    for index, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > length:
                best, length = index, len(prefix)
    assert best is not None, module
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def kit_imports(path: Path, module: str | None = None):
    """(line, imported module) for every kagglekit import of the file (the module `module`, by default the
    one the path names), except those under `if TYPE_CHECKING:`."""
    module = module or module_name(path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
            for n in ast.walk(node)}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the file's package
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.startswith("kagglekit"):
                yield node.lineno, base
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("kagglekit"):
                    yield node.lineno, alias.name


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in MODULES:
        layer_of(module_name(path))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: module_name(p))
def test_no_import_points_to_a_later_stage(path):
    mine = layer_of(module_name(path))
    later = [f"line {line}: {name} ({LAYERS[layer_of(name)][0]})" for line, name in kit_imports(path) if layer_of(name) > mine]
    assert not later, f"{module_name(path)} ({LAYERS[mine][0]}) imports a later stage: {later}"


def test_the_check_sees_a_violation(tmp_path):
    """The check is not vacuous: a lazy import of predict from the training loop is seen."""
    fake = PACKAGE / "train" / "loop.py"
    source = fake.read_text(encoding="utf-8") + "\n\ndef _late():\n    from ..infer.predict import predict\n"
    copy = tmp_path / "kagglekit" / "train" / "loop.py"
    copy.parent.mkdir(parents=True)
    copy.write_text(source)
    imports = [name for _, name in kit_imports(copy, "kagglekit.train.loop")]
    assert "kagglekit.infer.predict" in imports and layer_of("kagglekit.infer.predict") > layer_of("kagglekit.train.loop")


def _import_graph() -> dict[str, set[str]]:
    """module -> the kit modules it imports (lazy and TYPE_CHECKING imports included: a cycle of either kind
    means two modules cannot be read, or moved, apart). `from pkg import mod` counts as importing pkg.mod."""
    modules = {module_name(p): p for p in MODULES}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {m for m in found if m in modules and m != name}
    return graph


def _cycle_from(graph: dict[str, set[str]], start: str) -> list[str] | None:
    stack = [(start, [start])]
    visited = set()
    while stack:
        node, path = stack.pop()
        for nxt in sorted(graph[node]):
            if nxt == start:
                return path + [start]
            if nxt not in visited:
                visited.add(nxt)
                stack.append((nxt, path + [nxt]))
    return None


def test_no_import_cycle():
    graph = _import_graph()
    cycles = [" -> ".join(c) for c in (_cycle_from(graph, m) for m in sorted(graph)) if c]
    assert not cycles, cycles


def test_the_cycle_check_sees_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle_from(graph, "a") == ["a", "b", "c", "a"] and _cycle_from(graph, "d") is None
