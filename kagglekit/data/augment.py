"""Training-row augmentation for text-pair data: transitive closure, swapped copies, weighted extra rows.

From the GAIIC 2021 and AFQMC winners. Every function here reads and returns the *training* rows of
one fold only (the caller's frames are never modified), so nothing built from them reaches the
validation fold.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from kagglekit._frames import check_columns

__all__ = ["closure_pairs", "swap_pairs", "merge_extra", "augment_training_rows", "COPIED_COLUMNS"]

# Columns a closure row copies from its representative row (see closure_pairs); every other column
# that is not id/text/label (the numeric features) is left NaN, since its value belongs to a pair
# that does not exist in the files: recompute them (kagglekit.data.features.CooccurrenceGraph).
COPIED_COLUMNS = ("group", "fold", "weight")


def closure_pairs(frame: pd.DataFrame, *, max_new: int | None = None, ratio: float | None = None, seed: int = 0,
                  label_col: str = "label") -> tuple[pd.DataFrame, dict]:
    """New rows implied by the transitive closure of a binary-labelled pair frame.

    Texts are nodes and positive rows (label 1) edges; the connected components of that graph are
    equivalence classes. Within a component every pair of texts that is not already a row (in
    either order) becomes a positive row. For a negative row (a, b), every (a', b') with a' in
    comp(a) and b' in comp(b) becomes a negative row, unless already a row. A negative row whose
    two texts share a component is a *conflict*: it is counted and generates nothing.

    Order is deterministic: texts are numbered by first appearance (row by row, text_a then text_b);
    positives come first, by component then by text number (text_a is the earlier text); negatives
    follow, by the first negative row linking the two components, oriented as that row.

    Each new row copies ``group``, ``fold`` and ``weight`` (those present) from its *representative
    row*: the first row of the frame touching the component of the new row's text_a. Numeric feature
    columns are NaN (see ``COPIED_COLUMNS``). Ids are ``aug:<n>``, n = 0, 1, ... in the kept order.

    Candidates grow with the square of component sizes: every candidate is built before the cap
    samples them (about 30M pairs, 4 s and ~1.5 GB when random data forms one giant component;
    AFQMC-like data with small classes takes well under a second). ``report["candidates"]`` shows it.

    Args:
        frame: normalized frame with ``id, text_a, text_b`` and a 0/1 ``label_col``.
        max_new: keep at most this many new rows; None for no absolute cap.
        ratio: keep at most ``int(ratio * len(frame))`` new rows; None for no relative cap. Give at
            most one of ``max_new`` and ``ratio``.
        seed: seed of the sample drawn when the candidates exceed the cap. The sample keeps the
            positive/negative proportion of the candidates and their order.
        label_col: the label column.

    Returns:
        ``(new_rows, report)``: the new rows only (same columns as ``frame``) and a dict with
        ``positives_added, negatives_added, candidates, components, conflicts, capped``.

    Examples:
        >>> df = pd.DataFrame({"id": ["0", "1"], "text_a": ["a", "b"], "text_b": ["b", "c"], "label": [1, 1]})
        >>> new, report = closure_pairs(df)
        >>> new[["id", "text_a", "text_b", "label"]].values.tolist()
        [['aug:0', 'a', 'c', 1]]
    """
    check_columns(frame, ("id", "text_a", "text_b", label_col), "frame")
    cap = _cap(max_new, ratio, len(frame))
    labels = _binary_labels(frame[label_col])

    # Node numbers by first appearance: interleave text_a and text_b row by row.
    both = np.column_stack([frame["text_a"].to_numpy(dtype=object), frame["text_b"].to_numpy(dtype=object)]).ravel()
    codes, texts = pd.factorize(both, sort=False)
    codes = codes.reshape(-1, 2)  # (R, 2)
    a, b = codes[:, 0].astype(np.int64), codes[:, 1].astype(np.int64)
    n = len(texts)

    pos = labels == 1
    graph = coo_matrix((np.ones(int(pos.sum())), (a[pos], b[pos])), shape=(n, n))
    n_comp, comp = connected_components(graph, directed=False)
    # Components renumbered by first appearance too, so the output order follows the frame.
    first_node = np.full(n_comp, n, dtype=np.int64)
    np.minimum.at(first_node, comp, np.arange(n))
    comp = np.argsort(np.argsort(first_node, kind="stable"), kind="stable")[comp]
    # Representative row of each component: the first row touching it.
    rep_row = np.full(n_comp, len(frame), dtype=np.int64)
    rows = np.arange(len(frame))
    np.minimum.at(rep_row, comp[a], rows)
    np.minimum.at(rep_row, comp[b], rows)

    existing = set(_pair_keys(a, b, n).tolist())
    members = _members(comp, n_comp)  # component -> sorted node numbers

    # Positives: all pairs inside each component of 2+ texts.
    pos_a, pos_b = [], []
    for c in np.flatnonzero(np.bincount(comp, minlength=n_comp) > 1):
        m = members[c]
        i, j = np.triu_indices(len(m), k=1)
        pos_a.append(m[i])
        pos_b.append(m[j])
    pos_a, pos_b = _drop_existing(_cat(pos_a), _cat(pos_b), existing, n)

    # Negatives: one product per (comp(a), comp(b)) link, in the order of the first negative row.
    neg = np.flatnonzero(labels == 0)
    ca, cb = comp[a[neg]], comp[b[neg]]
    conflicts = int((ca == cb).sum())
    neg_a, neg_b, seen = [], [], set()
    sizes = np.bincount(comp, minlength=n_comp)
    for x, y in zip(ca[ca != cb].tolist(), cb[ca != cb].tolist()):
        key = (min(x, y), max(x, y))
        if key in seen or sizes[x] * sizes[y] == 1:  # two singletons: only the row itself
            continue
        seen.add(key)
        mx, my = members[x], members[y]
        neg_a.append(np.repeat(mx, len(my)))
        neg_b.append(np.tile(my, len(mx)))
    neg_a, neg_b = _drop_existing(_cat(neg_a), _cat(neg_b), existing, n)

    candidates = len(pos_a) + len(neg_a)
    capped = cap is not None and candidates > cap
    if capped:
        rng = np.random.default_rng(seed)
        keep_pos = int(round(cap * len(pos_a) / candidates))
        keep_neg = cap - keep_pos
        kp = np.sort(rng.choice(len(pos_a), keep_pos, replace=False))
        kn = np.sort(rng.choice(len(neg_a), keep_neg, replace=False))
        pos_a, pos_b, neg_a, neg_b = pos_a[kp], pos_b[kp], neg_a[kn], neg_b[kn]

    new_a = np.concatenate([pos_a, neg_a])
    new_b = np.concatenate([pos_b, neg_b])
    new_label = np.concatenate([np.ones(len(pos_a)), np.zeros(len(neg_a))])
    new = _new_rows(frame, label_col, texts, new_a, new_b, new_label, rep_row[comp[new_a]])
    report = {
        "positives_added": len(pos_a), "negatives_added": len(neg_a), "candidates": candidates,
        "components": int(n_comp), "conflicts": conflicts, "capped": bool(capped),
    }
    return new, report


def swap_pairs(frame: pd.DataFrame) -> pd.DataFrame:
    """Copies of the rows with text_a and text_b exchanged, for symmetric tasks.

    Direction-dependent columns follow the ``*_a``/``*_b`` naming convention: every column
    ``X_a`` that has a partner ``X_b`` is exchanged with it (``text_a``/``text_b`` included, so
    ``freq_a``/``freq_b``, ``degree_a``/``degree_b`` ... swap too); every other column is copied
    (``group`` and ``fold`` stay those of the source row). Ids are ``swap:<id>``. Rows whose two texts
    are equal, or whose swapped pair is already a row, are left out: they would be duplicates.

    Args:
        frame: normalized frame.

    Returns:
        The swapped copies only, same columns as ``frame``, fresh RangeIndex.

    Examples:
        >>> df = pd.DataFrame({"id": ["7"], "text_a": ["x"], "text_b": ["y"], "freq_a": [2.0], "freq_b": [5.0]})
        >>> swap_pairs(df).values.tolist()
        [['swap:7', 'y', 'x', 5.0, 2.0]]
    """
    check_columns(frame, ("id", "text_a", "text_b"), "frame")
    ordered = set(zip(frame["text_a"].tolist(), frame["text_b"].tolist()))
    keep = [a != b and (b, a) not in ordered for a, b in zip(frame["text_a"].tolist(), frame["text_b"].tolist())]
    out = frame.loc[np.asarray(keep, dtype=bool)].reset_index(drop=True)
    renames = {}
    for column in frame.columns:
        if isinstance(column, str) and column.endswith("_a") and column[:-2] + "_b" in frame.columns:
            renames[column], renames[column[:-2] + "_b"] = column[:-2] + "_b", column
    out = out.rename(columns=renames)[list(frame.columns)]
    out["id"] = "swap:" + out["id"].astype(str)
    return out


def merge_extra(train_df: pd.DataFrame, extra_df: pd.DataFrame, *, weight: float) -> pd.DataFrame:
    """Training rows plus extra rows (pseudo labels, external data), with a per-row loss ``weight``.

    The result has ``train_df``'s columns plus ``weight``: 1.0 for the original rows (or their own
    ``weight`` if they already have one) and ``weight`` for the extra rows. Only ``train_df`` is
    extended, so extra rows never reach a validation fold. ``extra_df`` needs every column of
    ``train_df`` except ``group`` (filled with its text_a, the USPPPM convention) and ``fold``
    (filled with -1, a fold that is never validated); its other columns are dropped.

    Args:
        train_df: the fold's training rows.
        extra_df: the extra rows, in the normalized frame's columns.
        weight: loss weight of the extra rows, finite and > 0 (e.g. 0.5 for pseudo labels).

    Returns:
        A new frame, train rows first, fresh RangeIndex.

    Raises:
        ValueError: on a bad weight, a missing column, or an extra id that is already a training id.

    Examples:
        >>> train = pd.DataFrame({"id": ["1"], "text_a": ["a"], "text_b": ["b"], "label": [1.0]})
        >>> extra = pd.DataFrame({"id": ["p1"], "text_a": ["c"], "text_b": ["d"], "label": [0.0]})
        >>> merge_extra(train, extra, weight=0.5)["weight"].tolist()
        [1.0, 0.5]
    """
    if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight <= 0:
        raise ValueError(f"weight={weight!r} is invalid: pass a finite number > 0 (e.g. extra_weight=0.5).")
    extra = extra_df.copy()
    if "group" in train_df.columns and "group" not in extra.columns and "text_a" in extra.columns:
        extra["group"] = extra["text_a"]
    if "fold" in train_df.columns and "fold" not in extra.columns:
        extra["fold"] = -1
    needed = [c for c in train_df.columns if c != "weight"]
    check_columns(extra, needed, "extra_df")
    clash = set(extra["id"].astype(str)) & set(train_df["id"].astype(str))
    if clash:
        raise ValueError(
            f"extra_df: {len(clash)} id(s) are already training ids, e.g. {sorted(clash)[:5]}: "
            "prefix the extra ids (e.g. 'pseudo:<id>') so every id is unique."
        )
    train = train_df.copy()
    if "weight" not in train.columns:
        train["weight"] = 1.0
    extra = extra[needed].assign(weight=float(weight))
    return pd.concat([train, extra[list(train.columns)]], ignore_index=True)


def augment_training_rows(train_df: pd.DataFrame, valid_df: pd.DataFrame, *, closure: bool, swap: bool,
                          max_new: int | None = None, ratio: float | None = None, seed: int = 0) -> tuple[pd.DataFrame, dict]:
    """One fold's training rows with closure rows and/or swapped copies added.

    The closure is computed on ``train_df`` alone, so no new row holds a text that only validation
    rows have, however the validation texts link to training texts; this is checked before
    returning. Swapped copies are made after the closure, of original and closure rows alike.

    Args:
        train_df: the fold's training rows (binary 0/1 ``label`` when ``closure``).
        valid_df: the fold's validation rows: only read, for the checks and the report.
        closure: add transitive-closure rows (:func:`closure_pairs`).
        swap: add text_a/text_b swapped copies (:func:`swap_pairs`).
        max_new, ratio, seed: the closure cap, see :func:`closure_pairs`.

    Returns:
        ``(rows, report)``: ``train_df``'s rows first then the new ones, fresh RangeIndex; the
        closure report (empty without closure) plus ``swapped`` and ``valid_pairs_inferred`` (new
        closure rows whose pair is also a validation row: the training labels imply them).

    Examples:
        >>> train = pd.DataFrame({"id": ["0", "1"], "text_a": ["a", "b"], "text_b": ["b", "c"], "label": [1, 1]})
        >>> valid = pd.DataFrame({"id": ["2"], "text_a": ["c"], "text_b": ["z"], "label": [1]})
        >>> rows, report = augment_training_rows(train, valid, closure=True, swap=False)
        >>> rows["id"].tolist()
        ['0', '1', 'aug:0']
    """
    parts, report = [train_df], {}
    if closure:
        new, report = closure_pairs(train_df, max_new=max_new, ratio=ratio, seed=seed)
        known = pd.unique(train_df[["text_a", "text_b"]].to_numpy().ravel())
        assert new["text_a"].isin(known).all() and new["text_b"].isin(known).all(), "closure rows use training texts only"
        report["valid_pairs_inferred"] = int(repeats_pairs(new, valid_df).sum())
        parts.append(new)
    if swap:
        swapped = swap_pairs(pd.concat(parts, ignore_index=True))
        report["swapped"] = len(swapped)
        parts.append(swapped)
    rows = pd.concat(parts, ignore_index=True)
    assert not set(rows["id"].astype(str)) & set(valid_df["id"].astype(str)), "no validation id among training rows"
    return rows, report


# ----------------------------------------------------------------------------------------- helpers


def repeats_pairs(rows: pd.DataFrame, others: pd.DataFrame) -> pd.Series:
    """Whether each row's pair (text_a, text_b), in either order, is also a pair of `others`."""
    seen = set(zip(others["text_a"], others["text_b"])) | set(zip(others["text_b"], others["text_a"]))
    return pd.Series([pair in seen for pair in zip(rows["text_a"], rows["text_b"])], index=rows.index, dtype=bool)


def _cap(max_new, ratio, n_rows: int) -> int | None:
    if max_new is not None and ratio is not None:
        raise ValueError(f"max_new={max_new!r} and ratio={ratio!r}: give at most one cap, set the other to None.")
    if max_new is not None:
        if isinstance(max_new, bool) or not isinstance(max_new, (int, np.integer)) or max_new < 0:
            raise ValueError(f"max_new={max_new!r} is invalid: pass an int >= 0, or None for no cap.")
        return int(max_new)
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not np.isfinite(ratio) or ratio < 0:
            raise ValueError(f"ratio={ratio!r} is invalid: pass a number >= 0 (new rows per original row), or None.")
        return int(ratio * n_rows)
    return None


def _binary_labels(labels: pd.Series) -> np.ndarray:
    values = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    bad = ~np.isin(values, (0.0, 1.0))
    if bad.any():
        shown = labels[bad].head(5).tolist()
        raise ValueError(
            f"closure needs binary labels 0/1 in column {labels.name!r}; {int(bad.sum())} row(s) are not, e.g. {shown}: "
            "turn closure off for this task, or binarise the label first."
        )
    return values.astype(np.int64)


def _pair_keys(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """One int64 per unordered pair of node numbers."""
    return np.minimum(a, b) * n + np.maximum(a, b)


def _drop_existing(a: np.ndarray, b: np.ndarray, existing: set, n: int) -> tuple[np.ndarray, np.ndarray]:
    if len(a) == 0:
        return a, b
    keep = ~np.isin(_pair_keys(a, b, n), np.fromiter(existing, dtype=np.int64, count=len(existing)))
    return a[keep], b[keep]


def _members(comp: np.ndarray, n_comp: int) -> list[np.ndarray]:
    order = np.argsort(comp, kind="stable")  # node numbers ascending within each component
    bounds = np.cumsum(np.bincount(comp, minlength=n_comp))[:-1]
    return np.split(order, bounds)


def _cat(parts: list) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)


def _new_rows(frame, label_col, texts, new_a, new_b, new_label, rep_rows) -> pd.DataFrame:
    data = {}
    for column in frame.columns:
        if column == "id":
            data[column] = [f"aug:{i}" for i in range(len(new_a))]
        elif column == "text_a":
            data[column] = np.asarray(texts, dtype=object)[new_a]
        elif column == "text_b":
            data[column] = np.asarray(texts, dtype=object)[new_b]
        elif column == label_col:
            data[column] = new_label.astype(frame[label_col].dtype)
        elif column in COPIED_COLUMNS:
            data[column] = frame[column].to_numpy()[rep_rows]
        else:
            data[column] = np.full(len(new_a), np.nan)
    return pd.DataFrame(data, columns=frame.columns)
