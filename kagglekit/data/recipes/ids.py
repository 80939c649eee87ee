"""Ids: the GAIIC 2021 "Xiaobu" files (desensitized text of integer ids) read as pairs in a fixed layout.

The files have no header and are tab-separated: id text a, id text b and, in training files, a 0/1
label. The vocabulary and the random model for such texts are built in `kagglekit.models.ids`; this
recipe only reads the files, so the data layer needs nothing from the model layer.
"""

from __future__ import annotations

from kagglekit.data.recipes.contract import Recipe
from kagglekit.data.recipes.pairs import PairsRecipe, pair_settings

__all__ = ["GAIIC_LAYOUT", "IdsRecipe"]

# The GAIIC layout as `pairs` config keys: no header, tab-separated, text a and b at 0 and 1, label at 2.
GAIIC_LAYOUT = {
    "text_cols": "0,1", "label_col": "2", "id_col": "", "sep": "\t", "header": False, "quoting": "none",
    "keep_columns": 0, "label_type": "binary", "label_scale": 0.0, "group_col": "",
}


class IdsRecipe(PairsRecipe):
    """GAIIC layout: header-less, tab-separated ``text_a, text_b[, label 0/1]``; roc_auc; grouped by text_a.

    The layout is fixed (the ``pairs`` config keys do not apply); for another id layout use ``pairs``.

    Example:
        >>> recipe = get_recipe("ids")
        >>> frame = recipe.read_train("gaiic/train.tsv", recipe.state(cfg))
    """

    name = "ids"

    def __init__(self):
        super().__init__()
        self._settings = pair_settings(_Layout())

    def state(self, cfg) -> dict:
        self._settings = pair_settings(_Layout())
        return {**Recipe.state(self, cfg), **self._settings}


class _Layout:
    """GAIIC_LAYOUT as attributes, the form `pair_settings` reads a config in."""

    def __init__(self):
        self.__dict__.update(GAIIC_LAYOUT)
