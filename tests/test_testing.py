"""Tests for kagglekit.testing: tiny offline encoders, the synthetic USPPPM sample data, and the word
lists they are built from (package data)."""

import ast
import filecmp
import fnmatch
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kagglekit import testing as kt
from kagglekit.testing import vocab

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "datasets" / "sample"
LEVELS = {0.0, 0.25, 0.5, 0.75, 1.0}
EXPECTED_MODEL = {"bert": "BertModel", "deberta-v2": "DebertaV2Model", "electra": "ElectraModel",
                  "funnel": "FunnelModel", "nezha": "NezhaModel", "roberta": "RobertaModel",
                  "xlm-roberta": "XLMRobertaModel"}


# --------------------------------------------------------------------------------------------------
# Tiny models
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=kt.TINY_ENCODERS)
def tiny(request, tmp_path_factory):
    """(arch, folder, tokenizer, model) built once per arch with seed 0."""
    from transformers import AutoModel, AutoTokenizer

    arch = request.param
    if arch == "nezha":
        from kagglekit.models.nezha import register_nezha

        register_nezha()  # transformers 5 has no NeZha of its own (a no-op under 4.x)
    folder = kt.build_tiny_model(arch, tmp_path_factory.mktemp(arch) / "model", seed=0)
    return arch, folder, AutoTokenizer.from_pretrained(folder), AutoModel.from_pretrained(folder).eval()


def _state(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.mark.compat
def test_registry_names():
    assert set(kt.TINY_ENCODERS) == set(EXPECTED_MODEL)
    assert tuple(kt.TINY_BUILDERS) == kt.TINY_ARCHS


@pytest.mark.compat
def test_loads_offline_with_matching_config(tiny):
    arch, folder, tok, model = tiny
    cfg = model.config
    assert type(model).__name__ == EXPECTED_MODEL[arch]
    assert cfg.vocab_size == len(tok)
    assert 500 <= len(tok) <= 1000
    assert cfg.pad_token_id == tok.pad_token_id
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (2, 64, 4)
    if arch == "funnel":
        # Funnel's own names; relative attention only, so no position table limits the length.
        assert cfg.d_inner == 128 and list(cfg.block_sizes) == [1, 1] and cfg.d_head * cfg.n_head == 64
        assert not hasattr(cfg, "max_position_embeddings") and cfg.attention_type == "relative_shift"
    else:
        assert cfg.intermediate_size == 128 and cfg.max_position_embeddings >= 128
    assert (folder / "model.safetensors").is_file() and not (folder / "pytorch_model.bin").exists()
    # Only the pieces the tokenizer can emit: embedding rows == vocabulary, nothing padded on.
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    if arch == "bert":
        assert model.pooler is not None


@pytest.mark.compat
def test_pair_encoding_uses_special_tokens(tiny):
    arch, _, tok, model = tiny
    ids = tok("engine housing", "motor casing")["input_ids"]
    assert max(ids) < model.config.vocab_size and min(ids) >= 0
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    # BERT-style pairs have [CLS] a [SEP] b [SEP]; RoBERTa and XLM-R double the middle separator.
    assert ids.count(tok.sep_token_id) == (3 if arch in ("roberta", "xlm-roberta") else 2)
    assert len({tok.pad_token_id, tok.cls_token_id, tok.sep_token_id, tok.unk_token_id}) == 4
    # Trained on patent-like text: domain words and unseen ASCII both encode without unknowns.
    for text in ("regulate gas flow", "Zebra-42 QUANTUM widget? (x+y)=3%"):
        assert tok.unk_token_id not in tok(text)["input_ids"], text


@pytest.mark.compat
def test_forward_pass_shape(tiny):
    import torch

    arch, _, tok, model = tiny
    batch = tok(["engine housing", "a wireless transmitter with two antennas"], ["motor casing", "radio"],
                padding=True, return_tensors="pt")
    if arch == "funnel":  # the <cls> token has its own type, 2; the second text is type 1
        assert batch["token_type_ids"][0, :4].tolist() == [2, 0, 0, 0] and batch["token_type_ids"].max() == 2
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (2, batch["input_ids"].shape[1], model.config.hidden_size)
    assert torch.isfinite(hidden).all()
    # Padding really pads: the shorter row ends in pad ids with a zero attention mask.
    assert batch["input_ids"][0, -1].item() == tok.pad_token_id and batch["attention_mask"][0, -1].item() == 0


@pytest.mark.compat
def test_same_seed_is_bit_identical_other_seed_differs(tiny, tmp_path):
    import torch

    arch, folder, _, _ = tiny
    again = kt.build_tiny_model(arch, tmp_path / "again", seed=0)
    other = kt.build_tiny_model(arch, tmp_path / "other", seed=1)
    ref, same, diff = _state(folder), _state(again), _state(other)
    assert ref.keys() == same.keys() == diff.keys()
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    # Tokenizer training is deterministic too, so whole folders match byte for byte.
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in again.iterdir())
    assert filecmp.cmpfiles(folder, again, names, shallow=False)[0] == names
    emb = next(k for k in ref if k.endswith("word_embeddings.weight"))
    assert not torch.equal(ref[emb], diff[emb])
    assert sum(not torch.equal(ref[k], diff[k]) for k in ref) > len(ref) // 3


@pytest.mark.compat
def test_vocabulary_files_match_tokenizer(tiny):
    arch, folder, tok, _ = tiny
    vocab = tok.get_vocab()
    if arch in ("bert", "electra", "funnel", "nezha"):
        lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
        assert {piece: i for i, piece in enumerate(lines)} == vocab
        assert tok("Engine")["input_ids"] == tok("engine")["input_ids"]  # lower-cased
        specials = ("<pad>", "<unk>", "<cls>", "<sep>", "<mask>") if arch == "funnel" else (
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
        assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == specials
        assert lines[:5] == list(specials)
    elif arch == "roberta":
        assert json.loads((folder / "vocab.json").read_text(encoding="utf-8")) == vocab
        assert (folder / "merges.txt").read_text(encoding="utf-8").count("\n") > 100
        assert (tok.cls_token, tok.pad_token, tok.sep_token) == ("<s>", "<pad>", "</s>")
        assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id) == (0, 1, 2)
    elif arch == "xlm-roberta":
        import sentencepiece as spm

        # fairseq's layout over the sentencepiece model: 4 specials, the model's pieces from id 3 on
        # shifted by one, <mask> last.
        sp = spm.SentencePieceProcessor(model_file=str(folder / "sentencepiece.bpe.model"))
        assert [sp.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
        assert len(tok) == sp.get_piece_size() + 2
        assert tok.convert_ids_to_tokens([0, 1, 2, 3, len(tok) - 1]) == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
        assert (tok.cls_token_id, tok.pad_token_id, tok.sep_token_id, tok.unk_token_id, tok.mask_token_id) == (
            0, 1, 2, 3, len(tok) - 1)
        pieces = [sp.id_to_piece(i) for i in range(3, sp.get_piece_size())]
        assert tok.convert_ids_to_tokens(list(range(4, len(tok) - 1))) == pieces
        text = "the engine housing is shown in figure 3"
        assert tok(text, add_special_tokens=False)["input_ids"] == [i + 1 for i in sp.encode(text)]
    else:
        import sentencepiece as spm

        sp = spm.SentencePieceProcessor(model_file=str(folder / "spm.model"))
        assert sp.get_piece_size() == len(tok)
        assert [sp.id_to_piece(i) for i in range(len(tok))] == tok.convert_ids_to_tokens(list(range(len(tok))))
        assert sp.piece_to_id("[MASK]") == tok.mask_token_id


@pytest.mark.compat
def test_deberta_is_v3_style(tmp_path):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(kt.build_tiny_model("deberta-v2", tmp_path / "d"))
    assert cfg.relative_attention and not cfg.position_biased_input
    assert list(cfg.pos_att_type) == ["p2c", "c2p"] and cfg.position_buckets > 0


@pytest.mark.compat
def test_unknown_arch_names_the_valid_ones(tmp_path):
    with pytest.raises(ValueError, match="gpt2") as err:
        kt.build_tiny_model("gpt2", tmp_path / "x")
    assert all(arch in str(err.value) for arch in kt.TINY_ARCHS)
    assert not (tmp_path / "x").exists()


@pytest.mark.compat
def test_overwrite_keeps_other_files_and_drops_stale_model_files(tmp_path):
    out = tmp_path / "m"
    kt.build_tiny_model("deberta-v2", out)
    (out / "notes.txt").write_text("mine")
    kt.build_tiny_model("xlm-roberta", out)
    assert not (out / "spm.model").exists() and (out / "sentencepiece.bpe.model").is_file()
    kt.build_tiny_model("bert", out)
    assert (out / "notes.txt").read_text() == "mine"
    # sentencepiece leftovers would confuse tokenizer loaders
    assert not (out / "spm.model").exists() and not (out / "sentencepiece.bpe.model").exists()
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temp folder left behind


@pytest.mark.compat
def test_failed_build_leaves_target_untouched(tmp_path, monkeypatch):
    out = tmp_path / "m"
    kt.build_tiny_model("bert", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken(work_dir, seed):
        (work_dir / "config.json").write_text("{half written")
        raise RuntimeError("disk full")

    monkeypatch.setitem(kt.TINY_BUILDERS, "bert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        kt.build_tiny_model("bert", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_registry_lookup_returns_the_registered_builder():
    for arch in kt.TINY_ARCHS:
        assert kt.get_tiny_builder(arch) is kt.TINY_BUILDERS[arch]
    for bad in ("BERT", "gpt2", "", None, ["bert"]):
        with pytest.raises(ValueError, match="unknown tiny arch") as err:
            kt.get_tiny_builder(bad)
        assert repr(bad) in str(err.value) and all(arch in str(err.value) for arch in kt.TINY_ARCHS)


def test_registered_builder_gets_a_work_folder_and_the_seed(tmp_path, monkeypatch):
    calls = []

    def fake(work_dir, seed):
        calls.append((work_dir, seed))
        (work_dir / "config.json").write_text(json.dumps({"seed": seed}))

    monkeypatch.setitem(kt.TINY_BUILDERS, "fake", fake)
    out = kt.build_tiny_model("fake", tmp_path / "a" / "b" / "m", seed=7)
    assert out == tmp_path / "a" / "b" / "m" and json.loads((out / "config.json").read_text()) == {"seed": 7}
    ((work_dir, seed),) = calls
    assert seed == 7 and work_dir.parent == out.parent and work_dir != out and not work_dir.exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["m"]  # no temp folder left beside it


def test_failed_build_of_a_new_folder_leaves_nothing(tmp_path, monkeypatch):
    def broken(work_dir, seed):
        (work_dir / "config.json").write_text("{half written")
        raise RuntimeError("disk full")

    monkeypatch.setitem(kt.TINY_BUILDERS, "bert", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        kt.build_tiny_model("bert", tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_out_dir_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "m").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        kt.build_tiny_model("bert", tmp_path / "m")
    assert (tmp_path / "m").read_text() == "x"


def test_import_is_light():
    code = "import sys, kagglekit.testing; print(sorted({'torch', 'transformers', 'pandas'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------------------------------
# Synthetic USPPPM data
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sample():
    return kt.make_uspppm_sample(seed=0)


def _concepts(phrase, word_to_group):
    return {word_to_group[w] for w in phrase.split() if w in word_to_group}


def test_schema(sample):
    train, test, sub = sample["train"], sample["test"], sample["sample_submission"]
    assert list(train.columns) == ["id", "anchor", "target", "context", "score"]
    assert list(test.columns) == ["id", "anchor", "target", "context"]
    assert list(sub.columns) == ["id", "score"]
    assert train["score"].dtype == np.float64 and set(train["score"]) <= LEVELS
    assert sub["id"].tolist() == test["id"].tolist() and (sub["score"] == 0).all()
    ids = pd.concat([train["id"], test["id"]])
    assert ids.is_unique and ids.str.fullmatch(r"[0-9a-f]{16}").all()
    for df in (train, test):
        assert df["context"].str.fullmatch(r"[A-H]\d\d").all()
        assert set(df["context"]) <= set(sample["cpc_titles"])
        assert not df[["anchor", "target"]].duplicated().any()
        assert (df["anchor"] != df["target"]).all()


def test_sizes_and_grouping(sample):
    train, test = sample["train"], sample["test"]
    assert train["anchor"].nunique() == 120 and test["anchor"].nunique() == 15
    assert 900 <= len(train) <= 1000 and 90 <= len(test) <= 130
    assert set(train["anchor"]).isdisjoint(test["anchor"])
    per_anchor = train.groupby("anchor")
    assert per_anchor.size().min() >= 6
    assert per_anchor["score"].nunique().min() >= 3  # every anchor group has within-group spread
    assert train["anchor"].str.split().str.len().between(2, 3).all()
    # One context per anchor, a few anchors in two.
    n_ctx = per_anchor["context"].nunique()
    assert n_ctx.max() == 2 and 1 <= (n_ctx == 2).sum() <= 25
    shares = train["score"].value_counts(normalize=True)
    assert set(shares.index) == LEVELS and shares.between(0.1, 0.3).all()


def test_deterministic_per_seed(sample):
    again, other = kt.make_uspppm_sample(seed=0), kt.make_uspppm_sample(seed=1)
    for name in ("train", "test", "sample_submission"):
        pd.testing.assert_frame_equal(sample[name], again[name])
    assert not sample["train"]["id"].isin(other["train"]["id"]).any()
    assert set(sample["train"]["anchor"]) != set(other["train"]["anchor"])


def test_sizes_follow_arguments():
    small = kt.make_uspppm_sample(n_anchors=10, targets_per_anchor=4, n_test_anchors=3, seed=5)
    assert small["train"]["anchor"].nunique() == 10 and len(small["train"]) <= 40
    assert small["test"]["anchor"].nunique() == 3
    with pytest.raises(ValueError, match="n_anchors"):
        kt.make_uspppm_sample(n_anchors=10_000)


def test_signal_is_learnable(sample):
    train = sample["train"]
    forms = [f for group in kt.SAMPLE_SYNONYM_GROUPS for f in group]
    assert len(forms) == len(set(forms))  # each surface form names one concept only
    word_to_group = {w: i for i, group in enumerate(kt.SAMPLE_SYNONYM_GROUPS) for f in group for w in f.split()}
    # Share of the anchor's concepts that the target names, synonyms included.
    overlap = np.array([len(_concepts(a, word_to_group) & _concepts(t, word_to_group)) / len(_concepts(a, word_to_group))
                        for a, t in zip(train["anchor"], train["target"])])
    jaccard = np.array([len(set(a.split()) & set(t.split())) / len(set(a.split()) | set(t.split()))
                        for a, t in zip(train["anchor"], train["target"])])
    score = train["score"].to_numpy()
    assert np.corrcoef(score, overlap)[0, 1] > 0.85
    assert np.corrcoef(score, jaccard)[0, 1] > 0.3  # plain word overlap already helps
    means = pd.Series(overlap).groupby(score).mean()
    assert means[1.0] > means[0.75] >= means[0.5] > means[0.25] >= means[0.0]


def _read_cpc_folder(folder):
    titles, levels = {}, {}
    for path in sorted(folder.glob("cpc-section-*_20220201.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            code, level, title = line.split("\t")
            assert path.name == f"cpc-section-{code[0]}_20220201.txt"
            titles[code], levels[code] = title, level
    return titles, levels


def test_cpc_titles_round_trip(tmp_path):
    folder = kt.write_cpc_titles(kt.SAMPLE_CPC_TITLES, tmp_path / "cpc")
    titles, levels = _read_cpc_folder(folder)
    assert titles == kt.SAMPLE_CPC_TITLES
    sections = {c for c in titles if len(c) == 1}
    assert sections == set("ABCDEFGH")
    assert all(2 <= sum(len(c) == 3 and c[0] == s for c in titles) <= 3 for s in sections)
    assert all(levels[c] == "" for c in titles if "/" not in c)  # sections, classes, subclasses
    assert any(len(c) == 4 for c in titles) and {levels[c] for c in titles if "/" in c} == {"0", "1"}
    # Rewriting with fewer sections drops the stale section files.
    kt.write_cpc_titles({"A": "X", "A47": "Y"}, folder)
    assert [p.name for p in folder.iterdir()] == ["cpc-section-A_20220201.txt"]


def test_cpc_titles_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="tab"):
        kt.write_cpc_titles({"A47": "bad\ttitle"}, tmp_path)
    with pytest.raises(ValueError, match="'47'"):
        kt.write_cpc_titles({"47": "no section"}, tmp_path)


def test_committed_sample_matches_generator(tmp_path):
    fresh = kt.write_uspppm_sample(tmp_path / "sample", seed=0)
    generated = sorted(p.relative_to(fresh) for p in fresh.rglob("*") if p.is_file())
    assert {str(p) for p in generated} >= {"train.csv", "test.csv", "sample_submission.csv"}
    for rel in generated:
        committed = SAMPLE_DIR / rel
        assert committed.is_file(), f"{committed} missing: run scripts/make_sample_data.py"
        assert committed.read_bytes() == (fresh / rel).read_bytes(), (
            f"{committed} is stale: run scripts/make_sample_data.py")
    stale = {p.relative_to(SAMPLE_DIR / "cpc_titles") for p in (SAMPLE_DIR / "cpc_titles").iterdir()}
    assert stale == {p.relative_to("cpc_titles") for p in generated if p.parts[0] == "cpc_titles"}
    # Reading the CSV back gives the generator's frame (ids stay strings, scores floats).
    data = kt.make_uspppm_sample(seed=0)
    read = pd.read_csv(SAMPLE_DIR / "train.csv", dtype={"id": str})
    assert read.astype(object).equals(data["train"].astype(object))


def test_write_uspppm_sample_leaves_only_its_files(tmp_path):
    out = kt.write_uspppm_sample(tmp_path / "s", seed=3, n_anchors=5, targets_per_anchor=3, n_test_anchors=2)
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert [w for w in written if not w.startswith("cpc_titles/")] == [
        "cpc_titles", "sample_submission.csv", "test.csv", "train.csv"]
    sections = written[1:-3]
    assert len(sections) == 8 and all(re.fullmatch(r"cpc_titles/cpc-section-[A-H]_20220201\.txt", w) for w in sections)
    train = pd.read_csv(out / "train.csv", dtype={"id": str})
    assert train["anchor"].nunique() == 5 and len(train) <= 15


# --------------------------------------------------------------------------------------------------
# The word lists: package data read with importlib.resources
# --------------------------------------------------------------------------------------------------

DATA_FILES = {"corpus.txt", "cpc_titles.json", "domains.json"}
# sha256 of the tokenizers' training text: the tiny models' vocabularies, hence their files, follow from
# it. A deliberate change of the word lists updates this and the committed sample data together.
CORPUS_SHA256 = "b510dd47383c40dff032ccaaf987d0cfcebb9a68681846a6dd15eb97c1822937"


def test_package_data_is_readable_through_importlib_resources():
    from importlib import resources

    folder = resources.files("kagglekit.testing") / "data"
    assert {p.name for p in folder.iterdir() if p.is_file()} == DATA_FILES
    assert json.loads((folder / "cpc_titles.json").read_text(encoding="utf-8")) == kt.SAMPLE_CPC_TITLES
    domains = json.loads((folder / "domains.json").read_text(encoding="utf-8"))
    assert list(domains) == list(vocab.DOMAINS) and domains == vocab.DOMAINS
    assert vocab.read_data("corpus.txt") == (folder / "corpus.txt").read_text(encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="corpus.txt"):  # the message lists the files there are
        vocab.read_data("missing.txt")


def test_word_lists_are_consistent():
    domains = vocab.DOMAINS
    assert len(domains) == 15
    for code, dom in domains.items():
        assert set(dom) == {"alt", "mods", "heads"}
        assert dom["alt"] != code and dom["alt"] in kt.SAMPLE_CPC_TITLES and code in kt.SAMPLE_CPC_TITLES
        assert len(dom["mods"]) == len(dom["heads"]) == 5
        assert all(2 <= len(group) <= 3 for group in dom["mods"] + dom["heads"])
    groups = kt.SAMPLE_SYNONYM_GROUPS
    assert len(groups) == 150 and sum(map(len, groups)) == 321
    assert all(isinstance(g, tuple) for g in groups)
    # Every code's section and class are titled too, as in the CPC title list.
    assert all(code[0] in kt.SAMPLE_CPC_TITLES and code[:3] in kt.SAMPLE_CPC_TITLES for code in kt.SAMPLE_CPC_TITLES)


def test_tokenizer_corpus_is_unchanged():
    lines = vocab.corpus_lines()
    sentences = [line for line in vocab.read_data("corpus.txt").splitlines() if line.strip()]
    assert len(sentences) == 65 and lines[:65] == sentences
    assert lines[65:95] == list(kt.SAMPLE_CPC_TITLES.values())
    assert len(lines) == 65 + 30 + 15 * 10  # one line per (domain, mod) and per (domain, head)
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == CORPUS_SHA256
    assert "\\" in sentences[-2] and "\\\\" not in sentences[-2]  # one literal backslash
    lines.append("x")
    assert len(vocab.corpus_lines()) == 245  # a fresh list each call


def test_setup_ships_every_data_file():
    """setup.py's package_data covers each file in kagglekit/testing/data, so the wheel carries them."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup")
    package_data = ast.literal_eval(next(k.value for k in call.keywords if k.arg == "package_data"))
    globs = package_data["kagglekit.testing"]
    data_dir = ROOT / "kagglekit" / "testing" / "data"
    for path in data_dir.iterdir():
        rel = path.relative_to(data_dir.parent).as_posix()
        assert any(fnmatch.fnmatch(rel, g) for g in globs), f"{rel} is not in setup.py's package_data"
