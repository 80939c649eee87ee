"""Training losses by name. Each takes raw model outputs (logits) and targets, returns a scalar.

A loss also says how to turn logits into predictions (`activation`), so evaluation, out-of-fold
predictions and `predict` agree with what was trained, and which output kinds it trains
(`kagglekit.targets`): ``bce``/``mse`` a single score, ``ce``/``kl`` the distributions of
``classes`` and ``bins`` outputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Loss:
    name: str
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, targets) -> scalar
    activation: str  # "sigmoid", "identity" or "expected": logits -> predictions in the label's space
    outputs: tuple[str, ...] = ("single",)  # the output kinds it trains


# Losses are computed in fp32: under fp16 autocast the logits may be half precision.


def _bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits.float(), labels.float())


def _mse(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(logits.float(), labels.float())


def _soft_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against a target distribution: logits (B, C), target (B, C) rows summing to 1."""
    return -(target * F.log_softmax(logits.float(), dim=-1)).sum(-1).mean()


def _kl(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || softmax(logits)), averaged over rows; zero when the prediction equals the target."""
    return F.kl_div(F.log_softmax(logits.float(), dim=-1), target.float(), reduction="batchmean")


LOSSES: dict[str, Loss] = {
    "bce": Loss("bce", _bce, "sigmoid"),
    "mse": Loss("mse", _mse, "identity"),
    "ce": Loss("ce", _soft_ce, "expected", ("classes", "bins")),
    "kl": Loss("kl", _kl, "expected", ("classes", "bins")),
}


def get_loss(name: str | Loss) -> Loss:
    """Look a loss up by name; a Loss passes straight through."""
    if isinstance(name, Loss):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; valid losses are {sorted(LOSSES)}.")
    return LOSSES[name]


def default_loss(output: str, label_range: tuple[float, float]) -> str:
    """The loss ``loss=auto`` picks: bce for a single score in [0, 1], mse for other scores, ce otherwise."""
    if output != "single":
        return "ce"
    return "bce" if label_range[0] >= 0 and label_range[1] <= 1 else "mse"


def check_loss_output(loss: Loss, output: str) -> None:
    if output not in loss.outputs:
        fits = sorted(name for name, other in LOSSES.items() if output in other.outputs)
        raise ValueError(f"config key 'loss': {loss.name!r} does not train output={output!r}; use one of {fits} (or loss=auto).")


def activate(logits: torch.Tensor, activation: str, values: Sequence[float] = ()) -> torch.Tensor:
    """Map logits to predictions in the label's space: (B,) for a single score, (B, C) → (B,) otherwise."""
    if activation == "sigmoid":
        return torch.sigmoid(logits.float())
    if activation == "identity":
        return logits.float()
    if activation == "expected":
        centres = torch.tensor(values, dtype=torch.float32, device=logits.device)  # (C,)
        return torch.softmax(logits.float(), dim=-1) @ centres
    raise ValueError(f"unknown activation {activation!r}; valid: ['expected', 'identity', 'sigmoid'].")
