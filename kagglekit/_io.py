"""File helpers shared by the pipeline: atomic writes, and text/CSV reading with errors that say the fix.

Everything the kit writes goes to a temporary file in the destination folder first and is renamed
into place, so a crash, a full disk or a killed notebook never leaves a half-written file behind.
Everything a user gives the kit to read (CSV/TSV files, YAML configs) is decoded and its header or
keys checked here, once: a BOM is dropped, a column or key given twice is refused. About 390 lines:
the two halves share the file naming of every message, and a reader opens one module for "files".
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import errno
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Iterator

import yaml

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


# --- reading: one text decoder and one header check for every delimited file the kit reads ----------

# The separators a delimited file may use, and how a message names them.
SEPARATORS = {",": "commas", "\t": "tabs", ";": "semicolons", "|": "pipes"}
# How a config value spells each separator (the pairs recipe's `sep` key reads "tab" as a tab).
_SEP_VALUES = {",": ",", "\t": "tab", ";": ";", "|": "|"}


def read_text(path: str | os.PathLike, *, what: str, legacy: bool = False) -> str:
    """The text of a file, decoded as UTF-8, a leading byte-order mark (BOM, as Excel writes) removed.

    Args:
        path: the file.
        what: how the user names it (a config key such as ``train_csv``), used in errors and warnings.
        legacy: a file that is not UTF-8 is read as Windows-1252 (Latin-1 where a byte has no
            Windows-1252 character), with a warning naming it, rather than refused. For files that
            older tools write in a legacy code page, such as CPC title lists.

    Raises:
        ValueError: the file is not UTF-8 and `legacy` is off; names the file, the first bad byte and the fix.

    Example:
        >>> read_text("train.csv", what="train_csv")[:5]
        'id,an'
    """
    data = Path(path).read_bytes()
    bom = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as err:
        where = f"{err.reason} at byte {err.start + bom}"
        if not legacy:
            raise ValueError(f"{what}: {path} is not UTF-8 text ({where}): re-save it as UTF-8.") from err
    try:
        text, encoding = data.decode("cp1252"), "Windows-1252"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "Latin-1"  # every byte is a Latin-1 character
    warnings.warn(f"{what}: {path} is not UTF-8 text ({where}); read it as {encoding}. Re-save it as UTF-8 if any "
                  "character reads wrong.", UserWarning, stacklevel=2)
    return text


def header_fields(text: str, sep: str = ",", quoting: int = csv.QUOTE_MINIMAL) -> list[str]:
    """The fields of the first non-blank row of `text` exactly as written: no name made unique, none renamed."""
    for row in csv.reader(io.StringIO(text, newline=""), delimiter=sep, quoting=quoting):
        if row and row != [""]:
            return row
    return []


def check_separator(fields: list[str], *, what: str, path, sep: str, sep_key: str | None = None) -> None:
    """Refuse a first row that is one field holding another separator: a TSV read as a CSV, or the reverse.

    Args:
        fields: the first row, split on `sep`.
        what, path: how errors name the file.
        sep: the separator the file was split on.
        sep_key: the config key that sets the separator, when there is one (the fix then names it);
            None: the file must use `sep`, and the fix is to re-save it so.

    Raises:
        ValueError: ``"train_csv: x.csv has one column, and its first line holds 4 tabs: ..."``.
    """
    if len(fields) != 1:
        return
    counts = {other: fields[0].count(other) for other in SEPARATORS if other != sep}
    found = max(counts, key=counts.get)
    if not counts[found]:
        return
    fix = (f"set {sep_key}={_SEP_VALUES[found]}" if sep_key else f"re-save it with {SEPARATORS[sep]} between the fields")
    raise ValueError(f"{what}: {path} has one column, and its first line holds {counts[found]} {SEPARATORS[found]}: the file "
                     f"looks {SEPARATORS[found][:-1]}-separated where {SEPARATORS.get(sep, repr(sep))} are expected; {fix}.")


def check_header(fields: list[str], *, what: str, path, sep: str = ",", sep_key: str | None = None) -> list[str]:
    """The column names of a header row, spaces around each name removed, checked.

    A name given twice is refused (pandas would silently read the second ``x`` as ``x.1``, and the
    kit would take the first one without a word), and so is a one-column header that holds another
    separator (`check_separator`). Empty names are allowed here: a column nobody asks for may be
    nameless (a saved row index); `no_column` names them when a needed column is missing.

    Raises:
        ValueError: naming the file, the column, its positions and the fix.
    """
    check_separator(fields, what=what, path=path, sep=sep, sep_key=sep_key)
    names = [name.strip() for name in fields]
    first: dict[str, int] = {}
    for position, name in enumerate(names, 1):
        if name and name in first:
            raise ValueError(f"{what}: {path} names column {name!r} twice in its header (columns {first[name]} and {position}): "
                             f"a reader would keep one and rename the other to {name + '.1'!r}. Rename or delete one of them.")
        first.setdefault(name, position)
    return names


def nameless(names: Iterable[str]) -> str:
    """``"; header column 5 has no name"`` for the empty names of a header (1-based), or ``""``."""
    empty = [str(position) for position, name in enumerate(names, 1) if not str(name).strip()]
    if not empty:
        return ""
    return f"; header column{'s' if len(empty) > 1 else ''} {', '.join(empty)} {'have' if len(empty) > 1 else 'has'} no name"


def no_column(what: str, path, missing: Iterable[str], names: list[str]) -> ValueError:
    """The error for needed columns a file lacks: each one, the file's columns, its nameless columns, the fix."""
    return ValueError(
        f"{what}: {path} has no column {', '.join(repr(c) for c in missing)}; its columns are {list(names)}{nameless(names)}. "
        f"Rename the column(s) in the file, or point {what} at the right file."
    )


def read_csv(path: str | os.PathLike, *, what: str, required: Iterable[str] = (), legacy: bool = False,
             **kwargs) -> pd.DataFrame:
    """Read a CSV whose first row names its columns, and check it has the `required` columns.

    Every CSV the kit reads goes through here (train, test, extra rows, sample submission, CPC titles,
    out-of-fold files): a BOM is dropped (`read_text`); spaces around a header name are dropped
    (`` anchor`` reads as ``anchor``); a name given twice, a tab-separated file, a header shorter than its rows
    and a malformed row are refused with the file, the place and the fix.

    Args:
        path: the file.
        what: how the user names this file (a config key such as ``train_csv``), used in errors.
        required: columns that must be present.
        legacy: read a file that is not UTF-8 as Windows-1252, with a warning (`read_text`).
        **kwargs: passed to `pandas.read_csv` (e.g. ``dtype``); not ``sep``, ``header`` or ``names``.

    Example:
        >>> read_csv("train.csv", what="train_csv", required=("id", "score"), dtype={"id": str}).columns[0]
        'id'
    """
    import pandas as pd  # here, not at the top: the command line's parser and the atomic writers need no pandas

    path = check_file(path, what)
    text = read_text(path, what=what, legacy=legacy)
    fields = header_fields(text)
    if not fields:
        raise ValueError(f"{what}: {path} is empty: it needs a header row and at least one data row.")
    names = check_header(fields, what=what, path=path)
    missing = [c for c in required if c not in names]
    if missing:
        raise no_column(what, path, missing, names)
    columns = [name or f"Unnamed: {position}" for position, name in enumerate(names)]  # pandas' name for a nameless column
    try:
        df = pd.read_csv(io.StringIO(text), header=0, names=columns, **kwargs)
    except pd.errors.ParserError as err:
        reason = " ".join(str(err).split()).replace("Error tokenizing data. C error: ", "")
        raise ValueError(f"{what}: {path} is not a well-formed CSV ({reason}): fix that line; quote a field that holds a comma.") from err
    if not isinstance(df.index, pd.RangeIndex):  # rows one field wider than the header: pandas made the first field an index
        raise ValueError(f"{what}: {path} has rows with {len(names) + 1} fields under a header of {len(names)} names: read as is, "
                         "every column would shift by one. Name the missing column in the header, or drop the separator that "
                         "ends each row.")
    if len(df) == 0:
        raise ValueError(f"{what}: {path} has a header but no rows.")
    return df


# --- reading YAML: one loader for every YAML file a user writes ---------------------------------------


class _DuplicateKey(Exception):
    """A mapping key given twice in one YAML mapping (raised by `_UniqueKeyLoader`, worded by `read_yaml`)."""

    def __init__(self, key: Any, first: int, second: int):
        super().__init__(key, first, second)
        self.key, self.first, self.second = key, first, second


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is refused: PyYAML alone keeps
    the last value without a word, so a key edited in two places silently loses one edit."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # ``<<: *base``: keys merged in may be overridden, that is what a merge is for
                key, line = self.construct_object(key_node, deep=deep), key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:
                    continue  # an unhashable key: construct_mapping below says so
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | os.PathLike, *, what: str) -> dict:
    """The mapping of ``key: value`` in a YAML file (UTF-8, a BOM dropped; an empty file gives ``{}``).

    Every error is one line naming the file and the line: text that is not UTF-8; text that is not
    valid YAML (the line, the column and what is wrong there); a key given twice in one mapping
    (the key and both lines); a document that is not a mapping (a list, a lone value).

    Args:
        path: the file.
        what: how errors name it (``"config file"``).

    Example:
        >>> read_yaml("configs/uspppm.yaml", what="config file")["task"]
        'uspppm'
    """
    loader = _UniqueKeyLoader(read_text(path, what=what))
    try:
        node = loader.get_single_node()
        data = {} if node is None else loader.construct_document(node)
    except _DuplicateKey as dup:
        lines = f"on line {dup.first}" if dup.first == dup.second else f"on line {dup.first} and line {dup.second}"
        raise ValueError(f"{what} {path}: key {dup.key!r} is given twice, {lines}; YAML would keep only the last. "
                         "Delete one of them.") from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(err.problem or err.context).split())
        raise ValueError(f"{what} {path}{where} is not valid YAML: {problem}. Fix that line: one 'key: value' per line, "
                         "indented alike; quote a value that holds ': ' or ' #'.") from None
    except yaml.YAMLError as err:  # e.g. a control character: the message says where
        raise ValueError(f"{what} {path} is not valid YAML: {' '.join(str(err).split())}.") from None
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} line {node.start_mark.line + 1} must hold a mapping of key: value, got a "
                         f"{type(data).__name__} ({data!r:.60}): write one 'key: value' per line, e.g. epochs: 3.")
    return data
