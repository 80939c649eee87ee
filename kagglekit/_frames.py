"""Checks on data frames shared by the pipeline: one place that says which columns a frame lacks.

No pandas import here: a frame is anything with ``.columns``, so importing this module stays cheap.
"""

from __future__ import annotations

from typing import Iterable, Mapping


def check_columns(frame, columns: Iterable[str] | Mapping[str, str | None], what: str = "frame", *,
                  fix: str = "pass a normalized frame.") -> None:
    """Raise a ValueError when `frame` lacks any of `columns`, naming each missing one, the columns
    the frame does have, and the fix.

    Args:
        frame: a DataFrame (anything with ``.columns``).
        columns: the column names it must have; or ``{parameter: column}`` when the names come from
            the caller's arguments, so that the message names the parameter too
            (``group_col='anchor'``). A None column (an optional column not asked for) is skipped.
        what: how the message names the frame, e.g. ``"frame"``, ``"extra_df"``, the argument name.
        fix: the message's last words: what to do about it.

    Raises:
        ValueError: ``"{what} has no column {missing}; its columns are [...]: {fix}"``.

    Example:
        >>> import pandas as pd
        >>> check_columns(pd.DataFrame({"text_a": ["x"]}), ("text_a", "text_b"))
        Traceback (most recent call last):
        ValueError: frame has no column 'text_b'; its columns are ['text_a']: pass a normalized frame.
    """
    if isinstance(columns, Mapping):
        missing = [f"{param}={column!r}" for param, column in columns.items() if column is not None and column not in frame.columns]
    else:
        missing = [repr(column) for column in columns if column not in frame.columns]
    if missing:
        raise ValueError(f"{what} has no column {', '.join(missing)}; its columns are {list(frame.columns)}: {fix}")
