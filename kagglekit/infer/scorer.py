"""The in-memory scorer: a run's folds loaded once, rows scored exactly as ``kagglekit predict`` scores a file.

``Scorer.from_run(run_dir).predict(rows)`` answers as sentence-transformers' ``CrossEncoder.predict``
does (one row in, a float out; many rows in, an array out), through predict's own fold loop
(`kagglekit.infer.predict.average_folds`) and the recipe's own test-file reading (`read_rows`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd


__all__ = ["Scorer"]

_ROWS_HELP = "a tuple of {fields} for one row, a list of such tuples, or a DataFrame with the test file's columns"


class Scorer:
    """A trained run in memory: every fold loaded once, rows scored as a test file of the run.

    Build one with `Scorer.from_run`. `predict` reads the rows with the run's recipe (its checks,
    templates, CPC titles, target grouping, co-occurrence and embedding features), visits them sorted
    by length in batches, averages the folds (and both text orders with ``tta="swap"``), applies the
    recipe's postprocess and clips into the task's range: the numbers ``kagglekit predict`` writes for
    the same rows. Features computed across rows (target grouping, co-occurrence) see the rows of one
    call together, as they see the rows of one test file.

    Attributes:
        run: the run folder.
        task: the run's recipe (uspppm | pairs | ids).
        fields: the fields of a row tuple, in order (uspppm: anchor, target, context; pairs: the two
            text columns; then any feature_columns).
        folders: the fold folders, in the order they are averaged.
    """

    def __init__(self, run: str | os.PathLike, folds: Sequence[tuple], *, device, amp_dtype, batch_size: int, average: str, tta: str,
                 full: Sequence[Path] = (), full_weight: float | None = None):
        """Use `from_run`, which checks the options. `folds`: (folder, model, tokenizer, meta) per fold, as
        `kagglekit.infer.predict.load_folds` yields them; `device` and `amp_dtype` resolved."""
        self.run = str(run)
        self._folds = list(folds)  # (folder, model, tokenizer, meta) per fold, kept loaded
        self.folders = [Path(f[0]) for f in self._folds]
        self.device, self.amp_dtype = device, amp_dtype
        self.batch_size, self.average, self.tta = batch_size, average, tta
        self.full, self.full_weight = [Path(f) for f in full], full_weight  # the full-data fits among the folders, their share
        meta = self._folds[0][3]  # every fold reads rows alike: average_folds checks they agree
        self.task = meta.task
        text, features, self._id_col, self._copies = _row_layout(self.task, meta.recipe_state or {})
        self._columns = None if text is None else [*text, *features]  # the test file's columns, in tuple order
        self._n_text = len(text or ())
        self.fields = tuple(_field_name(c, k) for k, c in enumerate(self._columns or ()))

    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, *, device: str = "auto", precision: str = "auto", batch_size: int = 64,
                 average: str = "prob", tta: str = "none", full_weight: float | None = None, base_model=None) -> "Scorer":
        """Load every fold of a run once.

        Args:
            run_dir: a run folder written by ``kagglekit train`` (``fold*/`` inside), or one model folder.
            device: auto (CUDA when there is one) | cpu | cuda, as predict chooses.
            precision: auto (fp16/bf16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | 8bit | 4bit (as in
                `kagglekit.infer.predict.predict`: weights in 8 or 4 bits, CUDA only).
            batch_size: rows per forward pass (default 64, as predict).
            average: prob | logit: how folds (and TTA views) are averaged (see `average_outputs`).
            tta: none | swap: also score each pair with its texts exchanged (runs trained with swap=true).
            full_weight: the share of the run's full-data fits (``full/``), as in `kagglekit.infer.predict.predict`;
                None: each counts as one more fold.
            base_model: a LoRA run's base model folder (or folders), as in `kagglekit.infer.predict.predict`; None: the
                folder recorded at training.

        Example:
            >>> scorer = Scorer.from_run("runs/uspppm", device="cpu")
            >>> scorer.predict(("opc drum", "inorganic photoconductor drum", "G02"))  # a float in [0, 1]
        """
        from kagglekit.infer.predict import (AVERAGES, TTAS, check_adapter_bases, check_symmetric, device_and_amp, load_folds,
                                             select_model_dirs, weight_bits)

        if average not in AVERAGES:
            raise ValueError(f"average={average!r} is unknown: use 'prob' (average predictions) or 'logit' (average logits).")
        if tta not in TTAS:
            raise ValueError(f"tta={tta!r} is unknown: use 'none' or 'swap' (both text orders, for runs trained with swap=true).")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got batch_size={batch_size!r}.")
        folds, full = select_model_dirs(run_dir, full_weight, what="run_dir")
        folders = folds + full
        if tta == "swap":
            check_symmetric(run_dir, folders[0])
        check_adapter_bases(folders, base_model)
        dev, amp_dtype = device_and_amp(device, precision)
        return cls(run_dir, list(load_folds(folders, dev, base_model, weight_bits(precision))), device=dev, amp_dtype=amp_dtype, batch_size=batch_size,
                   average=average, tta=tta, full=full, full_weight=full_weight)

    def predict(self, rows) -> float | np.ndarray:
        """Score one row or many; the caller's objects are left as they are.

        Args:
            rows: one row as a tuple of `fields` (uspppm: ``(anchor, target, context)``; pairs:
                ``(text_a, text_b)``; ids: two space-separated id texts, or two sequences of ints);
                a list of such rows; or a DataFrame with the test file's columns (an id column is
                added when it has none).

        Returns:
            A float for one row; an array (N,) of float64 in the rows' order for a list or a frame.

        Raises:
            ValueError: no rows, a row with the wrong number of fields, or a field of the wrong kind
                (the message names the expected fields); or whatever the run's test-file checks raise.
        """
        from kagglekit.infer.inputs import InputCache
        from kagglekit.infer.predict import average_folds

        frame, single = self._frame(rows)
        inputs = InputCache(frame, device=self.device)
        result = average_folds(self.run, self._folds, inputs, average=self.average, tta=self.tta, batch_size=self.batch_size,
                               device=self.device, amp_dtype=self.amp_dtype, verbose=False, full=self.full,
                               full_weight=self.full_weight)
        preds = np.clip(result.preds, *result.value_range)  # as predict clips the submission into the task's range
        assert len(preds) == len(frame), "the recipe must keep every row"
        return float(preds[0]) if single else preds

    def __repr__(self) -> str:
        return f"Scorer({self.run!r}, task={self.task!r}, folds={len(self._folds)}, fields={self.fields}, device={str(self.device)!r})"

    # --- rows -> the test file's frame ------------------------------------------------------------------
    def _frame(self, rows) -> tuple[pd.DataFrame, bool]:
        """(a frame in the test file's columns, whether one row was given)."""
        if isinstance(rows, pd.DataFrame):
            if rows.empty:
                raise ValueError(f"rows: the DataFrame has no rows: pass {self._help()}.")
            if self._id_col is not None and self._id_col not in [str(c) for c in rows.columns]:
                rows = rows.assign(**{self._id_col: np.arange(len(rows)).astype(str)})  # a copy: the caller's frame stays
            return rows, False
        if not isinstance(rows, (tuple, list)):
            raise TypeError(f"rows: got {type(rows).__name__}; pass {self._help()}.")
        single = isinstance(rows, tuple) or (len(rows) > 0 and not any(isinstance(r, (tuple, list)) for r in rows))
        rows = [rows] if single else rows
        if not rows:
            raise ValueError(f"rows: the list is empty: pass {self._help()}.")
        if self._columns is None:
            raise ValueError(f"rows: task {self.task!r} has no tuple layout here: pass a DataFrame with its test file's columns.")
        table = {column: [] for column in self._columns}
        for i, row in enumerate(rows):
            if not isinstance(row, (tuple, list)) or len(row) != len(self._columns):
                got = f"{len(row)} field(s)" if isinstance(row, (tuple, list)) else f"a {type(row).__name__}"
                raise ValueError(f"rows: row {i} has {got}, expected {len(self._columns)}: {self._help()}.")
            for k, (column, value) in enumerate(zip(self._columns, row)):
                table[column].append(self._field(value, k, i))
        frame = pd.DataFrame(table)
        for column, source in self._copies.items():
            frame[column] = frame[source]
        if self._id_col is not None:
            frame.insert(0, self._id_col, np.arange(len(frame)).astype(str))
        return frame, single

    def _field(self, value, k: int, i: int):
        """One field checked: text fields take a string (ids: also a sequence of ints), feature fields a number."""
        if k >= self._n_text:
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
                raise ValueError(f"rows: row {i} field {self.fields[k]!r} must be a number, got {value!r}: {self._help()}.")
            return value
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple, np.ndarray)) and len(value) and all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in value):
            return " ".join(str(int(t)) for t in value)  # id sequences, as the ids recipe's files hold them
        raise ValueError(f"rows: row {i} field {self.fields[k]!r} must be text, got {value!r}: {self._help()}.")

    def _help(self) -> str:
        fields = "(" + ", ".join(self.fields) + ")" if self._columns is not None else "the test file's columns"
        return _ROWS_HELP.format(fields=fields)


def _row_layout(task: str, state: dict) -> tuple[list[str] | None, list[str], str | None, dict[str, str]]:
    """How a row tuple becomes a test-file row: (its text columns, its feature columns, the id column
    that numbers the rows, columns that copy another); None text columns when the task has none here."""
    features = [str(c) for c in state.get("feature_columns") or ()]
    if task == "uspppm":
        from kagglekit.data.recipes.uspppm import TEXT_COLUMNS

        return list(TEXT_COLUMNS), features, "id", {}
    if "text_cols" in state:  # pairs and ids: the columns their settings name
        text = [str(c) for c in state["text_cols"]]
        id_col = str(state.get("id_col") or "") or None  # none: the recipe numbers the rows itself
        group = str(state.get("group_col") or "")  # read from test files too; any value serves at prediction
        return text, features, id_col, ({group: text[0]} if group and group not in text else {})
    return None, features, None, {}


def _field_name(column: str, k: int) -> str:
    """A field's name for messages: the column's name, or text_a/text_b for a column given by position."""
    return ("text_a", "text_b")[k] + f" (column {column})" if column.isdigit() and k < 2 else column
