"""Train one fold: the step function, the loop around it, and the model options from the config.

The step runs in the order that makes mixed precision and adversarial training correct (see
`train_step`). The loop adds accumulation, evaluation every N steps and at each epoch's end, early
stopping, EMA, the adversary from its start epoch, the step log, the stop on non-finite losses, and
a resumable state saved at every evaluation (`kagglekit.train.state`).
"""

from __future__ import annotations

import contextlib
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
from kagglekit.data.augment import augment_training_rows, merge_extra, repeats_pairs
from kagglekit.data.batching import PairEncodings, bucketed_batches, shuffled_batches
from kagglekit.kaggle import amp_dtype as to_amp_dtype
from kagglekit.losses import get_loss
from kagglekit.metrics import get_metric, is_better
from kagglekit.models.pair_model import build_model, save_model_folder
from kagglekit.models.forward import run_inference
from kagglekit.targets import Target
from kagglekit.train.optim import build_optimizer, build_scheduler


@dataclass
class FoldResult:
    fold: int
    score: float  # best validation score
    best_epoch: int
    oof: pd.DataFrame  # id, fold, label, pred of the best epoch
    history: list = field(default_factory=list)  # one dict per epoch
    surgery: dict = field(default_factory=dict)  # what was done to the backbone (see backbone_surgery)
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


def model_options(cfg: Config, num_outputs: int = 1) -> dict:
    """`PairModel` arguments from the config. Head options go only when set away from their
    defaults, and `Config.validate` has checked that the head takes each of them."""
    rates = cfg.dropout_rates()
    return {
        "head": cfg.head,
        "num_outputs": num_outputs,
        "dropout": rates,
        "msd_samples": len(rates),
        "msd_average": cfg.msd_average,
        "head_options": cfg.head_option_values(),
        "feature_names": cfg.model_features(),
    }


def loss_options(cfg: Config) -> dict:
    """Options of the configured loss (huber's delta, also inside a weighted sum)."""
    return {"huber_delta": cfg.huber_delta}


def adversary_options(cfg: Config) -> dict:
    """The configured adversary's own options, under its argument names."""
    embedding = cfg.adv_embedding or None
    return {
        "none": {},
        "fgm": {"epsilon": cfg.adv_epsilon, "embedding": embedding},
        "pgd": {"epsilon": cfg.adv_epsilon, "alpha": cfg.adv_alpha, "steps": cfg.adv_steps, "embedding": embedding},
        "awp": {"adv_lr": cfg.awp_lr, "adv_eps": cfg.awp_eps, "steps": cfg.awp_steps, "params": cfg.awp_params},
    }[cfg.adversary]


def backbone_surgery(backbone, cfg: Config) -> dict:
    """Dropout overrides, re-initialised top layers, freezing, mixout, gradient checkpointing; a summary."""
    from kagglekit.models.surgery import apply_surgery, set_dropout

    hidden = None if cfg.hidden_dropout == -1 else cfg.hidden_dropout
    attention = None if cfg.attention_dropout == -1 else cfg.attention_dropout
    summary = {"dropout": set_dropout(backbone, hidden, attention) if (hidden, attention) != (None, None) else {}}
    summary.update(apply_surgery(
        backbone, reinit_layers=cfg.reinit_layers, reinit_pooler=cfg.reinit_pooler, freeze_embeddings=cfg.freeze_embeddings,
        freeze_layers=cfg.freeze_layers, gradient_checkpointing=cfg.gradient_checkpointing, mixout=cfg.mixout,
    ))
    return summary


def _features(frame: pd.DataFrame, names: list[str]):
    return frame[names].to_numpy() if names else None


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


def train_fold(
    cfg: Config,
    frame: pd.DataFrame,
    fold: int,
    fold_dir: str | Path,
    *,
    device: torch.device,
    precision: str,
    meta: dict,
    metric_name: str,
    resume: bool = False,
    featurize=None,
    extra: pd.DataFrame | None = None,
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
    """
    from kagglekit.train.adversarial import create_adversary
    from kagglekit.train.curves import write_log
    from kagglekit.train.ema import EMA
    from kagglekit.train.state import (capture_rng, generator_state, load_state, restore_rng, save_state,
                                       set_generator_state, state_path)

    start = time.time()
    seed_everything(cfg.seed, deterministic=cfg.deterministic)
    fold_dir = Path(fold_dir)
    train_df = frame[frame["fold"] != fold].reset_index(drop=True)
    valid_df = frame[frame["fold"] == fold].reset_index(drop=True)
    if len(valid_df) == 0:
        raise ValueError(f"fold {fold} has no rows: n_folds={cfg.n_folds} folds were made, use --fold 0..{cfg.n_folds - 1}.")

    augmentation = {}
    if cfg.closure or cfg.swap:  # the fold's training rows only: validation rows stay as they are
        train_df, augmentation = augment_training_rows(train_df, valid_df, closure=cfg.closure, swap=cfg.swap,
                                                       max_new=cfg.closure_max or None, ratio=cfg.closure_ratio or None, seed=cfg.seed)
        if featurize is not None:  # new pairs get their features as the file's rows did
            featurize.add(train_df)
        print(f"fold {fold}: augmentation {augmentation}", flush=True)
    if extra is not None:
        kept = extra[~repeats_pairs(extra, valid_df)]
        train_df = merge_extra(train_df, kept, weight=cfg.extra_weight)
        augmentation = {**augmentation, "extra_rows": len(kept), "extra_left_out": len(extra) - len(kept)}
        if len(kept) < len(extra):
            print(f"fold {fold}: {len(extra) - len(kept)} extra row(s) repeat a validation pair of this fold: left out", flush=True)
    target = Target.from_meta(meta["output"])
    model, tokenizer = build_model(cfg.backbone, **model_options(cfg, target.num_outputs))
    surgery = backbone_surgery(model.backbone, cfg)
    features = cfg.model_features()
    if features:
        model.set_feature_stats(train_df[features].to_numpy())  # training rows only: no validation leak
    model.to(device)
    weights = train_df["weight"] if "weight" in train_df else None  # extra rows: their own loss weight
    train_enc = PairEncodings(tokenizer, train_df["text_a"], train_df["text_b"], cfg.max_len, train_df["label"],
                              _features(train_df, features), weights)
    valid_enc = PairEncodings(tokenizer, valid_df["text_a"], valid_df["text_b"], cfg.max_len, valid_df["label"], _features(valid_df, features))

    loss = get_loss(meta["loss"], **loss_options(cfg))
    metric = get_metric(metric_name)
    batches_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / cfg.accum_steps)  # optimizer steps
    optimizer = build_optimizer(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps=steps_per_epoch * cfg.epochs, warmup_ratio=cfg.warmup_ratio,
                                warmup_steps=cfg.warmup_steps, num_cycles=cfg.num_cycles)
    amp_dtype = to_amp_dtype(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ema = EMA(model, decay=cfg.ema, warmup=cfg.ema_warmup) if cfg.ema > 0 else None
    adversary = create_adversary(cfg.adversary, model, **adversary_options(cfg))
    rng = np.random.default_rng(cfg.seed)  # batch order: reproducible, independent of torch's RNG

    # Everything below is what a resumed fold must get back exactly.
    best = {"score": None, "epoch": -1, "step": -1, "preds": None}
    history, log_rows, since_eval = [], [], []
    step, first_epoch, skip_batches, stale, nonfinite = 0, 0, 0, 0, 0
    epoch_rng = generator_state(rng)
    path = state_path(fold_dir.parent, fold)
    if resume and path.is_file():
        saved = load_state(path)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        best = {**saved["best"], "preds": saved["best"]["preds"].numpy() if saved["best"]["preds"] is not None else None}
        history, log_rows, since_eval = saved["history"], saved["log"], saved["since_eval"]
        step, first_epoch, skip_batches, stale = saved["step"], saved["epoch"], saved["batch"], saved["stale"]
        epoch_rng = saved["epoch_rng"]
        set_generator_state(rng, epoch_rng)
        restore_rng(saved["rng"])
        print(f"fold {fold}: resumed at epoch {first_epoch + 1}, batch {skip_batches}, step {step}", flush=True)

    def snapshot(epoch: int, batch: int) -> None:
        """Save the resumable state: the next batch to run is `batch` of `epoch`."""
        save_state(path, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema is not None else {},
            "best": {**best, "preds": torch.from_numpy(best["preds"]) if best["preds"] is not None else None},
            "history": history, "log": log_rows, "since_eval": since_eval,
            "step": step, "epoch": epoch, "batch": batch, "stale": stale, "rng": capture_rng(),
            # mid-epoch: the epoch's batch order is drawn again from its start; at an epoch's end: the next one's
            "epoch_rng": epoch_rng if batch else generator_state(rng),
        })

    def evaluate(epoch: int) -> bool:
        """Score the validation fold (with the EMA weights if asked), keep the model if it improved."""
        nonlocal stale
        with ema.apply_to(model) if ema is not None and cfg.ema_eval else contextlib.nullcontext():
            preds = run_inference(model, valid_enc, batch_size=cfg.eval_batch_size, device=device, amp_dtype=amp_dtype,
                                  activation=loss.activation, values=target.values)
            score = float(metric.fn(valid_df["label"].to_numpy(), preds))
            improved = is_better(metric, score, best["score"])
            if improved:
                best.update(score=score, epoch=epoch + 1, step=step, preds=preds)
                save_model_folder(model, tokenizer, fold_dir, {**meta, "fold": fold, "score": score, "epoch": epoch + 1, "step": step})
        stale = 0 if improved else stale + 1
        train_loss = float(np.mean(since_eval)) if since_eval else float("nan")
        since_eval.clear()
        history.append({"epoch": epoch + 1, "step": step, "train_loss": train_loss, "score": score, "improved": bool(improved)})
        if log_rows:
            log_rows[-1]["score"] = score
        if fold_dir.is_dir():
            write_log(fold_dir, log_rows, metric=metric.name)
        print(f"fold {fold} epoch {epoch + 1}/{cfg.epochs} step {step}: train loss {train_loss:.4f}, "
              f"valid {metric.name} {score:.4f}{' (best)' if improved else ''}", flush=True)
        return cfg.patience > 0 and stale >= cfg.patience

    stop = False
    for epoch in range(first_epoch, cfg.epochs):
        if skip_batches == 0:
            epoch_rng = generator_state(rng)  # this epoch's batch order can be drawn again on resume
        batches = make_batches(train_enc.lengths, cfg, rng)
        model.train()
        micro = []
        bar = tqdm(total=len(batches), initial=skip_batches, desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True, mininterval=1.0)
        for index in range(skip_batches, len(batches)):
            batch = train_enc.collate(batches[index])
            batch["labels"] = target.encode(batch["labels"])  # (B,), or (B, C) for classes and bins
            boundary = (index + 1) % cfg.accum_steps == 0 or index + 1 == len(batches)
            active = epoch + 1 >= cfg.adv_start_epoch and step >= cfg.adv_start_step
            value = train_step(
                model, _to_device(batch, device), loss_fn=loss.fn, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                amp_dtype=amp_dtype, max_grad_norm=cfg.max_grad_norm, accum_steps=cfg.accum_steps, boundary=boundary,
                adversary=adversary if active else None, ema=ema,
            )
            nonfinite = 0 if math.isfinite(value) else nonfinite + 1
            if nonfinite >= cfg.nonfinite_limit:
                if fold_dir.is_dir():
                    write_log(fold_dir, log_rows, metric=metric.name)
                raise TrainingDiverged(
                    f"fold {fold}: the training loss was NaN or infinite for {nonfinite} steps in a row (epoch {epoch + 1}, "
                    f"step {step}). Try a lower lr (now {cfg.lr:g}), max_grad_norm=1, precision=fp32 (or bf16 on an A100/H100), "
                    "adversary=none, and check the labels. The last good checkpoint is kept in "
                    f"{fold_dir if fold_dir.is_dir() else '(none yet)'}."
                )
            micro.append(value)
            bar.update(1)
            if not boundary:
                continue
            step += 1
            step_loss = float(np.mean(micro))
            micro.clear()
            since_eval.append(step_loss)
            log_rows.append({"step": step, "epoch": round(epoch + (index + 1) / len(batches), 4), "loss": step_loss,
                             "lr": scheduler.get_last_lr()[0], "score": float("nan")})
            bar.set_postfix(loss=f"{np.nanmean(since_eval[-50:]):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}",
                            score=f"{history[-1]['score']:.4f}" if history else "-",
                            best=f"{best['score']:.4f}" if best["score"] is not None else "-", refresh=False)
            last_batch = index + 1 == len(batches)
            if cfg.eval_every and step % cfg.eval_every == 0 and not last_batch:
                stop = evaluate(epoch)
            if stop or (cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last_batch):
                snapshot(epoch, index + 1)
            if stop:
                break
        bar.close()
        skip_batches = 0
        if stop:
            break
        stop = evaluate(epoch)
        snapshot(epoch + 1, 0)
        if stop:
            break
    if stop:
        print(f"fold {fold}: early stop after {cfg.patience} evaluations without improvement", flush=True)
    path.unlink(missing_ok=True)  # the fold is complete: its resume state has served
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # only when no other fold is mid-way
    oof = pd.DataFrame({"id": valid_df["id"], "fold": fold, "label": valid_df["label"], "pred": best["preds"]})
    return FoldResult(fold, best["score"], best["epoch"], oof, history, surgery, augmentation, time.time() - start)


def make_batches(lengths: np.ndarray, cfg: Config, rng: np.random.Generator) -> list[np.ndarray]:
    """An epoch's training batches: length-bucketed (similar lengths together, little padding)."""
    if cfg.bucket_size > 1:
        return bucketed_batches(lengths, cfg.batch_size, rng, bucket_size=cfg.bucket_size)
    return shuffled_batches(len(lengths), cfg.batch_size, rng)
