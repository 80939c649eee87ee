"""Compare run folders: a leaderboard (CSV and markdown) with CV beside the public LB, and plots.

``kagglekit report RUNS_DIR`` finds every run folder (a folder with ``run.json``) under RUNS_DIR and
writes into ``--out`` (default ``RUNS_DIR/report``): ``leaderboard.csv``, ``leaderboard.md``, and per
run ``<run>/curve_fold{K}.png``, ``<run>/oof.png``, ``<run>/folds.png``; a ``blend_*.png`` per
``weights.json``. Runs of different tasks or metrics are never ranked together: each (task, metric)
pair gets its own table, ranked in that metric's direction.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from kagglekit._io import write_csv, write_json, write_text
from kagglekit.run import CARD_FILE, FOLD_DIR, FOLDS_FILE, OOF_FILE, RunFolder, fold_number
from kagglekit.tools.plots import plot_fold_scores, plot_learning_curves, plot_oof, plot_weights

if TYPE_CHECKING:  # numpy and pandas load when a report is made, not when the command line builds its parser
    import pandas as pd

LB_FILE = "lb.json"
WEIGHTS_FILE = "weights.json"
_GENERIC_NAMES = {"model", "last", "best", "final"}  # a backbone folder named so is shown with its parent


@dataclass(frozen=True)
class Run:
    """One run folder: its name in the report, its path, its run card and its stored public LB score."""

    name: str
    path: Path
    card: dict
    lb: float | None = None


@dataclass
class Report:
    """What `write_report` wrote: the leaderboard table, its files, the plots and the folders skipped."""

    table: pd.DataFrame
    csv: Path
    markdown: Path
    plots: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Finding runs, public LB scores


def find_runs(root: str | os.PathLike, *, exclude: str | os.PathLike | None = None) -> tuple[list[Run], list[str], list[Path]]:
    """Every run folder under `root` (`root` itself may be one), sorted by name.

    Args:
        root: the folder to search.
        exclude: a folder not to search (the report's own output).

    Returns:
        The runs; one message per folder skipped (a run-like folder without ``run.json``, a card
        that is not JSON, a run with no finished fold); the ``weights.json`` files seen on the way.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"RUNS_DIR: folder not found: {root}. Pass the folder that holds your run folders.")
    excluded = Path(exclude).resolve() if exclude is not None else None
    runs, skipped, weights = [], [], []
    for folder, subdirs, files in os.walk(root):
        here = Path(folder)
        subdirs[:] = sorted(d for d in subdirs if not d.startswith(".") and (here / d).resolve() != excluded)
        if WEIGHTS_FILE in files:
            weights.append(here / WEIGHTS_FILE)
        if CARD_FILE in files:
            name = here.resolve().name if here == root else here.relative_to(root).as_posix()
            run, reason = _load_run(name, here)
            if run is None:
                skipped.append(f"skipped {here}: {reason}")
            else:
                runs.append(run)
            subdirs[:] = []  # fold folders hold no other runs
        elif _looks_like_run(files, subdirs):
            skipped.append(f"skipped {here}: no {CARD_FILE} (not written by kagglekit train, or copied without it)")
            subdirs[:] = []
    return sorted(runs, key=lambda r: r.name), skipped, weights


def _looks_like_run(files: list[str], subdirs: list[str]) -> bool:
    return OOF_FILE in files or FOLDS_FILE in files or any(fold_number(d) is not None for d in subdirs)


def _load_run(name: str, folder: Path) -> tuple[Run | None, str]:
    try:
        card = RunFolder(folder).read_card()
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{CARD_FILE} is not valid JSON ({err})"
    if not isinstance(card, dict) or card.get("cv") is None or not card.get("folds"):
        return None, f"{CARD_FILE} has no finished fold yet (no cv)"
    return Run(name, folder, card, read_lb(folder)), ""


def read_lb(run_dir: str | os.PathLike) -> float | None:
    """The public LB score stored in a run folder, or None."""
    path = Path(run_dir) / LB_FILE
    if not path.is_file():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["lb"])


def store_lb(run_dir: str | os.PathLike, score: float) -> Path:
    """Store (or replace) the public LB score of a run in ``lb.json``, atomically."""
    if not math.isfinite(score):
        raise ValueError(f"--lb: the score must be a finite number, got {score!r}.")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return write_json(Path(run_dir) / LB_FILE, {"lb": float(score), "updated": stamp})


def parse_lb(text: str) -> tuple[str, float]:
    """``"RUN=0.8376"`` → ``("RUN", 0.8376)``; bad syntax raises ValueError showing the form."""
    name, sep, value = text.rpartition("=")
    try:
        score = float(value)
    except ValueError:
        score = math.nan
    if not sep or not name.strip() or not math.isfinite(score):
        raise ValueError(f"--lb {text!r}: expected RUN=SCORE with a run name and a finite number, e.g. --lb demo=0.8376.")
    return name.strip(), score


def resolve_run(runs: Iterable[Run], name: str) -> Run:
    """The run called `name` (its path under RUNS_DIR, or its folder name when that is unique)."""
    runs = list(runs)
    matches = [r for r in runs if r.name == name] or [r for r in runs if r.path.name == name]
    if len(matches) != 1:
        why = "matches several runs" if matches else "is not a run found"
        raise ValueError(f"--lb {name}=...: {name!r} {why}; the runs are: {', '.join(r.name for r in runs)}.")
    return matches[0]


# ---------------------------------------------------------------------------------------------
# The leaderboard


def leaderboard(runs: Iterable[Run]) -> pd.DataFrame:
    """One row per run, grouped by (task, metric), each group ranked by CV in its metric's direction.

    Columns: ``rank, run, best, task, metric, backbone, head, loss, adversary, folds, fold{K}...,
    cv, lb, time_s`` (``fold{K}``: that fold's score; ``folds``: trained/total; ``time_s``: the sum
    of the folds' training seconds).
    """
    import pandas as pd

    rows = [_row(run) for run in runs]
    if not rows:
        raise ValueError("leaderboard: no runs to rank.")
    frame = pd.DataFrame(rows)
    fold_cols = sorted((c for c in frame.columns if FOLD_DIR.match(c)), key=lambda c: int(c[4:]))
    groups = []
    for (_, _, higher), group in frame.groupby(["task", "metric", "higher_is_better"], sort=True):
        group = group.sort_values(["cv", "run"], ascending=[not higher, True], kind="stable")
        groups.append(group.assign(rank=range(1, len(group) + 1), best=[True] + [False] * (len(group) - 1)))
    columns = ["rank", "run", "best", "task", "metric", "backbone", "head", "loss", "adversary", "folds",
               *fold_cols, "cv", "lb", "time_s"]
    return pd.concat(groups, ignore_index=True)[columns]


def _row(run: Run) -> dict:
    card, config = run.card, run.card.get("config", {})
    folds = card.get("folds", {})
    row = {
        "run": run.name,
        "task": card.get("task", config.get("task", "")),
        "metric": card.get("metric", ""),
        "higher_is_better": bool(card.get("higher_is_better", True)),
        "backbone": short_backbone(config.get("backbone", "")),
        "head": config.get("head", ""),
        "loss": card.get("loss", config.get("loss", "")),
        "adversary": config.get("adversary", ""),
        "folds": f"{len(folds)}/{config.get('n_folds', len(folds))}",
        "cv": float(card["cv"]),
        "lb": run.lb,
        "time_s": round(sum(float(f.get("seconds", 0.0)) for f in folds.values()), 1),
    }
    row.update({f"fold{k}": float(f["score"]) for k, f in folds.items()})
    return row


def short_backbone(path: str) -> str:
    """A model folder's name (``.../deberta-v3-large`` → ``deberta-v3-large``); generic names keep their parent."""
    parts = Path(path).parts
    if len(parts) >= 2 and (parts[-1] in _GENERIC_NAMES or parts[-1].startswith("checkpoint-")):
        return "/".join(parts[-2:])
    return parts[-1] if parts else ""


def to_markdown(table: pd.DataFrame, blends: Iterable[tuple[str, dict]] = ()) -> str:
    """The leaderboard as markdown: one section per (task, metric), the best run in bold; then the blends."""
    lines = ["# Leaderboard", ""]
    for (task, metric), group in table.groupby(["task", "metric"], sort=False):
        folds = [c for c in group.columns if FOLD_DIR.match(c) and group[c].notna().any()]
        head = ["rank", "run", "backbone", "head", "loss", "adversary", "folds", *folds, "CV", "LB", "time"]
        lines += [f"## {task}: {metric}", "", _md_row(head), _md_row(["---"] * len(head))]
        for _, r in group.iterrows():
            run = f"**{r['run']}** (best)" if r["best"] else r["run"]
            cells = [r["rank"], run, r["backbone"], r["head"], r["loss"], r["adversary"], r["folds"],
                     *(_num(r[c]) for c in folds), _num(r["cv"]), _num(r["lb"]), duration(r["time_s"])]
            lines.append(_md_row(cells))
        lines.append("")
    blends = list(blends)
    if blends:
        lines += ["## Blends", "", _md_row(["weights", "method", "metric", "CV", "runs"]), _md_row(["---"] * 5)]
        for label, spec in blends:
            parts = ", ".join(f"{r['name']} {float(r['weight']):.3f}" for r in spec["runs"])
            lines.append(_md_row([label, spec.get("method", ""), spec.get("metric", ""), _num(spec.get("cv")), parts]))
        lines.append("")
    return "\n".join(lines)


def _md_row(cells: Iterable) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _num(value) -> str:
    return "" if value is None or math.isnan(float(value)) else f"{float(value):.4f}"


def duration(seconds: float) -> str:
    """Seconds as people read them: ``45 s``, ``12 min``, ``3.2 h`` (the leaderboard's times, doctor's estimates)."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


# ---------------------------------------------------------------------------------------------
# The report


def write_report(runs_dir: str | os.PathLike, out: str | os.PathLike | None = None, *,
                 lb: Mapping[str, float] | None = None, weights: Iterable[str | os.PathLike] = ()) -> Report:
    """Store LB scores, then write the leaderboard and every plot for the runs under `runs_dir`.

    Args:
        runs_dir: a folder of run folders, or one run folder.
        out: the report folder (default ``runs_dir/report``); it is never searched for runs.
        lb: public LB scores by run name (``{"demo": 0.8376}``), stored in each run's ``lb.json``
            first; a name that is not a run found is an error listing the runs.
        weights: ``weights.json`` files to plot besides those found under `runs_dir`.

    Returns:
        A `Report`: the table, the CSV and markdown paths, the plots, the folders skipped.

    Example:
        >>> report = write_report("runs", lb={"deberta-v3": 0.8376})
        >>> print(report.markdown.read_text())
    """
    runs_dir = Path(runs_dir)
    out = Path(out) if out is not None else runs_dir / "report"
    runs, skipped, found_weights = find_runs(runs_dir, exclude=out)
    if not runs:
        raise ValueError(f"RUNS_DIR: no run folder (a folder with {CARD_FILE}) under {runs_dir}. "
                         "Pass the output_dir of kagglekit train, or the folder that holds several.")
    for run, score in [(resolve_run(runs, name), score) for name, score in (lb or {}).items()]:  # all names checked first
        store_lb(run.path, score)
    runs = [Run(r.name, r.path, r.card, read_lb(r.path)) for r in runs]
    table = leaderboard(runs)

    from kagglekit.infer.ensemble import read_weights

    blends, plots = [], []
    explicit = [Path(p) for p in weights]
    for path in _unique_paths(explicit + found_weights):
        try:
            spec = read_weights(path)  # kagglekit.infer.ensemble's reader: the checks predict applies
        except ValueError as err:
            if path in explicit:
                raise
            skipped.append(f"skipped {path}: {err}")
            continue
        label = _weights_label(path, runs_dir)
        blends.append((label, spec))
        plots.append(plot_weights(spec, out / f"blend_{re.sub(r'[^A-Za-z0-9_.-]+', '_', label)}.png", title=label))
    for run in runs:
        run_out = out / run.name
        plots += plot_learning_curves(run.name, run.path, run.card, run_out)
        plots += [p for p in (plot_oof(run.name, run.path, run.card, run_out), plot_fold_scores(run.name, run.path, run.card, run_out)) if p is not None]

    csv = write_csv(out / "leaderboard.csv", table)
    markdown = write_text(out / "leaderboard.md", to_markdown(table, blends))
    return Report(table, csv, markdown, plots, skipped)


def _unique_paths(paths: Iterable[Path]) -> list[Path]:
    seen, out = set(), []
    for path in paths:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            out.append(path)
    return out


def _weights_label(path: Path, runs_dir: Path) -> str:
    """The blend's name: its folder under RUNS_DIR (``ensemble``), or the folder's own name outside it."""
    try:
        rel = path.parent.resolve().relative_to(runs_dir.resolve()).as_posix()
    except ValueError:
        rel = path.parent.resolve().name
    return rel if rel != "." else "blend"


# ---------------------------------------------------------------------------------------------
# Command line


def _cmd_report(args: argparse.Namespace) -> int:
    lb = dict(parse_lb(text) for text in args.lb)
    report = write_report(args.runs_dir, args.out, lb=lb, weights=args.weights)
    for message in report.skipped:
        print(f"kagglekit report: {message}")
    print(report.markdown.read_text(encoding="utf-8"))
    print(f"wrote {report.csv}, {report.markdown} and {len(report.plots)} plots under {report.markdown.parent}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``kagglekit report RUNS_DIR [--lb RUN=SCORE ...] [--weights FILE ...] [--out DIR]``."""
    p = subparsers.add_parser("report", help="leaderboard (CSV + markdown, CV beside LB) and plots of the run folders under RUNS_DIR")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="a folder of run folders (those with run.json), or one run folder")
    p.add_argument("--lb", action="append", default=[], metavar="RUN=SCORE",
                   help="store a run's public LB score in its lb.json (repeatable; a later call replaces it)")
    p.add_argument("--weights", action="append", default=[], metavar="FILE",
                   help="a blend's weights.json to plot besides those found under RUNS_DIR (repeatable)")
    p.add_argument("--out", help="report folder (default RUNS_DIR/report)")
    p.set_defaults(func=_cmd_report)
    return p
