"""Pooling and the pair model: values against hand computation, padding invariance, folder round trips."""

import dataclasses
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from kagglekit.data.batching import PairEncodings
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder
from kagglekit.models.forward import run_inference
from kagglekit.run import FoldMeta

pytestmark = pytest.mark.compat

PAIRS = (["abatement of noise", "lens", "a much longer anchor phrase about gas flow"], ["noise reduction; physics", "optical element", "airflow"])


def test_model_output_does_not_depend_on_batch_padding(tiny_bert):
    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert)
    model.eval()
    enc = PairEncodings(tokenizer, *PAIRS, max_len=32)
    together = run_inference(model, enc, batch_size=3, device=torch.device("cpu"))  # padded to the longest
    alone = np.array([run_inference(model, PairEncodings(tokenizer, [a], [b], 32), batch_size=1, device=torch.device("cpu"))[0] for a, b in zip(*PAIRS)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert enc.lengths[2] > enc.lengths[1]  # the check above really mixed lengths


def test_truncation_respects_max_len(tiny_bert):
    _, tokenizer = build_model(tiny_bert)
    enc = PairEncodings(tokenizer, ["word " * 100], ["other " * 100], max_len=16)
    assert enc.lengths.tolist() == [16]
    batch = enc.collate([0])
    assert batch["input_ids"].shape == (1, 16) and batch["attention_mask"].sum() == 16


def test_folder_round_trip_in_a_fresh_process_without_the_backbone(tiny_bert, tmp_path):
    backbone = shutil.copytree(tiny_bert, tmp_path / "backbone")
    torch.manual_seed(1)
    model, tokenizer = build_model(backbone)
    save_model_folder(model, tokenizer, tmp_path / "fold0", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    enc = PairEncodings(tokenizer, *PAIRS, max_len=32)
    before = run_inference(model.eval(), enc, batch_size=2, device=torch.device("cpu"))
    shutil.rmtree(backbone)
    np.save(tmp_path / "before.npy", before)
    code = f"""
import numpy as np, torch
from kagglekit.models.pair_model import load_model_folder
from kagglekit.data.batching import PairEncodings
from kagglekit.models.forward import run_inference
model, tok, meta = load_model_folder({str(tmp_path / 'fold0')!r})
enc = PairEncodings(tok, {PAIRS[0]!r}, {PAIRS[1]!r}, max_len=meta.max_len)
after = run_inference(model, enc, batch_size=2, device=torch.device("cpu"))
assert np.array_equal(after, np.load({str(tmp_path / 'before.npy')!r})), (after,)
print("identical")
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "identical" in result.stdout
    assert not list(tmp_path.glob(".fold0*")), "a temporary folder was left behind"


def test_incomplete_folders_fail_clearly(tiny_bert, tmp_path):
    model, tokenizer = build_model(tiny_bert)
    folder = save_model_folder(model, tokenizer, tmp_path / "m", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"model folder .* is incomplete: model.safetensors is missing"):
        load_model_folder(folder)
    with pytest.raises(FileNotFoundError, match=r"not a kagglekit model folder: kagglekit.json is missing"):
        load_model_folder(tiny_bert)
    with pytest.raises(FileNotFoundError, match=r"backbone: model folder not found"):
        build_model(tmp_path / "nowhere")


def test_save_replaces_a_folder_atomically(tiny_bert, tmp_path):
    model, tokenizer = build_model(tiny_bert)
    meta = FoldMeta(task="uspppm", max_len=32, activation="sigmoid")
    folder = save_model_folder(model, tokenizer, tmp_path / "m", dataclasses.replace(meta, epoch=1))
    (folder / "stale.txt").write_text("from the old save")
    save_model_folder(model, tokenizer, tmp_path / "m", dataclasses.replace(meta, epoch=2))
    assert not (folder / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_model_folders_keep_the_vocabulary_files_older_transformers_need(tiny_models, tmp_path):
    # transformers 5 writes only tokenizer.json; 4.x loads a DeBERTa-v3 tokenizer only from spm.model
    source = tiny_models("deberta-v2")
    assert (source / "spm.model").is_file()
    model, tokenizer = build_model(source)
    meta = FoldMeta(task="uspppm", max_len=32, activation="sigmoid")
    folder = save_model_folder(model, tokenizer, tmp_path / "fold0", meta)
    assert (folder / "spm.model").read_bytes() == (source / "spm.model").read_bytes()
    # and a folder re-saved from a loaded folder keeps it too
    again, tok, _ = load_model_folder(folder)
    second = save_model_folder(again, tok, tmp_path / "copy", meta)
    assert (second / "spm.model").is_file()


class Scale(torch.nn.Module):
    """A stand-in for a dropout mask: multiplies by a known constant."""

    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x * self.c


def batch_of(tokenizer):
    return PairEncodings(tokenizer, *PAIRS, max_len=32).collate([0, 1, 2])


def test_multi_sample_dropout_eval_equals_dropout_off(tiny_bert):
    torch.manual_seed(0)
    msd, tokenizer = build_model(tiny_bert, dropout=[0.5, 0.3, 0.1], msd_samples=3)
    plain, _ = build_model(tiny_bert, dropout=0.0)
    plain.load_state_dict(msd.state_dict())
    batch = batch_of(tokenizer)
    with torch.no_grad():
        assert torch.equal(msd.eval()(**batch), plain.eval()(**batch))


@pytest.mark.parametrize("average", ["logits", "loss"])
def test_multi_sample_dropout_averages_logits_or_losses(tiny_bert, average):
    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert, dropout=0.2, msd_samples=3, msd_average=average)
    model.train()
    model.backbone.eval()  # keep the backbone deterministic; only the head's samples vary
    model.dropouts = torch.nn.ModuleList(Scale(c) for c in (0.5, 1.0, 2.0))
    batch = batch_of(tokenizer)
    with torch.no_grad():
        hidden = model.backbone(**batch).last_hidden_state
        pooled = model.head(hidden, batch["attention_mask"])
        per_sample = torch.stack([model.fc(pooled * c).squeeze(-1) for c in (0.5, 1.0, 2.0)])  # (S, B)
        out = model(**batch)
    if average == "logits":
        torch.testing.assert_close(out, per_sample.mean(0), rtol=0, atol=1e-6)
    else:
        torch.testing.assert_close(out, per_sample, rtol=0, atol=1e-6)
        assert model.returns_samples


def test_multi_sample_dropout_loss_average_in_the_training_step(tiny_bert):
    from kagglekit.losses import get_loss
    from kagglekit.train.loop import train_step

    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert, dropout=0.2, msd_samples=2, msd_average="loss")
    model.train()
    model.backbone.eval()
    model.dropouts = torch.nn.ModuleList(Scale(c) for c in (0.5, 2.0))
    batch = {**batch_of(tokenizer), "labels": torch.tensor([0.0, 0.5, 1.0])}
    bce = get_loss("bce").fn
    with torch.no_grad():
        samples = model(**{k: v for k, v in batch.items() if k != "labels"})
        expected = (bce(samples[0], batch["labels"]) + bce(samples[1], batch["labels"])) / 2
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    value = train_step(model, dict(batch), loss_fn=bce, optimizer=opt, scheduler=sched, scaler=torch.amp.GradScaler("cpu", enabled=False), amp_dtype=None, max_grad_norm=0)
    assert value == pytest.approx(expected.item(), abs=1e-6)


def test_model_structure_round_trips_through_the_folder(tiny_bert, tmp_path):
    model, tokenizer = build_model(tiny_bert, dropout=[0.1, 0.2], msd_samples=2, msd_average="loss")
    folder = save_model_folder(model, tokenizer, tmp_path / "m", FoldMeta(task="uspppm", max_len=32, activation="sigmoid"))
    loaded, _, meta = load_model_folder(folder)
    assert meta.model == model.init_args and len(loaded.dropouts) == 2 and loaded.msd_average == "loss"
