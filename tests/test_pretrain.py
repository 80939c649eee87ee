"""MLM further pretraining: the loss falls, checkpoints are backbones, NeZha from scratch, resume, bad input."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from kagglekit.train.pretrain import (PretrainConfig, build_mlm_model, load_pretrain_config, read_corpus, run_pretraining)

pytestmark = pytest.mark.compat

WORDS = "the cat sat on the mat and the dog ran in the park".split()


def _transformers_major() -> int:
    import transformers

    return int(transformers.__version__.split(".")[0])


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A small repetitive corpus: rotations of one sentence, in two columns (52 distinct texts)."""
    texts = [f"{' '.join(WORDS[i:] + WORDS[:i])} {k}" for k, i in enumerate(list(range(len(WORDS))) * 4)]
    path = tmp_path / "corpus.csv"
    pd.DataFrame({"a": texts[::2], "b": texts[1::2], "label": 0}).to_csv(path, index=False)
    return path


def _cfg(corpus, backbone, out, **overrides) -> PretrainConfig:
    values = dict(files=[str(corpus)], columns=["a", "b"], backbone=str(backbone), output_dir=str(out), steps=4, batch_size=8,
                  lr=1e-3, warmup_ratio=0.1, save_every=2, seed=0, device="cpu")
    values.update(overrides)
    return PretrainConfig(**values)


def _pair_forward(folder: Path):
    """Load `folder` as a kit backbone, take one training step and predict: outputs finite, shapes right."""
    from kagglekit.models.pair_model import build_model

    model, tokenizer = build_model(folder, head="mean")
    enc = tokenizer(["1 2 3", "the cat"], ["4 5", "the dog sat"], padding=True, return_tensors="pt")
    kwargs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    model.train()
    loss = torch.nn.functional.mse_loss(model(**kwargs), torch.tensor([0.0, 1.0]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        assert model(**kwargs).shape == (2,)
    return model


def _assert_encoder_saved(model, folder: Path, prefix: str):
    """The loaded backbone holds exactly the encoder weights the MLM run wrote (pooler aside: MLM has none)."""
    saved = load_file(str(folder / "model.safetensors"))
    own = {k: v for k, v in model.backbone.state_dict().items() if not k.startswith("pooler.")}
    assert own
    for name, value in own.items():
        if f"{prefix}{name}" in saved:
            assert torch.equal(value, saved[f"{prefix}{name}"]), name
    assert sum(f"{prefix}{name}" in saved for name in own) >= len(own) - 2  # position_ids-like buffers may be absent


def test_loss_falls_and_writes_log_and_curve(corpus, tiny_bert, tmp_path):
    cfg = _cfg(corpus, tiny_bert, tmp_path / "out", steps=60, save_every=0)
    result = run_pretraining(cfg)
    log = pd.read_csv(result["loss_log"])
    assert list(log["step"]) == list(range(1, 61)) and result["steps"] == 60 and result["texts"] == 52
    first, last = log["loss"][:10].mean(), log["loss"][-10:].mean()
    assert last < first - 1.0, (first, last)
    assert log["lr"].iloc[0] == 0.0 and log["lr"].max() == pytest.approx(1e-3)  # warmup from 0 to the peak
    import matplotlib.image

    image = matplotlib.image.imread(result["loss_curve"])  # a real plot: a PNG with lines on it
    assert image.shape[0] > 200 and image.shape[1] > 300 and image[..., :3].std() > 0.05
    assert result["checkpoints"] == [str(tmp_path / "out" / "checkpoint-60")]
    assert (tmp_path / "out" / "last" / "model.safetensors").is_file()


def test_checkpoints_are_kit_backbones(corpus, tiny_bert, tmp_path):
    out = tmp_path / "out"
    result = run_pretraining(_cfg(corpus, tiny_bert, out, steps=4, save_every=2, keep_checkpoints=1))
    assert result["checkpoints"] == [str(out / "checkpoint-4")]  # keep_checkpoints=1 removed checkpoint-2
    for folder in (out / "checkpoint-4", out / "last"):
        meta = json.loads((folder / "pretrain.json").read_text())
        assert meta["step"] == 4 and meta["config"]["steps"] == 4
        assert (folder / "vocab.txt").is_file() and (folder / "tokenizer_config.json").is_file()
        model = _pair_forward(folder)
        _assert_encoder_saved(model, folder, "bert.")
    a, b = load_file(str(out / "checkpoint-4" / "model.safetensors")), load_file(str(out / "last" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _wordlevel_tokenizer(folder: Path) -> Path:
    """A desensitized-id tokenizer: the words "1".."200" plus BERT's specials, pairs as [CLS] a [SEP] b [SEP]."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(specials + [str(i) for i in range(1, 201)])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]", model_max_length=128)
    tokenizer.save_pretrained(str(folder))
    return folder


def _id_corpus(path: Path, rows: int = 40) -> Path:
    """GAIIC-style: no header, tab-separated "ids a", "ids b", label."""
    rng = np.random.default_rng(0)
    lines = ["\t".join([" ".join(map(str, rng.integers(1, 201, rng.integers(3, 15)))) for _ in range(2)] + ["1"])
             for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_nezha_from_scratch_with_id_tokenizer(tmp_path):
    tokenizer_dir = _wordlevel_tokenizer(tmp_path / "tok")
    corpus = _id_corpus(tmp_path / "train.tsv")
    cfg = PretrainConfig(files=[str(corpus)], columns=["0", "1"], header=False, tokenizer_dir=str(tokenizer_dir),
                         from_scratch_config={"model_type": "nezha", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
                                              "intermediate_size": 64, "max_relative_position": 16},
                         output_dir=str(tmp_path / "out"), steps=6, batch_size=8, lr=1e-3, save_every=3, device="cpu",
                         max_ngram=2, whole_word=True)
    assert len(read_corpus(cfg)) == 80  # both text columns, not the label
    result = run_pretraining(cfg)
    assert result["steps"] == 6 and np.isfinite(result["final_loss"])
    folder = tmp_path / "out" / "checkpoint-3"
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "nezha" and config["vocab_size"] == 205
    model = _pair_forward(folder)
    from kagglekit.models.nezha import NezhaModel

    assert isinstance(model.backbone, NezhaModel)
    _assert_encoder_saved(model, folder, "nezha.")


def test_nezha_backbone_continues_from_its_weights(corpus, tiny_models, tmp_path):
    from kagglekit.models.nezha import NezhaModel

    folder = tiny_models("nezha")
    model, _ = build_mlm_model(_cfg(corpus, folder, tmp_path / "out"))
    original = NezhaModel.from_pretrained(str(folder))
    mine = model.nezha.state_dict()
    for name, value in original.state_dict().items():
        if not name.startswith("pooler."):
            assert torch.equal(mine[name], value), name
    assert not any(k.startswith("pooler.") for k in mine)  # as 4.x's NezhaForMaskedLM: no pooler
    result = run_pretraining(_cfg(corpus, folder, tmp_path / "out", steps=2, save_every=0))
    _pair_forward(Path(result["last_dir"]))


@pytest.mark.skipif(_transformers_major() >= 5, reason="transformers 4.x's NezhaForMaskedLM is the reference")
def test_nezha_mlm_matches_transformers_4(tmp_path, corpus, tiny_models):
    """Both ways: 4.x's NezhaForMaskedLM loads the kit's MLM folder, and the kit loads 4.x's, with equal logits."""
    from transformers import NezhaForMaskedLM as Reference

    from kagglekit.models.nezha import NezhaForMaskedLM

    torch.manual_seed(0)
    result = run_pretraining(_cfg(corpus, tiny_models("nezha"), tmp_path / "out", steps=2, save_every=0))
    ids = torch.tensor([[2, 10, 11, 12, 3, 0], [2, 20, 21, 3, 0, 0]])
    mask = (ids != 0).long()
    ours = NezhaForMaskedLM.from_pretrained(result["last_dir"]).eval()
    theirs = Reference.from_pretrained(result["last_dir"]).eval()
    with torch.no_grad():
        assert torch.allclose(ours(ids, mask).logits, theirs(ids, attention_mask=mask).logits, atol=1e-5)
    theirs.save_pretrained(str(tmp_path / "ref"))
    back, info = NezhaForMaskedLM.from_pretrained(str(tmp_path / "ref"), output_loading_info=True)
    assert not info["missing_keys"]
    with torch.no_grad():
        assert torch.allclose(back.eval()(ids, mask).logits, theirs(ids, attention_mask=mask).logits, atol=1e-5)


class _Killed(Exception):
    pass


def test_resume_equals_uninterrupted_run(corpus, tiny_bert, tmp_path, monkeypatch):
    import kagglekit.train.pretrain as pretrain

    steps = dict(steps=7, save_every=3, batch_size=6)  # 52 texts: passes of 9 batches; dropout on (RNG restored)
    full = run_pretraining(_cfg(corpus, tiny_bert, tmp_path / "full", **steps))

    write_log = pretrain._write_log
    calls = []

    def kill_after_first_save(*args):
        write_log(*args)
        calls.append(1)
        raise _Killed  # as if the process died right after the step-3 checkpoint and state

    monkeypatch.setattr(pretrain, "_write_log", kill_after_first_save)
    with pytest.raises(_Killed):
        run_pretraining(_cfg(corpus, tiny_bert, tmp_path / "cut", **steps))
    monkeypatch.setattr(pretrain, "_write_log", write_log)
    assert not (tmp_path / "cut" / "checkpoint-6").exists()
    resumed = run_pretraining(_cfg(corpus, tiny_bert, tmp_path / "cut", **steps), resume=True)

    a, b = load_file(str(Path(full["last_dir"]) / "model.safetensors")), load_file(str(Path(resumed["last_dir"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-6, rtol=0), key
    assert pd.read_csv(full["loss_log"])["loss"].tolist() == pytest.approx(pd.read_csv(resumed["loss_log"])["loss"].tolist(), abs=1e-6)


def test_non_finite_losses_stop_pretraining_as_they_stop_a_fold(corpus, tiny_bert, tmp_path, monkeypatch):
    """The shared divergence rule: `nonfinite_limit` NaN losses in a row raise TrainingDiverged; the
    skipped steps leave the weights alone and the checkpoint before them stays."""
    import dataclasses

    import kagglekit.train.pretrain as pretrain
    from kagglekit.train.loop import TrainingDiverged

    real, calls = pretrain.masked_lm_loss, []

    def nan_from_step_4(output, labels):
        calls.append(1)
        loss = real(output, labels)
        return loss * float("nan") if len(calls) > 3 else loss

    monkeypatch.setattr(pretrain, "masked_lm_loss", nan_from_step_4)
    cfg = _cfg(corpus, tiny_bert, tmp_path / "out", steps=20, save_every=3)
    cfg = dataclasses.replace(cfg, nonfinite_limit=5)
    with pytest.raises(TrainingDiverged, match=r"pretraining: the training loss was NaN or infinite for 5 steps in a row \(step 8\)"):
        run_pretraining(cfg)
    assert len(calls) == 8 and not (tmp_path / "out" / "checkpoint-9").exists()
    log = pd.read_csv(tmp_path / "out" / "loss_log.csv")  # as of the last checkpoint
    assert log["step"].tolist() == list(range(1, 7))
    assert np.isfinite(log["loss"][:3]).all() and log["loss"][3:].isna().all()
    a, b = (load_file(str(tmp_path / "out" / f"checkpoint-{s}" / "model.safetensors")) for s in (3, 6))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # the NaN steps changed no weight


def test_batches_and_masks_depend_on_seed_and_step_only():
    from kagglekit.train.pretrain import batch_rows

    seen = np.concatenate([batch_rows(10, 3, 0, s) for s in range(4)])  # one pass: 4 batches, the last of 1 row
    assert sorted(seen) == list(range(10))
    assert (batch_rows(10, 3, 0, 5) == batch_rows(10, 3, 0, 5)).all()
    assert not (np.concatenate([batch_rows(10, 3, 0, s) for s in range(4, 8)]) == seen).all()  # reshuffled each pass


def test_bad_inputs_name_the_key(corpus, tiny_bert, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(FileNotFoundError, match="files"):
        run_pretraining(_cfg(corpus, tiny_bert, out, files=[str(tmp_path / "missing.csv")]))
    with pytest.raises(ValueError, match="columns.*'text'"):
        run_pretraining(_cfg(corpus, tiny_bert, out, columns=["a", "text"]))
    empty = tmp_path / "empty.csv"
    pd.DataFrame({"a": ["", " "], "b": ["", ""]}).to_csv(empty, index=False)
    with pytest.raises(ValueError, match="empty"):
        run_pretraining(_cfg(empty, tiny_bert, out))
    with pytest.raises(ValueError, match="backbone"):
        run_pretraining(_cfg(corpus, "", out))
    with pytest.raises(FileNotFoundError, match="backbone"):
        run_pretraining(_cfg(corpus, tmp_path / "nowhere", out))
    with pytest.raises(ValueError, match="not both"):
        run_pretraining(_cfg(corpus, tiny_bert, out, tokenizer_dir=str(tiny_bert), from_scratch_config={"model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type"):
        run_pretraining(_cfg(corpus, "", out, tokenizer_dir=str(tiny_bert), from_scratch_config={"hidden_size": 32}))
    with pytest.raises(ValueError, match="columns"):
        run_pretraining(_cfg(corpus, tiny_bert, out, columns=[]))
    with pytest.raises(ValueError, match="mask_rate"):
        run_pretraining(_cfg(corpus, tiny_bert, out, mask_rate=1.5))
    with pytest.raises(ValueError, match="ngram_probs"):
        run_pretraining(_cfg(corpus, tiny_bert, out, max_ngram=2, ngram_probs=[1.0, 1.0, 1.0]))
    assert not out.exists()  # nothing written before the input is known to be good


def test_load_pretrain_config(tmp_path):
    path = tmp_path / "pretrain.yaml"
    path.write_text("files: [a.tsv, b.tsv]\ncolumns: ['0', '1']\nheader: false\ntokenizer_dir: tok\n"
                    "from_scratch_config: {model_type: nezha, hidden_size: 64}\nsteps: 100\n")
    cfg = load_pretrain_config(path, ["steps=20", "lr=1e-4", "ngram_probs=0.5,0.3,0.2", "whole_word=yes"])
    assert cfg.files == ["a.tsv", "b.tsv"] and cfg.columns == ["0", "1"] and cfg.header is False
    assert cfg.from_scratch_config == {"model_type": "nezha", "hidden_size": 64}
    assert (cfg.steps, cfg.lr, cfg.ngram_probs, cfg.whole_word) == (20, 1e-4, [0.5, 0.3, 0.2], True)
    overrides = ["files=x.csv,y.csv", "columns=anchor", "backbone=m", 'from_scratch_config={"a": 1}', "tokenizer_dir=tok", "backbone="]
    cfg = load_pretrain_config(None, overrides)
    assert cfg.files == ["x.csv", "y.csv"] and cfg.from_scratch_config == {"a": 1} and cfg.backbone == ""
    with pytest.raises(ValueError, match="Did you mean 'steps'"):
        load_pretrain_config(None, ["step=3"])
    with pytest.raises(ValueError, match="'steps'.*expected int"):
        load_pretrain_config(None, ["steps=1.5"])
    path.write_text("mask_rte: 0.2\n")
    with pytest.raises(ValueError, match="Did you mean 'mask_rate'"):
        load_pretrain_config(path)
    with pytest.raises(FileNotFoundError, match="--config"):
        load_pretrain_config(tmp_path / "none.yaml")


def test_a_corpus_file_is_read_like_every_csv_of_the_kit(tmp_path):
    """A BOM is dropped; a column named twice is refused naming the config key and the file."""
    good = tmp_path / "good.csv"
    good.write_bytes("\ufeffq1,q2\nhow are you,fine thanks\n".encode())
    cfg = PretrainConfig(files=[str(good)], columns=["q1", "q2"], header=True, sep=",")
    assert read_corpus(cfg) == ["how are you", "fine thanks"]
    twice = tmp_path / "twice.csv"
    twice.write_text("q1,q1\na,b\n")
    with pytest.raises(ValueError, match=r"pretrain config key 'files'.*twice.csv names column 'q1' twice"):
        read_corpus(PretrainConfig(files=[str(twice)], columns=["q1"], header=True, sep=","))
