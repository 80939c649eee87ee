"""How predict shares its model folders out over devices when there are more devices than folders.

With at least as many folders as devices, each device takes whole folders (predict's queue). With
fewer, a device would sit idle while another predicts a large model alone: the one-LLM submission
on Kaggle's T4×2. Then each folder is cut into parts, one per device, each part a copy of the model
on its own device:

- with ``tta="swap"`` the given text order on one device and the swapped order on the other (each
  part predicts every row once, the same work as splitting rows, and no row is cut off from its
  twin);
- otherwise every row once, in shards of the length-sorted rows: shard k takes rows k, k + n,
  k + 2n, ... of the length order, so each shard holds rows of every length and the same number of
  tokens within one row's length.

`plan_parts` decides, `shard_rows` picks a shard's rows, `join_parts` puts the parts' logits back in
row order. A part's predictions equal the whole folder's on those rows (up to float rounding of a
batch's padding), so the submission is the one a single device writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from kagglekit.data.batching import predict_order

__all__ = ["Part", "join_parts", "plan_parts", "shard_rows"]


@dataclass(frozen=True)
class Part:
    """One device's share of one model folder: some text orders, one shard of the rows."""

    folder: int  # index of the folder in predict's list
    views: tuple[bool, ...]  # the text orders it predicts: False the given one, True the swapped one
    shard: int = 0  # which shard of the length-sorted rows
    shards: int = 1  # into how many shards the rows are cut (1: all rows)

    def describe(self) -> str:
        order = {(False,): "the given text order", (True,): "the swapped text order"}.get(self.views, "both text orders")
        rows = "every row" if self.shards == 1 else f"rows {self.shard}, {self.shard + self.shards}, ... of the length order"
        return f"{order}, {rows}"


def plan_parts(n_folders: int, n_devices: int, tta: str = "none") -> list[Part]:
    """The parts predict runs, one per worker at most: whole folders, unless devices outnumber folders.

    Args:
        n_folders: model folders to predict.
        n_devices: devices, one worker each.
        tta: none | swap (both text orders).

    Returns:
        Whole folders (one part each, every view and row) when ``n_devices <= n_folders``; otherwise
        ``n_devices // n_folders`` parts per folder: with swap TTA first by text order, then by rows.

    Example:
        >>> [p.views for p in plan_parts(1, 2, "swap")]
        [(False,), (True,)]
        >>> [(p.shard, p.shards) for p in plan_parts(1, 2)]
        [(0, 2), (1, 2)]
    """
    for name, value in (("n_folders", n_folders), ("n_devices", n_devices)):
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if name == "n_folders" else 1):
            raise ValueError(f"{name} must be a count ({'0' if name == 'n_folders' else '1'} or more), got {name}={value!r}.")
    views = (False, True) if tta == "swap" else (False,)
    if n_devices <= n_folders or n_folders == 0:
        return [Part(i, views) for i in range(n_folders)]
    per = n_devices // n_folders
    parts = []
    for i in range(n_folders):
        if len(views) == 2 and per >= 2:
            parts += [Part(i, (view,), k, per // 2) for view in views for k in range(per // 2)]
        else:
            parts += [Part(i, views, k, per) for k in range(per)]
    return parts


def shard_rows(lengths: np.ndarray, shard: int, shards: int) -> np.ndarray:
    """Row indices of one shard, ascending: every `shards`-th row of the length order, from the `shard`-th.

    Example:
        >>> shard_rows(np.array([5, 1, 4, 2, 3]), 0, 2)  # length order: rows 1, 3, 4, 2, 0
        array([0, 1, 4])
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} of {shards}: a shard is 0 to shards - 1.")
    return np.sort(predict_order(np.asarray(lengths))[shard::shards])


def join_parts(n_rows: int, pieces: Sequence[tuple[bool, np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """One folder's logits per view (the given order, then the swapped one), from its parts' pieces.

    Args:
        n_rows: test rows.
        pieces: (view, row indices, logits of those rows) from every part of the folder.

    Raises:
        ValueError: a view's rows are not each covered exactly once (a planning fault, never the user's).
    """
    out = []
    for view in sorted({view for view, _, _ in pieces}):
        mine = [(rows, logits) for v, rows, logits in pieces if v == view]
        rows = np.concatenate([r for r, _ in mine]) if mine else np.empty(0, dtype=np.int64)
        if len(rows) != n_rows or (n_rows and not np.array_equal(np.sort(rows), np.arange(n_rows))):
            raise ValueError(f"predict's parts cover {len(rows)} rows of {n_rows} in the {'swapped' if view else 'given'} "
                             "order, not each row once: a fault in kagglekit; predict on one device (--device cuda:0) meanwhile.")
        first = mine[0][1]
        full = np.empty((n_rows, *first.shape[1:]), dtype=first.dtype)
        for r, logits in mine:
            full[r] = logits
        out.append(full)
    return out
