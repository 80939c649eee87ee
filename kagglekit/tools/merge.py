"""``kagglekit merge``: folds trained in separate sessions become one run, with one OOF and one CV.

On Kaggle a session trains one or two folds; each session's output is a run folder with those folds.
Runs that differ only in their folds and their paths (the input mounts and ``output_dir`` move between
sessions) merge into a new run folder: the fold folders are copied (attached inputs are read-only, and
a copy moves with the merged run, each fold with all its seeds' folders), ``oof.csv`` covers every merged
fold in training-file order, and ``run.json`` holds every fold's entry and the CV over all of them. A run's
full-data fits (``full/``, ``full-seed{S}/``, no OOF) are copied too, with the card's ``full`` entry. `ensemble`, `report` and `predict`
read the result like any run.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
from pathlib import Path
from typing import Sequence

from kagglekit._io import atomic_dir, write_csv, write_json, write_text
from kagglekit._paths import check_outputs
from kagglekit.config import Config, changed_keys
from kagglekit.run import RunFolder, merge_oof


def merge_runs(runs: Sequence[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Merge run folders holding different folds of one experiment into `out`; returns the new run card.

    Args:
        runs: two or more run folders (``run.json``, ``config.yaml``, ``folds.csv``, ``oof.csv``, ``fold{K}/``,
            ``fold{K}-seed{S}/``; optionally ``full*/``).
        out: the new run folder; it must not exist yet, and must not be one of `runs` or inside one (paths
            resolved: ``runs/./a`` and symbolic links count; see `kagglekit._paths.check_outputs`).

    Raises:
        ValueError: fewer than two runs; a run passed twice; settings other than paths differ; the
            runs' ``folds.csv`` differ; a fold (any of its seeds) or a full fit appears in two runs; `out`
            exists or lies inside a run.
        FileNotFoundError: a run lacks one of its files.

    Example:
        >>> merge_runs(["/kaggle/input/uspppm-f0/run", "/kaggle/input/uspppm-f1/run"], "/kaggle/working/run")["cv"]
    """
    from kagglekit.metrics import get_metric
    from kagglekit.models.embeddings import EMBEDDER_DIR

    folders = [RunFolder(r) for r in runs]
    out = Path(out)
    _check_places(folders, out)
    cards = [f.read_card(what="merge") for f in folders]
    configs = [_read_config(f) for f in folders]
    _check_same_settings(folders, configs)
    folds_csv = _check_same_folds(folders)
    owner = _check_disjoint_folds(folders, cards)
    full_owner = _check_one_full_fit(folders)
    oofs = [f.read_oof() for f in folders]
    _check_embedding_copies(folders)

    import pandas as pd

    mine = [o[o["fold"].isin([int(k) for k, i in owner.items() if i == n])] for n, o in enumerate(oofs)]
    oof = merge_oof(None, pd.concat(mine, ignore_index=True), folds_csv["id"])  # in training-file order
    card = dict(cards[0])
    card["folds"] = {k: cards[i]["folds"][k] for k, i in sorted(owner.items(), key=lambda kv: int(kv[0]))}
    metric = get_metric(card["metric"])
    card["cv"] = float(metric.fn(oof["label"].to_numpy(), oof["pred"].to_numpy()))
    card["cv_folds"] = sorted(int(k) for k in card["folds"])
    card["timings"] = {"fold_seconds": {k: v.get("seconds") for k, v in card["folds"].items()}}
    card.pop("full", None)
    if full_owner is not None and "full" in cards[full_owner]:
        card["full"] = cards[full_owner]["full"]
    card["merged_from"] = [{"run": str(f.path), "folds": sorted(int(k) for k, i in owner.items() if i == n)} for n, f in enumerate(folders)]

    with atomic_dir(out) as tmp:
        new = RunFolder(tmp)
        for fold, i in owner.items():
            for source in folders[i].fold_dirs(complete=False, fold=int(fold)):  # fold{K}/ and its fold{K}-seed{S}/
                shutil.copytree(source, tmp / source.name)
        for source in folders[full_owner].full_dirs(complete=False) if full_owner is not None else ():
            shutil.copytree(source, tmp / source.name)
        if (folders[0].path / EMBEDDER_DIR).is_dir():
            shutil.copytree(folders[0].path / EMBEDDER_DIR, tmp / EMBEDDER_DIR)
        write_text(new.config_path, folders[0].config_path.read_text(encoding="utf-8"))
        new.write_folds(folds_csv)
        write_csv(new.oof_path, oof)
        write_json(new.card_path, card)
    return card


def _check_places(folders: list[RunFolder], out: Path) -> None:
    if len(folders) < 2:
        raise ValueError(f"merge needs two or more run folders, got {len(folders)}: pass each session's run folder.")
    resolved = [f.path.resolve() for f in folders]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise ValueError(f"merge: {folders[i].path} is passed twice (as {folders[resolved.index(path)].path}): pass each run once.")
    check_outputs({"--out": out}, {"input run": [f.path for f in folders]}, folders={"--out"})
    if out.exists():
        raise ValueError(f"merge --out {out} already exists: pass a new folder (the merged run is written whole, never into old files).")


def _read_config(folder: RunFolder) -> dict:
    config = folder.read_config()
    if config is None:
        raise FileNotFoundError(f"merge: {folder.config_path} not found: pass run folders written by kagglekit train.")
    return config


def _check_same_settings(folders: list[RunFolder], configs: list[dict]) -> None:
    first = configs[0]
    for folder, config in zip(folders[1:], configs[1:]):
        changed = changed_keys(first, config, ignore=Config.PATH_KEYS | Config.MACHINE_KEYS)
        if changed:
            shown = ", ".join(f"{k}: {first.get(k)!r} vs {config.get(k)!r}" for k in changed[:6])
            raise ValueError(f"merge: {folder.path} was trained with other settings than {folders[0].path} ({shown}): only runs of "
                             "one experiment merge (paths may differ); blend different experiments with kagglekit ensemble.")


def _check_same_folds(folders: list[RunFolder]):
    frames = []
    for folder in folders:
        frame = folder.read_folds()
        if frame is None:
            raise FileNotFoundError(f"merge: {folder.folds_path} not found: pass run folders written by kagglekit train.")
        frames.append(frame)
    for folder, frame in zip(folders[1:], frames[1:]):
        if not frame.equals(frames[0]):
            raise ValueError(f"merge: {folder.folds_path} differs from {folders[0].folds_path}: the runs split other rows or other "
                             "folds (another train_csv, max_rows, n_folds or fold_seed); only folds of one split merge.")
    return frames[0]


def _check_disjoint_folds(folders: list[RunFolder], cards: list[dict]) -> dict[str, int]:
    """Each fold's run (its index in `folders`), refusing a fold trained in two runs."""
    owner: dict[str, int] = {}
    for index, (folder, card) in enumerate(zip(folders, cards)):
        for fold in card.get("folds", {}):
            if fold in owner:
                raise ValueError(f"merge: fold {fold} is in both {folders[owner[fold]].path} and {folder.path}: keep one of them "
                                 "(pass the other run without it, or delete its fold folder and entry).")
            if not folder.fold_dir(int(fold)).is_dir():
                raise FileNotFoundError(f"merge: {folder.path} lists fold {fold} in its run.json but has no fold{fold}/: "
                                        "attach the whole run folder.")
            owner[fold] = index
    if not owner:
        raise ValueError("merge: none of the runs has a complete fold: train folds first (kagglekit train --fold K).")
    return owner


def _check_one_full_fit(folders: list[RunFolder]) -> int | None:
    """The run (its index in `folders`) holding full-data fits, refusing them in two runs; None when no run has any."""
    having = [i for i, folder in enumerate(folders) if folder.full_dirs(complete=False)]
    if len(having) > 1:
        shown = " and ".join(f"{folders[i].path} ({', '.join(p.name for p in folders[i].full_dirs(complete=False))})" for i in having)
        raise ValueError(f"merge: full-data fits are in both {shown}: keep those of one run (delete the others' full*/ "
                         "folders, or pass that run without them).")
    return having[0] if having else None


def _check_embedding_copies(folders: list[RunFolder]) -> None:
    """With embedding_model, every fold's features come from its run's copy: the copies must be the same."""
    from kagglekit.models.embeddings import EMBEDDER_DIR

    copies = [f.path / EMBEDDER_DIR for f in folders]
    present = [c.is_dir() for c in copies]
    if not any(present):
        return
    if not all(present):
        missing = [str(f.path) for f, p in zip(folders, present) if not p]
        raise ValueError(f"merge: run(s) {missing} lack {EMBEDDER_DIR}/ that the others have: attach the whole run folders.")
    for folder, copy in zip(folders[1:], copies[1:]):
        match, mismatch, errors = filecmp.cmpfiles(copies[0], copy, sorted(p.name for p in copies[0].iterdir() if p.is_file()),
                                                   shallow=False)
        if mismatch or errors:
            raise ValueError(f"merge: {copy} differs from {copies[0]} ({sorted(mismatch + errors)}): the runs used different "
                             "embedding models, so their folds' features differ.")


def _cmd_merge(args: argparse.Namespace) -> int:
    card = merge_runs(args.runs, args.out)
    print(f"merged folds {card['cv_folds']} of {len(args.runs)} runs into {args.out}; CV {card['metric']} {card['cv']:.4f}", flush=True)
    return 0


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``kagglekit merge RUN_DIR RUN_DIR... --out DIR``."""
    p = subparsers.add_parser("merge", help="merge runs holding different folds of one experiment into one run (one OOF, one CV)")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders of one experiment, each with other folds")
    p.add_argument("--out", required=True, help="the new run folder (must not exist)")
    p.set_defaults(func=_cmd_merge)
    return p
