"""Output paths against input paths: no command writes over, or into, what it reads; OS errors as one line.

Every command that writes calls `check_outputs` before it computes anything. Paths are compared
resolved (``./a/../b`` and symbolic links count), so two spellings of one file are one file. The rules:

- an output is never an input (``--out test.csv`` naming the ``--data`` file);
- an output never lies inside an input folder (``--out`` inside a run folder, ``output_dir`` inside
  the backbone): the kit does not write into a folder it reads;
- a folder written whole (a merged run, a fold folder) never holds an input;
- an output file is not an existing folder, an output folder not an existing file, and no folder on
  the way is a file;
- the nearest existing folder on the way is writable (a read-only Kaggle input is not).

`os_error_line` turns an operating-system error that escaped a command into the line ``kagglekit``
prints, and the exit status: 2 for a path the user chose wrongly, 1 for the machine.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Collection, Iterable, Mapping, Union

PathLike = Union[str, os.PathLike]
# kagglekit._io writes `path` through a temporary file beside it, named .<name>.<random>.tmp
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.[^.]+\.tmp")
_WRITABLE_HINT = "choose a folder you can write to (on Kaggle: /kaggle/working)"


def resolved(path: PathLike) -> Path:
    """`path` absolute, with ``..`` and every symbolic link resolved (the part that exists; the rest as written)."""
    return Path(path).expanduser().resolve()


def _paths(value) -> list[Path]:
    """An input's value as paths: one path, several, or none (None or "")."""
    if value is None or (isinstance(value, str) and not value):
        return []
    if isinstance(value, (str, os.PathLike)):
        return [Path(value)]
    return [Path(v) for v in value if v is not None and str(v)]


def check_outputs(outputs: Mapping[str, PathLike | None], inputs: Mapping[str, PathLike | Iterable[PathLike] | None], *,
                  folders: Collection[str] = (), into: Collection[str] = ()) -> None:
    """Refuse outputs that would overwrite, or write into, the command's inputs; call it before anything is written.

    Args:
        outputs: what the command writes, by the name the user knows it under (an option or config key, e.g.
            ``"--out"``, ``"output_dir"``, ``"--out (its per-run file)"``) → path; None: not written.
        inputs: what it reads, by name (``"--data"``, ``"--models"``) → a path, several, or None.
        folders: the outputs that are folders; the others are files.
        into: the folders the command writes files into, keeping what else is there (a run's output_dir, a
            report folder): an input may lie inside them. Other folders are written whole.

    Raises:
        ValueError: an output is an input, lies inside an input folder, or would replace a folder holding an
            input; a file output is a folder, a folder output a file, or a folder on the way a file. The
            message names both options, the path as given and resolved, and the fix.
        PermissionError: the folder an output goes into is not writable (exit status 1 on the command line).

    Example:
        >>> check_outputs({"--out": "data/test.csv"}, {"--data": "./data/test.csv"})
        ValueError: --out data/test.csv is the --data file ./data/test.csv (both are /work/data/test.csv): choose another path.
    """
    given = [(name, Path(path), resolved(path)) for name, path in outputs.items() if path is not None and str(path)]
    read = [(name, path, resolved(path)) for name, value in inputs.items() for path in _paths(value)]
    for name, path, real in given:
        _check_shape(name, path, real, folder=name in folders)
        for other, other_path, other_real in given:
            if other < name and other_real == real:
                raise ValueError(f"{name} {path} and {other} {other_path} are the same path ({real}): choose another path for one of them.")
        for source, source_path, source_real in read:
            kind = "folder" if source_real.is_dir() else "file"
            both = f" (both are {real})" if str(path) != str(real) or str(source_path) != str(real) else ""
            if real == source_real:
                raise ValueError(f"{name} {path} is the {source} {kind} {source_path}{both}: choose another path.")
            if source_real in real.parents:
                raise ValueError(f"{name} {path} lies inside the {source} folder {source_path} ({source_real}): the kit never "
                                 "writes into a folder it reads; choose a path outside it.")
            if real in source_real.parents and name in folders and name not in into:
                raise ValueError(f"{name} {path} would replace the folder that holds the {source} {source_path} ({source_real}): "
                                 "choose another path, or move the input out of it.")
        _check_writable(name, path, real)


def check_train_outputs(cfg, folds: Iterable[int], full: bool) -> None:
    """`check_outputs` for ``kagglekit train``: the run folder and what this call writes in it against the config's inputs.

    ``output_dir`` is written into: it may hold the data files (``train_csv`` beside the run's files is fine),
    but it is not an input folder (``backbone``, ``cpc_dir``, ``embedding_model``) nor inside one. Its
    ``config.yaml``, ``folds.csv``, ``oof.csv`` and ``run.json`` are no input file, and the model folders this
    call trains (``fold{K}/``, ``fold{K}-seed{S}/``, ``full*/``: written whole) hold no input (a backbone
    that is ``output_dir/fold0`` while fold 0 trains).

    Args:
        cfg: the run's `kagglekit.config.Config`.
        folds: the CV folds this call trains.
        full: whether it fits the full-data models too.

    Example:
        >>> check_train_outputs(cfg, [0, 1], False)  # in train_folds, before anything is written
    """
    from kagglekit.run import CARD_FILE, CONFIG_FILE, FOLDS_FILE, OOF_FILE, RunFolder

    if not cfg.output_dir:
        return
    run = RunFolder(cfg.output_dir)
    seeds = [None, *(cfg.seed + index for index in range(1, cfg.seeds))]
    models = [run.fold_dir(fold, seed) for fold in folds for seed in seeds] + ([run.full_dir(seed) for seed in seeds] if full else [])
    outputs = {"output_dir": run.path,
               **{f"output_dir's {name}": run.path / name for name in (CONFIG_FILE, FOLDS_FILE, OOF_FILE, CARD_FILE)},
               **{f"output_dir's {model.name}/": model for model in models}}
    inputs = {key: getattr(cfg, key) for key in ("train_csv", "test_csv", "extra_train_csv", "cpc_dir", "backbone", "embedding_model",
                                                 "teacher_oof")}
    check_outputs(outputs, inputs, folders={"output_dir", *(f"output_dir's {model.name}/" for model in models)}, into={"output_dir"})


def _check_shape(name: str, path: Path, real: Path, *, folder: bool) -> None:
    """A file output must not be a folder, a folder output not a file, and each existing folder on the way a folder."""
    if folder and real.exists() and not real.is_dir():
        raise ValueError(f"{name} {path} is a file, not a folder: give the path of a folder.")
    if not folder and real.is_dir():
        raise ValueError(f"{name} {path} is a folder: give the path of a file, e.g. {path / 'NAME'} with the file's name.")
    for parent in real.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{name} {path}: {parent} is a file, not a folder: choose a path whose folders are folders.")
            return


def _check_writable(name: str, path: Path, real: Path) -> None:
    """The nearest existing folder on the way to `real` takes new files (os.access: permissions and read-only mounts)."""
    for parent in (real, *real.parents):
        if parent.is_dir():
            if not os.access(parent, os.W_OK | os.X_OK):
                raise PermissionError(errno.EACCES, f"{name} {path}: cannot write in {parent} (no write permission, or a read-only "
                                      f"file system such as an attached Kaggle input): {_WRITABLE_HINT}.")
            return


def _destination(err: OSError) -> Path | None:
    """The path an OS error is about: the destination of a rename, the file behind a kagglekit._io temporary file."""
    name = err.filename2 if err.filename2 is not None else err.filename
    if name is None or isinstance(name, int):
        return None
    path = Path(os.fsdecode(name))
    match = _TEMPORARY.fullmatch(path.name)
    return path.with_name(match["name"]) if match else path


def _first_file_on_the_way(path: Path) -> Path | None:
    for parent in (path, *path.parents):
        if parent.exists():
            return None if parent.is_dir() else parent
    return None


def os_error_line(err: OSError) -> tuple[int, str]:
    """(exit status, one line naming the path and the fix) for an operating-system error that escaped a command.

    Status 2 (the user's path): a file where a folder is needed (NotADirectoryError, FileExistsError) or a folder
    where a file is needed (IsADirectoryError). Status 1 (the machine): no permission (PermissionError, as
    for a read-only file system: `kagglekit._io.StorageError`), and any other OS error.

    Example:
        >>> os_error_line(IsADirectoryError(21, "Is a directory", "out"))
        (2, 'out is a folder where a file is needed: give the path of a file (a name inside it, e.g. out/submission.csv).')
    """
    path = _destination(err)
    reason = err.strerror or str(err)
    if path is None:  # a message made by the kit (e.g. check_outputs), or an error about no path
        return 1, reason if err.strerror else f"{type(err).__name__}: {err}"
    if isinstance(err, IsADirectoryError):
        return 2, f"{path} is a folder where a file is needed: give the path of a file (a name inside it, e.g. {path / 'NAME'})."
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        blocker = _first_file_on_the_way(path)
        if blocker is not None:
            way = "" if blocker == path else f" (on the way to {path})"
            return 2, f"{blocker} is a file where a folder is needed{way}: choose another path, or move the file away."
        return 2, f"{path} already exists ({reason}): choose another path, or move it away."
    if isinstance(err, PermissionError):
        return 1, (f"permission denied: {path} ({reason}): the kit may not write (or read) there; {_WRITABLE_HINT}, or fix the "
                   "permissions.")
    return 1, f"{reason}: {path}: check that path and its disk, or choose another place."
