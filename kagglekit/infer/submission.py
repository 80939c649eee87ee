"""The submission's checks: the sample submission against the test ids, and the file itself (columns,
ids and their order, finite values in the task's range), all before anything is written."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from kagglekit._io import read_csv


def read_sample(sample_path, id_col: str, target_col: str, ids: np.ndarray) -> pd.DataFrame:
    """The sample submission, checked against the test ids and the column the model predicts."""
    sample = read_csv(sample_path, what="sample_submission", required=(id_col,), dtype={id_col: str})
    missing = set(sample[id_col]) ^ set(ids)
    if missing:
        raise ValueError(
            f"sample_submission: {sample_path} and the test data disagree on {len(missing)} id(s), e.g. "
            f"{sorted(missing)[:5]}: pass the sample submission that belongs to this test file."
        )
    extra = [c for c in sample.columns if c not in (id_col, target_col)]
    if extra:
        raise ValueError(f"sample_submission: {sample_path} has column(s) {extra} that the model does not predict "
                         f"(it predicts {target_col!r}): pass the competition's sample submission.")
    return sample


def check_submission(sub: pd.DataFrame, *, id_col: str, ids: Sequence, columns: Sequence[str] | None = None,
                     value_range: tuple[float, float] = (-np.inf, np.inf)) -> None:
    """Fail before anything is written unless the submission is exactly what the competition expects.

    Args:
        sub: the submission frame.
        id_col: its id column.
        ids: the ids it must hold, in this order (the test file's, or the sample submission's).
        columns: the columns it must have, in this order; None: the id column and one prediction column.
        value_range: the closed range every prediction must lie in.

    Raises:
        ValueError: naming the problem (columns, duplicated / missing / extra / misordered ids,
            NaN or infinite values, values out of range) with examples.
    """
    expected = list(columns) if columns is not None else [id_col, *[c for c in sub.columns if c != id_col]]
    if list(sub.columns) != expected or len(expected) < 2:
        raise ValueError(f"submission: columns are {list(sub.columns)}, expected {expected}: the id column then the prediction column(s).")
    got, want = [str(i) for i in sub[id_col]], [str(i) for i in ids]
    dup = pd.Series(got).duplicated()
    if dup.any():
        raise ValueError(f"submission: {int(dup.sum())} duplicated id(s), e.g. {pd.Series(got)[dup].head(3).tolist()}.")
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    if missing or extra:
        raise ValueError(f"submission: the ids differ from the expected ones: {len(missing)} missing (e.g. {missing[:3]}), "
                         f"{len(extra)} unexpected (e.g. {extra[:3]}).")
    if got != want:
        at = next(i for i, (g, w) in enumerate(zip(got, want)) if g != w)
        raise ValueError(f"submission: ids out of order: row {at} holds {got[at]!r} where {want[at]!r} belongs (test or sample order).")
    for column in expected[1:]:
        _check_values(sub, id_col, column, value_range)


def _check_values(sub: pd.DataFrame, id_col: str, column: str, value_range: tuple[float, float]) -> None:
    values = pd.to_numeric(sub[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise ValueError(f"submission: column {column!r} has {int(bad.sum())} NaN, infinite or non-numeric value(s), e.g. ids "
                         f"{sub.loc[bad, id_col].head(3).tolist()}: a model diverged; retrain it or leave it out.")
    low, high = value_range
    out = (values < low) | (values > high)
    if out.any():
        shown = ", ".join(f"{i!r}: {v:g}" for i, v in zip(sub.loc[out, id_col].head(3), values[out][:3]))
        raise ValueError(f"submission: column {column!r} has {int(out.sum())} value(s) outside the task's range [{low:g}, {high:g}] "
                         f"({shown}): check the runs' task settings (label_scale) and postprocess.")
