"""The report's plots: learning curves, OOF against labels, score per fold, a blend's weights (PNG, headless).

Each takes a run's name in the report, its folder and its run card, and writes one file atomically;
matplotlib loads on the first plot, not at import.
"""

from __future__ import annotations

from pathlib import Path

from kagglekit._io import atomic_path, read_csv
from kagglekit.run import OOF_FILE, RunFolder


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)  # headless: notebooks and CI have no display
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return path


def plot_learning_curves(name: str, path: Path, card: dict, out_dir: Path) -> list[Path]:
    """``curve_fold{K}.png`` (``curve_fold{K}-seed{S}.png``) for each fold folder with a ``train_log.csv`` (loss and
    validation score per step)."""
    from kagglekit.train.curves import LOG_FILE, plot_curve

    paths = []
    for folder in RunFolder(path).fold_dirs(complete=False):
        log = folder / LOG_FILE
        if log.is_file():
            frame = read_csv(log, what=f"{name}/{folder.name}/{LOG_FILE}", required=("step", "loss", "score"))
            paths.append(plot_curve(frame, out_dir / f"curve_{folder.name}.png",
                                    metric=card.get("metric", "score"), title=f"{name}: {folder.name}"))
    return paths


def plot_oof(name: str, path: Path, card: dict, out_dir: Path) -> Path | None:
    """``oof.png``: out-of-fold predictions against labels (scatter, mean per label) and both histograms."""
    oof_path = RunFolder(path).oof_path
    if not oof_path.is_file():
        return None
    import numpy as np

    oof = read_csv(oof_path, what=f"{name}/{OOF_FILE}", required=("label", "pred"))
    label, pred = oof["label"].to_numpy(float), oof["pred"].to_numpy(float)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    values = np.unique(label)
    x = label
    if 1 < len(values) <= 20:  # discrete labels: spread the points sideways so the columns show their density
        gap = float(np.diff(values).min())
        x = label + np.random.default_rng(0).uniform(-0.15, 0.15, len(label)) * gap
        means = [pred[label == v].mean() for v in values]
        left.plot(values, means, "D-", color="tab:red", label="mean pred per label")
        left.legend(fontsize=8, loc="upper left")
    left.scatter(x, pred, s=6, alpha=0.3, color="tab:blue")
    left.set_xlabel("label")
    left.set_ylabel("OOF prediction")
    left.set_title(f"{name}: OOF {card.get('metric', '')} {float(card['cv']):.4f}")
    bins = np.histogram_bin_edges(np.concatenate([label, pred]), bins=40)
    right.hist(label, bins=bins, alpha=0.5, color="tab:green", label="label")
    right.hist(pred, bins=bins, alpha=0.5, color="tab:blue", label="prediction")
    right.set_xlabel("value")
    right.set_ylabel("rows")
    right.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, out_dir / "oof.png")


def plot_fold_scores(name: str, path: Path, card: dict, out_dir: Path) -> Path:
    """``folds.png``: each fold's score as a bar, the CV as a dashed line."""
    folds = sorted(card["folds"].items(), key=lambda kv: int(kv[0]))
    scores = [float(f["score"]) for _, f in folds]
    cv = float(card["cv"])
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    low, high = min(scores + [cv]), max(scores + [cv])
    pad = max(0.15 * (high - low), 0.01)
    floor = low - pad  # bars rise from just below the lowest score, not from 0: folds differ in the third decimal
    bars = ax.bar([f"fold {k}" for k, _ in folds], [s - floor for s in scores], bottom=floor, color="tab:blue")
    ax.bar_label(bars, labels=[f"{s:.4f}" for s in scores], fontsize=8)
    ax.axhline(cv, color="tab:red", linestyle="--", label=f"CV {cv:.4f}")
    ax.set_ylim(floor, high + pad)
    ax.set_ylabel(card.get("metric", "score"))
    ax.set_title(f"{name}: score per fold")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, out_dir / "folds.png")


def plot_weights(spec: dict, path: Path, *, title: str) -> Path:
    """A blend's weights as bars, largest first, each run's own CV under its name."""
    runs = sorted(spec["runs"], key=lambda r: -float(r["weight"]))
    names = [r["name"] + (f"\nCV {float(r['cv']):.4f}" if r.get("cv") is not None else "") for r in runs]
    weights = [float(r["weight"]) for r in runs]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(runs) + 2), 4), dpi=100)
    bars = ax.bar(names, weights, color="tab:purple")
    ax.bar_label(bars, labels=[f"{w:.3f}" for w in weights], fontsize=8)
    ax.set_ylim(0, max(weights) * 1.15)
    ax.set_ylabel("weight")
    cv = f", {spec.get('metric', '')} CV {float(spec['cv']):.4f}" if spec.get("cv") is not None else ""
    ax.set_title(f"{title}: {spec.get('method', '')}{cv}")
    fig.tight_layout()
    return _save(fig, path)
