"""The whole path on the sample data with a tiny model: train → run folder → predict → submission."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import SAMPLE
from kagglekit.cli import main
from kagglekit.metrics import pearson
from kagglekit.infer.predict import predict, predict_folder


def train_args(tiny, out, *extra):
    return [
        "train", "--config", str(SAMPLE.parent.parent / "configs" / "uspppm.yaml"),
        "--set", f"backbone={tiny}", "--set", f"output_dir={out}", "--set", "n_folds=2",
        "--set", "epochs=2", "--set", "max_len=48", "--set", "lr=1e-3", *extra,
    ]


@pytest.fixture(scope="module")
def run(tiny_models, tmp_path_factory):
    """A 2-fold run trained through the CLI, with its backbone folder deleted afterwards."""
    root = tmp_path_factory.mktemp("run")
    backbone = shutil.copytree(tiny_models("bert"), root / "backbone")
    assert main(train_args(backbone, root / "run", "--fold", "all")) == 0
    shutil.rmtree(backbone)
    return root / "run"


@pytest.mark.compat
def test_run_folder_layout(run):
    # (.lock: the run folder's lock file, which fold processes sharing the folder take turns on)
    assert sorted(p.name for p in run.iterdir()) == [".lock", "config.yaml", "fold0", "fold1", "folds.csv", "oof.csv", "run.json"]
    for fold in ("fold0", "fold1"):
        names = {p.name for p in (run / fold).iterdir()}
        assert {"config.json", "model.safetensors", "kagglekit.json", "tokenizer_config.json"} <= names


@pytest.mark.compat
def test_folds_group_by_anchor_and_oof_covers_each_row_once(run):
    train = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str})
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str})
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert list(folds.columns) == ["id", "fold"] and folds["id"].tolist() == train["id"].tolist()
    anchors = train.assign(fold=folds["fold"]).groupby("anchor")["fold"].nunique()
    assert (anchors == 1).all(), "an anchor was split across folds"
    assert list(oof.columns) == ["id", "fold", "label", "pred"]
    assert oof["id"].tolist() == train["id"].tolist()  # every row once, in training order
    assert (oof["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    assert np.allclose(oof["label"], train["score"])
    assert oof["pred"].between(0, 1).all()


@pytest.mark.compat
def test_run_card(run):
    card = json.loads((run / "run.json").read_text())
    oof = pd.read_csv(run / "oof.csv")
    assert card["cv"] == pytest.approx(pearson(oof["label"], oof["pred"]), abs=1e-12)
    assert card["cv_folds"] == [0, 1] and set(card["folds"]) == {"0", "1"}
    for fold, info in card["folds"].items():
        rows = oof[oof["fold"] == int(fold)]
        assert info["score"] == pytest.approx(pearson(rows["label"], rows["pred"]), abs=1e-12)
        assert len(info["history"]) == 2 and info["best_epoch"] in (1, 2)
        assert max(h["score"] for h in info["history"]) == pytest.approx(info["score"])
    assert {"torch", "transformers", "python", "kagglekit"} <= set(card["versions"])
    assert card["config"]["n_folds"] == 2 and "fold_seconds" in card["timings"]


@pytest.mark.compat
def test_predict_writes_test_ids_in_order_and_averages_folds(run, tmp_path):
    out = tmp_path / "submission.csv"
    assert main(["predict", "--models", str(run), "--data", str(SAMPLE / "test.csv"), "--out", str(out)]) == 0
    sub = pd.read_csv(out, dtype={"id": str})
    test = pd.read_csv(SAMPLE / "test.csv", dtype={"id": str})
    assert list(sub.columns) == ["id", "score"] and sub["id"].tolist() == test["id"].tolist()
    per_fold = [predict_folder(run / f, SAMPLE / "test.csv")[0]["pred"].to_numpy() for f in ("fold0", "fold1")]
    np.testing.assert_allclose(sub["score"], np.mean(per_fold, axis=0), rtol=0, atol=1e-9)
    assert not np.allclose(per_fold[0], per_fold[1])  # two real models, not one counted twice


@pytest.mark.compat
def test_sample_submission_sets_order_and_columns(run, tmp_path):
    sample = pd.read_csv(SAMPLE / "sample_submission.csv", dtype={"id": str})
    shuffled = tmp_path / "sample.csv"
    sample.iloc[::-1].to_csv(shuffled, index=False)
    sub = predict([run], SAMPLE / "test.csv", tmp_path / "s.csv", sample_submission=shuffled)
    assert sub["id"].tolist() == sample["id"].tolist()[::-1]


def test_failed_predict_leaves_the_previous_submission_intact(run, tmp_path):
    out = tmp_path / "submission.csv"
    out.write_text("id,score\nprevious,1\n")
    bad_sample = tmp_path / "sample.csv"
    pd.DataFrame({"id": ["nope"], "score": [0]}).to_csv(bad_sample, index=False)
    with pytest.raises(ValueError, match=r"sample_submission: .* disagree on"):
        predict([run], SAMPLE / "test.csv", out, sample_submission=bad_sample)
    assert out.read_text() == "id,score\nprevious,1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sample.csv", "submission.csv"]


def test_folds_trained_separately_match_and_merge(tiny_bert, run, tmp_path):
    out = tmp_path / "sep"
    assert main(train_args(tiny_bert, out, "--fold", "1")) == 0
    oof = pd.read_csv(out / "oof.csv")
    assert set(oof["fold"]) == {1}
    assert (out / "folds.csv").read_text() == (run / "folds.csv").read_text()  # folds depend on the seed only
    assert main(train_args(tiny_bert, out, "--fold", "0")) == 0
    oof = pd.read_csv(out / "oof.csv", dtype={"id": str})
    full = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert oof["id"].tolist() == full["id"].tolist() and set(oof["fold"]) == {0, 1}
    # same seed, same data order, same model: the same predictions as the run trained in one go
    np.testing.assert_allclose(oof["pred"], full["pred"], atol=1e-5)


def test_a_run_folder_refuses_other_settings(tiny_bert, run, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(train_args(tiny_bert, out, "--fold", "0", "--set", "epochs=1")) == 0
    assert main(train_args(tiny_bert, out, "--fold", "1", "--set", "epochs=1", "--set", "lr=5e-4")) == 2
    assert "already holds a run with other settings (lr: 0.001 → 0.0005)" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "n_folds=500"], r"n_folds=500 is larger than the number of groups"),
        (["--fold", "7"], r"--fold 7: out of range for n_folds=2"),
        (["--set", "heads=mean"], r"unknown config key 'heads' in --set. Did you mean 'head'\?"),
        (["--set", "train_csv=/nope/train.csv"], r"train_csv: file not found: /nope/train.csv"),
    ],
)
def test_bad_train_input_exits_2_and_writes_nothing(tiny_bert, tmp_path, capsys, extra, message):
    import re

    out = tmp_path / "bad"
    assert main(train_args(tiny_bert, out, *extra)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists()
