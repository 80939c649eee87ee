"""LoRA end to end: ``kagglekit train`` then ``kagglekit predict`` on the synthetic USPPPM sample with a tiny llama
under both decoder heads and a tiny bert, one epoch on a few rows. The run folder and its base both move; predict
finds the base through ``--base-model`` and reproduces the out-of-fold predictions of training (merged adapters:
within 1e-4), and refuses another base. Then the same on 60 real USPPPM rows (../shared/data) for a tiny llama, qwen2
and gemma2 under each decoder head."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from kagglekit.cli import main
from kagglekit.testing import write_uspppm_sample

pytestmark = pytest.mark.compat  # the LoRA path runs under transformers 4.x too

ROWS = 48
# (arch, settings, tolerance against the OOF: 1e-6 for the saved fp32 weights; 1e-4 for merged adapters, W + s·BA computed
# once, and for fp16-saved ones, rounded to half)
CASES = {
    "llama-last_token": ("llama", ["head=last_token", "adversary=fgm", "ema=0.9"], 1e-6),
    "llama-token_logits": ("llama", ["head=token_logits", 'label_tokens=[" No", " Yes"]', "layer_decay=0.8", "merge_adapter=true"], 1e-4),
    "bert-mean": ("bert", ["head=mean", "lora_targets=query,value", "adversary=awp", "save_dtype=fp16"], 1e-4),
}


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    return write_uspppm_sample(tmp_path_factory.mktemp("uspppm"))


@pytest.fixture(autouse=True)
def digest_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KAGGLEKIT_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_train_move_then_predict_with_the_base_reproduces_the_oof(case, tiny_models, sample, tmp_path, capsys):
    arch, overrides, tolerance = CASES[case]
    backbone = shutil.copytree(tiny_models(arch), tmp_path / "backbone")
    run = tmp_path / "run"
    args = ["train", "--fold", "0", "--set", "task=uspppm", "--set", f"backbone={backbone}", "--set", f"output_dir={run}",
            "--set", f"train_csv={sample / 'train.csv'}", "--set", f"cpc_dir={sample / 'cpc_titles'}", "--set", f"max_rows={ROWS}",
            "--set", "n_folds=2", "--set", "epochs=1", "--set", "max_len=64", "--set", "lr=1e-3", "--set", "batch_size=8",
            "--set", "lora_r=4", "--set", "lora_alpha=8"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    fold = run / "fold0"
    weights = fold / "model.safetensors"
    assert weights.stat().st_size < 0.1 * (backbone / "model.safetensors").stat().st_size  # adapters and head, not the base
    card = json.loads((run / "run.json").read_text())
    assert card["folds"]["0"]["surgery"]["lora"]["r"] == 4
    # another machine: the run and its base both in other places
    shutil.move(str(backbone), str(tmp_path / "base-elsewhere"))
    shutil.move(str(run), str(tmp_path / "moved-run"))
    run = tmp_path / "moved-run"
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    rows = pd.read_csv(sample / "train.csv", dtype={"id": str}).iloc[:ROWS]
    data = tmp_path / "fold0.csv"
    rows[rows["id"].isin(oof["id"])].drop(columns=["score"]).to_csv(data, index=False)
    out = tmp_path / "sub.csv"
    capsys.readouterr()
    assert main(["predict", "--models", str(run), "--data", str(data), "--out", str(out)]) == 2
    assert "which is not here: pass the base's folder with --base-model DIR" in capsys.readouterr().err
    assert main(["predict", "--models", str(run), "--data", str(data), "--out", str(out), "--base-model", str(tmp_path / "base-elsewhere")]) == 0
    sub = pd.read_csv(out, dtype={"id": str})
    assert sub["id"].tolist() == oof["id"].tolist() and oof["pred"].between(0, 1).all()
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=tolerance)
    other = "qwen2" if arch == "llama" else "electra"
    assert main(["predict", "--models", str(run), "--data", str(data), "--out", str(out), "--base-model", str(tiny_models(other))]) == 2
    assert "and no given folder is that base" in capsys.readouterr().err


def test_the_python_api_finds_the_base_too(tiny_models, sample, tmp_path):
    from kagglekit.config import load_config
    from kagglekit.infer.predict import predict
    from kagglekit.infer.scorer import Scorer
    from kagglekit.train.runner import train_folds

    backbone = shutil.copytree(tiny_models("llama"), tmp_path / "backbone")
    cfg = load_config(None, [f"backbone={backbone}", f"output_dir={tmp_path / 'run'}", f"train_csv={sample / 'train.csv'}", "cpc_dir=",
                             f"max_rows={ROWS}", "n_folds=2", "epochs=1", "max_len=64", "batch_size=8", "lr=1e-3",
                             "head=last_token", "lora_r=4"])
    train_folds(cfg, folds=[0])
    shutil.move(str(backbone), str(tmp_path / "moved"))
    oof = pd.read_csv(tmp_path / "run" / "oof.csv", dtype={"id": str})
    rows = pd.read_csv(sample / "train.csv", dtype={"id": str}).iloc[:ROWS]
    fold0 = rows[rows["id"].isin(oof["id"])].drop(columns=["score"])
    fold0.to_csv(tmp_path / "fold0.csv", index=False)
    sub = predict([tmp_path / "run"], tmp_path / "fold0.csv", device="cpu", base_model=tmp_path / "moved")
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=1e-6)
    scorer = Scorer.from_run(tmp_path / "run", device="cpu", base_model=tmp_path / "moved")
    first = fold0.iloc[0]
    assert scorer.predict((first["anchor"], first["target"], first["context"])) == pytest.approx(oof["pred"].iloc[0], abs=1e-6)


@pytest.fixture(scope="module")
def real_rows(tmp_path_factory):
    """60 rows of the real USPPPM train.csv, drawn across anchors (seeded), with the real CPC title files."""
    from conftest import shared_data

    data = shared_data("uspppm")
    folder = tmp_path_factory.mktemp("real")
    pd.read_csv(data / "train.csv", dtype={"id": str}).sample(n=60, random_state=0).to_csv(folder / "train.csv", index=False)
    return folder / "train.csv", data / "cpc_titles_202202"


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma2"])
@pytest.mark.parametrize("head", ["last_token", "token_logits"])
def test_real_uspppm_rows_train_then_predict_from_adapter_only_folders_after_the_base_moved(arch, head, tiny_models, real_rows,
                                                                                          tmp_path, capsys):
    """The issue's check on real rows: each tiny decoder under each head, LoRA, the base moved before predict."""
    train_csv, cpc_dir = real_rows
    backbone = shutil.copytree(tiny_models(arch), tmp_path / "backbone")
    run = tmp_path / "run"
    args = ["train", "--fold", "0", "--set", "task=uspppm", "--set", f"backbone={backbone}", "--set", f"output_dir={run}",
            "--set", f"train_csv={train_csv}", "--set", f"cpc_dir={cpc_dir}", "--set", "n_folds=2", "--set", "epochs=1",
            "--set", "max_len=96", "--set", "lr=1e-3", "--set", "batch_size=8", "--set", "lora_r=4", "--set", f"head={head}"]
    if head == "token_logits":
        args += ["--set", 'label_tokens=[" No", " Yes"]']
    assert main(args) == 0
    assert (run / "fold0" / "model.safetensors").stat().st_size < 0.1 * (backbone / "model.safetensors").stat().st_size
    shutil.move(str(backbone), str(tmp_path / "moved-base"))
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    rows = pd.read_csv(train_csv, dtype={"id": str})
    data = tmp_path / "fold0.csv"
    rows.set_index("id").loc[oof["id"]].reset_index().drop(columns=["score"]).to_csv(data, index=False)
    out = tmp_path / "sub.csv"
    assert main(["predict", "--models", str(run), "--data", str(data), "--out", str(out), "--base-model",
                 str(tmp_path / "moved-base")]) == 0
    sub = pd.read_csv(out, dtype={"id": str})
    assert sub["id"].tolist() == oof["id"].tolist() and 0 < len(sub) < 60
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=1e-5)
