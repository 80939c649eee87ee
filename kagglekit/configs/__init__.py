"""The built-in configs: the Kaggle versions of the repository's ``configs/*.yaml``, shipped in the wheel.

Same settings, but each data path is the competition file's bare name (found under ``/kaggle/input`` by
`kagglekit.discover.resolve_paths`), ``backbone: auto`` and ``output_dir: run``. Load one by name:
``load_config("stsb")``, or ``kagglekit train --config stsb``.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # importlib.resources.abc is Python >= 3.11
    from importlib.resources.abc import Traversable

__all__ = ["builtin_configs", "builtin_config"]

SUFFIX = ".yaml"


def builtin_configs() -> list[str]:
    """The names of the built-in configs, sorted: ``["afqmc", "gaiic", "stsb", "uspppm"]``."""
    folder = resources.files(__package__)
    return sorted(p.name[: -len(SUFFIX)] for p in folder.iterdir() if p.name.endswith(SUFFIX) and p.is_file())


def builtin_config(name: str) -> "Traversable":
    """The packaged YAML file of the built-in config `name` (read it with ``importlib.resources.as_file``).

    Raises:
        ValueError: no built-in config of that name; the message lists them.
    """
    names = builtin_configs()
    if name not in names:
        raise ValueError(f"no built-in config {name!r} (nor a file of that name): the built-in configs are {names}; "
                         "or pass the path of a YAML file.")
    return resources.files(__package__) / f"{name}{SUFFIX}"
