"""A fold's rows: the validation fold split off, augmented and extra rows added to the training side, both tokenized.

Validation rows stay as the file has them: augmentation (closure, swap) and ``extra_train_csv`` rows
go to the training rows only, and extra rows that repeat a validation pair (either order) are left
out of that fold.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kagglekit.data.augment import augment_training_rows, merge_extra, repeats_pairs
from kagglekit.data.batching import PairEncodings
from kagglekit.data.prompts import encode_rows

if TYPE_CHECKING:
    from kagglekit.config import Config


def fold_rows(frame: pd.DataFrame, fold: int, cfg: Config, *, featurize=None,
              extra: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Split `frame` into the training and validation rows of `fold`, with the training side grown.

    Args:
        frame: the normalized frame with a ``fold`` column.
        fold: the validation fold.
        cfg: the run configuration (``closure``, ``swap`` and their caps, ``extra_weight``, ``seed``).
        featurize: the run's `kagglekit.data.features.ComputedFeatures`, when it has any: augmented
            pairs get their features from it, as the file's rows did.
        extra: rows of ``extra_train_csv``: added with loss weight ``cfg.extra_weight`` (a ``weight``
            column), except those repeating a validation pair of this fold.

    Returns:
        ``(train_df, valid_df, augmentation)``: both frames indexed 0..n-1; `augmentation` counts
        the rows added (``closure``/``swap`` as `augment_training_rows` reports them,
        ``extra_rows``, ``extra_left_out``), empty when none were asked for.

    Example:
        >>> train_df, valid_df, added = fold_rows(frame, 0, cfg)
    """
    train_df = frame[frame["fold"] != fold].reset_index(drop=True)
    valid_df = frame[frame["fold"] == fold].reset_index(drop=True)
    if len(valid_df) == 0:
        raise ValueError(f"fold {fold} has no rows: n_folds={cfg.n_folds} folds were made, use --fold 0..{cfg.n_folds - 1}.")
    train_df, augmentation = grow_training_rows(train_df, valid_df, cfg, featurize=featurize, extra=extra, label=f"fold {fold}")
    return train_df, valid_df, augmentation


def grow_training_rows(train_df: pd.DataFrame, valid_df: pd.DataFrame, cfg: Config, *, featurize=None,
                       extra: pd.DataFrame | None = None, label: str) -> tuple[pd.DataFrame, dict]:
    """A model's training rows grown: closure and swap pairs (kept off `valid_df`'s pairs), and the rows of
    ``extra_train_csv`` with their loss weight, less those repeating a pair of `valid_df`. A fold's rows
    (`fold_rows`) and a full fit's (every row, no validation rows) are grown alike; `label` names the model
    in the log. Returns the rows and what was added (see `fold_rows`)."""
    augmentation = {}
    if cfg.closure or cfg.swap:  # the training rows only: validation rows stay as they are
        train_df, augmentation = augment_training_rows(train_df, valid_df, closure=cfg.closure, swap=cfg.swap,
                                                       max_new=cfg.closure_max or None, ratio=cfg.closure_ratio or None, seed=cfg.seed)
        if featurize is not None:  # new pairs get their features as the file's rows did
            featurize.add(train_df)
        print(f"{label}: augmentation {augmentation}", flush=True)
    if extra is not None:
        kept = extra[~repeats_pairs(extra, valid_df)]
        train_df = merge_extra(train_df, kept, weight=cfg.extra_weight)
        augmentation = {**augmentation, "extra_rows": len(kept), "extra_left_out": len(extra) - len(kept)}
        if len(kept) < len(extra):
            print(f"{label}: {len(extra) - len(kept)} extra row(s) repeat a validation pair of this fold: left out", flush=True)
    return train_df, augmentation


def feature_matrix(frame: pd.DataFrame, names: list[str]) -> np.ndarray | None:
    """The model's numeric features of each row, shape (N, K); None without features."""
    return frame[names].to_numpy() if names else None


def fold_encodings(tokenizer, train_df: pd.DataFrame, valid_df: pd.DataFrame, cfg: Config) -> tuple[PairEncodings, PairEncodings]:
    """Tokenize a fold's rows once: ``(train, valid)`` encodings with labels and features; the training
    side also carries each row's loss weight when `train_df` has a ``weight`` column (extra rows). With
    ``cfg.template`` set (a decoder's, resolved by the runner) each row is its prompt, else its text pair."""
    features = cfg.model_features()
    weights = train_df["weight"] if "weight" in train_df else None
    train = encode_rows(tokenizer, train_df, cfg.max_len, template=cfg.template, labels=train_df["label"],
                        features=feature_matrix(train_df, features), weights=weights)
    valid = encode_rows(tokenizer, valid_df, cfg.max_len, template=cfg.template, labels=valid_df["label"],
                        features=feature_matrix(valid_df, features))
    return train, valid
