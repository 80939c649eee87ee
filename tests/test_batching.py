"""Batching: batches cover every row once, sorted batches pad little, shuffles are reproducible."""

import numpy as np
import torch

from kagglekit.data.batching import PairEncodings, padding_efficiency, predict_order, shuffled_batches, sorted_batches


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
