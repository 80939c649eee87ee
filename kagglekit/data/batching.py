"""Batching: tokenize pairs once, pad each batch only to its own longest row.

Training draws length-bucketed batches (`bucketed_batches`): random, yet each batch holds rows of
similar length. Evaluation and prediction visit rows sorted by length (`predict_order`,
`sorted_batches`). Either way almost no padding is processed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


class PairEncodings:
    """Token ids of text pairs, kept as Python lists of unequal length (no padding yet).

    Args:
        tokenizer: a transformers tokenizer.
        text_a: first texts, length N.
        text_b: second texts, length N.
        max_len: pairs longer than this are truncated, the longer text first.
        labels: optional float labels, length N.
        features: optional numeric features per row, shape (N, K); batches carry them as ``features``.
        weights: optional per-row loss weights, length N; batches carry them as ``weights``.
    """

    def __init__(self, tokenizer, text_a: Sequence[str], text_b: Sequence[str], max_len: int, labels=None, features=None, weights=None):
        types = _uses_token_types(tokenizer)
        enc = tokenizer(
            list(text_a),
            list(text_b),
            truncation="longest_first",
            max_length=max_len,
            padding=False,
            return_attention_mask=False,
            return_token_type_ids=types,
        )
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError(
                f"the tokenizer ({type(tokenizer).__name__}) has no pad token: set one in the model folder's "
                "tokenizer_config.json (pad_token), e.g. the eos or unk token."
            )
        # Some backbones (RoBERTa, DeBERTa-v3) have no segment embeddings worth feeding.
        self._store(enc["input_ids"], enc["token_type_ids"] if types else None, pad_id, labels, features, weights)

    @classmethod
    def from_ids(cls, input_ids: Sequence[Sequence[int]], *, pad_id: int, labels=None, features=None, weights=None) -> "PairEncodings":
        """Encodings of rows tokenized elsewhere (a decoder's prompts, `kagglekit.data.prompts.encode_prompts`): no token types."""
        out = cls.__new__(cls)
        out._store([list(ids) for ids in input_ids], None, pad_id, labels, features, weights)
        return out

    def _store(self, input_ids: list[list[int]], token_type_ids, pad_id: int, labels, features, weights) -> None:
        self.input_ids: list[list[int]] = input_ids
        self.token_type_ids = token_type_ids
        self.lengths = np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.features = None if features is None else np.asarray(features, dtype=np.float32).reshape(len(self.input_ids), -1)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32).reshape(len(self.input_ids))
        self.pad_id = pad_id

    def __len__(self) -> int:
        return len(self.input_ids)

    def subset(self, indices: Sequence[int]) -> "PairEncodings":
        """Rows `indices` (in that order) as encodings of their own: one device's share of the rows."""
        indices = [int(i) for i in indices]
        out = PairEncodings.__new__(PairEncodings)
        pick = (lambda a: None if a is None else a[indices])
        out._store([self.input_ids[i] for i in indices],
                   None if self.token_type_ids is None else [self.token_type_ids[i] for i in indices],
                   self.pad_id, pick(self.labels), pick(self.features), pick(self.weights))
        return out

    def collate(self, indices: Sequence[int]) -> dict[str, torch.Tensor]:
        """Pad rows `indices` to their longest row; returns tensors of shape (B, T)."""
        width = int(self.lengths[list(indices)].max())
        batch = len(indices)
        ids = torch.full((batch, width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        types = torch.zeros((batch, width), dtype=torch.long) if self.token_type_ids is not None else None
        for row, index in enumerate(indices):
            seq = self.input_ids[index]
            ids[row, : len(seq)] = torch.as_tensor(seq)
            mask[row, : len(seq)] = 1
            if types is not None:
                types[row, : len(seq)] = torch.as_tensor(self.token_type_ids[index])
        out = {"input_ids": ids, "attention_mask": mask}
        if types is not None:
            out["token_type_ids"] = types
        if self.features is not None:
            out["features"] = torch.as_tensor(self.features[list(indices)])  # (B, K)
        if self.labels is not None:
            out["labels"] = torch.as_tensor(self.labels[list(indices)])
        if self.weights is not None:
            out["weights"] = torch.as_tensor(self.weights[list(indices)])  # (B,)
        return out


def _uses_token_types(tokenizer) -> bool:
    # Funnel's attention reads the types (<cls> has its own, 2); transformers 5's Funnel tokenizer
    # leaves them out of model_input_names, so a checkpoint saved without them would lose them.
    names = getattr(tokenizer, "model_input_names", ())
    return "token_type_ids" in names or type(tokenizer).__name__.startswith("Funnel")


def predict_order(lengths: np.ndarray) -> np.ndarray:
    """Row order for inference: by length (stable), so each batch pads little."""
    return np.argsort(lengths, kind="stable")


def sorted_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches of row indices in length order, for evaluation and prediction."""
    order = predict_order(lengths)
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shuffled_batches(n: int, batch_size: int, generator: np.random.Generator) -> list[np.ndarray]:
    """Training batches: a fresh random permutation each epoch, from the caller's seeded generator."""
    order = generator.permutation(n)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def bucketed_batches(
    lengths: np.ndarray, batch_size: int, generator: np.random.Generator, *, bucket_size: int = 100,
) -> list[np.ndarray]:
    """Training batches of rows of similar length, in random order: little padding, still random.

    The rows are shuffled and cut into buckets of ``bucket_size * batch_size`` rows; each bucket is
    sorted by length (stably, so equal lengths stay in random order) and cut into batches; then the
    order of all batches is shuffled. Every row is in exactly one batch. Only the last batch may be
    short (when ``batch_size`` does not divide N): it is kept, not dropped, so every row is trained
    on each epoch, and it stays last, as in `shuffled_batches`. The number of batches is
    ``ceil(N / batch_size)``, the same as `shuffled_batches`, so schedulers need no change.

    Larger buckets pad less but make batches less random (a batch holds neighbours in length);
    ``bucket_size=1`` gives batches with the same rows as plain shuffled batches (random lengths,
    as much padding), only in another order.

    Args:
        lengths: tokens per row, shape (N,).
        batch_size: rows per batch, 1 or more.
        generator: the caller's seeded generator; two calls draw two different epochs.
        bucket_size: batches per bucket, 1 or more (default 100: ~3,200 rows at batch 32).

    Returns:
        Arrays of row indices, one per batch.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> batches = bucketed_batches(encodings.lengths, 32, rng)
        >>> padding_efficiency(encodings.lengths, batches)  # ~0.95 on USPPPM
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be one length per row, shape (N,), got shape {lengths.shape}.")
    for name, value in (("batch_size", batch_size), ("bucket_size", bucket_size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"bucketed_batches requires {name}=1 or more (an integer), got {name}={value!r}.")
    n = len(lengths)
    order = generator.permutation(n)
    rows_per_bucket = bucket_size * batch_size  # a multiple of batch_size: only the final bucket can end short
    batches = []
    for start in range(0, n, rows_per_bucket):
        bucket = order[start : start + rows_per_bucket]
        bucket = bucket[np.argsort(lengths[bucket], kind="stable")]
        batches.extend(bucket[i : i + batch_size] for i in range(0, len(bucket), batch_size))
    # shuffle the full batches; a short one (at most one) stays last
    full = len(batches) - (n % batch_size != 0)
    order = generator.permutation(full)
    return [batches[i] for i in order] + batches[full:]


def padding_efficiency(lengths: np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Real tokens / processed tokens for a list of batches padded to their longest row."""
    real = sum(int(lengths[b].sum()) for b in batches)
    processed = sum(int(lengths[b].max()) * len(b) for b in batches)
    return real / processed if processed else 1.0
