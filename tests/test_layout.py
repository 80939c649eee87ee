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
    ("config", ["kagglekit.config", "kagglekit.config_pretrain"]),
    ("run", ["kagglekit.run"]),
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
