"""Train one fold: the loop, its single step function, evaluation every epoch, best checkpoint kept.

The step runs in the order that makes mixed precision correct: autocast forward and loss → scaled
backward → unscale → clip the *real* gradient norm → optimizer step (skipped by the scaler on
inf/NaN) → scaler update → zero grad → scheduler step.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from kagglekit.config import Config
from kagglekit.data.batching import PairEncodings, shuffled_batches
from kagglekit.kaggle import amp_dtype as to_amp_dtype
from kagglekit.losses import get_loss
from kagglekit.metrics import get_metric, is_better
from kagglekit.models.pair_model import build_model, save_model_folder
from kagglekit.predict import run_inference
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
    seconds: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


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
        "feature_names": cfg.feature_list(),
    }


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


def compute_loss(model, batch: dict, labels: torch.Tensor, loss_fn, amp_dtype) -> torch.Tensor:
    """Forward under autocast and the loss; multi-sample dropout's per-sample losses are averaged."""
    with torch.autocast(device_type=labels.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        logits = model(**batch)  # (B,) or (B, C); (S, B[, C]) when multi-sample dropout averages losses
        if getattr(model, "returns_samples", False):
            return torch.stack([loss_fn(sample, labels) for sample in logits]).mean()
        return loss_fn(logits, labels)


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
        batch: tensors on the model's device, with ``labels`` (the loss's targets).
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

    def forward_loss() -> torch.Tensor:
        return compute_loss(model, batch, labels, loss_fn, amp_dtype) / accum_steps

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
) -> FoldResult:
    """Train on every fold but `fold`, validate on `fold`, keep the best epoch's model in `fold_dir`.

    Args:
        cfg: the run configuration.
        frame: the normalized frame with a ``fold`` column.
        fold: the validation fold.
        fold_dir: where the best model folder is written (atomically, each time it improves).
        device: torch device.
        precision: fp32 | fp16 | bf16 (already resolved for the device).
        meta: recipe state and settings stored in the model folder's kagglekit.json.
        metric_name: CV metric.
    """
    start = time.time()
    seed_everything(cfg.seed)
    train_df = frame[frame["fold"] != fold].reset_index(drop=True)
    valid_df = frame[frame["fold"] == fold].reset_index(drop=True)
    if len(valid_df) == 0:
        raise ValueError(f"fold {fold} has no rows: n_folds={cfg.n_folds} folds were made, use --fold 0..{cfg.n_folds - 1}.")

    target = Target.from_meta(meta["output"])
    model, tokenizer = build_model(cfg.backbone, **model_options(cfg, target.num_outputs))
    surgery = backbone_surgery(model.backbone, cfg)
    features = cfg.feature_list()
    if features:
        model.set_feature_stats(train_df[features].to_numpy())  # training rows only: no validation leak
    model.to(device)
    train_enc = PairEncodings(tokenizer, train_df["text_a"], train_df["text_b"], cfg.max_len, train_df["label"], _features(train_df, features))
    valid_enc = PairEncodings(tokenizer, valid_df["text_a"], valid_df["text_b"], cfg.max_len, valid_df["label"], _features(valid_df, features))

    loss = get_loss(meta["loss"])
    metric = get_metric(metric_name)
    steps_per_epoch = math.ceil(len(train_enc) / cfg.batch_size)
    optimizer = build_optimizer(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps=steps_per_epoch * cfg.epochs, warmup_ratio=cfg.warmup_ratio)
    amp_dtype = to_amp_dtype(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    rng = np.random.default_rng(cfg.seed)  # batch order: reproducible, independent of torch's RNG

    best_score, best_epoch, best_preds, history = None, -1, None, []
    for epoch in range(cfg.epochs):
        model.train()
        losses = []
        bar = tqdm(shuffled_batches(len(train_enc), cfg.batch_size, rng), desc=f"fold {fold} epoch {epoch + 1}/{cfg.epochs}", leave=False, dynamic_ncols=True, mininterval=1.0)
        for indices in bar:
            batch = train_enc.collate(indices)
            batch["labels"] = target.encode(batch["labels"])  # (B,), or (B, C) for classes and bins
            batch = _to_device(batch, device)
            value = train_step(
                model, batch, loss_fn=loss.fn, optimizer=optimizer, scheduler=scheduler,
                scaler=scaler, amp_dtype=amp_dtype, max_grad_norm=cfg.max_grad_norm,
            )
            losses.append(value)
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}", lr=f"{scheduler.get_last_lr()[0]:.2e}", best=f"{best_score:.4f}" if best_score is not None else "-", refresh=False)
        bar.close()

        preds = run_inference(model, valid_enc, batch_size=cfg.eval_batch_size, device=device, amp_dtype=amp_dtype, activation=loss.activation, values=target.values)
        score = metric.fn(valid_df["label"].to_numpy(), preds)
        improved = is_better(metric, score, best_score)
        history.append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "score": float(score), "improved": bool(improved)})
        print(f"fold {fold} epoch {epoch + 1}/{cfg.epochs}: train loss {np.mean(losses):.4f}, valid {metric.name} {score:.4f}{' (best)' if improved else ''}", flush=True)
        if improved:
            best_score, best_epoch, best_preds = float(score), epoch + 1, preds
            save_model_folder(model, tokenizer, fold_dir, {**meta, "fold": fold, "score": best_score, "epoch": best_epoch})

    oof = pd.DataFrame({"id": valid_df["id"], "fold": fold, "label": valid_df["label"], "pred": best_preds})
    return FoldResult(fold, best_score, best_epoch, oof, history, surgery, time.time() - start)
