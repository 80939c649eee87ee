"""Competition metrics (Pearson, Spearman, ROC AUC, RMSE) and a registry to pick one by name.

Every metric takes ``(y_true, y_pred)`` and returns a float; the registry records which way is up.
"""

import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

__all__ = [
    "ConstantInputWarning",
    "Metric",
    "METRICS",
    "get_metric",
    "is_better",
    "pearson",
    "roc_auc",
    "rmse",
    "spearman",
]


class ConstantInputWarning(UserWarning):
    """Warned when a correlation is asked of a constant input, and 0.0 is returned instead."""


def pearson(y_true, y_pred) -> float:
    """Pearson correlation coefficient between labels and predictions.

    Computed in float64 with the centered formula; agrees with ``scipy.stats.pearsonr`` to ~1e-12.

    If either input is constant (all values equal, including a single row) the correlation is
    undefined: this returns 0.0 and warns :class:`ConstantInputWarning` rather than returning NaN
    or raising. A model often predicts a constant in its first steps; 0.0 ranks that checkpoint
    as worthless without crashing training, whereas NaN would poison best-checkpoint selection
    (every comparison with NaN is False). The warning text is fixed, so Python's default filter
    shows it once per call site instead of every epoch.

    Args:
        y_true: Labels, array-like of shape (n_samples,) or (n_samples, 1).
        y_pred: Predictions, same shape as ``y_true``.

    Returns:
        The correlation, in [-1, 1].

    Raises:
        ValueError: if an input is empty, not 1-D, holds NaN or inf, or the lengths differ.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, "y_pred")
    return _pearson(y_true, y_pred)


def spearman(y_true, y_pred) -> float:
    """Spearman rank correlation: Pearson's on ranks, ties sharing their average rank.

    Agrees with ``scipy.stats.spearmanr``. A constant input returns 0.0 with a
    :class:`ConstantInputWarning`, as :func:`pearson` does.

    Args:
        y_true: Labels, array-like of shape (n_samples,) or (n_samples, 1).
        y_pred: Predictions, same shape as ``y_true``.

    Returns:
        The rank correlation, in [-1, 1].

    Raises:
        ValueError: if an input is empty, not 1-D, holds NaN or inf, or the lengths differ.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, "y_pred")
    return _pearson(rankdata(y_true), rankdata(y_pred))


def roc_auc(y_true, y_score) -> float:
    """Area under the ROC curve for a binary label.

    Args:
        y_true: Binary labels of shape (n_samples,); the larger of the two values is the positive.
        y_score: Scores of shape (n_samples,), higher meaning more likely positive.

    Returns:
        The probability that a random positive outscores a random negative (ties count half).

    Raises:
        ValueError: if ``y_true`` does not hold exactly two classes (ROC AUC is undefined for one),
            or an input is empty, not 1-D, holds NaN or inf, or the lengths differ.
    """
    y_true, y_score = _check_pair(y_true, y_score, "y_score")
    classes = np.unique(y_true)
    if len(classes) != 2:
        # scikit-learn only warns and returns NaN here; a NaN score would slip silently into logs.
        raise ValueError(
            f"y_true holds {len(classes)} class(es) {classes.tolist()[:5]}, and ROC AUC needs exactly 2: "
            "make sure the validation fold holds both positives and negatives."
        )
    return float(roc_auc_score(y_true, y_score))


def rmse(y_true, y_pred) -> float:
    """Root mean squared error.

    Args:
        y_true: Labels, array-like of shape (n_samples,) or (n_samples, 1).
        y_pred: Predictions, same shape as ``y_true``.

    Returns:
        ``sqrt(mean((y_true - y_pred) ** 2))``, 0 or more.

    Raises:
        ValueError: if an input is empty, not 1-D, holds NaN or inf, or the lengths differ.
    """
    y_true, y_pred = _check_pair(y_true, y_pred, "y_pred")
    return float(np.sqrt(np.mean((y_true - y_pred) ** 2)))


@dataclass(frozen=True)
class Metric:
    """A metric function with its name and the direction that counts as better.

    Calling a ``Metric`` calls its function.

    Args:
        name: Name shown in logs and used as the registry key.
        fn: ``fn(y_true, y_pred) -> float``.
        higher_is_better: True for scores (Pearson, AUC), False for losses (RMSE).
    """

    name: str
    fn: Callable[..., float]
    higher_is_better: bool

    def __call__(self, y_true, y_pred) -> float:
        return self.fn(y_true, y_pred)


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("pearson", pearson, True),
        Metric("spearman", spearman, True),
        Metric("roc_auc", roc_auc, True),
        Metric("rmse", rmse, False),
    )
}
"""The built-in metrics, by name."""


def get_metric(name_or_callable: Union[str, Metric, Callable], *, higher_is_better: Optional[bool] = None) -> Metric:
    """Look up a metric by name, or wrap a function as a :class:`Metric`.

    Args:
        name_or_callable: A key of :data:`METRICS` (case-insensitive), a :class:`Metric` (returned
            as is), or a function ``fn(y_true, y_pred) -> float``. A built-in function such as
            :func:`pearson` resolves to its registry entry.
        higher_is_better: Direction of a custom function; required for one, since guessing wrong
            would keep the worst checkpoint. Ignored for names and :class:`Metric` objects.

    Returns:
        The :class:`Metric`.

    Raises:
        ValueError: for an unknown name, or a custom function without ``higher_is_better``.
        TypeError: for anything that is neither a string nor callable.
    """
    if isinstance(name_or_callable, Metric):
        return name_or_callable
    if isinstance(name_or_callable, str):
        key = name_or_callable.strip().lower()
        if key not in METRICS:
            raise ValueError(f"metric={name_or_callable!r} is unknown: pass one of {sorted(METRICS)}, or a callable.")
        return METRICS[key]
    if callable(name_or_callable):
        for metric in METRICS.values():
            if metric.fn is name_or_callable:
                return metric
        if higher_is_better is None:
            raise ValueError(
                f"metric={name_or_callable!r} is a custom function, so its direction is unknown: "
                "pass higher_is_better=True for a score or False for a loss."
            )
        name = getattr(name_or_callable, "__name__", type(name_or_callable).__name__)
        return Metric(name, name_or_callable, bool(higher_is_better))
    raise TypeError(
        f"metric={name_or_callable!r} is of type {type(name_or_callable).__name__}: "
        f"pass one of {sorted(METRICS)}, a Metric, or a callable."
    )


def is_better(metric: Union[str, Metric], new: float, best: Optional[float]) -> bool:
    """Whether ``new`` strictly improves on ``best`` for this metric.

    Args:
        metric: A :class:`Metric` or a registry name (see :func:`get_metric`).
        new: The latest score.
        best: The best score so far, or None when there is none yet.

    Returns:
        True when ``best`` is None (anything beats nothing) or ``new`` is strictly better; False
        on a tie (the earlier checkpoint is kept) and whenever ``new`` is NaN. A NaN ``best`` is
        beaten by any real ``new``.
    """
    metric = get_metric(metric)
    if new is None or np.isnan(new):
        return False
    if best is None or np.isnan(best):
        return True
    return bool(new > best) if metric.higher_is_better else bool(new < best)


def _pearson(x, y):
    if x.min() == x.max() or y.min() == y.max():
        # Checked on the raw values: centering a constant array need not give exact zeros.
        warnings.warn(
            "pearson/spearman got a constant input, so the correlation is undefined: returning 0.0.",
            ConstantInputWarning,
            stacklevel=3,
        )
        return 0.0
    xc = x - x.mean()
    yc = y - y.mean()
    # Normalising before the dot product keeps huge values from overflowing the sum of squares.
    r = np.dot(xc / np.linalg.norm(xc), yc / np.linalg.norm(yc))
    return float(np.clip(r, -1.0, 1.0))


def _check_pair(y_true, y_pred, pred_name):
    """Return both inputs as equal-length 1-D float64 arrays, or raise naming the bad one."""
    y_true = _check_1d(y_true, "y_true")
    y_pred = _check_1d(y_pred, pred_name)
    if len(y_true) != len(y_pred):
        raise ValueError(
            f"y_true has {len(y_true)} values but {pred_name} has {len(y_pred)}: pass one prediction per label."
        )
    return y_true, y_pred


def _check_1d(values, name):
    try:
        values = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric: got values such as {np.asarray(values).ravel()[:3].tolist()}.")
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim != 1:
        raise ValueError(f"{name} has shape {values.shape}: pass a 1-D array of shape (n_samples,) or (n_samples, 1).")
    if len(values) == 0:
        raise ValueError(f"{name} is empty: pass at least one value.")
    nan = np.isnan(values)
    if nan.any():
        raise ValueError(
            f"{name} holds {int(nan.sum())} NaN value(s), first at index {int(np.argmax(nan))}: "
            "a diverged model or a missing label; fix it before scoring."
        )
    if np.isinf(values).any():
        raise ValueError(
            f"{name} holds inf value(s), first at index {int(np.argmax(np.isinf(values)))}: fix them before scoring."
        )
    return values
