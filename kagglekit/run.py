"""The run folder: its file names, the locked run card, fold discovery, out-of-fold predictions, fold meta.

A run folder (``output_dir``) holds ``config.yaml``, ``folds.csv`` (id, fold), ``fold{K}/`` (model
folders, each with ``kagglekit.json``), ``oof.csv`` (id, fold, label, pred), ``run.json`` (the run
card) and ``.lock``; ``logs/`` when folds train in parallel. Every stage (train, predict, ensemble,
report, doctor, export) finds these through this module. Light at import: pandas loads when a CSV is
read or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

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
FOLD_DIR = re.compile(r"fold(\d+)$")
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
    format: int = META_FORMAT
    kagglekit_version: str | None = None
    extra: dict = field(default_factory=dict)

    REQUIRED = ("task", "max_len", "activation")  # what every kit has written; the rest has defaults

    def to_json(self) -> dict:
        """The ``kagglekit.json`` payload: every field set (None ones left out), ``output`` as a dict, then `extra`."""
        out: dict[str, Any] = {"format": self.format, "kagglekit_version": self.kagglekit_version}
        for f in dataclasses.fields(self):
            if f.name not in out and f.name != "extra":
                out[f.name] = getattr(self, f.name)
        out["output"] = self.output.to_meta()
        # "model" last, as model folders have always had it
        out = {k: v for k, v in out.items() if v is not None and k != "model"}
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


def fold_number(path: str | os.PathLike) -> int | None:
    """K for a folder named ``fold{K}``, else None."""
    match = FOLD_DIR.fullmatch(Path(path).name)
    return int(match[1]) if match else None


def is_model_dir(path: str | os.PathLike) -> bool:
    """Whether `path` is a model folder: it holds ``kagglekit.json``."""
    return (Path(path) / META_FILE).is_file()


def fold_dirs(run_dir: str | os.PathLike, *, complete: bool = True) -> list[Path]:
    """The ``fold{K}/`` folders of a run folder, sorted by K; none when `run_dir` is no folder.

    Args:
        run_dir: the run folder.
        complete: only model folders (those holding ``kagglekit.json``), the folds predict uses;
            False: every ``fold{K}/`` folder, so a check can name what an incomplete one lacks.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and fold_number(p) is not None and (not complete or is_model_dir(p))]
    return sorted(found, key=fold_number)


def find_fold_dirs(path: str | os.PathLike, *, what: str = "--models") -> list[Path]:
    """The model folders to predict with: `path` itself when it is a model folder, else its complete folds.

    Args:
        path: a run folder or a model folder.
        what: how the user named `path` (an option), for the errors.

    Raises:
        FileNotFoundError: `path` is no folder, or holds no trained fold.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}. Pass a run folder written by kagglekit train.")
    if is_model_dir(path):
        return [path]
    folds = fold_dirs(path)
    if not folds:
        raise FileNotFoundError(
            f"{what}: {path} holds no trained fold (no fold*/{META_FILE}). Train at least one fold into it, "
            "or pass the folder of the attached model dataset."
        )
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

    def fold_dir(self, fold: int) -> Path:
        return self.path / f"fold{fold}"

    def fold_dirs(self, *, complete: bool = True) -> list[Path]:
        """See `fold_dirs`."""
        return fold_dirs(self.path, complete=complete)

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
