"""On the real USPPPM files in ../shared/data (skipped when absent): grouped folds and predict order."""

import pandas as pd
import pytest

from conftest import shared_data
from kagglekit.config import load_config
from kagglekit.infer.predict import predict
from kagglekit.train import train_folds


@pytest.fixture(scope="module")
def real_run(tiny_models, tmp_path_factory):
    train = shared_data("uspppm", "train.csv")
    out = tmp_path_factory.mktemp("real") / "run"
    cfg = load_config(None, {
        "train_csv": str(train), "cpc_dir": str(shared_data("uspppm", "cpc_titles_202202")),
        "backbone": str(tiny_models("bert")), "output_dir": str(out), "max_rows": 2000,
        "n_folds": 5, "epochs": 1, "max_len": 64, "lr": 1e-3,
    })
    train_folds(cfg, folds=0)
    return out


@pytest.mark.slow
def test_fold0_on_2000_real_rows(real_run):
    train = pd.read_csv(shared_data("uspppm", "train.csv"), dtype={"id": str}).iloc[:2000]
    folds = pd.read_csv(real_run / "folds.csv", dtype={"id": str})
    assert folds["id"].tolist() == train["id"].tolist() and set(folds["fold"]) == set(range(5))
    valid = folds["fold"] == 0
    assert not set(train.loc[valid, "anchor"]) & set(train.loc[~valid, "anchor"]), "an anchor is in both train and valid"
    oof = pd.read_csv(real_run / "oof.csv", dtype={"id": str})
    assert oof["id"].tolist() == train.loc[valid, "id"].tolist() and set(oof["fold"]) == {0}


@pytest.mark.slow
def test_predict_real_test_in_sample_submission_order(real_run, tmp_path):
    sample = pd.read_csv(shared_data("uspppm", "sample_submission.csv"), dtype={"id": str})
    out = tmp_path / "submission.csv"
    predict([real_run], shared_data("uspppm", "test.csv"), out, sample_submission=shared_data("uspppm", "sample_submission.csv"))
    sub = pd.read_csv(out, dtype={"id": str})
    assert len(sub) == 36 and sub["id"].tolist() == sample["id"].tolist()
    assert list(sub.columns) == list(sample.columns) and sub["score"].between(0, 1).all()
