"""Pooling heads by name: token states (B, T, H) and a mask (B, T) → one vector per row (B, F).

Every head honours one contract: ``forward(hidden, mask)`` and ``out_features``. Padding tokens
never change a head's output.
"""

from __future__ import annotations

import torch
from torch import nn


class MeanPooling(nn.Module):
    """Mean of the token states over real (mask == 1) tokens."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.out_features = hidden_size

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        total = (hidden * weights).sum(dim=1)  # (B, H)
        count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1); a row with no tokens gives zeros, not NaN
        return total / count


HEADS: dict[str, type[nn.Module]] = {
    "mean": MeanPooling,
}


def create_head(name: str | type[nn.Module], hidden_size: int) -> nn.Module:
    """Build a head by name; a head class passes straight through."""
    if isinstance(name, type) and issubclass(name, nn.Module):
        return name(hidden_size)
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; valid heads are {sorted(HEADS)}.")
    return HEADS[name](hidden_size)
