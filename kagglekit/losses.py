"""Training losses by name. Each takes raw model outputs (logits) and float labels, returns a scalar.

A loss also says how to turn logits into predictions (`activation`), so evaluation, out-of-fold
predictions and `predict` agree with what was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Loss:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits (B,), labels (B,)) -> scalar
    activation: str  # "sigmoid" or "identity": logits -> predictions in the label's space


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # computed in fp32: under fp16 autocast the logits may be half precision
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def _mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits.float(), labels.float())


LOSSES: dict[str, Loss] = {
    "bce": Loss("bce", _bce, "sigmoid"),
    "mse": Loss("mse", _mse, "identity"),
}


def get_loss(name: str | Loss) -> Loss:
    """Look a loss up by name; a Loss passes straight through."""
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses are {sorted(LOSSES)}.")
    return LOSSES[name]


def activate(logits: torch.Tensor, activation: str) -> torch.Tensor:
    """Map logits to predictions in the label's space."""
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    if activation == "identity":
        return logits.float()
    raise ValueError(f"unknown activation {activation!r}; valid: ['identity', 'sigmoid'].")
