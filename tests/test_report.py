"""kagglekit report: leaderboard order and direction, LB round trip, skipped folders, plots; git and GPU on the card."""

import argparse
import json
import subprocess
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
import torch

from kagglekit.kaggle import git_commit, gpu_info
from kagglekit.tools import doctor
from kagglekit.tools.report import add_parser, duration, leaderboard, parse_lb, read_lb, short_backbone, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_run(root: Path, name: str, folds: dict, *, cv: float, metric: str = "pearson", higher: bool = True,
             task: str = "uspppm", n_folds: int = 5, backbone: str = "/kaggle/input/deberta-v3-large",
             head: str = "mean", loss: str = "bce", adversary: str = "none", seconds: float = 60.0) -> Path:
    """A hand-made run folder: run.json in the runner's schema, with the given fold scores and CV."""
    run = root / name
    run.mkdir(parents=True)
    card = {
        "folds": {str(k): {"score": s, "best_epoch": 1, "rows": 10, "seconds": seconds, "history": []} for k, s in folds.items()},
        "task": task,
        "config": {"task": task, "backbone": backbone, "head": head, "loss": "auto", "adversary": adversary, "n_folds": n_folds},
        "metric": metric,
        "higher_is_better": higher,
        "loss": loss,
        "cv": cv,
        "cv_folds": sorted(folds),
    }
    (run / "run.json").write_text(json.dumps(card))
    return run


def add_artifacts(run: Path, folds: list[int], seed: int = 0) -> None:
    """oof.csv (discrete labels, noisy predictions) and a train_log.csv per fold."""
    rng = np.random.default_rng(seed)
    label = rng.choice([0.0, 0.25, 0.5, 0.75, 1.0], size=200)
    pred = np.clip(label * 0.6 + 0.2 + rng.normal(0, 0.1, 200), 0, 1)
    pd.DataFrame({"id": [f"r{i}" for i in range(200)], "fold": np.arange(200) % len(folds), "label": label, "pred": pred}).to_csv(run / "oof.csv", index=False)
    for k in folds:
        (run / f"fold{k}").mkdir()
        steps = np.arange(1, 31)
        score = np.where(steps % 10 == 0, 0.5 + steps / 100, np.nan)
        log = pd.DataFrame({"step": steps, "epoch": steps / 10, "loss": 0.7 - steps / 100 + rng.normal(0, 0.01, 30), "lr": 1e-5, "score": score})
        log.to_csv(run / f"fold{k}" / "train_log.csv", index=False)


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="kagglekit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture
def runs(tmp_path) -> Path:
    """Three Pearson runs (CV .80, .85, .83), two RMSE runs of another task (.20, .15; lower is better)."""
    root = tmp_path / "runs"
    make_run(root, "a", {0: 0.79, 1: 0.81}, cv=0.80, n_folds=2, seconds=100.0)
    make_run(root, "b", {0: 0.84, 1: 0.86, 2: 0.85}, cv=0.85, n_folds=3, head="attention", adversary="awp", seconds=30.5)
    make_run(root, "exp1/c", {0: 0.83}, cv=0.83, backbone="/models/minilm/model")
    make_run(root, "d", {0: 0.21, 1: 0.19}, cv=0.20, metric="rmse", higher=False, task="pairs", loss="mse", n_folds=2)
    make_run(root, "e", {0: 0.14, 1: 0.16}, cv=0.15, metric="rmse", higher=False, task="pairs", loss="mse", n_folds=2)
    return root


# ---------------------------------------------------------------------------------------------
# The leaderboard


def test_leaderboard_ranks_each_task_and_metric_in_its_direction(runs):
    report = write_report(runs)
    table = report.table
    # by hand: groups sorted by (task, metric); RMSE ascending, Pearson descending
    assert table["run"].tolist() == ["e", "d", "b", "exp1/c", "a"]
    assert table["rank"].tolist() == [1, 2, 1, 2, 3]
    assert table["best"].tolist() == [True, False, True, False, False]
    assert table["cv"].tolist() == [0.15, 0.20, 0.85, 0.83, 0.80]
    assert table["metric"].tolist() == ["rmse", "rmse", "pearson", "pearson", "pearson"]
    saved = pd.read_csv(report.csv)
    assert saved["run"].tolist() == table["run"].tolist() and saved["best"].tolist() == table["best"].tolist()
    np.testing.assert_allclose(saved["cv"], table["cv"])


def test_leaderboard_columns_come_from_the_run_cards(runs):
    table = write_report(runs).table.set_index("run")
    b = table.loc["b"]
    assert (b["backbone"], b["head"], b["loss"], b["adversary"], b["folds"]) == ("deberta-v3-large", "attention", "bce", "awp", "3/3")
    assert (b["fold0"], b["fold1"], b["fold2"]) == (0.84, 0.86, 0.85)
    assert b["time_s"] == 91.5  # 3 folds x 30.5 s
    c = table.loc["exp1/c"]
    assert c["backbone"] == "minilm/model" and c["folds"] == "1/5" and c["time_s"] == 60.0
    assert pd.isna(c["fold1"]) and pd.isna(c["lb"])
    assert list(table.columns[:9]) == ["rank", "best", "task", "metric", "backbone", "head", "loss", "adversary", "folds"]


def test_markdown_has_a_section_per_group_with_the_best_run_in_bold(runs):
    text = write_report(runs).markdown.read_text()
    assert text.index("## pairs: rmse") < text.index("## uspppm: pearson")
    assert "| 1 | **e** (best) | deberta-v3-large | mean | mse | none | 2/2 | 0.1400 | 0.1600 | 0.1500 |  | 2 min |" in text
    assert "| 1 | **b** (best) | deberta-v3-large | attention | bce | awp | 3/3 | 0.8400 | 0.8600 | 0.8500 | 0.8500 |  | 2 min |" in text
    assert "| 3 | a | deberta-v3-large | mean | bce | none | 2/2 | 0.7900 | 0.8100 |  | 0.8000 |  | 3 min |" in text
    assert text.count("(best)") == 2


@pytest.mark.parametrize("seconds, text", [(0, "0 s"), (89.4, "89 s"), (90, "2 min"), (91.5, "2 min"), (200, "3 min"),
                                           (89 * 60, "89 min"), (90 * 60, "1.5 h"), (40000, "11.1 h")])
def test_duration_is_read_in_the_largest_unit_that_keeps_two_digits(seconds, text):
    assert duration(seconds) == text
    assert doctor.duration is duration  # one formatter for the leaderboard and doctor's estimates


def test_short_backbone():
    assert short_backbone("/kaggle/input/deberta-v3-large") == "deberta-v3-large"
    assert short_backbone("runs/gaiic-pretrain/last") == "gaiic-pretrain/last"
    assert short_backbone("runs/pre/checkpoint-300") == "pre/checkpoint-300"
    assert short_backbone("") == ""


def test_a_single_run_folder_is_its_own_runs_dir(tmp_path):
    run = make_run(tmp_path, "run", {0: 0.5}, cv=0.5)
    report = write_report(run)
    assert report.table["run"].tolist() == ["run"] and report.csv == run / "report" / "leaderboard.csv"


# ---------------------------------------------------------------------------------------------
# Public LB scores


def test_lb_is_stored_shown_and_updated(runs):
    report = write_report(runs, lb={"b": 0.84, "c": 0.81})  # "c": the folder name of exp1/c
    assert json.loads((runs / "b" / "lb.json").read_text())["lb"] == 0.84
    assert read_lb(runs / "exp1" / "c") == 0.81 and read_lb(runs / "a") is None
    lb = report.table.set_index("run")["lb"]
    assert lb[["b", "exp1/c"]].tolist() == [0.84, 0.81] and lb[["a", "d", "e"]].isna().all()
    assert "| 0.8500 | 0.8400 |" in report.markdown.read_text()

    write_report(runs, lb={"exp1/c": 0.835})  # a later call replaces the score, by full name too
    again = write_report(runs)  # and it stays without --lb
    assert again.table.set_index("run").loc[["b", "exp1/c"], "lb"].tolist() == [0.84, 0.835]
    assert not list(runs.rglob("*.tmp"))


def test_lb_for_an_unknown_run_lists_the_runs_and_stores_nothing(runs):
    with pytest.raises(ValueError, match=r"'zz' is not a run found; the runs are: a, b, d, e, exp1/c"):
        write_report(runs, lb={"b": 0.84, "zz": 0.5})
    assert not list(runs.rglob("lb.json"))  # every name is checked before any score is stored
    assert not (runs / "zz").exists()


@pytest.mark.parametrize("text", ["b0.84", "b=", "=0.84", "b=high", "b=nan", "b=inf"])
def test_bad_lb_syntax_names_the_form(runs, text):
    with pytest.raises(ValueError, match="expected RUN=SCORE"):
        parse_lb(text)
    with pytest.raises(ValueError, match="expected RUN=SCORE"):
        cli(["report", str(runs), "--lb", text])
    assert not list(runs.rglob("lb.json"))


def test_parse_lb_splits_at_the_last_equals_sign():
    assert parse_lb("lr=2e-5=0.8376") == ("lr=2e-5", 0.8376)


def test_cli_stores_lb_and_prints_the_leaderboard(runs, capsys):
    assert cli(["report", str(runs), "--lb", "e=0.151", "--out", str(runs.parent / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| 1 | **e** (best) |" in out and "0.1510" in out and f"wrote {runs.parent / 'rep' / 'leaderboard.csv'}" in out
    assert read_lb(runs / "e") == 0.151 and (runs.parent / "rep" / "leaderboard.md").is_file()


# ---------------------------------------------------------------------------------------------
# Folders that are not runs


def test_folders_without_a_finished_run_card_are_skipped_with_a_message(runs, capsys):
    stray = runs / "copied"
    (stray / "fold0").mkdir(parents=True)
    (stray / "oof.csv").write_text("id,fold,label,pred\n")
    started = runs / "started"
    started.mkdir()
    (started / "run.json").write_text(json.dumps({"folds": {}, "task": "uspppm"}))
    (runs / "broken").mkdir()
    (runs / "broken" / "run.json").write_text("{not json")
    (runs / "notes").mkdir()  # an ordinary folder: not mentioned
    (runs / "notes" / "todo.txt").write_text("x")

    report = write_report(runs)
    assert len(report.skipped) == 3
    assert f"skipped {stray}: no run.json" in report.skipped[1]
    assert f"skipped {started}: run.json has no finished fold yet" in report.skipped[2]
    assert f"skipped {runs / 'broken'}: run.json is not valid JSON" in report.skipped[0]
    assert sorted(report.table["run"]) == ["a", "b", "d", "e", "exp1/c"]
    cli(["report", str(runs)])
    assert f"kagglekit report: skipped {stray}: no run.json" in capsys.readouterr().out


def test_the_report_folder_is_not_searched_and_no_runs_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="RUNS_DIR: folder not found"):
        write_report(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no run folder"):
        write_report(tmp_path / "empty")
    with pytest.raises(ValueError, match="no runs to rank"):
        leaderboard([])


# ---------------------------------------------------------------------------------------------
# Plots


def check_png(path: Path, width: int, height: int) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 5000, path
    image = matplotlib.image.imread(path)
    assert image.shape[:2] == (height, width), path  # figsize x dpi
    assert image[..., :3].std() > 0.05, path  # lines and bars, not a blank canvas


def test_plots_of_every_kind_are_valid_pngs(runs, tmp_path):
    add_artifacts(runs / "b", [0, 1, 2])
    (runs / "ens").mkdir()
    blend = {"method": "hill", "metric": "pearson", "higher_is_better": True, "cv": 0.86, "rank": False,
             "runs": [{"name": "b", "path": "runs/b", "weight": 0.7, "cv": 0.85}, {"name": "a", "path": "runs/a", "weight": 0.3, "cv": 0.80}]}
    (runs / "ens" / "weights.json").write_text(json.dumps(blend))
    outside = tmp_path / "blend2" / "weights.json"
    outside.parent.mkdir()
    outside.write_text(json.dumps({**blend, "method": "rank", "rank": True}))

    report = write_report(runs, weights=[outside])
    out = runs / "report"
    for k in (0, 1, 2):
        check_png(out / "b" / f"curve_fold{k}.png", 700, 400)
    check_png(out / "b" / "oof.png", 1000, 400)
    check_png(out / "b" / "folds.png", 600, 400)
    check_png(out / "blend_ens.png", 500, 400)
    check_png(out / "blend_blend2.png", 500, 400)
    assert not (out / "a" / "oof.png").exists()  # no oof.csv, no scatter
    check_png(out / "exp1" / "c" / "folds.png", 600, 400)
    assert len(report.plots) == 3 + 1 + 5 + 2  # b's curves and oof; every run's folds; two blends
    assert set(report.plots) == set(out.rglob("*.png"))
    text = report.markdown.read_text()
    assert "| ens | hill | pearson | 0.8600 | b 0.700, a 0.300 |" in text and "| blend2 | rank |" in text


def test_bad_weights_file_is_an_error_when_given_and_skipped_when_found(runs, tmp_path):
    bad = tmp_path / "weights.json"
    bad.write_text(json.dumps({"method": "hill", "runs": [{"name": "a"}]}))
    with pytest.raises(ValueError, match=r"runs\[0\] lacks \['path', 'weight'\]: each run needs name, path and weight"):
        write_report(runs, weights=[bad])
    (runs / "ens").mkdir()
    (runs / "ens" / "weights.json").write_text("[]")
    report = write_report(runs)
    assert any(m.startswith(f"skipped {runs / 'ens' / 'weights.json'}") for m in report.skipped)


# ---------------------------------------------------------------------------------------------
# git commit and GPU for the run card


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args], check=True, capture_output=True)


def test_git_commit(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # tmp_path is not inside another repository
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    assert git_commit(repo) is None  # no commit yet
    (repo / "train.py").write_text("x = 1\n")
    (repo / ".gitignore").write_text("venv/\n")
    (repo / "venv").mkdir()
    git(repo, "add", "train.py", ".gitignore")
    git(repo, "commit", "-q", "-m", "first")
    ref = (repo / ".git" / "HEAD").read_text().split("ref: ")[1].strip()  # the commit read from .git by hand
    head = (repo / ".git" / ref).read_text().strip()
    assert len(head) == 40
    assert git_commit(repo) == head and git_commit(repo / "train.py") == head
    (repo / "new.txt").write_text("untracked files do not count")
    assert git_commit(repo) == head
    (repo / "train.py").write_text("x = 2\n")
    assert git_commit(repo) == f"{head}-dirty"
    assert git_commit(repo / "venv") is None  # ignored: not this repository's code
    assert git_commit(tmp_path) is None  # outside any work tree
    monkeypatch.chdir(repo)
    assert git_commit() == f"{head}-dirty"


def test_git_commit_without_a_git_binary(tmp_path, monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert git_commit(tmp_path) is None
    monkeypatch.undo()

    def broken(*args, **kwargs):
        raise OSError("exec format error")

    monkeypatch.setattr(subprocess, "run", broken)
    assert git_commit(tmp_path) is None


def test_gpu_info(monkeypatch):
    assert gpu_info(torch.device("cpu")) is None

    class Props:  # a T4 as torch reports it
        name, total_memory, major, minor = "Tesla T4", 15_828_320_256, 7, 5

    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda index: Props if index == 1 else pytest.fail(index))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.version, "cuda", "12.1")
    expected = {"name": "Tesla T4", "memory_gib": 14.74, "capability": "sm_75", "count": 2, "cuda": "12.1"}  # 15828320256 / 2**30 = 14.741
    assert gpu_info(torch.device("cuda")) == expected
    assert gpu_info(torch.device("cuda", 1)) == expected
