"""Decoders end to end: ``kagglekit train`` then ``kagglekit predict`` (and the Python API) on the synthetic
USPPPM sample with each tiny decoder under each decoder head; the saved fold, its backbone moved away,
predicts its validation rows exactly as the out-of-fold predictions of training."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kagglekit.cli import main
from kagglekit.testing import write_uspppm_sample

pytestmark = pytest.mark.compat  # the decoder path runs under transformers 4.x too

ROWS = 48
HEADS = {"last_token": [], "token_logits": ['label_tokens=[" No", " Yes"]']}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_uspppm_sample(tmp_path_factory.mktemp("uspppm"))


def train_then_predict(backbone_source, sample, tmp_path, *overrides):
    """Train fold 0 of 2 on the first ROWS rows, move the backbone away, predict fold 0's rows with the run."""
    backbone = shutil.copytree(backbone_source, tmp_path / "backbone")
    run = tmp_path / "run"
    args = ["train", "--fold", "0", "--set", "task=uspppm", "--set", f"backbone={backbone}", "--set", f"output_dir={run}",
            "--set", f"train_csv={sample / 'train.csv'}", "--set", f"cpc_dir={sample / 'cpc_titles'}", "--set", f"max_rows={ROWS}",
            "--set", "n_folds=2", "--set", "epochs=1", "--set", "max_len=64", "--set", "lr=1e-3", "--set", "batch_size=8"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    shutil.move(str(backbone), str(tmp_path / "moved"))  # predict needs only the run folder
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    rows = pd.read_csv(sample / "train.csv", dtype={"id": str}).iloc[:ROWS]
    data = tmp_path / "fold0.csv"
    rows[rows["id"].isin(oof["id"])].drop(columns=["score"]).to_csv(data, index=False)
    out = tmp_path / "sub.csv"
    assert main(["predict", "--models", str(run), "--data", str(data), "--out", str(out)]) == 0
    return run, oof, pd.read_csv(out, dtype={"id": str})


@pytest.mark.parametrize("head", sorted(HEADS))
@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
def test_train_then_predict_reproduces_the_oof(arch, head, tiny_models, sample, tmp_path):
    run, oof, sub = train_then_predict(tiny_models(arch), sample, tmp_path, f"head={head}", *HEADS[head])
    assert len(oof) > 0 and np.isfinite(oof["pred"]).all() and oof["pred"].between(0, 1).all()
    assert sub["id"].tolist() == oof["id"].tolist()
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=1e-6)
    meta = json.loads((run / "fold0" / "kagglekit.json").read_text())
    assert meta["model"]["head"] == head and meta["model"]["backbone_class"].endswith("ForCausalLM" if head == "token_logits" else "Model")
    assert meta["recipe_state"]["template"].startswith("Patent context: {context}")  # the recipe's default, recorded for predict
    assert json.loads((run / "run.json").read_text())["config"]["template"] == ""  # config.yaml keeps "the recipe's default"


def test_python_api_with_a_template_classes_and_a_derived_max_len(tiny_models, sample, tmp_path):
    from kagglekit.config import load_config
    from kagglekit.infer.predict import predict
    from kagglekit.infer.scorer import Scorer
    from kagglekit.train.runner import train_folds

    template = "Context: {context}\nIs '{target}' the same as '{anchor}'? Answer:"
    cfg = load_config(None, [f"backbone={tiny_models('qwen2')}", f"output_dir={tmp_path / 'run'}", f"train_csv={sample / 'train.csv'}",
                             "cpc_dir=", f"max_rows={ROWS}", "n_folds=2", "epochs=1", "max_len=0", "batch_size=8", "lr=1e-3",
                             "head=token_logits", "output=classes", "label_tokens= a, the, of, and, no", f"template={template}"])
    card = train_folds(cfg, folds=[0])
    oof = pd.read_csv(tmp_path / "run" / "oof.csv", dtype={"id": str})
    assert card["output"]["values"] == [0.0, 0.25, 0.5, 0.75, 1.0] and oof["pred"].between(0, 1).all()
    meta = json.loads((tmp_path / "run" / "fold0" / "kagglekit.json").read_text())
    assert meta["recipe_state"]["template"] == template and 8 <= meta["max_len"] <= 512  # max_len=0: the longest prompt
    rows = pd.read_csv(sample / "train.csv", dtype={"id": str}).iloc[:ROWS]
    fold0 = rows[rows["id"].isin(oof["id"])].drop(columns=["score"])
    fold0.to_csv(tmp_path / "fold0.csv", index=False)
    sub = predict([tmp_path / "run"], tmp_path / "fold0.csv", tmp_path / "sub.csv", device="cpu")
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=1e-6)
    scorer = Scorer.from_run(tmp_path / "run", device="cpu")  # in memory, rows as tuples
    first = fold0.iloc[0]
    assert scorer.predict((first["anchor"], first["target"], first["context"])) == pytest.approx(oof["pred"].iloc[0], abs=1e-6)


def test_training_options_and_the_doctor_on_a_decoder_run(tiny_models, sample, tmp_path):
    from kagglekit.config import load_config
    from kagglekit.tools.doctor import run_doctor

    options = ["head=token_logits", 'label_tokens=[" No", " Yes"]', "ema=0.9", "adversary=fgm", "layer_decay=0.9",
               "gradient_checkpointing=true", "freeze_layers=1", "msd_samples=2", "head_layernorm=true"]
    run, oof, sub = train_then_predict(tiny_models("qwen2"), sample, tmp_path, *options)
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=1e-6)
    surgery = json.loads((run / "run.json").read_text())["folds"]["0"]["surgery"]
    assert surgery["frozen_params"] > 0 and surgery["gradient_checkpointing"] is True  # the bottom layer frozen, checkpointing on
    lines = []
    status = run_doctor([run], tmp_path / "fold0.csv", out=lines.append)  # model folders load, inference is timed
    assert status == 0, lines
    cfg = [f"backbone={tiny_models('llama')}", f"output_dir={tmp_path / 'other'}", "head=token_logits", 'label_tokens=[" No", " Yes"]']
    assert run_doctor(config=load_config(None, cfg), folds="all", timing=False, out=lines.append) == 0, lines  # the output size
