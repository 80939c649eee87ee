"""Train one fold: the step function, the evaluation, and the loop around them.

The step runs in the order that makes mixed precision and adversarial training correct (see
`train_step`). The loop adds accumulation, evaluation every N steps and at each epoch's end, early
stopping, EMA, the adversary from its start epoch, the step log, the stop on non-finite losses, a
resumable state (`kagglekit.train.fold_state.FoldState`) and the stop when the session's time
budget runs out (`kagglekit.train.session.Budget`). The fold's rows come from
`kagglekit.data.rows`, its model and optimizer from `kagglekit.train.components`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kagglekit.config import Config
from kagglekit.data.batching import PairEncodings, bucketed_batches, shuffled_batches
from kagglekit.data.rows import fold_encodings, fold_rows
from kagglekit.metrics import Metric, get_metric, is_better
from kagglekit.models.forward import run_inference
from kagglekit.models.pair_model import save_model_folder
from kagglekit.run import FoldMeta
from kagglekit.targets import Target
from kagglekit.train.components import build_components
from kagglekit.train.fold_state import FoldState
from kagglekit.train.session import Budget, TimeBudgetReached
from kagglekit.train.state import ResumeFiles, state_size


@dataclass
class FoldResult:
    fold: int
    score: float  # best validation score
    best_epoch: int
    oof: pd.DataFrame  # id, fold, label, pred of the best epoch
    history: list = field(default_factory=list)  # one dict per epoch
    surgery: dict = field(default_factory=dict)  # what was done to the backbone (`kagglekit.train.components.backbone_surgery`)
    augmentation: dict = field(default_factory=dict)  # rows added to the training folds (closure, swap)
    seconds: float = 0.0


def seed_everything(seed: int, *, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA); `deterministic` also asks torch for deterministic kernels.

    Deterministic mode makes GPU runs repeatable at some speed cost (cuDNN autotuning off,
    deterministic algorithms where they exist, a warning where they do not). On CPU the same seed
    already gives the same result.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True, warn_only=True)


def _to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def compute_loss(model, batch: dict, labels: torch.Tensor, loss_fn, amp_dtype, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Forward under autocast and the loss (with per-row sample `weights`, if any); multi-sample
    dropout's per-sample losses are averaged."""
    def loss_of(logits: torch.Tensor) -> torch.Tensor:  # a plain (logits, targets) loss works while there are no weights
        return loss_fn(logits, labels) if weights is None else loss_fn(logits, labels, weights)

    with torch.autocast(device_type=labels.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(**batch)  # (B,) or (B, C); (S, B[, C]) when multi-sample dropout averages losses
        if getattr(model, "returns_samples", False):
            return torch.stack([loss_of(sample) for sample in logits]).mean()
        return loss_of(logits)


def train_step(
    model, batch, *, loss_fn, optimizer, scheduler, scaler, amp_dtype, max_grad_norm: float,
    accum_steps: int = 1, boundary: bool = True, adversary=None, ema=None,
) -> float:
    """One micro-step on one batch, and the optimizer step when `boundary` closes an accumulation.

    The order is the one that makes mixed precision and adversarial training correct:
    autocast forward → loss / accum_steps → scaled backward → adversarial step(s) (their losses
    scaled the same way, their gradients added) → at the boundary: unscale → clip the real gradient
    norm, once → optimizer step (the scaler skips it on inf/NaN) → scaler update → zero grad →
    scheduler step → EMA update.

    Args:
        batch: tensors on the model's device, with ``labels`` (the loss's targets) and optionally
            ``weights`` (per-row loss weights: extra rows such as pseudo labels).
        accum_steps: micro-steps per optimizer step; each loss is divided by it.
        boundary: whether this micro-step ends an accumulation (the optimizer steps).
        adversary: None, or an object with ``attack_backward(forward_loss, backward) -> float``
            (`kagglekit.train.adversarial`): it perturbs, runs forward_loss, calls backward on the
            loss and restores, once or more.
        ema: None, or an object with ``update(model)`` called after each optimizer step.

    Returns:
        The batch's loss (not divided by accum_steps); NaN or inf when it was not finite, in which
        case this micro-step's gradients are dropped.
    """
    labels = batch.pop("labels")
    weights = batch.pop("weights", None)

    def forward_loss() -> torch.Tensor:
        return compute_loss(model, batch, labels, loss_fn, amp_dtype, weights) / accum_steps

    loss = forward_loss()
    value = loss.item() * accum_steps
    if not math.isfinite(value):
        # In fp32 nothing would catch it: the step would write NaN into the weights. Drop the
        # gradients of this accumulation instead; the loop counts non-finite losses and stops.
        optimizer.zero_grad(set_to_none=True)
        return value
    scaler.scale(loss).backward()
    if adversary is not None:
        adversary.attack_backward(forward_loss, lambda adv_loss: scaler.scale(adv_loss).backward())
    if boundary:
        scaler.unscale_(optimizer)  # clip what the optimizer will see, not the scaled gradient
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)  # skipped when the gradient has inf/NaN (fp16 overflow)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        if ema is not None:
            ema.update(model)
    return value


class TrainingDiverged(ValueError):
    """The loss stayed non-finite for `nonfinite_limit` steps in a row; the last good checkpoint is kept."""


def evaluate(model, encodings: PairEncodings, labels, metric: Metric, *, batch_size: int, device: torch.device,
             amp_dtype=None, activation: str = "identity", values=()) -> tuple[float, np.ndarray]:
    """Score `model` as it is on labelled rows (the caller chooses the weights, e.g. EMA's).

    Args:
        encodings: the rows, tokenized.
        labels: their labels, length N, in the label's own space.
        metric: a `kagglekit.metrics.Metric`.
        activation: the loss's logits → predictions (`kagglekit.losses.Loss.activation`).
        values: class values or bin centres of a multi-output target (``expected``), else empty.

    Returns:
        ``(score, preds)``: the metric on the predictions, and the predictions, shape (N,).

    Example:
        >>> score, preds = evaluate(model, valid_enc, valid_df["label"], get_metric("pearson"), batch_size=64, device=device)
    """
    preds = run_inference(model, encodings, batch_size=batch_size, device=device, amp_dtype=amp_dtype,
                          activation=activation, values=values)
    return float(metric.fn(np.asarray(labels), preds)), preds


@dataclass(frozen=True)
class _Fold:
    """What stays fixed while one fold trains: where it writes, what it validates on and how it scores."""

    cfg: Config
    fold: int
    fold_dir: Path
    meta: FoldMeta
    target: Target
    metric: Metric
    valid_df: pd.DataFrame
    valid_enc: PairEncodings
    device: torch.device
    files: ResumeFiles
    budget: Budget

    def save(self, state: FoldState) -> None:
        """Save the resumable state where the fold trains (scratch space when there is some), timed for the budget."""
        with self.budget.timing_save():
            state.save(self.files.work)

    def stop_for_time(self, state: FoldState) -> TimeBudgetReached:
        """The budget ran out: save the state into the run folder (scratch space is not kept with the
        saved version), drop the working copy; returns the exception that tells the runner."""
        with self.budget.timing_save():
            state.save(self.files.kept)
        self.files.drop_work()
        self.write_log(state)
        left = self.budget.left()
        print(f"fold {self.fold}: time_budget: {left:.0f} s left, under the {self.budget.margin():.0f} s margin: stopped at "
              f"epoch {state.epoch + 1}, step {state.step}; state saved in {self.files.kept}", flush=True)
        return TimeBudgetReached(self.fold, state.epoch, state.step, self.files.kept)

    def folder_meta(self, state: FoldState, score: float) -> FoldMeta:
        """The model folder's kagglekit.json: the run's fold metadata and this evaluation."""
        return dataclasses.replace(self.meta, fold=self.fold, score=score, epoch=state.epoch + 1, step=state.step)

    def write_log(self, state: FoldState) -> None:
        from kagglekit.train.curves import write_log

        if self.fold_dir.is_dir():  # the step log and curve sit beside the best model
            write_log(self.fold_dir, state.log, metric=self.metric.name)


def _evaluate_fold(run: _Fold, state: FoldState) -> bool:
    """Score the validation fold (with the EMA weights if asked), keep the model if it improved, log it;
    returns whether patience has run out."""
    cfg, parts = run.cfg, state.parts
    with parts.ema.apply_to(parts.model) if parts.ema is not None and cfg.ema_eval else contextlib.nullcontext():
        score, preds = evaluate(parts.model, run.valid_enc, run.valid_df["label"], run.metric, batch_size=cfg.eval_batch_size,
                                device=run.device, amp_dtype=parts.amp_dtype, activation=parts.loss.activation, values=run.target.values)
        improved = is_better(run.metric, score, state.best_score)
        if improved:  # saved inside the EMA context: the folder holds the weights that were scored
            state.best_score, state.best_epoch, state.best_step, state.best_preds = score, state.epoch + 1, state.step, preds
            save_model_folder(parts.model, parts.tokenizer, run.fold_dir, run.folder_meta(state, score), dtype=cfg.save_dtype)
    train_loss = state.record_evaluation(score, improved)
    run.write_log(state)
    print(f"fold {run.fold} epoch {state.epoch + 1}/{cfg.epochs} step {state.step}: train loss {train_loss:.4f}, "
          f"valid {run.metric.name} {score:.4f}{' (best)' if improved else ''}", flush=True)
    return cfg.patience > 0 and state.stale >= cfg.patience


def _diverged(run: _Fold, state: FoldState) -> TrainingDiverged:
    run.write_log(state)
    return TrainingDiverged(
        f"fold {run.fold}: the training loss was NaN or infinite for {state.nonfinite} steps in a row (epoch {state.epoch + 1}, "
        f"step {state.step}). Try a lower lr (now {run.cfg.lr:g}), max_grad_norm=1, precision=fp32 (or bf16 on an A100/H100), "
        "adversary=none, and check the labels. The last good checkpoint is kept in "
        f"{run.fold_dir if run.fold_dir.is_dir() else '(none yet)'}."
    )


def train_fold(
    cfg: Config,
    frame: pd.DataFrame,
    fold: int,
    fold_dir: str | Path,
    *,
    device: torch.device,
    precision: str,
    meta: FoldMeta,
    metric_name: str,
    resume: bool = False,
    featurize=None,
    extra: pd.DataFrame | None = None,
    files: ResumeFiles | None = None,
    budget: Budget | None = None,
) -> FoldResult:
    """Train on every fold but `fold`, validate on `fold`, keep the best model in `fold_dir`.

    Evaluates every `cfg.eval_every` optimizer steps and at each epoch's end; the best evaluation's
    model folder is written atomically each time it improves, with the step log and learning curve
    beside it. Stops early after `cfg.patience` evaluations without improvement.

    Args:
        cfg: the run configuration.
        frame: the normalized frame with a ``fold`` column.
        fold: the validation fold.
        fold_dir: where the best model folder is written.
        device: torch device.
        precision: fp32 | fp16 | bf16 (already resolved for the device).
        meta: recipe state and settings stored in the model folder's kagglekit.json.
        metric_name: CV metric.
        resume: continue from the fold's saved state (`kagglekit.train.state`) when there is one.
        featurize: the run's `kagglekit.data.features.ComputedFeatures` (co-occurrence, embedding
            cosine) when it has any: augmented pairs get their features from it.
        extra: rows of ``extra_train_csv`` (`kagglekit.train.runner.read_extra`): added to the
            training rows with loss weight ``cfg.extra_weight``, never to the validation fold; those
            that repeat a validation pair (either order) are left out of this fold.
        files: where the resumable state goes (`ResumeFiles.locate`); default: ``<run>/resume/fold{K}.pt``.
        budget: the session's time `Budget`, shared by the folds of a call; default: no limit.

    Raises:
        TimeBudgetReached: less than the budget's margin was left at an optimizer step: the state is
            saved in ``files.kept`` (the run folder), the working copy deleted, the fold not complete.
    """
    from kagglekit.train.state import generator_state

    start = time.time()
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    train_df, valid_df, augmentation = fold_rows(frame, fold, cfg, featurize=featurize, extra=extra)
    target, loss_name = meta.output, meta.loss
    parts = build_components(cfg, train_df, num_outputs=target.num_outputs, loss=loss_name, device=device, precision=precision)
    train_enc, valid_enc = fold_encodings(parts.tokenizer, train_df, valid_df, cfg)
    fold_dir = Path(fold_dir)
    budget = budget if budget is not None else Budget()
    budget.state_bytes = state_size(parts.model, ema=parts.ema is not None)
    run = _Fold(cfg, fold, fold_dir, meta, target, get_metric(metric_name), valid_df, valid_enc, device,
                files if files is not None else ResumeFiles.in_run(fold_dir.parent, fold), budget)
    state = FoldState(parts, rng=np.random.default_rng(cfg.seed))  # batch order: reproducible, independent of torch's RNG
    found = run.files.find() if resume else None
    if found is not None:
        state.load(found)
        print(f"fold {fold}: resumed at epoch {state.epoch + 1}, batch {state.batch}, step {state.step} from {found}", flush=True)

    budget.mark()
    stop = False
    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        if state.batch == 0:
            state.epoch_rng = generator_state(state.rng)  # this epoch's batch order can be drawn again on resume
        batches = make_batches(train_enc.lengths, cfg, state.rng)
        parts.model.train()
        micro = []  # the losses of the accumulation in progress
        bar = tqdm(total=len(batches), initial=state.batch, desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   dynamic_ncols=True, mininterval=1.0)
        for index in range(state.batch, len(batches)):
            batch = train_enc.collate(batches[index])
            batch["labels"] = target.encode(batch["labels"])  # (B,), or (B, C) for classes and bins
            boundary = (index + 1) % cfg.accum_steps == 0 or index + 1 == len(batches)
            active = epoch + 1 >= cfg.adv_start_epoch and state.step >= cfg.adv_start_step
            value = train_step(
                parts.model, _to_device(batch, device), loss_fn=parts.loss.fn, optimizer=parts.optimizer, scheduler=parts.scheduler,
                scaler=parts.scaler, amp_dtype=parts.amp_dtype, max_grad_norm=cfg.max_grad_norm, accum_steps=cfg.accum_steps,
                boundary=boundary, adversary=parts.adversary if active else None, ema=parts.ema,
            )
            if state.count_loss(value) >= cfg.nonfinite_limit:
                raise _diverged(run, state)
            micro.append(value)
            bar.update(1)
            state.batch = index + 1  # the next batch to run, should the state be saved now
            if not boundary:
                continue
            state.step += 1
            state.record_step(float(np.mean(micro)), epoch + (index + 1) / len(batches), parts.scheduler.get_last_lr()[0])
            micro.clear()
            bar.set_postfix(state.progress(), refresh=False)
            last_batch = index + 1 == len(batches)
            if cfg.eval_every and state.step % cfg.eval_every == 0 and not last_batch:
                stop = _evaluate_fold(run, state)
            if stop or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and not last_batch):
                run.save(state)
            if stop:
                break
            if budget.should_stop():  # at the epoch's last step too: a resumed run then evaluates the epoch
                bar.close()
                raise run.stop_for_time(state)
        bar.close()
        state.batch = 0
        if stop:
            break
        stop = _evaluate_fold(run, state)
        state.epoch = epoch + 1  # the next epoch starts afresh
        run.save(state)
        if stop:
            break
    if stop:
        print(f"fold {fold}: early stop after {cfg.patience} evaluations without improvement", flush=True)
    run.files.clear()  # the fold is complete: its resume state has served (scratch and run folder)
    oof = pd.DataFrame({"id": valid_df["id"], "fold": fold, "label": valid_df["label"], "pred": state.best_preds})
    return FoldResult(fold, state.best_score, state.best_epoch, oof, state.history, parts.surgery, augmentation, time.time() - start)


def make_batches(lengths: np.ndarray, cfg: Config, rng: np.random.Generator) -> list[np.ndarray]:
    """An epoch's training batches: length-bucketed (similar lengths together, little padding)."""
    if cfg.bucket_size > 1:
        return bucketed_batches(lengths, cfg.batch_size, rng, bucket_size=cfg.bucket_size)
    return shuffled_batches(len(lengths), cfg.batch_size, rng)
