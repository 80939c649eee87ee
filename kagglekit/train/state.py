"""Resumable training state: everything a fold needs to continue after a kill, written atomically.

A state file holds the current (not the best) weights, the optimizer, scheduler, GradScaler and EMA
states, the position (epoch, batch within the epoch, optimizer steps), every random generator, and
the fold's bookkeeping (best score and its predictions, history, step log). It is read back with
``torch.load(weights_only=True)``: tensors, numbers, strings, lists and dicts only, no pickle.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from kagglekit._io import atomic_path

STATE_VERSION = 1


def state_path(output_dir: str | os.PathLike, fold: int) -> Path:
    """Where fold `fold` of a run keeps its resumable state (deleted when the fold completes)."""
    return Path(output_dir) / "resume" / f"fold{fold}.pt"


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
