"""Train a run: read the data, fix the folds, train the requested folds (each seed of each), then the full fit.

After every fold the run folder is complete and consistent: ``config.yaml``, ``folds.csv``,
``fold{K}/`` (and ``fold{K}-seed{S}/``), ``oof.csv`` (all folds trained so far) and ``run.json`` (see
`kagglekit.run`); ``full/`` comes after CV, on every row. Folds may be trained in separate processes
or notebooks (``--fold 0``, then ``--fold 1`` ...) into the same folder, and in later sessions after
the folder moved: paths are not part of a run (`kagglekit.train.session`). Over 350 lines: it owns
the order of a whole call (data, folds, every model, the card, the stop and how to continue).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import numbers
import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

import numpy as np
import pandas as pd
import kagglekit
from kagglekit._paths import check_train_outputs
from kagglekit.config import Config, changed_keys
from kagglekit.data.recipes import get_recipe
from kagglekit.folds import add_fold_column
from kagglekit.losses import check_loss_output, default_loss, get_loss
from kagglekit.metrics import Metric
from kagglekit.run import FoldMeta, RunFolder, is_model_dir, merge_oof, run_identity
from kagglekit.targets import make_target
from kagglekit.train.session import Budget, FoldClaims, TimeBudgetReached, format_duration, frame_digest
from kagglekit.train.state import ResumeFiles
from kagglekit.train.tracking import Tracker

if TYPE_CHECKING:  # the loop loads the model code (transformers): imported where a model trains
    from kagglekit.train.loop import FoldResult, FullLength, ModelPlan


FULL = "full"  # the fold spec's name for the full-data fit


def parse_fold_spec(folds: str | int | Iterable[int | str], n_folds: int) -> tuple[list[int], bool]:
    """The CV folds a fold spec names, and whether it asks for the full-data fit after them.

    ``"all"`` → every fold; ``3`` or ``"3"`` → [3]; ``"1,3"`` or ``[1, 3]`` → [1, 3]; ``"full"`` adds the
    full fit, alone or in a list (``"0,1,full"``, ``"all,full"``, ``[0, 1, "full"]``). Folds are checked
    against n_folds; one named twice is trained once.

    Example:
        >>> parse_fold_spec("all,full", 3)
        ([0, 1, 2], True)
    """
    if isinstance(folds, str):
        items = [part.strip() for part in folds.split(",")]
    else:
        items = [folds] if isinstance(folds, numbers.Integral) else list(folds)
    out: list[int] = []
    for item in items:
        if item in ("all", FULL):
            out += range(n_folds) if item == "all" else []
            continue
        if isinstance(item, bool) or not (isinstance(item, str) and item.isdigit() or isinstance(item, numbers.Integral)):
            raise ValueError(f"--fold {folds!r}: expected a fold number 0..{n_folds - 1}, a list such as 1,3, 'all', or "
                             "'full' (the fit on every row after CV), alone or in the list (0,1,full).")
        if not 0 <= int(item) < n_folds:
            raise ValueError(f"--fold {int(item)}: out of range for n_folds={n_folds}; use 0..{n_folds - 1} or 'all'.")
        out.append(int(item))
    return list(dict.fromkeys(out)), FULL in items


def parse_folds(folds: str | int | Iterable[int | str], n_folds: int) -> list[int]:
    """The CV folds of a fold spec (`parse_fold_spec`): ``"all"`` → every fold, ``"1,3"`` → [1, 3]; a ``full`` in it is not a fold."""
    return parse_fold_spec(folds, n_folds)[0]


def _check_same_config(cfg: Config, out: Path) -> None:
    """A run folder is one experiment: training more folds into it with other settings would mix them.

    Paths (`Config.PATH_KEYS`) are not settings: a run folder copied to another place, or pointed at
    moved data, continues; what the files hold is checked by `assign_folds` and `_check_same_data`.
    """
    old = RunFolder(out).read_config()
    if old is None:
        return
    new = cfg.to_dict()
    changed = changed_keys(old, new, ignore=Config.MACHINE_KEYS | Config.PATH_KEYS)
    if changed:
        shown = ", ".join(f"{k}: {old[k]!r} → {new[k]!r}" for k in changed[:6])
        raise ValueError(
            f"output_dir {out} already holds a run with other settings ({shown}). Use a new output_dir for a new "
            "experiment, or delete the old folder."
        )


def _check_same_data(cfg: Config, out: Path, fingerprint: dict) -> None:
    """The files a run trains on may move, not change: a run whose card records other contents for
    ``train_csv`` or ``extra_train_csv`` (`frame_digest` of the rows read) is refused, naming the file."""
    run = RunFolder(out)
    saved = run.read_card().get("data_fingerprint") if run.card_path.is_file() else None
    for key, digest in fingerprint.items() if saved else ():
        if key in saved and saved[key] != digest:
            path = getattr(cfg, key) or "(none)"
            before = "no file" if saved[key] is None else f"{saved[key]['rows']} rows"
            given = "no file" if digest is None else f"{digest['rows']} rows"
            raise ValueError(
                f"{key}: {path} is not the file run {out} was trained on (it has {given}, the run's had {before}, and the "
                f"contents differ): the run's models would mix two data sets. Point {key} at the run's file, or use a new output_dir."
            )


def assign_folds(frame: pd.DataFrame, cfg: Config, out: Path) -> tuple[pd.DataFrame, bool]:
    """Add the fold column; reuse ``folds.csv`` when the run already has one.

    Returns the frame and whether the folds are new (and so still to be written).

    Raises:
        ValueError: the run's ``folds.csv`` lists other ids than ``train_csv`` (a run moved and pointed
            at another file): its folds would not be the run's folds.
    """
    saved = RunFolder(out).read_folds()
    if saved is not None:
        if len(saved) == len(frame) and (saved["id"].to_numpy() == frame["id"].to_numpy()).all():
            return frame.assign(fold=saved["fold"].to_numpy()), False
        missing = sorted(set(saved["id"]) - set(frame["id"]))[:3] or sorted(set(frame["id"]) - set(saved["id"]))[:3]
        raise ValueError(
            f"train_csv: {cfg.train_csv} has other rows than the run's folds.csv in {out} ({len(frame)} rows vs {len(saved)}"
            f"{', e.g. id ' + repr(missing[0]) + ' is in one only' if missing else ', in another order'}): the run was "
            "trained on another file. Point train_csv at the run's file, or use a new output_dir."
        )
    frame = add_fold_column(frame, n_folds=cfg.n_folds, label_col="label", group_col="group", n_bins=cfg.fold_bins, seed=cfg.fold_seed)
    return frame, True


# Metrics undefined on a validation fold whose labels are all equal, and why.
_NEEDS_TWO_LABELS = {"pearson": "a correlation is undefined on a constant", "spearman": "a rank correlation is undefined on a constant",
                     "roc_auc": "ROC AUC needs both classes"}


def check_labels(frame: pd.DataFrame, cfg: Config, column: str, metric: Metric) -> None:
    """Refuse labels a model cannot learn or the metric cannot score, before anything is written.

    Every label equal: nothing to learn, whatever the metric. A validation fold whose labels are all
    equal: its score is undefined for the metrics of `_NEEDS_TWO_LABELS` (the fold would score 0 or NaN).

    Args:
        frame: the training rows with their folds (``label``, ``fold``, ``id``).
        cfg: the run configuration (``train_csv``, ``max_rows``, the fold settings, for the messages).
        column: the label's column in train_csv.
        metric: the CV metric.

    Raises:
        ValueError: naming the file and column (or the fold and its settings), the value and the fix.
    """
    labels = frame["label"].to_numpy(dtype=np.float64)
    if labels.min() == labels.max():
        rows = f"{len(labels)} rows{f' (max_rows={cfg.max_rows})' if cfg.max_rows else ''}"
        raise ValueError(
            f"train_csv: {cfg.train_csv} column {column!r}: every label is {labels[0]:g} ({rows}): a model cannot learn from one "
            f"value and {metric.name} cannot score it. Use the file with the real labels{', or a larger max_rows' if cfg.max_rows else ''}."
        )
    if metric.name not in _NEEDS_TWO_LABELS:
        return
    for fold, rows in frame.groupby("fold", sort=True):
        if rows["label"].nunique() == 1:
            raise ValueError(
                f"n_folds={cfg.n_folds}, fold_seed={cfg.fold_seed}: validation fold {fold} holds only the label "
                f"{rows['label'].iloc[0]:g} ({len(rows)} rows, e.g. id {rows['id'].iloc[0]!r}) and {_NEEDS_TWO_LABELS[metric.name]} "
                f"({metric.name}), so the fold cannot be scored. Use fewer folds (n_folds), stratify more finely (fold_bins), "
                "try another fold_seed, or score with another metric (metric=rmse)."
            )


def _finite_score(value: float, what: str, metric: Metric) -> float:
    """`value`, checked: a NaN or infinite score never reaches the run card (best-fold picks and the CV would be void)."""
    if not math.isfinite(value):
        raise ValueError(f"{what}: {metric.name} is {value}: the labels or predictions cannot be scored (all labels equal, or "
                         "a custom metric that returned NaN). Check the fold's labels and predictions, or use another metric.")
    return value


def derive_max_len(backbone: str, frame: pd.DataFrame, cap: int = 512, *, template: str = "") -> int:
    """The token length of the longest training pair (with special tokens), or of the longest prompt when a
    decoder's `template` is given, at most `cap` and the model's limit."""
    from kagglekit.data.prompts import prompt_lengths
    from kagglekit.models.pair_model import load_tokenizer

    tokenizer = load_tokenizer(backbone)
    if template:
        lengths = prompt_lengths(tokenizer, frame, template)
    else:
        lengths = [len(ids) for ids in tokenizer(list(frame["text_a"]), list(frame["text_b"]))["input_ids"]]
    limit = min(cap, getattr(tokenizer, "model_max_length", cap) or cap)
    return max(8, min(int(max(lengths)), limit))


def train_folds(cfg: Config, folds: str | int | Iterable[int | str] = "all", *, resume: bool = False) -> dict:
    """Train `folds` of the run described by `cfg`; returns the run card (also in ``run.json``).

    Each fold trains ``cfg.seeds`` models (seeds ``seed``, ``seed + 1`` ...: ``fold{K}/``, then
    ``fold{K}-seed{S}/``), one after the other; the fold's OOF prediction is their mean. ``"full"`` in
    `folds` then fits ``full/`` (and ``full-seed{S}/``) on every training row, for the length the
    run's complete CV folds chose (`full_length`).

    Args:
        cfg: the run configuration.
        folds: ``"all"``, a fold number, a list of them, with ``"full"`` alone or among them (`parse_fold_spec`).
        resume: skip the folds (and the full fit) already complete and the seeds of a fold already done,
            and continue an interrupted model from its saved state (scratch space first, then ``<output_dir>/resume``).

    With ``cfg.time_budget`` (seconds from this call's start; children of one fold per GPU get the
    deadline in ``KAGGLEKIT_DEADLINE``) a model that runs out of time saves its state into
    ``<output_dir>/resume`` and stops, models not started are left, and the call returns normally:
    the card's ``stopped`` names the folds left (``"full"`` for the full fit) and ``how`` to continue
    (also printed).

    Raises:
        ValueError: bad settings or data, ``wandb`` asked for but not installed, or ``"full"`` without a
            complete CV fold in the run or in `folds`; all before anything is written.

    Example:
        >>> from kagglekit.config import load_config
        >>> cfg = load_config("configs/uspppm.yaml", ["backbone=models/tiny-bert", "epochs=1"])
        >>> card = train_folds(cfg, folds=[0, 1, "full"])
        >>> card["cv"], card["full"]["epochs"]
    """
    from kagglekit.kaggle import describe_device, git_commit, gpu_info, library_versions, resolve_device, resolve_precision
    from kagglekit.metrics import get_metric
    from kagglekit.models.decoder import check_label_tokens, decoder_template
    from kagglekit.models.lora import check_lora_settings
    from kagglekit.models.pair_model import check_backbone
    from kagglekit.train.distill import read_teachers
    from kagglekit.train.parallel import default_launcher, plan, run_folds_parallel, visible_gpus

    start = time.time()
    cfg.validate()
    tracker = Tracker.create(cfg)  # wandb asked for but missing: fails here, before anything is written
    budget = Budget.start(cfg.time_budget)  # from this call's start, cut to a parent's deadline
    fold_list, full = parse_fold_spec(folds, cfg.n_folds)
    check_train_outputs(cfg, fold_list, full)  # outputs never overwrite, or go into, the inputs
    out = Path(cfg.output_dir)
    run = RunFolder(out)
    recipe = get_recipe(cfg.task)
    state = recipe.state(cfg)
    template = decoder_template(cfg, recipe)  # "" for an encoder; a decoder's prompt, which predict renders again
    if template:
        state["template"] = template
    frame = recipe.read_train(cfg.train_csv, state, max_rows=cfg.max_rows)
    fingerprint = {"train_csv": frame_digest(frame)}
    # weights complete, shapes = config.json, tokenizer = the embedding's, max_len within the positions: before anything is written
    positions = check_backbone(cfg.backbone, max_len=cfg.max_len)
    _check_same_config(cfg, out)  # early, before the work below; again under the lock where the run is claimed
    frame, new_folds = assign_folds(frame, cfg, out)  # before anything is written: bad input leaves no folder
    metric = get_metric(cfg.metric or recipe.metric)
    check_labels(frame, cfg, recipe.target_col, metric)
    extra = read_extra(cfg, recipe, state, frame)  # before the embedding model's copy: a bad file leaves no folder
    fingerprint["extra_train_csv"] = None if extra is None else frame_digest(extra)
    _check_same_data(cfg, out, fingerprint)
    if full and not fold_list:  # the full fit's length comes from complete CV folds
        full_length(run.read_card() if run.card_path.is_file() else {}, cfg, len(frame), run=out)
    device = resolve_device(cfg.device)
    check_lora_settings(cfg, device)  # peft there, lora_targets in the backbone, quantize on CUDA: before anything is written
    sources = feature_sources(cfg, recipe, state, frame, device)  # reads test_csv, checks embedding_model: writes nothing
    user_cfg = cfg  # what config.yaml keeps: max_len=0 stays "from the data", the derived value goes to the folds
    if template:  # likewise an empty template stays "the recipe's default"; the folds render the one resolved
        cfg = dataclasses.replace(cfg, template=template)
    if cfg.max_len == 0:
        cfg = dataclasses.replace(cfg, max_len=derive_max_len(cfg.backbone, frame, min(512, positions or 512), template=template))
        print(f"kagglekit: max_len=0: the longest training {'prompt' if template else 'pair'} has {cfg.max_len} tokens; "
              f"using max_len={cfg.max_len}", flush=True)
    precision = resolve_precision(cfg.precision, device)
    loss = get_loss(cfg.loss if cfg.loss != "auto" else default_loss(cfg.output, recipe.label_range), huber_delta=cfg.huber_delta)
    check_loss_output(loss, cfg.output)
    # every fold gets the same outputs: class values / bin centres come from all training rows
    target = make_target(cfg.output, frame["label"], num_bins=cfg.num_bins, label_range=recipe.label_range)
    check_label_tokens(cfg, target.num_outputs)  # head=token_logits: one token each, one per output
    # distillation: each model's teacher values obey the fold rule, checked for every model of the call before anything is written
    teacher = read_teachers(cfg, frame, target.kind, target.num_outputs, loss.activation, folds=fold_list, full=full)
    fingerprint["teacher_oof"] = None if teacher is None else teacher.digest  # every CV fold distils from the same values
    if full and not fold_list and run.card_path.is_file():  # the full fit alone may distil from others (the teacher's full fit)
        fingerprint["teacher_oof"] = (run.read_card().get("data_fingerprint") or {}).get("teacher_oof", fingerprint["teacher_oof"])
    meta = FoldMeta(task=recipe.name, id_col=recipe.id_col, target_col=recipe.target_col, max_len=cfg.max_len, loss=loss.name,
                    activation=loss.activation, output=target, metric=metric.name, recipe_state=state)
    gpus = visible_gpus() if device.type == "cuda" and len(fold_list) > 1 and cfg.parallel_folds else []
    parallel = len(gpus) >= 2  # one fold per GPU: the children claim their folds, this process only the full fit
    claims = FoldClaims(out, [*([] if parallel else [run.fold_dir(f).name for f in fold_list]), *([run.full_dir().name] if full else [])])
    frame, card = _claim_run(run, cfg, user_cfg, frame, fingerprint, claims, {
        "task": recipe.name,
        "config": user_cfg.to_dict(),
        "max_len": cfg.max_len,
        "versions": library_versions(),
        "device": describe_device(device),
        "gpu": gpu_info(device),  # name, memory_gib, capability, count, cuda; None off CUDA
        "git_commit": git_commit(),  # the working directory's repository; None outside one
        "kagglekit_commit": git_commit(Path(kagglekit.__file__).parent),  # the kit's source, when a checkout
        "precision": precision,
        "metric": metric.name,
        "higher_is_better": metric.higher_is_better,
        "loss": loss.name,
        "output": target.to_meta(),
    })
    try:
        featurize = computed_features(cfg, state, frame, out, device, sources, extra)
        call = _Call(cfg, run, frame, meta, metric, card["run_id"], device, precision, featurize, extra, budget, tracker, resume, start,
                     teacher)
        requested = [*fold_list, *([FULL] if full else [])]
        if resume:
            done = [f for f in requested if call.complete(f, card)]
            if done:
                print(f"kagglekit: --resume: {_spec_text(done)} are complete, skipping them", flush=True)
            fold_list, full = [f for f in fold_list if f not in done], full and FULL not in done
        seeds = f" ({cfg.seeds} seeds each: {cfg.seed}..{cfg.seed + cfg.seeds - 1})" if cfg.seeds > 1 else ""
        if parallel and len(fold_list) > 1:  # Kaggle's T4 x2: one fold per GPU, each in its own process (its seeds in turn) with its own log
            print(f"kagglekit: {len(frame)} rows, folds {fold_list}{seeds} on {len(gpus)} GPUs, one fold each: {plan(fold_list, gpus)}; "
                  f"logs in {run.logs_dir}", flush=True)
            launch = default_launcher(str(run.config_path), [], resume=resume, deadline=budget.deadline)
            run_folds_parallel(fold_list, gpus, launch, run.logs_dir, deadline=budget.deadline)
        else:  # --resume may leave a parallel call one fold: it trains here, claimed like any other
            print(f"kagglekit: {len(frame)} rows, {cfg.n_folds} folds, training {_spec_text([*fold_list, *([FULL] if full else [])])}{seeds} "
                  f"on {card['device']} ({precision}){f'; time_budget {format_duration(budget.left())} left' if budget.limited else ''}",
                  flush=True)
            _train_here(call, fold_list, FoldClaims(out, [run.fold_dir(f).name for f in fold_list]) if parallel else None)
        if full and all(call.complete(f, run.read_card()) for f in fold_list):  # after this call's folds, in this process
            call.train_full()
        return _close_call(call, requested)
    finally:
        with run.lock():
            claims.release()


def _train_here(call: _Call, fold_list: list[int], claims: FoldClaims | None) -> None:
    """Train `fold_list` one after the other in this process, holding `claims` too when given."""
    if claims is not None:
        with call.run.lock():
            claims.acquire()
    try:
        for fold in fold_list:
            if call.train_fold(fold) is None:  # the budget stopped it, or left no time to start it
                break
    finally:
        if claims is not None:
            with call.run.lock():
                claims.release()


def _claim_run(run: RunFolder, cfg: Config, user_cfg: Config, frame: pd.DataFrame, fingerprint: dict, claims: FoldClaims,
               fields: dict) -> tuple[pd.DataFrame, dict]:
    """Check that the run folder holds this run (or none) and claim it, as one step under its lock: of two
    processes that race with other settings, one writes the run and the other is refused having written
    nothing; with the same settings both go on, each with the folds it claimed. Then write ``config.yaml``,
    ``folds.csv`` (when the run has none) and the card's `fields`, ``run_id`` (once) and data fingerprint.

    Returns:
        The frame with the run's folds (those of ``folds.csv`` when another process wrote it first) and the card.

    Raises:
        ValueError: the run has other settings or data (`_check_same_config`, `assign_folds`, `_check_same_data`),
            or another process trains one of the claimed folds (`FoldClaims.acquire`).
    """
    run.path.mkdir(parents=True, exist_ok=True)
    with run.update_card() as card:  # holds the lock; an error in the block leaves the card unwritten
        _check_same_config(user_cfg, run.path)
        frame, new_folds = assign_folds(frame, cfg, run.path) if run.folds_path.is_file() else (frame, True)
        _check_same_data(cfg, run.path, fingerprint)
        claims.acquire()
        try:
            if new_folds:
                run.write_folds(frame)
            user_cfg.save(run.config_path)
            card.update(fields)
            card["run_id"] = card.get("run_id") or run_identity(user_cfg.to_dict(), frame)  # stored once: stable from then on
            card["data_fingerprint"] = fingerprint
        except BaseException:
            claims.release()
            raise
    return frame, card


def _spec_text(items: list) -> str:
    """``[0, 1, "full"]`` → ``fold(s) [0, 1] and the full fit``, for messages."""
    folds = [f for f in items if f != FULL]
    parts = ([f"fold(s) {folds}"] if folds else []) + (["the full fit"] if FULL in items else [])
    return " and ".join(parts) or "nothing"


@dataclass
class _Call:
    """What every model of one `train_folds` call shares, and how it trains a fold's seeds and the full fit."""

    cfg: Config
    run: RunFolder
    frame: pd.DataFrame
    meta: FoldMeta
    metric: Metric
    run_id: str
    device: object
    precision: str
    featurize: object
    extra: pd.DataFrame | None
    budget: Budget
    tracker: Tracker
    resume: bool
    start: float
    teacher: object = None  # kagglekit.train.distill.Teachers, or None

    def plans(self, fold: int | None, length: FullLength | None = None) -> list[ModelPlan]:
        """The models of CV fold `fold` (None: the full fit), one per seed, the run's own seed first."""
        from kagglekit.train.loop import ModelPlan

        plans = []
        for index in range(self.cfg.seeds):
            seed = self.cfg.seed + index
            named = None if index == 0 else seed  # the first seed's folder is fold{K}/ (full/), as with one seed
            folder = self.run.full_dir(named) if fold is None else self.run.fold_dir(fold, named)
            files = model_files(self.cfg.resume_dir, self.run.path, folder.name, self.run_id)
            record = files.kept.with_suffix(".json") if self.cfg.seeds > 1 else None
            meta = dataclasses.replace(self.meta, seed=named, full=fold is None)
            plans.append(ModelPlan(fold, seed, folder, files, meta, record, length))
        return plans

    def complete(self, item: int | str, card: dict) -> bool:
        """Whether fold `item` (or the full fit, ``"full"``) is complete: the run card has it, each seed's folder
        exists and no resume state is left (neither in scratch space nor in the run folder): a model a time
        budget stopped is not."""
        recorded = FULL in card if item == FULL else str(item) in card.get("folds", {})
        plans = self.plans(None if item == FULL else item)
        return recorded and all(p.folder.is_dir() and not p.files.exists() for p in plans)

    def started(self, item: int | str) -> list[ModelPlan]:
        """The models of fold `item` (or ``"full"``) that have a resume state or a kept result: the fold is mid-way."""
        return [p for p in self.plans(None if item == FULL else item) if p.files.exists() or (p.record is not None and p.record.is_file())]

    def train_model(self, plan: ModelPlan) -> FoldResult | None:
        """Train one model, or read its kept result when a resumed call finds it done; None when the time
        budget stopped it or left too little time to start it."""
        from kagglekit.train.loop import FoldResult, train_fold

        if self.resume and plan.record is not None and plan.record.is_file() and not plan.files.exists() and is_model_dir(plan.folder):
            print(f"kagglekit: --resume: {plan.label} is complete ({plan.folder}), its result kept in {plan.record}", flush=True)
            return FoldResult.from_json(json.loads(plan.record.read_text(encoding="utf-8")))
        if not self.budget.can_start():  # not even the margin left: the model would only start to stop
            return None
        try:
            with self.tracker.model_run(plan.folder.name) as log:
                result = train_fold(self.cfg, self.frame, plan, device=self.device, precision=self.precision,
                                    metric_name=self.metric.name, resume=self.resume, featurize=self.featurize, extra=self.extra,
                                    budget=self.budget, log=log, teacher=self.teacher)
                log.summary(**({"epochs": result.best_epoch, "steps": result.best_step} if plan.fold is None else
                               {"score": result.score, "best_epoch": result.best_epoch, "best_step": result.best_step}))
        except TimeBudgetReached:
            return None
        return result

    def train_models(self, plans) -> list | None:
        """Train `plans` (a fold's or the full fit's seeds) in turn; their results, or None when the budget stopped one."""
        results = []
        for plan in plans:
            result = self.train_model(plan)
            if result is None:
                return None
            results.append(result)
        return results

    def train_fold(self, fold: int) -> dict | None:
        """Train CV fold `fold`'s seeds in turn and record the fold; returns the run card, None when the budget stopped it."""
        plans = self.plans(fold)
        results = self.train_models(plans)
        if results is None:
            return None
        card = _record_fold(self.run, results, self.frame["id"], self.metric, self.start)
        _drop_records(plans)
        entry = card["folds"][str(fold)]
        seeds = f"; seeds {', '.join(f'{s}: {v:.4f}' for s, v in entry['seeds'].items())}" if len(results) > 1 else ""
        print(f"fold {fold}: {self.metric.name} {entry['score']:.4f} (epoch {entry['best_epoch']:g}{seeds}); "
              f"CV over folds {card['cv_folds']}: {card['cv']:.4f}", flush=True)
        return card

    def train_full(self) -> dict | None:
        """Fit every seed on all training rows for the length the complete CV folds chose; record it in the card
        as ``full``. Returns the card, None when the budget stopped it."""
        card = self.run.read_card()
        length = full_length(card, self.cfg, len(self.frame), run=self.run.path)
        folds = sorted(int(f) for f in card["folds"])
        how = (f"the mean best step of CV folds {folds} per training row ({length.steps_per_row:.4g}), times its rows (eval_every: "
               "the best evaluation may fall inside an epoch)" if length.steps_per_row is not None else
               f"{length.epochs} epoch(s), the mean best epoch of CV folds {folds} rounded half up")
        print(f"kagglekit: full fit ({self.cfg.seeds} seed(s)) on every training row for {how}", flush=True)
        plans = self.plans(None, length)
        results = self.train_models(plans)
        if results is None:
            return None
        with self.run.update_card() as card:
            card["full"] = {"epochs": results[0].best_epoch, "steps": results[0].best_step, "rows": results[0].train_rows,
                            "seconds": round(sum(r.seconds for r in results), 1), "seeds": [r.seed for r in results],
                            "from_folds": sorted(int(f) for f in card.get("folds", {}))}
        _drop_records(plans)
        return card


def model_files(resume_dir: str, output_dir: str | os.PathLike, name: str, run_id: str) -> ResumeFiles:
    """Where the model folder `name` (``fold0``, ``fold0-seed43``, ``full`` ...) keeps its resume state: ``<name>.pt``
    in the places `ResumeFiles.locate` gives a fold (so a fold's first seed keeps ``fold{K}.pt``)."""
    files = ResumeFiles.locate(resume_dir, output_dir, 0, run_id)
    return dataclasses.replace(files, work=files.work.with_name(f"{name}.pt"), kept=files.kept.with_name(f"{name}.pt"))


def _drop_records(plans: list[ModelPlan]) -> None:
    """Delete the kept results of a fold's seeds once the fold is recorded (and ``resume/`` when it becomes empty)."""
    for plan in plans:
        if plan.record is not None:
            plan.record.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                plan.record.parent.rmdir()  # only when empty: another model may be mid-way


def full_length(card: dict, cfg: Config, n_rows: int, *, run: str | os.PathLike = "") -> FullLength:
    """How long the full fit trains, from the complete CV folds in the run card.

    The epochs: the mean of their ``best_epoch``, rounded half up (at least 1). With ``eval_every`` the
    best evaluation can fall inside an epoch, so the fit counts steps instead: the mean of each fold's
    best step divided by its training rows, times the full fit's rows (`FullLength.resolve`).

    Args:
        card: the run card (``run.json``).
        cfg: the run configuration (``eval_every``).
        n_rows: the training file's rows: a fold recorded before cards held ``train_rows`` trained on
            those outside it.
        run: the run folder, named in the error.

    Raises:
        ValueError: no CV fold is complete.

    Example:
        >>> full_length({"folds": {"0": {"best_epoch": 2}, "1": {"best_epoch": 3}}}, cfg, 1000).epochs
        3
    """
    from kagglekit.train.loop import FullLength

    folds = card.get("folds") or {}
    if not folds:
        raise ValueError(f"--fold full: run {run} has no complete CV fold, and the full fit trains for the mean best epoch of the "
                         "CV folds. Train the CV folds first, in the same call (--fold all,full: the full fit runs after them) "
                         "or before it.")
    epochs = max(1, math.floor(statistics.mean(f["best_epoch"] for f in folds.values()) + 0.5))
    if not cfg.eval_every:
        return FullLength(epochs)
    per_row = [_best_step(f) / (f["train_rows"] if "train_rows" in f else n_rows - f["rows"]) for f in folds.values()]
    return FullLength(epochs, statistics.mean(per_row))


def _best_step(entry: dict) -> float:
    """A recorded fold's best step: its ``best_step``, or for a card written before that key, its last improving evaluation's."""
    if "best_step" in entry:
        return entry["best_step"]
    return [h["step"] for h in entry["history"] if h["improved"]][-1]


def _close_call(call: _Call, requested: list) -> dict:
    """Mark the run card incomplete while a fold (or the full fit) a time budget left is not complete, or
    clear the mark; print what is done, what stopped mid-way and how to continue. Returns the card.

    The folds left are this call's requested folds and those of an earlier stop, less the complete
    ones; all of it is read from the run folder, so the parent of one fold per GPU reports once for
    its children.
    """
    run, budget = call.run, call.budget
    with run.update_card() as card:
        earlier = (card.get("stopped") or {}).get("folds_left", [])
        left = sorted((f for f in set(requested) | set(earlier) if not call.complete(f, card)), key=lambda f: (f == FULL, 0 if f == FULL else f))
        if not left:
            card.pop("stopped", None)
            return card
        mid_way = [f for f in left if call.started(f)]
        cv_left = [f for f in left if f != FULL]
        spec = (["all"] if len(cv_left) == call.cfg.n_folds else cv_left) + ([FULL] if FULL in left else [])
        how = f"kagglekit train --config {run.config_path} --resume --fold {','.join(map(str, spec))}"
        card["stopped"] = {"reason": "time_budget", "time_budget": budget.seconds,
                           "folds_left": left, "mid_way": mid_way, "not_started": [f for f in left if f not in mid_way],
                           "how": how}
    complete = [*sorted(int(f) for f in card.get("folds", {}) if int(f) not in left), *([FULL] if FULL in card and FULL not in left else [])]
    where = ", ".join(f"{p.label}: {p.files.find()}" for f in mid_way for p in call.started(f) if p.files.exists())
    print(f"kagglekit: time_budget{f' ({format_duration(budget.seconds)})' if budget.seconds else ''}: the run is incomplete. "
          f"Complete: fold(s) {complete}; stopped mid-way: fold(s) {mid_way}{f' (state in {where})' if where else ''}; "
          f"not started: fold(s) {card['stopped']['not_started']}.\n"
          f"To continue in a new session:\n  command line: {how}\n"
          f"  notebook: attach this version's output and set RESUME_FROM to the run folder in it (…/{run.path.name})", flush=True)
    return card


def feature_sources(cfg: Config, recipe, state: dict, frame: pd.DataFrame, device) -> tuple | None:
    """What the computed features (co-occurrence, embedding cosine) are made from, read and checked before
    anything is written: (the co-occurrence graph of train + test, the ``embedding_model`` as given), either
    None when not asked for; None when no computed feature is. `computed_features` makes them.

    Co-occurrence counts the texts of train + test (never the labels); predict rebuilds the same graph
    from the training pairs kept in the model folder (recorded in `state`) and the test file it is given.
    """
    from kagglekit.data.features import CooccurrenceGraph

    if not cfg.computed_features():
        return None
    graph = source = None
    if cfg.cooccurrence:
        test = recipe.read_test(cfg.test_csv, state) if cfg.test_csv else None
        graph = CooccurrenceGraph(frame, test)
        state["cooccurrence_pairs"] = frame[["text_a", "text_b"]].to_numpy().tolist()
    if cfg.embedding_model:
        from kagglekit.models.embeddings import TextEmbedder

        source = TextEmbedder(cfg.embedding_model, cfg.embedding_pooling, max_len=cfg.embedding_max_len, device=device)  # checks the folder
    return graph, source


def computed_features(cfg: Config, state: dict, frame: pd.DataFrame, out: Path, device, sources: tuple | None,
                      extra: pd.DataFrame | None = None):
    """Add the computed features of `sources` (`feature_sources`) to `frame` (and `extra`) and record in
    `state` what predict needs to compute them again; returns the `ComputedFeatures`, or None.

    The embedding model is copied once into ``<run>/embedding_model`` and the features come from that
    copy, so training and predict use the very same weights; its encoder is released once every text
    of train and extra is embedded (augmented pairs reuse them).
    """
    from kagglekit.data.features import ComputedFeatures

    if sources is None:
        return None
    graph, source = sources
    embedder = None
    if source is not None:
        from kagglekit.models.embeddings import EMBEDDER_DIR, EMBEDDER_FILE, TextEmbedder

        copy = out / EMBEDDER_DIR
        with RunFolder(out).lock():  # folds on other GPUs may get here at the same moment
            if not (copy / EMBEDDER_FILE).is_file():
                print(f"kagglekit: embedding_model: copying {cfg.embedding_model} to {copy} (predict reads it from there)", flush=True)
                source.save(copy)
        embedder = TextEmbedder(copy, source.pooling, max_len=cfg.embedding_max_len, device=device)
        state["embedding_model"] = embedder.state(copy)
    featurize = ComputedFeatures(graph, embedder)
    featurize.add(frame)
    if embedder is not None:
        cos = frame["embedding_cosine"].to_numpy()
        print(f"kagglekit: embedding_cosine of {len(frame)} training pairs: mean {cos.mean():.3f}, std {cos.std():.3f}", flush=True)
    if extra is not None:
        featurize.add(extra)
    if embedder is not None:
        embedder.release()
    return featurize


def read_extra(cfg: Config, recipe, state: dict, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The rows of ``extra_train_csv`` (pseudo labels, external data), read like train_csv, or None.

    Labels may be soft (e.g. pseudo-label probabilities for a 0/1 task) but must lie in the task's
    label range. Their ids must not be ids of train_csv: a row is either labelled data (with a fold)
    or an extra (training folds only). `computed_features` adds the computed features.
    """
    if not cfg.extra_train_csv:
        return None
    extra_state = dict(state)
    binary = getattr(recipe, "label_type", None) == "binary"
    if binary:
        extra_state["label_type"] = "regression"  # soft labels are welcome; the range is checked below
    extra = get_recipe(cfg.task).read_train(cfg.extra_train_csv, extra_state, what="extra_train_csv")  # its own reader: settings stay the train file's
    low, high = recipe.label_range
    bad = ~extra["label"].between(low, high)
    if bad.any():
        raise ValueError(
            f"extra_train_csv: {cfg.extra_train_csv}: {int(bad.sum())} label(s) outside train_csv's range [{low:g}, {high:g}], "
            f"e.g. id {extra.loc[bad, 'id'].iloc[0]!r} with {float(extra.loc[bad, 'label'].iloc[0]):g}. Use labels in that range "
            "(probabilities for a 0/1 task)."
        )
    clash = sorted(set(extra["id"]) & set(frame["id"]))
    if clash:
        raise ValueError(
            f"extra_train_csv: {cfg.extra_train_csv}: {len(clash)} id(s) are also train_csv ids, e.g. {clash[:3]}. "
            "Extra rows must be new rows: give them their own ids (e.g. 'pseudo:<id>'), or drop those already in train_csv."
        )
    print(f"kagglekit: extra_train_csv: {len(extra)} rows with loss weight {cfg.extra_weight:g}, for the training folds", flush=True)
    return extra


def _record_fold(run: RunFolder, results: list[FoldResult], order: pd.Series, metric: Metric, start: float) -> dict:
    """Merge a finished fold (its seeds' results) into oof.csv and run.json, under the run folder's lock (other
    processes may be finishing other folds of the same run at the same moment); returns the updated card.

    With several seeds the fold's OOF prediction is their mean, by the rule predict averages a run's models
    with by default (`kagglekit.infer.predict.average_outputs`, ``average="prob"``): the mean of each
    model's predictions in the label's space, which the OOF predictions already are (probabilities for
    sigmoid outputs, expected values for classes and bins). The fold's score is that mean's;
    ``best_epoch`` and ``best_step`` are the seeds' means, ``history`` the first seed's.
    """
    first = results[0]
    oof, score = first.oof, first.score
    if len(results) > 1:
        assert all(r.oof["id"].tolist() == first.oof["id"].tolist() for r in results), "a fold's seeds predict the same rows"
        pred = np.mean([r.oof["pred"].to_numpy(dtype=np.float64) for r in results], axis=0)
        oof = first.oof.assign(pred=pred)
        score = float(metric.fn(oof["label"].to_numpy(), pred))
    score = _finite_score(score, f"run {run.path}, fold {first.fold}", metric)
    with run.update_card() as card:
        merged = merge_oof(run.read_oof(check=False) if run.oof_path.is_file() else None, oof, order)
        cv = float(metric.fn(merged["label"].to_numpy(), merged["pred"].to_numpy())) if merged["fold"].nunique() > 1 else score
        _finite_score(cv, f"run {run.path}, the CV over folds {sorted(int(f) for f in merged['fold'].unique())}", metric)
        run.merge_oof(oof, order)
        card["folds"][str(first.fold)] = {
            "score": score,
            "best_epoch": statistics.mean(r.best_epoch for r in results),  # an int for one seed
            "best_step": statistics.mean(r.best_step for r in results),
            "rows": len(oof),
            "train_rows": first.train_rows,
            "seconds": round(sum(r.seconds for r in results), 1),
            "history": first.history,
            "surgery": first.surgery,
            "augmentation": first.augmentation,
            "seeds": {str(r.seed): r.score for r in results},
        }
        card["cv"] = cv
        card["cv_folds"] = sorted(int(f) for f in merged["fold"].unique())
        card["timings"] = {"last_call_seconds": round(time.time() - start, 1), "fold_seconds": {k: v["seconds"] for k, v in card["folds"].items()}}
    return card
