"""Weights & Biases logging, with a fake ``wandb`` module that records every call: one run per model,
the step log's steps and values, finished once (exit code 1 when training raises), results unchanged,
and a missing wandb refused before anything is written."""

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import kagglekit.train.loop as loop
from kagglekit.config import load_config
from kagglekit.train import train_folds
from kagglekit.train.tracking import ModelLog, Tracker


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from kagglekit.testing import write_uspppm_sample

    return write_uspppm_sample(tmp_path_factory.mktemp("tracking") / "data")


def config(backbone, data, out, *extra):
    return load_config(None, [f"backbone={backbone}", f"output_dir={out}", f"train_csv={data / 'train.csv'}",
                              f"cpc_dir={data / 'cpc_titles'}", "max_rows=64", "n_folds=2", "epochs=2", "max_len=32", "lr=1e-3",
                              "batch_size=8", "eval_every=3", *extra])


class FakeRun:
    def __init__(self, kwargs):
        self.init, self.logged, self.summary, self.finished = kwargs, [], {}, []

    def log(self, data, step=None):
        self.logged.append((step, dict(data)))

    def finish(self, exit_code=None):
        self.finished.append(exit_code)


@pytest.fixture
def wandb(monkeypatch):
    """A fake ``wandb`` module in sys.modules; ``wandb.runs`` lists the runs it was asked for."""
    module = types.ModuleType("wandb")
    module.runs = []

    def init(**kwargs):
        module.runs.append(FakeRun(kwargs))
        return module.runs[-1]

    module.init = init
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def expected_calls(log: pd.DataFrame) -> list:
    """What a model's W&B run should receive: each step log row's loss, lr and epoch, then its score where one was logged."""
    calls = []
    for row in log.itertuples():
        calls.append((row.step, {"loss": row.loss, "lr": row.lr, "epoch": row.epoch}))
        if not np.isnan(row.score):
            calls.append((row.step, {"score": row.score}))
    return calls


def test_one_run_per_fold_with_the_step_log_and_the_same_results(tiny_bert, data, tmp_path, wandb):
    plain = tmp_path / "plain"
    train_folds(config(tiny_bert, data, plain))
    out = tmp_path / "tracked"
    cfg = config(tiny_bert, data, out, "wandb=offline", "wandb_project=pairs")
    card = train_folds(cfg)

    assert pd.read_csv(out / "oof.csv").equals(pd.read_csv(plain / "oof.csv"))  # tracking changes nothing
    assert [r.init for r in wandb.runs] == [
        {"project": "pairs", "name": f"tracked-fold{k}", "group": "tracked", "config": cfg.to_dict(), "mode": "offline", "dir": str(out)}
        for k in (0, 1)
    ]
    for fold, run in enumerate(wandb.runs):
        log = pd.read_csv(out / f"fold{fold}" / "train_log.csv")
        assert [step for step, _ in run.logged] == [step for step, _ in expected_calls(log)]
        for (step, got), (_, want) in zip(run.logged, expected_calls(log)):
            assert got == pytest.approx(want, rel=1e-12), step
        assert any("score" in data for _, data in run.logged)  # eval_every=3: evaluations inside epochs too
        entry = card["folds"][str(fold)]
        assert run.summary == {"score": entry["score"], "best_epoch": entry["best_epoch"], "best_step": entry["best_step"]}
        assert run.finished == [0]


def test_seed_and_full_runs_are_named_after_their_folders(tiny_bert, data, tmp_path, wandb):
    out = tmp_path / "named"
    card = train_folds(config(tiny_bert, data, out, "wandb=offline", "seeds=2", "epochs=1"), folds="0,full")
    assert [r.init["name"] for r in wandb.runs] == ["named-fold0", "named-fold0-seed43", "named-full", "named-full-seed43"]
    assert [r.finished for r in wandb.runs] == [[0]] * 4
    assert wandb.runs[1].summary["score"] == card["folds"]["0"]["seeds"]["43"]
    assert wandb.runs[2].summary == {"epochs": card["full"]["epochs"], "steps": card["full"]["steps"]}
    assert not any("score" in data for _, data in wandb.runs[2].logged)  # a full fit is never evaluated


def test_a_run_is_finished_with_exit_code_1_when_training_raises(tiny_bert, data, tmp_path, wandb, monkeypatch):
    real, calls = loop.train_step, []

    def fails_at_the_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("out of memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", fails_at_the_third)
    with pytest.raises(RuntimeError, match="out of memory"):
        train_folds(config(tiny_bert, data, tmp_path / "r", "wandb=offline"))
    assert len(wandb.runs) == 1 and wandb.runs[0].finished == [1]
    assert [step for step, _ in wandb.runs[0].logged] == [1, 2]  # the steps done before the error


def test_a_run_a_time_budget_stops_is_finished_cleanly_and_marked(tiny_bert, data, tmp_path, wandb, monkeypatch):
    from kagglekit.train import session

    clock, real = [1000.0], loop.train_step

    def ticking(*args, **kwargs):  # one second per micro-step, no other time passes (as in tests/test_budget.py)
        clock[0] += 1.0
        return real(*args, **kwargs)

    monkeypatch.setattr(session, "now", lambda: clock[0])
    monkeypatch.setattr(loop, "train_step", ticking)
    monkeypatch.delenv(session.DEADLINE_ENV, raising=False)
    card = train_folds(config(tiny_bert, data, tmp_path / "r", "wandb=offline", f"time_budget={session.MIN_MARGIN_S + 2.5}"))
    assert card["stopped"]["mid_way"] == [0]
    assert len(wandb.runs) == 1 and wandb.runs[0].finished == [0] and wandb.runs[0].summary == {"stopped": "time_budget"}


def test_a_missing_wandb_is_refused_before_anything_is_written(tiny_bert, data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb raises ImportError
    out = tmp_path / "r"
    for mode in ("offline", "online"):
        with pytest.raises(ValueError, match=rf"wandb={mode}: the wandb package is not installed.*pip install wandb.*wandb=off"):
            train_folds(config(tiny_bert, data, out, f"wandb={mode}"))
    assert not out.exists()


def test_off_imports_nothing_and_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # any import would fail
    tracker = Tracker.create(load_config(None, [f"output_dir={tmp_path}"]))
    assert not tracker.active
    with tracker.model_run("fold0") as log:
        log.step({"step": 1, "epoch": 0.25, "loss": 0.5, "lr": 1e-3})
        log.evaluation(1, 0.8)
        log.summary(score=0.8)
    assert isinstance(log, ModelLog) and log.run is None and list(tmp_path.iterdir()) == []
    assert load_config(None, []).wandb == "off"  # the default
