"""Train a run: read the data, fix the folds, train the requested folds, keep the run folder current.

After every fold the run folder is complete and consistent: ``config.yaml``, ``folds.csv``,
``fold{K}/``, ``oof.csv`` (all folds trained so far) and ``run.json`` (see `kagglekit.run`). Folds may
be trained in separate processes or notebooks (``--fold 0``, then ``--fold 1`` ...) into the same folder,
and in later sessions after the folder moved: paths are not part of a run (`kagglekit.train.session`).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Iterable

import pandas as pd
import kagglekit
from kagglekit.config import Config, changed_keys
from kagglekit.data.recipes import get_recipe
from kagglekit.folds import add_fold_column
from kagglekit.losses import check_loss_output, default_loss, get_loss
from kagglekit.run import FoldMeta, RunFolder
from kagglekit.targets import make_target
from kagglekit.train.session import Budget, TimeBudgetReached, format_duration, frame_digest, run_identity
from kagglekit.train.state import ResumeFiles


def parse_folds(folds: str | int | Iterable[int], n_folds: int) -> list[int]:
    """``"all"`` → every fold; ``3`` or ``"3"`` → [3]; ``"1,3"`` → [1, 3]; a list passes through. Checked against n_folds."""
    if isinstance(folds, str):
        if folds == "all":
            return list(range(n_folds))
        parts = [part.strip() for part in folds.split(",")]
        if not all(part.isdigit() for part in parts):
            raise ValueError(f"--fold {folds!r}: expected a fold number 0..{n_folds - 1}, a list such as 1,3, or 'all'.")
        folds = [int(part) for part in parts]
    out = [folds] if isinstance(folds, int) else [int(f) for f in folds]
    for fold in out:
        if not 0 <= fold < n_folds:
            raise ValueError(f"--fold {fold}: out of range for n_folds={n_folds}; use 0..{n_folds - 1} or 'all'.")
    return out


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
                f"contents differ): its folds would mix two data sets. Point {key} at the run's file, or use a new output_dir."
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


def derive_max_len(backbone: str, frame: pd.DataFrame, cap: int = 512) -> int:
    """The token length of the longest training pair (with special tokens), at most `cap` and the model's limit."""
    from kagglekit.models.pair_model import load_tokenizer

    tokenizer = load_tokenizer(backbone)
    lengths = [len(ids) for ids in tokenizer(list(frame["text_a"]), list(frame["text_b"]))["input_ids"]]
    limit = min(cap, getattr(tokenizer, "model_max_length", cap) or cap)
    return max(8, min(max(lengths), limit))


def train_folds(cfg: Config, folds: str | int | Iterable[int] = "all", *, resume: bool = False) -> dict:
    """Train `folds` of the run described by `cfg`; returns the run card (also in ``run.json``).

    Args:
        cfg: the run configuration.
        folds: ``"all"``, a fold number or a list of them.
        resume: skip the folds already complete, and continue an interrupted one from its saved state
            (scratch space first, then ``<output_dir>/resume``).

    With ``cfg.time_budget`` (seconds from this call's start; children of one fold per GPU get the
    deadline in ``KAGGLEKIT_DEADLINE``) a fold that runs out of time saves its state into
    ``<output_dir>/resume`` and stops, folds not started are left, and the call returns normally:
    the card's ``stopped`` names the folds left and ``how`` to continue (also printed).

    Example:
        >>> from kagglekit.config import load_config
        >>> cfg = load_config("configs/uspppm.yaml", ["backbone=models/tiny-bert", "epochs=1"])
        >>> card = train_folds(cfg, folds=0)
        >>> card["cv"]
    """
    from kagglekit.kaggle import describe_device, git_commit, gpu_info, library_versions, resolve_device, resolve_precision
    from kagglekit.metrics import get_metric
    from kagglekit.models.pair_model import check_backbone
    from kagglekit.train.loop import train_fold
    from kagglekit.train.parallel import default_launcher, plan, run_folds_parallel, visible_gpus

    start = time.time()
    cfg.validate()
    budget = Budget.start(cfg.time_budget)  # from this call's start, cut to a parent's deadline
    fold_list = parse_folds(folds, cfg.n_folds)
    out = Path(cfg.output_dir)
    run = RunFolder(out)
    recipe = get_recipe(cfg.task)
    state = recipe.state(cfg)
    frame = recipe.read_train(cfg.train_csv, state, max_rows=cfg.max_rows)
    fingerprint = {"train_csv": frame_digest(frame)}
    check_backbone(cfg.backbone)  # weights, tokenizer files, tokenizer ids vs embedding rows: before anything is written
    _check_same_config(cfg, out)
    frame, new_folds = assign_folds(frame, cfg, out)  # before anything is written: bad input leaves no folder
    extra = read_extra(cfg, recipe, state, frame)  # before the embedding model's copy: a bad file leaves no folder
    fingerprint["extra_train_csv"] = None if extra is None else frame_digest(extra)
    _check_same_data(cfg, out, fingerprint)
    device = resolve_device(cfg.device)
    featurize = computed_features(cfg, recipe, state, frame, out, device)
    if featurize is not None:
        if extra is not None:
            featurize.add(extra)
        if featurize.embedder is not None:
            featurize.embedder.release()  # every text of train and extra is embedded; augmented pairs reuse them
    user_cfg = cfg  # what config.yaml keeps: max_len=0 stays "from the data", the derived value goes to the folds
    if cfg.max_len == 0:
        cfg = dataclasses.replace(cfg, max_len=derive_max_len(cfg.backbone, frame))
        print(f"kagglekit: max_len=0: the longest training pair has {cfg.max_len} tokens; using max_len={cfg.max_len}", flush=True)
    precision = resolve_precision(cfg.precision, device)
    metric = get_metric(cfg.metric or recipe.metric)
    loss = get_loss(cfg.loss if cfg.loss != "auto" else default_loss(cfg.output, recipe.label_range), huber_delta=cfg.huber_delta)
    check_loss_output(loss, cfg.output)
    # every fold gets the same outputs: class values / bin centres come from all training rows
    target = make_target(cfg.output, frame["label"], num_bins=cfg.num_bins, label_range=recipe.label_range)
    meta = FoldMeta(task=recipe.name, id_col=recipe.id_col, target_col=recipe.target_col, max_len=cfg.max_len, loss=loss.name,
                    activation=loss.activation, output=target, metric=metric.name, recipe_state=state)
    out.mkdir(parents=True, exist_ok=True)
    if new_folds:
        run.write_folds(frame)
    user_cfg.save(run.config_path)

    with run.update_card() as card:
        card.update(
            {
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
            }
        )
        card["run_id"] = card.get("run_id") or run_identity(user_cfg.to_dict(), frame)  # stored once: stable from then on
        card["data_fingerprint"] = fingerprint
    files = {f: ResumeFiles.locate(cfg.resume_dir, out, f, card["run_id"]) for f in range(cfg.n_folds)}
    requested = fold_list
    if resume:
        done = [f for f in fold_list if _fold_complete(run, f, card, files[f])]
        if done:
            print(f"kagglekit: --resume: fold(s) {done} are complete, skipping them", flush=True)
        fold_list = [f for f in fold_list if f not in done]
    gpus = visible_gpus() if device.type == "cuda" and len(fold_list) > 1 and cfg.parallel_folds else []
    if len(gpus) >= 2:  # Kaggle's T4 x2: one fold per GPU, each in its own process with its own log
        print(f"kagglekit: {len(frame)} rows, folds {fold_list} on {len(gpus)} GPUs, one fold each: {plan(fold_list, gpus)}; "
              f"logs in {run.logs_dir}", flush=True)
        launch = default_launcher(str(run.config_path), [], resume=resume, deadline=budget.deadline)
        run_folds_parallel(fold_list, gpus, launch, run.logs_dir, deadline=budget.deadline)
        return _close_call(run, requested, files, budget)
    print(f"kagglekit: {len(frame)} rows, {cfg.n_folds} folds, training fold(s) {fold_list} on {card['device']} ({precision})"
          f"{f'; time_budget {format_duration(budget.left())} left' if budget.limited else ''}", flush=True)
    for fold in fold_list:
        if not budget.can_start():  # not even the margin left: the fold would only start to stop
            break
        try:
            result = train_fold(cfg, frame, fold, run.fold_dir(fold), device=device, precision=precision, meta=meta,
                                metric_name=metric.name, resume=resume, featurize=featurize, extra=extra,
                                files=files[fold], budget=budget)
        except TimeBudgetReached:
            break
        card = _record_fold(run, result, frame["id"], metric, start)
        print(f"fold {fold}: {metric.name} {result.score:.4f} (epoch {result.best_epoch}); CV over folds {card['cv_folds']}: {card['cv']:.4f}", flush=True)
    return _close_call(run, requested, files, budget)


def _close_call(run: RunFolder, requested: list[int], files: dict[int, ResumeFiles], budget: Budget) -> dict:
    """Mark the run card incomplete while a fold a time budget left is not complete, or clear the mark;
    print what is done, what stopped mid-way and how to continue. Returns the card.

    The folds left are this call's requested folds and those of an earlier stop, less the complete
    ones; all of it is read from the run folder, so the parent of one fold per GPU reports once for
    its children.
    """
    with run.update_card() as card:
        earlier = (card.get("stopped") or {}).get("folds_left", [])
        left = sorted(f for f in set(requested) | set(earlier) if not _fold_complete(run, f, card, files[f]))
        if not left:
            card.pop("stopped", None)
            return card
        mid_way = [f for f in left if files[f].exists()]
        folds = "all" if len(left) == len(files) else ",".join(map(str, left))
        how = f"kagglekit train --config {run.config_path} --resume --fold {folds}"
        card["stopped"] = {"reason": "time_budget", "time_budget": budget.seconds,
                           "folds_left": left, "mid_way": mid_way, "not_started": [f for f in left if f not in mid_way],
                           "how": how}
    complete = sorted(int(f) for f in card.get("folds", {}) if int(f) not in left)
    where = ", ".join(f"fold {f}: {files[f].find()}" for f in mid_way)
    print(f"kagglekit: time_budget{f' ({format_duration(budget.seconds)})' if budget.seconds else ''}: the run is incomplete. "
          f"Complete: fold(s) {complete}; stopped mid-way: fold(s) {mid_way}{f' (state in {where})' if where else ''}; "
          f"not started: fold(s) {card['stopped']['not_started']}.\n"
          f"To continue in a new session:\n  command line: {how}\n"
          f"  notebook: attach this version's output and set RESUME_FROM to the run folder in it (…/{run.path.name})", flush=True)
    return card


def computed_features(cfg: Config, recipe, state: dict, frame: pd.DataFrame, out: Path, device):
    """Add the features the kit computes (co-occurrence, embedding cosine) to `frame` and record in
    `state` what predict needs to compute them again; returns the `ComputedFeatures`, or None.

    Co-occurrence counts the texts of train + test (never the labels); predict rebuilds the same graph
    from the training pairs kept in the model folder and the test file it is given. The embedding
    model is copied once into ``<run>/embedding_model`` and the features come from that copy, so
    training and predict use the very same weights.
    """
    from kagglekit.data.features import ComputedFeatures, CooccurrenceGraph

    if not cfg.computed_features():
        return None
    graph = embedder = None
    if cfg.cooccurrence:
        test = recipe.read_test(cfg.test_csv, state) if cfg.test_csv else None
        graph = CooccurrenceGraph(frame, test)
        state["cooccurrence_pairs"] = frame[["text_a", "text_b"]].to_numpy().tolist()
    if cfg.embedding_model:
        from kagglekit.models.embeddings import EMBEDDER_DIR, EMBEDDER_FILE, TextEmbedder

        source = TextEmbedder(cfg.embedding_model, cfg.embedding_pooling, max_len=cfg.embedding_max_len, device=device)  # checks the folder
        copy = out / EMBEDDER_DIR
        out.mkdir(parents=True, exist_ok=True)
        with RunFolder(out).lock():  # folds on other GPUs may get here at the same moment
            if not (copy / EMBEDDER_FILE).is_file():
                print(f"kagglekit: embedding_model: copying {cfg.embedding_model} to {copy} (predict reads it from there)", flush=True)
                source.save(copy)
        embedder = TextEmbedder(copy, source.pooling, max_len=cfg.embedding_max_len, device=device)
        state["embedding_model"] = embedder.state(copy)
        del source
    featurize = ComputedFeatures(graph, embedder)
    featurize.add(frame)
    if embedder is not None:
        cos = frame["embedding_cosine"].to_numpy()
        print(f"kagglekit: embedding_cosine of {len(frame)} training pairs: mean {cos.mean():.3f}, std {cos.std():.3f}", flush=True)
    return featurize


def read_extra(cfg: Config, recipe, state: dict, frame: pd.DataFrame) -> pd.DataFrame | None:
    """The rows of ``extra_train_csv`` (pseudo labels, external data), read like train_csv, or None.

    Labels may be soft (e.g. pseudo-label probabilities for a 0/1 task) but must lie in the task's
    label range. Their ids must not be ids of train_csv: a row is either labelled data (with a fold)
    or an extra (training folds only). The caller adds the computed features (`computed_features`).
    """
    if not cfg.extra_train_csv:
        return None
    extra_state = dict(state)
    binary = getattr(recipe, "label_type", None) == "binary"
    if binary:
        extra_state["label_type"] = "regression"  # soft labels are welcome; the range is checked below
    extra = get_recipe(cfg.task).read_train(cfg.extra_train_csv, extra_state)  # its own reader: settings stay the train file's
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


def _fold_complete(run: RunFolder, fold: int, card: dict, files: ResumeFiles) -> bool:
    """A fold is complete when the run card has its score, its model folder exists and no resume state is
    left (neither in scratch space nor in the run folder): a fold a time budget stopped is not."""
    return str(fold) in card.get("folds", {}) and run.fold_dir(fold).is_dir() and not files.exists()


def _record_fold(run: RunFolder, result, order: pd.Series, metric, start: float) -> dict:
    """Merge a finished fold into oof.csv and run.json, under the run folder's lock (other processes may
    be finishing other folds of the same run at the same moment); returns the updated card."""
    with run.update_card() as card:
        oof = run.merge_oof(result.oof, order)
        card["folds"][str(result.fold)] = {
            "score": result.score,
            "best_epoch": result.best_epoch,
            "rows": len(result.oof),
            "seconds": round(result.seconds, 1),
            "history": result.history,
            "surgery": result.surgery,
            "augmentation": result.augmentation,
        }
        card["cv"] = float(metric.fn(oof["label"].to_numpy(), oof["pred"].to_numpy())) if oof["fold"].nunique() > 1 else result.score
        card["cv_folds"] = sorted(int(f) for f in oof["fold"].unique())
        card["timings"] = {"last_call_seconds": round(time.time() - start, 1), "fold_seconds": {k: v["seconds"] for k, v in card["folds"].items()}}
    return card
