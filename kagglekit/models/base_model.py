"""The identity of a LoRA run's base model, and finding that very base again at predict.

A LoRA fold folder holds the adapters and the head, not the base: ``kagglekit.json`` records the base's
folder at training, its name, a hash of its config and the sha256 of each weight file (`base_identity`).
Predict looks for the base at the recorded folder or where it is told (``--base-model``), and refuses a
folder whose digests differ (`locate_base`). A digest is computed once per file and kept by size and
modification time (`file_sha256`), so a 15 GB base is not read twice for its hash on one machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Mapping, Sequence

__all__ = ["CACHE_ENV", "base_identity", "cache_dir", "file_sha256", "locate_base", "weight_files"]

CACHE_ENV = "KAGGLEKIT_CACHE"
"""Environment variable naming the kit's cache folder, in place of ``~/.cache/kagglekit``."""
DIGESTS_FILE = "digests.json"
_CHUNK = 16 * 1024 * 1024
_SKIPPED_CONFIG_KEYS = ("_name_or_path", "transformers_version")  # written by whoever saved the folder: not the model
_memory: dict[tuple[str, int, int], str] = {}  # this process's digests, by (resolved path, size, mtime_ns)
_lock = threading.Lock()  # predict's device workers may ask at once


def cache_dir() -> Path:
    """The kit's cache folder: ``$KAGGLEKIT_CACHE`` when set, else ``~/.cache/kagglekit``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "kagglekit"


def _read_cache() -> dict:
    try:
        data = json.loads((cache_dir() / DIGESTS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(entries: dict) -> None:
    from kagglekit._io import write_json

    try:
        cache_dir().mkdir(parents=True, exist_ok=True)
        write_json(cache_dir() / DIGESTS_FILE, entries)
    except OSError:  # a read-only home: the digests are computed again next time, nothing else changes
        pass


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file (hex), read once per (path, size, modification time) and kept in `cache_dir`.

    A file that changes gets a new size or mtime and is hashed again; a moved file is hashed again too.

    Example:
        >>> file_sha256("models/qwen2-7b/model-00001-of-00004.safetensors")
        '9f2c...'
    """
    path = Path(path).resolve()
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _lock:
        if key in _memory:
            return _memory[key]
        entry = _read_cache().get(str(path))
        if isinstance(entry, dict) and entry.get("bytes") == stat.st_size and entry.get("mtime_ns") == stat.st_mtime_ns:
            _memory[key] = entry["sha256"]
            return entry["sha256"]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    value = digest.hexdigest()
    with _lock:
        _memory[key] = value
        entries = _read_cache()  # again: another process may have added digests meanwhile
        entries[str(path)] = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": value}
        _write_cache(entries)
    return value


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The files holding a model folder's weights: a single checkpoint, or a sharded index and its shards."""
    from kagglekit.models.backbones import BACKBONE_WEIGHTS

    folder = Path(folder)
    for name in BACKBONE_WEIGHTS:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return [path]
        shards = sorted(set(json.loads(path.read_text(encoding="utf-8")).get("weight_map", {}).values()))
        return [path] + [folder / shard for shard in shards]
    raise FileNotFoundError(f"base model {folder}: no weight file (one of {list(BACKBONE_WEIGHTS)}): point at the model folder "
                            "the LoRA run was trained on.")


def _config_sha256(folder: Path) -> tuple[str, dict]:
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    kept = {k: v for k, v in config.items() if k not in _SKIPPED_CONFIG_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest(), config


def base_identity(folder: str | os.PathLike) -> dict:
    """What tells a base model folder from any other: ``path`` (resolved, at training), ``name`` (config.json's
    ``_name_or_path``, else the folder's name), ``config_sha256`` (config.json without the keys whoever saved it
    adds) and ``files`` (``{file name: sha256}`` of every weight file, `weight_files`).

    Example:
        >>> base_identity("models/tiny-llama")["files"]
        {'model.safetensors': '5e1b...'}
    """
    folder = Path(folder).resolve()
    config_hash, config = _config_sha256(folder)
    name = config.get("_name_or_path") or folder.name
    files = {path.relative_to(folder).as_posix(): file_sha256(path) for path in weight_files(folder)}
    return {"path": str(folder), "name": str(name), "config_sha256": config_hash, "files": files}


def _differences(identity: Mapping, folder: Path) -> list[str]:
    """How `folder` differs from the recorded `identity`: one text per differing file or config, [] when it is the base."""
    if not (folder / "config.json").is_file():
        return [f"it has no config.json (the base's config hash is {identity['config_sha256'][:16]})"]
    found = []
    config_hash, _ = _config_sha256(folder)
    if config_hash != identity["config_sha256"]:
        found.append(f"config.json hashes to {config_hash[:16]}, the base's to {identity['config_sha256'][:16]}")
    for name, digest in identity["files"].items():
        path = folder / name
        actual = file_sha256(path) if path.is_file() else None
        if actual != digest:
            found.append(f"{name} {'is missing' if actual is None else f'has sha256 {actual[:16]}'}, the base's has {digest[:16]}")
    return found


def locate_base(identity: Mapping, candidates: Sequence[str | os.PathLike] = (), *, folder: str | os.PathLike = "") -> Path:
    """The base model folder of a LoRA fold folder, checked against its recorded `identity`.

    Args:
        identity: `base_identity` as the fold folder recorded it at training.
        candidates: folders given at predict (``--base-model``); the first whose config and weight digests are the
            base's is taken. Empty: the folder recorded at training.
        folder: the fold folder, named in errors.

    Raises:
        FileNotFoundError: no candidate is given and the recorded folder is gone.
        ValueError: no candidate holds the base (each one's differing digests are named).

    Example:
        >>> locate_base(meta.extra["base_model"], ["/kaggle/input/qwen2-7b"], folder="runs/qwen/fold0")
        PosixPath('/kaggle/input/qwen2-7b')
    """
    name = identity.get("name", "?")
    if not candidates:
        recorded = Path(identity["path"])
        if not recorded.is_dir():
            raise FileNotFoundError(f"model folder {folder} holds LoRA adapters on the base model {name!r}, trained from {recorded}, "
                                    "which is not here: pass the base's folder with --base-model DIR (in Python: predict(..., "
                                    "base_model=DIR), Scorer.from_run(..., base_model=DIR)).")
        candidates = [recorded]
    problems = []
    for candidate in map(Path, candidates):
        if not candidate.is_dir():
            problems.append(f"{candidate} is not a folder")
            continue
        differs = _differences(identity, candidate)
        if not differs:
            return candidate
        problems.append(f"{candidate}: {'; '.join(differs)}")
    raise ValueError(f"model folder {folder} holds LoRA adapters trained on the base model {name!r} (from {identity['path']}), "
                     f"and no given folder is that base: {' | '.join(problems)}. Pass the very folder the run was trained on "
                     "with --base-model DIR (the same weight files; a re-saved or re-quantised copy differs), or retrain "
                     "on this base.")
