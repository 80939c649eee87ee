"""What the model outputs and how labels map onto it: one score, n classes, or soft-label bins.

- ``single``: one logit per row; the loss's activation (sigmoid for bce, identity for mse) gives
  the prediction.
- ``classes``: one logit per distinct training label value (e.g. USPPPM's 0, .25, .5, .75, 1); the
  target is the one-hot row; the prediction is the expected value under the softmax, so a
  regression metric (Pearson) and a 0/1 task's AUC both read it directly.
- ``bins``: ``num_bins`` evenly spaced bin centres over the label range; a label between two
  centres is split between them linearly (0.6 on centres 0.5 and 0.75 → 0.6 / 0.4), so the
  expected value of the target is the label itself; the prediction is the expected value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # torch loads when labels are encoded: the run folder's meta reads a Target without it
    import torch

OUTPUTS = ("single", "classes", "bins")
MAX_CLASSES = 100  # more distinct labels than this is a continuous label: use bins


@dataclass(frozen=True)
class Target:
    """An output kind and, for classes and bins, the label value of each output."""

    kind: str = "single"
    values: tuple[float, ...] = ()

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == "single" else len(self.values)

    def encode(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels (B,) → training targets: (B,) floats for single, (B, C) distributions otherwise."""
        import torch

        labels = labels.float()
        if self.kind == "single":
            return labels
        values = torch.tensor(self.values, dtype=torch.float32, device=labels.device)  # (C,)
        if self.kind == "classes":
            hit = labels.unsqueeze(-1) == values  # (B, C)
            if not bool(hit.any(dim=-1).all()):
                bad = labels[~hit.any(dim=-1)][:3].tolist()
                raise ValueError(f"output=classes: label(s) {bad} are not among the classes {list(self.values)}.")
            return hit.float()
        # bins: linear split between the two nearest centres (evenly spaced)
        low, high, count = values[0], values[-1], len(self.values)
        pos = (labels.clamp(low, high) - low) / (high - low) * (count - 1)  # (B,) in [0, C-1]
        left = pos.floor().clamp(max=count - 2).long()
        frac = pos - left
        out = torch.zeros(labels.shape[0], count, device=labels.device)
        out.scatter_(1, left.unsqueeze(1), (1 - frac).unsqueeze(1))
        out.scatter_add_(1, (left + 1).unsqueeze(1), frac.unsqueeze(1))
        return out

    def to_meta(self) -> dict:
        return {"kind": self.kind, "values": list(self.values)}

    @classmethod
    def from_meta(cls, meta: dict | None) -> "Target":
        meta = meta or {}
        return cls(meta.get("kind", "single"), tuple(float(v) for v in meta.get("values", ())))


def make_target(kind: str, labels, *, num_bins: int = 5, label_range: tuple[float, float] = (-np.inf, np.inf)) -> Target:
    """The Target for a run, from the training labels (all folds, so every fold has the same outputs).

    Args:
        kind: single | classes | bins (the ``output`` config key).
        labels: every training label.
        num_bins: bins: how many centres.
        label_range: the recipe's label range; bins span it where it is finite, else the labels' range.
    """
    if kind not in OUTPUTS:
        raise ValueError(f"config key 'output': unknown value {kind!r}; valid values are {list(OUTPUTS)}.")
    if kind == "single":
        return Target()
    labels = np.asarray(labels, dtype=np.float64)
    if kind == "classes":
        values = np.unique(labels)
        if len(values) > MAX_CLASSES:
            raise ValueError(
                f"output=classes: the label has {len(values)} distinct values (more than {MAX_CLASSES}); "
                "a continuous label needs output=bins or output=single."
            )
        if len(values) < 2:
            raise ValueError(f"output=classes: the label has only the value(s) {values.tolist()}; need at least 2 classes.")
        return Target("classes", tuple(float(v) for v in values))
    if num_bins < 2:
        raise ValueError(f"config key 'num_bins' must be 2 or more for output=bins, got {num_bins}.")
    low = label_range[0] if np.isfinite(label_range[0]) else float(labels.min())
    high = label_range[1] if np.isfinite(label_range[1]) else float(labels.max())
    if not high > low:
        raise ValueError(f"output=bins: the labels span [{low}, {high}], an empty range; use output=single.")
    return Target("bins", tuple(float(v) for v in np.linspace(low, high, num_bins)))
