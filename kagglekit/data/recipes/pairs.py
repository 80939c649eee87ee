"""Pairs: any CSV/TSV with two text columns and a label (STS-B, AFQMC, ...) → the normalized frame.

Columns are named, or given as 0-based positions for header-less files. Labels are a 0/1 class
(metric roc_auc) or a score (metric pearson); ``label_scale`` divides scores into [0, 1] for training
and `postprocess` multiplies predictions back, so the submission is in the competition's own scale.
Rows are grouped by ``text_a`` unless ``group_col`` says otherwise: in STS-B and AFQMC one sentence
appears in several pairs, and a sentence seen in training and again in validation overstates CV.
"""

from __future__ import annotations

import csv
import io

import numpy as np
import pandas as pd

from kagglekit._io import check_file, check_header, check_separator, nameless, read_text
from kagglekit.data.recipes.contract import Recipe, check_ids, numeric_features

LABEL_TYPES = ("auto", "regression", "binary")
QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}

# config key -> default; `state(cfg)` reads each with getattr, so a Config without them still works
DEFAULTS = {
    "text_cols": "sentence1,sentence2",  # the two text columns: names, or 0-based positions
    "label_col": "label",  # name or position; ignored in test files
    "id_col": "",  # name or position; "": the row number (0-based) is the id
    "sep": "",  # field separator; "": tab for .tsv/.txt files, else comma
    "header": True,  # the first line names the columns
    "quoting": "minimal",  # minimal: CSV quotes | none: quotes are plain characters (STS-B)
    "keep_columns": 0,  # keep the first N fields of each row (STS-B: 7); 0: every row has the header's width
    "label_type": "auto",  # auto (binary when the labels are all 0/1) | regression | binary
    "label_scale": 0.0,  # > 0: training labels are divided by it, predictions multiplied back (STS-B: 5)
    "group_col": "",  # name or position of the fold group; "": text_a
}


def pair_settings(cfg) -> dict:
    """The pairs settings of a config, checked; config keys it lacks take their `DEFAULTS`."""
    s = {key: getattr(cfg, key, default) for key, default in DEFAULTS.items()}
    s["text_cols"] = [c.strip() for c in str(s["text_cols"]).split(",") if c.strip()]
    if len(s["text_cols"]) != 2:
        raise ValueError(
            f"config key 'text_cols' must name exactly two columns, got {s['text_cols']}; "
            "e.g. text_cols=sentence1,sentence2 or text_cols=5,6 for a file without header."
        )
    for key in ("label_col", "id_col", "sep", "group_col", "quoting", "label_type"):
        s[key] = str(s[key]).strip() if key != "sep" else str(s[key])
    s["sep"] = {"\\t": "\t", "tab": "\t"}.get(s["sep"], s["sep"])
    if len(s["sep"]) > 1:
        raise ValueError(f"config key 'sep' must be one character (or empty for by-extension), got {s['sep']!r}.")
    if s["quoting"] not in QUOTING:
        raise ValueError(f"config key 'quoting': unknown value {s['quoting']!r}; valid values are {list(QUOTING)}.")
    if s["label_type"] not in LABEL_TYPES:
        raise ValueError(f"config key 'label_type': unknown value {s['label_type']!r}; valid values are {list(LABEL_TYPES)}.")
    s["header"], s["keep_columns"], s["label_scale"] = _flag(s["header"]), int(s["keep_columns"]), float(s["label_scale"])
    if s["keep_columns"] < 0:
        raise ValueError(f"config key 'keep_columns' must be 0 (all) or more, got {s['keep_columns']}.")
    if s["label_scale"] < 0 or not np.isfinite(s["label_scale"]):
        raise ValueError(f"config key 'label_scale' must be 0 (no scaling) or a positive number, got {s['label_scale']}.")
    if s["label_type"] == "binary" and s["label_scale"] > 0:
        raise ValueError("config keys 'label_type=binary' and 'label_scale' exclude each other: 0/1 labels need no scaling; set label_scale=0.")
    return s


def _flag(value) -> bool:
    """A bool from a config value that may still be text ("false", "0", "no")."""
    if isinstance(value, str):
        if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"config key 'header' must be true or false, got {value!r}.")
        return value.strip().lower() in ("true", "1", "yes")
    return bool(value)


def read_table(path, s: dict, *, what: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Every field of a delimited file as strings, and each row's line number in the file.

    A csv.reader rather than pandas: with quoting "none" pandas cannot keep the first N fields of
    ragged rows, and the line numbers let every later error point at the line to fix.
    """
    path = check_file(path, what)
    sep = s["sep"] or ("\t" if path.suffix.lower() in (".tsv", ".txt") else ",")
    rows, lines, width, names = [], [], s["keep_columns"], None
    text = read_text(path, what=what)  # UTF-8, a BOM dropped: the first column's name is as written
    try:
        with io.StringIO(text, newline="") as handle:
            reader = csv.reader(handle, delimiter=sep, quoting=QUOTING[s["quoting"]], strict=True)
            for row in reader:
                if not row or row == [""]:
                    continue  # blank line
                if names is None and s["header"]:  # names checked: none twice, not split on the wrong separator
                    names = check_header(row[:width] if width else row, what=what, path=path, sep=sep, sep_key="sep")
                    if width and len(names) < width:
                        raise ValueError(
                            f"{what}: {path} header line {reader.line_num} names {len(names)} column(s) but keep_columns={width}; "
                            "lower keep_columns, or set header=false if the first line is data."
                        )
                    width = width or len(names)
                    continue
                if not rows and not s["header"]:
                    check_separator(row, what=what, path=path, sep=sep, sep_key="sep")
                width = width or len(row)
                if len(row) < width or (len(row) > width and not s["keep_columns"]):
                    raise ValueError(
                        f"{what}: {path} line {reader.line_num} has {len(row)} field(s) where {width} are expected "
                        f"(separator {sep!r}, quoting {s['quoting']!r}). Fix that line; set sep if the file uses another "
                        "separator; if rows carry extra trailing fields set keep_columns to the number to keep; if stray "
                        "quotes join fields set quoting=none."
                    )
                rows.append(row[:width])
                lines.append(reader.line_num)
    except csv.Error as err:
        raise ValueError(f"{what}: {path} line {reader.line_num}: {err}. Check its quotes, or set quoting=none.") from err
    if not rows:
        raise ValueError(f"{what}: {path} has no data rows.")
    names = names or [str(i) for i in range(width)]
    return pd.DataFrame(rows, columns=names, dtype=object), np.asarray(lines)


def resolve_column(df: pd.DataFrame, spec: str, *, key: str, what: str, path) -> str:
    """The frame column that a config value names: a column name, else a 0-based position."""
    if spec in df.columns:
        return spec
    if spec.isdigit() and int(spec) < len(df.columns):
        return df.columns[int(spec)]
    raise ValueError(
        f"{what}: {path} has no column {spec!r} (config key {key!r}); its columns are {list(df.columns)}{nameless(df.columns)}. "
        f"Set {key} to one of them (or a 0-based position), or point {what} at the right file."
    )


def _fail_rows(bad: np.ndarray, df: pd.DataFrame, column: str, lines: np.ndarray, shown: int = 5) -> str:
    """The first bad rows as the user finds them: file line and value."""
    rows = np.flatnonzero(bad)
    parts = [f"line {lines[r]}: {df[column].iloc[r]!r}" for r in rows[:shown]]
    return f"{len(rows)} row(s): " + ", ".join(parts) + (" ..." if len(rows) > shown else "")


class PairsRecipe(Recipe):
    """Two text columns and an optional label, read by the settings in `DEFAULTS`.

    Example:
        >>> recipe = get_recipe("pairs")  # cfg: text_cols=5,6 label_col=4 header=false quoting=none
        >>> state = recipe.state(cfg)     #      keep_columns=7 label_scale=5   (STS-B)
        >>> frame = recipe.read_train("stsb/sts-train.csv", state)
    """

    name = "pairs"

    def __init__(self):
        self._label_type = None  # resolved by read_train (auto → regression | binary)
        self._settings = dict(DEFAULTS)

    # --- what the runner and predict read off the recipe -------------------------------------------
    @property
    def id_col(self) -> str:
        spec = self._settings["id_col"]
        return spec if spec and not spec.isdigit() else "id"

    @property
    def target_col(self) -> str:
        spec = self._settings["label_col"]
        return spec if spec and not spec.isdigit() else "label"

    @property
    def label_type(self) -> str:
        return self._label_type or self._settings["label_type"]

    @property
    def metric(self) -> str:
        return "roc_auc" if self.label_type == "binary" else "pearson"

    @property
    def label_range(self) -> tuple[float, float]:
        if self.label_type == "binary" or self._settings["label_scale"] > 0:
            return (0.0, 1.0)
        return (-np.inf, np.inf)

    def state(self, cfg) -> dict:
        self._settings = pair_settings(cfg)
        return {**super().state(cfg), **self._settings}

    def postprocess(self, preds, state: dict):
        """Predictions back in the file's scale: × label_scale when it is set."""
        scale = float(state.get("label_scale") or 0)
        return np.asarray(preds, dtype=np.float64) * scale if scale > 0 else preds

    # --- reading ------------------------------------------------------------------------------------
    def _frame(self, df: pd.DataFrame, lines: np.ndarray, s: dict, *, what: str, path) -> pd.DataFrame:
        cols = [resolve_column(df, c, key="text_cols", what=what, path=path) for c in s["text_cols"]]
        for col in cols:
            bad = df[col].isna().to_numpy() | df[col].astype(str).str.strip().eq("").to_numpy()
            if bad.any():
                raise ValueError(
                    f"{what}: {path} text column {col!r} is empty in {_fail_rows(bad, df, col, lines)}. "
                    "Fill or drop these rows."
                )
        if s["id_col"]:
            ids = df[resolve_column(df, s["id_col"], key="id_col", what=what, path=path)].astype(str).str.strip()
        else:
            ids = pd.Series(np.arange(len(df)).astype(str))
        text_a, text_b = (df[c].astype(str).str.strip().to_numpy() for c in cols)
        group = text_a if not s["group_col"] else df[resolve_column(df, s["group_col"], key="group_col", what=what, path=path)].astype(str).to_numpy()
        frame = pd.DataFrame({"id": ids.to_numpy(), "text_a": text_a, "text_b": text_b, "group": group})
        check_ids(frame, what=what, path=path)
        features = numeric_features(df, s.get("feature_columns") or (), what=what, path=path, id_col=cols[0])
        for name, values in features.items():
            frame[name] = values
        return frame

    def read_train(self, path, state: dict, *, max_rows: int = 0, what: str = "train_csv") -> pd.DataFrame:
        s = {**DEFAULTS, **state}
        self._settings = s
        df, lines = read_table(path, s, what=what)
        if max_rows:
            df, lines = df.iloc[:max_rows].reset_index(drop=True), lines[:max_rows]
        frame = self._frame(df, lines, s, what=what, path=path)
        frame.insert(3, "label", self._labels(df, lines, s, what=what, path=path))  # id, text_a, text_b, label, group, ...
        return frame

    def _labels(self, df, lines, s: dict, *, what: str, path) -> np.ndarray:
        col = resolve_column(df, s["label_col"], key="label_col", what=what, path=path)
        labels = pd.to_numeric(df[col].astype(str).str.strip(), errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(labels)
        if bad.any():
            raise ValueError(f"{what}: {path} label column {col!r} must hold numbers; {_fail_rows(bad, df, col, lines)}. Fix or drop these rows.")
        binary = np.isin(labels, (0.0, 1.0))
        kind = s["label_type"]
        if kind == "auto":
            kind = "binary" if binary.all() and not s["label_scale"] > 0 else "regression"
        if kind == "binary" and not binary.all():
            raise ValueError(
                f"{what}: {path} label column {col!r} must hold 0 or 1 for label_type=binary; {_fail_rows(~binary, df, col, lines)}. "
                "Fix the labels, or set label_type=regression."
            )
        self._label_type = kind
        if s["label_scale"] > 0:
            labels = labels / s["label_scale"]
            out = (labels < 0) | (labels > 1)
            if out.any():
                raise ValueError(
                    f"{what}: {path} label column {col!r} must lie in [0, {s['label_scale']:g}] for label_scale={s['label_scale']:g}; "
                    f"{_fail_rows(out, df, col, lines)}. Set label_scale to the labels' maximum, or 0 for no scaling."
                )
        return labels

    def read_test(self, path, state: dict) -> pd.DataFrame:
        s = {**DEFAULTS, **state}
        self._settings = s
        df, lines = read_table(path, s, what="test data")
        return self._frame(df, lines, s, what="test data", path=path)
