"""No unsafe loading: nothing in the package unpickles, and torch.load always has weights_only=True."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kagglekit"


def unsafe_calls(source: str, name: str = "<string>") -> list[str]:
    """Calls of pickle.load/loads (or a bare load/loads imported from pickle) and torch.load without weights_only=True."""
    tree = ast.parse(source, name)
    from_pickle = {alias.asname or alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module == "pickle" for alias in node.names}
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = f"{func.value.id}.{func.attr}" if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else getattr(func, "id", "")
        if dotted in ("pickle.load", "pickle.loads", "cPickle.load") or dotted in from_pickle & {"load", "loads", "Unpickler"}:
            found.append(f"{name}:{node.lineno}: {dotted}")
        if dotted == "torch.load":
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True for k in node.keywords)
            if not safe:
                found.append(f"{name}:{node.lineno}: torch.load without weights_only=True")
    return found


def test_the_scanner_finds_planted_calls():
    planted = "import pickle, torch\nfrom pickle import loads\npickle.load(f)\nloads(b)\ntorch.load(p)\ntorch.load(p, weights_only=False)\ntorch.load(p, weights_only=True)\n"
    assert [line.split(": ", 1)[1] for line in unsafe_calls(planted)] == [
        "pickle.load", "loads", "torch.load without weights_only=True", "torch.load without weights_only=True"]


def test_the_package_never_unpickles():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 10
    found = [hit for path in files for hit in unsafe_calls(path.read_text(encoding="utf-8"), str(path.relative_to(PACKAGE.parent)))]
    assert found == []
