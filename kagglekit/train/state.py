"""Resumable training state: everything a fold needs to continue after a kill, written atomically, and where it lies.

A state file holds the current (not the best) weights, the optimizer, scheduler, GradScaler and EMA
states, the position (epoch, batch within the epoch, optimizer steps), every random generator, and
the fold's bookkeeping (best score and its predictions, history, step log). It is read back with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, no pickle.
While a fold trains its state goes to scratch space when there is some (`ResumeFiles`).
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kagglekit._io import atomic_path

STATE_VERSION = 1


SCRATCH_FOLDER = "kagglekit-resume"  # under the scratch space: <run id>/fold{K}.pt


def state_path(output_dir: str | os.PathLike, fold: int) -> Path:
    """Where fold `fold` keeps its resumable state inside the run folder: ``<output_dir>/resume/fold{K}.pt``
    (while it trains, when there is no scratch space; always when a time budget stops it)."""
    return Path(output_dir) / "resume" / f"fold{fold}.pt"


@dataclass(frozen=True)
class ResumeFiles:
    """Where one fold's resumable state lies: `work` while the fold trains, `kept` when a time budget stops it.

    `kept` is ``<output_dir>/resume/fold{K}.pt``: inside the run folder, it is saved with a Kaggle
    version and travels with the run. `work` is the config's ``resume_dir``: ``auto`` puts it in
    scratch space (``/kaggle/temp``, `kagglekit.kaggle.scratch_dir`), under
    ``kagglekit-resume/<run id>/fold{K}.pt``, so that a ~7 GB state (deberta-v3-large with AdamW)
    does not fill the 20 GB output folder; with no scratch space `work` is `kept`. A folder given as
    ``resume_dir`` holds ``<run id>/fold{K}.pt``. Both are deleted when the fold completes, with the
    folders that become empty.

    Example:
        >>> files = ResumeFiles.locate(cfg.resume_dir, cfg.output_dir, fold=0, run_id=card["run_id"])
        >>> files.find()          # the state to resume from: `work` first, then `kept`; None when neither exists
    """

    work: Path
    kept: Path
    prune: tuple = ()  # folders removed when they become empty, innermost first

    @classmethod
    def in_run(cls, output_dir: str | os.PathLike, fold: int) -> "ResumeFiles":
        """The state inside the run folder only (no scratch space)."""
        kept = state_path(output_dir, fold)
        return cls(kept, kept, (kept.parent,))

    @classmethod
    def locate(cls, resume_dir: str, output_dir: str | os.PathLike, fold: int, run_id: str) -> "ResumeFiles":
        """Resolve the config's ``resume_dir`` (``auto`` or a folder) for fold `fold` of run `run_id`."""
        if resume_dir == "auto":
            from kagglekit.kaggle import scratch_dir

            scratch = scratch_dir()
            if scratch is None:
                return cls.in_run(output_dir, fold)
            root = scratch / SCRATCH_FOLDER
            prune = (root / run_id, root)  # never the scratch space itself
        else:
            root = Path(resume_dir)
            prune = (root / run_id,)  # never the user's folder
        kept = state_path(output_dir, fold)
        work = root / run_id / f"fold{fold}.pt"
        return cls(work, kept, prune + (kept.parent,)) if work != kept else cls.in_run(output_dir, fold)

    def find(self) -> Path | None:
        """The state to resume from: the working copy first (newer, when one was written after the kept one
        was read), else the kept one; None when there is neither."""
        for path in (self.work, self.kept):
            if path.is_file():
                return path
        return None

    def exists(self) -> bool:
        return self.find() is not None

    def drop_work(self) -> None:
        """Delete the working copy (the kept one now holds the state)."""
        if self.work != self.kept:
            self.work.unlink(missing_ok=True)
        self._prune()

    def clear(self) -> None:
        """Delete both copies: the fold is complete and its state has served."""
        self.work.unlink(missing_ok=True)
        self.kept.unlink(missing_ok=True)
        self._prune()

    def _prune(self) -> None:
        for folder in self.prune:
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty: another fold may be mid-way


def state_size(model, *, ema: bool = False) -> int:
    """A resume state's size in bytes, roughly: the weights (with LoRA the trained ones only: the frozen base is not
    saved), AdamW's two fp32 moments of the trained ones, and an EMA copy (`kagglekit.train.session.Budget` estimates
    its first save from it)."""
    lora = getattr(model, "lora", None) is not None
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad or not lora)
    moments = 2 * sum(p.numel() * 4 for p in model.parameters() if p.requires_grad)
    return weights + moments + (weights if ema else 0)


def capture_rng() -> dict:
    """The state of every random generator the loop draws from (Python, NumPy's global, torch CPU/CUDA)."""
    out = {
        "python": _to_lists(random.getstate()),
        "numpy": _numpy_state_to_dict(np.random.get_state()),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict) -> None:
    random.setstate(_to_tuples(state["python"]))
    np.random.set_state(_numpy_state_from_dict(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: str | os.PathLike, state: dict) -> Path:
    """Write `state` atomically: a kill during the write leaves the previous state file intact."""
    with atomic_path(path) as tmp:
        torch.save({"version": STATE_VERSION, **state}, tmp)
    return Path(path)


def load_state(path: str | os.PathLike) -> dict:
    state = torch.load(Path(path), map_location="cpu", weights_only=True)
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"{path}: resume state version {state.get('version')!r}, this kit writes {STATE_VERSION}; "
                         "delete the file to train the fold from the start.")
    return state


# weights_only loading knows lists and dicts but no numpy arrays or tuples: convert both ways.


def _to_lists(value):
    return [_to_lists(v) for v in value] if isinstance(value, (tuple, list)) else value


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, list) else value


def _numpy_state_to_dict(state) -> dict:
    name, keys, pos, has_gauss, cached = state
    return {"name": name, "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _numpy_state_from_dict(d: dict):
    return (d["name"], d["keys"].numpy().astype(np.uint32), d["pos"], d["has_gauss"], d["cached"])


def generator_state(generator: np.random.Generator) -> dict:
    """A NumPy Generator's state in weights_only-loadable form (its integers as decimal strings)."""
    return _stringify(generator.bit_generator.state)


def set_generator_state(generator: np.random.Generator, state: dict) -> None:
    generator.bit_generator.state = _unstringify(state)


def _stringify(value):
    # PCG64's 128-bit integers do not fit a tensor; strings round-trip exactly
    if isinstance(value, dict):
        return {k: _stringify(v) for k, v in value.items()}
    return f"int:{value}" if isinstance(value, int) and not isinstance(value, bool) else value


def _unstringify(value):
    if isinstance(value, dict):
        return {k: _unstringify(v) for k, v in value.items()}
    return int(value[4:]) if isinstance(value, str) and value.startswith("int:") else value
