"""Co-occurrence features of text pairs: text frequencies and pair-graph statistics, label-free.

The "magic features" of Quora Question Pairs, AFQMC and similar: built from the texts of train and
test together and never from the labels, so a validation fold learns nothing from its own labels.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components

from kagglekit._frames import check_columns
from kagglekit.config import COOCCURRENCE_FEATURES, EMBEDDING_FEATURES

__all__ = ["FEATURE_NAMES", "CooccurrenceGraph", "cooccurrence_features"]

FEATURE_NAMES = COOCCURRENCE_FEATURES  # declared with the config keys


class CooccurrenceGraph:
    """The pair graph of some frames: texts are nodes, every row an edge between its two texts.

    Texts are compared as exact strings. Features of a pair (a, b):

    * ``freq_a``, ``freq_b``: how many times the text occurs over all rows, either side (a row
      whose two texts are equal counts twice);
    * ``degree_a``, ``degree_b``: the number of *distinct* other texts it is paired with (repeated
      rows and self-pairs do not add to it, unlike freq);
    * ``common_neighbours``: texts paired with both a and b;
    * ``component_size``: number of texts in the connected component of a (which holds b when the
      pair is a row of the graph);
    * ``jaccard``: common_neighbours / |N(a) ∪ N(b)|, 0 when both are empty.

    A text the graph has never seen has freq 0, degree 0 and component size 1. Use ``transform``
    for pairs that are not rows of the graph (closure-augmented rows): their features are read
    from the graph as it is, without adding them.

    Args:
        frames: frames with ``text_a`` and ``text_b`` columns (None entries are skipped).

    Examples:
        >>> df = pd.DataFrame({"text_a": ["a", "a"], "text_b": ["b", "c"]})
        >>> CooccurrenceGraph(df).transform(df)["common_neighbours"].tolist()
        [0.0, 0.0]
    """

    def __init__(self, *frames: pd.DataFrame | None):
        frames = [f for f in frames if f is not None]
        for i, f in enumerate(frames):
            check_columns(f, ("text_a", "text_b"), f"frame {i}")
        sides = [f[c].to_numpy(dtype=object) for f in frames for c in ("text_a", "text_b")]
        texts = np.concatenate(sides) if sides else np.zeros(0, dtype=object)
        codes, uniques = pd.factorize(texts, sort=False)
        self.index = pd.Index(uniques)
        n = len(uniques)
        # Sides were stacked [a of f0, b of f0, a of f1, b of f1, ...]: rebuild a/b per row.
        a_parts, b_parts, start = [], [], 0
        for f in frames:
            a_parts.append(codes[start:start + len(f)])
            b_parts.append(codes[start + len(f):start + 2 * len(f)])
            start += 2 * len(f)
        assert start == len(codes)
        a = np.concatenate(a_parts) if a_parts else np.zeros(0, dtype=np.int64)
        b = np.concatenate(b_parts) if b_parts else np.zeros(0, dtype=np.int64)
        self.freq = np.bincount(np.concatenate([a, b]), minlength=n).astype(np.float64)  # (N,)
        off = a != b
        adj = coo_matrix((np.ones(2 * int(off.sum())), (np.r_[a[off], b[off]], np.r_[b[off], a[off]])), shape=(n, n)).tocsr()
        adj.data[:] = 1.0  # duplicate rows were summed: a neighbour counts once
        self.adjacency: csr_matrix = adj  # (N, N), symmetric 0/1, no diagonal
        self.degree = np.asarray(adj.sum(axis=1)).ravel()  # (N,)
        _, comp = connected_components(adj, directed=False)
        self.component_size = np.bincount(comp)[comp].astype(np.float64) if n else np.zeros(0)  # (N,)

    def transform(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The features of each row of ``frame``, as float64 columns ``FEATURE_NAMES``, same index."""
        check_columns(frame, ("text_a", "text_b"), "frame")
        a = self.index.get_indexer(frame["text_a"].to_numpy(dtype=object))  # (R,), -1 if unseen
        b = self.index.get_indexer(frame["text_b"].to_numpy(dtype=object))
        seen_a, seen_b = a >= 0, b >= 0

        def per_text(values, idx, seen, missing):
            return np.where(seen, values[np.where(seen, idx, 0)] if len(values) else missing, missing)

        both = seen_a & seen_b
        common = np.zeros(len(frame))
        if both.any():
            rows_a = self.adjacency[a[both]]  # (R', N)
            rows_b = self.adjacency[b[both]]
            common[both] = np.asarray(rows_a.multiply(rows_b).sum(axis=1)).ravel()
        deg_a, deg_b = per_text(self.degree, a, seen_a, 0.0), per_text(self.degree, b, seen_b, 0.0)
        union = deg_a + deg_b - common
        out = {
            "freq_a": per_text(self.freq, a, seen_a, 0.0),
            "freq_b": per_text(self.freq, b, seen_b, 0.0),
            "degree_a": deg_a,
            "degree_b": deg_b,
            "common_neighbours": common,
            "component_size": per_text(self.component_size, a, seen_a, 1.0),
            "jaccard": np.divide(common, union, out=np.zeros(len(frame)), where=union > 0),
        }
        return pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in out.items()}, index=frame.index)


def cooccurrence_features(train: pd.DataFrame, test: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Co-occurrence features of every row of train and of test, from the texts of both.

    Labels are never read. Counting test texts is standard (transductive) practice in these
    competitions and leaks no label; it does make a model trained on them expect the same test
    file at prediction time, so compute them again from the same train + test for inference.

    Args:
        train: frame with ``text_a``, ``text_b``.
        test: the test frame, or None to use train alone.

    Returns:
        ``(train_features, test_features)``: float64 frames with the columns ``FEATURE_NAMES``, one
        row per input row in the same order and index; ``test_features`` is None without test.
        Join them onto the frames and list the names in ``feature_columns``.

    Examples:
        >>> train = pd.DataFrame({"text_a": ["a", "b"], "text_b": ["b", "c"], "label": [1, 0]})
        >>> feats, _ = cooccurrence_features(train)
        >>> feats[["freq_a", "degree_b", "common_neighbours", "component_size"]].values.tolist()
        [[1.0, 2.0, 0.0, 3.0], [2.0, 1.0, 0.0, 3.0]]
    """
    graph = CooccurrenceGraph(train, test)
    return graph.transform(train), (None if test is None else graph.transform(test))


class ComputedFeatures:
    """The numeric features the kit computes for any pair, so that new pairs (closure, swap, extra
    rows, test rows) get them exactly as the training rows did.

    Args:
        graph: a `CooccurrenceGraph` (``cooccurrence=true``), or None.
        embedder: a `kagglekit.models.embeddings.TextEmbedder` (``embedding_model``), or None.
    """

    def __init__(self, graph: CooccurrenceGraph | None = None, embedder=None):
        self.graph, self.embedder = graph, embedder

    def add(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Set the feature columns of `frame` in place (and return it)."""
        check_columns(frame, ("text_a", "text_b"), "frame")
        if self.graph is not None:
            frame[list(FEATURE_NAMES)] = self.graph.transform(frame).to_numpy()
        if self.embedder is not None:
            frame[list(EMBEDDING_FEATURES)] = self.embedder.transform(frame)
        return frame
