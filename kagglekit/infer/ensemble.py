"""Ensemble: blend weights for several runs, fitted on their out-of-fold predictions; weights.json.

The runs' ``oof.csv`` are aligned by id (same rows, folds and labels); the weights are non-negative,
sum to 1 and maximise the runs' CV metric. This module writes weights.json and reads it back for
``kagglekit predict --weights`` (checked, and matched to the runs by path or name). Heavy libraries
are imported when a command runs, so ``kagglekit --help`` stays instant.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from kagglekit.run import RunFolder, run_id

if TYPE_CHECKING:
    from kagglekit.metrics import Metric

METHODS = ("scipy", "hill")
# Rank averaging throws the predictions' scale away: only metrics that ignore the scale may read it.
RANK_METRICS = ("pearson", "spearman", "roc_auc")
_SHOWN = 5  # example ids in an error message
_TOL = 1e-12  # a move must improve the metric by more than this


@dataclass
class OofTable:
    """The runs' out-of-fold predictions on the same rows, in the first run's row order."""

    names: list[str]  # run folder basenames
    paths: list[str]  # run folders as given
    ids: np.ndarray  # (N,)
    folds: np.ndarray  # (N,)
    labels: np.ndarray  # (N,)
    preds: np.ndarray  # (N, R): one column per run, in the label's space
    metric: "Metric"


def run_name(path: str | os.PathLike) -> str:
    """A run's name: its folder's basename (``runs/minilm/`` → ``minilm``)."""
    return Path(os.path.abspath(path)).name


def rank_normalise(values) -> np.ndarray:
    """Ranks scaled into (0, 1]: rank / N, ties sharing their average rank. Shape (N,) → (N,)."""
    from scipy.stats import rankdata

    values = np.asarray(values, dtype=np.float64)
    return rankdata(values, method="average") / len(values)


def load_oof(run_dirs: Sequence[str | os.PathLike]) -> OofTable:
    """Read and align the runs' ``oof.csv`` by id; the runs must cover the same ids, folds and labels.

    Args:
        run_dirs: run folders written by ``kagglekit train`` (each with ``oof.csv`` and ``run.json``).

    Returns:
        The aligned table; its metric is the runs' common CV metric (``run.json``).
    """
    from kagglekit.metrics import get_metric

    if len(run_dirs) < 2:
        raise ValueError(f"ensemble: give at least two run folders to blend, got {[str(r) for r in run_dirs]}.")
    paths = [str(r) for r in run_dirs]
    where: dict[Path, str] = {}
    for path in paths:  # two spellings of one folder (runs/./a, a symbolic link) are one run
        real = Path(path).resolve()
        if real in where:
            raise ValueError(f"ensemble: run folder {path} is given twice (also as {where[real]}; both are {real}): give each run once.")
        where[real] = path
    metrics = [RunFolder(p).read_card(what="ensemble")["metric"] for p in paths]
    if len(set(metrics)) > 1:
        which = ", ".join(f"{p}: {m}" for p, m in zip(paths, metrics))
        raise ValueError(f"ensemble: the runs were scored with different metrics ({which}): blend runs of one task and metric.")
    frames = [RunFolder(p).read_oof() for p in paths]
    ref, columns = frames[0], [frames[0]["pred"].to_numpy()]
    for path, frame in zip(paths[1:], frames[1:]):
        aligned = _align(frame, ref, path, paths[0])
        columns.append(aligned["pred"].to_numpy())
    return OofTable(
        names=[run_name(p) for p in paths], paths=paths, ids=ref["id"].to_numpy(), folds=ref["fold"].to_numpy(),
        labels=ref["label"].to_numpy(dtype=np.float64), preds=np.column_stack(columns).astype(np.float64),
        metric=get_metric(metrics[0]),
    )


def _align(frame, ref, path: str, ref_path: str):
    """`frame` reordered to `ref`'s ids; an error names the run and example ids when ids, folds or labels differ."""
    here, there = set(frame["id"]), set(ref["id"])
    if here != there:
        only_here, only_ref = sorted(here - there), sorted(there - here)
        raise ValueError(
            f"ensemble: run {path} has other out-of-fold ids than run {ref_path}: {len(only_here)} only in {path} "
            f"(e.g. {only_here[:_SHOWN]}), {len(only_ref)} only in {ref_path} (e.g. {only_ref[:_SHOWN]}). Blend runs "
            "trained on the same training file with every fold trained (kagglekit train --fold all)."
        )
    aligned = frame.set_index("id").loc[ref["id"]].reset_index()
    moved = aligned["fold"].to_numpy() != ref["fold"].to_numpy()
    if moved.any():
        shown = [f"{i!r} (fold {a}, not {b})" for i, a, b in zip(ref["id"][moved][:_SHOWN], aligned["fold"][moved][:_SHOWN], ref["fold"][moved][:_SHOWN])]
        raise ValueError(
            f"ensemble: run {path} puts {int(moved.sum())} id(s) in other folds than run {ref_path}, e.g. {', '.join(shown)}: "
            "their OOF predictions are not comparable. Train the runs with the same n_folds, fold_seed and data (the same folds.csv)."
        )
    relabelled = ~np.isclose(aligned["label"].to_numpy(dtype=float), ref["label"].to_numpy(dtype=float), rtol=0, atol=1e-9)
    if relabelled.any():
        raise ValueError(
            f"ensemble: run {path} has other labels than run {ref_path} for {int(relabelled.sum())} id(s), e.g. "
            f"{ref['id'][relabelled].head(_SHOWN).tolist()}: blend runs whose labels are on the same scale (same label_scale and data)."
        )
    return aligned


def blend(preds: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted blend of the columns of `preds` (N, R) with `weights` (R,): shape (N,)."""
    return np.asarray(preds, dtype=np.float64) @ np.asarray(weights, dtype=np.float64)


def fit_weights(preds: np.ndarray, labels: np.ndarray, metric: "Metric | str", *, method: str = "scipy") -> tuple[np.ndarray, str]:
    """Non-negative weights summing to 1 that maximise `metric` (or minimise it, for rmse) of the blend.

    ``scipy``: SLSQP from equal weights, under the simplex constraint. It falls back to the hill
    climber when it fails, or when it ends no better than its starting candidates (equal weights and
    each single run): a rank metric (roc_auc, spearman) has no gradient, so SLSQP cannot move.
    ``hill``: from the best candidate, move weight from one run to another (the best move of all
    pairs), halving the step (0.25 down to 1e-4) when no move improves.

    Args:
        preds: (N, R) predictions, one column per run.
        labels: (N,) labels.
        metric: a metric name or `kagglekit.metrics.Metric`.
        method: scipy | hill.

    Returns:
        (weights (R,), the optimizer that produced them: "scipy" or "hill").

    Example:
        >>> weights, used = fit_weights(table.preds, table.labels, "pearson")
    """
    from kagglekit.metrics import get_metric

    if method not in METHODS:
        raise ValueError(f"ensemble: method={method!r} is unknown: use one of {list(METHODS)}.")
    metric = get_metric(metric)
    preds, labels = np.asarray(preds, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    sign = 1.0 if metric.higher_is_better else -1.0

    def objective(weights: np.ndarray) -> float:  # higher is better, whatever the metric
        return sign * float(metric.fn(labels, preds @ weights))

    count = preds.shape[1]
    starts = [np.full(count, 1.0 / count), *np.eye(count)]
    scores = [objective(w) for w in starts]
    best_start = starts[int(np.argmax(scores))]
    if method == "scipy":
        weights = _fit_scipy(objective, count)
        if weights is not None and objective(weights) > max(scores) + _TOL:
            return weights, "scipy"
    return _hill_climb(objective, best_start), "hill"


def _fit_scipy(objective: Callable[[np.ndarray], float], count: int) -> np.ndarray | None:
    """SLSQP on the simplex from equal weights; None when it fails."""
    from scipy.optimize import minimize

    try:
        result = minimize(
            lambda w: -objective(w), np.full(count, 1.0 / count), method="SLSQP", bounds=[(0.0, 1.0)] * count,
            constraints=[{"type": "eq", "fun": lambda w: w.sum() - 1.0}], options={"maxiter": 500, "ftol": 1e-12},
        )
    except (ValueError, ArithmeticError):
        return None
    if not result.success or not np.isfinite(result.x).all():
        return None
    return _on_simplex(result.x)


def _on_simplex(weights: np.ndarray) -> np.ndarray:
    """Rounding residue off: negatives (-1e-17) to 0, then the sum to 1."""
    weights = np.clip(np.asarray(weights, dtype=np.float64), 0.0, None)
    return weights / weights.sum()


def _hill_climb(objective: Callable[[np.ndarray], float], start: np.ndarray, *, first_step: float = 0.25, min_step: float = 1e-4) -> np.ndarray:
    """Steepest ascent on the simplex: move `step` of weight (or all a run has) from one run to another."""
    weights, best = start.copy(), objective(start)
    step = first_step
    while step >= min_step:
        move = None
        for give, take in itertools.permutations(range(len(weights)), 2):
            amount = min(step, weights[give])
            if amount <= 0:
                continue
            candidate = weights.copy()
            candidate[give] -= amount
            candidate[take] += amount
            score = objective(candidate)
            if score > best + _TOL:
                move, best = candidate, score
        if move is None:
            step /= 2
        else:
            weights = move
    return _on_simplex(weights)


def ensemble(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None, *, rank: bool = False,
             method: str = "scipy") -> dict:
    """Fit blend weights on the runs' OOF predictions and write them to `out` (weights.json).

    Args:
        run_dirs: two or more run folders with the same out-of-fold ids, folds and labels.
        out: where to write weights.json (atomically); None: only return it. It must not be a file the
            command reads, nor lie inside a run folder (`kagglekit._paths.check_outputs`).
        rank: blend each run's OOF ranks (rank / N) instead of its predictions; `predict` then
            rank-normalises each run's test predictions the same way.
        method: scipy (SLSQP, with the hill climber as fallback) | hill.

    Returns:
        The weights.json payload: method, optimizer, metric, higher_is_better, runs (name, path,
        weight, cv), cv (the blend's OOF score), rank.

    Example:
        >>> ensemble(["runs/deberta", "runs/electra"], "weights.json")["cv"]
    """
    if out is not None:
        from kagglekit._paths import check_outputs

        check_outputs({"--out": out}, {"RUN_DIR": [path for run in run_dirs for path in RunFolder(run).own_paths()]})
    table = load_oof(run_dirs)
    metric = table.metric
    if rank and metric.name not in RANK_METRICS:
        raise ValueError(f"ensemble: --rank with metric {metric.name!r}: it scores the predictions' scale, which rank averaging "
                         f"replaces; drop --rank (rank averaging suits {list(RANK_METRICS)}).")
    inputs = np.column_stack([rank_normalise(c) for c in table.preds.T]) if rank else table.preds
    weights, optimizer = fit_weights(inputs, table.labels, metric, method=method)
    payload = {
        "method": "rank" if rank else optimizer,
        "optimizer": optimizer,
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "runs": [
            {"name": name, "path": path, "run_id": run_id(path), "weight": float(w), "cv": float(metric.fn(table.labels, column))}
            for name, path, w, column in zip(table.names, table.paths, weights, table.preds.T)
        ],
        "cv": float(metric.fn(table.labels, blend(inputs, weights))),
        "equal_weights_cv": float(metric.fn(table.labels, inputs.mean(axis=1))),
        "rank": bool(rank),
    }
    if out is not None:
        from kagglekit._io import write_json

        write_json(out, payload)
    return payload


def read_weights(path: str | os.PathLike) -> dict:
    """Read and check a weights.json: runs with name, path and weight; weights non-negative, summing to 1.

    Returns:
        The payload, with each run's weight as a float.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--weights: file not found: {path}. Write one with kagglekit ensemble RUN_DIR... --out {path}.")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"--weights: {path} is not valid JSON ({err}): write it again with kagglekit ensemble.") from None
    runs = payload.get("runs") if isinstance(payload, dict) else None
    if not isinstance(runs, list) or not runs:
        raise ValueError(f"--weights: {path} has no 'runs' list: write it with kagglekit ensemble.")
    for index, run in enumerate(runs):
        missing = [key for key in ("name", "path", "weight") if not isinstance(run, dict) or key not in run]
        if missing:
            raise ValueError(f"--weights: {path} runs[{index}] lacks {missing}: each run needs name, path and weight.")
        weight = run["weight"]
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not np.isfinite(weight) or weight < 0:
            raise ValueError(f"--weights: {path} runs[{index}] ({run['name']}) has weight {weight!r}: weights must be numbers >= 0.")
    total = sum(float(run["weight"]) for run in runs)
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"--weights: {path} weights sum to {total:.6g}, not 1: refit them with kagglekit ensemble, or fix them by hand.")
    if not isinstance(payload.get("rank", False), bool):
        raise ValueError(f"--weights: {path} key 'rank' is {payload['rank']!r}: use true or false.")
    return {**payload, "rank": payload.get("rank", False), "runs": [{**run, "weight": float(run["weight"])} for run in runs]}


def match_weights(runs: Sequence[str | os.PathLike], weights_path: str | os.PathLike) -> tuple[np.ndarray, bool]:
    """The weights.json weight of each run (matched by path, else by name), and whether it blends ranks.

    Every run must have exactly one entry and every entry one run; a mismatch names the missing run.
    """
    payload = read_weights(weights_path)
    entries = payload["runs"]
    owner: dict[int, str] = {}
    weights = []
    for run in runs:
        index = _find_entry(run, entries, weights_path)
        if index in owner:
            raise ValueError(f"--weights: {weights_path} entry {entries[index]['name']!r} matches both {owner[index]} and {run}: "
                             "give runs with distinct folder names, or paths as written in weights.json.")
        owner[index] = str(run)
        weights.append(entries[index]["weight"])
    missing = [e for i, e in enumerate(entries) if i not in owner]
    if missing:
        shown = ", ".join(f"{e['name']} ({e['path']}, weight {e['weight']:.3g})" for e in missing)
        raise ValueError(f"--weights: {weights_path} blends run(s) {shown} that --models does not include: "
                         "add them to --models, or refit the weights on the runs you pass.")
    return np.asarray(weights, dtype=np.float64), payload["rank"]


def _find_entry(run, entries: list[dict], weights_path) -> int:
    """The entry of `run`: by path, else by run_id (a run attached elsewhere, e.g. every Kaggle input's run/), else by name."""
    here = Path(run).resolve()
    by_path = [i for i, e in enumerate(entries) if Path(e["path"]).resolve() == here]
    if by_path:
        return by_path[0]
    identity = run_id(run)
    by_id = [i for i, e in enumerate(entries) if identity is not None and e.get("run_id") == identity]
    if len(by_id) == 1:
        return by_id[0]
    by_name = [i for i, e in enumerate(entries) if e["name"] == run_name(run)]
    if len(by_name) == 1:
        return by_name[0]
    names = [e["name"] for e in entries]
    problem = f"several entries are named {run_name(run)!r}" if by_name else f"it lists only {names}"
    raise ValueError(f"--weights: run {run} is not in {weights_path} ({problem}): pass the runs the weights were fitted on, "
                     "or refit them with kagglekit ensemble including this run.")


def _format_table(payload: dict) -> str:
    label = f"blend{', ranks' if payload['rank'] else ''} ({payload['optimizer']})"
    width = max(len(label), *(len(run["path"]) for run in payload["runs"])) + 2
    lines = [f"{'run':<{width}}{'cv (' + payload['metric'] + ')':>16}{'weight':>10}"]
    lines += [f"{run['path']:<{width}}{run['cv']:>16.4f}{run['weight']:>10.3f}" for run in payload["runs"]]
    lines.append(f"{'equal weights':<{width}}{payload['equal_weights_cv']:>16.4f}")
    lines.append(f"{label:<{width}}{payload['cv']:>16.4f}")
    return "\n".join(lines)


def _cmd_ensemble(args: argparse.Namespace) -> int:
    payload = ensemble(args.runs, args.out, rank=args.rank, method=args.method)
    print(_format_table(payload))
    print(f"wrote {args.out}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``kagglekit ensemble RUN_DIR... [--out weights.json] [--rank] [--method scipy|hill]``."""
    p = subparsers.add_parser("ensemble", help="fit blend weights on the runs' out-of-fold predictions; writes weights.json")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders with the same out-of-fold ids and folds")
    p.add_argument("--out", default="weights.json", help="where to write the weights (default: weights.json)")
    p.add_argument("--rank", action="store_true", help="blend the runs' ranks (rank / N) instead of their predictions")
    p.add_argument("--method", default="scipy", choices=list(METHODS),
                   help="scipy: SLSQP, falling back to hill climbing when it fails or cannot move; hill: hill climbing only")
    p.set_defaults(func=_cmd_ensemble)
    return p
