"""Closure, swap and extra-row augmentation: exact pairs, no duplicates, caps, no validation leak."""

import time

import numpy as np
import pandas as pd
import pytest

from kagglekit.data.augment import augment_training_rows, closure_pairs, merge_extra, swap_pairs


def _frame(pairs, labels, **extra):
    n = len(pairs)
    return pd.DataFrame({
        "id": [str(i) for i in range(n)],
        "text_a": [p[0] for p in pairs],
        "text_b": [p[1] for p in pairs],
        "label": labels,
        "group": [p[0] for p in pairs],
        **extra,
    })


# a-b, b-c positive; c-d negative; e-f positive; a-e negative.
HAND = _frame([("a", "b"), ("b", "c"), ("c", "d"), ("e", "f"), ("a", "e")], [1, 1, 0, 1, 0])


def _unordered(frame):
    return [frozenset(p) for p in zip(frame["text_a"], frame["text_b"])]


def test_closure_exact_pairs_on_hand_graph():
    new, report = closure_pairs(HAND)
    got = list(zip(new["text_a"], new["text_b"], new["label"]))
    assert got == [
        ("a", "c", 1),  # {a, b, c} is one class: a-c is implied
        ("a", "d", 0), ("b", "d", 0),  # c-d negative spreads over {a, b, c} x {d} (c-d itself exists)
        ("a", "f", 0), ("b", "e", 0), ("b", "f", 0), ("c", "e", 0), ("c", "f", 0),  # {a,b,c} x {e,f} minus a-e
    ]
    assert new["id"].tolist() == [f"aug:{i}" for i in range(8)]
    assert report == {"positives_added": 1, "negatives_added": 7, "candidates": 8, "components": 3,
                      "conflicts": 0, "capped": False}
    # group: that of the representative row (first row touching text_a's component): row 0, group "a"
    assert set(new["group"]) == {"a"}
    assert list(new.columns) == list(HAND.columns)
    assert new["label"].dtype == HAND["label"].dtype


def test_closure_never_duplicates_originals_in_either_order():
    # d-c is given reversed, and a-c already exists as c-a: neither may come back.
    df = _frame([("a", "b"), ("b", "c"), ("c", "a"), ("d", "c"), ("b", "d")], [1, 1, 1, 0, 0])
    new, report = closure_pairs(df)
    originals = set(_unordered(df))
    added = _unordered(new)
    assert not originals & set(added)
    assert len(set(added)) == len(added)
    assert sorted(map(sorted, added)) == [["a", "d"]]
    assert report["positives_added"] == 0 and report["negatives_added"] == 1


def test_conflicts_counted_and_generate_nothing():
    df = _frame([("a", "b"), ("b", "c"), ("a", "c"), ("x", "y")], [1, 1, 0, 0])
    new, report = closure_pairs(df)
    assert report["conflicts"] == 1
    assert len(new) == 0  # the class {a,b,c} is complete; the conflicting a-c spawns no negatives


def test_cap_keeps_proportion_and_is_seeded():
    rng = np.random.default_rng(0)
    pairs = [(f"t{rng.integers(300)}", f"t{rng.integers(300)}") for _ in range(600)]
    df = _frame(pairs, rng.integers(0, 2, 600))
    full, full_report = closure_pairs(df)
    assert full_report["candidates"] > 100 and not full_report["capped"]
    capped, report = closure_pairs(df, max_new=100, seed=1)
    assert len(capped) == 100 and report["capped"] and report["candidates"] == full_report["candidates"]
    expected_pos = round(100 * full_report["positives_added"] / full_report["candidates"])
    assert report["positives_added"] == expected_pos and report["negatives_added"] == 100 - expected_pos
    # a sample of the full candidates, in their order
    full_keys = [tuple(p) for p in zip(full["text_a"], full["text_b"])]
    keys = [tuple(p) for p in zip(capped["text_a"], capped["text_b"])]
    positions = [full_keys.index(k) for k in keys]
    assert set(keys) <= set(full_keys) and positions == sorted(positions)
    again, _ = closure_pairs(df, max_new=100, seed=1)
    pd.testing.assert_frame_equal(capped, again)
    other, _ = closure_pairs(df, max_new=100, seed=2)
    assert not other.equals(capped)
    by_ratio, report = closure_pairs(df, ratio=0.1)
    assert len(by_ratio) == 60 and report["capped"]


@pytest.mark.parametrize("kwargs, match", [
    ({"max_new": 5, "ratio": 0.5}, "at most one cap"),
    ({"max_new": -1}, "max_new=-1"),
    ({"ratio": float("nan")}, "ratio=nan"),
])
def test_bad_caps_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        closure_pairs(HAND, **kwargs)


def test_non_binary_labels_refused():
    with pytest.raises(ValueError, match="binary labels"):
        closure_pairs(HAND.assign(label=[0.0, 0.25, 1.0, 1.0, 0.0]))


def test_feature_columns_left_nan_group_and_fold_copied():
    df = HAND.assign(fold=[1, 1, 2, 3, 3], freq_a=1.0)
    new, _ = closure_pairs(df)
    assert new["freq_a"].isna().all()
    assert set(new["fold"]) == {1}  # representative row 0


def test_validation_texts_never_enter_training_rows():
    # Validation rows link validation-only texts (v1, v2) to training texts: a closure over all rows
    # would pair them with training texts; over training rows it must not.
    train = _frame([("a", "b"), ("b", "c"), ("c", "d"), ("e", "f")], [1, 1, 0, 1])
    valid = pd.DataFrame({"id": ["v0", "v1", "v2"], "text_a": ["a", "v1", "f"], "text_b": ["v1", "v2", "c"],
                          "label": [1, 1, 0], "group": ["a", "v1", "f"]})
    rows, report = augment_training_rows(train, valid, closure=True, swap=True, seed=0)
    train_texts = set(train["text_a"]) | set(train["text_b"])
    assert set(rows["text_a"]) | set(rows["text_b"]) <= train_texts
    assert not set(rows["id"]) & set(valid["id"])
    pd.testing.assert_frame_equal(rows.iloc[: len(train)], train)
    assert report["positives_added"] == 1 and report["negatives_added"] == 2  # a-c; a-d, b-d
    assert report["valid_pairs_inferred"] == 0
    assert report["swapped"] == len(rows) - len(train) - 3


def test_augment_training_rows_off_is_identity():
    rows, report = augment_training_rows(HAND, HAND.iloc[:0], closure=False, swap=False)
    pd.testing.assert_frame_equal(rows, HAND)
    assert report == {}


def test_swap_exchanges_a_b_columns_and_skips_duplicates():
    df = pd.DataFrame({"id": ["1", "2", "3", "4"], "text_a": ["x", "y", "p", "s"], "text_b": ["y", "x", "q", "s"],
                       "label": [1.0, 1.0, 0.0, 1.0], "group": ["x", "y", "p", "s"],
                       "freq_a": [1.0, 2.0, 3.0, 4.0], "freq_b": [10.0, 20.0, 30.0, 40.0], "overlap": [0.5] * 4})
    out = swap_pairs(df)
    # x-y and y-x are both rows already, s-s is its own swap: only p-q gets a copy
    assert out.to_dict("records") == [{"id": "swap:3", "text_a": "q", "text_b": "p", "label": 0.0, "group": "p",
                                       "freq_a": 30.0, "freq_b": 3.0, "overlap": 0.5}]
    assert list(out.columns) == list(df.columns)
    assert df["id"].tolist() == ["1", "2", "3", "4"]  # caller's frame untouched


def test_merge_extra_weights_and_never_touches_validation():
    frame = _frame([("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")], [1, 0, 1, 0], fold=[0, 0, 1, 1], overlap=0.3)
    train_df, valid_df = frame[frame["fold"] != 1], frame[frame["fold"] == 1]
    extra = pd.DataFrame({"id": ["p0", "p1"], "text_a": ["u", "w"], "text_b": ["v", "z"], "label": [0.9, 0.1],
                          "overlap": [0.1, 0.2], "unused": [1, 2]})
    out = merge_extra(train_df, extra, weight=0.5)
    assert out["weight"].tolist() == [1.0, 1.0, 0.5, 0.5]
    assert out["id"].tolist() == ["0", "1", "p0", "p1"]
    assert not set(out["id"]) & set(valid_df["id"])
    assert list(out.columns) == [*frame.columns, "weight"]
    assert out["group"].tolist()[2:] == ["u", "w"] and out["fold"].tolist()[2:] == [-1, -1]
    assert "weight" not in train_df.columns


@pytest.mark.parametrize("weight", [0, -1.0, float("inf"), True])
def test_merge_extra_bad_weight(weight):
    with pytest.raises(ValueError, match="weight="):
        merge_extra(HAND, HAND.assign(id=["x" + i for i in HAND["id"]]), weight=weight)


def test_merge_extra_refuses_clashing_ids_and_missing_columns():
    with pytest.raises(ValueError, match="already training ids"):
        merge_extra(HAND, HAND, weight=1.0)
    with pytest.raises(ValueError, match=r"extra_df has no column 'label'; its columns are \['id', 'text_a', 'text_b'"):
        merge_extra(HAND, HAND.drop(columns=["label"]).assign(id=["x" + i for i in HAND["id"]]), weight=1.0)


def test_closure_speed_on_afqmc_sized_frame():
    rng = np.random.default_rng(0)
    n = 34_000
    texts = np.array([f"question {i}" for i in range(40_000)], dtype=object)
    df = pd.DataFrame({"id": np.arange(n).astype(str), "text_a": texts[rng.integers(0, 40_000, n)],
                       "text_b": texts[rng.integers(0, 40_000, n)], "label": (rng.random(n) < 0.3).astype(int),
                       "group": "g"})
    start = time.perf_counter()
    new, report = closure_pairs(df, ratio=1.0)
    elapsed = time.perf_counter() - start
    assert elapsed < 5.0, elapsed
    assert len(new) <= n and report["candidates"] > 0
    originals = set(_unordered(df))
    added = _unordered(new)
    assert not originals & set(added) and len(set(added)) == len(added)
