"""Recipes by name: the registry that maps a config's ``task`` to the recipe that reads its files.

Each recipe lives in its own module (`uspppm`, `pairs`, `ids`) and imports only `contract` and lower
layers; this module imports them, never the other way round, so there is no import cycle.
"""

from __future__ import annotations

from kagglekit.data.recipes.contract import FRAME_COLUMNS, Recipe
from kagglekit.data.recipes.ids import IdsRecipe
from kagglekit.data.recipes.pairs import PairsRecipe
from kagglekit.data.recipes.uspppm import UspppmRecipe

__all__ = ["FRAME_COLUMNS", "RECIPES", "IdsRecipe", "PairsRecipe", "Recipe", "UspppmRecipe", "get_recipe"]

# task name (the config's `task`) -> recipe class
RECIPES: dict[str, type[Recipe]] = {
    UspppmRecipe.name: UspppmRecipe,
    PairsRecipe.name: PairsRecipe,
    IdsRecipe.name: IdsRecipe,
}


def get_recipe(name: str | Recipe | type[Recipe]) -> Recipe:
    """A fresh recipe by task name; a Recipe instance passes straight through, a Recipe class is instantiated.

    Args:
        name: a key of `RECIPES` (``"uspppm"``, ``"pairs"``, ``"ids"``), a `Recipe` subclass, or an instance.

    Returns:
        A `Recipe` instance.

    Raises:
        ValueError: an unknown name; the message lists the valid ones.

    Example:
        >>> get_recipe("uspppm").target_col
        'score'
    """
    if isinstance(name, Recipe):
        return name
    if isinstance(name, type) and issubclass(name, Recipe):
        return name()
    if name not in RECIPES:
        raise ValueError(f"unknown task {name!r}; valid tasks are {sorted(RECIPES)}.")
    return RECIPES[name]()
