"""Predict: run folders × their model folders → fold average → (weighted) blend of the runs → one checked submission.

Each model folder (every fold and seed, and the full-data fits) is read with its own kagglekit.json
(recipe state, tokenizer, max_len, output); the test file is read once per distinct recipe state and
tokenized once per distinct tokenizer, max_len and view. With several GPUs the model folders of all
runs are spread over them and predicted at once (a thread per device); the results are combined in a
fixed order, so the submission does not depend on timing. Rows are visited sorted by length with
dynamic padding and put back in their original order, and the submission is checked (ids, order,
columns, finite values in the task's range) before it is written. Over 350 lines: the device workers
stay beside the one loop they run, the model folders of the runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple, Sequence

import numpy as np
import pandas as pd
import torch

from kagglekit._io import write_csv
from kagglekit.infer.inputs import InputCache, value_range
from kagglekit.infer.shards import Part, join_parts, plan_parts, shard_rows
from kagglekit.infer.submission import check_submission, read_sample
from kagglekit.losses import activate
from kagglekit.models.forward import run_inference, run_logits
from kagglekit.run import CARD_FILE, META_FILE, FoldMeta, RunFolder, find_model_dirs, model_identities

AVERAGES = ("prob", "logit")
TTAS = ("none", "swap")
WEIGHT_BITS = ("8bit", "4bit")  # predict's precisions that round the weights (bitsandbytes), computing in fp16/bf16
PRECISIONS = ("auto", "fp32", "fp16", "bf16", *WEIGHT_BITS)


def average_outputs(outputs: Sequence[np.ndarray], *, activation: str, values: Sequence[float] = (), average: str = "prob",
                    weights: Sequence[float] | None = None) -> np.ndarray:
    """Average of several models' logits (folds, seeds, full fits, TTA views) in the label's space, shape (N,).

    Args:
        outputs: logits of each model, each (N,) or (N, C).
        activation: sigmoid | identity | expected (the loss's; see `kagglekit.losses.activate`).
        values: the output values (class values or bin centres) for ``expected``.
        average: ``prob``: the mean of each model's predictions. ``logit``: the predictions of the
            mean logits: sigmoid(mean logit) for bce; for classes/bins the expected value under
            softmax(mean logits), i.e. under the normalised geometric mean of the models' class
            distributions; for identity outputs both are the same.
        weights: one weight per output (normalised to sum 1); None: equal weights.
    """
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is unknown: use 'prob' (average predictions) or 'logit' (average logits).")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        assert weights.shape == (len(outputs),) and weights.sum() > 0, "one positive-sum weight per output"
        weights = weights / weights.sum()
    if average == "logit":
        stacked = np.stack(outputs)  # (M, N) or (M, N, C)
        mean = np.mean(stacked, axis=0) if weights is None else np.tensordot(weights, stacked.astype(np.float64), axes=1)
        return activate(torch.from_numpy(mean), activation, values).numpy().astype(np.float64)
    preds = [activate(torch.from_numpy(o), activation, values).numpy().astype(np.float64) for o in outputs]
    return np.mean(preds, axis=0) if weights is None else np.tensordot(weights, np.stack(preds), axes=1)


@dataclass
class RunPrediction:
    """One run's test predictions, fold-averaged, on the submission's scale (after the recipe's postprocess)."""

    name: str  # the run folder's basename
    path: str  # the run folder as given
    ids: np.ndarray  # (N,) test ids, in test order
    preds: np.ndarray  # (N,)
    meta: FoldMeta  # its first fold's
    value_range: tuple[float, float]  # where its submission values must lie


class RunPlan(NamedTuple):
    """One run, checked before any model loads: its model folders, and what its first model says about the test file."""

    run: str | os.PathLike  # the run folder (or model folder) as given
    folds: list[Path]  # CV model folders that take part
    full: list[Path]  # full fits that take part
    meta: FoldMeta  # its first model folder's
    ids: np.ndarray  # (N,) the test ids its recipe reads, in test order
    scale: tuple[float, float] | None  # where its predictions lie on the submission's scale; None: unbounded


class FolderOutputs(NamedTuple):
    """One model folder's raw outputs on the test rows: its meta and the logits of each view (text order)."""

    meta: FoldMeta
    logits: list[np.ndarray]  # one (N,) or (N, C) array per view: the given order, then (tta="swap") the swapped one


Piece = tuple  # (view: bool, row indices, logits of those rows): a part's share of one view, see kagglekit.infer.shards


class FolderFailed(RuntimeError):
    """A model folder failed in a device worker; the message names the folder and the device, the cause is the error."""


def predict_run(run: str | os.PathLike, inputs: InputCache, *, average: str = "prob", tta: str = "none", batch_size: int = 64,
                device: str = "auto", precision: str = "auto", full_weight: float | None = None,
                devices: Sequence[str] | None = None, strict: bool = False, base_model=None) -> RunPrediction:
    """Average the model folders of one run (and, with ``tta="swap"``, both text orders) on the test file.

    Every CV model folder (each fold, each seed) and view counts equally; `average` picks probabilities
    or logits (see `average_outputs`); `full_weight`, `device`, `devices`, `strict` and `base_model` as in `predict`.
    """
    plans = _plan_runs([run], inputs, average=average, tta=tta, full_weight=full_weight, strict=strict, base_model=base_model)
    return _predict_plans(plans, inputs, average=average, tta=tta, batch_size=batch_size, device=device, precision=precision,
                          full_weight=full_weight, devices=devices, base_model=base_model)[0]


def _plan_runs(runs: Sequence[str | os.PathLike], inputs: InputCache, *, average: str, tta: str, full_weight: float | None,
               strict: bool, base_model=None) -> list[RunPlan]:
    """Every check that needs no model loaded: the options, each run's model folders and test file, then the runs
    together (no run twice, one task, ids and output scale)."""
    if tta not in TTAS:
        raise ValueError(f"tta={tta!r} is unknown: use 'none' or 'swap' (both text orders, for symmetric tasks).")
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is unknown: use 'prob' (average predictions) or 'logit' (average logits).")
    check_full_weight(full_weight)
    plans = [_plan_run(run, inputs, tta=tta, full_weight=full_weight, strict=strict) for run in runs]
    check_adapter_bases([folder for plan in plans for folder in (*plan.folds, *plan.full)], base_model)
    _check_distinct_runs(plans)
    _check_runs_agree(plans)
    return plans


def _predict_plans(plans: Sequence[RunPlan], inputs: InputCache, *, average: str, tta: str, batch_size: int, device: str,
                   precision: str, full_weight: float | None, devices: Sequence[str] | None, base_model=None) -> list[RunPrediction]:
    """Predict all the runs' model folders (on every device at once), then combine each run's."""
    targets = [(dev, device_and_amp(str(dev), precision)[1]) for dev in inference_devices(device, devices)]
    jobs = [folder for plan in plans for folder in (*plan.folds, *plan.full)]
    outputs = iter(run_folders(jobs, inputs, devices=targets, tta=tta, batch_size=batch_size, base_model=base_model,
                               quantize=weight_bits(precision)))
    results = []
    for plan in plans:
        members = [(folder, next(outputs), False) for folder in plan.folds] + [(folder, next(outputs), True) for folder in plan.full]
        results.append(_run_prediction(plan.run, members, inputs, average=average, full_weight=full_weight))
    return results


def check_full_weight(full_weight: float | None) -> None:
    """None, or a number in [0, 1]; else a ValueError naming the option."""
    if full_weight is None:
        return
    if isinstance(full_weight, bool) or not isinstance(full_weight, (int, float)) or not 0 <= full_weight <= 1:
        raise ValueError(f"--full-weight {full_weight!r}: expected a number in [0, 1] (the full-data fits' share of each run), "
                         "or leave it out to count each full fit as one more model.")


def select_model_dirs(run: str | os.PathLike, full_weight: float | None, *, what: str = "--models",
                      strict: bool = False) -> tuple[list[Path], list[Path]]:
    """The run's (CV model folders, full fits) that take part with `full_weight` (a share of 0 or 1 leaves a kind out).

    Folders that are not complete models of the run are skipped with a warning, or refused with `strict`
    (see `kagglekit.run.find_model_dirs`).

    Raises:
        ValueError: a `full_weight` the run's folders cannot honour (no full fit; no CV fold and a share below 1);
            with `strict`, a folder that is not one of the run's models.
    """
    check_full_weight(full_weight)
    folds, full = find_model_dirs(run, what=what, strict=strict)
    if full_weight is not None and not full:
        raise ValueError(f"--full-weight {full_weight:g}: run {run} has no full-data model (no full/ or full-seed*/ with "
                         f"{META_FILE}): leave --full-weight out, or train the run's full fit.")
    if full_weight is not None and full_weight < 1 and not folds:
        raise ValueError(f"--full-weight {full_weight:g}: run {run} has no CV fold model (fold*/), so its folds cannot have "
                         "a share: use --full-weight 1, or leave it out.")
    return (folds if full_weight != 1 else []), (full if full_weight != 0 else [])  # a share of 0: not predicted


def check_adapter_bases(folders: Sequence[Path], base_model=None) -> None:
    """Before any model loads: every LoRA model folder among `folders` finds its base model (at the folder recorded at
    training, or among `base_model`) with the recorded digests (`kagglekit.models.base_model.locate_base`), and peft is
    installed. Folders of one base are checked once."""
    from kagglekit.models.base_model import locate_base

    candidates = [base_model] if isinstance(base_model, (str, os.PathLike)) else list(base_model or ())
    seen = set()
    for folder in folders:
        meta = FoldMeta.read(folder)
        identity = meta.extra.get("base_model")
        if not (meta.model or {}).get("lora") or not isinstance(identity, dict):
            continue  # not a LoRA folder (one without its base's identity fails where it loads, naming it)
        key = json.dumps({k: identity.get(k) for k in ("path", "config_sha256", "files")}, sort_keys=True)
        if key not in seen:
            from kagglekit.models.lora import require_peft

            require_peft()
            locate_base(identity, candidates, folder=folder)
            seen.add(key)


def _plan_run(run: str | os.PathLike, inputs: InputCache, *, tta: str, full_weight: float | None, strict: bool) -> RunPlan:
    """The run's model folders that take part, after the checks of one run that need no model loaded."""
    folds, full = select_model_dirs(run, full_weight, strict=strict)
    first = (folds or full)[0]
    meta, recipe, frame = _read_test_for(run, first, inputs)
    if tta == "swap":
        check_symmetric(run, first)
    return RunPlan(run, folds, full, meta, frame["id"].to_numpy(), output_scale(meta, recipe, meta.recipe_state))


def output_scale(meta: FoldMeta, recipe, state: dict) -> tuple[float, float] | None:
    """Where a run's predictions lie on the submission's scale (after the recipe's postprocess), or None: unbounded.

    Classes and bins: from the lowest to the highest value (the prediction is their expected value); one
    score through a sigmoid: [0, 1]; one score as it is (mse, huber): the task's label range when it is finite.

    Example:
        >>> output_scale(meta, recipe, meta.recipe_state)  # STS-B with label_scale 5, classes 0..1
        (0.0, 5.0)
    """
    if meta.output.kind != "single" and meta.output.values:
        ends = [min(meta.output.values), max(meta.output.values)]
    elif meta.activation == "sigmoid":
        ends = [0.0, 1.0]
    else:
        ends = list(recipe.label_range)
        if not np.isfinite(ends).all():
            return None
    ends = np.asarray(recipe.postprocess(np.asarray(ends, dtype=np.float64), state), dtype=np.float64)
    return float(ends.min()), float(ends.max())


def _output_text(meta: FoldMeta) -> str:
    """A run's output kind, as errors name it: ``one score (sigmoid)``, ``classes [0, 1, 2]``, ``bins [...]``."""
    if meta.output.kind == "single":
        return f"one score ({meta.activation})"
    return f"{meta.output.kind} {[float(v) for v in meta.output.values]}"


def device_and_amp(device: str, precision: str):
    """(torch.device, autocast dtype or None for fp32), chosen as predict chooses them for inference.

    ``precision`` 8bit or 4bit (`WEIGHT_BITS`) computes as ``auto`` does (fp16 on a T4) with the weights rounded
    (`weight_bits`); it needs CUDA and bitsandbytes, checked here, before predict reads or writes anything.
    """
    from kagglekit.kaggle import amp_dtype, resolve_device, resolve_precision

    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is unknown: use one of {list(PRECISIONS)}.")
    dev = resolve_device(device)
    if precision in WEIGHT_BITS:
        if dev.type != "cuda":
            raise ValueError(f"precision={precision}: {precision[0]}-bit weights (bitsandbytes) need a CUDA device, and predict runs "
                             f"on {dev}: use --precision auto (fp32 on a CPU) here, and {precision} on the GPU.")
        from kagglekit.models.lora import check_quantize

        check_quantize(precision, dev)
        precision = "auto"
    return dev, amp_dtype(resolve_precision(precision, dev))


def weight_bits(precision: str) -> str | None:
    """The ``quantize`` a predict precision asks of `load_model_folder`: 8bit, 4bit, or None (the folder's own)."""
    return precision if precision in WEIGHT_BITS else None


def inference_devices(device: str = "auto", devices: Sequence[str] | None = None) -> list[torch.device]:
    """The devices predict runs model folders on, one worker each.

    Args:
        device: auto | cpu | cuda. ``auto`` with two or more visible GPUs gives all of them (``cuda:0``,
            ``cuda:1``, ...); otherwise the one device `kagglekit.kaggle.resolve_device` picks.
        devices: the devices to use, e.g. ``["cuda:0", "cuda:1"]`` (a device may repeat: two workers share it);
            only with ``device="auto"``.

    Example:
        >>> inference_devices("auto")  # on Kaggle's T4×2
        [device(type='cuda', index=0), device(type='cuda', index=1)]
    """
    from kagglekit import kaggle

    if devices is None:
        gpus = kaggle.visible_gpus() if device == "auto" else []
        return [torch.device("cuda", i) for i in gpus] if len(gpus) > 1 else [kaggle.resolve_device(device)]
    if isinstance(devices, str):
        raise TypeError(f"devices={devices!r}: pass a list of devices, e.g. devices=['cuda:0', 'cuda:1'] (--devices cuda:0,cuda:1).")
    if device != "auto":
        raise ValueError(f"device={device!r} and devices={list(devices)!r} are both given: give one (devices lists every device to use).")
    if not devices:
        raise ValueError("--devices is empty: list the devices to predict on, e.g. --devices cuda:0,cuda:1.")
    out = []
    for name in devices:
        try:
            dev = torch.device(str(name).strip())
        except RuntimeError:
            dev = None
        if dev is None or dev.type not in ("cpu", "cuda"):
            raise ValueError(f"--devices: {name!r} is not a device: use cpu or cuda:N, e.g. --devices cuda:0,cuda:1.")
        if dev.type == "cuda":
            gpus = kaggle.visible_gpus()
            if (dev.index or 0) not in gpus:
                raise ValueError(f"--devices: {name} is not visible: this process sees {len(gpus)} CUDA device(s) "
                                 f"{[f'cuda:{i}' for i in gpus]}; list those, or turn the notebook's GPUs on.")
        out.append(dev)
    return out


def assign_devices(n_folders: int, devices: Sequence) -> list[list[int]]:
    """Which model folders each device predicts if all take equally long: round-robin in folder order.

    For the record (the log); the actual schedule is the queue of `run_folders`, where a device that
    finishes early takes the next folder.

    Example:
        >>> assign_devices(5, ["cuda:0", "cuda:1"])
        [[0, 2, 4], [1, 3]]
    """
    if isinstance(n_folders, bool) or not isinstance(n_folders, int) or n_folders < 0:
        raise ValueError(f"n_folders must be a count (0 or more), got n_folders={n_folders!r}.")
    if not devices:
        raise ValueError("devices is empty: pass the devices to predict on, e.g. ['cuda:0', 'cuda:1'].")
    return [list(range(i, n_folders, len(devices))) for i in range(len(devices))]


def folder_outputs(folder: Path, inputs: InputCache, *, tta: str, batch_size: int, device, amp_dtype,
                   verbose: bool = True, base_model=None, part: Part | None = None, quantize: str | None = None):
    """Load one model folder onto `device`, predict the test rows (each view), and let the model go.

    Returns:
        `FolderOutputs`; with `part` (`kagglekit.infer.shards.Part`, one device's share of a folder spread over
        several), only the part's views and rows: (meta, test rows, pieces), each piece (view, row indices,
        logits) for `kagglekit.infer.shards.join_parts`.
    """
    from kagglekit.models.pair_model import load_model_folder

    # the thread's current CUDA device is `device`: whatever is made without an explicit device lands on it
    with torch.cuda.device(device) if device.type == "cuda" and device.index is not None else contextlib.nullcontext():
        model, tokenizer, meta = load_model_folder(folder, device=device, base_model=base_model, quantize=quantize)
        if part is not None:
            pieces = _part_logits(folder, model, tokenizer, meta, inputs, part, batch_size=batch_size, device=device,
                                  amp_dtype=amp_dtype, verbose=verbose)
            del model
            return pieces
        logits = _view_logits(folder, model, tokenizer, meta, inputs, tta=tta, batch_size=batch_size, device=device,
                              amp_dtype=amp_dtype, verbose=verbose)
        del model  # dropped before this worker loads the next one: one model per device at a time
    return FolderOutputs(meta, logits)


def _part_logits(folder: Path, model, tokenizer, meta: FoldMeta, inputs: InputCache, part: Part, *, batch_size: int,
                 device, amp_dtype, verbose: bool) -> tuple[FoldMeta, int, list[Piece]]:
    """One part's (meta, test rows, pieces): for each of its views, its shard's rows and their logits."""
    pieces = []
    for view in part.views:
        enc = inputs.encodings(meta, tokenizer, folder, model.feature_names, swap=view)
        rows = shard_rows(enc.lengths, part.shard, part.shards)
        mine = enc if part.shards == 1 else enc.subset(rows)
        pieces.append((view, rows, run_logits(model, mine, batch_size=batch_size, device=device, amp_dtype=amp_dtype)))
    if verbose:
        print(f"predicted {len(rows)} of {len(enc)} rows with {folder} ({part.describe()}; max_len {meta.max_len}, {device})",
              flush=True)
    return meta, len(enc), pieces


def run_folders(folders: Sequence[Path], inputs: InputCache, *, devices: Sequence[tuple], tta: str, batch_size: int,
                verbose: bool = True, base_model=None, quantize: str | None = None) -> list[FolderOutputs]:
    """`folder_outputs` of every folder, in the order of `folders`, whatever order they finish in.

    Args:
        folders: model folders (of one run or several).
        devices: (torch.device, autocast dtype or None) per worker. One: the folders in turn. At most as
            many as folders: a thread per device takes the next folder from a shared queue, loads it onto
            its device and predicts (CUDA kernels release the GIL, so the devices work at once). More
            devices than folders: each folder is cut into parts, a copy of its model on each device
            (`kagglekit.infer.shards.plan_parts`: the two text orders of swap TTA, or shards of the rows).
        tta, batch_size, verbose, base_model, quantize: as in `folder_outputs`.

    Raises:
        FolderFailed: a folder failed in a worker (the first in folder order, if several did); the others
            stop after their current folder.
    """
    parts = plan_parts(len(folders), len(devices), tta)
    split = len(parts) > len(folders)

    def one(part, dev, amp):
        return folder_outputs(folders[part.folder], inputs, tta=tta, batch_size=batch_size, device=dev, amp_dtype=amp,
                              verbose=verbose, base_model=base_model, part=part if split else None, quantize=quantize)

    if len(devices) == 1 or len(parts) <= 1:
        return [one(part, *devices[0]) for part in parts]
    workers = list(devices[: len(parts)])
    if verbose and split:
        print(f"predicting {len(folders)} model folder(s) on {len(workers)} devices at once, a copy on each: "
              + "; ".join(f"{dev}: {part.describe()}" for (dev, _), part in zip(workers, parts)), flush=True)
    elif verbose:
        plan = assign_devices(len(folders), workers)
        print(f"predicting {len(folders)} model folders on {len(workers)} devices at once ("
              + ", ".join(f"{dev}: ~{len(p)}" for (dev, _), p in zip(workers, plan)) + ")", flush=True)
    results = _run_queue(parts, workers, one, [folders[part.folder] for part in parts])
    if not split:
        return results
    outputs = []
    for index in range(len(folders)):
        mine = [results[k] for k, part in enumerate(parts) if part.folder == index]
        meta, n_rows = mine[0][0], mine[0][1]
        outputs.append(FolderOutputs(meta, join_parts(n_rows, [piece for _, _, pieces in mine for piece in pieces])))
    return outputs


def _run_queue(items: Sequence, workers: Sequence[tuple], one, names: Sequence[Path]) -> list:
    """``one(item, device, amp)`` of every item, by a thread per worker taking the next item from a shared queue;
    the results in item order. A failure stops the queue and raises `FolderFailed`, naming ``names[item]``."""
    results: list = [None] * len(items)
    failures: list[tuple[int, object, BaseException]] = []
    queue, lock, stop = iter(range(len(items))), threading.Lock(), threading.Event()

    def work(dev, amp):
        while not stop.is_set():
            with lock:
                index = next(queue, None)
            if index is None:
                return
            try:
                results[index] = one(items[index], dev, amp)
            except BaseException as err:  # noqa: BLE001 -- re-raised in the main thread, naming the folder
                failures.append((index, dev, err))
                stop.set()

    threads = [threading.Thread(target=work, args=pair, name=f"kagglekit-predict-{pair[0]}", daemon=True) for pair in workers]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    finally:
        stop.set()  # an interrupted main thread: the workers take no further folder
    if failures:
        index, dev, err = min(failures, key=lambda f: f[0])
        raise FolderFailed(f"predict: model folder {names[index]} failed on {dev}: {type(err).__name__}: {err}") from err
    return results


def load_folds(folders: Sequence[Path], device, base_model=None, quantize: str | None = None) -> Iterator[tuple[Path, object, object, FoldMeta]]:
    """(folder, model, tokenizer, meta) of each model folder, loaded onto `device` only when the loop asks for it
    (a LoRA folder onto its base: `base_model` as in `predict`)."""
    from kagglekit.models.pair_model import load_model_folder

    for folder in folders:
        model, tokenizer, meta = load_model_folder(folder, device=device, base_model=base_model, quantize=quantize)
        yield folder, model, tokenizer, meta
        del model  # dropped before the next one loads: predict holds one model at a time


def _view_logits(folder: Path, model, tokenizer, meta: FoldMeta, inputs: InputCache, *, tta: str, batch_size: int, device,
                 amp_dtype, verbose: bool) -> list[np.ndarray]:
    """One loaded model's logits on the test rows: the given text order, then (tta="swap") the swapped one."""
    logits = []
    for swap in ((False, True) if tta == "swap" else (False,)):
        enc = inputs.encodings(meta, tokenizer, folder, model.feature_names, swap=swap)
        logits.append(run_logits(model, enc, batch_size=batch_size, device=device, amp_dtype=amp_dtype))
    if verbose:
        print(f"predicted {len(enc)} rows with {folder} (max_len {meta.max_len}{', both text orders' if tta == 'swap' else ''}"
              f"{f', {device}' if device.type == 'cuda' else ''})", flush=True)
    return logits


def average_folds(run: str | os.PathLike, folds: Iterable[tuple[Path, object, object, FoldMeta]], inputs: InputCache, *,
                  average: str, tta: str, batch_size: int, device, amp_dtype, verbose: bool = True,
                  full: Iterable[Path] = (), full_weight: float | None = None) -> RunPrediction:
    """The fold loop of one run over loaded models: `kagglekit.infer.scorer.Scorer`'s.

    Args:
        run: the run folder (names the result).
        folds: (folder, model, tokenizer, meta) per fold: `load_folds` (one model in memory at a time),
            or the folds a Scorer keeps loaded.
        inputs: the test rows (a file or an in-memory frame).
        average, tta, batch_size: as in `predict_run`.
        device, amp_dtype: resolved (a torch.device; None for fp32).
        verbose: print a line per fold.
        full, full_weight: which of the folders are full-data fits, and their share (as in `predict`).
    """
    full = {Path(f) for f in full}
    members = []
    for folder, model, tokenizer, meta in folds:
        logits = _view_logits(folder, model, tokenizer, meta, inputs, tta=tta, batch_size=batch_size, device=device,
                              amp_dtype=amp_dtype, verbose=verbose)
        members.append((folder, FolderOutputs(meta, logits), Path(folder) in full))
        del model
    return _run_prediction(run, members, inputs, average=average, full_weight=full_weight)


def _run_prediction(run: str | os.PathLike, members: Sequence[tuple[Path, FolderOutputs, bool]], inputs: InputCache, *,
                    average: str, full_weight: float | None) -> RunPrediction:
    """Combine one run's model folders, (folder, outputs, is a full fit) each, into its prediction.

    `full_weight` None: every folder (and view) counts equally. A number w: (1 - w) · mean of the CV folders
    + w · mean of the full fits, in probabilities or logits as `average` says.
    """
    from kagglekit.infer.ensemble import run_name

    first_folder, first = members[0][0], members[0][1].meta
    for folder, out, _ in members:
        _check_same_output(out.meta, folder, first, first_folder)
    outputs = [logits for _, out, _ in members for logits in out.logits]
    weights = None
    if full_weight is not None:
        counts = {full: sum(len(out.logits) for _, out, f in members if f == full) for full in (False, True)}
        shares = {False: 1 - full_weight, True: full_weight}
        weights = [shares[full] / counts[full] for _, out, full in members for _ in out.logits]
    recipe, frame = inputs.frame(first, first_folder)
    state = first.recipe_state
    preds = average_outputs(outputs, activation=first.activation, values=first.output.values, average=average, weights=weights)
    preds = np.asarray(recipe.postprocess(preds, state), dtype=np.float64)  # e.g. back to STS-B's 0-5
    return RunPrediction(run_name(run), str(run), frame["id"].to_numpy(), preds, first, value_range(recipe, state))


def _read_test_for(run: str | os.PathLike, folder: Path, inputs: InputCache):
    """Read the test file with the run's own recipe before any model loads; an error names the run and its task.

    Returns:
        (the folder's meta, the recipe that read the test file, the normalized test frame).
    """
    meta = FoldMeta.read(folder)
    embedding = meta.recipe_state.get("embedding_model")
    if embedding:  # a missing or changed embedding-model copy is no test-file problem: say so as it is
        from kagglekit.models.embeddings import locate_embedder

        locate_embedder(folder, embedding)
    try:
        recipe, frame = inputs.frame(meta, folder)
    except ValueError as err:
        raise ValueError(
            f"--models {run} (trained with task={meta.task!r}) cannot read --data: {err} A run reads the test file with "
            "its training settings: pass a test file of its task, or leave the run out."
        ) from None
    return meta, recipe, frame


def _check_same_output(meta: FoldMeta, folder: Path, first: FoldMeta, first_folder: Path) -> None:
    """The folds of one run must agree on what they predict, or their average means nothing."""
    for key in ("task", "activation", "output"):
        if getattr(meta, key) != getattr(first, key):
            raise ValueError(
                f"--models: {folder} has {key}={getattr(meta, key)!r} but {first_folder} has {getattr(first, key)!r}: "
                "the folds of one run folder must come from one training config; split them into separate run folders."
            )


def check_symmetric(run: str | os.PathLike, folder: Path) -> None:
    """Refuse swap TTA unless the run was trained with ``swap=true``.

    The ``swap`` config key is where a user declares a task symmetric (the order of the two texts
    does not change the label), and training then saw both orders; recipes cannot tell by
    themselves (``pairs`` reads symmetric STS-B and asymmetric entailment data alike, USPPPM keeps
    the CPC context in text_b only). The key is read from the run card (``run.json``).
    """
    card_run = next((r for r in (RunFolder(run), RunFolder(Path(folder).parent)) if r.card_path.is_file()), None)
    if card_run is None:
        raise ValueError(
            f"--tta swap: {run} has no {CARD_FILE} (nor its parent), so whether it was trained as a symmetric task "
            "(config key swap) is unknown: pass the whole run folder written by kagglekit train, or drop --tta."
        )
    config = card_run.read_card().get("config") or {}
    if not config.get("swap", False):
        raise ValueError(
            f"--tta swap: run {run} (task {config.get('task', '?')!r}) was trained with swap=false, so its task is not "
            "declared symmetric and swapped pairs are inputs it never saw. Drop --tta, or retrain with swap=true "
            "if the order of the two texts does not matter."
        )


def blend_runs(runs: Sequence[RunPrediction], weights: np.ndarray | None = None, *, rank: bool = False) -> np.ndarray:
    """The runs' weighted mean (equal weights when None); `rank`: of each run's rank / N instead."""
    from kagglekit.infer.ensemble import rank_normalise

    columns = np.column_stack([rank_normalise(r.preds) if rank else r.preds for r in runs])  # (N, R)
    weights = np.full(len(runs), 1.0 / len(runs)) if weights is None else np.asarray(weights, dtype=np.float64)
    return columns @ (weights / weights.sum())


def predict(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    sample_submission: str | os.PathLike | None = None,
    average: str = "prob",
    tta: str = "none",
    weights: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
    full_weight: float | None = None,
    devices: Sequence[str] | None = None,
    strict: bool = False,
    base_model: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Average the model folders of each run, blend the runs, check the submission, then write it.

    Args:
        models: run folders or single model folders; each may have its own task settings, tokenizer
            and max_len (read from its kagglekit.json). A run folder's models are its CV folds
            (``fold{K}/``, and ``fold{K}-seed{S}/`` for more seeds), each counting equally, and its
            full-data fits (``full/``, ``full-seed{S}/``), as `full_weight` says.
        data: the test file, in the schema of the runs' task.
        out: where to write the submission CSV (atomically); beside it ``<stem>_models.csv`` holds
            each run's predictions (id + one column per run). None: only return the submission.
        sample_submission: optional; its ids (and their order) and columns rule the output.
        average: prob | logit: how the folds (and TTA views) of a run are averaged (see `average_outputs`).
        tta: none | swap: swap also predicts each pair with its texts exchanged (runs trained with swap=true).
        weights: a weights.json from ``kagglekit ensemble``: the runs' blend weights (and ranks).
            None: the runs' equal average.
        batch_size: rows per forward pass.
        device: auto | cpu | cuda. auto with two or more visible GPUs predicts on all of them at once,
            one model folder per GPU at a time; with fewer folders than GPUs, a copy of each folder per GPU,
            each with half of the rows or (tta="swap") one text order (the submission is the same as on one device).
        precision: auto (fp16/bf16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16 | 8bit | 4bit (CUDA and bitsandbytes:
            every model folder's linear layers in 8 or 4 bits, computing in fp16 on a T4; a LoRA folder's base, merged
            first when its run set merge_adapter; 8-bit scores about as well as fp16 and fits a 7-9B model on a T4).
        full_weight: None: each full-data fit is one more model, weighing as much as a fold model. A
            number w in [0, 1]: each run's prediction is (1 - w) · mean(fold models) + w · mean(full fits)
            (of the logits with ``average="logit"``); every run must then have a full fit.
        devices: the devices to spread the model folders over, e.g. ``["cuda:0", "cuda:1"]``; None: as
            `device` says (see `inference_devices`).
        strict: refuse a run folder holding a folder that is not one of its complete models (a copy such as
            ``fold0_backup/``, an unfinished fold, a folder whose kagglekit.json disagrees with its name or the
            run); default: skip it with a warning naming it (see `kagglekit.run.find_model_dirs`).
        base_model: runs trained with LoRA (``lora_r`` > 0) hold adapters, not their base model: the base's folder
            (or several, one per base), checked against the digests each fold folder recorded. None: the folder
            recorded at training. A folder that is not the base is refused, naming both digests.

    The runs are checked before any model loads: no run given twice (by path, symbolic links resolved,
    or by identity: a copy, or a run beside one of its own model folders), one task and submission format,
    the same test ids, and predictions on one scale (`output_scale`). `out` and its ``<stem>_models.csv``
    must not be an input (the test file, the sample submission, weights.json) nor lie inside a run folder.

    Returns:
        The submission frame: the id column and the target column, in test (or sample) order; with `per_fold`, the
        per-fold rows.

    Example:
        >>> predict(["runs/deberta", "runs/electra"], "data/test.csv", "submission.csv", weights="weights.json")
        >>> predict(["runs/deberta"], "data/test.csv", "submission.csv", full_weight=0.5, devices=["cuda:0", "cuda:1"])
        >>> predict(["runs/qwen-lora"], "data/test.csv", "submission.csv", base_model="/kaggle/input/qwen2.5-7b")
    """
    from kagglekit._paths import check_outputs
    from kagglekit.infer.ensemble import match_weights

    if not models:
        raise ValueError("--models: give at least one run folder.")
    if average not in AVERAGES:
        raise ValueError(f"--average {average!r} is unknown: use 'prob' or 'logit'.")
    check_full_weight(full_weight)
    inputs = InputCache(data, device=inference_devices(device, devices)[0])  # where embedding features are computed
    plans = _plan_runs(models, inputs, average=average, tta=tta, full_weight=full_weight, strict=strict, base_model=base_model)
    if out is not None:
        check_outputs({"--out": out, "--out (its per-run file)": models_path(out)},
                      {"--data": data if isinstance(data, (str, os.PathLike)) else None, "--sample-submission": sample_submission,
                       "--weights": weights, "--models": [path for run in models for path in RunFolder(run).own_paths()]})
    blend_weights, rank = match_weights(models, weights) if weights is not None else (None, False)  # fail before inference
    runs = _predict_plans(plans, inputs, average=average, tta=tta, batch_size=batch_size, device=device, precision=precision,
                          full_weight=full_weight, devices=devices, base_model=base_model)
    low, high = max(r.value_range[0] for r in runs), min(r.value_range[1] for r in runs)
    blended = blend_runs(runs, blend_weights, rank=rank)
    clipped = int(((blended < low) | (blended > high)).sum())
    if clipped:  # identity outputs (mse, huber) may leave the label range; NaN stays NaN for the check
        print(f"clipped {clipped} prediction(s) into the task's range [{low:g}, {high:g}]", flush=True)
        blended = np.clip(blended, low, high)

    id_col, target_col = runs[0].meta.id_col, runs[0].meta.target_col
    ids = runs[0].ids
    sub = pd.DataFrame({id_col: ids, target_col: blended})
    models_frame = pd.DataFrame({id_col: ids, **dict(zip(_column_names(runs), (r.preds for r in runs)))})
    columns, order = [id_col, target_col], ids
    if sample_submission is not None:
        sample = read_sample(sample_submission, id_col, target_col, ids)
        columns, order = list(sample.columns), sample[id_col].to_numpy()
        sub = sub.set_index(id_col).loc[order].reset_index()[columns]
        models_frame = models_frame.set_index(id_col).loc[order].reset_index()
    check_submission(sub, id_col=id_col, ids=order, columns=columns, value_range=(low, high))
    if out is not None:  # every check has passed: nothing is written before this line
        write_csv(models_path(out), models_frame)
        write_csv(out, sub)
    return sub


def models_path(out: str | os.PathLike) -> Path:
    """Where the per-run predictions go beside a submission: ``<stem>_models.csv``."""
    out = Path(out)
    return out.with_name(f"{out.stem}_models.csv")


def _column_names(runs: Sequence[RunPrediction]) -> list[str]:
    names = [r.name for r in runs]
    return names if len(set(names)) == len(names) else [r.path for r in runs]


def _check_distinct_runs(plans: Sequence[RunPlan]) -> None:
    """Refuse a run given twice: two spellings of one folder, a copy of a run (the same run_id and model names), or a
    run beside one of its own model folders. Each would count its models twice in the blend."""
    seen: dict[tuple[str, str], RunPlan] = {}
    for plan in plans:
        for key, folder in model_identities(plan.run, [*plan.folds, *plan.full]).items():
            other = seen.setdefault(key, plan)
            if other is not plan:
                same = (f"both are {key[1]}" if key[0] == "path" else
                        f"run_id {key[0]}: a copy of the run, or the same settings and folds trained twice")
                raise ValueError(f"--models {plan.run} and {other.run} hold the same model {folder.name}/ ({same}): it would count "
                                 "twice in the blend. Give each run once (weigh runs with --weights; more models of one run: "
                                 "train seeds).")


def _check_runs_agree(runs: Sequence[RunPlan]) -> None:
    """The runs blend into one submission: one task and format, the same test ids, predictions on one scale."""
    first = runs[0]
    for run in runs[1:]:
        for key in ("task", "id_col", "target_col"):
            if getattr(run.meta, key) != getattr(first.meta, key):
                raise ValueError(
                    f"--models: {run.run} was trained with {key}={getattr(run.meta, key)!r} but {first.run} with "
                    f"{getattr(first.meta, key)!r}: blend runs of one task and submission format."
                )
        if not np.array_equal(run.ids, first.ids):
            raise ValueError(f"--models: {run.run} and {first.run} read different ids from the test file (id column settings "
                             "differ): blend runs whose recipes read the same ids.")
    scaled = [run for run in runs if run.scale is not None]
    for run in scaled[1:]:
        if not np.allclose(run.scale, scaled[0].scale, rtol=0, atol=1e-9):
            ref = scaled[0]
            raise ValueError(
                f"--models: {run.run} predicts {_output_text(run.meta)} on the scale [{run.scale[0]:g}, {run.scale[1]:g}] but "
                f"{ref.run} predicts {_output_text(ref.meta)} on [{ref.scale[0]:g}, {ref.scale[1]:g}]: a blend of predictions on "
                "different scales means nothing. Blend runs trained on the same labels (the same label values and label_scale)."
            )


def predict_folder(folder: str | os.PathLike, data: str | os.PathLike, *, batch_size: int = 64, device: str = "auto",
                   precision: str = "auto", base_model=None) -> tuple[pd.DataFrame, FoldMeta]:
    """Predictions of one model folder on a test file: a frame (id, pred) in test order, and the folder's `FoldMeta`.

    ``pred`` is in the label's space (before the recipe's postprocess); `base_model` as in `predict`.
    """
    from kagglekit.models.pair_model import load_model_folder

    dev, amp_dtype = device_and_amp(device, precision)
    model, tokenizer, meta = load_model_folder(folder, device=dev, base_model=base_model, quantize=weight_bits(precision))
    inputs = InputCache(data, device=dev)
    enc = inputs.encodings(meta, tokenizer, Path(folder), model.feature_names)
    preds = run_inference(model, enc, batch_size=batch_size, device=dev, amp_dtype=amp_dtype, activation=meta.activation,
                          values=meta.output.values)
    return pd.DataFrame({"id": inputs.frame(meta, folder)[1]["id"].to_numpy(), "pred": preds}), meta
