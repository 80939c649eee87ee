"""Batching: batches cover every row once, sorted and bucketed batches pad little, shuffles are reproducible."""

import numpy as np
import pytest
import torch

from kagglekit.data.batching import (
    PairEncodings, bucketed_batches, padding_efficiency, predict_order, shuffled_batches, sorted_batches,
)


def covers_each_once(batches, n):
    flat = np.concatenate(batches)
    return len(flat) == n and np.array_equal(np.sort(flat), np.arange(n))


def test_sorted_batches_cover_rows_and_pad_less_than_input_order():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=257)
    batches = sorted_batches(lengths, 32)
    assert covers_each_once(batches, 257) and [len(b) for b in batches] == [32] * 8 + [1]
    assert all(lengths[b].max() <= lengths[c].min() for b, c in zip(batches, batches[1:]))
    in_order = [np.arange(i, min(i + 32, 257)) for i in range(0, 257, 32)]
    assert padding_efficiency(lengths, batches) > 0.9 > padding_efficiency(lengths, in_order)
    # by hand: two batches [3, 5] and [4] → real 12, processed 5*2 + 4 = 14
    assert padding_efficiency(np.array([3, 5, 4]), [np.array([0, 1]), np.array([2])]) == 12 / 14
    assert np.array_equal(predict_order(np.array([3, 1, 3, 2])), [1, 3, 0, 2])  # stable among ties


def test_shuffled_batches_are_reproducible_per_seed_and_differ_per_epoch():
    a = shuffled_batches(100, 16, np.random.default_rng(3))
    b = shuffled_batches(100, 16, np.random.default_rng(3))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and covers_each_once(a, 100)
    gen = np.random.default_rng(3)
    first, second = shuffled_batches(100, 16, gen), shuffled_batches(100, 16, gen)
    assert not np.array_equal(np.concatenate(first), np.concatenate(second))


def uspppm_like_lengths(n, seed=0):
    """Tokens per pair as in USPPPM: 8..60, most rows short, a long tail (a skewed gamma)."""
    rng = np.random.default_rng(seed)
    return np.clip(8 + np.round(rng.gamma(2.0, 7.0, size=n)), 8, 60).astype(np.int64)


def same_batches(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_bucketed_batches_cover_each_row_once_and_only_the_last_batch_is_short():
    lengths = uspppm_like_lengths(1000)
    for batch_size, bucket_size in ((32, 100), (32, 3), (7, 1), (1000, 2), (2000, 5)):
        batches = bucketed_batches(lengths, batch_size, np.random.default_rng(0), bucket_size=bucket_size)
        assert covers_each_once(batches, 1000)
        sizes = [len(b) for b in batches]
        assert len(batches) == -(-1000 // batch_size)  # as many as shuffled_batches: schedulers unchanged
        assert sizes[:-1] == [batch_size] * (len(batches) - 1) and sizes[-1] == 1000 - batch_size * (len(batches) - 1)
    assert bucketed_batches(np.array([], dtype=np.int64), 4, np.random.default_rng(0)) == []


def test_bucketed_batches_are_reproducible_per_seed_and_differ_per_seed_and_epoch():
    lengths = uspppm_like_lengths(500)
    a = bucketed_batches(lengths, 16, np.random.default_rng(3), bucket_size=4)
    assert same_batches(a, bucketed_batches(lengths, 16, np.random.default_rng(3), bucket_size=4))
    assert not same_batches(a, bucketed_batches(lengths, 16, np.random.default_rng(4), bucket_size=4))
    gen = np.random.default_rng(3)
    first, second = bucketed_batches(lengths, 16, gen, bucket_size=4), bucketed_batches(lengths, 16, gen, bucket_size=4)
    assert same_batches(first, a) and not same_batches(first, second)


def test_bucketed_batches_pad_much_less_than_shuffled_ones():
    lengths = uspppm_like_lengths(3000)
    assert lengths.min() >= 8 and lengths.max() <= 60 and np.median(lengths) < lengths.mean()  # skewed right
    rng = np.random.default_rng(0)
    bucketed = padding_efficiency(lengths, bucketed_batches(lengths, 32, rng))
    shuffled = padding_efficiency(lengths, shuffled_batches(len(lengths), 32, rng))
    assert bucketed >= 0.9 and bucketed > shuffled + 0.1, (bucketed, shuffled)
    # bucket_size=1 is a plain shuffle: the same rows per batch as shuffled_batches from the same seed
    one = bucketed_batches(lengths, 32, np.random.default_rng(5), bucket_size=1)
    plain = shuffled_batches(len(lengths), 32, np.random.default_rng(5))
    assert sorted(map(tuple, map(sorted, one))) == sorted(map(tuple, map(sorted, plain)))
    assert padding_efficiency(lengths, one) == padding_efficiency(lengths, plain) < 0.8


def test_bucketed_batch_order_is_shuffled_not_sorted_by_length():
    lengths = uspppm_like_lengths(3200)
    batches = bucketed_batches(lengths, 32, np.random.default_rng(0), bucket_size=100)  # one bucket
    widths = np.array([lengths[b].max() for b in batches])
    assert not np.all(np.diff(widths) >= 0) and not np.all(np.diff(widths) <= 0)
    # the batch order is unrelated to length: rank correlation with the position is near zero
    ranks = np.argsort(np.argsort(widths, kind="stable"))
    assert abs(np.corrcoef(ranks, np.arange(len(widths)))[0, 1]) < 0.3
    # the order varies from seed to seed, and a batch's rows are of similar length
    other = bucketed_batches(lengths, 32, np.random.default_rng(1), bucket_size=100)
    assert [tuple(b) for b in batches] != [tuple(b) for b in other]
    assert all(lengths[b].max() - lengths[b].min() <= 2 for b in batches if lengths[b].max() < 40)


@pytest.mark.parametrize("kwargs, message", [
    ({"bucket_size": 0}, r"bucket_size=1 or more \(an integer\), got bucket_size=0"),
    ({"bucket_size": 2.5}, "got bucket_size=2.5"),
    ({"bucket_size": True}, "got bucket_size=True"),
    ({"batch_size": 0}, r"batch_size=1 or more \(an integer\), got batch_size=0"),
    ({"lengths": np.ones((4, 2))}, r"shape \(N,\), got shape \(4, 2\)"),
])
def test_bucketed_batches_reject_bad_arguments_naming_them(kwargs, message):
    args = {"lengths": np.arange(10), "batch_size": 4, "bucket_size": 2, **kwargs}
    lengths, batch_size = args.pop("lengths"), args.pop("batch_size")
    with pytest.raises(ValueError, match=message):
        bucketed_batches(lengths, batch_size, np.random.default_rng(0), **args)


def test_collate_pads_to_the_longest_row_of_the_batch(tiny_bert):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_bert))
    enc = PairEncodings(tokenizer, ["a", "gas flow valve control"], ["b", "c"], max_len=32, labels=[0.25, 1.0])
    batch = enc.collate([0, 1])
    width = int(enc.lengths.max())
    assert batch["input_ids"].shape == (2, width)
    assert batch["attention_mask"].sum(1).tolist() == enc.lengths.tolist()
    short = int(enc.lengths[0])
    assert (batch["input_ids"][0, short:] == tokenizer.pad_token_id).all()
    assert torch.equal(batch["labels"], torch.tensor([0.25, 1.0]))
    assert batch["input_ids"][0, 0].item() == tokenizer.cls_token_id
    assert enc.collate([0])["input_ids"].shape == (1, short)  # a batch of short rows stays short


def test_funnel_gets_its_token_types_even_when_the_tokenizer_omits_them(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models("funnel"))
    tok.model_input_names = ["input_ids", "attention_mask"]  # as transformers 5 saves a real Funnel tokenizer
    enc = PairEncodings(tok, ["engine housing"], ["motor casing"], max_len=32)
    types = enc.collate([0])["token_type_ids"][0].tolist()
    assert types[0] == 2 and types[1] == 0 and types[-1] == 1  # <cls>, first text, second text
