"""Teacher files (``teacher_oof``): read and checked, one row per (id, teacher model), for `kagglekit.train.distill`.

The layout is the kit's ``oof.csv`` with more rows per id, as ``kagglekit predict --per-fold`` writes it: ``id``,
``fold`` (the teacher model: a fold number, or ``full`` for a full fit), ``row_fold`` (the id's own fold in the
teacher run), ``pred`` in the label's space and, for classes and bins, ``logit_0..logit_{C-1}`` (or ``prob_*``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from kagglekit._io import no_column, read_csv

__all__ = ["FULL_FOLD", "PER_FOLD_COMMAND", "TeacherFile", "read_teacher_file", "mean_values", "per_id_mean", "softmax"]

FULL_FOLD = -1  # the teacher model of a full fit's rows: written "full" in a file (the folder's name); -1 reads the same
PER_FOLD_COMMAND = "kagglekit predict --models TEACHER_RUN --data train.csv --per-fold --out teacher.csv"
_WHAT = "teacher_oof"
_CLASS_COLUMN = re.compile(r"^(logit|prob)_(\d+)$")
_TINY = 1e-12  # a probability of 0 read as this: its log stays finite


@dataclass(frozen=True)
class TeacherFile:
    """One teacher file, read and checked: a row per (id, teacher model).

    Args:
        path: the file.
        ids: (R,) the rows' ids, as text.
        model: (R,) the teacher model that made each row: its fold K, or `FULL_FOLD` for a full fit.
        row_fold: (R,) the id's own fold in the teacher run (-1: not one of its rows); None without that column.
        values: (R, D): ``pred`` (D = 1), or the class logits (D = the classes or bins).
        layout: ``per_fold`` (several rows per id, with row_fold), ``oof`` (one row per id, made by the model of
            its own fold: the kit's oof.csv) or ``full`` (a full fit's rows only, or no fold column).
    """

    path: str
    ids: np.ndarray
    model: np.ndarray
    row_fold: np.ndarray | None
    values: np.ndarray
    layout: str


def read_teacher_file(path: str, *, kind: str, num_outputs: int, activation: str, labels: np.ndarray) -> TeacherFile:
    """Read and check one teacher file for a student of output `kind` (``single``, ``classes``, ``bins``).

    Columns: ``id``; ``fold`` (the teacher model: 0, 1, ... or ``full``/-1; none: a full fit); ``row_fold``
    (written by ``predict --per-fold``); ``pred`` in the label's space for a single score (the kit's oof.csv
    ``pred``: a probability with bce), or ``logit_0..logit_{C-1}`` (or ``prob_0..``) for classes and bins.

    Raises:
        ValueError: naming the file, the column, the bad value (with its id and line) and the fix.
    """
    frame = read_csv(path, what=_WHAT, required=("id",), dtype={"id": str, "fold": str, "row_fold": str})
    ids = frame["id"].astype(str).to_numpy()
    values = _class_values(frame, path, num_outputs) if kind != "single" else _score_values(frame, path, activation, labels)
    if "row_fold" in frame and "fold" not in frame:
        raise ValueError(f"{_WHAT}: {path} has a 'row_fold' column but no 'fold' column (the teacher model of each row): write "
                         f"both, as {PER_FOLD_COMMAND} does.")
    model = _fold_numbers(frame, path, "fold") if "fold" in frame else np.full(len(frame), FULL_FOLD)
    row_fold = _fold_numbers(frame, path, "row_fold") if "row_fold" in frame else None
    keys = pd.Series(ids) + "\x00" + pd.Series(model).astype(str)
    dup = keys.duplicated().to_numpy()
    if dup.any():
        raise ValueError(f"{_WHAT}: {path} holds {int(dup.sum())} repeated (id, fold) row(s), e.g. id {ids[dup][0]!r}: one teacher "
                         f"model gives one value per id. Write the file once per teacher model: {PER_FOLD_COMMAND}.")
    if (model == FULL_FOLD).all():
        layout = "full"
    elif row_fold is not None:
        layout = "per_fold"
    elif pd.Series(ids).is_unique:
        layout = "oof"
    else:
        raise ValueError(f"{_WHAT}: {path} has several rows per id but no 'row_fold' column, so which fold each row belongs to in "
                         f"the teacher run cannot be checked against this run's folds: make it with {PER_FOLD_COMMAND}.")
    return TeacherFile(str(path), ids, model, row_fold, values, layout)


def _bad_row(path, column: str, frame: pd.DataFrame, bad: np.ndarray, raw) -> str:
    """``column 'pred' holds 'x' (id '7', line 9)``: the first bad row of a file."""
    at = int(np.flatnonzero(bad)[0])
    return f"{_WHAT}: {path} column {column!r} holds {raw[at]!r} (id {frame['id'].iloc[at]!r}, line {at + 2})"


def _numbers(frame: pd.DataFrame, path, column: str) -> np.ndarray:
    """A value column as floats; a text, empty or infinite cell is refused."""
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"{_bad_row(path, column, frame, bad, frame[column].tolist())} in {int(bad.sum())} row(s) that are not finite "
                         f"numbers: the teacher diverged or the file is damaged. Make it again: {PER_FOLD_COMMAND}.")
    return values


def _score_values(frame: pd.DataFrame, path, activation: str, labels: np.ndarray) -> np.ndarray:
    """``pred`` as (R, 1), checked to lie in the student's label space."""
    if "pred" not in frame:
        raise no_column(_WHAT, path, ["pred"], list(frame.columns))
    values = _numbers(frame, path, "pred")
    low, high = (0.0, 1.0) if activation == "sigmoid" else (float(np.min(labels)), float(np.max(labels)))
    span = 0.0 if activation == "sigmoid" else high - low  # an unbounded score may leave the labels' range a little
    bad = (values < low - span) | (values > high + span)
    if bad.any():
        raise ValueError(f"{_bad_row(path, 'pred', frame, bad, values.tolist())}, outside [{low - span:g}, {high + span:g}] where this run's "
                         f"predictions lie (its labels span [{low:g}, {high:g}]): the teacher predicts on another scale (label_scale, "
                         "another task) or another output. Give the teacher's pred in the label's space, as oof.csv and "
                         "predict --per-fold write it.")
    return values[:, None]


def _class_values(frame: pd.DataFrame, path, count: int) -> np.ndarray:
    """``logit_i`` (or ``prob_i``, as log-probabilities) for i in 0..count-1, as (R, count)."""
    found = {}
    for name in frame.columns:
        match = _CLASS_COLUMN.match(str(name))
        if match:
            found.setdefault(match[1], []).append(int(match[2]))
    wanted = list(range(count))
    if not found:
        raise ValueError(f"{_WHAT}: {path} has no class columns logit_0..logit_{count - 1} (its columns are {list(frame.columns)}): a "
                         f"student with {count} classes or bins distils the teacher's distribution over them. Make the file from "
                         f"a teacher run with the same output and classes: {PER_FOLD_COMMAND}.")
    if len(found) > 1:
        raise ValueError(f"{_WHAT}: {path} has both logit_* and prob_* columns: keep one kind (logits, as predict --per-fold writes).")
    (prefix, numbers), = found.items()
    if sorted(numbers) != wanted:
        raise ValueError(f"{_WHAT}: {path} has columns {prefix}_{sorted(numbers)} but this run's output has {count} classes or bins "
                         f"({prefix}_0..{prefix}_{count - 1}): the teacher was trained with other classes (output, num_bins or labels). "
                         "Distil from a teacher with the same output and label values.")
    values = np.column_stack([_numbers(frame, path, f"{prefix}_{i}") for i in wanted])
    if prefix == "logit":
        return values
    sums = values.sum(axis=1)
    bad = (values < 0).any(axis=1) | (values > 1).any(axis=1) | ~np.isclose(sums, 1.0, atol=1e-3)
    if bad.any():
        raise ValueError(f"{_bad_row(path, 'prob_0', frame, bad, sums.tolist())} as the sum of its prob_* columns: probabilities must lie "
                         "in [0, 1] and sum to 1 per row. Write them as probabilities, or as logits in logit_* columns.")
    return np.log(np.clip(values, _TINY, 1.0))


def _fold_numbers(frame: pd.DataFrame, path, column: str) -> np.ndarray:
    """A ``fold`` or ``row_fold`` column as integers: 0, 1, ..., and ``full`` or -1 (a full fit; row_fold: not a teacher row)."""
    raw = frame[column].tolist()
    text = [str(v).strip().lower() for v in raw]
    out = np.array([FULL_FOLD if t in ("full", "-1") else int(t) if t.isdigit() else -2 for t in text], dtype=np.int64)
    bad = out == -2
    if bad.any():
        meaning = ("the teacher model of the row: a fold number 0, 1, ... or 'full' (a full fit, also -1)" if column == "fold" else
                   "the row's fold in the teacher run: 0, 1, ..., or -1 for an id the teacher run did not have")
        raise ValueError(f"{_bad_row(path, column, frame, bad, raw)}: expected {meaning}. Make the file with {PER_FOLD_COMMAND}.")
    return out


def mean_values(values: Sequence[np.ndarray], kind: str) -> np.ndarray:
    """The mean of several teachers' values, each (N, D): the plain mean of a single score; for classes and bins the
    mean of the class distributions, as logits (its log), so softmax of the result is the teachers' mean distribution."""
    stacked = np.stack(values)  # (F, N, D)
    if kind == "single":
        return stacked.mean(axis=0)
    return np.log(np.clip(softmax(stacked).mean(axis=0), _TINY, 1.0))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (max-shifted, so large logits do not overflow)."""
    exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exp / exp.sum(axis=-1, keepdims=True)


def per_id_mean(values: np.ndarray, ids: np.ndarray, kind: str) -> pd.DataFrame:
    """One row per id (the index): its rows' values, or their mean (`mean_values`' rule) where an id has several."""
    table = pd.DataFrame(values, index=ids)
    if table.index.is_unique:
        return table
    if kind == "single":
        return table.groupby(level=0, sort=False).mean()
    probs = pd.DataFrame(softmax(values), index=ids).groupby(level=0, sort=False).mean()
    return np.log(probs.clip(lower=_TINY))
