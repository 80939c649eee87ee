"""Optimizer and scheduler: AdamW groups (decay by module type, layer-wise LR decay), warmup schedules."""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from kagglekit._keys import LAYER_DECAY

# Normalisation layers keep weight decay off their scale and shift: decaying them toward zero
# fights the normalisation. Matched by type, so a backbone's custom LayerNorm class is caught too.
_NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.RMSNorm) if hasattr(nn, "RMSNorm") else (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, _NORM_TYPES) or "norm" in type(module).__name__.lower()


def _backbone_parts(model: nn.Module, lr: float, layer_decay: float) -> tuple[dict[int, str], dict[str, float]]:
    """Which part each backbone parameter belongs to, ``{id(param): part}``, and each part's rate,
    ``{part: lr}``, ordered bottom to top.

    With layer_decay = 1 the whole backbone is one part. Otherwise, with L encoder layers:

    - ``layer_{i}`` (i = 0 bottom .. L-1 top): ``lr * layer_decay ** (L - 1 - i)``;
    - ``embeddings`` (``backbone.embeddings`` and electra's ``embeddings_project``): ``lr * layer_decay ** L``;
    - ``pooler``: ``lr``, the top layer's rate: it runs after the top layer and is as task-specific;
    - ``decoder_top``: a causal LM's final norm and (untied) LM head: ``lr`` too, for the same reason;
    - ``encoder_shared``: every other backbone parameter. In the supported archs these are
      deberta-v2's relative-position table ``encoder.rel_embeddings``, its ``encoder.LayerNorm``
      (and the optional ``encoder.conv``), which every layer reads, the bottom one included: they
      get the embeddings' rate, as the other position tables do, so that no layer's input shifts
      faster than its own weights.
    """
    backbone = getattr(model, "backbone", None)
    if backbone is None:
        if layer_decay != 1:
            raise ValueError(f"layer_decay={layer_decay} needs a model with a `backbone` attribute; pass layer_decay=1.0.")
        return {}, {}
    if layer_decay == 1:
        return {id(p): "backbone" for p in backbone.parameters()}, {"backbone": lr}

    from kagglekit.models.surgery import _embedding_modules, encoder_layers

    try:
        layers = encoder_layers(backbone)
    except ValueError as err:
        raise ValueError(f"layer_decay={layer_decay}: {err} Or pass layer_decay=1.0.") from None
    count = len(layers)
    modules = [("embeddings", m) for m in _embedding_modules(backbone)] + [(f"layer_{i}", m) for i, m in enumerate(layers)]
    if isinstance(getattr(backbone, "pooler", None), nn.Module):
        modules.append(("pooler", backbone.pooler))
    modules += [("decoder_top", m) for m in _decoder_top(backbone)]
    parts = {}
    for part, module in modules:
        for param in module.parameters():
            parts.setdefault(id(param), part)  # first claim wins: a tied weight stays in one part
    for param in backbone.parameters():
        parts.setdefault(id(param), "encoder_shared")
    bottom = lr * layer_decay**count
    rates = {"embeddings": bottom, "encoder_shared": bottom}
    rates.update({f"layer_{i}": lr * layer_decay ** (count - 1 - i) for i in range(count)})
    rates["pooler"] = rates["decoder_top"] = lr
    return parts, rates


def _decoder_top(backbone: nn.Module) -> list[nn.Module]:
    """What a causal LM runs after its top layer: the final norm and the LM head (a tied one is the embeddings')."""
    base = getattr(backbone, "base_model", backbone)
    if not isinstance(getattr(base, "embed_tokens", None), nn.Module):
        return []
    found = [getattr(base, "norm", None), backbone.get_output_embeddings() if backbone is not base else None]
    return [m for m in found if isinstance(m, nn.Module)]


def param_groups(model: nn.Module, *, lr: float, head_lr: float, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
    """AdamW groups: backbone parts and the head, each split into decay / no decay.

    Every trainable parameter lands in exactly one group, whatever its name: the head is "all that
    is not under ``model.backbone``", so a custom head can never fall out of the optimizer. Frozen
    parameters (``requires_grad=False``) are in no group. Group names say where the parameters come
    from: ``backbone`` (layer_decay = 1) or ``embeddings``, ``encoder_shared``, ``layer_0`` ..
    ``layer_{L-1}``, ``pooler`` (layer-wise decay; see `_backbone_parts` for the rates), then
    ``head``; each with a ``_no_decay`` twin holding biases, normalisation weights and other 1-d
    parameters. Empty groups are left out. Order: bottom to top, the head last.

    Args:
        model: a model with a ``backbone`` attribute (any other module is all head).
        lr: backbone learning rate; with layer-wise decay, the top encoder layer's.
        head_lr: learning rate for everything outside the backbone; 0 means the same as `lr`.
        weight_decay: applied to weights of non-normalisation layers only.
        layer_decay: in (0, 1]; each encoder layer gets `layer_decay` times the rate of the layer
            above it, the embeddings `lr * layer_decay ** L`. 1.0 (default): one backbone rate.

    Example:
        >>> groups = param_groups(model, lr=2e-5, head_lr=1e-3, weight_decay=0.01, layer_decay=0.9)
        >>> [(g["name"], g["lr"]) for g in groups][:2]  # [('embeddings', ...), ('embeddings_no_decay', ...)]
    """
    LAYER_DECAY.check("layer_decay", layer_decay, what="the layer-wise LR decay", fix="1.0 turns it off, 0.8-0.95 is usual")
    parts, rates = _backbone_parts(model, lr, layer_decay)
    rates["head"] = head_lr or lr
    groups = {(part, decay): [] for part in rates for decay in (True, False)}
    seen = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            decay = not (_is_norm(module) or name.endswith("bias") or param.ndim < 2)
            groups[(parts.get(id(param), "head"), decay)].append(param)
    out = [
        {"params": params, "lr": rates[part], "weight_decay": weight_decay if decay else 0.0, "name": f"{part}{'' if decay else '_no_decay'}"}
        for (part, decay), params in groups.items()
        if params
    ]
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in out) == trainable, "a trainable parameter is missing from the optimizer"
    return out


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    head_lr: float,
    weight_decay: float,
    layer_decay: float = 1.0,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-6,
) -> torch.optim.AdamW:
    """AdamW over `param_groups` (arguments as there). eps 1e-6, as BERT fine-tuning used, is kinder
    than torch's 1e-8 to the tiny second moments of rarely used embedding rows.

    Example:
        >>> optimizer = build_optimizer(model, lr=2e-5, head_lr=1e-3, weight_decay=0.01, layer_decay=0.9)
    """
    groups = param_groups(model, lr=lr, head_lr=head_lr, weight_decay=weight_decay, layer_decay=layer_decay)
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


# The kit's scheduler names → transformers' ``SchedulerType`` values (`transformers.get_scheduler`).
# Every one warms up linearly from 0: transformers' plain "constant" has no warmup, so the kit's
# "constant" is its "constant_with_warmup".
SCHEDULERS = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}


def warmup_steps_for(total_steps: int, warmup_ratio: float = 0.0, warmup_steps: int = 0) -> int:
    """Warmup length in optimizer steps: `warmup_steps` when > 0, else ceil(total_steps * warmup_ratio)."""
    if warmup_steps < 0 or warmup_ratio < 0:
        bad = f"warmup_steps={warmup_steps}" if warmup_steps < 0 else f"warmup_ratio={warmup_ratio}"
        raise ValueError(f"{bad}: warmup cannot be negative; pass 0 for no warmup.")
    if warmup_ratio > 1:
        raise ValueError(f"warmup_ratio={warmup_ratio}: a share of the steps must be in [0, 1]; for a count use warmup_steps.")
    if warmup_steps > 0:
        return int(warmup_steps)
    return math.ceil(round(total_steps * warmup_ratio, 6))  # round first: 10 * 0.3 is 3.0000000000000004


def build_scheduler(
    optimizer,
    name: str,
    *,
    total_steps: int,
    warmup_ratio: float = 0.0,
    warmup_steps: int = 0,
    num_cycles: float = 0.5,
):
    """A transformers schedule (`transformers.get_scheduler`), stepped once per optimizer step: linear
    warmup from 0, then its shape.

    - ``linear``: down to 0 at `total_steps`;
    - ``cosine``: after warmup the multiplier is
      ``max(0, 0.5 * (1 + cos(2 * pi * num_cycles * progress)))``, progress going 0 → 1. With
      num_cycles = 0.5 (default) one half-cosine down to 0; 1.0 goes down to 0 halfway and back up
      to the peak; larger values oscillate (smooth cycles, not hard restarts);
    - ``constant``: the peak after warmup.

    Args:
        optimizer: the optimizer; each group's ``lr`` is its peak.
        name: one of `SCHEDULERS` (``linear``, ``cosine``, ``constant``).
        total_steps: optimizer steps in the whole run (after gradient accumulation).
        warmup_ratio: warmup as a share of `total_steps` in [0, 1], rounded up to whole steps.
        warmup_steps: warmup in steps; when > 0 it wins over `warmup_ratio` (both may be set: a
            config default ratio does not have to be zeroed to use steps).
        num_cycles: cosine only; any other value than 0.5 with another schedule is an error.

    Example:
        >>> scheduler = build_scheduler(optimizer, "cosine", total_steps=1000, warmup_ratio=0.1)
    """
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid schedulers are {sorted(SCHEDULERS)}.")
    if total_steps < 1:
        raise ValueError(f"total_steps must be 1 or more, got total_steps={total_steps}.")
    if not num_cycles > 0:
        raise ValueError(f"num_cycles must be > 0 (0.5: one half-cosine down to 0), got num_cycles={num_cycles}.")
    if name != "cosine" and num_cycles != 0.5:
        raise ValueError(f"num_cycles={num_cycles} applies to the cosine scheduler only, not {name!r}; leave it at 0.5.")
    warmup = warmup_steps_for(total_steps, warmup_ratio, warmup_steps)
    if warmup > total_steps:
        warnings.warn(
            f"warmup of {warmup} steps is longer than the run's {total_steps} optimizer steps: the learning rate "
            "never reaches its peak; lower warmup_steps or warmup_ratio.", stacklevel=2,
        )
    from transformers import get_scheduler

    extra = {"num_cycles": num_cycles} if name == "cosine" else {}
    return get_scheduler(
        SCHEDULERS[name], optimizer, num_warmup_steps=warmup, num_training_steps=total_steps, scheduler_specific_kwargs=extra
    )
