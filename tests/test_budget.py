"""Sessions and the time limit: a run stopped by `time_budget` saves its state into the run folder,
moves to another folder (`continue_run`) and resumes to the uninterrupted result; the resume state
lives in scratch space while a fold trains; paths are not settings, file contents are.

The clock is the test's: `kagglekit.train.session.now` advances one second per training micro-step
(and `eval_s` per evaluation), so a budget is crossed after a known number of steps.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kagglekit.train.loop as loop
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.kaggle import SCRATCH_ENV
from kagglekit.train import continue_run, session, train_folds
from kagglekit.train.fold_state import FoldState
from kagglekit.train.parallel import default_launcher, run_folds_parallel
from kagglekit.run import run_identity
from kagglekit.train.session import DEADLINE_ENV, MIN_MARGIN_S, Budget
from kagglekit.train.state import SCRATCH_FOLDER, load_state

# 64 rows in 2 folds of 32: 32 training rows in batches of 8 is 4 optimizer steps per epoch, 8 per fold
STEPS_PER_EPOCH, STEPS_PER_FOLD = 4, 8


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from kagglekit.testing import write_uspppm_sample

    return write_uspppm_sample(tmp_path_factory.mktemp("budget") / "data")


def overrides(backbone, data, out, *extra) -> list[str]:
    return [f"backbone={backbone}", f"output_dir={out}", f"train_csv={data / 'train.csv'}", f"cpc_dir={data / 'cpc_titles'}",
            "max_rows=64", "n_folds=2", "epochs=2", "max_len=32", "lr=1e-3", "batch_size=8", *extra]


def train(backbone, data, out, *extra, folds="all", resume=False) -> dict:
    return train_folds(load_config(None, overrides(backbone, data, out, *extra)), folds=folds, resume=resume)


def oof(out) -> pd.DataFrame:
    return pd.read_csv(Path(out) / "oof.csv", dtype={"id": str})


def files_under(folder) -> list[str]:
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")) if folder.exists() else []


class Clock:
    """The test's time: `t` moves one second per micro-step and `eval_s` per evaluation, nowhere else."""

    def __init__(self):
        self.t, self.eval_s = 1000.0, 0.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock(monkeypatch, tmp_path):
    clock = Clock()
    real_step, real_evaluate = loop.train_step, loop.evaluate

    def step(*args, **kwargs):
        clock.t += 1.0
        return real_step(*args, **kwargs)

    def evaluate(*args, **kwargs):
        clock.t += clock.eval_s
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(session, "now", clock)
    monkeypatch.setattr(loop, "train_step", step)
    monkeypatch.setattr(loop, "evaluate", evaluate)
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "scratch"))
    return clock


@pytest.fixture
def saves(monkeypatch) -> list[Path]:
    """Every path a resume state is written to, in order."""
    written, real = [], FoldState.save

    def save(self, path, **extra):
        written.append(Path(path))
        return real(self, path, **extra)

    monkeypatch.setattr(FoldState, "save", save)
    return written


# the margin is MIN_MARGIN_S (30 s): one-second steps and instant saves keep 2 * 1 + save under it
def budget_stopping_after(steps: int) -> float:
    """A time_budget under which the run stops at its `steps`-th optimizer step (counted over folds)."""
    return MIN_MARGIN_S + steps - 0.5


@pytest.mark.parametrize("step", [2, STEPS_PER_EPOCH], ids=["mid-epoch", "epoch-end"])
def test_a_stopped_run_moves_and_resumes_to_the_uninterrupted_result(tiny_bert, data, tmp_path, clock, saves, monkeypatch, capsys, step):
    whole = tmp_path / "whole"
    reference = train(tiny_bert, data, whole, "checkpoint_every=1")

    # B stops at fold 1's `step`-th step (epoch 1, batch `step` of 4): its state goes into the run folder
    run = tmp_path / "b"
    budget = budget_stopping_after(STEPS_PER_FOLD + step)
    card = train(tiny_bert, data, run, "checkpoint_every=1", f"time_budget={budget}")
    how = f"kagglekit train --config {run / 'config.yaml'} --resume --fold 1"
    assert card["stopped"] == {"reason": "time_budget", "time_budget": budget, "folds_left": [1], "mid_way": [1], "not_started": [],
                               "how": how}
    assert sorted(card["folds"]) == ["0"] and set(oof(run)["fold"]) == {0}
    state = load_state(run / "resume" / "fold1.pt")
    assert (state["epoch"], state["batch"], state["step"]) == (0, step, step)
    scratch = tmp_path / "scratch" / SCRATCH_FOLDER / card["run_id"]
    assert saves[-2:] == [scratch / "fold1.pt", run / "resume" / "fold1.pt"]  # the last checkpoint, then the stop's save
    assert files_under(tmp_path / "scratch") == [] and files_under(run / "resume") == ["fold1.pt"]  # the scratch copy is gone
    printed = capsys.readouterr().out
    assert "Complete: fold(s) [0]; stopped mid-way: fold(s) [1]" in printed and how in printed and "RESUME_FROM" in printed

    # the next session: the output is attached read-only elsewhere, the data moved, a new scratch space
    attached = Path(shutil.move(run, tmp_path / "input" / "b"))
    moved_data = Path(shutil.copytree(data, tmp_path / "moved-data"))
    monkeypatch.setenv(SCRATCH_ENV, str(tmp_path / "scratch2"))
    out = continue_run(attached, tmp_path / "working" / "run")
    assert files_under(out) == files_under(attached)
    card = train(tiny_bert, moved_data, out, "checkpoint_every=1", f"time_budget={budget}", resume=True)

    assert "stopped" not in card and sorted(card["folds"]) == ["0", "1"]
    resumed, expected = oof(out), oof(whole)
    assert resumed["id"].tolist() == expected["id"].tolist() and resumed["fold"].tolist() == expected["fold"].tolist()
    np.testing.assert_allclose(resumed["pred"], expected["pred"], rtol=0, atol=1e-6)
    for fold in ("0", "1"):
        assert card["folds"][fold]["score"] == pytest.approx(reference["folds"][fold]["score"], abs=1e-6)
        scores = [h["score"] for h in card["folds"][fold]["history"]]
        assert scores == pytest.approx([h["score"] for h in reference["folds"][fold]["history"]], abs=1e-6)
    assert card["cv"] == pytest.approx(reference["cv"], abs=1e-6)
    assert card["run_id"] == reference["run_id"]  # paths are no part of the run
    # no resume state anywhere: neither scratch space nor the run folder
    assert files_under(tmp_path / "scratch") == files_under(tmp_path / "scratch2") == []
    assert not (out / "resume").exists() and not (whole / "resume").exists()
    # config.yaml records where the run and its data are now
    config = load_config(out / "config.yaml")
    assert config.output_dir == str(out) and config.train_csv == str(moved_data / "train.csv")


def test_after_a_crash_the_newer_scratch_copy_wins_over_the_kept_one(tiny_bert, data, tmp_path, clock, monkeypatch, capsys):
    reference = tmp_path / "whole"
    train(tiny_bert, data, reference, "checkpoint_every=1", folds=0)
    run = tmp_path / "r"
    card = train(tiny_bert, data, run, "checkpoint_every=1", f"time_budget={budget_stopping_after(2)}", folds=0)
    kept, work = run / "resume" / "fold0.pt", tmp_path / "scratch" / SCRATCH_FOLDER / card["run_id"] / "fold0.pt"

    ticking, calls = loop.train_step, []

    def dies_at_the_fourth(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("the machine died")
        return ticking(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", dies_at_the_fourth)
    with pytest.raises(RuntimeError, match="the machine died"):
        train(tiny_bert, data, run, "checkpoint_every=1", resume=True, folds=0)
    assert load_state(kept)["step"] == 2 and load_state(work)["step"] == 5  # steps 3-5 went to scratch only
    monkeypatch.setattr(loop, "train_step", ticking)
    capsys.readouterr()
    train(tiny_bert, data, run, "checkpoint_every=1", resume=True, folds=0)
    assert f"resumed at epoch 2, batch 1, step 5 from {work}" in capsys.readouterr().out
    np.testing.assert_allclose(oof(run)["pred"], oof(reference)["pred"], rtol=0, atol=1e-6)
    assert not kept.exists() and not work.exists()


def test_the_scratch_space_holds_the_state_while_training_else_the_run_folder(tiny_bert, data, tmp_path, clock, saves, monkeypatch):
    card = train(tiny_bert, data, tmp_path / "a", "checkpoint_every=1")
    folder = tmp_path / "scratch" / SCRATCH_FOLDER / card["run_id"]
    # a save at every step (an epoch's last step: the save after its evaluation): 8 per fold, in scratch only
    assert saves == [folder / f"fold{k}.pt" for k in (0, 1) for _ in range(STEPS_PER_FOLD)]
    assert (tmp_path / "scratch").is_dir() and files_under(tmp_path / "scratch") == []  # emptied, the space itself kept
    assert not (tmp_path / "a" / "resume").exists()

    saves.clear()
    monkeypatch.setenv(SCRATCH_ENV, "")  # no scratch space: today's place
    train(tiny_bert, data, tmp_path / "b", "checkpoint_every=1")
    assert saves == [tmp_path / "b" / "resume" / f"fold{k}.pt" for k in (0, 1) for _ in range(STEPS_PER_FOLD)]
    assert not (tmp_path / "b" / "resume").exists()

    saves.clear()
    mine = tmp_path / "mine"
    mine.mkdir()
    card = train(tiny_bert, data, tmp_path / "c", f"resume_dir={mine}", "epochs=1")  # a folder: <folder>/<run id>/fold{K}.pt
    assert saves == [mine / card["run_id"] / f"fold{k}.pt" for k in (0, 1)]
    assert mine.is_dir() and files_under(mine) == []


def test_the_cli_exits_0_with_the_continue_command_and_that_command_finishes_the_run(tiny_bert, data, tmp_path, clock, capsys):
    out = tmp_path / "r"
    args = ["train", "--fold", "all"]
    # stopped at fold 1's second step; config.yaml keeps the budget, which covers fold 1's last 6 steps
    for item in overrides(tiny_bert, data, out, f"time_budget={budget_stopping_after(STEPS_PER_FOLD + 2)}"):
        args += ["--set", item]
    assert main(args) == 0
    printed = capsys.readouterr().out
    how = f"kagglekit train --config {out / 'config.yaml'} --resume --fold 1"
    assert "cv (pearson, folds [0]): " in printed
    assert f"stopped by time_budget: fold(s) [1] left (mid-way: [1]); continue with:\n  {how}\n" in printed
    card = json.loads((out / "run.json").read_text())
    assert card["stopped"]["folds_left"] == [1] and card["stopped"]["not_started"] == [] and sorted(card["folds"]) == ["0"]

    assert main(shlex.split(how)[1:]) == 0  # the printed command, as printed
    printed = capsys.readouterr().out
    assert "stopped by time_budget" not in printed and "cv (pearson, folds [0, 1])" in printed
    card = json.loads((out / "run.json").read_text())
    assert "stopped" not in card and sorted(card["folds"]) == ["0", "1"]


def test_a_fold_is_not_started_without_the_margin_left(tiny_bert, data, tmp_path, clock, capsys):
    # evaluations take 5 s: fold 0's last check (after its first evaluation) leaves 32.5 s, its last
    # evaluation 27.5 s, under the 30 s margin: fold 1 does not start
    clock.eval_s = 5.0
    out = tmp_path / "r"
    card = train(tiny_bert, data, out, f"time_budget={MIN_MARGIN_S + STEPS_PER_FOLD + 7.5}")
    assert sorted(card["folds"]) == ["0"]
    assert card["stopped"]["mid_way"] == [] and card["stopped"]["not_started"] == [1]
    assert not (out / "fold1").exists() and not (out / "resume").exists()
    assert "not started: fold(s) [1]" in capsys.readouterr().out


@pytest.mark.parametrize("budget", ["0", "1000000"])
def test_no_budget_or_an_ample_one_changes_nothing(tiny_bert, data, tmp_path, clock, budget):
    reference = train(tiny_bert, data, tmp_path / "ref", "eval_every=3")
    clock.eval_s = 1e4  # slow evaluations matter only under a budget
    card = train(tiny_bert, data, tmp_path / "r", "eval_every=3", f"time_budget={budget}")
    assert "stopped" not in card and sorted(card["folds"]) == ["0", "1"]
    assert oof(tmp_path / "r")["pred"].tolist() == oof(tmp_path / "ref")["pred"].tolist()
    assert [card["folds"][f]["history"] for f in "01"] == [reference["folds"][f]["history"] for f in "01"]


def test_paths_are_not_settings_but_settings_and_file_contents_are(tiny_bert, data, tmp_path, clock):
    run = tmp_path / "run"
    train(tiny_bert, data, run, folds=0)
    moved = Path(shutil.move(run, tmp_path / "elsewhere"))
    moved_data = Path(shutil.copytree(data, tmp_path / "moved-data"))
    before = (moved / "run.json").read_text()

    with pytest.raises(ValueError, match=rf"output_dir {re.escape(str(moved))} already holds a run with other settings \(lr: 0.001 → 0.002\)"):
        train(tiny_bert, moved_data, moved, "lr=2e-3", folds=1)
    rows = pd.read_csv(data / "train.csv", dtype={"id": str})
    other = tmp_path / "other.csv"
    rows.iloc[1:].to_csv(other, index=False)  # one row less: other ids in the first 64
    with pytest.raises(ValueError, match=rf"train_csv: {re.escape(str(other))} has other rows than the run's folds.csv .*"
                                         rf"e.g. id {re.escape(repr(rows['id'][0]))} is in one only"):
        train(tiny_bert, moved_data, moved, f"train_csv={other}", folds=1)
    relabelled = tmp_path / "relabelled.csv"
    rows.loc[5, "score"] = 0.0 if rows.loc[5, "score"] else 1.0  # one label differs, the ids are the same
    rows.to_csv(relabelled, index=False)
    with pytest.raises(ValueError, match=rf"train_csv: {re.escape(str(relabelled))} is not the file run {re.escape(str(moved))} was "
                                         r"trained on .*Point train_csv at the run's file"):
        train(tiny_bert, moved_data, moved, f"train_csv={relabelled}", folds=1)
    assert (moved / "run.json").read_text() == before  # refused before anything was written

    card = train(tiny_bert, moved_data, moved, "time_budget=1h", "eval_batch_size=16", folds=1)  # paths and machine keys differ
    assert sorted(card["folds"]) == ["0", "1"] and card["config"]["output_dir"] == str(moved)
    # the run id is the config's and the folds', wherever they lie; a setting changes it
    config, folds = load_config(moved / "config.yaml").to_dict(), pd.read_csv(moved / "folds.csv", dtype={"id": str})
    assert run_identity(config, folds) == card["run_id"]
    assert run_identity({**config, "output_dir": "/x", "train_csv": "/y", "time_budget": 5.0}, folds) == card["run_id"]
    assert run_identity({**config, "lr": 2e-3}, folds) != card["run_id"]
    assert run_identity(config, folds.assign(fold=1 - folds["fold"])) != card["run_id"]


@pytest.fixture(scope="module")
def finished(tiny_bert, data, tmp_path_factory) -> Path:
    """A complete 2-fold run, 1 epoch."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny_bert, data, out, "epochs=1")
    return out


def test_continue_run_keeps_the_same_run_and_refuses_others(tiny_bert, data, finished, tmp_path, capsys):
    out = continue_run(finished, tmp_path / "out")
    assert files_under(out) == files_under(finished)
    assert all((out / name).read_bytes() == (finished / name).read_bytes() for name in files_under(finished) if (out / name).is_file())
    (out / "marker").write_text("this session's progress")
    assert continue_run(finished, out) == out and (out / "marker").is_file()  # the same run: kept as it is
    assert "already holds run" in capsys.readouterr().out

    other = tmp_path / "other"
    train(tiny_bert, data, other, "epochs=1", "lr=2e-3", folds=0)
    with pytest.raises(ValueError, match=rf"output_dir {re.escape(str(other))} already holds another run \(run_id \w+\) than "
                                         rf"{re.escape(str(finished))} \(run_id \w+\)"):
        continue_run(finished, other)
    behind = tmp_path / "behind"
    train(tiny_bert, data, behind, "epochs=1", folds=0)
    with pytest.raises(ValueError, match=rf"output_dir {re.escape(str(behind))} holds run \w+ but lacks fold\(s\) \[1\] that are "
                                         rf"complete in {re.escape(str(finished))}"):
        continue_run(finished, behind)
    stranger = tmp_path / "stranger"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=rf"output_dir {re.escape(str(stranger))} holds files but no kagglekit run"):
        continue_run(finished, stranger)
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path))} is not a kagglekit run folder .*run folders inside it: "
                                                rf".*{re.escape(repr(str(behind)))}"):
        continue_run(tmp_path, tmp_path / "new")
    with pytest.raises(ValueError, match="lie one inside the other"):
        continue_run(finished, finished / "copy")
    assert (stranger / "notes.txt").read_text() == "mine" and not (tmp_path / "new").exists()


def test_continue_run_leaves_no_partial_folder_and_copies_without_read_only_modes(finished, tmp_path, monkeypatch):
    source = Path(shutil.copytree(finished, tmp_path / "input" / "run"))
    for path in [source, *source.rglob("*")]:
        path.chmod(0o555 if path.is_dir() else 0o444)  # as /kaggle/input holds it
    try:
        real, calls = shutil.copyfile, []

        def fail_on_the_fifth(src, dst, *args, **kwargs):
            calls.append(src)
            if len(calls) == 5:
                raise OSError("the session ended")
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(shutil, "copyfile", fail_on_the_fifth)
        with pytest.raises(OSError, match="the session ended"):
            continue_run(source, tmp_path / "working" / "run")
        assert files_under(tmp_path / "working") == []  # neither the folder nor a hidden temporary one
        monkeypatch.undo()

        out = continue_run(source, tmp_path / "working" / "run")
        assert files_under(out) == files_under(finished)
        assert all(p.stat().st_mode & 0o200 for p in [out, *out.rglob("*")])  # the copy can be trained into
    finally:
        for path in [source, *source.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_budget_margin_and_inherited_deadline(monkeypatch):
    monkeypatch.setattr(session, "now", lambda: 100.0)
    assert Budget.start(0, environ={}).deadline is None and Budget.start(0, environ={}).can_start()
    assert Budget.start(50, environ={}).deadline == 150.0
    assert Budget.start(50, environ={DEADLINE_ENV: "120.5"}).deadline == 120.5  # the parent's clock wins when earlier
    assert Budget.start(0, environ={DEADLINE_ENV: "120.5"}).deadline == 120.5
    assert Budget.start(10, environ={DEADLINE_ENV: "120.5"}).deadline == 110.0
    with pytest.raises(ValueError, match=rf"{DEADLINE_ENV}='soon': expected epoch seconds"):
        Budget.start(0, environ={DEADLINE_ENV: "soon"})

    budget = Budget(deadline=1000.0)
    assert budget.margin() == MIN_MARGIN_S
    budget.state_bytes = 5 * 10**9  # deberta-v3-large with AdamW: 50 s at the assumed 100 MB/s
    assert budget.margin() == pytest.approx(50.0)
    budget.longest_stretch, budget.longest_save = 20.0, 12.0  # then: twice the longest step, 1.5 times the longest save
    assert budget.margin() == pytest.approx(2 * 20.0 + 1.5 * 12.0)
    monkeypatch.setattr(session, "now", lambda: 1000.0 - 58.5)
    assert budget.can_start() and not budget.should_stop()
    monkeypatch.setattr(session, "now", lambda: 1000.0 - 57.5)
    assert not budget.can_start() and budget.should_stop()


def test_the_deadline_reaches_the_children(tmp_path, monkeypatch):
    launched = []

    class FakePopen:
        def __init__(self, args, **kwargs):
            launched.append((args, kwargs["env"]))

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    monkeypatch.delenv(DEADLINE_ENV, raising=False)
    default_launcher("run/config.yaml", [], resume=True, deadline=1733230000.25)(1, 0, tmp_path / "fold1.log")
    default_launcher("run/config.yaml", [])(0, 0, tmp_path / "fold0.log")
    assert launched[0][1][DEADLINE_ENV] == "1733230000.25" and DEADLINE_ENV not in launched[1][1]
    assert "--resume" in launched[0][0]

    # the queue starts no fold with less than the margin left
    monkeypatch.setattr(session, "now", lambda: 5000.0)
    launched.clear()
    launch = default_launcher("run/config.yaml", [], deadline=5000.0 + MIN_MARGIN_S - 1)
    assert run_folds_parallel([0, 1], [0, 1], launch, tmp_path / "logs", deadline=5000.0 + MIN_MARGIN_S - 1) == {}
    assert launched == []


def test_a_child_honours_the_parents_deadline(tiny_bert, data, tmp_path):
    """A real `kagglekit train` child given a deadline that has passed starts no fold, exits 0 and says so."""
    out = tmp_path / "r"
    args = [sys.executable, "-m", "kagglekit", "train", "--fold", "0"]
    for item in overrides(tiny_bert, data, out):
        args += ["--set", item]
    env = {**os.environ, DEADLINE_ENV: "1.0", SCRATCH_ENV: "", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "not started: fold(s) [0]" in done.stdout and "continue with:" in done.stdout
    card = json.loads((out / "run.json").read_text())
    assert card["stopped"]["not_started"] == [0] and card["folds"] == {} and not (out / "fold0").exists()
