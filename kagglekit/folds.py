"""Cross-validation folds that keep groups apart and stratify on a (binned) label.

Text-pair competitions score a continuous similarity, and rows share an anchor phrase that must
never sit in both train and valid: these helpers make such folds reproducibly.
"""

import numbers
import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import BaseCrossValidator, KFold, StratifiedGroupKFold, StratifiedKFold

from kagglekit._frames import check_columns

__all__ = ["StratifiedGroupKFoldBinned", "GroupBinnedKFold", "add_fold_column", "fold_summary"]

_BINNINGS = ("quantile", "uniform")
# the end of a missing-column error: label_col and group_col may be None, fold_col may not
_COLUMN_FIX = "pass the name of one of them (None leaves label_col or group_col out)."


class StratifiedGroupKFoldBinned(BaseCrossValidator):
    """K-fold splitter with non-overlapping groups, stratified on a binned continuous label.

    A thin wrapper over :class:`sklearn.model_selection.StratifiedGroupKFold`, which only accepts
    class labels: a continuous ``y`` is first cut into ``n_bins`` bins and the bin index is used as
    the class. A label that is already discrete (at most ``n_bins`` distinct values, such as
    USPPPM's scores {0, 0.25, 0.5, 0.75, 1} or a 0/1 target, or any non-numeric label) is used as
    the class directly, so no information is lost to binning.

    What ``split`` does depends on what it is given:

    * ``y`` and ``groups``: stratified group k-fold on the (binned) label.
    * ``groups`` only: group k-fold; groups are visited in random order (``random_state``) and
      each goes to the fold with the fewest rows so far.
    * ``y`` only: :class:`~sklearn.model_selection.StratifiedKFold` on the (binned) label.
    * neither: :class:`~sklearn.model_selection.KFold`.

    Note that ``StratifiedGroupKFold`` only shuffles among groups whose class counts are equally
    spread, so when groups are large and all different, two seeds can give similar folds.

    Args:
        n_splits: Number of folds, at least 2.
        n_bins: Number of bins a continuous label is cut into, at least 1. ``n_bins=1`` turns
            stratification off: every row falls in one bin and only the grouping remains.
        shuffle: Whether to shuffle groups (or rows when there are no groups) before assigning
            them to folds.
        random_state: Seed or ``numpy.random.RandomState`` controlling the shuffle. Pass an int for
            the same folds on every call. Must be None when ``shuffle`` is False.
        binning: ``"quantile"`` cuts bins holding about the same number of rows, which keeps every
            bin populated; ``"uniform"`` cuts bins of equal width over the label's range.

    Examples:
        >>> import numpy as np
        >>> y = np.linspace(0, 1, 40)
        >>> groups = np.repeat(np.arange(10), 4)
        >>> cv = StratifiedGroupKFoldBinned(n_splits=5, random_state=0)
        >>> [len(valid) for _, valid in cv.split(y, y, groups)]
        [8, 8, 8, 8, 8]
    """

    def __init__(self, n_splits=5, *, n_bins=5, shuffle=True, random_state=None, binning="quantile"):
        _check_n_splits(n_splits, "n_splits")
        if not isinstance(n_bins, numbers.Integral) or isinstance(n_bins, bool) or n_bins < 1:
            raise ValueError(f"n_bins={n_bins!r} is invalid: pass an int of at least 1 (1 turns stratification off).")
        if not isinstance(shuffle, bool):
            raise ValueError(f"shuffle={shuffle!r} is invalid: pass True or False.")
        if not shuffle and random_state is not None:
            # Same rule as scikit-learn's KFold: a seed that has no effect is most likely a mistake.
            raise ValueError(
                f"random_state={random_state!r} has no effect since shuffle=False: "
                "set shuffle=True, or leave random_state=None."
            )
        if binning not in _BINNINGS:
            raise ValueError(f"binning={binning!r} is invalid: pass one of {list(_BINNINGS)}.")
        self.n_splits = int(n_splits)
        self.n_bins = int(n_bins)
        self.shuffle = shuffle
        self.random_state = random_state
        self.binning = binning

    # Ask scikit-learn's metadata routing to pass `groups` to split(), as StratifiedGroupKFold does.
    __metadata_request__split = {"groups": True}

    def get_n_splits(self, X=None, y=None, groups=None):
        """Return the number of folds.

        Args:
            X: Ignored, exists for compatibility.
            y: Ignored, exists for compatibility.
            groups: Ignored, exists for compatibility.

        Returns:
            The number of splitting iterations, ``n_splits``.
        """
        return self.n_splits

    def split(self, X, y=None, groups=None):
        """Generate indices that split the data into train and validation folds.

        Args:
            X: Array-like of shape (n_samples, ...). Only its length is used.
            y: Label of shape (n_samples,), continuous or discrete, or None to only group.
            groups: Group of each row, shape (n_samples,): rows of a group always land in the
                same validation fold. None to only stratify.

        Yields:
            ``(train_idx, valid_idx)``: integer numpy arrays of row positions, one pair per fold.

        Raises:
            ValueError: if ``y`` or ``groups`` has the wrong length or holds NaN, or there are
                fewer groups than folds.

        Warns:
            UserWarning: when a group holds more rows than a fold should (n_samples / n_splits):
                its fold will be bigger than the others.
        """
        n_samples = _n_samples(X)
        if n_samples < self.n_splits:
            raise ValueError(
                f"n_splits={self.n_splits} is larger than the number of samples ({n_samples}): "
                f"lower n_splits to at most {n_samples}."
            )
        classes = None if y is None else self._classes(_check_column(y, "y", n_samples))
        if groups is not None:
            groups = _check_column(groups, "groups", n_samples)
            _check_enough_groups(self.n_splits, groups, "n_splits")
            _warn_oversized_groups(self.n_splits, groups)

        shuffle_kw = {"shuffle": self.shuffle, "random_state": self.random_state}
        if groups is not None:
            if classes is None:
                # One class for all rows: StratifiedGroupKFold then just balances fold sizes,
                # visiting groups in shuffled order (GroupKFold only learnt to shuffle in 1.6).
                classes = np.zeros(n_samples, dtype=np.int64)
            splits = StratifiedGroupKFold(self.n_splits, **shuffle_kw).split(np.zeros(n_samples), classes, groups)
        elif classes is not None:
            splits = StratifiedKFold(self.n_splits, **shuffle_kw).split(np.zeros(n_samples), classes)
        else:
            splits = KFold(self.n_splits, **shuffle_kw).split(np.zeros(n_samples))
        for train_idx, valid_idx in splits:
            yield np.asarray(train_idx, dtype=np.int64), np.asarray(valid_idx, dtype=np.int64)

    def _classes(self, y):
        """Map a label to integer classes: used as is when discrete, else binned."""
        if self.n_bins == 1:
            return np.zeros(len(y), dtype=np.int64)
        if y.dtype.kind not in "biuf":
            # Strings or other objects are categories: they have no order to bin along.
            return np.unique(y, return_inverse=True)[1]
        values, classes = np.unique(y, return_inverse=True)
        if len(values) <= self.n_bins:
            return classes
        y = y.astype(np.float64)
        if self.binning == "quantile":
            inner_edges = np.quantile(y, np.linspace(0, 1, self.n_bins + 1)[1:-1])
        else:
            inner_edges = np.linspace(y.min(), y.max(), self.n_bins + 1)[1:-1]
        bins = np.searchsorted(inner_edges, y, side="right")
        # Tied quantiles leave some bins empty: renumber so the classes are 0..k-1.
        return np.unique(bins, return_inverse=True)[1]


GroupBinnedKFold = StratifiedGroupKFoldBinned
"""Short alias of :class:`StratifiedGroupKFoldBinned`."""


def add_fold_column(
    df, *, n_folds=5, label_col="label", group_col="group", n_bins=5, seed=42, fold_col="fold"
) -> pd.DataFrame:
    """Return a copy of ``df`` with an int column giving each row's validation fold.

    Rows of one group share a fold and each fold's label distribution follows the whole frame's
    (see :class:`StratifiedGroupKFoldBinned`). The caller's frame is never modified; an existing
    ``fold_col`` is overwritten in the copy.

    Args:
        df: The training frame.
        n_folds: Number of folds, at least 2.
        label_col: Column to stratify on, or None to not stratify.
        group_col: Column whose values must not cross folds (e.g. ``"anchor"``), or None.
        n_bins: Number of bins a continuous label is cut into.
        seed: Random seed; the same seed always gives the same folds.
        fold_col: Name of the column to add.

    Returns:
        A new DataFrame, same index and columns as ``df`` plus ``fold_col`` holding 0..n_folds-1.

    Raises:
        ValueError: if a named column is missing, ``n_folds`` is invalid, or there are fewer groups
            than folds.

    Examples:
        >>> df = pd.DataFrame({"label": [0.0, 0.5, 1.0] * 4, "group": list("aabbccddeeff")})
        >>> add_fold_column(df, n_folds=3)["fold"].value_counts().sort_index().tolist()
        [4, 4, 4]
    """
    _check_n_splits(n_folds, "n_folds")
    check_columns(df, {"label_col": label_col, "group_col": group_col}, "df", fix=_COLUMN_FIX)
    y = None if label_col is None else _check_column(df[label_col].to_numpy(), f"column {label_col!r}", len(df))
    groups = None
    if group_col is not None:
        groups = _check_column(df[group_col].to_numpy(), f"column {group_col!r}", len(df))
        # Checked here too so the message names n_folds, the parameter this caller knows.
        _check_enough_groups(n_folds, groups, "n_folds")

    cv = StratifiedGroupKFoldBinned(n_folds, n_bins=n_bins, shuffle=True, random_state=seed)
    folds = np.full(len(df), -1, dtype=np.int64)
    for fold, (_, valid_idx) in enumerate(cv.split(np.zeros(len(df)), y, groups)):
        folds[valid_idx] = fold
    assert (folds >= 0).all(), "every row must land in exactly one validation fold"

    out = df.copy()
    out[fold_col] = folds
    return out


def fold_summary(df, fold_col="fold", label_col="label", group_col=None) -> pd.DataFrame:
    """Tabulate each fold's size, label mean and spread, and number of groups.

    Args:
        df: A frame with a fold column, e.g. from :func:`add_fold_column`.
        fold_col: Column holding the fold of each row.
        label_col: Label column to describe, or None to leave the label columns out.
        group_col: Group column to count distinct values of, or None to leave ``n_groups`` out.

    Returns:
        One row per fold (index ``fold_col``, sorted) with columns ``n_rows``, ``frac_rows``, and
        ``label_mean``/``label_std`` when ``label_col`` is given, ``n_groups`` when ``group_col``
        is given.

    Raises:
        ValueError: if a named column is missing.
    """
    check_columns(df, {"fold_col": fold_col, "label_col": label_col, "group_col": group_col}, "df", fix=_COLUMN_FIX)
    if fold_col is None:
        raise ValueError("fold_col=None is invalid: name the column that holds the folds.")
    by_fold = df.groupby(fold_col, sort=True)
    summary = pd.DataFrame({"n_rows": by_fold.size()})
    summary["frac_rows"] = summary["n_rows"] / len(df)
    if label_col is not None:
        summary["label_mean"] = by_fold[label_col].mean()
        summary["label_std"] = by_fold[label_col].std()
    if group_col is not None:
        summary["n_groups"] = by_fold[group_col].nunique()
    return summary


def _check_n_splits(n_splits, name):
    if not isinstance(n_splits, numbers.Integral) or isinstance(n_splits, bool) or n_splits < 2:
        raise ValueError(f"{name}={n_splits!r} is invalid: pass an int of at least 2.")


def _check_enough_groups(n_splits, groups, name):
    n_groups = len(pd.unique(groups))
    if n_splits > n_groups:
        raise ValueError(
            f"{name}={n_splits} is larger than the number of groups ({n_groups}): "
            f"lower {name} to at most {n_groups}, or group by a finer key."
        )


def _warn_oversized_groups(n_splits, groups):
    counts = pd.Series(groups).value_counts()  # sorted, largest first
    fold_size = len(groups) / n_splits
    n_oversized = int((counts > fold_size).sum())
    if n_oversized:
        others = n_oversized - 1
        and_others = f" (and {others} more group{'s' if others > 1 else ''})" if others else ""
        warnings.warn(
            f"group {counts.index[0]!r} has {counts.iloc[0]} rows{and_others}, more than a fold "
            f"should hold (n_samples / n_splits = {fold_size:g}): its fold will be larger than the "
            "others. Lower n_splits, or group by a finer key.",
            UserWarning,
            stacklevel=3,
        )


def _n_samples(X):
    if hasattr(X, "shape") and len(X.shape) > 0:
        return int(X.shape[0])
    try:
        return len(X)
    except TypeError:
        raise ValueError(f"X of type {type(X).__name__} has no length: pass an array-like of shape (n_samples, ...).")


def _check_column(values, name, n_samples):
    """Return ``values`` as a 1-D array of n_samples rows without missing values."""
    values = np.asarray(values)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values.ravel()
    if values.ndim != 1:
        raise ValueError(f"{name} has shape {values.shape}: pass a 1-D array of shape (n_samples,).")
    if len(values) != n_samples:
        raise ValueError(f"{name} has {len(values)} rows but X has {n_samples}: pass one value per row.")
    missing = pd.isna(values)
    if missing.any():
        raise ValueError(
            f"{name} holds {int(missing.sum())} NaN/missing value(s), first at row "
            f"{int(np.argmax(missing))}: drop or fill those rows first."
        )
    return values
