"""Several seeds per fold and the full-data fit: folders, the OOF mean, the card, the full fit's length,
predict's blend, and both stopping and resuming under a time budget like a fold.

64 rows in 2 folds of 32, batches of 8: 4 optimizer steps per epoch of a fold, 8 per epoch of a full fit.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from safetensors.numpy import load_file

import kagglekit.train.loop as loop
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.data.rows import fold_rows
from kagglekit.infer.predict import predict, predict_folder
from kagglekit.kaggle import SCRATCH_ENV
from kagglekit.metrics import pearson
from kagglekit.run import FoldMeta
from kagglekit.train import session
from kagglekit.train.loop import FullLength
from kagglekit.train.runner import full_length, parse_fold_spec, parse_folds
from kagglekit.train.session import DEADLINE_ENV, MIN_MARGIN_S
from kagglekit.train.state import load_state
from test_budget import data, oof, overrides, train  # noqa: F401  (data: a fixture pytest takes from here)

FOLD_STEPS, FULL_STEPS = 4, 8  # optimizer steps per epoch


def card_of(out) -> dict:
    return json.loads((Path(out) / "run.json").read_text())


def weights(folder) -> dict:
    return load_file(str(Path(folder) / "model.safetensors"))


def meta_json(folder) -> dict:
    return json.loads((Path(folder) / "kagglekit.json").read_text())


def rows_of_fold(data, out, fold, path) -> Path:
    """The training rows of `fold` written as a test file (predict reads id, anchor, target, context)."""
    folds = pd.read_csv(Path(out) / "folds.csv", dtype={"id": str})
    rows = pd.read_csv(data / "train.csv", dtype={"id": str})
    rows[rows["id"].isin(folds.loc[folds["fold"] == fold, "id"])].drop(columns="score").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def two_seeds(tiny_bert, data, tmp_path_factory) -> Path:
    """Both folds with seeds=2 (42 and 43)."""
    out = tmp_path_factory.mktemp("two") / "run"
    train(tiny_bert, data, out, "seeds=2")
    return out


@pytest.fixture(scope="module")
def no_key(tiny_bert, data, tmp_path_factory) -> Path:
    """Both folds with the seeds key left out."""
    out = tmp_path_factory.mktemp("nokey") / "run"
    train(tiny_bert, data, out)
    return out


class Clock:
    """The test's time: one second per training micro-step, nothing else (see tests/test_budget.py)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch, tmp_path):
    clock, real_step = Clock(), loop.train_step

    def step(*args, **kwargs):
        clock.t += 1.0
        return real_step(*args, **kwargs)

    monkeypatch.setattr(session, "now", clock)
    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "scratch"))
    return clock


def budget_stopping_after(steps: int) -> float:
    """A time_budget under which the call stops at its `steps`-th optimizer step (one second each, 30 s margin)."""
    return MIN_MARGIN_S + steps - 0.5


# ---------------------------------------------------------------------------------------------- seeds


def test_two_seeds_write_a_folder_each_and_the_fold_is_their_mean(two_seeds, data, tmp_path):
    run = two_seeds
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["fold0", "fold0-seed43", "fold1", "fold1-seed43"]
    assert "seed" not in meta_json(run / "fold0") and meta_json(run / "fold0-seed43")["seed"] == 43
    assert meta_json(run / "fold0-seed43")["fold"] == 0 and "full" not in meta_json(run / "fold0-seed43")
    assert not (run / "resume").exists()  # the seeds' kept results are gone once the fold is recorded
    card, frame = card_of(run), oof(run)
    for fold in (0, 1):
        rows = frame[frame["fold"] == fold].reset_index(drop=True)
        test = rows_of_fold(data, run, fold, tmp_path / f"valid{fold}.csv")
        preds = {}
        for folder in (f"fold{fold}", f"fold{fold}-seed43"):
            predicted, meta = predict_folder(run / folder, test, device="cpu")
            assert predicted["id"].tolist() == rows["id"].tolist()
            preds[folder] = predicted["pred"].to_numpy()
            assert meta.score == pytest.approx(pearson(rows["label"].to_numpy(), preds[folder]), abs=1e-6)  # its own best score
        mean = (preds[f"fold{fold}"] + preds[f"fold{fold}-seed43"]) / 2  # sigmoid outputs: the mean of probabilities
        np.testing.assert_allclose(rows["pred"], mean, rtol=0, atol=1e-6)
        entry = card["folds"][str(fold)]
        assert entry["score"] == pytest.approx(pearson(rows["label"].to_numpy(), mean), abs=1e-6)
        assert entry["seeds"] == pytest.approx({"42": meta_json(run / f"fold{fold}")["score"],
                                                "43": meta_json(run / f"fold{fold}-seed43")["score"]}, abs=1e-12)
        assert entry["score"] not in entry["seeds"].values()  # the mean's score, not one seed's
    assert card["cv"] == pytest.approx(pearson(frame["label"].to_numpy(), frame["pred"].to_numpy()), abs=1e-12)


def test_one_seed_is_the_run_without_the_key_and_the_first_seed_of_two(tiny_bert, data, tmp_path, no_key, two_seeds):
    one = tmp_path / "one"
    card = train(tiny_bert, data, one, "seeds=1")
    reference = card_of(no_key)
    assert oof(one).equals(oof(no_key))
    assert sorted(p.name for p in one.iterdir() if p.is_dir()) == ["fold0", "fold1"]
    for fold in ("fold0", "fold1"):
        for other in (no_key, two_seeds):  # seed 42 trains the same model whatever the number of seeds
            a, b = weights(one / fold), weights(other / fold)
            assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
            assert (one / fold / "train_log.csv").read_text() == (other / fold / "train_log.csv").read_text()
        stored = meta_json(one / fold)
        assert "seed" not in stored and "full" not in stored  # a fold's kagglekit.json reads as before seeds existed
    for fold in ("0", "1"):
        entry, before = card["folds"][fold], reference["folds"][fold]
        assert entry["score"] == before["score"] == entry["seeds"]["42"] and entry["history"] == before["history"]
        assert entry["best_epoch"] == before["best_epoch"] and isinstance(entry["best_epoch"], int)
    assert card["cv"] == reference["cv"]


def test_a_seed_model_stops_and_resumes_like_a_fold(tiny_bert, data, tmp_path, clock, two_seeds, capsys, monkeypatch):
    run = tmp_path / "r"
    # seed 42 of fold 0 takes 8 steps; the call stops at seed 43's third
    card = train(tiny_bert, data, run, "seeds=2", "checkpoint_every=1", f"time_budget={budget_stopping_after(8 + 3)}", folds=0)
    assert card["stopped"]["folds_left"] == [0] and card["stopped"]["mid_way"] == [0] and card["folds"] == {}
    assert "--resume --fold 0" in card["stopped"]["how"]
    assert sorted(p.name for p in (run / "resume").iterdir()) == ["fold0-seed43.pt", "fold0.json"]  # seed 42's result, 43's state
    assert load_state(run / "resume" / "fold0-seed43.pt")["step"] == 3
    assert "fold 0 seed 43: time_budget" in capsys.readouterr().out

    steps = []
    ticking = loop.train_step

    def counted(*args, **kwargs):
        steps.append(1)
        return ticking(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", counted)
    card = train(tiny_bert, data, run, "seeds=2", "checkpoint_every=1", resume=True, folds=0)
    assert len(steps) == 2 * FOLD_STEPS - 3  # only seed 43's steps left: seed 42 is not trained again
    assert "fold 0 is complete" in capsys.readouterr().out
    assert "stopped" not in card and not (run / "resume").exists()
    expected = oof(two_seeds)
    expected = expected[expected["fold"] == 0].reset_index(drop=True)
    np.testing.assert_allclose(oof(run)["pred"], expected["pred"], rtol=0, atol=1e-6)
    assert card["folds"]["0"]["seeds"] == pytest.approx(card_of(two_seeds)["folds"]["0"]["seeds"], abs=1e-6)


# ---------------------------------------------------------------------------------------------- the full fit


def test_fold_specs_with_full():
    assert parse_fold_spec("full", 3) == ([], True)
    assert parse_fold_spec("0,1,full", 3) == ([0, 1], True)
    assert parse_fold_spec([0, 1, "full"], 3) == ([0, 1], True)
    assert parse_fold_spec("all,full", 3) == ([0, 1, 2], True)
    assert parse_fold_spec("all", 3) == ([0, 1, 2], False) and parse_fold_spec(2, 3) == ([2], False)
    assert parse_folds("1,full", 3) == [1]  # the CV folds only (doctor counts them)
    with pytest.raises(ValueError, match=r"--fold '0,fool': expected a fold number 0..2, .*'full'"):
        parse_fold_spec("0,fool", 3)
    with pytest.raises(ValueError, match=r"--fold 3: out of range for n_folds=3"):
        parse_fold_spec([3, "full"], 3)


def test_full_length_is_the_mean_best_epoch_or_the_scaled_best_step():
    cfg = load_config(None, ["batch_size=8"])
    card = {"folds": {"0": {"best_epoch": 1}, "1": {"best_epoch": 2}}}
    assert full_length(card, cfg, 64) == FullLength(2)  # 1.5 rounds half up
    assert full_length({"folds": {"0": {"best_epoch": 2}, "1": {"best_epoch": 2}, "2": {"best_epoch": 3}}}, cfg, 64).epochs == 2
    steps = {"folds": {"0": {"best_epoch": 2, "best_step": 6, "train_rows": 32}, "1": {"best_epoch": 1, "best_step": 3, "train_rows": 30}}}
    length = full_length(steps, load_config(None, ["batch_size=8", "eval_every=3"]), 64)
    assert length == FullLength(2, (6 / 32 + 3 / 30) / 2)
    resolved, total = length.resolve(cfg, 64)  # 64 rows: 9.2 steps -> 9, over ceil(9 / 8) = 2 epochs
    assert total == 9 and resolved.epochs == 2
    resolved, total = length.resolve(cfg, 100)  # 14.375 -> 14 steps, 13 per epoch: 2 epochs
    assert total == 14 and resolved.epochs == 2
    old = {"folds": {"0": {"best_epoch": 2, "rows": 32, "history": [{"step": 3, "improved": True}, {"step": 6, "improved": False}]}}}
    assert full_length(old, load_config(None, ["eval_every=3"]), 64).steps_per_row == 3 / 32  # a card from before best_step
    with pytest.raises(ValueError, match=r"no complete CV fold.*Train the CV folds first"):
        full_length({"folds": {}}, cfg, 64)


def test_full_rows_are_every_row_grown_as_a_folds_training_rows():
    frame = pd.DataFrame({"id": [str(i) for i in range(6)], "text_a": ["a", "b", "c", "d", "a", "e"],
                          "text_b": ["b", "c", "d", "e", "x", "f"], "label": [1, 1, 0, 1, 0, 1],
                          "group": ["a", "b", "c", "d", "a", "e"], "fold": [0, 0, 1, 1, 0, 1]})
    extra = pd.DataFrame({"id": ["pseudo:0", "pseudo:1"], "text_a": ["b", "q"], "text_b": ["a", "r"], "label": [0.9, 0.2]})
    cfg = load_config(None, ["closure=true", "swap=true", "extra_train_csv=extra.csv", "extra_weight=0.5", "closure_max=3"])
    rows, added = loop.full_rows(frame, cfg, extra=extra)
    # the reference: a fold's training rows when its validation fold is one unrelated row
    lone = pd.DataFrame({"id": ["v"], "text_a": ["zz"], "text_b": ["yy"], "label": [0], "group": ["zz"], "fold": [2]})
    reference, _, fold_added = fold_rows(pd.concat([frame, lone], ignore_index=True), 2, cfg, extra=extra)
    pd.testing.assert_frame_equal(rows, reference)
    assert added == fold_added and added["extra_rows"] == 2 and added["swapped"] > 0
    assert set(frame["id"]) < set(rows["id"]) and rows.loc[rows["id"].str.startswith("pseudo:"), "weight"].tolist() == [0.5, 0.5]


@pytest.fixture(scope="module")
def cv_run(tiny_bert, data, tmp_path_factory) -> Path:
    """Both folds, 3 epochs, to copy before a full fit."""
    out = tmp_path_factory.mktemp("cv") / "run"
    train(tiny_bert, data, out, "epochs=3")
    return out


def test_full_trains_the_mean_best_epoch_on_every_row_and_predict_blends_it(tiny_bert, data, tmp_path, cv_run):
    run = Path(shutil.copytree(cv_run, tmp_path / "run"))
    card = card_of(run)
    card["folds"]["0"]["best_epoch"], card["folds"]["1"]["best_epoch"] = 1, 2  # mean 1.5: the full fit trains 2 epochs
    (run / "run.json").write_text(json.dumps(card))
    before_oof, before = (run / "oof.csv").read_bytes(), card_of(run)

    card = train(tiny_bert, data, run, "epochs=3", folds="full")
    assert card["full"]["epochs"] == 2 and card["full"]["steps"] == 2 * FULL_STEPS and card["full"]["seeds"] == [42]
    assert card["full"]["rows"] == 64 and card["full"]["from_folds"] == [0, 1]
    meta = FoldMeta.read(run / "full")
    assert meta.full and meta.fold is None and meta.epoch == 2 and meta.step == 2 * FULL_STEPS and meta.score is None
    log = pd.read_csv(run / "full" / "train_log.csv")
    assert log["step"].tolist() == list(range(1, 2 * FULL_STEPS + 1)) and log["score"].isna().all()  # never evaluated
    assert (run / "oof.csv").read_bytes() == before_oof
    assert card["cv"] == before["cv"] and card["folds"] == before["folds"] and "stopped" not in card
    assert not (run / "resume").exists()

    test = data / "test.csv"
    sub = predict([run], test, full_weight=0.25, device="cpu")
    folds = [predict_folder(run / f, test, device="cpu")[0]["pred"].to_numpy() for f in ("fold0", "fold1")]
    full = predict_folder(run / "full", test, device="cpu")[0]["pred"].to_numpy()
    np.testing.assert_allclose(sub.iloc[:, 1], 0.75 * (folds[0] + folds[1]) / 2 + 0.25 * full, rtol=0, atol=1e-6)


def test_full_with_eval_every_trains_the_scaled_best_step_on_one_schedule(tiny_bert, data, tmp_path):
    run = tmp_path / "run"
    cv = train(tiny_bert, data, run, "eval_every=3", "scheduler=linear", "warmup_ratio=0")
    folds = cv["folds"].values()
    steps = int(np.floor(np.mean([f["best_step"] / f["train_rows"] for f in folds]) * 64 + 0.5))
    card = train(tiny_bert, data, run, "eval_every=3", "scheduler=linear", "warmup_ratio=0", folds="full")
    assert card["full"]["steps"] == steps and card["full"]["epochs"] == -(-steps // FULL_STEPS)
    log = pd.read_csv(run / "full" / "train_log.csv")
    assert len(log) == steps
    lr = log["lr"].to_numpy()  # linear from the first step down to 0 at the fit's last step, not at an epoch's end
    np.testing.assert_allclose(lr, lr[0] * (steps - log["step"].to_numpy()) / (steps - 1), rtol=1e-9, atol=1e-15)
    assert lr[-1] == 0


def test_full_alone_needs_a_complete_cv_fold(tiny_bert, data, tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=rf"--fold full: run {out} has no complete CV fold.*--fold all,full"):
        train(tiny_bert, data, out, folds="full")
    assert not out.exists()  # refused before anything was written
    args = ["train", "--fold", "full"]
    for item in overrides(tiny_bert, data, out):
        args += ["--set", item]
    assert main(args) == 2 and "no complete CV fold" in capsys.readouterr().err


def test_cv_then_full_in_one_call_with_two_seeds(tiny_bert, data, tmp_path, two_seeds):
    run = tmp_path / "run"
    card = train(tiny_bert, data, run, "seeds=2", folds=[0, 1, "full"])
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == ["fold0", "fold0-seed43", "fold1", "fold1-seed43", "full", "full-seed43"]
    assert oof(run).equals(oof(two_seeds))  # the full fit leaves CV as it was
    assert card["full"]["seeds"] == [42, 43] and meta_json(run / "full-seed43")["seed"] == 43 and "seed" not in meta_json(run / "full")
    best = [card["folds"][f]["best_epoch"] for f in "01"]
    assert card["full"]["epochs"] == int(np.floor(np.mean(best) + 0.5))
    a, b = weights(run / "full"), weights(run / "full-seed43")
    assert any(not np.array_equal(a[k], b[k]) for k in a)  # two seeds, two models


def test_a_full_fit_stops_and_resumes_to_the_uninterrupted_model(tiny_bert, data, tmp_path, clock, cv_run, capsys):
    whole = Path(shutil.copytree(cv_run, tmp_path / "whole"))
    reference = train(tiny_bert, data, whole, "epochs=3", folds="full")
    run = Path(shutil.copytree(cv_run, tmp_path / "run"))
    card = train(tiny_bert, data, run, "epochs=3", f"time_budget={budget_stopping_after(5)}", folds="full")
    assert card["stopped"]["folds_left"] == ["full"] and card["stopped"]["mid_way"] == ["full"]
    assert card["stopped"]["how"].endswith("--resume --fold full") and "full" not in card
    assert not (run / "full").exists() and load_state(run / "resume" / "full.pt")["step"] == 5
    assert "full fit: time_budget" in capsys.readouterr().out

    card = train(tiny_bert, data, run, "epochs=3", resume=True, folds="full")
    assert "stopped" not in card and card["full"]["epochs"] == reference["full"]["epochs"]
    a, b = weights(run / "full"), weights(whole / "full")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=0, atol=1e-6)
    assert not (run / "resume").exists()
    card = train(tiny_bert, data, run, "epochs=3", resume=True, folds="all,full")  # everything complete: nothing trains
    assert "fold(s) [0, 1] and the full fit are complete" in capsys.readouterr().out and "stopped" not in card
