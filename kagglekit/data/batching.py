"""Batching: tokenize pairs once, pad each batch only to its own longest row.

Evaluation and prediction visit rows sorted by length, so batches hold rows of similar length and
almost no padding is processed; `predict_order` gives the order and its inverse.
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
    """

    def __init__(self, tokenizer, text_a: Sequence[str], text_b: Sequence[str], max_len: int, labels=None, features=None):
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
        self.input_ids: list[list[int]] = enc["input_ids"]
        # Some backbones (RoBERTa, DeBERTa-v3) have no segment embeddings worth feeding.
        self.token_type_ids = enc["token_type_ids"] if types else None
        self.lengths = np.fromiter((len(ids) for ids in self.input_ids), dtype=np.int64, count=len(self.input_ids))
        self.labels = None if labels is None else np.asarray(labels, dtype=np.float32)
        self.features = None if features is None else np.asarray(features, dtype=np.float32).reshape(len(self.input_ids), -1)
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            raise ValueError(
                f"the tokenizer ({type(tokenizer).__name__}) has no pad token: set one in the model folder's "
                "tokenizer_config.json (pad_token), e.g. the eos or unk token."
            )

    def __len__(self) -> int:
        return len(self.input_ids)

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


def padding_efficiency(lengths: np.ndarray, batches: Sequence[np.ndarray]) -> float:
    """Real tokens / processed tokens for a list of batches padded to their longest row."""
    real = sum(int(lengths[b].sum()) for b in batches)
    processed = sum(int(lengths[b].max()) * len(b) for b in batches)
    return real / processed if processed else 1.0
