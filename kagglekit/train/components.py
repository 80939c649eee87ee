"""What a fold trains with: the model, optimizer, scheduler, GradScaler, EMA and adversary, built from the config.

`build_components` makes them in a fixed order (the model's random init first), so the same seed
gives the same fold; `kagglekit.train.fold_state.FoldState` saves and restores their states.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from kagglekit.config import Config


@dataclass
class Components:
    """The objects one training run steps, and what it needs to step them.

    Fine-tuning gets them from `build_components`; MLM pretraining builds its own (no EMA, no
    adversary, no head loss). `FoldState` saves the states of ``model``, ``optimizer``,
    ``scheduler``, ``scaler`` and ``ema``.
    """

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler, stepped once per optimizer step
    scaler: torch.amp.GradScaler  # enabled for fp16 only
    amp_dtype: torch.dtype | None = None  # autocast dtype; None: fp32, no autocast
    ema: Any = None  # kagglekit.train.ema.EMA, or None
    adversary: Any = None  # kagglekit.train.adversarial FGM/PGD/AWP, or None
    tokenizer: Any = None
    loss: Any = None  # kagglekit.losses.Loss: .fn for training, .activation for predictions
    surgery: dict = field(default_factory=dict)  # what `backbone_surgery` did


def model_options(cfg: Config, num_outputs: int = 1) -> dict:
    """`PairModel` arguments from the config. Head options go only when set away from their
    defaults, and `Config.validate` has checked that the head takes each of them."""
    rates = cfg.dropout_rates()
    options = {
        "head": cfg.head,
        "num_outputs": num_outputs,
        "dropout": rates,
        "msd_samples": len(rates),
        "msd_average": cfg.msd_average,
        "head_options": cfg.head_option_values(),
        "feature_names": cfg.model_features(),
    }
    if cfg.head == "token_logits":  # the LM head's rows of these tokens are the output layer
        options["label_tokens"] = list(cfg.label_tokens)
    if cfg.lora_r > 0:  # adapters on the frozen backbone (kagglekit.models.lora)
        options["lora"] = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout, "targets": list(cfg.lora_targets)}
    return options


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
    """Dropout overrides, re-initialised top layers, freezing, mixout, gradient checkpointing (always on a quantised
    base: QLoRA); a summary."""
    from kagglekit.models.surgery import apply_surgery, set_dropout

    hidden = None if cfg.hidden_dropout == -1 else cfg.hidden_dropout
    attention = None if cfg.attention_dropout == -1 else cfg.attention_dropout
    summary = {"dropout": set_dropout(backbone, hidden, attention) if (hidden, attention) != (None, None) else {}}
    summary.update(apply_surgery(
        backbone, reinit_layers=cfg.reinit_layers, reinit_pooler=cfg.reinit_pooler, freeze_embeddings=cfg.freeze_embeddings,
        freeze_layers=cfg.freeze_layers, gradient_checkpointing=cfg.gradient_checkpointing or cfg.quantize != "none",
        mixout=cfg.mixout,
    ))
    return summary


def _lora_loading(cfg: Config, device: torch.device, precision: str) -> dict:
    """`build_model`'s loading options for the run: a quantised base (QLoRA) and its preparation for training, or none."""
    if cfg.quantize == "none":
        return {}
    from kagglekit.models.lora import check_quantize, compute_dtype, prepare_kbit_training, quantized_load_options

    check_quantize(cfg.quantize, device)
    return {"load_options": quantized_load_options(cfg.quantize, device, compute_dtype(precision)), "prepare": prepare_kbit_training}


def optimizer_steps_per_epoch(n_rows: int, cfg: Config) -> int:
    """Optimizer steps in one epoch over `n_rows` training rows: batches, then accumulation."""
    return math.ceil(math.ceil(n_rows / cfg.batch_size) / cfg.accum_steps)


def build_components(cfg: Config, train_df: pd.DataFrame, *, num_outputs: int, loss: str, device: torch.device,
                     precision: str) -> Components:
    """A fold's model (with its surgery and feature statistics, on `device`) and what trains it.

    Args:
        cfg: the run configuration.
        train_df: the fold's training rows (after augmentation and extra rows): the feature
            statistics and the schedule's length come from them, never from the validation fold.
        num_outputs: the output layer's width (`kagglekit.targets.Target.num_outputs`).
        loss: the loss's name or spec (`kagglekit.losses.get_loss`).
        device: where the model goes.
        precision: fp32 | fp16 | bf16, already resolved for the device (fp16 enables the GradScaler).

    Example:
        >>> parts = build_components(cfg, train_df, num_outputs=1, loss="mse", device=torch.device("cpu"), precision="fp32")
        >>> train_step(parts.model, batch, loss_fn=parts.loss.fn, optimizer=parts.optimizer, ...)
    """
    from kagglekit.kaggle import amp_dtype
    from kagglekit.losses import get_loss
    from kagglekit.models.pair_model import build_model
    from kagglekit.train.adversarial import create_adversary
    from kagglekit.train.ema import EMA
    from kagglekit.train.optim import build_optimizer, build_scheduler

    # The order is part of the seed's meaning: the head's init and re-initialised layers draw from torch's RNG.
    model, tokenizer = build_model(cfg.backbone, **_lora_loading(cfg, device, precision), **model_options(cfg, num_outputs))
    surgery = backbone_surgery(model.backbone, cfg)
    if model.lora is not None:  # the fold folder holds the adapters and head only: it records which base they go on
        from kagglekit.models.base_model import base_identity
        from kagglekit.models.lora import trainable_counts

        model.base_identity = {**base_identity(cfg.backbone), "quantize": cfg.quantize, "merge_adapter": cfg.merge_adapter}
        trainable, total = trainable_counts(model)
        surgery["lora"] = {**model.lora, "trainable_params": trainable, "total_params": total}
    features = cfg.model_features()
    if features:
        model.set_feature_stats(train_df[features].to_numpy())  # training rows only: no validation leak
    model.to(device)
    optimizer = build_optimizer(model, lr=cfg.lr, head_lr=cfg.head_lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay)
    total_steps = optimizer_steps_per_epoch(len(train_df), cfg) * cfg.epochs
    scheduler = build_scheduler(optimizer, cfg.scheduler, total_steps=total_steps, warmup_ratio=cfg.warmup_ratio,
                                warmup_steps=cfg.warmup_steps, num_cycles=cfg.num_cycles)
    return Components(
        model=model, optimizer=optimizer, scheduler=scheduler,
        scaler=torch.amp.GradScaler(device.type, enabled=precision == "fp16"), amp_dtype=amp_dtype(precision),
        ema=EMA(model, decay=cfg.ema, warmup=cfg.ema_warmup) if cfg.ema > 0 else None,
        adversary=create_adversary(cfg.adversary, model, **adversary_options(cfg)),
        tokenizer=tokenizer, loss=get_loss(loss, **loss_options(cfg)), surgery=surgery,
    )
