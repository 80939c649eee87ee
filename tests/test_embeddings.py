"""The embedding-cosine feature (``embedding_model``): values against a per-text reference, pooling,
caching, and the run's own copy of the embedding model from training through predict."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import SAMPLE
from kagglekit.cli import main
from kagglekit.config import Config
from kagglekit.models.embeddings import EMBEDDER_DIR, EMBEDDER_FILE, EMBEDDING_FEATURES, TextEmbedder, resolve_pooling
from kagglekit.data.features import ComputedFeatures
from kagglekit.tools.doctor import check_folder

pytestmark = pytest.mark.compat  # also under transformers 4.x (make test)

TEXTS_A = ["a wheel", "rotating shaft of the pump", "a wheel", "x"]
TEXTS_B = ["wheel assembly", "pump", "a wheel", "y z w v u t s r q p o n m"]


def reference_cosine(folder, text_a, text_b, pooling="mean"):
    """Each text encoded alone (no padding, no batching, no cache), pooled by hand."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModel.from_pretrained(str(folder), local_files_only=True, torch_dtype=torch.float32).eval()

    def embed(text):
        batch = tokenizer(text, return_tensors="pt")
        with torch.no_grad():
            hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state[0].double()
        return hidden[0] if pooling == "cls" else hidden.mean(0)

    return np.array([torch.nn.functional.cosine_similarity(embed(a), embed(b), dim=0).item() for a, b in zip(text_a, text_b)])


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_cosine_matches_each_text_encoded_alone(tiny_bert, pooling):
    embedder = TextEmbedder(tiny_bert, pooling, batch_size=3)  # batches mix lengths: padding must not leak in
    got = embedder.cosine(TEXTS_A, TEXTS_B)
    np.testing.assert_allclose(got, reference_cosine(tiny_bert, TEXTS_A, TEXTS_B, pooling), atol=1e-5)
    assert got[2] == pytest.approx(1.0, abs=1e-6)  # a text with itself
    np.testing.assert_allclose(embedder.cosine(TEXTS_B, TEXTS_A), got, atol=1e-7)  # symmetric: swap TTA sees the same value
    norms = np.linalg.norm(embedder.encode(TEXTS_A + TEXTS_B), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)


def test_each_text_embedded_once_and_cache_survives_release(tiny_bert):
    embedder = TextEmbedder(tiny_bert)
    first = embedder.encode(TEXTS_A)
    assert len(embedder._cache) == len(set(TEXTS_A))  # a repeated text is embedded once
    embedder.release()
    np.testing.assert_array_equal(embedder.encode(TEXTS_A[::-1]), first[::-1])  # from the cache, in the order asked
    assert embedder._model is None  # no reload for texts already embedded
    embedder.encode(["a new text"])
    assert embedder._model is not None


def test_pooling_auto_reads_sentence_transformers_settings(tiny_bert, tmp_path):
    folder = shutil.copytree(tiny_bert, tmp_path / "st")
    assert resolve_pooling(folder) == "mean"
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
    assert resolve_pooling(folder) == "cls" and resolve_pooling(folder, "mean") == "mean"
    with pytest.raises(ValueError, match="embedding_pooling.*'max'"):
        resolve_pooling(folder, "max")


def test_config_checks():
    with pytest.raises(ValueError, match=r"'embedding_pooling' \('cls'\) does nothing without embedding_model"):
        Config(embedding_pooling="cls").validate()
    with pytest.raises(ValueError, match="embedding_pooling.*unknown value 'max'"):
        Config(embedding_model="m", embedding_pooling="max").validate()
    with pytest.raises(ValueError, match=r"names \['embedding_cosine'\], which the kit computes itself"):
        Config(embedding_model="m", feature_columns="embedding_cosine").validate()
    assert Config(embedding_model="m", cooccurrence=True).model_features()[-1] == "embedding_cosine"
    Config(embedding_model="m", closure=True).validate()  # computed for closure pairs too


@pytest.mark.parametrize("problem", ["missing", "no weights"])
def test_bad_embedding_folder_named_before_anything_is_written(tiny_bert, tmp_path, capsys, problem):
    folder = tmp_path / "embedder"
    if problem == "no weights":
        shutil.copytree(tiny_bert, folder)
        (folder / "model.safetensors").unlink()
    run = tmp_path / "run"
    args = ["train", "--config", str(SAMPLE.parent.parent / "configs" / "uspppm.yaml"), "--fold", "0",
            "--set", f"backbone={tiny_bert}", "--set", f"output_dir={run}", "--set", f"train_csv={SAMPLE / 'train.csv'}",
            "--set", f"embedding_model={folder}"]
    assert main(args) == 2
    err = capsys.readouterr().err
    expected = f"folder not found: {folder}" if problem == "missing" else f"embedding_model {folder} has no weights"
    assert expected in err and "point embedding_model at" in err.lower()
    assert not run.exists()


def _binary_train(tmp_path, rows):
    train = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str}).iloc[:rows]
    train["score"] = (train["score"] >= 0.5).astype(float)  # closure needs 0/1 labels
    path = tmp_path / "binary.csv"
    train.to_csv(path, index=False)
    return path


def test_end_to_end_with_closure_swap_and_relocated_run(tiny_models, tmp_path):
    """Closure and swap pairs get the feature too; predict reads the run's copy of the embedding model,
    also after the run folder moved, and reproduces the out-of-fold predictions exactly."""
    from test_model_zoo import ROWS, assert_oof_reproduced, train_then_predict

    embedding = shutil.copytree(tiny_models("bert"), tmp_path / "embedder-src")
    csv = _binary_train(tmp_path, ROWS)
    run, oof, sub = train_then_predict(tiny_models, tmp_path, "closure=true", "swap=true", f"embedding_model={embedding}", train_csv=csv)
    assert_oof_reproduced(oof, sub)
    shutil.rmtree(embedding)  # predict never needs the original folder
    meta = json.loads((run / "fold0" / "kagglekit.json").read_text())
    assert meta["model"]["feature_names"] == list(EMBEDDING_FEATURES)
    state = meta["recipe_state"]["embedding_model"]
    assert state["dir"] == EMBEDDER_DIR and state["pooling"] == "mean" and len(state["digest"]) == 40
    assert (run / EMBEDDER_DIR / EMBEDDER_FILE).is_file()
    card = json.loads((run / "run.json").read_text())
    assert card["folds"]["0"]["augmentation"]["swapped"] > 0

    moved = shutil.move(str(run), str(tmp_path / "attached" / "run"))
    again = tmp_path / "again.csv"
    assert main(["predict", "--models", moved, "--data", str(tmp_path / "fold0.csv"), "--out", str(again)]) == 0
    assert_oof_reproduced(oof, pd.read_csv(again, dtype={"id": str}))


def test_features_of_every_row_kind_equal_the_embedder_cosine(tiny_bert, tmp_path):
    """Training rows, closure/swap rows and extra rows: each gets cos(text_a, text_b) of the copy."""
    from kagglekit.data.augment import augment_training_rows

    frame = pd.DataFrame({"id": ["1", "2", "3"], "text_a": ["p", "q", "r"], "text_b": ["q", "r", "s"], "label": [1.0, 1.0, 0.0]})
    featurize = ComputedFeatures(embedder=TextEmbedder(tiny_bert))
    featurize.add(frame)
    grown, _ = augment_training_rows(frame, frame.iloc[:0], closure=True, swap=True, seed=0)
    featurize.add(grown)
    expected = reference_cosine(tiny_bert, grown["text_a"], grown["text_b"])
    np.testing.assert_allclose(grown["embedding_cosine"], expected, atol=1e-5)
    assert len(grown) > len(frame)


def test_changed_or_missing_copy_is_refused(tiny_models, tmp_path, capsys):
    from test_model_zoo import train_then_predict

    embedding = shutil.copytree(tiny_models("bert"), tmp_path / "embedder-src")
    run, _, _ = train_then_predict(tiny_models, tmp_path, f"embedding_model={embedding}")
    check, _ = check_folder(run / "fold0", device=torch.device("cpu"))
    assert check.status == "ok" and "with its embedding model (embedding_model/)" in check.detail
    config = run / EMBEDDER_DIR / "config.json"
    config.write_text(config.read_text() + "\n")  # still valid, but not the bytes trained with
    out = tmp_path / "sub2.csv"
    args = ["predict", "--models", str(run), "--data", str(tmp_path / "fold0.csv"), "--out", str(out)]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not the embedding model" in err and "cannot read --data" not in err and not out.exists()
    shutil.rmtree(run / EMBEDDER_DIR)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "was trained with embedding_model" in err and "Attach the whole run folder" in err and not out.exists()
    check, _ = check_folder(run / "fold0", device=torch.device("cpu"))  # kagglekit doctor says so before any GPU hour
    assert check.status == "fail" and "its embedding model does not" in check.detail and "Attach the whole run folder" in check.detail


def _extra_file(tmp_path, score):
    """Six rows of the sample's schema with new ids, as extra_train_csv."""
    rows = pd.read_csv(SAMPLE / "train.csv", dtype={"id": str}).iloc[200:206].copy()
    rows["id"] = "extra:" + rows["id"]
    rows["score"] = score
    path = tmp_path / "extra.csv"
    rows.to_csv(path, index=False)
    return path


def test_extra_rows_get_the_feature_and_a_bad_extra_file_leaves_no_folder(tiny_models, tmp_path, capsys):
    from test_model_zoo import assert_oof_reproduced, train_then_predict

    embedding = shutil.copytree(tiny_models("bert"), tmp_path / "embedder-src")
    bad = tmp_path / "bad"
    bad.mkdir()
    with pytest.raises(AssertionError):  # train_then_predict asserts exit status 0
        train_then_predict(tiny_models, bad, f"embedding_model={embedding}", f"extra_train_csv={_extra_file(bad, 7.0)}")
    err = capsys.readouterr().err
    assert f"{bad / 'extra.csv'}" in err and "7.0" in err
    assert not (bad / "run").exists()  # read before the embedding model is copied

    run, oof, sub = train_then_predict(tiny_models, tmp_path, f"embedding_model={embedding}",
                                       f"extra_train_csv={_extra_file(tmp_path, 0.5)}", "extra_weight=0.5")
    assert_oof_reproduced(oof, sub)  # NaN features on the extra rows would make every prediction NaN
    assert json.loads((run / "run.json").read_text())["folds"]["0"]["augmentation"]["extra_rows"] == 6
