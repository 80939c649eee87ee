"""N-gram span masking for masked-language-model pretraining (BERT 80/10/10, ALBERT/ERNIE-style spans).

Spans of 1..max_ngram units (tokens, or whole words) are chosen until about `mask_rate` of each row's
real tokens are covered; the chosen tokens become [MASK], a random token or stay as they are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from kagglekit.config_pretrain import check_masking, default_ngram_probs  # noqa: F401  (default_ngram_probs: API)

IGNORE_INDEX = -100  # label of positions that are not predicted: torch's cross-entropy ignores it

# Markers of word boundaries in subword vocabularies.
_CONTINUATION_PREFIX = "##"  # WordPiece (BERT, NeZha, ELECTRA): a piece that continues the previous word
_WORD_START_PREFIXES = ("\u2581", "\u0120")  # sentencepiece "▁" and byte-level BPE "Ġ": a piece that starts a word


class NgramMasker:
    """Mask batches of token id lists for MLM, with n-gram spans and BERT's 80/10/10 replacement.

    For each row, spans are drawn one after another: a length n in 1..max_ngram with `ngram_probs`,
    then a start uniformly among the places where n free units fit. A span never covers a special
    token (so never [CLS], [SEP] or padding), never crosses one, and never touches another span (one
    free unit between spans), so each run of chosen units is one span. A row gets
    ``mask_rate * real tokens / expected tokens per span`` spans, rounded up or down at random; the
    count does not depend on the lengths drawn, so the expected share of chosen tokens is `mask_rate`
    and the span lengths follow `ngram_probs` (a short row may get no span; a row where no span fits
    any more stops early). In whole-word mode the tokens per span use the row's mean word length, so
    the share is close to, not exactly, the rate.

    Each chosen token is replaced by the mask token with probability `mask_token_ratio`, by a random
    token of the normal vocabulary (no special tokens) with `random_token_ratio`, and kept otherwise;
    its label is its original id. Every other label is -100.

    Args:
        tokenizer: a transformers tokenizer: its mask, pad and special token ids, its size, and (with
            `whole_word`) its token strings are used.
        mask_rate: share of the real (non-special) tokens to predict, in (0, 1). Default 0.15.
        max_ngram: longest span, in units. Default 3.
        ngram_probs: probability of each span length 1..max_ngram; None gives `default_ngram_probs`
            (1/n, normalised). Normalised to sum 1.
        mask_token_ratio: share of the chosen tokens replaced by the mask token. Default 0.8.
        random_token_ratio: share replaced by a random token. Default 0.1; the rest stay unchanged.
        whole_word: a unit is a whole word instead of a token. Words are found from the vocabulary:
            WordPiece pieces starting with "##" continue a word; in sentencepiece ("▁") and byte-level
            BPE ("Ġ") vocabularies a piece with the marker starts one. A vocabulary with neither
            marker (e.g. one word per token) makes every token a word.
        seed: seed of the masker's own generator, used when a call passes no `rng`.

    Example:
        >>> masker = NgramMasker(tokenizer, mask_rate=0.15, max_ngram=3, seed=0)
        >>> batch = masker([tokenizer("a short text")["input_ids"], tokenizer("another")["input_ids"]])
        >>> batch["input_ids"].shape == batch["labels"].shape  # (B, T), T the longest row
        True
    """

    def __init__(self, tokenizer, *, mask_rate: float = 0.15, max_ngram: int = 3, ngram_probs: Sequence[float] | None = None,
                 mask_token_ratio: float = 0.8, random_token_ratio: float = 0.1, whole_word: bool = False, seed: int = 0):
        probs = check_masking(mask_rate=mask_rate, max_ngram=max_ngram, ngram_probs=ngram_probs,
                              mask_token_ratio=mask_token_ratio, random_token_ratio=random_token_ratio)
        max_ngram = len(probs)
        if tokenizer.mask_token_id is None:
            raise ValueError("the tokenizer has no mask token (mask_token_id is None): give the tokenizer a mask token such as "
                             "'[MASK]' (tokenizer.add_special_tokens({'mask_token': '[MASK]'})) and save it again.")
        self.mask_rate = float(mask_rate)
        self.max_ngram = max_ngram
        self.ngram_probs = probs
        self._mean_ngram = float((np.arange(1, max_ngram + 1) * probs).sum())  # expected units per span
        self.mask_token_ratio = float(mask_token_ratio)
        self.random_token_ratio = float(random_token_ratio)
        self.whole_word = bool(whole_word)
        self.mask_token_id = int(tokenizer.mask_token_id)
        self.pad_token_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        vocab_size = len(tokenizer)
        self.special_ids = np.array(sorted(set(tokenizer.all_special_ids) | {self.pad_token_id}), dtype=np.int64)
        self.random_ids = np.setdiff1d(np.arange(vocab_size), self.special_ids)  # replacements: normal vocabulary only
        if len(self.random_ids) == 0:
            raise ValueError("the tokenizer's vocabulary holds only special tokens: nothing to draw random replacements from.")
        self.continues_word = _continuation_table(tokenizer, vocab_size) if whole_word else None
        self.rng = np.random.default_rng(seed)

    def __call__(self, rows: Sequence[Sequence[int]], rng: np.random.Generator | None = None) -> dict[str, torch.Tensor]:
        """Mask a batch of rows of token ids (with their special tokens).

        Args:
            rows: B lists (or arrays) of token ids; padding ids in them count as padding.
            rng: the generator to draw from; None: the masker's own (seeded by `seed`).

        Returns:
            ``input_ids``, ``attention_mask`` and ``labels``, each a (B, T) int64 tensor, T the longest
            row; rows are padded with the pad id, attention 0 and label -100.
        """
        rng = self.rng if rng is None else rng
        if len(rows) == 0:
            raise ValueError("NgramMasker: got an empty batch; pass at least one row of token ids.")
        longest = max(len(row) for row in rows)
        input_ids = np.full((len(rows), longest), self.pad_token_id, dtype=np.int64)
        labels = np.full((len(rows), longest), IGNORE_INDEX, dtype=np.int64)
        attention = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            ids = np.asarray(row, dtype=np.int64)
            input_ids[i, : len(ids)] = ids
            attention[i, : len(ids)] = ids != self.pad_token_id
            chosen = self.choose(ids, rng)  # (T_i,) bool
            labels[i, : len(ids)][chosen] = ids[chosen]
            input_ids[i, : len(ids)] = self._replace(ids, chosen, rng)
        return {"input_ids": torch.from_numpy(input_ids), "attention_mask": torch.from_numpy(attention),
                "labels": torch.from_numpy(labels)}

    def choose(self, ids: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The positions of one row to predict, as a boolean array of the row's length."""
        ids = np.asarray(ids, dtype=np.int64)
        chosen = np.zeros(len(ids), dtype=bool)
        real = ~np.isin(ids, self.special_ids)  # (T,) never specials nor padding
        units, segments = self._units(ids, real)  # unit k covers token positions units[k]; segments: run of real tokens
        if not units:
            return chosen
        sizes = np.array([len(u) for u in units])
        # Spans to draw: (mask_rate * real tokens) / (expected tokens per span), rounded at random so that the
        # expectation is kept. The count does not depend on the lengths drawn, so neither the lengths'
        # histogram nor the expected masked share is biased (Wald's identity).
        expected = self.mask_rate * real.sum() / (self._mean_ngram * sizes.mean())
        spans = int(expected) + int(rng.random() < expected - int(expected))
        free = np.ones(len(units), dtype=bool)
        for _ in range(spans):
            span = self._draw_span(free, segments, rng)
            if span is None:
                break  # the row is full: no span fits any more
            start, n = span
            for k in range(start, start + n):
                chosen[units[k]] = True
            free[max(start - 1, 0) : start + n + 1] = False  # the span and one unit either side: spans never touch
        return chosen

    def _draw_span(self, free: np.ndarray, segments: np.ndarray, rng: np.random.Generator) -> tuple[int, int] | None:
        """(start unit, length) of a span of free units within one segment; None when none fits."""
        probs = self.ngram_probs.copy()
        while probs.sum() > 0:
            n = int(rng.choice(len(probs), p=probs / probs.sum())) + 1
            starts = _fitting_starts(free, segments, n)
            if len(starts):
                return int(starts[rng.integers(len(starts))]), n
            probs[n - 1] = 0  # this length fits nowhere: draw among the others
        return None

    def _units(self, ids: np.ndarray, real: np.ndarray) -> tuple[list[np.ndarray], np.ndarray]:
        """Maskable units (token positions of each) and the segment (run of real tokens) of each unit."""
        positions = np.flatnonzero(real)
        breaks = np.ones(len(positions), dtype=bool)  # where a new segment starts
        breaks[1:] = np.diff(positions) > 1
        segment_of = np.cumsum(breaks) - 1
        if not self.whole_word:
            return [positions[k : k + 1] for k in range(len(positions))], segment_of
        starts = breaks | ~self.continues_word[ids[positions]]  # a word starts a segment or with a word-start piece
        bounds = np.flatnonzero(starts)
        units = np.split(positions, bounds[1:])
        return units, segment_of[bounds]

    def _replace(self, ids: np.ndarray, chosen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """BERT's corruption of the chosen positions: mask token, random token, or unchanged."""
        out = ids.copy()
        where = np.flatnonzero(chosen)
        draw = rng.random(len(where))
        to_mask = where[draw < self.mask_token_ratio]
        to_random = where[(draw >= self.mask_token_ratio) & (draw < self.mask_token_ratio + self.random_token_ratio)]
        out[to_mask] = self.mask_token_id
        out[to_random] = self.random_ids[rng.integers(len(self.random_ids), size=len(to_random))]
        return out


def _fitting_starts(free: np.ndarray, segments: np.ndarray, n: int) -> np.ndarray:
    """Units k where units k..k+n-1 are all free and in one segment."""
    if n > len(free):
        return np.empty(0, dtype=np.int64)
    counts = np.concatenate([[0], np.cumsum(free)])
    window = counts[n:] - counts[:-n]  # free units in k..k+n-1
    same_segment = segments[n - 1 :] == segments[: len(segments) - n + 1]
    return np.flatnonzero((window == n) & same_segment)


def _continuation_table(tokenizer, vocab_size: int) -> np.ndarray:
    """For every token id, whether the token continues the word before it (whole-word masking)."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))
    tokens = ["" if t is None else str(t) for t in tokens]
    special = set(tokenizer.all_special_tokens)
    if any(t.startswith(_CONTINUATION_PREFIX) and len(t) > 2 for t in tokens):
        return np.array([t.startswith(_CONTINUATION_PREFIX) and len(t) > 2 for t in tokens])
    for prefix in _WORD_START_PREFIXES:
        if any(t.startswith(prefix) for t in tokens):
            return np.array([not t.startswith(prefix) and t not in special for t in tokens])
    return np.zeros(vocab_size, dtype=bool)  # no subword markers: every token is a word
