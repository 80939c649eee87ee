"""Find attached inputs under the input root (``/kaggle/input``): the kit's wheel, competition files,
a pretrained backbone and the kit's run folders, whatever layout Kaggle mounted them in.

Kaggle mounts inputs at ``competitions/<slug>/``, ``datasets/<owner>/<slug>/``,
``models/<owner>/<model>/<framework>/<variation>/<version>/``, ``notebooks/<owner>/<slug>/`` or the old
``<slug>/``, sometimes one folder deeper after unpacking an archive. Nothing here assumes one of them:
each search walks the root (`MAX_DEPTH` levels, ``os.scandir``, pruning model folders early) and wants
exactly one answer; two give a ValueError listing both, none a FileNotFoundError saying what to attach.
About 450 lines, most of them the six public searches' docstrings: the searches share one walk and one
way of narrowing by a hint, so they stay together.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

from kagglekit import kaggle
from kagglekit.config import Config
from kagglekit.run import CARD_FILE, CONFIG_FILE, FOLD_DIR, META_FILE, fold_dirs

__all__ = ["find_wheel", "find_file", "find_backbone", "find_runs", "resolve_paths", "describe", "AUTO_FILES",
           "BACKBONE_WEIGHTS", "MAX_DEPTH"]

# Folder levels walked below the root: a Kaggle Model's version folder is 6 deep, +1 for an unpacked archive's folder.
MAX_DEPTH = 8
SHOWN = 8  # candidates an error lists before "and N more"
# What makes a folder a pretrained model: config.json and one of these (the kit's loader reads the first four;
# tests/test_discover.py holds them equal to kagglekit.models.pair_model.BACKBONE_WEIGHTS), or a *.gguf file.
BACKBONE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
GGUF = ".gguf"
# The file names "auto" stands for, by config key (Kaggle competitions' own names; USPPPM's CPC title list).
AUTO_FILES = {"train_csv": "train.csv", "test_csv": "test.csv", "cpc_dir": "CPCTitleList202202"}
MODEL_KEYS = ("backbone", "embedding_model")  # path keys that name a pretrained model folder
WRITTEN_KEYS = ("output_dir", "resume_dir")  # path keys that name where a run writes: never looked up
WHEEL_PREFIX, WHEEL_SUFFIX = "kagglekit-", ".whl"
ATTACH_RUNS = ("attach the model datasets made from train.ipynb's output (Add Input → Your Work → Notebooks: the "
               "notebook's output, or Datasets: a dataset made from it)")

Visit = Callable[[Path, Sequence[os.DirEntry]], bool]


# ---------------------------------------------------------------------------------------------- the walk


def _input_root(root: str | os.PathLike | None) -> Path:
    root = kaggle.input_root() if root is None else Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"the input root {root} is no folder: run on Kaggle, or set {kaggle.INPUT_ROOT_ENV} "
                                "to the folder that holds the inputs.")
    return root


def _walk(root: Path, visit: Visit) -> None:
    """Call ``visit(folder, entries)`` on `root` and the folders below it, depth first in name order, down to
    `MAX_DEPTH` levels; a folder's sub-folders are walked only when `visit` returns True.

    Hidden folders are skipped. A symlinked folder is followed only when it points inside `root`, and each
    real folder is walked once: no loop, no second copy of a mount that two links reach.
    """
    top = os.path.realpath(root)
    seen: set[tuple[int, int]] = set()
    stack = [(os.fspath(root), 0)]
    while stack:
        folder, depth = stack.pop()
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:  # unreadable, or gone while we looked
            continue
        if visit(Path(folder), entries) and depth < MAX_DEPTH:
            subs = [e.path for e in entries if _walkable(e, top)]
            stack.extend((path, depth + 1) for path in reversed(subs))


def _walkable(entry: os.DirEntry, top: str) -> bool:
    try:
        if entry.name.startswith(".") or not entry.is_dir():
            return False
        return not entry.is_symlink() or os.path.realpath(entry.path).startswith(top + os.sep)
    except OSError:
        return False


def _holds_weights(names: set[str]) -> bool:
    """A pretrained model folder: config.json beside weights."""
    return "config.json" in names and (any(n in names for n in BACKBONE_WEIGHTS) or any(n.endswith(GGUF) for n in names))


def _is_run(folder: Path, entries: Sequence[os.DirEntry]) -> bool:
    """A kagglekit run folder: ``fold{K}/`` sub-folders holding kagglekit.json."""
    return any(FOLD_DIR.fullmatch(e.name) for e in entries) and bool(fold_dirs(folder))


def _entries(root: Path, match: Callable[[str], bool]) -> list[Path]:
    """The files and folders under `root` whose names `match`, outside fold folders and pretrained model folders
    (they hold no data or wheel, and can be big)."""
    found: list[Path] = []

    def visit(folder: Path, entries: Sequence[os.DirEntry]) -> bool:
        names = {e.name for e in entries}
        if META_FILE in names or _holds_weights(names):
            return False
        found.extend(Path(e.path) for e in entries if match(e.name))
        return True

    _walk(root, visit)
    return found


def _unique(paths: Iterable[Path]) -> list[Path]:
    """Paths in order, each real file once (two links to one file are one candidate)."""
    out, seen = [], set()
    for path in paths:
        real = os.path.realpath(path)
        if real not in seen:
            seen.add(real)
            out.append(path)
    return out


def _matching(paths: Sequence[Path], hint: str, root: Path) -> list[Path]:
    """The paths whose parts below `root` contain `hint` (case-insensitive); parts equal to it win over parts
    that merely contain it. A hint with a slash ("large/2") must match whole consecutive folder names."""
    want = hint.strip("/").lower()
    parts = {p: [s.lower() for s in p.relative_to(root).parts] for p in paths}
    if "/" in want:
        return [p for p in paths if f"/{want}/" in "/" + "/".join(parts[p]) + "/"]
    exact = [p for p in paths if want in parts[p]]
    return exact or [p for p in paths if any(want in s for s in parts[p])]


def _listing(paths: Sequence[Path]) -> str:
    shown = "".join(f"\n  {p}" for p in paths[:SHOWN])
    return shown + (f"\n  and {len(paths) - SHOWN} more" if len(paths) > SHOWN else "")


def _one(found: list[Path], what: str, param: str, root: Path, none: str) -> Path:
    if len(found) > 1:
        raise ValueError(f"{param}: {len(found)} {what} under {root}:{_listing(found)}\nSet {param} to one of them.")
    if not found:
        raise FileNotFoundError(f"{param}: no {what} under {root}: {none}")
    return found[0]


def _is_path(hint: str) -> bool:
    """An existing path with a directory part ("/kaggle/input/x", "./model"): a bare name is always a hint, even
    where the working directory holds a folder of that name."""
    return bool(os.path.dirname(hint)) and os.path.exists(hint)


def _check_hint(hint: str, param: str) -> None:
    if not hint.strip():
        raise ValueError(f"{param} is empty: set it to 'auto', a folder name to look for (e.g. 'deberta-v3-large') "
                         "or a folder's path.")
    if os.path.isabs(hint) and not os.path.exists(hint):
        raise FileNotFoundError(f"{param}={hint!r}: no such folder. Attach the input that holds it, or set {param} to "
                                "'auto' or a folder name to look for under the input root.")


# ---------------------------------------------------------------------------------------------- the searches


def find_wheel(root: str | os.PathLike | None = None) -> Path:
    """The one ``kagglekit-*.whl`` under the input root (the kagglekit dataset, any layout).

    Args:
        root: the folder to search; None: `kagglekit.kaggle.input_root()`.

    Raises:
        ValueError: two or more wheels (e.g. the dataset attached twice): the message lists them.
        FileNotFoundError: none: attach the kagglekit dataset.

    Example:
        >>> wheel = find_wheel()  # doctest: +SKIP
        >>> # !pip install --no-index --no-deps {wheel}
    """
    root = _input_root(root)
    found = _entries(root, lambda name: name.startswith(WHEEL_PREFIX) and name.endswith(WHEEL_SUFFIX))
    return _one(_unique(found), "kagglekit wheels (kagglekit-*.whl)", "WHEEL_DIR", root,
                "attach the kagglekit dataset (the folder build_wheel.sh writes, uploaded as a Kaggle dataset: "
                "Add Input → Your Work → Datasets), or set WHEEL_DIR to the folder that holds the wheel.")


def find_file(name: str, *, param: str, root: str | os.PathLike | None = None, within: str = "") -> Path:
    """A competition file or folder by its name (``train.csv``, ``sts-train.csv``, ``CPCTitleList202202``).

    Fold folders and pretrained model folders are not searched. A folder of that name holding only an entry of
    the same name (an archive unpacked one level too deep) counts as that entry.

    Args:
        name: the file or folder name, without a directory part.
        param: the notebook parameter or config key that names it, for the errors ("TRAIN_CSV").
        root: the folder to search; None: `kagglekit.kaggle.input_root()`.
        within: keep only matches whose path below `root` contains this (a competition's slug, or a
            fragment such as "competitions/us-patent-phrase-to-phrase-matching"); empty: all.

    Raises:
        ValueError: several matches (the message lists them: set `param` to one).
        FileNotFoundError: no match: attach the data that holds it.

    Example:
        >>> find_file("train.csv", param="TRAIN_CSV", within="us-patent-phrase-to-phrase-matching")  # doctest: +SKIP
        PosixPath('/kaggle/input/competitions/us-patent-phrase-to-phrase-matching/train.csv')
    """
    if not name or os.path.basename(name) != name:
        raise ValueError(f"{param}: find_file takes a file or folder name, got {name!r}; a path needs no search.")
    root = _input_root(root)
    found = _unique(_unwrapped(p) for p in _entries(root, lambda entry: entry == name))
    where = f" whose path contains {within!r}" if within else ""
    if within:
        everywhere, found = found, _matching(found, within, root)
        if everywhere and not found:
            raise FileNotFoundError(f"{param}: no {name!r} under {root}{where}; there are:{_listing(everywhere)}\n"
                                    f"Set {param} to one of them, or attach the data of {within!r}.")
    return _one(found, f"files or folders named {name!r}{where}", param, root,
                f"attach the competition or dataset{f' {within!r}' if within else ''} that holds it (Add Input → "
                f"Competitions or Datasets), or set {param} to its path.")


def _unwrapped(path: Path) -> Path:
    """``X/X`` for a folder ``X`` that holds nothing else (an archive unpacked one level too deep), else `path`."""
    if path.is_dir() and not path.is_symlink():
        inner = [n for n in os.listdir(path) if not n.startswith(".")]
        if inner == [path.name]:
            return _unwrapped(path / path.name)
    return path


def find_backbone(hint: str = "auto", *, param: str = "BACKBONE", root: str | os.PathLike | None = None) -> Path:
    """A pretrained model folder: config.json beside weights (`BACKBONE_WEIGHTS` or a ``*.gguf``), from a
    dataset or a Kaggle Model (each ``<variation>/<version>`` is a folder of its own).

    The kit's own fold folders (they hold kagglekit.json) and everything inside a run folder (its
    ``embedding_model/`` copy) are not candidates.

    Args:
        hint: "auto": the only candidate; an existing path with a directory part ("/kaggle/input/x", "./model"):
            returned as it is, once it is seen to hold config.json; any other text: the candidates with a folder
            name equal to it (case-insensitive), else containing it; with a slash ("large/2"): whole folder
            names in a row.
        param: the notebook parameter or config key that names the backbone, for the errors.
        root: the folder to search; None: `kagglekit.kaggle.input_root()`.

    Raises:
        ValueError: several candidates (the message lists them), or an existing folder without config.json.
        FileNotFoundError: none.

    Example:
        >>> find_backbone("deberta-v3-large")  # doctest: +SKIP
        PosixPath('/kaggle/input/models/microsoft/deberta-v3/transformers/large/1')
    """
    _check_hint(hint, param)
    if _is_path(hint):
        if not os.path.isfile(os.path.join(hint, "config.json")):
            raise ValueError(f"{param}={hint!r} holds no config.json: point {param} at the model folder itself (the one "
                             "with config.json and the weights), or set it to 'auto'.")
        return Path(hint)
    root = _input_root(root)
    found: list[Path] = []

    def visit(folder: Path, entries: Sequence[os.DirEntry]) -> bool:
        names = {e.name for e in entries}
        if META_FILE in names or _is_run(folder, entries):
            return False  # the kit's fold folders, and a run's copy of its embedding model
        if _holds_weights(names):
            found.append(folder)
            return False
        return True

    _walk(root, visit)
    what = "pretrained model folders (config.json + weights)"
    return _one(_filtered(_unique(found), hint, param, root, what), what + ("" if hint == "auto" else f" matching {hint!r}"),
                param, root, f"attach the backbone (Add Input → Models, or a dataset holding the model folder), or set {param} "
                "to its folder.")


def _filtered(found: list[Path], hint: str, param: str, root: Path, what: str) -> list[Path]:
    """`found` narrowed by `hint` ("auto": all of them); an error that lists them when none matches."""
    if hint == "auto":
        return found
    kept = _matching(found, hint, root)
    if found and not kept:
        raise FileNotFoundError(f"{param}={hint!r}: none of the {what} under {root} matches; there are:"
                                f"{_listing(found)}\nSet {param} to one of them, or to 'auto'.")
    return kept


def find_runs(hint: str = "auto", *, param: str = "MODEL_DIRS", root: str | os.PathLike | None = None) -> list[Path]:
    """Every kagglekit run folder under the input root (``fold{K}/`` sub-folders holding kagglekit.json),
    and every lone model folder (holding kagglekit.json itself) outside them, sorted.

    Args:
        hint: "auto": all of them; an existing path with a directory part: that one, once it is seen to be a run
            or model folder; any other text: those matching it, as in `find_backbone` (e.g. "uspppm-deberta").
        param: the notebook parameter that names the runs, for the errors.
        root: the folder to search; None: `kagglekit.kaggle.input_root()`.

    Raises:
        ValueError: an existing folder that is no run or model folder.
        FileNotFoundError: none (matching `hint`): attach the model datasets.

    Example:
        >>> find_runs()  # doctest: +SKIP
        [PosixPath('/kaggle/input/datasets/me/uspppm-fold0/run'), PosixPath('/kaggle/input/datasets/me/uspppm-fold1/run')]
    """
    _check_hint(hint, param)
    if _is_path(hint):
        path = Path(hint)
        if not ((path / META_FILE).is_file() or fold_dirs(path)):
            raise ValueError(f"{param}={hint!r} is no kagglekit run folder (no fold*/{META_FILE}) nor a model folder: "
                             f"point it at the run folder inside the model dataset, or set it to 'auto'.")
        return [path]
    root = _input_root(root)
    found: list[Path] = []

    def visit(folder: Path, entries: Sequence[os.DirEntry]) -> bool:
        names = {e.name for e in entries}
        if _is_run(folder, entries) or META_FILE in names:
            found.append(folder)
            return False  # the lone folds inside a run belong to it
        return not _holds_weights(names)

    _walk(root, visit)
    kept = _filtered(sorted(_unique(found)), hint, param, root, "run folders")
    if not kept:
        raise FileNotFoundError(f"{param}: no kagglekit run folder (fold*/{META_FILE}) under {root}: {ATTACH_RUNS}, "
                                f"or set {param} to the run folders.")
    return kept


def find_run_to_continue(hint: str, *, param: str = "RESUME_FROM", root: str | os.PathLike | None = None) -> Path:
    """The one run folder to continue: a previous session's output, which may hold no complete fold yet (a run
    stopped by its time budget has ``run.json`` and ``config.yaml``, and perhaps only ``resume/``).

    Args:
        hint: an existing folder (used as it is, once it is seen to be a run folder), or text matched as in
            `find_backbone` against the run folders under the input root ("auto": the only one).
        param: the notebook parameter, for the errors.
        root: the folder to search; None: `kagglekit.kaggle.input_root()`.

    Raises:
        ValueError: the folder is no run folder, or several match.
        FileNotFoundError: none matches: attach the previous version's output.

    Example:
        >>> find_run_to_continue("uspppm-train")  # doctest: +SKIP
        PosixPath('/kaggle/input/notebooks/me/uspppm-train/run')
    """
    _check_hint(hint, param)
    if _is_path(hint):
        path = Path(hint)
        if not ((path / CARD_FILE).is_file() and (path / CONFIG_FILE).is_file()):
            raise ValueError(f"{param}={hint!r} is no kagglekit run folder (no {CARD_FILE} and {CONFIG_FILE}): point it at "
                             "the run folder in the previous version's output (usually <input>/run).")
        return path
    root = _input_root(root)
    found: list[Path] = []

    def visit(folder: Path, entries: Sequence[os.DirEntry]) -> bool:
        names = {e.name for e in entries}
        if CARD_FILE in names and CONFIG_FILE in names:
            found.append(folder)
            return False
        return META_FILE not in names and not _holds_weights(names)

    _walk(root, visit)
    kept = _filtered(sorted(_unique(found)), hint, param, root, "run folders")
    if not kept:
        raise FileNotFoundError(f"{param}: no kagglekit run folder ({CARD_FILE} and {CONFIG_FILE}) under {root}: attach the "
                                "previous version's output (Add Input → Your Work → Notebooks), or set "
                                f"{param} to its run folder.")
    if len(kept) > 1:
        raise ValueError(f"{param}={hint!r}: {len(kept)} run folders match:{_listing(kept)}\nSet {param} to one of them.")
    return kept[0]


# ---------------------------------------------------------------------------------------------- configs


def resolve_paths(values: Mapping[str, object], *, root: str | os.PathLike | None = None, within: str = "") -> dict:
    """A copy of a config mapping with its inputs found under the input root.

    Each key of `Config.PATH_KEYS` whose value is "auto", or a bare name (no directory part) that is no
    file or folder of the working directory, is looked up: ``backbone`` and ``embedding_model`` with
    `find_backbone` (the value is the hint), the data keys with `find_file` ("auto": the name in
    `AUTO_FILES`), each item of a list key (``teacher_oof``) alike. Empty values, paths, and
    ``output_dir``/``resume_dir`` are kept as they are, and so is a bare name when there is no input root
    to search (off Kaggle it is a relative path, and whatever reads it says when it is missing).

    Args:
        values: config keys and values (the notebook's settings, or `Config.to_dict()`); not changed.
        root: the folder to search; None: `kagglekit.kaggle.input_root()`.
        within: passed to `find_file` for the data keys (e.g. the competition's slug).

    Returns:
        A new dict: the found paths as strings, every other value as it was.

    Raises:
        ValueError: a key is ambiguous, or "auto" for a data key with no known file name; FileNotFoundError:
        a key's input is missing. One error reports every key that failed.

    Example:
        >>> from kagglekit.config import load_config
        >>> values = resolve_paths(load_config("uspppm").to_dict())  # doctest: +SKIP
        >>> values["train_csv"]  # doctest: +SKIP
        '/kaggle/input/competitions/us-patent-phrase-to-phrase-matching/train.csv'
    """
    out = dict(values)
    problems: list[Exception] = []
    searchable = (kaggle.input_root() if root is None else Path(root)).is_dir()

    def found(key: str, value):
        if not isinstance(value, str) or not value or not (value == "auto" or _bare_missing(value)):
            return value
        if value != "auto" and not searchable:  # off Kaggle: a bare name is a path, and its reader names it when it is missing
            return value
        try:
            if key in MODEL_KEYS:
                return str(find_backbone(value, param=key, root=root))
            if value == "auto" and key not in AUTO_FILES:
                raise ValueError(f"{key}='auto': the kit knows no file name for {key}; set it to the file's name or path.")
            return str(find_file(AUTO_FILES[key] if value == "auto" else value, param=key, root=root, within=within))
        except (ValueError, FileNotFoundError) as err:
            problems.append(err)
            return value

    for key in sorted(Config.PATH_KEYS.difference(WRITTEN_KEYS).intersection(out)):
        value = out[key]
        out[key] = [found(key, item) for item in value] if isinstance(value, list) else found(key, value)  # teacher_oof: several
    if problems:
        kind = FileNotFoundError if all(isinstance(e, FileNotFoundError) for e in problems) else ValueError
        raise kind(" ".join(dict.fromkeys(str(e) for e in problems)))  # one line, each problem once
    return out


def _bare_missing(value: str) -> bool:
    return os.path.basename(value) == value and not os.path.exists(value)


def describe(found: Mapping[str, os.PathLike | str | Sequence]) -> str:
    """The lines a notebook prints about what it found: ``train_csv: /kaggle/input/...``, names aligned;
    a list gives one path a line.

    Example:
        >>> print(describe({"train_csv": Path("/in/train.csv"), "MODEL_DIRS": [Path("/in/a/run"), Path("/in/b/run")]}))
        train_csv:  /in/train.csv
        MODEL_DIRS: /in/a/run
                    /in/b/run
    """
    width = max((len(k) for k in found), default=0) + 1
    lines = []
    for key, value in found.items():
        items = list(value) if isinstance(value, (list, tuple)) else [value]
        head = f"{key}:".ljust(width)
        if not items:
            lines.append(f"{head} (none)")
        for i, item in enumerate(items):
            lines.append(f"{head if i == 0 else ' ' * width} {os.fspath(item)}")
    return "\n".join(lines)
