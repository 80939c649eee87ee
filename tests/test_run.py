"""The run folder module: FoldMeta round trips, fold discovery (seeds, full fits), the locked run card, OOF merge;
and kagglekit merge over seed and full-fit folders."""

import dataclasses
import json
import multiprocessing
import threading
import time

import numpy as np
import pandas as pd
import pytest

from kagglekit.run import (CARD_FILE, META_FILE, OOF_FILE, FoldMeta, ModelDirName, RunFolder, find_fold_dirs, find_model_dirs,
                           fold_dirs, fold_number, full_dirs, merge_oof, parse_model_dir_name)
from kagglekit.targets import Target
from kagglekit.tools.merge import merge_runs

FULL = FoldMeta(
    task="pairs", max_len=48, activation="expected", id_col="pair_id", target_col="similarity", loss="soft_ce",
    output=Target("bins", (0.0, 0.25, 0.5, 0.75, 1.0)), metric="pearson", recipe_state={"label_scale": 5.0, "features": ["a"]},
    model={"head": "mean", "num_outputs": 5}, fold=2, score=0.8125, epoch=3, step=120, kagglekit_version="0.9.0",
)
# kagglekit.json as save_model_folder wrote it before FoldMeta (and as tests and benchmarks still write it): no id/target
# columns, loss, output, metric or recipe state
OLD = {"format": 1, "kagglekit_version": "0.3.0", "task": "uspppm", "max_len": 32, "activation": "sigmoid",
       "model": {"head": "mean", "num_outputs": 1, "dropout": [0.1], "msd_samples": 1, "msd_average": "logits",
                 "head_options": {}, "feature_names": []}}


# ---------------------------------------------------------------------------------------------- FoldMeta


def test_fold_meta_round_trips_through_json_text():
    payload = json.loads(json.dumps(FULL.to_json()))
    assert FoldMeta.from_json(payload) == FULL
    assert payload["output"] == {"kind": "bins", "values": [0.0, 0.25, 0.5, 0.75, 1.0]}
    assert list(payload)[:3] == ["format", "kagglekit_version", "task"] and list(payload)[-1] == "model"


def test_an_old_kagglekit_json_reads_with_todays_defaults_and_writes_back_unchanged():
    meta = FoldMeta.from_json(OLD)
    assert (meta.task, meta.max_len, meta.activation) == ("uspppm", 32, "sigmoid")
    assert (meta.id_col, meta.target_col, meta.loss, meta.metric) == ("id", "label", None, None)
    assert meta.output == Target() and meta.output.values == () and meta.recipe_state == {}
    assert (meta.fold, meta.score, meta.epoch, meta.step) == (None, None, None, None)
    assert meta.to_json() == {**OLD, "id_col": "id", "target_col": "label", "output": {"kind": "single", "values": []},
                              "recipe_state": {}}


def test_unknown_keys_are_kept_and_written_back():
    meta = FoldMeta.from_json({**OLD, "note": "pseudo labels v2"})
    assert meta.extra == {"note": "pseudo labels v2"} and meta.to_json()["note"] == "pseudo labels v2"


@pytest.mark.parametrize("drop", ["task", "max_len", "activation"])
def test_a_missing_required_key_is_refused_naming_the_file_and_key(tmp_path, drop):
    folder = tmp_path / "fold0"
    folder.mkdir()
    (folder / META_FILE).write_text(json.dumps({k: v for k, v in OLD.items() if k != drop}))
    with pytest.raises(ValueError, match=rf"{folder / META_FILE}: lacks the key\(s\) \['{drop}'\]"):
        FoldMeta.read(folder)


def test_reading_a_folder_checks_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} is not a kagglekit model folder: {META_FILE} is missing"):
        FoldMeta.read(tmp_path)
    (tmp_path / META_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FoldMeta.read(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps({k: v for k, v in OLD.items() if k != "model"}))
    with pytest.raises(ValueError, match="lacks the key 'model'"):
        FoldMeta.read(tmp_path)
    (tmp_path / META_FILE).write_text(json.dumps(OLD))
    assert FoldMeta.read(tmp_path).model == OLD["model"]


def test_a_checkpoint_stamp_round_trips_and_dicts_are_refused(tmp_path):
    stamped = dataclasses.replace(FULL, fold=3, score=0.81, epoch=4, step=120)  # what train_fold stores per checkpoint
    again = FoldMeta.from_json(json.loads(json.dumps(stamped.to_json())))
    assert again == stamped and (again.fold, again.score, again.epoch, again.step) == (3, 0.81, 4, 120)
    with pytest.raises(TypeError):
        FULL["loss"]  # no dict view: attributes only


def test_seed_and_full_fields_round_trip_and_a_fold_model_writes_neither_default():
    seeded = dataclasses.replace(FULL, seed=43)
    full = dataclasses.replace(FULL, fold=None, seed=7, full=True, epoch=3)
    for meta in (seeded, full):
        again = FoldMeta.from_json(json.loads(json.dumps(meta.to_json())))
        assert again == meta and (again.seed, again.full, again.fold) == (meta.seed, meta.full, meta.fold)
    assert full.to_json()["full"] is True and "fold" not in full.to_json() and full.to_json()["seed"] == 7
    assert "full" not in FULL.to_json() and "seed" not in FULL.to_json()  # a plain fold's file is as before
    old = FoldMeta.from_json(OLD)
    assert (old.seed, old.full) == (None, False)


# ---------------------------------------------------------------------------------------------- fold discovery


@pytest.mark.parametrize("name, parsed", [
    ("fold0", (0, None, False)), ("fold12", (12, None, False)), ("fold3-seed43", (3, 43, False)),
    ("full", (None, None, True)), ("full-seed7", (None, 7, True)),
    ("fold", None), ("fold-1", None), ("fold2-seed", None), ("fold2_seed3", None), ("full2", None), ("fold2-seed3x", None),
    ("Fold2", None), ("fullseed3", None),
])
def test_model_folder_names_parse(name, parsed):
    got = parse_model_dir_name(name)
    assert got == (None if parsed is None else ModelDirName(*parsed))
    assert fold_number(f"/runs/x/{name}") == (parsed[0] if parsed else None)


def test_seed_folders_are_fold_members_and_full_fits_are_apart(tmp_path):
    for name in ("fold1-seed43", "fold10", "full-seed43", "fold0-seed43", "fold1", "full", "fold0", "fold1-seed7", "full-seed3"):
        _model_dir(tmp_path / name)
    (tmp_path / "fold2-seed43").mkdir()  # a seed still training
    assert [p.name for p in fold_dirs(tmp_path)] == ["fold0", "fold0-seed43", "fold1", "fold1-seed7", "fold1-seed43", "fold10"]
    assert [p.name for p in fold_dirs(tmp_path, fold=1)] == ["fold1", "fold1-seed7", "fold1-seed43"]
    assert [p.name for p in fold_dirs(tmp_path, complete=False, fold=2)] == ["fold2-seed43"]
    assert [p.name for p in full_dirs(tmp_path)] == ["full", "full-seed3", "full-seed43"]
    folds, full = find_model_dirs(tmp_path)
    assert folds == fold_dirs(tmp_path) and full == full_dirs(tmp_path) and find_fold_dirs(tmp_path) == folds
    assert find_model_dirs(tmp_path / "full-seed3") == ([], [tmp_path / "full-seed3"])  # a full fit given on its own
    assert find_model_dirs(tmp_path / "fold1-seed7") == ([tmp_path / "fold1-seed7"], [])
    run = RunFolder(tmp_path)
    assert (run.fold_dir(1), run.fold_dir(1, seed=7), run.full_dir(), run.full_dir(seed=3)) == (
        tmp_path / "fold1", tmp_path / "fold1-seed7", tmp_path / "full", tmp_path / "full-seed3")
    assert run.fold_dirs(fold=0) == [tmp_path / "fold0", tmp_path / "fold0-seed43"] and run.full_dirs() == full


def test_a_run_of_only_full_fits_has_no_fold_for_the_fold_finders(tmp_path):
    _model_dir(tmp_path / "full")
    assert find_model_dirs(tmp_path) == ([], [tmp_path / "full"])
    with pytest.raises(FileNotFoundError, match=r"holds only full fits \(full\*/\), no trained fold"):
        find_fold_dirs(tmp_path)



def _model_dir(folder):
    folder.mkdir(parents=True)
    (folder / META_FILE).write_text(json.dumps(OLD))
    return folder


def test_folds_are_the_fold_folders_holding_kagglekit_json_sorted_by_number(tmp_path):
    for k in (10, 2, 0, 1):
        _model_dir(tmp_path / f"fold{k}")
    (tmp_path / "fold3").mkdir()  # a fold still training, or copied without its meta
    _model_dir(tmp_path / "fold_old")  # not fold{K}
    (tmp_path / "fold4").write_text("a file, not a folder")
    names = [p.name for p in find_fold_dirs(tmp_path)]
    assert names == ["fold0", "fold1", "fold2", "fold10"]  # by number: fold10 after fold2
    assert [p.name for p in fold_dirs(tmp_path, complete=False)] == ["fold0", "fold1", "fold2", "fold3", "fold10"]
    assert find_fold_dirs(tmp_path / "fold2") == [tmp_path / "fold2"]  # a model folder is its own only fold


def test_find_fold_dirs_names_the_option_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"--models: folder not found"):
        find_fold_dirs(tmp_path / "missing")
    (tmp_path / "fold0").mkdir()
    with pytest.raises(FileNotFoundError, match=r"run_dir: .* holds no trained fold \(no fold\*/kagglekit.json\)"):
        find_fold_dirs(tmp_path, what="run_dir")
    assert fold_dirs(tmp_path / "missing") == []


# ---------------------------------------------------------------------------------------------- the run card


def _add_fold(path, fold, pause):
    with RunFolder(path).update_card() as card:
        time.sleep(pause)  # read ... write: without the lock another writer's fold would be lost here
        card["folds"][str(fold)] = {"score": fold / 10}


def test_card_updates_from_many_threads_lose_no_fold(tmp_path):
    threads = [threading.Thread(target=_add_fold, args=(tmp_path, k, 0.02)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    card = json.loads((tmp_path / CARD_FILE).read_text())
    assert sorted(int(k) for k in card["folds"]) == list(range(8)) and card["folds"]["7"] == {"score": 0.7}


def _add_folds(path, folds):
    for fold in folds:
        _add_fold(path, fold, 0.01)


def test_card_updates_from_two_processes_lose_no_fold(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_folds, args=(tmp_path, range(start, 10, 2))) for start in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert sorted(int(k) for k in RunFolder(tmp_path).read_card()["folds"]) == list(range(10))


def test_a_failed_update_leaves_the_card_as_it_was(tmp_path):
    run = RunFolder(tmp_path)
    with run.update_card() as card:
        card["cv"] = 0.5
    with pytest.raises(RuntimeError):
        with run.update_card() as card:
            card["cv"] = 0.9
            raise RuntimeError("fold crashed")
    assert run.read_card() == {"folds": {}, "cv": 0.5}
    with pytest.raises(FileNotFoundError, match=rf"ensemble: {tmp_path / 'x' / CARD_FILE} not found"):
        RunFolder(tmp_path / "x").read_card(what="ensemble")


# ---------------------------------------------------------------------------------------------- OOF


def _oof(ids, fold, seed):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": ids, "fold": fold, "label": rng.random(len(ids)), "pred": rng.random(len(ids))})


def test_merging_folds_keeps_the_training_row_order_and_replaces_a_retrained_fold(tmp_path):
    order = pd.Series([f"r{i}" for i in range(10)])
    folds = {0: ["r7", "r1", "r4"], 1: ["r0", "r9", "r5", "r2"], 2: ["r8", "r3", "r6"]}
    run = RunFolder(tmp_path)
    for fold in (2, 0):
        run.merge_oof(_oof(folds[fold], fold, fold), order)
    retrained = _oof(folds[0], 0, seed=99)
    merged = run.merge_oof(retrained, order)
    merged = run.merge_oof(_oof(folds[1], 1, 1), order)
    assert merged["id"].tolist() == order.tolist()  # every row once, in the training frame's order
    on_disk = run.read_oof()
    pd.testing.assert_frame_equal(on_disk, merged, check_dtype=False)
    got = on_disk.set_index("id").loc[folds[0], "pred"].to_numpy()
    assert np.allclose(got, retrained["pred"].to_numpy())  # fold 0's second training replaced its first
    assert (on_disk.set_index("id").loc[folds[2], "fold"] == 2).all()


def test_merge_oof_puts_unknown_ids_last_in_arrival_order():
    merged = merge_oof(None, _oof(["x", "b", "y", "a"], 0, 0), ["a", "b"])
    assert merged["id"].tolist() == ["a", "b", "x", "y"]


def test_read_oof_refuses_duplicates_and_non_finite_values(tmp_path):
    run = RunFolder(tmp_path)
    frame = _oof(["a", "b", "a"], 0, 0)
    frame.to_csv(tmp_path / OOF_FILE, index=False)
    with pytest.raises(ValueError, match=r"1 duplicated id\(s\), e.g. \['a'\]"):
        run.read_oof()
    assert len(run.read_oof(check=False)) == 3
    frame.assign(id=["a", "b", "c"], pred=[0.1, np.nan, 0.3]).to_csv(tmp_path / OOF_FILE, index=False)
    with pytest.raises(ValueError, match=r"NaN or infinite label/pred in 1 row\(s\), e.g. ids \['b'\]"):
        run.read_oof()


# ---------------------------------------------------------------------------------------------- merge: seeds and full fits


def _session(root, name, folds, *, full=(), seeds=(43,), card_full=None):
    """A hand-made run of one session: config, folds.csv, oof.csv, a card, and fold{K}/ + fold{K}-seed{S}/ + full*/ folders."""
    run = RunFolder(root / name / "run")
    run.path.mkdir(parents=True)
    ids = [f"r{i}" for i in range(8)]
    run.config_path.write_text(f"task: uspppm\nseeds: {1 + len(seeds)}\noutput_dir: {run.path}\n")
    run.write_folds(pd.DataFrame({"id": ids, "fold": [i % 2 for i in range(8)]}))
    rows = [i for i in range(8) if i % 2 in folds]
    rng = np.random.default_rng(len(name))
    run.oof_path.write_text(pd.DataFrame({"id": [ids[i] for i in rows], "fold": [i % 2 for i in rows], "label": rng.random(len(rows)),
                                          "pred": rng.random(len(rows))}).to_csv(index=False))
    card = {"metric": "pearson", "folds": {str(k): {"score": 0.5, "seeds": {"42": 0.5, **{str(s): 0.5 for s in seeds}}} for k in folds}}
    if card_full:
        card["full"] = card_full
    run.write_card(card)
    for k in folds:
        for seed in (None, *seeds):
            (_model_dir(run.fold_dir(k, seed)) / "weights.txt").write_text(f"{k}-{seed}")
    for seed in full:
        (_model_dir(run.full_dir(seed)) / "weights.txt").write_text(f"full-{seed}")
    return run.path


def test_merge_copies_every_seed_of_each_fold_and_the_full_fits_with_their_card_entry(tmp_path):
    s0 = _session(tmp_path, "s0", [0])
    s1 = _session(tmp_path, "s1", [1], full=(None, 43), card_full={"epochs": 2, "seeds": [42, 43]})
    card = merge_runs([s0, s1], tmp_path / "merged")
    merged = RunFolder(tmp_path / "merged")
    assert [p.name for p in merged.fold_dirs()] == ["fold0", "fold0-seed43", "fold1", "fold1-seed43"]
    assert [p.name for p in merged.full_dirs()] == ["full", "full-seed43"]
    for folder in merged.fold_dirs() + merged.full_dirs():  # each copied from the run that trained it
        source = (s0 if folder.name.startswith("fold0") else s1) / folder.name
        assert (folder / "weights.txt").read_text() == (source / "weights.txt").read_text()
    assert card["full"] == {"epochs": 2, "seeds": [42, 43]} and card["cv_folds"] == [0, 1]
    assert sorted(card["folds"]) == ["0", "1"] and card["folds"]["0"]["seeds"] == {"42": 0.5, "43": 0.5}


def test_merge_refuses_a_fold_or_full_fits_in_two_runs(tmp_path):
    a = _session(tmp_path, "a", [0], full=(None,))
    b = _session(tmp_path, "b", [1], full=(None,))
    with pytest.raises(ValueError, match=r"merge: full-data fits are in both .*a/run \(full\) and .*b/run \(full\)"):
        merge_runs([a, b], tmp_path / "m1")
    c = _session(tmp_path, "c", [1], seeds=(44,))  # fold 1 again, with another extra seed: one fold, one OOF entry
    d = _session(tmp_path, "d", [1])
    with pytest.raises(ValueError, match=r"merge: fold 1 is in both"):
        merge_runs([c, d], tmp_path / "m2")
    assert not (tmp_path / "m1").exists() and not (tmp_path / "m2").exists()
