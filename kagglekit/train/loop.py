"""Train one model: the step function, the evaluation, and the loop around them.

The step runs in the order that makes mixed precision and adversarial training correct (see
`train_step`). The loop adds accumulation, evaluation every N steps and at each epoch's end, early
stopping, EMA, the adversary from its start epoch, the step log, the stop on non-finite losses, a
resumable state (`kagglekit.train.fold_state.FoldState`) and the stop when the session's time
budget runs out (`kagglekit.train.session.Budget`). A model is one seed of a CV fold, or of the
full-data fit (`ModelPlan`); its rows come from `kagglekit.data.rows`, its model and optimizer from
`kagglekit.train.components`. Over 350 lines: the full fit shares the fold's loop rather than copy it.
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

from kagglekit._io import write_json
from kagglekit.config import Config
from kagglekit.data.batching import PairEncodings, bucketed_batches, shuffled_batches
from kagglekit.data.rows import fold_encodings, fold_rows
from kagglekit.metrics import Metric, get_metric, is_better
from kagglekit.models.forward import run_inference
from kagglekit.models.pair_model import save_model_folder
from kagglekit.run import FoldMeta
from kagglekit.targets import Target
from kagglekit.train.components import build_components, optimizer_steps_per_epoch
from kagglekit.train.fold_state import FoldState
from kagglekit.train.session import Budget, TimeBudgetReached
from kagglekit.train.state import ResumeFiles, state_size
from kagglekit.train.tracking import ModelLog


@dataclass
class FoldResult:
    """What one trained model leaves: its best evaluation and its bookkeeping (a full fit has no evaluation)."""

    fold: int | None  # None: a full fit
    score: float | None  # best validation score; None for a full fit
    best_epoch: int  # 1-based; a full fit: the epochs it trained
    oof: pd.DataFrame | None  # id, fold, label, pred of the best evaluation; None for a full fit
    history: list = field(default_factory=list)  # one dict per evaluation
    surgery: dict = field(default_factory=dict)  # what was done to the backbone (`kagglekit.train.components.backbone_surgery`)
    augmentation: dict = field(default_factory=dict)  # rows added to the training rows (closure, swap, extra)
    seconds: float = 0.0
    seed: int | None = None  # the training seed
    best_step: int = -1  # optimizer steps at the best evaluation; a full fit: the steps it trained
    train_rows: int = 0  # training rows after augmentation and extra rows (steps per epoch follow from them)

    def to_json(self) -> dict:
        """The result as JSON (the OOF frame as lists, so its columns keep their types); see `from_json`."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data["oof"] = None if self.oof is None else {k: v.tolist() for k, v in self.oof.items()}
        return data

    @classmethod
    def from_json(cls, data: dict) -> "FoldResult":
        oof = None if data["oof"] is None else pd.DataFrame(data["oof"])
        return cls(**{**data, "oof": oof})


@dataclass(frozen=True)
class FullLength:
    """How long a full-data fit trains: the length CV chose (`kagglekit.train.runner.full_length`).

    Args:
        epochs: the mean best epoch of the complete CV folds, rounded half up (at least 1).
        steps_per_row: with ``eval_every``: the mean over those folds of best step / training rows; the
            fit then trains that many steps per row of its own (all rows), not whole epochs. None: epochs.
    """

    epochs: int
    steps_per_row: float | None = None

    def resolve(self, cfg: Config, rows: int) -> tuple[Config, int | None]:
        """`cfg` with the fit's epochs, and its optimizer steps (None: whole epochs) for `rows` training rows."""
        if self.steps_per_row is None:
            return dataclasses.replace(cfg, epochs=self.epochs), None
        steps = max(1, math.floor(self.steps_per_row * rows + 0.5))
        return dataclasses.replace(cfg, epochs=math.ceil(steps / optimizer_steps_per_epoch(rows, cfg))), steps


@dataclass(frozen=True)
class ModelPlan:
    """One model to train: a seed of CV fold `fold`, or of the full-data fit (`fold` None), and where it goes.

    Args:
        fold: the validation fold; None: a full fit on every training row (no validation, no OOF).
        seed: the training seed (the model's init, dropout, batch order); the rows are the same for every seed.
        folder: its model folder: ``fold{K}/`` or ``full/`` (the run's seed), ``fold{K}-seed{S}/`` or ``full-seed{S}/``.
        files: where its resume state lies (`kagglekit.train.state.ResumeFiles`).
        meta: its ``kagglekit.json`` fields (`FoldMeta`, with ``seed`` and ``full`` set).
        record: where its result is kept (`FoldResult.to_json`) until every seed of its fold is done, so a
            session that stops between seeds loses none; None when its fold has one model.
        length: a full fit's `FullLength`; None for a CV fold.
    """

    fold: int | None
    seed: int
    folder: Path
    files: ResumeFiles
    meta: FoldMeta
    record: Path | None = None
    length: FullLength | None = None

    @property
    def label(self) -> str:
        """How messages name it: ``fold 0``, ``fold 0 seed 43``, ``full fit``, ``full fit seed 43``."""
        name = "full fit" if self.fold is None else f"fold {self.fold}"
        return name if self.meta.seed is None else f"{name} seed {self.seed}"


def full_rows(frame: pd.DataFrame, cfg: Config, *, featurize=None, extra: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict]:
    """A full fit's training rows: every row of `frame`, grown as a fold's training rows are (closure, swap,
    ``extra_train_csv`` rows with their loss weight: `kagglekit.data.rows.grow_training_rows`, with no validation
    rows); returns them and what was added."""
    from kagglekit.data.rows import grow_training_rows

    rows = frame.reset_index(drop=True)
    return grow_training_rows(rows, rows.iloc[:0], cfg, featurize=featurize, extra=extra, label="full fit")


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
    """What stays fixed while one model trains: where it writes, what it validates on (a CV fold) and how it scores."""

    cfg: Config
    plan: ModelPlan
    target: Target
    metric: Metric
    valid_df: pd.DataFrame | None  # None: a full fit, which never evaluates
    valid_enc: PairEncodings | None
    device: torch.device
    budget: Budget
    log: ModelLog
    max_steps: int | None = None  # a full fit with eval_every: the optimizer steps it trains

    def save(self, state: FoldState) -> None:
        """Save the resumable state where the model trains (scratch space when there is some), timed for the budget."""
        with self.budget.timing_save():
            state.save(self.plan.files.work)

    def stop_for_time(self, state: FoldState) -> TimeBudgetReached:
        """The budget ran out: save the state into the run folder (scratch space is not kept with the
        saved version), drop the working copy; returns the exception that tells the runner."""
        files = self.plan.files
        with self.budget.timing_save():
            state.save(files.kept)
        files.drop_work()
        self.write_log(state)
        left = self.budget.left()
        print(f"{self.plan.label}: time_budget: {left:.0f} s left, under the {self.budget.margin():.0f} s margin: stopped at "
              f"epoch {state.epoch + 1}, step {state.step}; state saved in {files.kept}", flush=True)
        return TimeBudgetReached(self.plan.fold, state.epoch, state.step, files.kept)

    def folder_meta(self, state: FoldState, score: float | None) -> FoldMeta:
        """The model folder's kagglekit.json: the run's metadata and this checkpoint (a CV fold: its evaluation)."""
        return dataclasses.replace(self.plan.meta, fold=self.plan.fold, score=score, epoch=state.epoch + 1, step=state.step)

    def write_log(self, state: FoldState) -> None:
        from kagglekit.train.curves import write_log

        if self.plan.folder.is_dir():  # the step log and curve sit beside the best model
            write_log(self.plan.folder, state.log, metric=self.metric.name)


def _evaluate_fold(run: _Fold, state: FoldState) -> bool:
    """Score the validation fold (with the EMA weights if asked), keep the model if it improved, log it;
    returns whether patience has run out. A full fit has nothing to score: returns False."""
    cfg, parts = run.cfg, state.parts
    if run.valid_enc is None:
        return False
    with _scored_weights(cfg, parts):
        score, preds = evaluate(parts.model, run.valid_enc, run.valid_df["label"], run.metric, batch_size=cfg.eval_batch_size,
                                device=run.device, amp_dtype=parts.amp_dtype, activation=parts.loss.activation, values=run.target.values)
        improved = is_better(run.metric, score, state.best_score)
        if improved:  # saved inside the EMA context: the folder holds the weights that were scored
            state.best_score, state.best_epoch, state.best_step, state.best_preds = score, state.epoch + 1, state.step, preds
            save_model_folder(parts.model, parts.tokenizer, run.plan.folder, run.folder_meta(state, score), dtype=cfg.save_dtype)
    train_loss = state.record_evaluation(score, improved)
    run.write_log(state)
    run.log.evaluation(state.step, score)
    print(f"{run.plan.label} epoch {state.epoch + 1}/{cfg.epochs} step {state.step}: train loss {train_loss:.4f}, "
          f"valid {run.metric.name} {score:.4f}{' (best)' if improved else ''}", flush=True)
    return cfg.patience > 0 and state.stale >= cfg.patience


def _scored_weights(cfg: Config, parts):
    """The weights a model is scored and saved with: the EMA's when ``ema_eval``, else the raw ones."""
    return parts.ema.apply_to(parts.model) if parts.ema is not None and cfg.ema_eval else contextlib.nullcontext()


def _save_full(run: _Fold, state: FoldState) -> None:
    """A full fit's model folder, written once at its end (with the weights a fold would be scored with), and its step log."""
    parts = state.parts
    meta = dataclasses.replace(run.plan.meta, fold=None, score=None, epoch=run.cfg.epochs, step=state.step)
    with _scored_weights(run.cfg, parts):
        save_model_folder(parts.model, parts.tokenizer, run.plan.folder, meta, dtype=run.cfg.save_dtype)
    run.write_log(state)
    print(f"{run.plan.label}: {state.step} steps over {run.cfg.epochs} epoch(s) on every training row; saved {run.plan.folder}", flush=True)


def _diverged(run: _Fold, state: FoldState) -> TrainingDiverged:
    run.write_log(state)
    folder = run.plan.folder
    return TrainingDiverged(
        f"{run.plan.label}: the training loss was NaN or infinite for {state.nonfinite} steps in a row (epoch {state.epoch + 1}, "
        f"step {state.step}). Try a lower lr (now {run.cfg.lr:g}), max_grad_norm=1, precision=fp32 (or bf16 on an A100/H100), "
        "adversary=none, and check the labels. The last good checkpoint is kept in "
        f"{folder if folder.is_dir() else '(none yet)'}."
    )


def train_fold(
    cfg: Config,
    frame: pd.DataFrame,
    plan: ModelPlan,
    *,
    device: torch.device,
    precision: str,
    metric_name: str,
    resume: bool = False,
    featurize=None,
    extra: pd.DataFrame | None = None,
    budget: Budget | None = None,
    log: ModelLog | None = None,
    teacher=None,
) -> FoldResult:
    """Train the model `plan` describes: one seed of a CV fold (train on every other fold, validate on it, keep
    the best model) or of the full fit (train on every row for the length CV chose, save at the end).

    A CV fold evaluates every `cfg.eval_every` optimizer steps and at each epoch's end; the best
    evaluation's model folder is written atomically each time it improves, with the step log and learning
    curve beside it; it stops early after `cfg.patience` evaluations without improvement. A full fit
    never evaluates and writes its folder once, at the end.

    Args:
        cfg: the run configuration.
        frame: the normalized frame with a ``fold`` column.
        plan: the model: its fold (None: full fit), seed, folder, resume files and metadata (`ModelPlan`).
        device: torch device.
        precision: fp32 | fp16 | bf16 (already resolved for the device).
        metric_name: CV metric.
        resume: continue from the model's saved state (`kagglekit.train.state`) when there is one.
        featurize: the run's `kagglekit.data.features.ComputedFeatures` (co-occurrence, embedding
            cosine) when it has any: augmented pairs get their features from it.
        extra: rows of ``extra_train_csv`` (`kagglekit.train.runner.read_extra`): added to the
            training rows with loss weight ``cfg.extra_weight``, never to the validation fold; those
            that repeat a validation pair (either order) are left out of this fold.
        budget: the session's time `Budget`, shared by the models of a call; default: no limit.
        log: where each step and evaluation is also reported (`kagglekit.train.tracking.ModelLog`); default: nowhere.
        teacher: the run's `kagglekit.train.distill.Teachers` (``teacher_oof``): the loss also pulls each training row
            toward the value teacher model `plan.fold` gave it (a full fit: `Teachers.values`); None: labels alone.

    Returns:
        The `FoldResult`, also written to ``plan.record`` (when set) before the resume state is deleted.

    Raises:
        TimeBudgetReached: less than the budget's margin was left at an optimizer step: the state is
            saved in ``plan.files.kept`` (the run folder), the working copy deleted, the model not complete.

    Example:
        >>> result = train_fold(cfg, frame, plan, device=torch.device("cpu"), precision="fp32", metric_name="pearson")
    """
    from kagglekit.train.state import generator_state

    start = time.time()
    seed_everything(plan.seed, deterministic=cfg.deterministic)
    steps = None
    if plan.fold is None:
        train_df, augmentation = full_rows(frame, cfg, featurize=featurize, extra=extra)
        valid_df = None
        cfg, steps = plan.length.resolve(cfg, len(train_df))
        if steps is not None:
            print(f"{plan.label}: {steps} optimizer steps over {len(train_df)} training rows ({cfg.epochs} epoch(s))", flush=True)
    else:
        train_df, valid_df, augmentation = fold_rows(frame, plan.fold, cfg, featurize=featurize, extra=extra)
    target = plan.meta.output
    parts = build_components(cfg, train_df, num_outputs=target.num_outputs, loss=plan.meta.loss, device=device, precision=precision)
    distill = None if teacher is None else teacher.for_rows(train_df, plan.fold, label=plan.label)  # one target per training row
    if distill is not None:
        parts.loss = distill.wrap(parts.loss)
    if steps is not None:  # the schedule spans the fit's steps, which need not fill its last epoch
        from kagglekit.train.optim import build_scheduler

        parts.scheduler = build_scheduler(parts.optimizer, cfg.scheduler, total_steps=steps, warmup_ratio=cfg.warmup_ratio,
                                          warmup_steps=cfg.warmup_steps, num_cycles=cfg.num_cycles)
    # a full fit validates nothing: its one "validation" row is tokenized and never used
    train_enc, valid_enc = fold_encodings(parts.tokenizer, train_df, train_df.head(1) if valid_df is None else valid_df, cfg)
    budget = budget if budget is not None else Budget()
    budget.state_bytes = state_size(parts.model, ema=parts.ema is not None)
    run = _Fold(cfg, plan, target, get_metric(metric_name), valid_df, None if valid_df is None else valid_enc, device, budget,
                log if log is not None else ModelLog(), steps)
    state = FoldState(parts, rng=np.random.default_rng(plan.seed))  # batch order: reproducible, independent of torch's RNG
    found = plan.files.find() if resume else None
    if found is not None:
        state.load(found)
        print(f"{plan.label}: resumed at epoch {state.epoch + 1}, batch {state.batch}, step {state.step} from {found}", flush=True)

    budget.mark()
    stop = False  # patience ran out, or a step-limited full fit has its steps
    for epoch in range(state.epoch, cfg.epochs):
        state.epoch = epoch
        if state.batch == 0:
            state.epoch_rng = generator_state(state.rng)  # this epoch's batch order can be drawn again on resume
        batches = make_batches(train_enc.lengths, cfg, state.rng)
        parts.model.train()
        micro = []  # the losses of the accumulation in progress
        bar = tqdm(total=len(batches), initial=state.batch, desc=f"{plan.label} epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   dynamic_ncols=True, mininterval=1.0)
        for index in range(state.batch, len(batches)):
            batch = train_enc.collate(batches[index])
            batch["labels"] = target.encode(batch["labels"])  # (B,), or (B, C) for classes and bins
            if distill is not None:  # the teacher's targets ride beside the labels (`kagglekit.train.distill.pack`)
                batch["labels"] = distill.pack(batch["labels"], batches[index])
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
            run.log.step(state.log[-1])
            micro.clear()
            bar.set_postfix(state.progress(), refresh=False)
            last_batch = index + 1 == len(batches)
            if cfg.eval_every and state.step % cfg.eval_every == 0 and not last_batch:
                stop = _evaluate_fold(run, state)
            if stop or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0 and not last_batch):
                run.save(state)
            stop = stop or state.step == run.max_steps
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
    if stop and valid_df is not None:
        print(f"{plan.label}: early stop after {cfg.patience} evaluations without improvement", flush=True)
    if valid_df is None:
        _save_full(run, state)
        oof, score, best_epoch, best_step = None, None, cfg.epochs, state.step
    else:
        oof = pd.DataFrame({"id": valid_df["id"], "fold": plan.fold, "label": valid_df["label"], "pred": state.best_preds})
        score, best_epoch, best_step = state.best_score, state.best_epoch, state.best_step
    result = FoldResult(plan.fold, score, best_epoch, oof, state.history, parts.surgery, augmentation, time.time() - start,
                        seed=plan.seed, best_step=best_step, train_rows=len(train_df))
    if plan.record is not None:  # before the state goes: a kill between the two leaves one of them
        write_json(plan.record, result.to_json())
    plan.files.clear()  # the model is complete: its resume state has served (scratch and run folder)
    return result


def make_batches(lengths: np.ndarray, cfg: Config, rng: np.random.Generator) -> list[np.ndarray]:
    """An epoch's training batches: length-bucketed (similar lengths together, little padding)."""
    if cfg.bucket_size > 1:
        return bucketed_batches(lengths, cfg.batch_size, rng, bucket_size=cfg.bucket_size)
    return shuffled_batches(len(lengths), cfg.batch_size, rng)
