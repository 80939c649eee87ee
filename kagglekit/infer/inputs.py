"""The test file as the models see it: read once per recipe state, featurised as in training, and
tokenized once per tokenizer, max_len and view (`InputCache`).

A run's folds and the runs of a blend often share all of this; predict asks the cache, so a test file
is read, its computed features (co-occurrence, embedding cosine) made and its pairs tokenized only as
often as the settings really differ. The cache is shared by predict's device workers (threads): one
of them at a time reads or tokenizes (tokenizers are not guaranteed thread-safe), the others wait and
then find the result cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kagglekit.data.batching import PairEncodings
from kagglekit.data.prompts import encode_prompts
from kagglekit.data.recipes import Recipe, get_recipe
from kagglekit.run import META_FILE, FoldMeta

__all__ = ["InputCache", "read_rows", "read_test_frame", "swapped", "value_range"]

# Files of a model folder that do not shape its tokenizer (weights, logs, the kit's meta); every other
# file (config.json, tokenizer and vocabulary files) is hashed into the key of the tokenized test inputs.
_NOT_TOKENIZER_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".csv")


def read_test_frame(recipe: Recipe, data: str | os.PathLike | pd.DataFrame, state: dict, folder: str | os.PathLike | None = None,
                    device="cpu") -> pd.DataFrame:
    """The test file (or in-memory rows in its columns, see `read_rows`) as the recipe's normalized frame,
    with the computed features as in training: co-occurrence over the training pairs plus these rows, and
    the cosine of the run's embedding model (found beside `folder`, the model folder; see
    `kagglekit.models.embeddings.find_embedder`)."""
    from kagglekit.data.features import ComputedFeatures, CooccurrenceGraph

    frame = read_rows(recipe, data, state) if isinstance(data, pd.DataFrame) else recipe.read_test(data, state)
    graph = embedder = None
    if state.get("cooccurrence_pairs"):
        graph = CooccurrenceGraph(pd.DataFrame(state["cooccurrence_pairs"], columns=["text_a", "text_b"]), frame)
    if state.get("embedding_model"):
        from kagglekit.models.embeddings import find_embedder

        if folder is None:
            raise ValueError("this model was trained with embedding_model: pass its model folder to read_test_frame.")
        embedder = find_embedder(folder, state["embedding_model"], device=device)
    if graph is not None or embedder is not None:
        ComputedFeatures(graph, embedder).add(frame)
    return frame


def read_rows(recipe: Recipe, rows: pd.DataFrame, state: dict) -> pd.DataFrame:
    """In-memory rows read exactly as a test file of the run: written in its test-file layout to a
    private temporary file, then read by the recipe's own `read_test` (checks, normalising, settings).

    Args:
        rows: the test file's columns (uspppm: id, anchor, target, context; pairs and ids: the columns
            that ``text_cols``/``id_col`` name, 0-based positions for files without a header), plus
            any ``feature_columns``. It is not modified.
        state: the run's recipe state.

    Errors name "the given rows" instead of the temporary file; line 2 is the first row.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="kagglekit-rows-") as tmp:
        path = Path(tmp) / "rows.csv"
        if "text_cols" in state and "quoting" in state:  # pairs and ids: the delimited layout their settings describe
            _write_delimited(rows, state, path)
        else:
            rows.to_csv(path, index=False)
        try:
            return recipe.read_test(path, state)
        except ValueError as err:
            raise ValueError(str(err).replace(str(path), "the given rows (line 2 is the first row)")) from None


def _write_delimited(rows: pd.DataFrame, state: dict, path: Path) -> None:
    """`rows` as a file that `read_table` reads with the run's sep, quoting, header and keep_columns."""
    import csv

    sep = state.get("sep") or ","  # "" reads by the file's extension: .csv is comma-separated
    plain = state.get("quoting") == "none"  # no quotes: a field cannot hold the separator or a line break
    names = [str(c) for c in rows.columns]
    if state.get("header", True):
        header = names + [f"unused_{i}" for i in range(len(names), int(state.get("keep_columns") or 0))]
        place = list(range(len(names)))
    else:  # no header: the columns are 0-based positions
        bad = [n for n in names if not n.isdigit()]
        if bad:
            raise ValueError(f"rows: column(s) {bad} are not 0-based positions: this run reads test files without a header "
                             "(header=false), so name the DataFrame's columns by position (0, 1, ...).")
        header, place = None, [int(n) for n in names]
    width = max(len(header) if header else max(place) + 1, int(state.get("keep_columns") or 0))
    table = []
    for i, values in enumerate(rows.itertuples(index=False, name=None)):
        line = [""] * width
        for column, at, value in zip(names, place, values):
            line[at] = "" if pd.api.types.is_scalar(value) and pd.isna(value) else str(value)  # missing: empty, as in a file
            if plain and any(ch in line[at] for ch in (sep, "\n", "\r")):
                raise ValueError(f"rows: row {i} column {column!r} holds the separator {sep!r} or a line break, which this run's "
                                 "test-file layout (quoting=none) cannot hold: remove it from the text.")
        table.append(line)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=sep, quoting=csv.QUOTE_NONE if plain else csv.QUOTE_MINIMAL,
                            quotechar=None if plain else '"', lineterminator="\n")
        writer.writerows([header, *table] if header else table)


def swapped(frame: pd.DataFrame) -> pd.DataFrame:
    """`frame` with text_a and text_b exchanged, and every ``X_a`` column with its ``X_b`` partner."""
    renames = {}
    for column in frame.columns:
        if isinstance(column, str) and column.endswith("_a") and column[:-2] + "_b" in frame.columns:
            renames[column], renames[column[:-2] + "_b"] = column[:-2] + "_b", column
    return frame.rename(columns=renames)[list(frame.columns)]


def value_range(recipe: Recipe, state: dict) -> tuple[float, float]:
    """The range of the submission's values: the recipe's label range after its postprocess (STS-B: [0, 5]).

    Call it after ``recipe.read_test(..., state)``: the pairs recipe knows its settings from then on.
    """
    ends = np.asarray(recipe.postprocess(np.array(recipe.label_range, dtype=np.float64), state), dtype=np.float64)
    return float(ends.min()), float(ends.max())


class InputCache:
    """The test file, read once per recipe state and tokenized once per tokenizer, max_len and view.

    `data` is the test file's path, or a DataFrame with its columns (read through `read_rows`). Safe to
    share between threads: a lock makes each read and tokenization happen once, one at a time.
    """

    def __init__(self, data: str | os.PathLike | pd.DataFrame, device="cpu"):
        self.data = data
        self.device = device  # where features that need a model (embedding_model) are computed
        self._frames: dict[str, tuple[Recipe, pd.DataFrame]] = {}
        self._encodings: dict[tuple, PairEncodings] = {}
        self._lock = threading.RLock()  # re-entrant: encodings() asks frame() while holding it

    def frame(self, meta: FoldMeta, folder: str | os.PathLike | None = None) -> tuple[Recipe, pd.DataFrame]:
        """(the recipe that read it, the normalized test frame) for a model folder's meta; `folder`
        (the model folder) locates the run's embedding model when it has one."""
        key = _state_key(meta)
        with self._lock:
            if key not in self._frames:
                recipe = get_recipe(meta.task)
                self._frames[key] = (recipe, read_test_frame(recipe, self.data, meta.recipe_state, folder, self.device))
            return self._frames[key]

    def encodings(self, meta: FoldMeta, tokenizer, folder: Path, feature_names: Sequence[str], *, swap: bool = False) -> PairEncodings:
        """The tokenized test pairs (a decoder's prompts) for a model folder (its tokenizer files, max_len and
        template); `swap`: texts exchanged."""
        key = (_state_key(meta), _tokenizer_key(folder), meta.max_len, tuple(feature_names), swap)
        with self._lock:
            if key not in self._encodings:
                frame = self.frame(meta, folder)[1]
                frame = swapped(frame) if swap else frame
                features = frame[list(feature_names)].to_numpy() if feature_names else None
                template = meta.recipe_state.get("template", "")  # a decoder's prompt, as training rendered it
                if template:
                    self._encodings[key] = encode_prompts(tokenizer, frame, template, meta.max_len, features=features)
                else:
                    self._encodings[key] = PairEncodings(tokenizer, frame["text_a"], frame["text_b"], meta.max_len, features=features)
            return self._encodings[key]


def _state_key(meta: FoldMeta) -> str:
    text = json.dumps([meta.task, meta.recipe_state], sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _tokenizer_key(folder: Path) -> str:
    """A digest of the folder's tokenizer and config files: equal digests tokenize alike."""
    digest = hashlib.sha1()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.name != META_FILE and not path.name.endswith(_NOT_TOKENIZER_SUFFIXES):
            digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes())
    return digest.hexdigest()
