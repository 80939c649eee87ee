"""File helpers shared by the pipeline: atomic writes and CSV reading with errors that say the fix.

Everything the kit writes goes to a temporary file in the destination folder first and is renamed
into place, so a crash, a full disk or a killed notebook never leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

if TYPE_CHECKING:
    import pandas as pd


# errno values that mean "this disk takes no more writes", whatever the kit was writing
_STORAGE_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exceeded",
                   errno.EROFS: "the file system is read-only"}


class StorageError(OSError):
    """A write failed because the disk is full, over quota or read-only. Its message names the
    destination and the fix; ``errno`` is the original one and ``__cause__`` the original error."""


@contextlib.contextmanager
def _clear_storage_errors(path: Path, kind: str) -> Iterator[None]:
    """Re-raise a full-disk, over-quota or read-only error inside the block as a StorageError that
    names `path` (the `kind` of thing written there) and the fix, with the original error as its cause.

    Nested writes (a file inside a model folder) are named by the outermost destination.
    """
    try:
        yield
    except OSError as err:
        original = err.__cause__ if isinstance(err, StorageError) else err
        if original.errno not in _STORAGE_ERRNOS:
            raise
        raise StorageError(
            original.errno,
            f"could not write the {kind} {path}: {_STORAGE_ERRNOS[original.errno]} ({original.strerror}). "
            f"The previous {path.name} (if any) is unchanged. Free space on that disk (delete old runs or "
            "checkpoints), or write to another disk (another output_dir, or --out).",
        ) from original


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`.

    On any exception the temporary file is removed and `path` is left exactly as it was. A full disk
    (or a quota, or a read-only file system) raises `StorageError` naming `path` and the fix.
    """
    path = Path(path)
    with _clear_storage_errors(path, "file"):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp)
        try:
            yield tmp
            # mkstemp makes the file private (0600); give it the permissions a plain open() would
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def write_csv(path: str | os.PathLike, df: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False)
    return Path(path)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` as a whole.

    The old folder is moved aside before the new one is renamed in, and deleted only after, so at
    every instant either the complete old folder or the complete new one is at `path`. A full disk
    (or a quota, or a read-only file system) raises `StorageError` naming `path` and the fix.
    """
    path = Path(path)
    with _clear_storage_errors(path, "folder"):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the folder private (0700)
            old = None
            if path.exists():
                old = path.with_name(f".{path.name}.old")
                if old.exists():
                    shutil.rmtree(old)
                os.replace(path, old)
            os.replace(tmp, path)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on `path` (created if missing): processes that share a run folder, such
    as one fold per GPU, take turns to read-modify-write its shared files."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_file(path: str | os.PathLike, what: str) -> Path:
    """The path as a Path when it names an existing file; else an error naming the config key and the fix."""
    path = Path(path)
    if not str(path) or str(path) == ".":
        raise ValueError(f"{what} is not set: pass the path of the data file, e.g. --set {what}=data/train.csv")
    if not path.is_file():
        hint = " (it is a folder: give the file inside it)" if path.is_dir() else ""
        raise FileNotFoundError(f"{what}: file not found: {path}{hint}. Check the path, or attach the dataset that holds it.")
    return path


def read_csv(path: str | os.PathLike, *, what: str, required: Iterable[str] = (), **kwargs) -> pd.DataFrame:
    """Read a CSV and check it has the `required` columns.

    Args:
        path: the file.
        what: how the user names this file (a config key such as ``train_csv``), used in errors.
        required: columns that must be present.
        **kwargs: passed to `pandas.read_csv`.
    """
    import pandas as pd  # here, not at the top: the command line's parser and the atomic writers need no pandas

    path = check_file(path, what)
    try:
        df = pd.read_csv(path, **kwargs)
    except UnicodeDecodeError as err:
        raise ValueError(f"{what}: {path} is not UTF-8 text ({err.reason} at byte {err.start}): re-save it as UTF-8.") from err
    except pd.errors.EmptyDataError as err:
        raise ValueError(f"{what}: {path} is empty: it needs a header row and at least one data row.") from err
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{what}: {path} has no column {', '.join(repr(c) for c in missing)}; its columns are {list(df.columns)}. "
            f"Rename the column(s) in the file, or point {what} at the right file."
        )
    if len(df) == 0:
        raise ValueError(f"{what}: {path} has a header but no rows.")
    return df
