"""The run folder: its file names, the locked run card, fold discovery, out-of-fold predictions, fold meta.

A run folder (``output_dir``) holds ``config.yaml``, ``folds.csv`` (id, fold), its model folders (each
with ``kagglekit.json``): ``fold{K}/`` (fold K, first seed), ``fold{K}-seed{S}/`` (fold K with seed S),
``full/`` and ``full-seed{S}/`` (fits on all training rows, no OOF), then ``oof.csv`` (id, fold, label,
pred), ``run.json`` (the run card) and ``.lock``; ``logs/`` when folds train in parallel. Every stage
(train, predict, ensemble, report, doctor, export) finds these through this module, which is why it is
over 350 lines: one owner of the whole layout, and of what tells a run's models from copies beside them.
Light at import: pandas loads when a CSV is read or written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import warnings
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
EMBEDDER_DIR = "embedding_model"  # the run's copy of its embedding model (kagglekit.models.embeddings)
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
            found.append((name, path))
    return [path for _, path in sorted(found, key=lambda t: _order(t[0]))]


def _order(name: ModelDirName) -> tuple[int, int]:
    """Where a model folder sorts in its run: by fold (full fits first), then seed (the first seed, named without one, first)."""
    return (name.fold if name.fold is not None else -1, -1 if name.seed is None else name.seed)


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


class SkippedFolder(UserWarning):
    """A folder in a run folder that is not one of the run's complete models, left out of predict (named in the message)."""


# what the models of one run agree on: the recipe (task, id and target columns) and the output (loss, activation, kind)
_RUN_SETTINGS = ("task", "id_col", "target_col", "loss", "activation", "output")


def find_model_dirs(path: str | os.PathLike, *, what: str = "--models", strict: bool = False) -> tuple[list[Path], list[Path]]:
    """The model folders to predict with: (CV fold folders, full-fit folders); not both empty.

    In a run folder a folder is one of the run's models when its content says so, not only its name: it
    holds ``kagglekit.json``, its name is a model folder name of a run (``fold{K}``, ``fold{K}-seed{S}``,
    ``full``, ``full-seed{S}``), the fold, seed and full fields of its ``kagglekit.json`` match that name,
    and its settings (`_RUN_SETTINGS`) agree with ``run.json`` and with the run's other models. Anything
    else that looks like a model (a copy such as ``fold0_backup/`` or ``fold0 (1)/``, a ``fold2/`` still
    training, a ``fold1/`` that is a renamed copy of fold 0) is skipped with a `SkippedFolder` warning
    naming it, or refused with `strict`. Fields an older kit did not write are not compared.

    Args:
        path: a run folder; or one model folder, a full fit when it is named ``full`` or ``full-seed{S}``, else a fold.
        what: how the user named `path` (an option), for the messages.
        strict: refuse a run folder holding anything that is not one of its complete models.

    Raises:
        FileNotFoundError: `path` is no folder, or holds no trained model folder.
        ValueError: with `strict`, a folder that is not one of the run's models (each one named); a
            ``kagglekit.json`` that is not valid; models that disagree with no ``run.json`` to settle which are the run's.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{what}: folder not found: {path}. Pass a run folder written by kagglekit train.")
    if is_model_dir(path):
        name = parse_model_dir_name(path.name)
        return ([], [path]) if name is not None and name.full else ([path], [])
    models, skipped = _survey(path, what)
    if skipped and strict:
        shown = "; ".join(f"{folder.name}/: {reason}" for folder, reason in skipped)
        raise ValueError(f"{what} {path} (--strict): {len(skipped)} folder(s) are not complete models of the run: {shown}. "
                         "Move them out of the run folder, or leave --strict out to skip them.")
    for folder, reason in skipped:
        warnings.warn(f"{what} {path}: skipped {folder.name}/: {reason}", SkippedFolder, stacklevel=2)
    folds = [m for m, name in models if not name.full]
    full = [m for m, name in models if name.full]
    if not folds and not full:
        raise FileNotFoundError(
            f"{what}: {path} holds no trained fold (no fold*/{META_FILE}). Train at least one fold into it, "
            "or pass the folder of the attached model dataset."
        )
    return folds, full


def _survey(run_dir: Path, what: str) -> tuple[list[tuple[Path, ModelDirName]], list[tuple[Path, str]]]:
    """The run's models (folder, parsed name), sorted as `fold_dirs` and `full_dirs` sort them, and the folders
    that are not models of the run, each with the reason."""
    card = _quiet_card(run_dir)
    named, skipped = [], []
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        name = parse_model_dir_name(folder.name)
        if name is None:
            if is_model_dir(folder):
                skipped.append((folder, "a model folder whose name is none of a run's (fold{K}, fold{K}-seed{S}, full, "
                                        "full-seed{S}), e.g. a copy: it would count its model twice"))
            continue
        if not is_model_dir(folder):
            skipped.append((folder, f"no {META_FILE}: a model still training, or copied without it"))
            continue
        meta = FoldMeta.read(folder)  # an invalid file is an error, as loading the model would be
        raw = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        wrong = _name_disagrees(name, raw)
        if wrong:
            skipped.append((folder, f"its {META_FILE} says {wrong}: a copy of another model under this name"))
        else:
            named.append((folder, name, meta))
    named, others = _agreeing(run_dir, named, card, what)
    skipped = sorted(skipped + others, key=lambda t: t[0].name)
    named.sort(key=lambda t: _order(t[1]))
    return [(folder, name) for folder, name, _ in named], skipped


def _valid_json(path: Path) -> bool:
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def _quiet_card(run_dir: Path) -> dict | None:
    """The run card, or None when there is none or it is not a JSON object (the commands that need it say so)."""
    path = Path(run_dir) / CARD_FILE
    if not path.is_file() or not _valid_json(path):
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _name_disagrees(name: ModelDirName, raw: Mapping) -> str:
    """How a model folder's kagglekit.json contradicts its name ("fold 0", "a full fit"), or ""; absent fields agree."""
    if "fold" in raw and raw["fold"] != name.fold:
        return "a full fit (no fold)" if raw["fold"] is None else f"fold {raw['fold']}"
    if "seed" in raw and raw["seed"] != name.seed:
        return "the run's first seed" if raw["seed"] is None else f"seed {raw['seed']}"
    if "full" in raw and bool(raw["full"]) != name.full:
        return "a full fit" if raw["full"] else "a CV fold"
    return ""


def _settings(meta: FoldMeta) -> tuple:
    return tuple(getattr(meta, key) for key in _RUN_SETTINGS)


def _shown(key: str, value) -> str:
    return repr(value.to_meta() if isinstance(value, Target) else value)


def _agreeing(run_dir: Path, named: list, card: dict | None, what: str) -> tuple[list, list[tuple[Path, str]]]:
    """The models whose settings agree with the run card and with most of the run's models; the others with the reason.

    Raises:
        ValueError: no run card, and as many models with one set of settings as with another.
    """
    skipped, kept = [], []
    for folder, name, meta in named:
        for key in ("task", "loss", "output"):
            if card and card.get(key) is not None:
                expected = Target.from_meta(card[key]) if key == "output" else card[key]
                if getattr(meta, key) != expected:
                    skipped.append((folder, f"its {META_FILE} says {key}={_shown(key, getattr(meta, key))} but the run's "
                                            f"{CARD_FILE} says {_shown(key, expected)}: a model of another run"))
                    break
        else:
            kept.append((folder, name, meta))
    counts: dict[tuple, list] = {}
    for item in kept:
        counts.setdefault(_settings(item[2]), []).append(item)
    if len(counts) <= 1:
        return kept, skipped
    ranked = sorted(counts.values(), key=len, reverse=True)
    if len(ranked[0]) == len(ranked[1]):
        first, second = ranked[0][0], ranked[1][0]
        key = next(k for k in _RUN_SETTINGS if getattr(first[2], k) != getattr(second[2], k))
        raise ValueError(f"{what}: {second[0]} has {key}={_shown(key, getattr(second[2], key))} but {first[0]} has "
                         f"{_shown(key, getattr(first[2], key))}, and {run_dir} has no {CARD_FILE} to tell which are the run's: "
                         "the folds of one run folder must come from one training config; split them into separate run folders.")
    reference = ranked[0][0][2]
    for group in ranked[1:]:
        for folder, _, meta in group:
            key = next(k for k in _RUN_SETTINGS if getattr(meta, k) != getattr(reference, k))
            skipped.append((folder, f"its {META_FILE} says {key}={_shown(key, getattr(meta, key))} where the run's other models "
                                    f"say {_shown(key, getattr(reference, key))}: a model of another run"))
    return ranked[0], skipped


def run_identity(settings: Mapping, folds: "pd.DataFrame") -> str:
    """A short id of a run that does not depend on where its folder or files lie.

    The hash of the settings that say what the run computes (`Config` keys other than MACHINE_KEYS
    and PATH_KEYS, only those away from their defaults, so a kit that adds a key keeps old ids) and
    of its fold assignment (``folds.csv``'s id and fold). `train_folds` stores it in ``run.json`` as
    ``run_id`` when the card is first written and reads it from there afterwards.

    Args:
        settings: a config as `Config.to_dict` (or ``config.yaml``) holds it.
        folds: the run's ``id`` and ``fold`` columns.

    Example:
        >>> run_identity(cfg.to_dict(), RunFolder(out).read_folds())
        '3f9a0c1d2e4b'
    """
    from kagglekit.config import Config

    defaults = Config().to_dict()
    skip = Config.MACHINE_KEYS | Config.PATH_KEYS
    kept = {k: v for k, v in settings.items() if k not in skip and (k not in defaults or v != defaults[k])}
    digest = hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode())
    digest.update(folds[["id", "fold"]].astype(str).to_csv(index=False, lineterminator="\n").encode())
    return digest.hexdigest()[:12]


def run_id(run_dir: str | os.PathLike) -> str | None:
    """The identity of a run wherever its folder lies: ``run.json``'s ``run_id``; for a run saved before run ids,
    the id train would give it (`run_identity` of its ``config.yaml`` and ``folds.csv``);
    None when the folder has neither."""
    run = RunFolder(run_dir)
    card = _quiet_card(run.path)
    if card and card.get("run_id"):
        return str(card["run_id"])
    try:
        config, folds = run.read_config(), run.read_folds()
    except (OSError, ValueError):  # a broken file: no identity from it
        return None
    if config is None or folds is None or not {"id", "fold"} <= set(folds.columns):
        return None
    return run_identity(config, folds)


def model_identities(path: str | os.PathLike, folders: list[Path]) -> dict[tuple[str, str], Path]:
    """What tells `folders` (the model folders found in `path`, a run folder or one model folder) apart from any
    other model folder, wherever it lies: (its run's `run_id`, its name), and ("path", its resolved path).

    Two spellings of one folder (``runs/a``, ``runs/./a``, a symbolic link), a copy of a run and a run given
    beside one of its own model folders share a key.
    """
    path = Path(path)
    owner = path.parent if is_model_dir(path) else path
    rid = run_id(owner) if (owner / CARD_FILE).is_file() or (owner / CONFIG_FILE).is_file() else None
    keys: dict[tuple[str, str], Path] = {}
    for folder in folders:
        keys[("path", str(Path(folder).resolve()))] = folder
        if rid is not None:
            keys[(rid, Path(folder).name)] = folder
    return keys


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

    def own_paths(self) -> list[Path]:
        """What the run is made of: its files, every model folder (complete or not) and its embedding-model copy.

        A command may write beside them (a submission or a report in the run folder), never over or into them:
        the inputs `kagglekit._paths.check_outputs` is given for a run. A lone model folder is all its own.
        """
        if is_model_dir(self.path):
            return [self.path]
        files = [self.card_path, self.oof_path, self.folds_path, self.config_path]
        return files + self.fold_dirs(complete=False) + self.full_dirs(complete=False) + [self.path / EMBEDDER_DIR]

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
