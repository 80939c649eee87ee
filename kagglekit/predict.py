"""Predict: run folders × their folds → fold average → one checked, atomically written submission.

Rows are visited sorted by length with dynamic padding, and the original order is restored, so
the output holds exactly the test ids in test order.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
import torch

from kagglekit._io import read_csv, write_csv
from kagglekit.data.batching import PairEncodings, sorted_batches
from kagglekit.data.recipes import get_recipe
from kagglekit.losses import activate


@torch.no_grad()
def run_inference(model, encodings: PairEncodings, *, batch_size: int, device: torch.device, amp_dtype=None, activation: str = "identity", values=()) -> np.ndarray:
    """Predictions for every row of `encodings`, in their original order, shape (N,).

    `activation` (and, for ``expected``, the output `values`) maps logits to the label's space.
    """
    model.eval()
    out = np.empty(len(encodings), dtype=np.float64)
    for indices in sorted_batches(encodings.lengths, batch_size):
        batch = {k: v.to(device) for k, v in encodings.collate(indices).items() if k != "labels"}
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(**batch)
        out[indices] = activate(logits, activation, values).cpu().numpy()
    return out


def find_fold_dirs(path: str | os.PathLike) -> list[Path]:
    """The model folders of a run folder (``fold*/``), or the folder itself when it is a model folder."""
    from kagglekit.models.pair_model import META_FILE

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"--models: folder not found: {path}. Pass a run folder written by kagglekit train.")
    if (path / META_FILE).is_file():
        return [path]
    folds = sorted((p for p in path.glob("fold*") if (p / META_FILE).is_file()), key=lambda p: p.name)
    if not folds:
        raise FileNotFoundError(
            f"--models: {path} holds no trained fold (no fold*/{META_FILE}). Train at least one fold into it, "
            "or pass the folder of the attached model dataset."
        )
    return folds


def predict_folder(folder: str | os.PathLike, data: str | os.PathLike, *, batch_size: int = 64, device: str = "auto", precision: str = "auto") -> tuple[pd.DataFrame, dict]:
    """Predictions of one model folder on a test file: a frame (id, pred) in test order, and the model's meta."""
    from kagglekit.kaggle import amp_dtype as to_amp_dtype, resolve_device, resolve_precision
    from kagglekit.models.pair_model import load_model_folder

    dev = resolve_device(device)
    model, tokenizer, meta = load_model_folder(folder, device=dev)
    recipe = get_recipe(meta["task"])
    state = meta.get("recipe_state") or {}
    frame = recipe.read_test(data, state)
    if state.get("cooccurrence_pairs"):  # the training graph plus this test file, as in training
        from kagglekit.data.features import FEATURE_NAMES, CooccurrenceGraph

        train_pairs = pd.DataFrame(state["cooccurrence_pairs"], columns=["text_a", "text_b"])
        frame[list(FEATURE_NAMES)] = CooccurrenceGraph(train_pairs, frame).transform(frame).to_numpy()
    names = model.feature_names
    enc = PairEncodings(tokenizer, frame["text_a"], frame["text_b"], meta["max_len"], features=frame[names].to_numpy() if names else None)
    amp_dtype = to_amp_dtype(resolve_precision(precision, dev))
    values = (meta.get("output") or {}).get("values", ())
    preds = run_inference(model, enc, batch_size=batch_size, device=dev, amp_dtype=amp_dtype, activation=meta["activation"], values=values)
    return pd.DataFrame({"id": frame["id"].to_numpy(), "pred": preds}), meta


def predict(
    models: Sequence[str | os.PathLike],
    data: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    sample_submission: str | os.PathLike | None = None,
    batch_size: int = 64,
    device: str = "auto",
    precision: str = "auto",
) -> pd.DataFrame:
    """Average the folds of each run, then the runs, and write the submission.

    Args:
        models: run folders (``fold*/`` inside) or single model folders.
        data: the test CSV, in the schema of the runs' task.
        out: where to write the submission CSV (atomically); None: only return it.
        sample_submission: optional; its columns name the output and its ids must match the test ids.
        batch_size: rows per forward pass.
        device: auto | cpu | cuda.
        precision: auto (fp16/bf16 on GPU, fp32 on CPU) | fp32 | fp16 | bf16.

    Returns:
        The submission frame: the id column and the target column, in test order.

    Example:
        >>> predict(["runs/minilm"], "data/test.csv", "submission.csv")
    """
    if not models:
        raise ValueError("--models: give at least one run folder.")
    run_preds, metas, ids = [], [], None
    for run in models:
        fold_preds = []
        for folder in find_fold_dirs(run):
            frame, meta = predict_folder(folder, data, batch_size=batch_size, device=device, precision=precision)
            if metas and meta["task"] != metas[0]["task"]:
                raise ValueError(
                    f"--models: {folder} was trained for task {meta['task']!r} but {metas[0]['folder']} for "
                    f"{metas[0]['task']!r}: predict one task at a time."
                )
            metas.append({**meta, "folder": str(folder)})
            ids = frame["id"] if ids is None else ids
            fold_preds.append(frame["pred"].to_numpy())
            print(f"predicted {len(frame)} rows with {folder}", flush=True)
        run_preds.append(np.mean(fold_preds, axis=0))
    preds = np.mean(run_preds, axis=0)
    preds = get_recipe(metas[0]["task"]).postprocess(preds, metas[0].get("recipe_state") or {})  # e.g. back to STS-B's 0-5

    id_col, target_col = metas[0].get("id_col", "id"), metas[0].get("target_col", "label")
    sub = pd.DataFrame({id_col: ids.to_numpy(), target_col: preds})
    if sample_submission is not None:
        sub = _match_sample(sub, sample_submission, id_col)
    check_submission(sub, id_col=id_col, test_ids=ids)
    if out is not None:
        write_csv(out, sub)
    return sub


def _match_sample(sub: pd.DataFrame, sample_path, id_col: str) -> pd.DataFrame:
    sample = read_csv(sample_path, what="sample_submission", required=(id_col,), dtype={id_col: str})
    missing = set(sample[id_col]) ^ set(sub[id_col])
    if missing:
        raise ValueError(
            f"sample_submission: {sample_path} and the test data disagree on {len(missing)} id(s), e.g. "
            f"{sorted(missing)[:5]}: pass the sample submission that belongs to this test file."
        )
    extra = [c for c in sample.columns if c not in sub.columns]
    if extra:
        raise ValueError(f"sample_submission: {sample_path} has column(s) {extra} that the model does not predict.")
    # the sample's row order and column order, as the competition expects
    return sub.set_index(id_col).loc[sample[id_col]].reset_index()[list(sample.columns)]


def check_submission(sub: pd.DataFrame, *, id_col: str, test_ids: pd.Series) -> None:
    """Fail before anything is written: exactly the test ids, once each, and no NaN predictions."""
    if sub[id_col].duplicated().any():
        raise ValueError(f"submission: duplicated ids, e.g. {sub.loc[sub[id_col].duplicated(), id_col].head(3).tolist()}.")
    if set(sub[id_col]) != set(test_ids):
        raise ValueError("submission: the ids differ from the test file's ids.")
    values = sub.drop(columns=[id_col]).to_numpy(dtype=float)
    if not np.isfinite(values).all():
        raise ValueError(f"submission: {int((~np.isfinite(values)).sum())} prediction(s) are NaN or infinite: a model diverged; retrain it or leave it out.")
