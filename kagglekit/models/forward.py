"""Forward passes over a whole encoded set: raw logits or activated predictions, in the rows' own order.

Training's evaluation and inference both call these, so they sit below both in the pipeline.
"""

from __future__ import annotations

import numpy as np
import torch

from kagglekit.data.batching import PairEncodings, sorted_batches
from kagglekit.losses import activate


@torch.no_grad()
def run_logits(model, encodings: PairEncodings, *, batch_size: int, device: torch.device, amp_dtype=None) -> np.ndarray:
    """The model's raw outputs for every row of `encodings`, in their original order.

    Returns:
        float32 logits, shape (N,) for one output, (N, C) for ``classes`` and ``bins`` outputs.
    """
    model.eval()
    parts, order = [], []
    pinned = device.type == "cuda"  # page-locked host batches copy asynchronously, overlapping the previous forward
    for indices in sorted_batches(encodings.lengths, batch_size):
        batch = {k: (v.pin_memory() if pinned else v).to(device, non_blocking=pinned)
                 for k, v in encodings.collate(indices).items() if k != "labels"}
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            parts.append(model(**batch).float())  # (B,) or (B, C), left on the device: no sync per batch
        order.append(np.asarray(indices))
    if not parts:
        return np.empty(0, dtype=np.float32)
    logits = torch.cat(parts).cpu().numpy()  # one copy back
    out = np.empty_like(logits)
    out[np.concatenate(order)] = logits
    return out


def run_inference(model, encodings: PairEncodings, *, batch_size: int, device: torch.device, amp_dtype=None, activation: str = "identity", values=()) -> np.ndarray:
    """Predictions for every row of `encodings`, in their original order, shape (N,).

    `activation` (and, for ``expected``, the output `values`) maps logits to the label's space.
    """
    logits = run_logits(model, encodings, batch_size=batch_size, device=device, amp_dtype=amp_dtype)
    return activate(torch.from_numpy(logits), activation, values).numpy().astype(np.float64)
