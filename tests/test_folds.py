"""Tests for kagglekit.folds: folds partition the rows, keep groups apart, and follow the label."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import shared_data
from sklearn.dummy import DummyRegressor
from sklearn.model_selection import cross_val_score

from kagglekit.folds import GroupBinnedKFold, StratifiedGroupKFoldBinned, add_fold_column, fold_summary

SCORES = np.array([0.0, 0.25, 0.5, 0.75, 1.0])

# Tolerances, on the synthetic 2000-row / 300-group frame below.
CLASS_TOL = 0.05  # each fold's share of every class is within 0.05 of the whole frame's share
MEAN_TOL = 0.02  # each fold's label mean is within 0.02 of the whole frame's (labels span [0, 1])


def make_pairs(n=2000, n_groups=300, seed=0):
    """A USPPPM-like frame: a discrete `label`, a continuous `score` and ~n/n_groups rows per group."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "label": rng.choice(SCORES, size=n, p=[0.2, 0.3, 0.25, 0.15, 0.1]),
            "score": rng.uniform(0, 1, size=n),
            "group": [f"g{g}" for g in rng.integers(0, n_groups, size=n)],
        }
    )


@pytest.fixture(scope="module")
def pairs():
    return make_pairs()


# -- shared invariants -------------------------------------------------------------------------------


def assert_partition(splits, n_samples, groups=None):
    """Valid sets are disjoint and cover every row once; train is the rest; no group crosses."""
    seen = np.zeros(n_samples, dtype=int)
    for train_idx, valid_idx in splits:
        assert train_idx.dtype.kind == "i" and valid_idx.dtype.kind == "i"
        assert len(valid_idx) > 0
        seen[valid_idx] += 1
        assert np.array_equal(np.sort(np.concatenate([train_idx, valid_idx])), np.arange(n_samples))
        if groups is not None:
            groups = np.asarray(groups)
            assert not set(groups[train_idx]) & set(groups[valid_idx]), "a group is in both train and valid"
    assert (seen == 1).all(), "every row must be in exactly one validation fold"


def assert_class_shares(splits, classes, tol=CLASS_TOL):
    """Each fold's share of every class is within `tol` of the whole set's share."""
    classes = np.asarray(classes)
    values = np.unique(classes)
    overall = np.array([(classes == v).mean() for v in values])
    for _, valid_idx in splits:
        fold = np.array([(classes[valid_idx] == v).mean() for v in values])
        assert np.abs(fold - overall).max() <= tol, (fold, overall)


def assert_means_close(splits, y, tol=MEAN_TOL):
    y = np.asarray(y)
    for _, valid_idx in splits:
        assert abs(y[valid_idx].mean() - y.mean()) <= tol


def partition(splits):
    """The set of validation sets: equal for two splitters that make the same folds."""
    return {frozenset(valid_idx.tolist()) for _, valid_idx in splits}


# -- the splitter ------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", ["label", "score", None])
def test_split_partitions_rows_and_keeps_groups_apart(pairs, label):
    y = None if label is None else pairs[label]
    splits = list(StratifiedGroupKFoldBinned(5, random_state=0).split(pairs, y, pairs["group"]))
    assert len(splits) == 5
    assert_partition(splits, len(pairs), pairs["group"])


def test_discrete_labels_are_stratified_as_classes(pairs):
    splits = list(StratifiedGroupKFoldBinned(5, random_state=0).split(pairs, pairs["label"], pairs["group"]))
    assert_class_shares(splits, pairs["label"])


def test_binary_labels_are_stratified(pairs):
    y = (pairs["label"] >= 0.75).astype(int)
    splits = list(StratifiedGroupKFoldBinned(5, random_state=0).split(pairs, y, pairs["group"]))
    assert_partition(splits, len(pairs), pairs["group"])
    assert_class_shares(splits, y)


@pytest.mark.parametrize("binning", ["quantile", "uniform"])
def test_continuous_labels_are_binned(pairs, binning):
    cv = StratifiedGroupKFoldBinned(5, n_bins=5, binning=binning, random_state=0)
    splits = list(cv.split(pairs, pairs["score"], pairs["group"]))
    assert_partition(splits, len(pairs), pairs["group"])
    assert_means_close(splits, pairs["score"])
    # Uniform labels on [0, 1]: both binnings cut near the quintiles, so each fold holds ~20% of each.
    assert_class_shares(splits, np.minimum(pairs["score"] // 0.2, 4))


def test_stratification_without_groups(pairs):
    splits = list(StratifiedGroupKFoldBinned(4, random_state=0).split(pairs, pairs["label"]))
    assert_partition(splits, len(pairs))
    assert_class_shares(splits, pairs["label"], tol=0.01)  # no groups to get in the way: near exact


def test_grouping_without_labels_balances_fold_sizes(pairs):
    splits = list(StratifiedGroupKFoldBinned(5, random_state=0).split(pairs, groups=pairs["group"]))
    assert_partition(splits, len(pairs), pairs["group"])
    sizes = [len(valid_idx) for _, valid_idx in splits]
    assert max(sizes) - min(sizes) <= 20  # groups hold <= ~20 rows, so greedy filling is this close
    other_seed = StratifiedGroupKFoldBinned(5, random_state=1).split(pairs, groups=pairs["group"])
    assert partition(splits) != partition(other_seed), "random_state must shuffle groups even without y"


def test_no_labels_no_groups_is_plain_kfold(pairs):
    splits = list(StratifiedGroupKFoldBinned(3, random_state=0).split(pairs))
    assert_partition(splits, len(pairs))


@pytest.mark.parametrize("label", ["label", "score"])
def test_same_seed_same_folds_other_seed_other_folds(pairs, label):
    def folds(seed):
        return partition(StratifiedGroupKFoldBinned(5, random_state=seed).split(pairs, pairs[label], pairs["group"]))

    assert folds(7) == folds(7)
    assert folds(7) != folds(8)


def test_n_bins_one_turns_stratification_off(pairs):
    # With one bin every row is one class, so the folds are those of grouping alone.
    binned = StratifiedGroupKFoldBinned(5, n_bins=1, random_state=3).split(pairs, pairs["score"], pairs["group"])
    grouped = StratifiedGroupKFoldBinned(5, random_state=3).split(pairs, None, pairs["group"])
    assert partition(binned) == partition(grouped)


def test_warns_when_a_group_is_bigger_than_a_fold():
    groups = np.array(["big"] * 300 + [f"g{i}" for i in range(700)])
    y = np.tile([0, 1], 500)
    cv = StratifiedGroupKFoldBinned(5, random_state=0)
    with pytest.warns(UserWarning, match=re.escape("group 'big' has 300 rows")) as record:
        splits = list(cv.split(y, y, groups))
    assert "n_samples / n_splits = 200" in str(record[0].message)
    assert_partition(splits, len(y), groups)


def test_no_warning_for_groups_that_fit(pairs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(StratifiedGroupKFoldBinned(5, random_state=0).split(pairs, pairs["label"], pairs["group"]))


def test_more_splits_than_groups_is_an_error():
    groups = np.repeat(np.arange(5), 4)
    cv = StratifiedGroupKFoldBinned(7, random_state=0)
    msg = "n_splits=7 is larger than the number of groups (5): lower n_splits to at most 5, or group by a finer key."
    with pytest.raises(ValueError, match=re.escape(msg)):
        next(cv.split(groups, None, groups))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_splits": 1}, "n_splits=1 is invalid"),
        ({"n_splits": 2.5}, "n_splits=2.5 is invalid"),
        ({"n_splits": True}, "n_splits=True is invalid"),
        ({"n_bins": 0}, "n_bins=0 is invalid"),
        ({"binning": "kmeans"}, "binning='kmeans' is invalid"),
        ({"shuffle": False, "random_state": 0}, "random_state=0 has no effect since shuffle=False"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=re.escape(match)):
        StratifiedGroupKFoldBinned(**kwargs)


@pytest.mark.parametrize("column", ["y", "groups"])
def test_nan_in_labels_or_groups_is_an_error(pairs, column):
    y, groups = pairs["score"].to_numpy().copy(), pairs["group"].to_numpy(dtype=object).copy()
    (y if column == "y" else groups)[10] = np.nan
    with pytest.raises(ValueError, match=rf"^{column} holds 1 NaN/missing value\(s\), first at row 10"):
        next(StratifiedGroupKFoldBinned(5, random_state=0).split(pairs, y, groups))


def test_length_mismatch_is_an_error(pairs):
    with pytest.raises(ValueError, match="y has 1999 rows but X has 2000"):
        next(StratifiedGroupKFoldBinned(5).split(pairs, pairs["score"][:-1], pairs["group"]))


def test_works_as_a_scikit_learn_cv(pairs):
    cv = GroupBinnedKFold(4, random_state=0)
    assert cv.get_n_splits() == 4
    assert " ".join(repr(cv).split()) == (
        "StratifiedGroupKFoldBinned(binning='quantile', n_bins=5, n_splits=4, random_state=0, shuffle=True)"
    )
    scores = cross_val_score(DummyRegressor(), pairs[["score"]], pairs["score"], groups=pairs["group"], cv=cv)
    assert len(scores) == 4


# -- add_fold_column and fold_summary ----------------------------------------------------------------


def test_add_fold_column_returns_a_copy_with_int_folds(pairs):
    before = pairs.copy()
    out = add_fold_column(pairs, n_folds=5, seed=1)
    pd.testing.assert_frame_equal(pairs, before)  # the caller's frame is untouched
    assert "fold" not in pairs.columns
    assert out["fold"].dtype == np.int64
    assert sorted(out["fold"].unique()) == [0, 1, 2, 3, 4]
    pd.testing.assert_frame_equal(out.drop(columns="fold"), pairs)
    splits = [(np.flatnonzero(out["fold"] != k), np.flatnonzero(out["fold"] == k)) for k in range(5)]
    assert_partition(splits, len(out), out["group"])
    assert_class_shares(splits, out["label"])


def test_add_fold_column_is_deterministic_for_a_seed(pairs):
    first = add_fold_column(pairs, seed=3)["fold"]
    pd.testing.assert_series_equal(first, add_fold_column(pairs, seed=3)["fold"])
    assert not first.equals(add_fold_column(pairs, seed=4)["fold"])


def test_add_fold_column_keeps_a_custom_index(pairs):
    df = pairs.set_index(pairs.index * 10 + 5)
    out = add_fold_column(df, fold_col="kfold", seed=0)
    assert out.index.equals(df.index)
    assert out["kfold"].between(0, 4).all()


@pytest.mark.parametrize("label_col, group_col", [(None, "group"), ("score", None), (None, None)])
def test_add_fold_column_with_optional_columns(pairs, label_col, group_col):
    out = add_fold_column(pairs, n_folds=4, label_col=label_col, group_col=group_col)
    groups = None if group_col is None else out[group_col]
    splits = [(np.flatnonzero(out["fold"] != k), np.flatnonzero(out["fold"] == k)) for k in range(4)]
    assert_partition(splits, len(out), groups)


def test_add_fold_column_missing_column_names_it(pairs):
    with pytest.raises(ValueError, match=re.escape("df has no column group_col='anchor'; its columns are")) as err:
        add_fold_column(pairs, group_col="anchor")
    assert "['label', 'score', 'group']" in str(err.value)


def test_add_fold_column_too_many_folds_names_n_folds():
    df = pd.DataFrame({"label": np.arange(20.0), "group": np.repeat(np.arange(5), 4)})
    msg = "n_folds=7 is larger than the number of groups (5): lower n_folds to at most 5, or group by a finer key."
    with pytest.raises(ValueError, match=re.escape(msg)):
        add_fold_column(df, n_folds=7)
    with pytest.raises(ValueError, match=re.escape("n_folds=1 is invalid")):
        add_fold_column(df, n_folds=1)


def test_fold_summary(pairs):
    out = add_fold_column(pairs, n_folds=5, seed=0)
    summary = fold_summary(out, label_col="label", group_col="group")
    assert list(summary.columns) == ["n_rows", "frac_rows", "label_mean", "label_std", "n_groups"]
    assert summary.index.tolist() == [0, 1, 2, 3, 4]
    assert summary["n_rows"].sum() == len(pairs)
    assert summary["n_groups"].sum() == pairs["group"].nunique()  # groups never span folds
    assert np.allclose(summary["label_mean"], pairs["label"].mean(), atol=MEAN_TOL)
    assert list(fold_summary(out, label_col=None).columns) == ["n_rows", "frac_rows"]
    with pytest.raises(ValueError, match=re.escape("df has no column fold_col='kfold'; its columns are")):
        fold_summary(out, fold_col="kfold")


# -- real data ---------------------------------------------------------------------------------------


def test_uspppm_folds_by_anchor():
    df = pd.read_csv(shared_data("uspppm", "train.csv"))
    out = add_fold_column(df, n_folds=5, label_col="score", group_col="anchor", seed=42)
    splits = [(np.flatnonzero(out["fold"] != k), np.flatnonzero(out["fold"] == k)) for k in range(5)]
    assert_partition(splits, len(df), df["anchor"])
    assert_class_shares(splits, df["score"], tol=0.01)  # 733 anchors: stratification is near exact
    summary = fold_summary(out, label_col="score", group_col="anchor")
    assert summary["frac_rows"].between(0.19, 0.21).all()
