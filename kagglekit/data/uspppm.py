"""USPPPM (U.S. Patent Phrase to Phrase Matching): anchor, target and CPC context → score in [0, 1].

The pair is ``text_a = anchor`` and ``text_b = "target; context text"``, where the context text
is the CPC section and class titles. Rows are grouped by anchor, because the hidden test's
anchors are all new: folds that split an anchor leak and overstate CV.
"""

from __future__ import annotations

import pandas as pd

from kagglekit._io import read_csv
from kagglekit.data.cpc import context_texts, read_cpc_titles
from kagglekit.data.recipes import Recipe, check_ids, check_labels, check_text, numeric_features

TEXT_COLUMNS = ("anchor", "target", "context")


class UspppmRecipe(Recipe):
    name = "uspppm"
    id_col = "id"
    target_col = "score"
    metric = "pearson"
    label_range = (0.0, 1.0)

    def state(self, cfg) -> dict:
        # Section and class titles only: a few hundred entries, small enough to ship in every model
        # folder, so predict never needs the CPC dataset attached.
        return {**super().state(cfg), "context_titles": read_cpc_titles(cfg.cpc_dir) if cfg.cpc_dir else None}

    def _frame(self, df: pd.DataFrame, state: dict, *, what: str, path) -> pd.DataFrame:
        contexts = context_texts(df["context"].astype(str).str.strip(), state.get("context_titles"), what=what)
        features = numeric_features(df, state.get("feature_columns") or (), what=what, path=path)
        return pd.DataFrame(
            {
                "id": df[self.id_col].astype(str).to_numpy(),
                "text_a": df["anchor"].astype(str).str.strip().to_numpy(),
                "text_b": [f"{t.strip()}; {c}" for t, c in zip(df["target"].astype(str), contexts)],
                "group": df["anchor"].astype(str).str.strip().to_numpy(),
                **features,
            }
        )

    def read_train(self, path, state: dict, *, max_rows: int = 0) -> pd.DataFrame:
        what = "train_csv"
        features = state.get("feature_columns") or []
        df = read_csv(path, what=what, required=(self.id_col, *TEXT_COLUMNS, self.target_col, *features), dtype={self.id_col: str})
        if max_rows:
            df = df.iloc[:max_rows].reset_index(drop=True)
        check_ids(df, what=what, path=path)
        check_text(df, TEXT_COLUMNS, what=what, path=path)
        check_labels(df, self.target_col, *self.label_range, what=what, path=path)
        frame = self._frame(df, state, what=what, path=path)
        frame["label"] = pd.to_numeric(df[self.target_col]).astype(float).to_numpy()
        return frame

    def read_test(self, path, state: dict) -> pd.DataFrame:
        what = "test data"
        features = state.get("feature_columns") or []
        df = read_csv(path, what=what, required=(self.id_col, *TEXT_COLUMNS, *features), dtype={self.id_col: str})
        check_ids(df, what=what, path=path)
        check_text(df, TEXT_COLUMNS, what=what, path=path)
        return self._frame(df, state, what=what, path=path)
