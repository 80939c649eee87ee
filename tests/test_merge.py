"""kagglekit merge: one-fold runs from separate sessions become the run that --fold all would have written."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.infer.predict import predict
from kagglekit.tools.merge import merge_runs
from kagglekit.tools.report import write_report
from kagglekit.train import train_folds

SETTINGS = ["task=uspppm", f"train_csv={SAMPLE / 'train.csv'}", f"cpc_dir={SAMPLE / 'cpc_titles'}", "n_folds=2", "epochs=1",
            "max_rows=160", "lr=1e-3", "batch_size=32", "max_len=32", "device=cpu", "deterministic=true"]


def _train(out, backbone, folds, *extra):
    cfg = load_config(None, [*SETTINGS, *extra, f"backbone={backbone}", f"output_dir={out}"])
    train_folds(cfg, folds=folds)
    return out


@pytest.fixture(scope="module")
def sessions(tiny_models, tmp_path_factory):
    """Fold 0 and fold 1 trained in two 'sessions' (other folders, other backbone paths), and one --fold all run."""
    root = tmp_path_factory.mktemp("merge")
    bert = tiny_models("bert")
    copy = shutil.copytree(bert, root / "input" / "backbone")  # the second session mounts the backbone elsewhere
    s0 = _train(root / "session0" / "run", bert, 0)
    s1 = _train(root / "session1" / "run", copy, 1)
    whole = _train(root / "whole", bert, "all")
    return root, s0, s1, whole


def test_two_one_fold_runs_merge_into_the_all_folds_run(sessions):
    root, s0, s1, whole = sessions
    card = merge_runs([s1, s0], root / "merged")  # order of the arguments does not matter
    merged, reference = pd.read_csv(root / "merged" / "oof.csv"), pd.read_csv(whole / "oof.csv")
    assert merged[["id", "fold"]].equals(reference[["id", "fold"]])  # every row once, in training-file order
    np.testing.assert_allclose(merged["pred"], reference["pred"], atol=1e-6)
    np.testing.assert_allclose(merged["label"], reference["label"], atol=0)
    want = json.loads((whole / "run.json").read_text())
    assert card == json.loads((root / "merged" / "run.json").read_text())
    assert card["cv"] == pytest.approx(want["cv"], abs=1e-6) and card["cv_folds"] == [0, 1]
    assert sorted(card["folds"]) == ["0", "1"]
    for k in ("0", "1"):
        assert card["folds"][k]["score"] == pytest.approx(want["folds"][k]["score"], abs=1e-6)
    assert [m["folds"] for m in card["merged_from"]] == [[1], [0]]
    assert (root / "merged" / "folds.csv").read_text() == (whole / "folds.csv").read_text()


def test_ensemble_report_and_predict_read_the_merged_run(sessions, tmp_path, capsys):
    root, s0, s1, whole = sessions
    merged = tmp_path / "merged"
    assert main(["merge", str(s0), str(s1), "--out", str(merged)]) == 0
    assert "merged folds [0, 1] of 2 runs" in capsys.readouterr().out
    test = SAMPLE / "test.csv"
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    predict([merged], test, a, device="cpu")
    predict([whole], test, b, device="cpu")
    np.testing.assert_allclose(pd.read_csv(a).iloc[:, 1], pd.read_csv(b).iloc[:, 1], atol=1e-6)
    assert main(["ensemble", str(merged), str(whole), "--out", str(tmp_path / "w.json")]) == 0
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(merged, runs / "merged")
    write_report(runs)
    board = pd.read_csv(runs / "report" / "leaderboard.csv")
    assert board["cv"].iloc[0] == pytest.approx(json.loads((whole / "run.json").read_text())["cv"], abs=1e-6)


@pytest.mark.parametrize("case, message", [
    ("one", r"needs two or more run folders"),
    ("twice", r"is passed twice"),
    ("same_fold", r"fold 0 is in both"),
    ("settings", r"other settings .*lr: 0.001 vs 0.002"),
    ("folds_csv", r"folds.csv differs"),
    ("out_exists", r"already exists"),
    ("out_inside", r"lies inside the input run"),
])
def test_bad_merges_are_refused_and_write_nothing(sessions, tmp_path, case, message):
    root, s0, s1, whole = sessions
    out = tmp_path / "merged"
    runs = [s0, s1]
    if case == "one":
        runs = [s0]
    elif case == "twice":
        runs = [s0, s0.parent / "." / "run"]
    elif case == "same_fold":
        runs = [s0, whole]
    elif case == "settings":
        other = shutil.copytree(s1, tmp_path / "other")
        (other / "config.yaml").write_text((other / "config.yaml").read_text().replace("lr: 0.001", "lr: 0.002"))
        runs = [s0, other]
    elif case == "folds_csv":
        other = shutil.copytree(s1, tmp_path / "other")
        folds = pd.read_csv(other / "folds.csv")
        folds.loc[0, "fold"] = 1 - folds.loc[0, "fold"]
        folds.to_csv(other / "folds.csv", index=False)
        runs = [s0, other]
    elif case == "out_exists":
        out.mkdir()
        (out / "keep.txt").write_text("mine")
    elif case == "out_inside":
        out = s0 / "merged"
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(ValueError, match=message):
        merge_runs(runs, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (s0 / "merged").exists()
    if case == "out_exists":
        assert [p.name for p in out.iterdir()] == ["keep.txt"]


def test_the_cli_names_the_error_and_exits_2(sessions, tmp_path, capsys):
    root, s0, s1, whole = sessions
    assert main(["merge", str(s0), str(whole), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kagglekit merge: error: merge: fold 0 is in both") and not (tmp_path / "m").exists()
