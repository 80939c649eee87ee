"""A fold's training log: one row per optimizer step (CSV) and the learning curve (PNG).

Both are written into the fold folder after every evaluation, so a fold that stops early, diverges
or is killed still shows how far it got.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from kagglekit._io import atomic_path, write_csv

LOG_FILE = "train_log.csv"
CURVE_FILE = "learning_curve.png"
LOG_COLUMNS = ("step", "epoch", "loss", "lr", "score")  # score: only on rows where an evaluation ran


def write_log(folder: str | os.PathLike, rows: list[dict], *, metric: str) -> None:
    """Write the step log and the learning curve into `folder` (atomically, each file)."""
    folder = Path(folder)
    frame = pd.DataFrame(rows, columns=list(LOG_COLUMNS))
    write_csv(folder / LOG_FILE, frame)
    plot_curve(frame, folder / CURVE_FILE, metric=metric)


def plot_curve(frame: pd.DataFrame, path: str | os.PathLike, *, metric: str, title: str = "") -> Path:
    """Training loss (raw and smoothed) and the validation score against the optimizer step."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: notebooks and CI have no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    steps, loss = frame["step"].to_numpy(), frame["loss"].to_numpy(dtype=float)
    ax.plot(steps, loss, color="tab:blue", alpha=0.3, linewidth=0.8, label="train loss")
    if len(loss) >= 5:
        window = max(1, len(loss) // 20)
        smooth = pd.Series(loss).rolling(window, min_periods=1).mean().to_numpy()
        ax.plot(steps, smooth, color="tab:blue", linewidth=1.5, label=f"train loss (mean of {window})")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    scored = frame.dropna(subset=["score"])
    if len(scored):
        right = ax.twinx()
        right.plot(scored["step"], scored["score"], "o-", color="tab:orange", label=f"valid {metric}")
        right.set_ylabel(f"valid {metric}")
        handles = ax.get_legend_handles_labels()[0] + right.get_legend_handles_labels()[0]
        ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
