"""Optimizer and scheduler: AdamW with decay/no-decay groups by module type, warmup schedules."""

from __future__ import annotations

import math

import torch
from torch import nn

# Normalisation layers keep weight decay off their scale and shift: decaying them toward zero
# fights the normalisation. Matched by type, so a backbone's custom LayerNorm class is caught too.
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def param_groups(model: nn.Module, *, lr: float, head_lr: float, weight_decay: float) -> list[dict]:
    """AdamW groups: backbone vs the rest (head, output layer), each split into decay / no decay.

    Every trainable parameter lands in exactly one group, whatever its name: the head is "all that
    is not under ``model.backbone``", so a custom head can never fall out of the optimizer.

    Args:
        model: a model with a ``backbone`` attribute.
        lr: backbone learning rate.
        head_lr: learning rate for everything outside the backbone; 0 means the same as `lr`.
        weight_decay: applied to weights of non-normalisation layers only.
    """
    backbone_ids = {id(p) for p in model.backbone.parameters()} if hasattr(model, "backbone") else set()
    groups = {(part, decay): [] for part in ("backbone", "head") for decay in (True, False)}
    seen = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = not (_is_norm(module) or name.endswith("bias") or param.ndim < 2)
            part = "backbone" if id(param) in backbone_ids else "head"
            groups[(part, decay)].append(param)
    rates = {"backbone": lr, "head": head_lr or lr}
    out = [
        {"params": params, "lr": rates[part], "weight_decay": weight_decay if decay else 0.0, "name": f"{part}{'' if decay else '_no_decay'}"}
        for (part, decay), params in groups.items()
        if params
    ]
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in out) == trainable, "a trainable parameter is missing from the optimizer"
    return out


def build_optimizer(model: nn.Module, *, lr: float, head_lr: float, weight_decay: float) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, lr=lr, head_lr=head_lr, weight_decay=weight_decay), lr=lr)


def build_scheduler(optimizer, name: str, *, total_steps: int, warmup_ratio: float):
    """A transformers schedule stepped once per optimizer step: linear, cosine or constant after warmup."""
    from transformers import get_scheduler

    names = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}
    if name not in names:
        raise ValueError(f"unknown scheduler {name!r}; valid schedulers are {sorted(names)}.")
    warmup = math.ceil(total_steps * warmup_ratio)
    return get_scheduler(names[name], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
