"""The test file as the models see it: read once per recipe state, featurised as in training, and
tokenized once per tokenizer, max_len and view (`InputCache`).

A run's folds and the runs of a blend often share all of this; predict asks the cache, so a test file
is read, its computed features (co-occurrence, embedding cosine) made and its pairs tokenized only as
often as the settings really differ.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from kagglekit.data.batching import PairEncodings
from kagglekit.data.recipes import Recipe, get_recipe

__all__ = ["InputCache", "read_test_frame", "swapped", "value_range"]

# Files of a model folder that do not shape its tokenizer (weights, logs, the kit's meta); every other
# file (config.json, tokenizer and vocabulary files) is hashed into the key of the tokenized test inputs.
_NOT_TOKENIZER_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".csv")


def read_test_frame(recipe: Recipe, data: str | os.PathLike, state: dict, folder: str | os.PathLike | None = None,
                    device="cpu") -> pd.DataFrame:
    """The test file as the recipe's normalized frame, with the computed features as in training:
    co-occurrence over the training pairs plus this file, and the cosine of the run's embedding model
    (found beside `folder`, the model folder; see `kagglekit.data.embeddings.find_embedder`)."""
    from kagglekit.data.features import ComputedFeatures, CooccurrenceGraph

    frame = recipe.read_test(data, state)
    graph = embedder = None
    if state.get("cooccurrence_pairs"):
        graph = CooccurrenceGraph(pd.DataFrame(state["cooccurrence_pairs"], columns=["text_a", "text_b"]), frame)
    if state.get("embedding_model"):
        from kagglekit.data.embeddings import find_embedder

        if folder is None:
            raise ValueError("this model was trained with embedding_model: pass its model folder to read_test_frame.")
        embedder = find_embedder(folder, state["embedding_model"], device=device)
    if graph is not None or embedder is not None:
        ComputedFeatures(graph, embedder).add(frame)
    return frame


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
    """The test file, read once per recipe state and tokenized once per tokenizer, max_len and view."""

    def __init__(self, data: str | os.PathLike, device="cpu"):
        self.data = data
        self.device = device  # where features that need a model (embedding_model) are computed
        self._frames: dict[str, tuple[Recipe, pd.DataFrame]] = {}
        self._encodings: dict[tuple, PairEncodings] = {}

    def frame(self, meta: dict, folder: str | os.PathLike | None = None) -> tuple[Recipe, pd.DataFrame]:
        """(the recipe that read it, the normalized test frame) for a model folder's meta; `folder`
        (the model folder) locates the run's embedding model when it has one."""
        key = _state_key(meta)
        if key not in self._frames:
            recipe = get_recipe(meta["task"])
            self._frames[key] = (recipe, read_test_frame(recipe, self.data, meta.get("recipe_state") or {}, folder, self.device))
        return self._frames[key]

    def encodings(self, meta: dict, tokenizer, folder: Path, feature_names: Sequence[str], *, swap: bool = False) -> PairEncodings:
        """The tokenized test pairs for a model folder (its tokenizer files and max_len); `swap`: texts exchanged."""
        key = (_state_key(meta), _tokenizer_key(folder), meta["max_len"], tuple(feature_names), swap)
        if key not in self._encodings:
            frame = self.frame(meta, folder)[1]
            frame = swapped(frame) if swap else frame
            features = frame[list(feature_names)].to_numpy() if feature_names else None
            self._encodings[key] = PairEncodings(tokenizer, frame["text_a"], frame["text_b"], meta["max_len"], features=features)
        return self._encodings[key]


def _state_key(meta: dict) -> str:
    text = json.dumps([meta["task"], meta.get("recipe_state") or {}], sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def _tokenizer_key(folder: Path) -> str:
    """A digest of the folder's tokenizer and config files: equal digests tokenize alike."""
    from kagglekit.models.pair_model import META_FILE

    digest = hashlib.sha1()
    for path in sorted(Path(folder).iterdir()):
        if path.is_file() and path.name != META_FILE and not path.name.endswith(_NOT_TOKENIZER_SUFFIXES):
            digest.update(path.name.encode("utf-8") + b"\0" + path.read_bytes())
    return digest.hexdigest()
