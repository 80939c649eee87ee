"""Compare run folders: a leaderboard (CSV and markdown) with CV beside the public LB, and plots.

``kagglekit report RUNS_DIR`` finds every run folder (a folder with ``run.json``) under RUNS_DIR and
writes into ``--out`` (default ``RUNS_DIR/report``): ``leaderboard.csv``, ``leaderboard.md``, and per
run ``<run>/curve_fold{K}.png``, ``<run>/oof.png``, ``<run>/folds.png``; a ``blend_*.png`` per
``weights.json``. Runs of different tasks or metrics are never ranked together: each (task, metric)
pair gets its own table, ranked in that metric's direction.

Public LB scores are kept in each run's ``lb.json``, or, where run folders are read-only (attached
Kaggle inputs), in one JSON file the user chooses (``--lb-file``), keyed by each run's identity. Over
350 lines: the LB store sits beside the ``--lb`` option it serves (a candidate for its own module).
"""

from __future__ import annotations

import argparse
import errno
import json
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping

from kagglekit._io import StorageError, write_csv, write_json, write_text
from kagglekit.run import CARD_FILE, FOLD_DIR, FOLDS_FILE, OOF_FILE, RunFolder, parse_model_dir_name
from kagglekit.tools.plots import plot_fold_scores, plot_learning_curves, plot_oof, plot_weights

if TYPE_CHECKING:  # numpy and pandas load when a report is made, not when the command line builds its parser
    import pandas as pd

LB_FILE = "lb.json"  # a run's own public LB score, in its folder
LB_FILE_FORMAT = 1  # the layout of an --lb-file: {"format": 1, "runs": {identity: {"lb", "run", "updated"}}}
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
        # the report's folder is not searched, unless it is itself a run (a report written into a run folder)
        subdirs[:] = sorted(d for d in subdirs
                            if not d.startswith(".") and ((here / d).resolve() != excluded or (here / d / CARD_FILE).is_file()))
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
    return OOF_FILE in files or FOLDS_FILE in files or any(parse_model_dir_name(d) is not None for d in subdirs)


def _load_run(name: str, folder: Path) -> tuple[Run | None, str]:
    try:
        card = RunFolder(folder).read_card()
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        return None, f"{CARD_FILE} is not valid JSON ({err})"
    if not isinstance(card, dict) or card.get("cv") is None or not card.get("folds"):
        return None, f"{CARD_FILE} has no finished fold yet (no cv)"
    return Run(name, folder, card, read_lb(folder)), ""


def run_identity(run_dir: str | os.PathLike, card: Mapping | None = None) -> str:
    """The key of a run in an ``--lb-file``: its run card's ``run_id``; for a run saved before ids, the id train would
    give it (`kagglekit.run.run_id`); else its folder's name (paths are no part of a run's identity: the folder moves
    between machines and sessions)."""
    from kagglekit.run import run_id

    stored = card.get("run_id") if isinstance(card, Mapping) else None
    found = str(stored) if stored else run_id(run_dir)  # an old run: the id train would give it
    return found or Path(run_dir).resolve().name


def read_lb_file(path: str | os.PathLike) -> dict[str, dict]:
    """The entries of an ``--lb-file`` by run identity (``{}`` when the file does not exist yet).

    Raises:
        ValueError: the file is no JSON, or not in the layout `store_lb` writes; the message names it.
    """
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"--lb-file {path}: not valid JSON ({err}): fix it, or move it away to start a new one.") from None
    runs = data.get("runs") if isinstance(data, dict) else None
    if not isinstance(runs, dict) or not all(isinstance(e, dict) and _is_score(e.get("lb")) for e in runs.values()):
        raise ValueError(f"--lb-file {path}: expected {{\"format\": {LB_FILE_FORMAT}, \"runs\": {{RUN: {{\"lb\": SCORE, ...}}}}}} as "
                         "kagglekit report writes it: fix it, or move it away to start a new one.")
    return runs


def _is_score(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_lb(run_dir: str | os.PathLike, *, lb_file: str | os.PathLike | None = None, card: Mapping | None = None) -> float | None:
    """The public LB score of a run, or None: its entry in `lb_file` when given and present, else its ``lb.json``.

    Args:
        run_dir: the run folder.
        lb_file: an ``--lb-file`` (see `store_lb`), looked up by `run_identity`.
        card: the run's card, when already read (for its ``run_id``).
    """
    if lb_file is not None:
        entry = read_lb_file(lb_file).get(run_identity(run_dir, card))
        if entry is not None:
            return float(entry["lb"])
    path = Path(run_dir) / LB_FILE
    if not path.is_file():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["lb"])


def store_lb(run_dir: str | os.PathLike, score: float, *, lb_file: str | os.PathLike | None = None, name: str | None = None,
             card: Mapping | None = None) -> Path:
    """Store (or replace) the public LB score of a run, atomically; returns the file written.

    Args:
        run_dir: the run folder.
        score: the public LB score.
        lb_file: None: the run's own ``lb.json``. A path: that JSON file, keyed by `run_identity`; its other
            runs' entries are kept. Use it where run folders are read-only (attached Kaggle inputs).
        name: the run's name in the report, kept in the entry for people reading the file.
        card: the run's card, when already read (for its ``run_id``).

    Raises:
        ValueError: `score` is not finite; `lb_file` is not an LB file; the run folder is read-only (without `lb_file`).

    Example:
        >>> store_lb("/kaggle/input/deberta-run", 0.8376, lb_file="/kaggle/working/lb.json")
    """
    if not math.isfinite(score):
        raise ValueError(f"--lb: the score must be a finite number, got {score!r}.")
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if lb_file is not None:
        runs = read_lb_file(lb_file)
        runs[run_identity(run_dir, card)] = {"lb": float(score), "run": name or Path(run_dir).name, "updated": stamp}
        return write_json(lb_file, {"format": LB_FILE_FORMAT, "runs": runs})
    path = Path(run_dir) / LB_FILE
    try:
        return write_json(path, {"lb": float(score), "updated": stamp})
    except (PermissionError, StorageError) as err:
        if err.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise  # a full disk: StorageError says where and what to do
        raise ValueError(f"--lb: cannot write {path}: the run folder is read-only (as attached Kaggle inputs are). Keep "
                         "the scores in a file of your choice instead: --lb-file /kaggle/working/lb.json.") from None


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
                 lb: Mapping[str, float] | None = None, weights: Iterable[str | os.PathLike] = (),
                 lb_file: str | os.PathLike | None = None) -> Report:
    """Store LB scores, then write the leaderboard and every plot for the runs under `runs_dir`.

    Args:
        runs_dir: a folder of run folders, or one run folder.
        out: the report folder (default ``runs_dir/report``); it is never searched for runs (unless it is a run
            folder itself). Neither it nor `lb_file` may be, or lie inside, a file or model folder the report
            reads (`kagglekit._paths.check_outputs`).
        lb: public LB scores by run name (``{"demo": 0.8376}``), stored first (in each run's ``lb.json``,
            or in `lb_file`); a name that is not a run found is an error listing the runs.
        weights: ``weights.json`` files to plot besides those found under `runs_dir`.
        lb_file: a JSON file of LB scores keyed by run identity (see `store_lb`), for read-only run folders:
            `lb` is stored there, and every run's score is read from it (a run without an entry: its ``lb.json``).

    Returns:
        A `Report`: the table, the CSV and markdown paths, the plots, the folders skipped.

    Example:
        >>> report = write_report("runs", lb={"deberta-v3": 0.8376})
        >>> print(report.markdown.read_text())
        >>> write_report("/kaggle/input", "/kaggle/working/report", lb={"deberta-v3": 0.84}, lb_file="/kaggle/working/lb.json")
    """
    runs_dir = Path(runs_dir)
    out = Path(out) if out is not None else runs_dir / "report"
    runs, skipped, found_weights = find_runs(runs_dir, exclude=out)
    if not runs:
        raise ValueError(f"RUNS_DIR: no run folder (a folder with {CARD_FILE}) under {runs_dir}. "
                         "Pass the output_dir of kagglekit train, or the folder that holds several.")
    _check_report_paths(runs, out, lb_file, [Path(p) for p in weights] + found_weights)
    stores = [(resolve_run(runs, name), score) for name, score in (lb or {}).items()]  # all names checked first
    shared = _shared_identities(runs) if lb_file is not None else {}
    for run, _ in stores:
        names = shared.get(run_identity(run.path, run.card))
        if names:
            raise ValueError(f"--lb {run.name}=...: runs {', '.join(names)} share the identity {run_identity(run.path, run.card)!r} "
                             f"in --lb-file (their folder name; their {CARD_FILE} has no run_id): rename one of the folders.")
    if lb_file is not None:
        read_lb_file(lb_file)  # a broken file is an error before anything is stored
    for run, score in stores:
        store_lb(run.path, score, lb_file=lb_file, name=run.name, card=run.card)
    runs = [Run(r.name, r.path, r.card, read_lb(r.path, card=r.card,
                                                   lb_file=None if run_identity(r.path, r.card) in shared else lb_file)) for r in runs]
    skipped += [f"--lb-file: runs {', '.join(names)} share the identity {key!r} (no run_id in their {CARD_FILE}), so their "
                f"scores are not read from {lb_file}: rename one of the folders" for key, names in shared.items()]
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


def _check_report_paths(runs: list[Run], out: Path, lb_file, weights: list[Path]) -> None:
    """The report folder and --lb-file against what the report reads: each run's files and model folders, and the
    weights.json files. The report may go into a run folder (``RUN/report``, its default for one run): it
    writes only its own files there; a run's ``lb.json`` is the store ``--lb`` updates."""
    from kagglekit._paths import check_outputs

    read = [path for run in runs for path in RunFolder(run.path).own_paths()]
    plots = {f"--out's plot folder {run.name}/": out / run.name for run in runs}
    check_outputs({"--out": out, "--lb-file": lb_file, "--out's leaderboard.csv": out / "leaderboard.csv",
                   "--out's leaderboard.md": out / "leaderboard.md", **plots},
                  {"run": read, "--weights": weights}, folders={"--out", *plots}, into={"--out", *plots})


def _shared_identities(runs: Iterable[Run]) -> dict[str, list[str]]:
    """The run identities (see `run_identity`) that more than one of `runs` has, with those runs' names."""
    by_key: dict[str, list[str]] = {}
    for run in runs:
        by_key.setdefault(run_identity(run.path, run.card), []).append(run.name)
    return {key: names for key, names in by_key.items() if len(names) > 1}


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
    report = write_report(args.runs_dir, args.out, lb=lb, weights=args.weights, lb_file=args.lb_file)
    for message in report.skipped:
        print(f"kagglekit report: {message}")
    print(report.markdown.read_text(encoding="utf-8"))
    print(f"wrote {report.csv}, {report.markdown} and {len(report.plots)} plots under {report.markdown.parent}")
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``kagglekit report RUNS_DIR [--lb RUN=SCORE ...] [--lb-file PATH] [--weights FILE ...] [--out DIR]``."""
    p = subparsers.add_parser("report", help="leaderboard (CSV + markdown, CV beside LB) and plots of the run folders under RUNS_DIR")
    p.add_argument("runs_dir", metavar="RUNS_DIR", help="a folder of run folders (those with run.json), or one run folder")
    p.add_argument("--lb", action="append", default=[], metavar="RUN=SCORE",
                   help="store a run's public LB score in its lb.json, or in --lb-file (repeatable; a later call replaces it)")
    p.add_argument("--lb-file", metavar="PATH",
                   help="keep LB scores in this JSON file (by run identity: run.json's run_id, else the folder name) "
                        "instead of each run's lb.json: for read-only run folders such as attached Kaggle inputs")
    p.add_argument("--weights", action="append", default=[], metavar="FILE",
                   help="a blend's weights.json to plot besides those found under RUNS_DIR (repeatable)")
    p.add_argument("--out", help="report folder (default RUNS_DIR/report)")
    p.set_defaults(func=_cmd_report)
    return p
