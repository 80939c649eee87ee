"""Every head, output kind and the numeric features, end to end: train through the CLI on a tiny
model, delete the backbone, predict, and get exactly the out-of-fold predictions back."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SAMPLE
from kagglekit.cli import main
from kagglekit.models.heads import HEADS
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder
from kagglekit.infer.predict import predict
from kagglekit.run import FoldMeta

pytestmark = pytest.mark.compat  # also under transformers 4.x (make test)

CONFIG = SAMPLE.parent.parent / "configs" / "uspppm.yaml"
ROWS = 160


def train_then_predict(tiny, tmp_path, *overrides, train_csv=SAMPLE / "train.csv", arch="bert"):
    """Train fold 0 of 2 with `overrides`, delete the backbone, predict fold 0's rows; returns (run, oof, preds)."""
    backbone = shutil.copytree(tiny(arch), tmp_path / "backbone")
    run = tmp_path / "run"
    args = ["train", "--config", str(CONFIG), "--fold", "0", "--set", f"backbone={backbone}", "--set", f"output_dir={run}",
            "--set", f"train_csv={train_csv}", "--set", f"max_rows={ROWS}", "--set", "n_folds=2", "--set", "epochs=1",
            "--set", "max_len=40", "--set", "lr=1e-3", "--set", "batch_size=16"]
    for item in overrides:
        args += ["--set", item]
    assert main(args) == 0
    shutil.rmtree(backbone)
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    rows = pd.read_csv(train_csv, dtype={"id": str}).iloc[:ROWS]
    fold0 = rows[rows["id"].isin(oof["id"])]
    data = tmp_path / "fold0.csv"
    fold0.drop(columns=["score"]).to_csv(data, index=False)
    out = tmp_path / "sub.csv"
    assert main(["predict", "--models", str(run), "--data", str(data), "--out", str(out)]) == 0
    return run, oof, pd.read_csv(out, dtype={"id": str})


def assert_oof_reproduced(oof, sub):
    assert sub["id"].tolist() == oof["id"].tolist()
    np.testing.assert_allclose(sub["score"], oof["pred"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("head", sorted(h for h in HEADS if h != "token_logits"))  # token_logits needs a decoder and label_tokens: test_decoder_e2e.py
def test_every_head_trains_and_predicts_without_its_backbone(head, tiny_models, tmp_path):
    run, oof, sub = train_then_predict(tiny_models, tmp_path, f"head={head}", "head_layernorm=true")
    assert_oof_reproduced(oof, sub)
    meta = json.loads((run / "fold0" / "kagglekit.json").read_text())
    assert meta["model"]["head"] == head and meta["model"]["head_options"]["layernorm"] is True
    if head in ("weighted_layers", "concat_last_k"):
        assert meta["model"]["head_options"]["layers"] == 2  # the default 4, clamped to the tiny model's depth


@pytest.mark.parametrize("output, loss", [("classes", "ce"), ("bins", "kl"), ("bins", "auto"), ("single", "mse")])
def test_output_kinds_end_to_end(output, loss, tiny_models, tmp_path):
    bins = ["num_bins=9"] if output == "bins" else []  # num_bins applies to output=bins only
    run, oof, sub = train_then_predict(tiny_models, tmp_path, f"output={output}", f"loss={loss}", *bins)
    assert_oof_reproduced(oof, sub)
    card = json.loads((run / "run.json").read_text())
    assert card["output"]["kind"] == output and card["loss"] == ("ce" if loss == "auto" else loss)
    if output == "classes":
        assert card["output"]["values"] == [0.0, 0.25, 0.5, 0.75, 1.0]  # the sample's score levels
    if output == "bins":
        assert card["output"]["values"] == pytest.approx(np.linspace(0, 1, 9).tolist())
    if output != "single":  # an expected value over label values stays inside their range
        assert oof["pred"].between(0, 1).all()


def test_features_are_fused_and_travel_with_the_model(tiny_models, tmp_path):
    train = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str})
    rng = np.random.default_rng(0)
    train["overlap"] = train["score"] * 10 + rng.normal(0, 1, len(train))  # an informative feature
    train["length"] = train["target"].str.len()
    csv = tmp_path / "train_feats.csv"
    train.to_csv(csv, index=False)
    run, oof, sub = train_then_predict(tiny_models, tmp_path, "feature_columns=overlap,length", train_csv=csv)
    assert_oof_reproduced(oof, sub)
    model, _, meta = load_model_folder(run / "fold0")
    assert meta.model["feature_names"] == ["overlap", "length"] and meta.recipe_state["feature_columns"] == ["overlap", "length"]
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str}).iloc[:ROWS]
    fit_rows = train.iloc[:ROWS][folds["fold"].to_numpy() == 1]  # fold 0 validates: stats come from fold 1 only
    np.testing.assert_allclose(model.feature_mean.numpy(), fit_rows[["overlap", "length"]].mean().to_numpy(), rtol=1e-5)
    # a test file without the feature column is refused, naming the file and the column
    test = tmp_path / "no_feature.csv"
    pd.read_csv(SAMPLE / "test.csv").to_csv(test, index=False)
    with pytest.raises(ValueError, match=r"no_feature.csv has no column 'overlap', 'length'"):
        predict([run], test)


def test_bad_feature_values_name_the_row(tiny_models, tmp_path):
    train = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str})
    train["overlap"] = 1.0
    train.loc[3, "overlap"] = np.nan
    csv = tmp_path / "bad.csv"
    train.to_csv(csv, index=False)
    args = ["train", "--config", str(CONFIG), "--set", f"backbone={tiny_models('bert')}", "--set", f"output_dir={tmp_path / 'run'}",
            "--set", f"train_csv={csv}", "--set", "feature_columns=overlap"]
    with pytest.raises(ValueError, match=rf"bad.csv feature column 'overlap' must hold finite numbers; 1 row\(s\) do not: line 5 \(id '{train.loc[3, 'id']}'\): nan"):
        from kagglekit.config import load_config
        from kagglekit.train import train_folds

        train_folds(load_config(CONFIG, [a for a in args[4::2]]), folds=0)
    assert not (tmp_path / "run").exists()


def test_features_change_the_output_and_are_required(tiny_bert, tmp_path):
    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert, feature_names=["a", "b"])
    model.set_feature_stats(np.array([[0.0, 10.0], [2.0, 10.0]]))
    assert model.feature_mean.tolist() == [1.0, 10.0] and model.feature_std.tolist() == [1.0, 1.0]  # constant: std 1
    batch = tokenizer(["a b"], ["c d"], return_tensors="pt")
    batch.pop("token_type_ids", None)
    model.eval()
    with torch.no_grad():
        one = model(**batch, features=torch.tensor([[0.0, 10.0]]))
        two = model(**batch, features=torch.tensor([[5.0, 10.0]]))
    assert not torch.allclose(one, two)
    with pytest.raises(ValueError, match=r"takes the numeric features \['a', 'b'\]"):
        model(**batch)
    folder = save_model_folder(model, tokenizer, tmp_path / "m", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    loaded, _, _ = load_model_folder(folder)
    assert torch.equal(loaded.feature_mean, model.feature_mean)
    with torch.no_grad():
        assert torch.equal(loaded(**batch, features=torch.tensor([[5.0, 10.0]])), two)


def test_cls_pooler_needs_a_pooler(tiny_models):
    build_model(tiny_models("bert"), head="cls_pooler")  # BERT has one
    with pytest.raises(ValueError, match=r"head 'cls_pooler' needs a backbone with a pooler output, and deberta-v2 has none"):
        build_model(tiny_models("deberta-v2"), head="cls_pooler")


@pytest.mark.parametrize("bad, message", [
    (["head=mean", "head_pool=max"], r"config key 'head_pool' \('max'\) does nothing with head='mean': it applies only when head is one of "
                              r"\['weighted_layers', 'cnn', 'lstm'\]"),
    (["head=cnn", "head_kernels=3,x"], r"'head_kernels': expected comma-separated integers"),
    (["output=classes", "loss=bce"], r"'bce' does not train output='classes'"),
    (["output=bins", "loss=auto", "num_bins=1"], r"'num_bins' must be 2 or more"),
    (["feature_columns=a,a"], r"'feature_columns' names a column twice"),
    (["hidden_dropout=1.5"], r"'hidden_dropout' must be in \[0, 1\), or -1"),
])
def test_bad_model_settings_name_the_key(bad, message):
    from kagglekit.config import load_config

    with pytest.raises(ValueError, match=message):
        load_config(CONFIG, bad)


def test_backbone_surgery_from_the_config(tiny_models, tmp_path):
    from safetensors.torch import load_file

    source = load_file(str(tiny_models("bert") / "model.safetensors"))
    run, oof, sub = train_then_predict(
        tiny_models, tmp_path, "hidden_dropout=0", "attention_dropout=0", "reinit_layers=1", "freeze_embeddings=true",
        "mixout=0.1", "gradient_checkpointing=true", "msd_samples=2",
    )
    assert_oof_reproduced(oof, sub)
    card = json.loads((run / "run.json").read_text())
    surgery = card["folds"]["0"]["surgery"]
    assert surgery["dropout"] == {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    assert surgery["reinit"] == ["encoder.layer.1.", "pooler."] and surgery["mixout_layers"] > 0
    assert surgery["gradient_checkpointing"] is True and surgery["frozen_params"] > 0
    saved = load_file(str(run / "fold0" / "model.safetensors"))
    for name, value in source.items():  # frozen: the embeddings are exactly the pretrained ones
        if name.startswith("embeddings."):
            assert torch.equal(saved["backbone." + name], value), name
    assert not torch.equal(saved["backbone.encoder.layer.0.attention.self.query.weight"], source["encoder.layer.0.attention.self.query.weight"])
    config = json.loads((run / "fold0" / "config.json").read_text())
    assert config["hidden_dropout_prob"] == 0.0 and config["attention_probs_dropout_prob"] == 0.0


def test_closure_swap_and_cooccurrence_features_end_to_end(tiny_models, tmp_path):
    """Binary labels: closure and swap add rows to the training folds only; the co-occurrence features
    are rebuilt at predict time from the training pairs kept in the model folder plus the test file."""
    from kagglekit.data.features import FEATURE_NAMES

    train = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str}).iloc[:ROWS]
    train["score"] = (train["score"] >= 0.5).astype(float)  # closure needs 0/1 labels
    csv = tmp_path / "binary.csv"
    train.to_csv(csv, index=False)
    # the run's test file is fold 0's rows, so the graph at predict time is the graph of training
    from kagglekit.data.recipes import get_recipe
    from kagglekit.folds import add_fold_column

    frame = get_recipe("uspppm").read_train(csv, {}, max_rows=ROWS)
    fold0 = (add_fold_column(frame, n_folds=2, label_col="label", group_col="group", n_bins=5, seed=42)["fold"] == 0).to_numpy()
    test = tmp_path / "test.csv"
    train[fold0].drop(columns=["score"]).to_csv(test, index=False)
    run, oof, sub = train_then_predict(tiny_models, tmp_path, "closure=true", "swap=true", "cooccurrence=true",
                                       f"test_csv={test}", train_csv=csv)
    assert_oof_reproduced(oof, sub)
    card = json.loads((run / "run.json").read_text())
    report = card["folds"]["0"]["augmentation"]
    assert report["positives_added"] + report["negatives_added"] > 0 and report["swapped"] > 0
    assert set(oof["id"]) == set(train[fold0]["id"])  # validation: the original rows only
    meta = json.loads((run / "fold0" / "kagglekit.json").read_text())
    assert meta["model"]["feature_names"] == list(FEATURE_NAMES)
    assert len(meta["recipe_state"]["cooccurrence_pairs"]) == ROWS
