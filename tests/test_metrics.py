"""Tests for kagglekit.metrics: values match scipy / brute force, and bad inputs fail loudly."""

import itertools
import re
import warnings

import numpy as np
import pytest
from scipy import stats

from kagglekit.metrics import (
    METRICS,
    ConstantInputWarning,
    Metric,
    get_metric,
    is_better,
    pearson,
    rmse,
    roc_auc,
    spearman,
)


def random_pairs():
    """Label/prediction pairs of varied sizes, scales and correlation strengths."""
    rng = np.random.default_rng(0)
    for n, scale, noise in [(2, 1.0, 1.0), (3, 1.0, 0.1), (50, 1e-6, 1.0), (1000, 1.0, 0.3), (5000, 1e6, 5.0)]:
        y_true = rng.normal(size=n) * scale + 3 * scale
        yield y_true, y_true + rng.normal(size=n) * scale * noise
    x = rng.normal(size=200)
    yield x, -x  # perfectly anti-correlated


def with_ties(n=300, seed=1):
    rng = np.random.default_rng(seed)
    y_true = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=n)  # USPPPM-style: many ties
    return y_true, np.round(y_true + rng.normal(scale=0.3, size=n), 1)


def brute_force_auc(y_true, y_score):
    """Fraction of (positive, negative) pairs ranked correctly; a tied pair counts 0.5."""
    pos = [s for t, s in zip(y_true, y_score) if t == 1]
    neg = [s for t, s in zip(y_true, y_score) if t == 0]
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def assert_rejects_bad_inputs(fn, pred_name="y_pred"):
    """Shared input checks: length mismatch, empty, NaN, inf and 2-D inputs raise naming the argument."""
    good = np.array([0.0, 1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match=f"y_true has 4 values but {pred_name} has 3"):
        fn(good, good[:3])
    with pytest.raises(ValueError, match="y_true is empty"):
        fn([], [])
    with pytest.raises(ValueError, match=rf"{pred_name} holds 1 NaN value\(s\), first at index 2"):
        fn(good, [0.1, 0.2, np.nan, 0.4])
    with pytest.raises(ValueError, match="y_true holds 1 NaN"):
        fn([0.0, 1.0, np.nan, 1.0], good)
    with pytest.raises(ValueError, match=f"{pred_name} holds inf"):
        fn(good, [0.1, np.inf, 0.3, 0.4])
    with pytest.raises(ValueError, match=re.escape(f"{pred_name} has shape (2, 2)")):
        fn(good, good.reshape(2, 2))


# -- pearson -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("y_true, y_pred", list(random_pairs()))
def test_pearson_matches_scipy(y_true, y_pred):
    assert pearson(y_true, y_pred) == pytest.approx(stats.pearsonr(y_true, y_pred)[0], abs=1e-12)


def test_pearson_accepts_column_vectors_and_lists():
    y_true, y_pred = next(random_pairs())
    expected = stats.pearsonr(y_true, y_pred)[0]
    assert pearson(y_true.reshape(-1, 1), y_pred.reshape(-1, 1)) == pytest.approx(expected, abs=1e-12)
    assert pearson(list(y_true), tuple(y_pred)) == pytest.approx(expected, abs=1e-12)
    assert isinstance(pearson(y_true, y_pred), float)


@pytest.mark.parametrize("metric", [pearson, spearman])
def test_constant_input_returns_zero_with_a_warning(metric):
    y_true = np.array([0.0, 0.25, 0.5, 1.0])
    with pytest.warns(ConstantInputWarning, match="constant input"):
        assert metric(y_true, np.full(4, 0.1)) == 0.0  # 0.1 is not exact in binary: the mean drifts
    with pytest.warns(ConstantInputWarning):
        assert metric(np.ones(4), y_true) == 0.0
    with pytest.warns(ConstantInputWarning):
        assert metric([0.3], [0.7]) == 0.0  # a single row is constant too


def test_constant_warning_is_a_user_warning_shown_once_per_call_site():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("default")  # Python's own default: once per location
        for _ in range(3):
            pearson([0.0, 1.0, 2.0], [5.0, 5.0, 5.0])
    assert len(record) == 1
    assert issubclass(record[0].category, UserWarning)
    assert record[0].filename == __file__  # points at the caller, not at kagglekit


def test_pearson_rejects_bad_inputs():
    assert_rejects_bad_inputs(pearson)


# -- spearman, roc_auc, rmse -------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_spearman_matches_scipy_with_ties(seed):
    y_true, y_pred = with_ties(seed=seed)
    assert spearman(y_true, y_pred) == pytest.approx(stats.spearmanr(y_true, y_pred)[0], abs=1e-12)


@pytest.mark.parametrize("y_true, y_pred", list(random_pairs())[2:])
def test_spearman_matches_scipy_without_ties(y_true, y_pred):
    assert spearman(y_true, y_pred) == pytest.approx(stats.spearmanr(y_true, y_pred)[0], abs=1e-12)


def test_spearman_rejects_bad_inputs():
    assert_rejects_bad_inputs(spearman)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_brute_force_pairs(seed):
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, 2, size=120)
    y_score = np.round(rng.normal(size=120) + y_true, 1)  # rounded so that some pairs tie
    assert roc_auc(y_true, y_score) == pytest.approx(brute_force_auc(y_true, y_score), abs=1e-12)


def test_roc_auc_single_class_is_an_error():
    with pytest.raises(ValueError, match=re.escape("y_true holds 1 class(es) [1.0], and ROC AUC needs exactly 2")):
        roc_auc([1, 1, 1], [0.2, 0.5, 0.9])


def test_roc_auc_rejects_bad_inputs():
    assert_rejects_bad_inputs(roc_auc, pred_name="y_score")


def test_rmse_by_hand():
    assert rmse([0.0, 1.0, 2.0, 3.0], [1.0, 1.0, 2.0, 1.0]) == pytest.approx(np.sqrt((1 + 0 + 0 + 4) / 4))
    assert rmse([[0.5], [0.5]], [0.5, 0.5]) == 0.0
    assert_rejects_bad_inputs(rmse)


# -- registry ----------------------------------------------------------------------------------------


def test_registry_lookups():
    assert set(METRICS) == {"pearson", "spearman", "roc_auc", "rmse"}
    assert get_metric("pearson") == Metric("pearson", pearson, True)
    assert get_metric(" RMSE ") is METRICS["rmse"]
    assert get_metric(spearman) is METRICS["spearman"]  # a built-in function finds its entry
    assert get_metric(METRICS["roc_auc"]) is METRICS["roc_auc"]
    assert get_metric("pearson")([1.0, 2.0, 3.0], [1.0, 2.0, 4.0]) == pytest.approx(0.9819805060619657)
    assert not get_metric("rmse").higher_is_better


def test_unknown_metric_lists_the_valid_ones():
    msg = "metric='pearsonr' is unknown: pass one of ['pearson', 'rmse', 'roc_auc', 'spearman'], or a callable."
    with pytest.raises(ValueError, match=re.escape(msg)):
        get_metric("pearsonr")
    with pytest.raises(TypeError, match="metric=3 is of type int"):
        get_metric(3)


def test_custom_callable_needs_a_direction():
    def mae(y_true, y_pred):
        return float(np.mean(np.abs(np.subtract(y_true, y_pred))))

    with pytest.raises(ValueError, match="pass higher_is_better=True for a score or False for a loss"):
        get_metric(mae)
    metric = get_metric(mae, higher_is_better=False)
    assert metric == Metric("mae", mae, False)
    assert is_better(metric, 0.1, 0.2)


def test_metric_is_frozen():
    with pytest.raises(AttributeError):
        METRICS["pearson"].higher_is_better = False


@pytest.mark.parametrize(
    "metric, new, best, expected",
    [
        ("pearson", 0.5, None, True),  # anything beats nothing
        ("pearson", 0.6, 0.5, True),
        ("pearson", 0.4, 0.5, False),
        ("pearson", 0.5, 0.5, False),  # a tie keeps the earlier checkpoint
        ("pearson", float("nan"), 0.5, False),
        ("pearson", float("nan"), None, False),
        ("pearson", 0.1, float("nan"), True),
        ("rmse", 0.4, 0.5, True),
        ("rmse", 0.6, 0.5, False),
        ("rmse", 0.5, 0.5, False),
        ("rmse", 9.9, None, True),
    ],
)
def test_is_better(metric, new, best, expected):
    assert is_better(metric, new, best) is expected
    assert is_better(get_metric(metric), new, best) is expected
