"""The state a training loop carries, as one object with `state_dict()` and `load_state_dict()`.

Fine-tuning (`kagglekit.train.loop.train_fold`) and MLM pretraining (`kagglekit.train.pretrain`)
keep their position, counters, bookkeeping and random generators in a `FoldState`; its state dict
is the resume file (`kagglekit.train.state`), so a resumed run continues where the saved one stopped.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from kagglekit.train.components import Components
from kagglekit.train.state import (capture_rng, generator_state, load_state, restore_rng, save_state,
                                   set_generator_state)

# Saved under their own names. Counters missing from a file (one written before the key existed:
# nonfinite, or pretraining's epoch/batch/stale) read as 0, lists as empty.
_COUNTERS = ("step", "epoch", "batch", "stale", "nonfinite")
_LISTS = ("history", "log", "since_eval")
_STATEFUL = ("model", "optimizer", "scheduler", "scaler", "ema")  # the components whose state is saved


@dataclass
class FoldState:
    """A run's components and everything its loop changes as it goes.

    Args:
        parts: the model, optimizer, scheduler, scaler and EMA (their states are saved) and the rest
            of what the loop uses (`kagglekit.train.components.Components`).
        rng: the generator that draws each epoch's batch order, independent of torch's RNG; None when
            the order is a function of the step (pretraining).

    Example:
        >>> state = FoldState(parts, rng=np.random.default_rng(cfg.seed))
        >>> if resume and path.is_file():
        ...     state.load(path)
        >>> state.save(path)  # at an evaluation: the next batch to run is state.batch of state.epoch
    """

    parts: Components
    rng: np.random.Generator | None = None
    step: int = 0  # optimizer steps done
    epoch: int = 0  # the epoch in progress, 0-based
    batch: int = 0  # the next batch of `epoch` to run (0: the epoch starts afresh)
    stale: int = 0  # evaluations since the last improvement (early stopping)
    nonfinite: int = 0  # non-finite losses in a row (divergence)
    best_score: float | None = None  # None until the first evaluation
    best_epoch: int = -1  # 1-based epoch of the best evaluation
    best_step: int = -1
    best_preds: np.ndarray | None = None  # (N,) or (N, C): the validation predictions of the best evaluation
    history: list = field(default_factory=list)  # one dict per evaluation
    log: list = field(default_factory=list)  # one dict per optimizer step: step, epoch, loss, lr, score
    since_eval: list = field(default_factory=list)  # step losses since the last evaluation
    epoch_rng: dict | None = None  # `rng`'s state at the start of `epoch`: its batch order is drawn again on resume

    def state_dict(self) -> dict:
        """Everything a resumed run needs, in a form ``torch.load(weights_only=True)`` reads back.

        Includes the global random generators (Python, NumPy, torch) as they are now.
        """
        out = {name: _state_of(getattr(self.parts, name)) for name in _STATEFUL}
        out["model"] = model_state(self.parts.model)
        out.update({name: getattr(self, name) for name in _COUNTERS + _LISTS})
        preds = None if self.best_preds is None else torch.from_numpy(np.asarray(self.best_preds))
        out["best"] = {"score": self.best_score, "epoch": self.best_epoch, "step": self.best_step, "preds": preds}
        out["rng"] = capture_rng()
        # mid-epoch: the epoch's batch order is drawn again from its start; at an epoch's end: the next one's
        out["epoch_rng"] = self.epoch_rng if self.batch or self.rng is None else generator_state(self.rng)
        return out

    def load_state_dict(self, saved: dict) -> None:
        """Restore a `state_dict()`: component states, counters, bookkeeping and every random generator."""
        for name in _STATEFUL:
            component = getattr(self.parts, name)
            if component is not None and name == "model":
                load_model_state(component, saved[name])
            elif component is not None:
                component.load_state_dict(saved[name])
        for name in _COUNTERS:
            setattr(self, name, int(saved.get(name, 0)))
        for name in _LISTS:
            setattr(self, name, list(saved.get(name, [])))
        best = saved.get("best") or {}
        self.best_score, self.best_epoch, self.best_step = best.get("score"), best.get("epoch", -1), best.get("step", -1)
        self.best_preds = None if best.get("preds") is None else best["preds"].numpy()
        self.epoch_rng = saved.get("epoch_rng")
        if self.rng is not None and self.epoch_rng is not None:
            set_generator_state(self.rng, self.epoch_rng)
        restore_rng(saved["rng"])

    def save(self, path: str | os.PathLike, **extra) -> Path:
        """Write `state_dict()` (plus `extra` keys, e.g. the run's settings) atomically to `path`."""
        return save_state(path, {**self.state_dict(), **extra})

    def load(self, path: str | os.PathLike) -> dict:
        """Restore the state saved at `path`; returns the whole file (with any `extra` keys)."""
        saved = load_state(path)
        self.load_state_dict(saved)
        return saved

    def count_loss(self, value: float) -> int:
        """Count a micro-step's loss; returns how many non-finite losses came in a row (0 after a finite one)."""
        self.nonfinite = 0 if math.isfinite(value) else self.nonfinite + 1
        return self.nonfinite

    def record_step(self, loss: float, epoch: float, lr: float) -> None:
        """Log an optimizer step (`step` already counted it): its mean micro-step `loss`, where it ends in
        epochs, the learning rate after it."""
        self.since_eval.append(loss)
        self.log.append({"step": self.step, "epoch": round(epoch, 4), "loss": loss, "lr": lr, "score": float("nan")})

    def record_evaluation(self, score: float, improved: bool) -> float:
        """Close an evaluation: patience, history, the score on the last logged step; returns the mean
        training loss since the previous evaluation (NaN when no step ran)."""
        self.stale = 0 if improved else self.stale + 1
        train_loss = float(np.mean(self.since_eval)) if self.since_eval else float("nan")
        self.since_eval.clear()
        self.history.append({"epoch": self.epoch + 1, "step": self.step, "train_loss": train_loss, "score": score,
                             "improved": bool(improved)})
        if self.log:
            self.log[-1]["score"] = score
        return train_loss

    def progress(self) -> dict:
        """The progress bar's postfix: recent loss, learning rate, last and best score."""
        return {"loss": f"{np.nanmean(self.since_eval[-50:]):.4f}", "lr": f"{self.log[-1]['lr']:.2e}" if self.log else "-",
                "score": f"{self.history[-1]['score']:.4f}" if self.history else "-",
                "best": f"{self.best_score:.4f}" if self.best_score is not None else "-"}


def _state_of(component) -> dict:
    return component.state_dict() if component is not None else {}


def model_state(model) -> dict:
    """The model's part of a resume state: its whole state dict, or with LoRA the adapters and head only
    (`kagglekit.models.lora.own_state`): the base is frozen and stays in its own folder."""
    if getattr(model, "lora", None) is None:
        return model.state_dict()
    from kagglekit.models.lora import own_state

    return own_state(model)


def load_model_state(model, state: dict) -> None:
    """Restore `model_state`: every weight (strict), or with LoRA exactly the adapters and head."""
    if getattr(model, "lora", None) is None:
        model.load_state_dict(state)
        return
    from kagglekit.models.lora import own_state

    expected = set(own_state(model))
    if set(state) != expected:
        raise ValueError(f"resume state: its model part holds {len(state)} tensors, this LoRA model's adapters and head are "
                         f"{len(expected)} (e.g. {sorted(expected ^ set(state))[:2]} differ): it was saved by another run's "
                         "settings. Delete the resume state, or resume with the settings it was saved with.")
    model.load_state_dict(state, strict=False)
