"""CUDA checks: fp16 autocast with GradScaler under every adversary, overflow handling, and a whole
run plus predict on the GPU. Skipped without a CUDA device (CI has none); run them on a GPU machine:

    HF_HUB_OFFLINE=1 python -m pytest -q tests/test_gpu.py
"""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from kagglekit.losses import get_loss
from kagglekit.models.pair_model import build_model
from kagglekit.train.adversarial import AWP, FGM, PGD
from kagglekit.train.loop import train_step

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

BCE = get_loss("bce").fn
ANCHORS = ["engine housing", "wireless antenna", "fabric softener", "concrete slab", "gear shaft", "solar cell"]
TARGETS = ["motor casing", "radio aerial receiver", "washing machine", "roof tile", "drive axle", "photovoltaic panel"]
LABELS = (0.0, 0.25, 0.75, 1.0, 0.5, 1.0)
MAKERS = {
    "none": lambda m: None,
    "fgm": lambda m: FGM(m, epsilon=0.5),
    "pgd": lambda m: PGD(m, epsilon=0.5, alpha=0.2, steps=3),
    "awp": lambda m: AWP(m, adv_lr=0.5, adv_eps=0.01),
}


class _NoScheduler:
    def step(self) -> None:
        pass


def _model(folder, seed=0):
    torch.manual_seed(seed)
    model, tokenizer = build_model(folder, dropout=0.0)
    return model.cuda().eval(), tokenizer  # eval: no dropout, so fp16 and fp32 see the same network


def _batch(tokenizer):
    enc = tokenizer(ANCHORS, TARGETS, padding=True, return_tensors="pt")
    batch = {k: v.cuda() for k, v in enc.items()}
    batch["labels"] = torch.tensor(LABELS, device="cuda")
    return batch


def _real_grads(model, scale: float) -> torch.Tensor:
    return torch.cat([(p.grad.float() / scale).flatten() for p in model.parameters() if p.grad is not None])


@pytest.mark.parametrize("name", list(MAKERS))
def test_fp16_scaled_gradient_equals_fp32_gradient(tiny_bert, name):
    """One accumulating micro-step (no optimizer step) under fp16 + GradScaler: the gradient, divided by
    the scale, points where the fp32 gradient points, with the adversary's part added in both; and the
    attack restores every weight bit for bit."""
    grads = {}
    for precision in ("fp32", "fp16"):
        model, tokenizer = _model(tiny_bert)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        scaler = torch.amp.GradScaler("cuda", init_scale=2.0**12, enabled=precision == "fp16")
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        loss = train_step(
            model, _batch(tokenizer), loss_fn=BCE, optimizer=optimizer, scheduler=_NoScheduler(), scaler=scaler,
            amp_dtype=torch.float16 if precision == "fp16" else None, max_grad_norm=1.0, boundary=False,
            adversary=MAKERS[name](model),
        )
        assert math.isfinite(loss)
        for n, p in model.named_parameters():
            assert torch.equal(p.detach(), before[n]), f"{name} left {n} changed after its attack"
        grads[precision] = _real_grads(model, scaler.get_scale() if precision == "fp16" else 1.0)
    cosine = torch.nn.functional.cosine_similarity(grads["fp16"], grads["fp32"], dim=0).item()
    ratio = (grads["fp16"].norm() / grads["fp32"].norm()).item()
    assert cosine > 0.99, f"{name}: fp16 gradient direction off (cosine {cosine:.4f})"
    assert 0.95 < ratio < 1.05, f"{name}: fp16 gradient norm off by {ratio:.3f} (scale not undone?)"


@pytest.mark.parametrize("name", list(MAKERS))
def test_fp16_training_with_adversary_lowers_the_loss(tiny_bert, name):
    model, tokenizer = _model(tiny_bert)
    model.train()
    scaler = torch.amp.GradScaler("cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    adversary = MAKERS[name](model)
    losses = [
        train_step(model, _batch(tokenizer), loss_fn=BCE, optimizer=optimizer, scheduler=_NoScheduler(), scaler=scaler,
                   amp_dtype=torch.float16, max_grad_norm=1.0, adversary=adversary)
        for _ in range(40)
    ]
    assert all(math.isfinite(v) for v in losses), losses
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.02, losses
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    assert 0 < scaler.get_scale() < float("inf")


def test_fp16_overflow_skips_the_step_and_lowers_the_scale(tiny_bert):
    """A scale so large the fp16 gradient overflows: GradScaler skips the optimizer step (weights
    unchanged) and halves its scale, and the next step trains."""
    model, tokenizer = _model(tiny_bert)
    scaler = torch.amp.GradScaler("cuda", init_scale=2.0**100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    step = dict(loss_fn=BCE, optimizer=optimizer, scheduler=_NoScheduler(), scaler=scaler, amp_dtype=torch.float16, max_grad_norm=1.0)
    train_step(model, _batch(tokenizer), **step, adversary=FGM(model, epsilon=0.5))
    assert all(torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())
    assert scaler.get_scale() == 2.0**99
    for _ in range(120):  # each overflow halves the scale: it comes down into fp16's range
        train_step(model, _batch(tokenizer), **step)
        if scaler.get_scale() < 2.0**20:
            break
    train_step(model, _batch(tokenizer), **step)
    assert any(not torch.equal(p.detach(), before[n]) for n, p in model.named_parameters())


def test_auto_precision_on_this_gpu():
    from kagglekit.kaggle import resolve_precision

    expected = "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"
    assert resolve_precision("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_train_and_predict_on_the_gpu(tmp_path, tiny_bert, precision):
    """A whole run on CUDA (AWP + EMA + accumulation) and predict on CUDA equal predict on CPU in fp32,
    within what half precision allows."""
    if precision == "bf16" and not torch.cuda.is_bf16_supported(including_emulation=False):
        pytest.skip("no bf16 on this GPU")
    from kagglekit.config import load_config
    from kagglekit.infer.predict import predict
    from kagglekit.train import train_folds

    from conftest import ROOT, SAMPLE

    cfg = load_config(ROOT / "configs" / "uspppm.yaml", [
        f"backbone={tiny_bert}", f"output_dir={tmp_path / 'run'}", "device=cuda", f"precision={precision}",
        "epochs=2", "n_folds=2", "max_rows=300", "batch_size=16", "accum_steps=2", "adversary=awp", "ema=0.9",
        "lr=1e-3", "max_len=48",
    ])
    card = train_folds(cfg)
    assert card["precision"] == precision and card["device"].startswith("cuda")
    oof = pd.read_csv(tmp_path / "run" / "oof.csv")
    assert np.isfinite(oof["pred"]).all() and len(oof) == 300
    gpu = predict([tmp_path / "run"], SAMPLE / "test.csv", device="cuda", precision=precision)
    cpu = predict([tmp_path / "run"], SAMPLE / "test.csv", device="cpu", precision="fp32")
    assert list(gpu.iloc[:, 0]) == list(cpu.iloc[:, 0])
    diff = np.abs(gpu.iloc[:, 1].to_numpy() - cpu.iloc[:, 1].to_numpy()).max()
    assert diff < (2e-3 if precision == "fp16" else 2e-2), diff
