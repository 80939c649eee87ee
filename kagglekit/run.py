"""The run folder: its file names, the locked run card, fold discovery, out-of-fold predictions, fold meta.

A run folder (``output_dir``) holds ``config.yaml``, ``folds.csv`` (id, fold), its model folders (each
with ``kagglekit.json``): ``fold{K}/`` (fold K, first seed), ``fold{K}-seed{S}/`` (fold K with seed S),
``full/`` and ``full-seed{S}/`` (fits on all training rows, no OOF), then ``oof.csv`` (id, fold, label,
pred), ``run.json`` (the run card) and ``.lock``; ``logs/`` when folds train in parallel. Every stage
(train, predict, ensemble, report, doctor, export) finds these through this module, which is why it is
over 350 lines: one owner of the whole layout. Light at import: pandas loads when a CSV is read or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping, NamedTuple

from kagglekit._io import file_lock, read_csv, write_csv, write_json
from kagglekit.targets import Target

if TYPE_CHECKING:
    import pandas as pd

CONFIG_FILE = "config.yaml"  # the resolved config, as the user gave it
FOLDS_FILE = "folds.csv"  # id, fold
OOF_FILE = "oof.csv"  # id, fold, label, pred: every trained fold's validation rows, in training order
CARD_FILE = "run.json"  # the run card: config, versions, per-fold scores, cv, timings
LOCK_FILE = ".lock"  # taken by every read-modify-write of the shared files
LOGS_DIR = "logs"  # fold{K}.log of folds trained in their own processes
META_FILE = "kagglekit.json"  # a fold folder's FoldMeta; a folder holding one is a model folder
META_FORMAT = 1  # the version of kagglekit.json's layout
OOF_COLUMNS = ("id", "fold", "label", "pred")
FOLD_DIR = re.compile(r"fold(\d+)$")  # a first-seed fold folder, and a fold's column in the report
MODEL_DIR = re.compile(r"(?:fold(?P<fold>\d+)|(?P<full>full))(?:-seed(?P<seed>\d+))?")  # every model folder name of a run
_SHOWN = 5  # example ids in an error message


# ---------------------------------------------------------------------------------------------- fold meta


@dataclass(frozen=True)
class FoldMeta:
    """What a fold's model folder needs besides its weights to predict: ``kagglekit.json``.

    Args:
        task: the recipe that reads the data (uspppm | pairs | ids).
        max_len: tokens per pair.
        activation: sigmoid | identity | expected: logits to predictions (see `kagglekit.losses.activate`).
        id_col: the submission's id column.
        target_col: the submission's prediction column.
        loss: the training loss's name.
        output: the model's outputs (one score, classes or bins; see `kagglekit.targets`).
        metric: the CV metric's name.
        recipe_state: what the recipe learned from the training file (settings, computed-feature state).
        model: `PairModel.init_args`, added by `save_model_folder`; rebuilds the model around the weights.
        fold, score, epoch, step: the checkpoint: which fold, its validation score, and when it was saved.
        seed: the training seed of a fold's extra seed (``fold{K}-seed{S}/``) or of a full fit; None: the run's seed.
        full: a fit on all training rows (``full/``, ``full-seed{S}/``): no validation, so no OOF, and fold is None.
        format: the layout version of the file.
        kagglekit_version: the kit that wrote it.
        extra: keys this version does not know, kept as they were read.
    """

    task: str
    max_len: int
    activation: str
    id_col: str = "id"
    target_col: str = "label"
    loss: str | None = None
    output: Target = field(default_factory=Target)
    metric: str | None = None
    recipe_state: dict = field(default_factory=dict)
    model: dict | None = None
    fold: int | None = None
    score: float | None = None
    epoch: int | None = None
    step: int | None = None
    seed: int | None = None
    full: bool = False
    format: int = META_FORMAT
    kagglekit_version: str | None = None
    extra: dict = field(default_factory=dict)

    REQUIRED = ("task", "max_len", "activation")  # what every kit has written; the rest has defaults

    def to_json(self) -> dict:
        """The ``kagglekit.json`` payload: every field set (None ones and ``full=False`` left out), ``output`` as a
        dict, then `extra`. A fold model's file reads as it did before seeds and full fits existed."""
        out: dict[str, Any] = {"format": self.format, "kagglekit_version": self.kagglekit_version}
        for f in dataclasses.fields(self):
            if f.name not in out and f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out["output"] = self.output.to_meta()
        # "model" last, as model folders have always had it
        out = {k: v for k, v in out.items() if v is not None and k != "model" and not (k == "full" and v is False)}
        if self.model is not None:
            out["model"] = self.model
        return {**out, **{k: v for k, v in self.extra.items() if k not in out}}

    @classmethod
    def from_json(cls, data: Mapping, *, source: str = META_FILE) -> "FoldMeta":
        """Read a payload of `to_json`, or of an older kit: missing optional keys take today's defaults.

        Args:
            data: the parsed JSON.
            source: the file it came from, named in errors.

        Raises:
            ValueError: `data` is no JSON object, or lacks one of `REQUIRED`.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: expected a JSON object, got {type(data).__name__}: rewrite the model folder with kagglekit train.")
        missing = [k for k in cls.REQUIRED if k not in data]
        if missing:
            raise ValueError(f"{source}: lacks the key(s) {missing} (it has {sorted(data)}): it was not written by kagglekit "
                             "train, or was edited; re-download or retrain the model folder.")
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        known["output"] = Target.from_meta(data.get("output"))
        known["recipe_state"] = data.get("recipe_state") or {}
        for key in ("id_col", "target_col"):  # null in a hand-made file: today's default
            if known.get(key) is None:
                known.pop(key, None)
        return cls(**known, extra={k: v for k, v in data.items() if k not in names})

    @classmethod
    def read(cls, folder: str | os.PathLike) -> "FoldMeta":
        """The FoldMeta of a model folder (its ``kagglekit.json``); the folder must hold a ``model`` entry."""
        folder = Path(folder)
        path = folder / META_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is not a kagglekit model folder: {META_FILE} is missing. Pass a run folder "
                "(with fold*/ inside) or a fold folder written by kagglekit train."
            )
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: not valid JSON ({err}): re-download or retrain the model folder.") from None
        meta = cls.from_json(data, source=str(path))
        if meta.model is None:
            raise ValueError(f"{path}: lacks the key 'model' (the head and output layer's settings): it was not written by "
                             "save_model_folder; re-download or retrain the model folder.")
        return meta


# ---------------------------------------------------------------------------------------------- fold discovery


class ModelDirName(NamedTuple):
    """What a model folder's name says: ``fold3-seed7`` → (3, 7, False); ``full`` → (None, None, True)."""

    fold: int | None  # the CV fold; None for a full fit
    seed: int | None  # None: the run's first seed
    full: bool


def parse_model_dir_name(name: str) -> ModelDirName | None:
    """Read a run's model folder name: ``fold{K}``, ``fold{K}-seed{S}``, ``full`` or ``full-seed{S}``; None for any other.

    Example:
        >>> parse_model_dir_name("fold2-seed43")
        ModelDirName(fold=2, seed=43, full=False)
    """
    match = MODEL_DIR.fullmatch(name)
    if match is None:
        return None
    fold, seed = match["fold"], match["seed"]
    return ModelDirName(None if fold is None else int(fold), None if seed is None else int(seed), match["full"] is not None)


def fold_number(path: str | os.PathLike) -> int | None:
    """K for a CV fold folder (``fold{K}`` or ``fold{K}-seed{S}``), else None (a full fit too)."""
    name = parse_model_dir_name(Path(path).name)
    return None if name is None else name.fold


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a model folder: it holds ``kagglekit.json``."""
    return (Path(path) / META_FILE).is_file()


def _model_dirs(run_dir, complete: bool, keep) -> list[Path]:
    """The run's model folders whose parsed name passes `keep`, sorted by (fold, seed), the first seed first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = []
    for path in run_dir.iterdir():
        name = parse_model_dir_name(path.name)
        if name is not None and keep(name) and path.is_dir() and (not complete or is_model_dir(path)):
            found.append((name.fold if name.fold is not None else -1, -1 if name.seed is None else name.seed, path))
    return [path for _, _, path in sorted(found, key=lambda t: t[:2])]


def fold_dirs(run_dir: str | os.PathLike, *, complete: bool = True, fold: int | None = None) -> list[Path]:
    """The CV fold folders of a run folder (``fold{K}/`` and ``fold{K}-seed{S}/``), sorted by (K, S) with each
    fold's first seed (``fold{K}``) first; none when `run_dir` is no folder. Full fits are in `full_dirs`.

    Args:
        run_dir: the run folder.
        complete: only model folders (those holding ``kagglekit.json``), the folds predict uses;
            False: every such folder, so a check can name what an incomplete one lacks.
        fold: only the folders of fold K (all its seeds); None: every fold.
    """
    return _model_dirs(run_dir, complete, lambda n: not n.full and (fold is None or n.fold == fold))


def full_dirs(run_dir: str | os.PathLike, *, complete: bool = True) -> list[Path]:
    """The full-fit folders of a run folder (``full/`` first, then ``full-seed{S}/`` by S): models trained on
    every training row after CV, with no OOF. `complete` as in `fold_dirs`."""
    return _model_dirs(run_dir, complete, lambda n: n.full)


def find_model_dirs(path: str | os.PathLike, *, what: str = "--models") -> tuple[list[Path], list[Path]]:
    """The model folders to predict with: (CV fold folders, full-fit folders); not both empty.

    Args:
        path: a run folder, whose complete `fold_dirs` and `full_dirs` are given; or one model folder,
            a full fit when it is named ``full`` or ``full-seed{S}``, else a fold.
        what: how the user named `path` (an option), for the errors.

    Raises:
        FileNotFoundError: `path` is no folder, or holds no trained model folder.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}. Pass a run folder written by kagglekit train.")
    if is_model_dir(path):
        name = parse_model_dir_name(path.name)
        return ([], [path]) if name is not None and name.full else ([path], [])
    folds, full = fold_dirs(path), full_dirs(path)
    if not folds and not full:
        raise FileNotFoundError(
            f"{what}: {path} holds no trained fold (no fold*/{META_FILE}). Train at least one fold into it, "
            "or pass the folder of the attached model dataset."
        )
    return folds, full


def find_fold_dirs(path: str | os.PathLike, *, what: str = "--models") -> list[Path]:
    """The CV fold folders of `find_model_dirs` (every seed), or `path` itself when it is a model folder.

    Raises:
        FileNotFoundError: `path` is no folder, or holds no trained fold.
    """
    if is_model_dir(path):
        return [Path(path)]
    folds, _ = find_model_dirs(path, what=what)
    if not folds:
        raise FileNotFoundError(f"{what}: {path} holds only full fits (full*/), no trained fold (no fold*/{META_FILE}): "
                                "pass the full fit's folder itself, or train the folds.")
    return folds


# ---------------------------------------------------------------------------------------------- the run folder


@dataclass(frozen=True)
class RunFolder:
    """A run folder's paths, its locked run card, and its out-of-fold predictions.

    Example:
        >>> run = RunFolder("runs/uspppm")
        >>> with run.update_card() as card:      # under the run's lock; written when the block ends
        ...     card["note"] = "baseline"
        >>> run.read_oof()[["id", "pred"]]
    """

    path: Path

    def __init__(self, path: str | os.PathLike):
        object.__setattr__(self, "path", Path(path))

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def folds_path(self) -> Path:
        return self.path / FOLDS_FILE

    @property
    def oof_path(self) -> Path:
        return self.path / OOF_FILE

    @property
    def card_path(self) -> Path:
        return self.path / CARD_FILE

    @property
    def lock_path(self) -> Path:
        return self.path / LOCK_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / LOGS_DIR

    def fold_dir(self, fold: int, seed: int | None = None) -> Path:
        """``fold{K}/`` (fold K, the run's first seed), or ``fold{K}-seed{S}/`` for another seed."""
        return self.path / (f"fold{fold}" if seed is None else f"fold{fold}-seed{seed}")

    def full_dir(self, seed: int | None = None) -> Path:
        """``full/`` (the fit on all training rows, the run's first seed), or ``full-seed{S}/`` for another seed."""
        return self.path / ("full" if seed is None else f"full-seed{seed}")

    def fold_dirs(self, *, complete: bool = True, fold: int | None = None) -> list[Path]:
        """See `fold_dirs`."""
        return fold_dirs(self.path, complete=complete, fold=fold)

    def full_dirs(self, *, complete: bool = True) -> list[Path]:
        """See `full_dirs`."""
        return full_dirs(self.path, complete=complete)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder's lock: processes sharing the folder (one fold per GPU) take turns. Not re-entrant."""
        with file_lock(self.lock_path):
            yield

    # -- the run card

    def read_card(self, *, what: str = "run") -> dict:
        """The run card (``run.json``); `what` names the caller in the error when it is missing."""
        if not self.card_path.is_file():
            raise FileNotFoundError(f"{what}: {self.card_path} not found: pass run folders written by kagglekit train "
                                    f"({CARD_FILE}, {OOF_FILE}, fold*/).")
        return json.loads(self.card_path.read_text(encoding="utf-8"))

    def read_config(self) -> dict | None:
        """``config.yaml`` as a dict, renamed keys under their new names (a run saved before a rename); None when absent."""
        import yaml

        from kagglekit.config import Config

        if not self.config_path.is_file():
            return None
        raw = yaml.safe_load(self.config_path.read_text(encoding="utf-8")) or {}
        return {Config.RENAMED_KEYS.get(k, k): v for k, v in raw.items()}

    def write_card(self, card: dict) -> Path:
        """Write the run card atomically; hold `lock` when it was read and changed."""
        return write_json(self.card_path, card)

    @contextlib.contextmanager
    def update_card(self) -> Iterator[dict]:
        """Under the lock, yield the run card (a new one, ``{"folds": {}}``, when there is none) and write it
        back when the block ends without an error. Other writes of the block (`merge_oof`) share the lock."""
        with self.lock():
            card = json.loads(self.card_path.read_text(encoding="utf-8")) if self.card_path.is_file() else {"folds": {}}
            yield card
            self.write_card(card)

    # -- folds and out-of-fold predictions

    def read_folds(self) -> pd.DataFrame | None:
        """``folds.csv`` (id as text, fold), or None when the run has none yet."""
        import pandas as pd

        return pd.read_csv(self.folds_path, dtype={"id": str}) if self.folds_path.is_file() else None

    def write_folds(self, frame: pd.DataFrame) -> Path:
        return write_csv(self.folds_path, frame[["id", "fold"]])

    def read_oof(self, *, check: bool = True) -> pd.DataFrame:
        """``oof.csv``, ids as text.

        Args:
            check: refuse a file that lacks a column of ``OOF_COLUMNS``, repeats an id, or holds a NaN
                or infinite label or prediction (errors name the run and example ids).
        """
        import numpy as np

        what = f"oof.csv of run {self.path}"
        frame = read_csv(self.oof_path, what=what, required=OOF_COLUMNS if check else (), dtype={"id": str})
        if not check:
            return frame
        dup = frame["id"].duplicated()
        if dup.any():
            raise ValueError(f"{what}: {int(dup.sum())} duplicated id(s), e.g. {frame.loc[dup, 'id'].head(_SHOWN).tolist()}: "
                             "rebuild the run's oof.csv (kagglekit train writes each training row once).")
        values = frame[["label", "pred"]].to_numpy(dtype=np.float64)
        if not np.isfinite(values).all():
            bad = ~np.isfinite(values).all(axis=1)
            raise ValueError(f"{what}: NaN or infinite label/pred in {int(bad.sum())} row(s), e.g. ids "
                             f"{frame.loc[bad, 'id'].head(_SHOWN).tolist()}: retrain the fold that diverged or leave the run out.")
        return frame

    def merge_oof(self, new: pd.DataFrame, order) -> pd.DataFrame:
        """Put `new` (the OOF rows of one or more folds) into ``oof.csv``, replacing those folds' old rows;
        rows are written in `order` (the ids of the training frame). Hold `lock`. Returns the merged frame."""
        frame = merge_oof(self.read_oof(check=False) if self.oof_path.is_file() else None, new, order)
        write_csv(self.oof_path, frame)
        return frame


def merge_oof(old: pd.DataFrame | None, new: pd.DataFrame, order) -> pd.DataFrame:
    """`old` OOF rows without the folds in `new`, plus `new`, sorted into `order` (a sequence of ids).

    Ids missing from `order` go last, in their order of arrival.
    """
    import pandas as pd

    if old is not None:
        new = pd.concat([old[~old["fold"].isin(new["fold"].unique())], new], ignore_index=True)
    order = pd.Series(order)
    rank = pd.Series(range(len(order)), index=order.to_numpy())
    return new.assign(_rank=new["id"].map(rank)).sort_values("_rank", kind="stable").drop(columns="_rank").reset_index(drop=True)
