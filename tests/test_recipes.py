"""The recipes package: the registry, get_recipe, the shared bad-rows helper, and imports without a cycle."""

import ast
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from kagglekit.data.recipes import RECIPES, IdsRecipe, PairsRecipe, Recipe, UspppmRecipe, get_recipe
from kagglekit.data.recipes.contract import bad_rows

PACKAGE = ROOT / "kagglekit" / "data" / "recipes"
RECIPE_MODULES = ("contract", "uspppm", "pairs", "ids")
# The layers after data in the pipeline: no data module may import them.
LATER_LAYERS = ("kagglekit.models", "kagglekit.train", "kagglekit.infer", "kagglekit.tools", "kagglekit.run", "kagglekit.cli")


def test_registry_lists_exactly_the_recipes():
    assert RECIPES == {"uspppm": UspppmRecipe, "pairs": PairsRecipe, "ids": IdsRecipe}
    for name, cls in RECIPES.items():
        assert issubclass(cls, Recipe) and cls.name == name
    # every recipe module in the package is registered, and nothing else is a module there
    assert {p.stem for p in PACKAGE.glob("*.py")} == {"__init__", *RECIPE_MODULES}


@pytest.mark.parametrize("name", ["uspppm", "pairs", "ids"])
def test_get_recipe_by_name_gives_a_fresh_instance(name):
    first, second = get_recipe(name), get_recipe(name)
    assert type(first) is RECIPES[name] and first is not second  # recipes hold state: never shared


def test_get_recipe_passes_classes_and_instances_through():
    class Custom(Recipe):  # not in the registry: a class still passes
        name = "custom"

    assert type(get_recipe(Custom)) is Custom
    assert type(get_recipe(PairsRecipe)) is PairsRecipe
    recipe = UspppmRecipe()
    assert get_recipe(recipe) is recipe


def test_get_recipe_refuses_an_unknown_name_listing_the_valid_ones():
    with pytest.raises(ValueError) as err:
        get_recipe("squad")
    message = str(err.value)
    assert "'squad'" in message and "['ids', 'pairs', 'uspppm']" in message


def test_bad_rows_names_file_lines_ids_and_values():
    df = pd.DataFrame({"id": [f"r{i}" for i in range(8)], "text": ["ok", "", "ok", " ", "", "", "", "ok"],
                       "n": [1.0, np.nan, 2.0, 3.5, 4.0, 5.0, 6.0, 7.0]})
    bad = df["text"].str.strip().eq("")
    count, shown = bad_rows(df, bad, "id", value_col="text")
    assert count == 5
    # line = row + 2 (the header, and lines counting from 1); only the first 5 are shown, no " ..." at exactly 5
    assert shown == "line 3 (id 'r1'): '', line 5 (id 'r3'): ' ', line 6 (id 'r4'): '', line 7 (id 'r5'): '', line 8 (id 'r6'): ''"
    count, shown = bad_rows(df, bad, "id", value_col="n", shown=2)
    assert count == 5 and shown == "line 3 (id 'r1'): nan, line 5 (id 'r3'): 3.5 ..."  # numbers without numpy reprs
    assert bad_rows(df, bad, "id", shown=1) == (5, "line 3 (id 'r1') ...")


@pytest.mark.parametrize("module", RECIPE_MODULES)
def test_each_recipe_module_imports_alone_without_a_later_layer(module):
    # A fresh interpreter: an import cycle shows as an ImportError of a partly initialised module,
    # whichever module comes first; and the data layer must load no model, training or inference code.
    code = (
        f"import sys, kagglekit.data.recipes.{module}\n"
        f"later = sorted(m for m in sys.modules if m.startswith({LATER_LAYERS!r}))\n"
        "heavy = sorted(m for m in ('torch', 'transformers') if m in sys.modules)\n"
        "assert not later and not heavy, (later, heavy)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _kagglekit_imports(path):
    """Every kagglekit module a file imports (absolute names; relative imports resolved)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], *filter(None, [base])])
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return [n for n in names if n.startswith("kagglekit")]


def test_no_recipe_module_imports_the_registry_back():
    for module in RECIPE_MODULES:
        imported = _kagglekit_imports(PACKAGE / f"{module}.py")
        inside = [n for n in imported if n.startswith("kagglekit.data.recipes")]
        # only submodules, by their full names: `from kagglekit.data.recipes import X` would run __init__ mid-import
        assert all(n.split(".")[3] in RECIPE_MODULES for n in inside if n != "kagglekit.data.recipes"), (module, inside)
        assert "kagglekit.data.recipes" not in imported, (module, imported)


def test_the_recipes_import_no_later_layer():
    # also lazy imports inside functions: reading a competition's files never needs a model
    offenders = {}
    for path in PACKAGE.glob("*.py"):
        later = [n for n in _kagglekit_imports(path) if n.startswith(LATER_LAYERS)]
        if later:
            offenders[path.name] = later
    assert not offenders
