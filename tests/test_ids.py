"""The ids recipe: a word-level vocabulary over integer-id text, random models sized for it, GAIIC files."""

import json
from types import SimpleNamespace

import pytest
import torch

from conftest import shared_data
from kagglekit.data.recipes import IdsRecipe, get_recipe
from kagglekit.models.ids import BERT_SPECIALS, INFO_FILE, build_id_model, build_id_vocab, id_model_config

pytestmark = pytest.mark.compat  # the tokenizer and model folders must load under transformers 4.x too

TEXTS = [
    "12 23 4160 276\t29 23 169 1495\t1",
    "12 5 239 243 29\t29 485 12 251\t0",
    "134 1059 3028 9268\t3028 9268 2797 7318 126 16\t1",
    "12 29\t29 12\t0",
]


@pytest.fixture(scope="module")
def id_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("ids")
    train = root / "train.tsv"
    train.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    test = root / "test.tsv"
    test.write_text("12 99\t77 12\n", encoding="utf-8")  # ids only the test file holds
    return train, test


@pytest.fixture(scope="module")
def vocab_dir(id_files, tmp_path_factory):
    return build_id_vocab(list(id_files), tmp_path_factory.mktemp("vocab") / "v")


def load(folder):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)


def test_every_token_maps_to_its_own_id_labels_excluded(id_files, vocab_dir):
    tok = load(vocab_dir)
    tokens = {t for line in TEXTS for field in line.split("\t")[:2] for t in field.split()} | {"99", "77"}
    vocab = tok.get_vocab()
    assert [vocab[s] for s in BERT_SPECIALS] == [0, 1, 2, 3, 4]
    assert set(vocab) == tokens | set(BERT_SPECIALS)  # the label column is no text: "0" is no token
    ids = {vocab[t] for t in tokens}
    assert len(ids) == len(tokens) and min(ids) == len(BERT_SPECIALS)
    assert sorted(tokens, key=int) == [t for t in sorted(vocab, key=vocab.get) if t not in BERT_SPECIALS]  # numeric order
    assert tok.convert_ids_to_tokens(tok("4160 276 77", add_special_tokens=False)["input_ids"]) == ["4160", "276", "77"]
    info = json.loads((vocab_dir / INFO_FILE).read_text())
    assert info["vocab_size"] == len(tok) == len(tokens) + 5 and info["unknown_tokens"] == 0
    assert info["max_pair_length"] == 4 + 6 + 3
    assert (vocab_dir / "vocab.txt").read_text().split("\n")[: len(tok)] == sorted(vocab, key=vocab.get)


def test_pair_encoding_has_cls_sep_and_token_types(vocab_dir):
    tok = load(vocab_dir)
    enc = tok("12 23", "29 4160 31337")
    v = tok.get_vocab()
    assert enc["input_ids"] == [2, v["12"], v["23"], 3, v["29"], v["4160"], 1, 3]  # unseen id → [UNK]
    assert enc["token_type_ids"] == [0, 0, 0, 0, 1, 1, 1, 1]
    batch = tok(["12", "12 23 29"], ["29", "29"], padding=True)
    assert batch["input_ids"][0][-2:] == [0, 0] and batch["attention_mask"][0][-2:] == [0, 0]


def test_min_freq_sends_rare_ids_to_unk(id_files, tmp_path):
    tok = load(build_id_vocab([str(id_files[0])], tmp_path / "v", min_freq=3))
    assert set(tok.get_vocab()) == set(BERT_SPECIALS) | {"12", "29"}  # 12 and 29 occur 5 and 6 times
    assert tok("12 23 29", add_special_tokens=False)["input_ids"] == [tok.get_vocab()["12"], 1, tok.get_vocab()["29"]]


def test_texts_as_strings_and_bad_input(tmp_path):
    tok = load(build_id_vocab(["3 1 2", "2 2"], tmp_path / "s"))
    assert tok.convert_ids_to_tokens([5, 6, 7]) == ["1", "2", "3"]
    with pytest.raises(ValueError, match="min_freq must be 1 or more"):
        build_id_vocab(["1 2"], tmp_path / "x", min_freq=0)
    with pytest.raises(ValueError, match="hold no tokens"):
        build_id_vocab(["  "], tmp_path / "x")
    with pytest.raises(TypeError, match="file paths or id texts"):
        build_id_vocab([12], tmp_path / "x")
    with pytest.raises(ValueError, match=r"\['\[MASK\]'\] also occur"):
        build_id_vocab(["1 [MASK]"], tmp_path / "x")


@pytest.mark.parametrize("arch", ["bert", "nezha"])
def test_random_model_runs_through_build_model(vocab_dir, tmp_path, arch):
    from kagglekit.models.pair_model import build_model

    config = id_model_config(vocab_dir, arch=arch, size="tiny")
    assert config["vocab_size"] == len(load(vocab_dir)) and config["pad_token_id"] == 0
    assert config["max_position_embeddings"] == 64  # longest pair 13 → a multiple of 64
    folder = build_id_model(vocab_dir, tmp_path / arch, arch=arch, size="tiny", seed=0)
    model, tok = build_model(folder)
    batch = tok(["12 23", "134 1059 3028"], ["29", "29 12"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch)
    assert out.shape == (2,) and torch.isfinite(out).all()
    emb = model.backbone.get_input_embeddings().weight
    assert emb.shape == (config["vocab_size"], 64)
    again = build_id_model(vocab_dir, tmp_path / f"{arch}-again", arch=arch, size="tiny", seed=0)
    assert (folder / "model.safetensors").read_bytes() == (again / "model.safetensors").read_bytes()


def test_model_config_rejects_unknown_arch_and_size(vocab_dir):
    with pytest.raises(ValueError, match="valid archs are"):
        id_model_config(vocab_dir, arch="gpt")
    with pytest.raises(ValueError, match="valid sizes are"):
        id_model_config(vocab_dir, size="huge")


def test_ids_recipe_reads_the_gaiic_layout(id_files):
    recipe = get_recipe("ids")
    assert isinstance(recipe, IdsRecipe) and recipe.metric == "roc_auc"
    cfg = SimpleNamespace(text_cols="sentence1,sentence2", feature_list=lambda: [])  # pairs keys do not apply
    state = recipe.state(cfg)
    frame = recipe.read_train(id_files[0], state)
    assert frame["text_a"].iloc[0] == "12 23 4160 276" and frame["label"].tolist() == [1.0, 0.0, 1.0, 0.0]
    assert frame["group"].tolist() == frame["text_a"].tolist()
    test = IdsRecipe().read_test(id_files[1], state)
    assert test["text_b"].tolist() == ["77 12"] and "label" not in test


def test_real_gaiic_vocabulary(tmp_path):
    folder = shared_data("gaiic2021_track3")
    files = sorted(folder.glob("*.tsv"))
    assert len(files) == 2
    out = build_id_vocab(files, tmp_path / "gaiic")
    tok = load(out)
    ids = [int(t) for t in tok.get_vocab() if t not in BERT_SPECIALS]
    assert min(ids) >= 1 and max(ids) <= 21962
    info = json.loads((out / INFO_FILE).read_text())
    assert info["texts"] == 100000 and info["vocab_size"] == len(tok) == 12675
    frame = IdsRecipe().read_test(files[0], IdsRecipe().state(SimpleNamespace(feature_list=lambda: [])))
    assert len(frame) == 25000
