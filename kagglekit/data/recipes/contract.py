"""The recipe contract: the `Recipe` base class and the checks every recipe runs on the frames it reads.

A recipe reads one competition's files into the kit's normalized frame: the columns ``id, text_a,
text_b, label, group`` (``label`` absent for test files), plus the numeric ``feature_columns`` of the
config under their own names. A recipe also has a *state*: what it needs at prediction time besides
the test file (for USPPPM, the context titles). The state is saved inside every model folder, so
inference rebuilds exactly the training inputs without the original data sets attached.

The recipes themselves live one per module beside this one; the registry is the package's
``__init__``. This module imports no recipe, so each recipe module imports it without a cycle.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from kagglekit.config import Config

FRAME_COLUMNS = ("id", "text_a", "text_b", "label", "group")


__all__ = ["FRAME_COLUMNS", "Recipe", "bad_rows", "check_ids", "check_labels", "check_text", "numeric_features"]


class Recipe:
    """Base class: the contract every recipe honours.

    A subclass sets `name` (its key in the registry), the competition's `id_col` and `target_col`,
    its default CV `metric` and `label_range`, and implements `read_train` and `read_test`; each
    returns a normalized frame (`FRAME_COLUMNS`, ``label`` only in training frames). For decoder
    backbones it may name its own `prompt_fields` and `DEFAULT_TEMPLATE` (see `prompt_template`).
    """

    name: str = ""
    id_col: str = "id"
    target_col: str = "label"  # the label column of the competition files and of submission.csv
    metric: str = "pearson"  # default CV metric
    label_range: tuple[float, float] = (-np.inf, np.inf)
    # A decoder's prompt: the fields a template may name besides text_a and text_b (frame columns the recipe
    # adds when the run's template, ``state["template"]``, names them), and the template an empty key takes.
    prompt_fields: tuple[str, ...] = ()
    DEFAULT_TEMPLATE = "Text A: {text_a}\nText B: {text_b}\nDo A and B mean the same? Answer:"

    def state(self, cfg: "Config") -> dict:
        """What prediction needs besides the test file; JSON-serialisable."""
        return {"feature_columns": cfg.feature_list()}

    def prompt_template(self, cfg: "Config") -> str:
        """The template a decoder backbone's prompts use: ``cfg.template``, or this recipe's default; checked
        (`check_prompt`). The runner records it in the recipe state, so predict renders the same prompts."""
        from kagglekit.data.prompts import PAIR_FIELDS, template_fields

        template = cfg.template or self.default_template(cfg)
        names = template_fields(template)
        unknown = [n for n in names if n not in (*PAIR_FIELDS, *self.prompt_fields)]
        if unknown:
            raise ValueError(f"config key 'template': unknown field(s) {unknown} in {template!r}; task {self.name!r} has "
                             f"{list(PAIR_FIELDS + self.prompt_fields)}.")
        if cfg.swap and not set(PAIR_FIELDS) <= set(names):
            raise ValueError(f"swap=true exchanges text_a and text_b, but the template {template!r} does not name both, so a "
                             "swapped row would repeat its prompt: name {text_a} and {text_b} in the template, or set swap=false.")
        self.check_prompt(names, cfg)
        return template

    def default_template(self, cfg: "Config") -> str:
        """The template an empty ``template`` key takes."""
        return self.DEFAULT_TEMPLATE

    def check_prompt(self, names: list[str], cfg: "Config") -> None:
        """Refuse recipe settings that the template's fields `names` would leave without effect; none by default."""

    def read_train(self, path, state: dict, *, max_rows: int = 0, what: str = "train_csv") -> pd.DataFrame:
        """The training file as a normalized frame; `what` names the file in errors (``extra_train_csv``)."""
        raise NotImplementedError

    def read_test(self, path, state: dict) -> pd.DataFrame:
        raise NotImplementedError

    def postprocess(self, preds, state: dict):
        """Predictions (N,) → the competition's scale for the submission; identity by default."""
        return preds


def check_text(df: pd.DataFrame, columns, *, what: str, path, id_col: str = "id") -> None:
    """Fail on NaN, empty or whitespace-only text, naming the file, column and first bad rows."""
    for column in columns:
        values = df[column]
        bad = values.isna() | values.astype(str).str.strip().eq("")
        if bad.any():
            count, shown = bad_rows(df, bad, id_col, value_col=column)
            raise ValueError(
                f"{what}: {path} column {column!r} has {count} empty or missing value(s): {shown}. "
                "Fill or drop these rows before training."
            )


def numeric_features(df: pd.DataFrame, columns, *, what: str, path, id_col: str = "id") -> dict[str, np.ndarray]:
    """The ``feature_columns`` of a file as float arrays; a missing value or non-number names its rows."""
    out = {}
    for column in columns:
        if column in FRAME_COLUMNS:
            raise ValueError(f"feature_columns: {column!r} is a name the kit uses itself ({list(FRAME_COLUMNS)}); rename that column.")
        values = pd.to_numeric(df[column], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            count, shown = bad_rows(df, bad, id_col, value_col=column)
            raise ValueError(
                f"{what}: {path} feature column {column!r} must hold finite numbers; {count} row(s) do not: {shown}. "
                "Fill them (e.g. with 0) or drop the column from feature_columns."
            )
        out[column] = values.to_numpy(dtype=np.float64)
    return out


def check_ids(df: pd.DataFrame, *, what: str, path, id_col: str = "id") -> None:
    """Fail on duplicated ids, naming the file, the column and a few of the duplicates."""
    dup = df[id_col].duplicated(keep=False)
    if dup.any():
        shown = sorted(df.loc[dup, id_col].astype(str).unique())[:5]
        raise ValueError(
            f"{what}: {path} column {id_col!r} has {int(dup.sum())} rows with duplicated ids, e.g. {shown}: "
            "ids must be unique; drop the duplicates or rebuild the id column."
        )


def check_labels(df: pd.DataFrame, column: str, low: float, high: float, *, what: str, path, id_col: str = "id") -> None:
    """Fail on labels that are not numbers in ``[low, high]``, naming the file, column and first bad rows."""
    values = pd.to_numeric(df[column], errors="coerce")
    bad = values.isna() | (values < low) | (values > high)
    if bad.any():
        count, shown = bad_rows(df, bad, id_col, value_col=column)
        raise ValueError(
            f"{what}: {path} column {column!r} must hold numbers in [{low:g}, {high:g}]; {count} row(s) do not: "
            f"{shown}. Fix or rescale the labels."
        )


def bad_rows(df: pd.DataFrame, bad: pd.Series, id_col: str, value_col: str | None = None, shown: int = 5) -> tuple[int, str]:
    """How many rows are bad, and the first few as the user finds them: file line, id, and the value.

    Shared by the recipes' checks so that every error points at rows the same way.

    Args:
        df: the frame as read from the file, one row per data line after the header.
        bad: a boolean Series aligned with `df`: True marks a bad row.
        id_col: the column whose value names each row.
        value_col: a column whose value is shown beside each row; None shows none.
        shown: how many rows the text lists; more end in `` ...``.

    Returns:
        ``(count, text)``: the number of bad rows and e.g. ``"line 2 (id 'a'): '', line 5 (id 'd'): ''"``.
    """
    rows = np.flatnonzero(bad.to_numpy())
    parts = []
    for r in rows[:shown]:
        part = f"line {r + 2} (id {df[id_col].iloc[r]!r})"  # +2: the header line, and lines count from 1
        if value_col is not None:
            value = df[value_col].iloc[r]
            part += f": {value!r}" if isinstance(value, str) else f": {value}"  # no numpy reprs
        parts.append(part)
    return len(rows), ", ".join(parts) + (" ..." if len(rows) > shown else "")
