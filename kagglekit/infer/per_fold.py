"""Per-fold predictions (``kagglekit predict --per-fold``): every fold model of the run(s) on the given rows, one row
per (id, teacher model), kept apart rather than averaged: the teacher file that distillation needs.

Distillation (`kagglekit.train.distill`) may use a value in student fold K only if the model that made it never
trained on fold K's validation rows: teacher model K's predictions on fold K's training rows. An out-of-fold file
has no such values; this one has them. Rows are written in the layout of ``oof.csv`` with more rows per id:
``id, fold, row_fold, pred`` (+ ``logit_0..logit_{C-1}`` for classes and bins), where ``fold`` is the teacher
model (``full`` for the full fits) and ``row_fold`` the id's own fold in the teacher run (-1: not one of its rows).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import pandas as pd

from kagglekit._io import write_csv
from kagglekit.infer.inputs import InputCache
from kagglekit.run import RunFolder, fold_number

FULL_NAME = "full"  # the fold value of the full fits' rows (their folder's name, and the --fold spec's)


def predict_per_fold(models: Sequence[str | os.PathLike], data: str | os.PathLike, out: str | os.PathLike | None = None, *,
                     average: str = "prob", tta: str = "none", batch_size: int = 64, device: str = "auto", precision: str = "auto",
                     devices: Sequence[str] | None = None, strict: bool = False, base_model=None, **unused) -> pd.DataFrame:
    """Each fold model group of the runs on `data`: a frame of ``id, fold, row_fold, pred`` (+ class logits), one block
    of rows per fold (``full`` last), each in the data's order; written to `out` (atomically) when given.

    A fold's seeds and TTA views are averaged as `average` says (`kagglekit.infer.predict.average_outputs`); with
    several runs, fold K of each (their folds must agree) is averaged too, each run counting once. ``pred`` is in the
    label's space, before the recipe's postprocess, as in ``oof.csv``; ``logit_i`` is the log of the averaged class
    distribution, so its softmax is that distribution. Options that shape a submission (``weights``,
    ``sample_submission``, ``full_weight``) are refused in `unused`.

    Args:
        models: run folders (each with its ``folds.csv``); data: the rows, in the runs' test-file schema (train.csv
            for distillation); the other options as in `kagglekit.infer.predict.predict`.

    Example:
        >>> teacher = predict_per_fold(["runs/teacher"], "data/train.csv", "teacher.csv")
        >>> teacher.groupby("fold").size()  # one block of every row per fold model
    """
    from kagglekit._paths import check_outputs
    from kagglekit.infer.predict import _plan_runs, device_and_amp, inference_devices, run_folders, weight_bits

    given = sorted(name for name, value in unused.items() if value is not None)
    if given:
        raise ValueError(f"--per-fold writes each fold model's predictions for distillation (no blend, no submission): "
                         f"{', '.join('--' + n.replace('_', '-') for n in given)} does not apply. Leave it out.")
    if not models:
        raise ValueError("--models: give at least one run folder.")
    inputs = InputCache(data, device=inference_devices(device, devices)[0])
    plans = _plan_runs(models, inputs, average=average, tta=tta, full_weight=None, strict=strict, base_model=base_model)
    outputs_of = {(plan.meta.output.kind, plan.meta.output.values) for plan in plans}
    if len(outputs_of) > 1 and any(kind != "single" for kind, _ in outputs_of):
        raise ValueError(f"--per-fold: the runs have different outputs {sorted(outputs_of, key=str)}: their class columns cannot "
                         "be averaged. Give runs trained with the same output and label values, or one run.")
    row_fold = _row_folds(plans)
    groups = _groups(plans)
    if out is not None:
        check_outputs({"--out": out}, {"--data": data if isinstance(data, (str, os.PathLike)) else None,
                                       "--models": [path for run in models for path in RunFolder(run).own_paths()]})
    targets = [(dev, device_and_amp(str(dev), precision)[1]) for dev in inference_devices(device, devices)]
    folders = [folder for plan in plans for folder in (*plan.folds, *plan.full)]
    outputs = dict(zip(folders, run_folders(folders, inputs, devices=targets, tta=tta, batch_size=batch_size, base_model=base_model,
                                             quantize=weight_bits(precision))))
    blocks = [_block(key, [[outputs[f] for f in per_run] for per_run in members], plans[0].ids, row_fold, average)
              for key, members in groups.items()]
    frame = pd.concat(blocks, ignore_index=True)
    if out is not None:
        write_csv(out, frame)
    return frame


def _row_folds(plans) -> np.ndarray:
    """(N,) each data id's fold in the runs' ``folds.csv`` (-1: not a training row of theirs); the runs must agree."""
    first = None
    for plan in plans:
        folds = RunFolder(plan.run).read_folds()
        if folds is None:
            raise ValueError(f"--per-fold: {plan.run} has no folds.csv, so which fold each row belongs to cannot be written (the "
                             "student checks its folds against it): pass the run folder written by kagglekit train.")
        mapped = pd.Series(folds["fold"].to_numpy(), index=folds["id"].astype(str)).reindex(plan.ids.astype(str))
        own = mapped.fillna(-1).to_numpy(dtype=np.int64)
        if first is None:
            first = (plan, own)
            continue
        differ = own != first[1]
        if differ.any():
            at = int(np.flatnonzero(differ)[0])
            raise ValueError(f"--per-fold: {plan.run} and {first[0].run} put id {plan.ids[at]!r} in different folds ({own[at]} vs "
                             f"{first[1][at]}): their fold K models trained on different rows, so their values cannot share a "
                             "fold. Give runs with the same folds (n_folds, fold_seed and data), or one run.")
    return first[1]


def _groups(plans) -> dict:
    """{fold K, then ``full``: [the run's model folders of that group, per run]}; every run must have the same groups."""
    groups: dict = {}
    for index, plan in enumerate(plans):
        keys = {}
        for folder in plan.folds:
            keys.setdefault(fold_number(folder), []).append(folder)
        if plan.full:
            keys[FULL_NAME] = list(plan.full)
        if index and set(keys) != set(groups):
            raise ValueError(f"--per-fold: {plan.run} has the fold models {_names(keys)} but {plans[0].run} has {_names(groups)}: "
                             "each fold's rows average fold K of every run. Give runs with the same trained folds, or one run.")
        for key, folders in keys.items():
            groups.setdefault(key, []).append(folders)
    return {key: groups[key] for key in _names(groups)}


def _names(keys) -> list:
    return sorted(keys, key=_group_order)


def _group_order(key) -> tuple:
    """Folds 0, 1, ... first, the full fit last."""
    return key == FULL_NAME, 0 if key == FULL_NAME else key


def _block(key, runs: list, ids: np.ndarray, row_fold: np.ndarray, average: str) -> pd.DataFrame:
    """One fold group's rows: per run the average of its folders (and views), then the runs' mean, in the label's space."""
    from kagglekit.infer.predict import average_outputs

    preds, dists = [], []
    for outputs in runs:
        meta = outputs[0].meta
        logits = [view for out in outputs for view in out.logits]
        preds.append(average_outputs(logits, activation=meta.activation, values=meta.output.values, average=average))
        if meta.output.kind != "single":
            dists.append(_distribution(logits, average))
    block = pd.DataFrame({"id": ids, "fold": key, "row_fold": row_fold, "pred": np.mean(preds, axis=0)})
    if dists:
        logits = np.log(np.clip(np.mean(dists, axis=0), 1e-12, 1.0))  # (N, C): softmax gives the runs' mean distribution
        block = block.assign(**{f"logit_{i}": logits[:, i] for i in range(logits.shape[1])})
    return block


def _distribution(logits: list[np.ndarray], average: str) -> np.ndarray:
    """(N, C) the class distribution of several models' logits: the mean of their softmaxes (``prob``) or the softmax of
    their mean (``logit``), as `kagglekit.infer.predict.average_outputs` averages them."""
    from kagglekit.train.teacher_file import softmax  # the one the student reads these columns back with

    stacked = np.stack(logits).astype(np.float64)  # (M, N, C)
    return softmax(stacked.mean(axis=0)) if average == "logit" else softmax(stacked).mean(axis=0)
