"""N-gram span masking: the masked share, span lengths, 80/10/10, specials untouched, whole words, seeds."""

from itertools import groupby

import numpy as np
import pytest

from kagglekit.data.masking import IGNORE_INDEX, NgramMasker, default_ngram_probs

pytestmark = pytest.mark.compat


@pytest.fixture(scope="module")
def tokenizer(tiny_bert):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tiny_bert))


def _rows(tokenizer, count: int, seed: int = 0) -> list[list[int]]:
    """Pairs [CLS] a [SEP] b [SEP] of random normal tokens; every fourth row ends in padding."""
    rng = np.random.default_rng(seed)
    special = set(tokenizer.all_special_ids)
    normal = np.array([i for i in range(len(tokenizer)) if i not in special])
    rows = []
    for k in range(count):
        a, b = rng.choice(normal, rng.integers(10, 60)), rng.choice(normal, rng.integers(10, 60))
        row = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
        rows.append(row + [tokenizer.pad_token_id] * (5 if k % 4 == 0 else 0))
    return rows


def _padded(rows, pad: int) -> np.ndarray:
    out = np.full((len(rows), max(map(len, rows))), pad)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def _masked(tokenizer, rows, **options):
    batch = NgramMasker(tokenizer, seed=options.pop("seed", 0), **options)(rows)
    original = _padded(rows, tokenizer.pad_token_id)
    return original, batch["input_ids"].numpy(), batch["attention_mask"].numpy(), batch["labels"].numpy()


def _span_lengths(chosen: np.ndarray) -> np.ndarray:
    return np.array([len(list(run)) for row in chosen for key, run in groupby(row) if key])


def _real(original, tokenizer) -> np.ndarray:
    return ~np.isin(original, tokenizer.all_special_ids)


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_masked_share_matches_the_rate(tokenizer, rate):
    rows = _rows(tokenizer, 3000)
    original, _, _, labels = _masked(tokenizer, rows, mask_rate=rate)
    share = (labels != IGNORE_INDEX).sum() / _real(original, tokenizer).sum()
    assert abs(share - rate) < 0.01, share


@pytest.mark.parametrize("probs", [None, [0.2, 0.3, 0.5], [0.1, 0.2, 0.3, 0.4]])
def test_span_lengths_follow_ngram_probs(tokenizer, probs):
    max_ngram = 3 if probs is None else len(probs)
    rows = _rows(tokenizer, 3000, seed=1)
    _, _, _, labels = _masked(tokenizer, rows, max_ngram=max_ngram, ngram_probs=probs)
    lengths = _span_lengths(labels != IGNORE_INDEX)  # spans never touch, so each run is one span
    histogram = np.bincount(lengths, minlength=max_ngram + 1)[1:] / len(lengths)
    expected = default_ngram_probs(3) if probs is None else np.array(probs) / np.sum(probs)
    assert len(lengths) > 5000
    assert np.abs(histogram - expected).max() < 0.02, (histogram, expected)


def test_default_ngram_probs_are_one_over_n():
    assert np.allclose(default_ngram_probs(3), np.array([6, 3, 2]) / 11)
    assert np.allclose(default_ngram_probs(1), [1.0])


@pytest.mark.parametrize("ratios", [(0.8, 0.1), (0.5, 0.5), (1.0, 0.0)])
def test_replacement_split(tokenizer, ratios):
    mask_ratio, random_ratio = ratios
    rows = _rows(tokenizer, 2000, seed=2)
    original, inputs, _, labels = _masked(tokenizer, rows, mask_token_ratio=mask_ratio, random_token_ratio=random_ratio)
    chosen = labels != IGNORE_INDEX
    is_mask = inputs[chosen] == tokenizer.mask_token_id
    unchanged = inputs[chosen] == original[chosen]
    replaced = ~is_mask & ~unchanged
    # a random token equals the original with probability 1/|normal vocabulary| (~0.001): within the tolerance
    assert abs(is_mask.mean() - mask_ratio) < 0.02
    assert abs(replaced.mean() - random_ratio) < 0.02
    assert abs(unchanged.mean() - (1 - mask_ratio - random_ratio)) < 0.02
    assert not np.isin(inputs[chosen][replaced], tokenizer.all_special_ids).any()  # random tokens: normal vocabulary only
    assert (inputs[~chosen] == original[~chosen]).all()  # nothing else changes


def test_specials_and_padding_never_chosen_and_labels_exact(tokenizer):
    rows = _rows(tokenizer, 500, seed=3)
    original, inputs, attention, labels = _masked(tokenizer, rows, mask_rate=0.5, max_ngram=5)
    chosen = labels != IGNORE_INDEX
    assert not chosen[~_real(original, tokenizer)].any()
    assert (labels[chosen] == original[chosen]).all()
    assert (attention == (original != tokenizer.pad_token_id)).all()
    lengths = np.array([len(r) for r in rows])
    assert inputs.shape == (len(rows), lengths.max())  # padded to the longest row
    beyond = np.arange(inputs.shape[1])[None, :] >= lengths[:, None]
    assert (inputs[beyond] == tokenizer.pad_token_id).all() and (labels[beyond] == IGNORE_INDEX).all()


def test_whole_word_never_splits_a_word(tokenizer):
    rng = np.random.default_rng(4)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    texts = [" ".join("".join(rng.choice(letters, rng.integers(2, 12))) for _ in range(rng.integers(5, 30))) for _ in range(800)]
    rows = tokenizer(texts)["input_ids"]
    original, _, _, labels = _masked(tokenizer, rows, whole_word=True)
    chosen = labels != IGNORE_INDEX
    pieces = 0
    for i, row in enumerate(rows):
        tokens = tokenizer.convert_ids_to_tokens(row)
        word_start = 0
        for t, token in enumerate(tokens):
            if not token.startswith("##"):
                word_start = t
                continue
            pieces += 1
            assert chosen[i, t] == chosen[i, word_start], (tokens, chosen[i, : len(row)])  # the whole word or none of it
    assert pieces > 1000 and chosen.any()
    share = chosen.sum() / _real(original, tokenizer).sum()
    assert abs(share - 0.15) < 0.03  # whole words: close to the rate, not exact


def test_seed_reproduces_and_rng_overrides(tokenizer):
    rows = _rows(tokenizer, 50)
    first = NgramMasker(tokenizer, seed=7)(rows)
    again = NgramMasker(tokenizer, seed=7)(rows)
    other = NgramMasker(tokenizer, seed=8)(rows)
    assert all((first[k] == again[k]).all() for k in first)
    assert not (first["labels"] == other["labels"]).all()
    masker = NgramMasker(tokenizer, seed=0)
    from_rng = [masker(rows, rng=np.random.default_rng(3))["labels"] for _ in range(2)]
    assert (from_rng[0] == from_rng[1]).all()


@pytest.mark.parametrize("options, key", [
    ({"mask_rate": 0.0}, "mask_rate"), ({"mask_rate": 1.0}, "mask_rate"), ({"max_ngram": 0}, "max_ngram"),
    ({"ngram_probs": [0.5, 0.5]}, "ngram_probs"), ({"ngram_probs": [1, -1, 1]}, "ngram_probs"),
    ({"mask_token_ratio": 0.8, "random_token_ratio": 0.3}, "random_token_ratio"),
])
def test_bad_arguments_name_themselves(tokenizer, options, key):
    with pytest.raises(ValueError, match=key):
        NgramMasker(tokenizer, **options)


def test_short_and_empty_rows(tokenizer):
    rows = [[tokenizer.cls_token_id, tokenizer.sep_token_id], [tokenizer.cls_token_id, 100, tokenizer.sep_token_id]]
    batch = NgramMasker(tokenizer, seed=0)(rows)
    assert (batch["labels"][0] == IGNORE_INDEX).all()
    with pytest.raises(ValueError, match="empty batch"):
        NgramMasker(tokenizer)([])


def test_whole_word_sentencepiece(tiny_models):
    """Sentencepiece vocabularies mark a word's first piece with "▁": a chosen piece's word is chosen whole."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_models("deberta-v2")))
    rng = np.random.default_rng(5)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    texts = [" ".join("".join(rng.choice(letters, rng.integers(2, 12))) for _ in range(rng.integers(5, 30))) for _ in range(300)]
    rows = tokenizer(texts)["input_ids"]
    _, _, _, labels = _masked(tokenizer, rows, whole_word=True, max_ngram=2)
    chosen = labels != IGNORE_INDEX
    continued = 0
    for i, row in enumerate(rows):
        tokens = tokenizer.convert_ids_to_tokens(row)
        word_start = 0
        for t, token in enumerate(tokens):
            if token in tokenizer.all_special_tokens:
                word_start = t + 1  # a segment's first piece starts a word, marked or not
                continue
            if token.startswith("\u2581") or t == word_start:
                word_start = t
                continue
            continued += 1
            assert chosen[i, t] == chosen[i, word_start], tokens
    assert continued > 300 and chosen.any()
