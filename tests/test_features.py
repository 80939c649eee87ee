"""Co-occurrence features: hand-computed values, label independence, row order, speed."""

import time

import numpy as np
import pandas as pd
import pytest

from kagglekit.data.features import FEATURE_NAMES, CooccurrenceGraph, cooccurrence_features


def _frame(pairs, ids=None, labels=None):
    out = pd.DataFrame({"id": ids or [str(i) for i in range(len(pairs))],
                        "text_a": [p[0] for p in pairs], "text_b": [p[1] for p in pairs]})
    if labels is not None:
        out["label"] = labels
    return out


# train: a-b, a-c, b-c, a-b (repeated), d-e; test: f-f (a self-pair), a-g
TRAIN = _frame([("a", "b"), ("a", "c"), ("b", "c"), ("a", "b"), ("d", "e")], labels=[1, 0, 1, 1, 0])
TEST = _frame([("f", "f"), ("a", "g")], ids=["t0", "t1"])


def test_hand_computed_values():
    train, test = cooccurrence_features(TRAIN, TEST)
    assert list(train.columns) == list(FEATURE_NAMES) and list(test.columns) == list(FEATURE_NAMES)
    # Over train + test:
    #   freq: a 4 (three train rows + a-g), b 3, c 2, d 1, e 1, f 2 (f-f counts twice), g 1
    #   neighbours: a {b, c, g}, b {a, c}, c {a, b}, d {e}, e {d}, f {} (self-pair), g {a}
    #   components: {a, b, c, g} 4, {d, e} 2, {f} 1
    expected_train = [
        # freq_a freq_b deg_a deg_b common comp jaccard
        [4, 3, 3, 2, 1, 4, 1 / 4],  # a-b: common {c}; union {a, b, c, g}
        [4, 2, 3, 2, 1, 4, 1 / 4],  # a-c: common {b}
        [3, 2, 2, 2, 1, 4, 1 / 3],  # b-c: common {a}; union {a, b, c}
        [4, 3, 3, 2, 1, 4, 1 / 4],
        [1, 1, 1, 1, 0, 2, 0.0],  # d-e: union {d, e}, no common
    ]
    expected_test = [
        [2, 2, 0, 0, 0, 1, 0.0],  # f-f: no neighbours, empty union
        [4, 1, 3, 1, 0, 4, 0.0],  # a-g: N(g) = {a}, N(a) has no a
    ]
    np.testing.assert_allclose(train.to_numpy(), expected_train)
    np.testing.assert_allclose(test.to_numpy(), expected_test)
    assert (train.dtypes == np.float64).all()


def test_train_only_and_index_kept():
    train, test = cooccurrence_features(TRAIN.set_axis([10, 11, 12, 13, 14]))
    assert test is None
    assert train.index.tolist() == [10, 11, 12, 13, 14]
    # without test: a {b, c}, freq a 3
    np.testing.assert_allclose(train.iloc[0].to_numpy(), [3, 3, 2, 2, 1, 3, 1 / 3])


def test_labels_never_change_a_feature():
    base, base_test = cooccurrence_features(TRAIN, TEST)
    rng = np.random.default_rng(0)
    for labels in (rng.permutation(TRAIN["label"].to_numpy()), [0.5] * 5, None):
        frame = TRAIN.drop(columns="label") if labels is None else TRAIN.assign(label=labels)
        got, got_test = cooccurrence_features(frame, TEST.assign(label=1))
        pd.testing.assert_frame_equal(got, base)
        pd.testing.assert_frame_equal(got_test, base_test)


def test_row_order_preserved():
    base, _ = cooccurrence_features(TRAIN, TEST)
    order = [3, 0, 4, 2, 1]
    shuffled, _ = cooccurrence_features(TRAIN.iloc[order], TEST)
    pd.testing.assert_frame_equal(shuffled, base.iloc[order])


def test_transform_unseen_pairs():
    graph = CooccurrenceGraph(TRAIN, TEST)
    got = graph.transform(_frame([("b", "g"), ("new", "a")]))
    np.testing.assert_allclose(got.to_numpy(), [
        [3, 1, 2, 1, 1, 4, 1 / 2],  # b-g: common {a}; union {a, c}
        [0, 4, 0, 3, 0, 1, 0.0],  # unseen text: freq 0, degree 0, its own component
    ])


def test_missing_columns_named():
    with pytest.raises(ValueError, match="text_b"):
        cooccurrence_features(TRAIN.drop(columns="text_b"))


def test_speed_on_40k_rows():
    rng = np.random.default_rng(0)
    n = 40_000
    texts = np.array([f"question {i}" for i in range(30_000)], dtype=object)
    train = pd.DataFrame({"text_a": texts[rng.integers(0, 30_000, n)], "text_b": texts[rng.integers(0, 30_000, n)]})
    test = train.sample(10_000, random_state=0).reset_index(drop=True)
    start = time.perf_counter()
    feats, test_feats = cooccurrence_features(train, test)
    assert time.perf_counter() - start < 5.0
    assert len(feats) == n and len(test_feats) == 10_000
    # spot check against a direct count
    freq = pd.concat([train["text_a"], train["text_b"], test["text_a"], test["text_b"]]).value_counts()
    np.testing.assert_array_equal(feats["freq_a"].to_numpy(), freq[train["text_a"]].to_numpy())
    assert (feats["common_neighbours"] <= np.minimum(feats["degree_a"], feats["degree_b"])).all()
    assert feats["jaccard"].between(0, 1).all()
