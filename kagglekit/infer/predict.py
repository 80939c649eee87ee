"""Predict: run folders × their folds → fold average → (weighted) blend of the runs → one checked submission.

Each fold is read with its own kagglekit.json (recipe state, tokenizer, max_len, output); the test file
is read once per distinct recipe state and tokenized once per distinct tokenizer, max_len and view.
Rows are visited sorted by length with dynamic padding and put back in their original order, and the
submission is checked (ids, order, columns, finite values in the task's range) before it is written.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np
import pandas as pd
import torch

from kagglekit._io import write_csv
from kagglekit.infer.inputs import InputCache, value_range
from kagglekit.infer.submission import check_submission, read_sample
from kagglekit.losses import activate
from kagglekit.models.forward import run_inference, run_logits
from kagglekit.run import CARD_FILE, FoldMeta, RunFolder, find_fold_dirs

AVERAGES = ("prob", "logit")
TTAS = ("none", "swap")


def average_outputs(outputs: Sequence[np.ndarray], *, activation: str, values: Sequence[float] = (), average: str = "prob") -> np.ndarray:
    """Equal-weight average of several models' logits (folds, TTA views) in the label's space, shape (N,).

    Args:
        outputs: logits of each model, each (N,) or (N, C).
        activation: sigmoid | identity | expected (the loss's; see `kagglekit.losses.activate`).
        values: the output values (class values or bin centres) for ``expected``.
        average: ``prob``: the mean of each model's predictions. ``logit``: the predictions of the
            mean logits: sigmoid(mean logit) for bce; for classes/bins the expected value under
            softmax(mean logits), i.e. under the normalised geometric mean of the models' class
            distributions; for identity outputs both are the same.
    """
    if average not in AVERAGES:
        raise ValueError(f"average={average!r} is unknown: use 'prob' (average predictions) or 'logit' (average logits).")
    if average == "logit":
        mean = torch.from_numpy(np.mean(np.stack(outputs), axis=0))
        return activate(mean, activation, values).numpy().astype(np.float64)
    return np.mean([activate(torch.from_numpy(o), activation, values).numpy().astype(np.float64) for o in outputs], axis=0)


@dataclass
class RunPrediction:
    """One run's test predictions, fold-averaged, on the submission's scale (after the recipe's postprocess)."""

    name: str  # the run folder's basename
    path: str  # the run folder as given
    ids: np.ndarray  # (N,) test ids, in test order
    preds: np.ndarray  # (N,)
    meta: FoldMeta  # its first fold's
    value_range: tuple[float, float]  # where its submission values must lie


def predict_run(run: str | os.PathLike, inputs: InputCache, *, average: str = "prob", tta: str = "none", batch_size: int = 64,
                device: str = "auto", precision: str = "auto") -> RunPrediction:
    """Average the folds of one run (and, with ``tta="swap"``, both text orders) on the test file.

    Every fold and view counts equally; `average` picks probabilities or logits (see `average_outputs`).
    """
    if tta not in TTAS:
        raise ValueError(f"tta={tta!r} is unknown: use 'none' or 'swap' (both text orders, for symmetric tasks).")
    folders = find_fold_dirs(run)
    _read_test_for(run, folders[0], inputs)
    if tta == "swap":
        check_symmetric(run, folders[0])
    dev, amp_dtype = device_and_amp(device, precision)
    return average_folds(run, load_folds(folders, dev), inputs, average=average, tta=tta, batch_size=batch_size,
                         device=dev, amp_dtype=amp_dtype)


def device_and_amp(device: str, precision: str):
    """(torch.device, autocast dtype or None for fp32), chosen as predict chooses them for inference."""
    from kagglekit.kaggle import amp_dtype, resolve_device, resolve_precision

    dev = resolve_device(device)
    return dev, amp_dtype(resolve_precision(precision, dev))


def load_folds(folders: Sequence[Path], device) -> Iterator[tuple[Path, object, object, FoldMeta]]:
    """(folder, model, tokenizer, meta) of each model folder, loaded onto `device` only when the loop asks for it."""
    from kagglekit.models.pair_model import load_model_folder

    for folder in folders:
        model, tokenizer, meta = load_model_folder(folder, device=device)
        yield folder, model, tokenizer, meta
        del model  # dropped before the next one loads: predict holds one model at a time


def average_folds(run: str | os.PathLike, folds: Iterable[tuple[Path, object, object, FoldMeta]], inputs: InputCache, *,
                  average: str, tta: str, batch_size: int, device, amp_dtype, verbose: bool = True) -> RunPrediction:
    """The fold loop of one run, shared by `predict_run` and `kagglekit.infer.scorer.Scorer`.

    Args:
        run: the run folder (names the result).
        folds: (folder, model, tokenizer, meta) per fold: `load_folds` (one model in memory at a time),
            or the folds a Scorer keeps loaded.
        inputs: the test rows (a file or an in-memory frame).
        average, tta, batch_size: as in `predict_run`.
        device, amp_dtype: resolved (a torch.device; None for fp32).
        verbose: print a line per fold.
    """
    from kagglekit.infer.ensemble import run_name

    outputs, first, first_folder = [], None, None
    for folder, model, tokenizer, meta in folds:
        if first is None:
            first, first_folder = meta, folder
        _check_same_output(meta, folder, first, first_folder)
        views = (False, True) if tta == "swap" else (False,)
        for swap in views:
            enc = inputs.encodings(meta, tokenizer, folder, model.feature_names, swap=swap)
            outputs.append(run_logits(model, enc, batch_size=batch_size, device=device, amp_dtype=amp_dtype))
        if verbose:
            print(f"predicted {len(enc)} rows with {folder} (max_len {meta.max_len}{', both text orders' if tta == 'swap' else ''})", flush=True)
        del model
    recipe, frame = inputs.frame(first, first_folder)
    state = first.recipe_state
    preds = average_outputs(outputs, activation=first.activation, values=first.output.values, average=average)
    preds = np.asarray(recipe.postprocess(preds, state), dtype=np.float64)  # e.g. back to STS-B's 0-5
    return RunPrediction(run_name(run), str(run), frame["id"].to_numpy(), preds, first, value_range(recipe, state))


def _read_test_for(run: str | os.PathLike, folder: Path, inputs: InputCache) -> None:
    """Read the test file with the run's own recipe before any model loads; an error names the run and its task."""
    meta = FoldMeta.read(folder)
    embedding = meta.recipe_state.get("embedding_model")
    if embedding:  # a missing or changed embedding-model copy is no test-file problem: say so as it is
        from kagglekit.models.embeddings import locate_embedder

        locate_embedder(folder, embedding)
    try:
        inputs.frame(meta, folder)
    except ValueError as err:
        raise ValueError(
            f"--models {run} (trained with task={meta.task!r}) cannot read --data: {err} A run reads the test file with "
            "its training settings: pass a test file of its task, or leave the run out."
        ) from None


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
) -> pd.DataFrame:
    """Average the folds of each run, blend the runs, check the submission, then write it.

    Args:
        models: run folders (``fold*/`` inside) or single model folders; each may have its own
            task settings, tokenizer and max_len (read from its kagglekit.json).
        data: the test file, in the schema of the runs' task.
        out: where to write the submission CSV (atomically); beside it ``<stem>_models.csv`` holds
            each run's predictions (id + one column per run). None: only return the submission.
        sample_submission: optional; its ids (and their order) and columns rule the output.
        average: prob | logit: how the folds (and TTA views) of a run are averaged (see `average_outputs`).
        tta: none | swap: swap also predicts each pair with its texts exchanged (runs trained with swap=true).
        weights: a weights.json from ``kagglekit ensemble``: the runs' blend weights (and ranks).
            None: the runs' equal average.
        batch_size: rows per forward pass.
        device: auto | cpu | cuda.
        precision: auto (fp16/bf16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16.

    Returns:
        The submission frame: the id column and the target column, in test (or sample) order.

    Example:
        >>> predict(["runs/deberta", "runs/electra"], "data/test.csv", "submission.csv", weights="weights.json")
    """
    from kagglekit.infer.ensemble import match_weights

    if not models:
        raise ValueError("--models: give at least one run folder.")
    twice = sorted({str(m) for m in models if [str(x) for x in models].count(str(m)) > 1})
    if twice:
        raise ValueError(f"--models: {twice} given twice: give each run once (use --weights to weigh runs).")
    if average not in AVERAGES:
        raise ValueError(f"--average {average!r} is unknown: use 'prob' or 'logit'.")
    blend_weights, rank = match_weights(models, weights) if weights is not None else (None, False)  # fail before inference
    from kagglekit.kaggle import resolve_device

    inputs = InputCache(data, device=resolve_device(device))
    runs = [predict_run(m, inputs, average=average, tta=tta, batch_size=batch_size, device=device, precision=precision) for m in models]
    _check_runs_agree(runs)
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


def _check_runs_agree(runs: Sequence[RunPrediction]) -> None:
    first = runs[0]
    for run in runs[1:]:
        for key in ("task", "id_col", "target_col"):
            if getattr(run.meta, key) != getattr(first.meta, key):
                raise ValueError(
                    f"--models: {run.path} was trained with {key}={getattr(run.meta, key)!r} but {first.path} with "
                    f"{getattr(first.meta, key)!r}: blend runs of one task and submission format."
                )
        if not np.array_equal(run.ids, first.ids):
            raise ValueError(f"--models: {run.path} and {first.path} read different ids from the test file (id column settings "
                             "differ): blend runs whose recipes read the same ids.")


def predict_folder(folder: str | os.PathLike, data: str | os.PathLike, *, batch_size: int = 64, device: str = "auto",
                   precision: str = "auto") -> tuple[pd.DataFrame, FoldMeta]:
    """Predictions of one model folder on a test file: a frame (id, pred) in test order, and the folder's `FoldMeta`.

    ``pred`` is in the label's space (before the recipe's postprocess).
    """
    from kagglekit.models.pair_model import load_model_folder

    dev, amp_dtype = device_and_amp(device, precision)
    model, tokenizer, meta = load_model_folder(folder, device=dev)
    inputs = InputCache(data, device=dev)
    enc = inputs.encodings(meta, tokenizer, Path(folder), model.feature_names)
    preds = run_inference(model, enc, batch_size=batch_size, device=dev, amp_dtype=amp_dtype, activation=meta.activation,
                          values=meta.output.values)
    return pd.DataFrame({"id": inputs.frame(meta, folder)[1]["id"].to_numpy(), "pred": preds}), meta
