"""Exponential moving average (EMA) of a model's weights: a smoother model to evaluate and save.

The loop calls ``ema.update(model)`` after each optimizer step; ``with ema.apply_to(model):`` swaps the
averaged weights in for evaluation or saving and puts the training weights back, bit for bit.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """Shadow copies of the trainable floating-point parameters, moved towards them at each update:
    shadow = decay · shadow + (1 - decay) · param.

    Only parameters are averaged (the usual choice): buffers (position ids, feature statistics,
    Mixout targets) are not trained by the optimizer and stay as they are in the model. The shadows
    are fp32 even when the model is fp16, so the small (1 - decay) steps are not rounded away. A
    parameter unfrozen after the EMA was made joins the average from its value at that update.

    Args:
        model: the model being trained; its current weights start the average.
        decay: weight of the past, in [0, 1]. Default 0.999 (an average over about 1000 steps);
            0 copies the weights, 1 keeps the starting ones.
        warmup: use min(decay, (1 + n) / (10 + n)) at the update after n earlier ones (the
            TensorFlow ``num_updates`` rule), so the early, random-ish weights fade fast. Default False.

    Example:
        >>> ema = EMA(model, decay=0.999)
        >>> train_step(model, batch, ..., ema=ema)  # ema.update(model) after each optimizer step
        >>> with ema.apply_to(model):
        ...     preds = run_inference(model, ...)
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, *, warmup: bool = False):
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0 <= decay <= 1:
            raise ValueError(f"decay must be a number in [0, 1], got decay={decay!r}; 0.999 is usual.")
        self.decay = float(decay)
        self.warmup = bool(warmup)
        self.num_updates = 0
        self.shadow: dict[str, torch.Tensor] = {
            name: _fp32_copy(p) for name, p in model.named_parameters() if _tracked(p)
        }
        if not self.shadow:
            raise ValueError("EMA: the model has no trainable floating-point parameter to average.")

    def current_decay(self) -> float:
        """The decay the next update uses (with `warmup`, smaller for the first updates)."""
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move every shadow towards the model's current parameter by (1 - decay)."""
        weight = 1.0 - self.current_decay()
        shadows, values, seen = [], [], 0
        for name, p in model.named_parameters():
            shadow = self.shadow.get(name)
            if shadow is None:
                if _tracked(p):
                    self.shadow[name] = _fp32_copy(p)
                    seen += 1
                continue
            if shadow.device != p.device:  # the model moved (e.g. to the GPU) after the EMA was made
                shadow = self.shadow[name] = shadow.to(p.device)
            shadows.append(shadow)
            values.append(p.detach().float())  # no copy for fp32 parameters
            seen += 1
        if seen != len(self.shadow):
            self._check_names(model)
        # lerp: shadow + w · (param - shadow); exact when they are equal and at w = 1 (decay 0)
        if hasattr(torch, "_foreach_lerp_") and len({t.device for t in shadows}) <= 1:
            torch._foreach_lerp_(shadows, values, weight)
        else:
            for shadow, value in zip(shadows, values):
                shadow.lerp_(value, weight)
        self.num_updates += 1

    @contextmanager
    def apply_to(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged weights (cast to its dtypes); after it, the
        training weights again, bit for bit, even when the block raises.

        Example:
            >>> with ema.apply_to(model):
            ...     save_model_folder(model, tokenizer, "run/fold0", meta)
        """
        self._check_names(model)
        params = [(name, p) for name, p in model.named_parameters() if name in self.shadow]
        saved = [p.detach().clone() for _, p in params]
        try:
            with torch.no_grad():
                for name, p in params:
                    p.copy_(self.shadow[name])
            yield model
        finally:
            with torch.no_grad():
                for (_, p), training in zip(params, saved):
                    p.copy_(training)

    def state_dict(self) -> dict:
        """``{"num_updates": int, "shadow": {name: fp32 tensor}}``: readable by ``torch.load(weights_only=True)``."""
        return {"num_updates": self.num_updates, "shadow": dict(self.shadow)}

    def load_state_dict(self, state: dict) -> None:
        """Resume from `state_dict`. Every current shadow must be in it, with its shape; names it has
        in addition (parameters unfrozen during the saved run) are taken over."""
        unknown = set(state) - {"num_updates", "shadow"}
        if unknown or "shadow" not in state:
            raise ValueError(f"EMA state: expected the keys 'num_updates' and 'shadow', got {sorted(state)}.")
        loaded = state["shadow"]
        missing = sorted(set(self.shadow) - set(loaded))
        if missing:
            raise ValueError(f"EMA state has no shadow for {len(missing)} parameter(s), e.g. {missing[:3]}: it was saved from another model.")
        for name, tensor in loaded.items():
            current = self.shadow.get(name)
            if current is not None and current.shape != tensor.shape:
                raise ValueError(f"EMA state: {name} has shape {tuple(tensor.shape)}, the model's is {tuple(current.shape)}.")
        for name, tensor in loaded.items():
            device = self.shadow[name].device if name in self.shadow else tensor.device
            self.shadow[name] = tensor.detach().to(device=device, dtype=torch.float32, copy=True)
        self.num_updates = int(state.get("num_updates", 0))

    def _check_names(self, model: nn.Module) -> None:
        shapes = {name: p.shape for name, p in model.named_parameters()}
        missing = [name for name in self.shadow if name not in shapes]
        if missing:
            raise ValueError(f"EMA: the model has no parameter {missing[0]!r} ({len(missing)} missing): "
                             "pass the model the EMA was made from.")
        wrong = [name for name, shadow in self.shadow.items() if shadow.shape != shapes[name]]
        if wrong:
            raise ValueError(f"EMA: {wrong[0]!r} has shape {tuple(shapes[wrong[0]])} in the model but "
                             f"{tuple(self.shadow[wrong[0]].shape)} in the average: pass the model the EMA was made from.")


def _tracked(p: nn.Parameter) -> bool:
    return p.requires_grad and p.is_floating_point()


def _fp32_copy(p: torch.Tensor) -> torch.Tensor:
    return p.detach().to(torch.float32, copy=True)
