"""The training engine end to end on a tiny model: seeds, resume after SIGKILL, evaluation schedule,
early stopping, accumulation, EMA evaluation, the step log and the stop on non-finite losses."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.train import train_folds
from kagglekit.train.state import load_state, state_path

CONFIG = ROOT / "configs" / "uspppm.yaml"


def overrides(backbone, out, *extra):
    return [f"backbone={backbone}", f"output_dir={out}", "max_rows=240", "n_folds=2", "epochs=2", "max_len=40",
            "lr=1e-3", "batch_size=8", *extra]


def train(backbone, out, *extra, fold=0, resume=False):
    return train_folds(load_config(CONFIG, overrides(backbone, out, *extra)), folds=fold, resume=resume)


def oof(out):
    return pd.read_csv(out / "oof.csv", dtype={"id": str})


def test_the_same_seed_gives_the_same_oof(tiny_bert, tmp_path):
    train(tiny_bert, tmp_path / "a", "msd_samples=2")
    train(tiny_bert, tmp_path / "b", "msd_samples=2")
    train(tiny_bert, tmp_path / "c", "msd_samples=2", "seed=7")
    assert oof(tmp_path / "a")["pred"].tolist() == oof(tmp_path / "b")["pred"].tolist()
    assert not np.allclose(oof(tmp_path / "a")["pred"], oof(tmp_path / "c")["pred"])


def test_resume_after_sigkill_mid_epoch_gives_the_uninterrupted_result(tiny_bert, tmp_path):
    extra = ("checkpoint_every=2", "eval_every=7", "ema=0.9", "adversary=fgm", "accum_steps=2", "msd_samples=2")
    train(tiny_bert, tmp_path / "whole", *extra)
    reference = oof(tmp_path / "whole")

    run = tmp_path / "killed"
    args = [sys.executable, "-m", "kagglekit", "train", "--config", str(CONFIG), "--fold", "0"]
    for item in overrides(tiny_bert, run, *extra):
        args += ["--set", item]
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    path, killed_at = state_path(run, 0), None
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None:
        if path.is_file():
            state = load_state(path)
            if state["epoch"] == 0 and state["batch"] > 0:
                child.send_signal(signal.SIGKILL)
                killed_at = (state["epoch"], state["batch"], state["step"])
                break
        time.sleep(0.01)
    child.wait(timeout=60)
    assert killed_at is not None, "the child finished before a mid-epoch state was saved"
    assert child.returncode == -signal.SIGKILL and not (run / "oof.csv").exists()

    card = train(tiny_bert, run, *extra, resume=True)
    resumed = oof(run)
    assert resumed["id"].tolist() == reference["id"].tolist()
    np.testing.assert_allclose(resumed["pred"], reference["pred"], rtol=0, atol=1e-6)
    assert card["folds"]["0"]["score"] == pytest.approx(json.loads((tmp_path / "whole" / "run.json").read_text())["folds"]["0"]["score"], abs=1e-6)
    assert not path.exists(), "a complete fold keeps no resume state"
    # a second --resume finds the fold complete and trains nothing
    before = (run / "fold0" / "model.safetensors").stat().st_mtime_ns
    train(tiny_bert, run, *extra, resume=True)
    assert (run / "fold0" / "model.safetensors").stat().st_mtime_ns == before


def test_evaluation_schedule_log_and_curve(tiny_bert, tmp_path):
    card = train(tiny_bert, tmp_path / "r", "eval_every=4", "accum_steps=3")
    steps_per_epoch = int(np.ceil(np.ceil(120 / 8) / 3))  # 120 training rows, batches of 8, 3 per optimizer step
    history = card["folds"]["0"]["history"]
    expected = [s for e in range(2) for s in range(e * steps_per_epoch + 1, (e + 1) * steps_per_epoch + 1) if s % 4 == 0 and s != (e + 1) * steps_per_epoch]
    expected = sorted(expected + [steps_per_epoch, 2 * steps_per_epoch])
    assert [h["step"] for h in history] == expected
    log = pd.read_csv(tmp_path / "r" / "fold0" / "train_log.csv")
    assert list(log.columns) == ["step", "epoch", "loss", "lr", "score"]
    assert log["step"].tolist() == list(range(1, 2 * steps_per_epoch + 1))
    assert log.dropna(subset=["score"])["step"].tolist() == expected
    np.testing.assert_allclose(log.dropna(subset=["score"])["score"], [h["score"] for h in history])
    assert (tmp_path / "r" / "fold0" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_early_stopping_after_patience_evaluations(tiny_bert, tmp_path):
    # lr 0 everywhere: the score never improves after the first evaluation
    card = train(tiny_bert, tmp_path / "r", "lr=1e-12", "head_lr=1e-12", "eval_every=2", "patience=2", "epochs=5", "scheduler=constant")
    history = card["folds"]["0"]["history"]
    assert [h["improved"] for h in history] == [True, False, False]
    assert card["folds"]["0"]["best_epoch"] == 1


def test_ema_evaluation_uses_the_averaged_weights(tiny_bert, tmp_path):
    from safetensors.torch import load_file

    source = load_file(str(tiny_bert / "model.safetensors"))
    key = "encoder.layer.0.attention.self.query.weight"
    drift = {}
    for ema_eval in ("true", "false"):
        train(tiny_bert, tmp_path / ema_eval, "ema=0.999999", f"ema_eval={ema_eval}", "lr=1e-2", "epochs=1")
        saved = load_file(str(tmp_path / ema_eval / "fold0" / "model.safetensors"))
        drift[ema_eval] = (saved["backbone." + key] - source[key]).abs().max().item()
    assert drift["true"] < 1e-4 < drift["false"]  # an average that barely moves vs the trained weights


def test_accumulated_micro_steps_equal_one_big_step(tiny_bert):
    from kagglekit.data.batching import PairEncodings
    from kagglekit.losses import get_loss
    from kagglekit.models.pair_model import build_model
    from kagglekit.train.loop import train_step

    texts = (["alpha beta", "gamma", "delta epsilon zeta", "eta"], ["one", "two three", "four", "five six"])
    labels = torch.tensor([0.0, 0.25, 0.75, 1.0])
    weights = []
    for chunks in ([[0, 1, 2, 3]], [[0, 1], [2, 3]]):
        torch.manual_seed(0)
        model, tok = build_model(tiny_bert, dropout=0.0)
        model.eval()  # no dropout: the two runs see the same function
        enc = PairEncodings(tok, *texts, max_len=16, labels=labels)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        for i, rows in enumerate(chunks):
            batch = enc.collate(rows)
            train_step(model, batch, loss_fn=get_loss("mse").fn, optimizer=opt, scheduler=sched, scaler=scaler, amp_dtype=None,
                       max_grad_norm=0, accum_steps=len(chunks), boundary=i == len(chunks) - 1)
        weights.append(model.fc.weight.detach().clone())
    # padding differs between the halves and the whole, but padding never changes the outputs
    torch.testing.assert_close(weights[0], weights[1], rtol=0, atol=1e-6)


def test_non_finite_losses_stop_the_fold_and_keep_the_last_good_checkpoint(tiny_bert, tmp_path, monkeypatch):
    import kagglekit.train.loop as loop

    real, calls = loop.compute_loss, {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        value = real(*args, **kwargs)
        return value * float("nan") if calls["n"] > 20 else value  # epoch 1 has 15 batches: epoch 2 diverges

    monkeypatch.setattr(loop, "compute_loss", flaky)
    with pytest.raises(loop.TrainingDiverged, match=r"fold 0: the training loss was NaN or infinite for 4 steps in a row .* Try a lower lr"):
        train(tiny_bert, tmp_path / "r", "nonfinite_limit=4")
    folder = tmp_path / "r" / "fold0"
    meta = json.loads((folder / "kagglekit.json").read_text())
    assert meta["epoch"] == 1  # the checkpoint of the good epoch
    log = pd.read_csv(folder / "train_log.csv")
    assert np.isfinite(log["loss"].iloc[:15]).all() and log["loss"].iloc[-1:].isna().all()


def test_cli_resume_flag_and_bad_engine_keys(tiny_bert, tmp_path, capsys):
    args = ["train", "--config", str(CONFIG), "--fold", "0", "--resume"]
    for item in overrides(tiny_bert, tmp_path / "r", "epochs=1"):
        args += ["--set", item]
    assert main(args) == 0
    assert main(args) == 0
    assert "fold(s) [0] are complete, skipping them" in capsys.readouterr().out
    for bad, message in (("adv_alpha=0.5", r"'adv_alpha' \(0.5\) does nothing with adversary='none'"),
                         ("layer_decay=0", r"'layer_decay' must be in \(0, 1\]"), ("accum_steps=0", r"'accum_steps' must be 1 or more")):
        with pytest.raises(ValueError, match=message):
            load_config(CONFIG, [bad])


def test_two_fold_processes_share_one_run_folder(tiny_bert, tmp_path):
    """One fold per GPU, simulated on CPU: two processes train folds 0 and 1 of one run at once; the run
    card and oof.csv end up with both (they merge under the run folder's lock)."""
    from kagglekit.train.parallel import run_folds_parallel

    run = tmp_path / "r"
    sets = [item for o in overrides(tiny_bert, run, "epochs=1") for item in ("--set", o)]

    def launch(fold, device, log_path):
        log = open(log_path, "w")
        return subprocess.Popen([sys.executable, "-m", "kagglekit", "train", "--config", str(CONFIG), "--fold", str(fold), *sets],
                                stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})

    codes = run_folds_parallel([0, 1], [0, 1], launch, run / "logs", poll=0.1)
    assert codes == {0: 0, 1: 0}
    card = json.loads((run / "run.json").read_text())
    assert set(card["folds"]) == {"0", "1"} and card["cv_folds"] == [0, 1]
    folds = pd.read_csv(run / "folds.csv", dtype={"id": str})
    merged = oof(run)
    assert merged["id"].tolist() == folds["id"].tolist() and (merged["fold"].to_numpy() == folds["fold"].to_numpy()).all()
    assert {"fold0.log", "fold1.log"} <= {p.name for p in (run / "logs").iterdir()}


@pytest.mark.skipif(not __import__("kagglekit.kaggle", fromlist=["cpu_bf16"]).cpu_bf16(), reason="this CPU has no bf16 in hardware")
def test_bf16_on_a_cpu_with_it_in_hardware_trains_repeatably_near_fp32(tiny_bert, tmp_path):
    """precision=bf16 on a CPU is autocast: the same seed gives the same predictions, near fp32's but not equal."""
    train(tiny_bert, tmp_path / "fp32")
    train(tiny_bert, tmp_path / "bf16", "precision=bf16")
    train(tiny_bert, tmp_path / "bf16-again", "precision=bf16")
    exact, bf16 = oof(tmp_path / "fp32")["pred"].to_numpy(), oof(tmp_path / "bf16")["pred"].to_numpy()
    assert bf16.tolist() == oof(tmp_path / "bf16-again")["pred"].tolist()
    assert not np.array_equal(exact, bf16)
    assert np.corrcoef(exact, bf16)[0, 1] > 0.9
