"""Faults the kit must survive: a predict killed mid-write, a full disk at checkpoint time.

The other two faults of the list are tested beside the loop they stop, in tests/test_engine.py:
a non-finite loss stops the fold with advice and keeps the last good checkpoint
(`test_non_finite_losses_stop_the_fold_and_keep_the_last_good_checkpoint`), and a SIGKILL mid-epoch
resumes to the uninterrupted result (`test_resume_after_sigkill_mid_epoch_gives_the_uninterrupted_result`).
"""

import errno
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import ROOT, SAMPLE
from kagglekit._io import StorageError, atomic_dir, write_csv
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.train import train_folds
from kagglekit.train.state import load_state, save_state

CONFIG = ROOT / "configs" / "uspppm.yaml"

# The child replaces DataFrame.to_csv: when it writes the submission's temporary file it writes half of
# the rows, tells the parent the temporary path (argv[1]) and waits to be killed.
SLOW_WRITER = """
import sys, time
from pathlib import Path
import pandas as pd

real = pd.DataFrame.to_csv

def half_then_hang(self, path, *args, **kwargs):
    if Path(path).name.startswith(".submission.csv."):
        real(self.iloc[: len(self) // 2], path, *args, **kwargs)
        Path(sys.argv[1]).write_text(str(path))
        time.sleep(600)
    return real(self, path, *args, **kwargs)

pd.DataFrame.to_csv = half_then_hang
from kagglekit.cli import main
sys.exit(main(sys.argv[2:]))
"""


def overrides(backbone, out, *extra) -> list[str]:
    return [f"backbone={backbone}", f"output_dir={out}", "max_rows=240", "n_folds=2", "max_len=40",
            "lr=1e-3", "batch_size=8", *extra]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def run(tiny_bert, tmp_path_factory) -> Path:
    """Fold 0 of a 2-fold run of the tiny bert, 1 epoch."""
    out = tmp_path_factory.mktemp("faults") / "run"
    train_folds(load_config(CONFIG, overrides(tiny_bert, out, "epochs=1")), folds=0)
    return out


def test_predict_killed_mid_write_leaves_the_previous_submission(run, tmp_path):
    out, marker = tmp_path / "submission.csv", tmp_path / "temp-path.txt"
    sample = pd.read_csv(SAMPLE / "sample_submission.csv", dtype={"id": str})
    write_csv(out, sample.assign(score=0.5))  # the previous submission: one constant score
    before = out.read_bytes()
    args = ["predict", "--models", str(run), "--data", str(SAMPLE / "test.csv"),
            "--sample-submission", str(SAMPLE / "sample_submission.csv"), "--out", str(out)]
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(marker), *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    deadline = time.time() + 120
    while time.time() < deadline and child.poll() is None and not marker.is_file():
        time.sleep(0.02)
    assert marker.is_file(), f"the child never reached the submission write: {child.stderr.read().decode()[-2000:]}"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    child.stderr.close()
    assert child.returncode == -signal.SIGKILL

    assert out.read_bytes() == before, "the previous submission.csv must survive a kill during the write"
    # SIGKILL runs no cleanup, so the half-written temporary file stays: hidden, beside the submission,
    # and never under the submission's name (Kaggle scores submission.csv only)
    temp = Path(marker.read_text())
    assert temp.parent == tmp_path and temp.name.startswith(".submission.csv.") and temp.suffix == ".tmp"
    assert len(pd.read_csv(temp)) == len(sample) // 2
    visible = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert visible == ["submission.csv", "submission_models.csv", "temp-path.txt"]

    # the next predict replaces the old submission with a complete one
    assert main(args) == 0
    sub = pd.read_csv(out, dtype={"id": str})
    assert sub["id"].tolist() == sample["id"].tolist() and (sub["score"] != 0.5).all()


def test_full_disk_at_the_second_checkpoint_keeps_the_first(tiny_bert, tmp_path, monkeypatch):
    import safetensors.torch

    import kagglekit.train.loop as loop
    from kagglekit.models.pair_model import load_model_folder

    real_save, saved = safetensors.torch.save_file, []

    def save_or_fill_the_disk(tensors, filename, *args, **kwargs):
        if saved:  # the second checkpoint: part of the file is written, then the disk is full
            Path(filename).write_bytes(b"\0" * 1024)
            raise OSError(errno.ENOSPC, "No space left on device", filename)
        real_save(tensors, filename, *args, **kwargs)
        saved.append({k: v.detach().clone() for k, v in tensors.items()})

    monkeypatch.setattr(safetensors.torch, "save_file", save_or_fill_the_disk)
    monkeypatch.setattr(loop, "is_better", lambda *args: True)  # every evaluation improves: epoch 2 saves again
    out = tmp_path / "run"
    with pytest.raises(StorageError) as caught:
        train_folds(load_config(CONFIG, overrides(tiny_bert, out, "epochs=2")), folds=0)

    folder = out / "fold0"
    message = str(caught.value)
    assert f"could not write the folder {folder}: the disk is full (No space left on device)" in message
    assert "Free space on that disk" in message and "another output_dir" in message
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == errno.ENOSPC and not isinstance(caught.value.__cause__, StorageError)

    assert len(saved) == 1
    model, _, meta = load_model_folder(folder)
    assert meta.epoch == 1 and meta.fold == 0
    loaded = model.state_dict()
    assert set(saved[0]) <= set(loaded)  # tied weights are saved once
    for name, tensor in saved[0].items():
        assert torch.equal(loaded[name], tensor), name
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".fold0")]
    assert leftovers == [], "no half-written (.fold0.*.tmp) or moved-aside (.fold0.old) folder remains"


@pytest.mark.parametrize("code, reason", [(errno.ENOSPC, "the disk is full"), (errno.EDQUOT, "the disk quota is exceeded"),
                                          (errno.EROFS, "the file system is read-only")])
def test_a_failed_resume_state_write_keeps_the_previous_state(tmp_path, monkeypatch, code, reason):
    path = tmp_path / "resume" / "fold0.pt"
    save_state(path, {"step": 3, "weights": torch.arange(4.0)})

    def partial_save(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(torch, "save", partial_save)
    with pytest.raises(StorageError, match=f"could not write the file {path}: {reason}") as caught:
        save_state(path, {"step": 5, "weights": torch.zeros(4)})
    assert caught.value.errno == code and caught.value.__cause__.errno == code
    monkeypatch.undo()
    state = load_state(path)
    assert state["step"] == 3 and torch.equal(state["weights"], torch.arange(4.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["fold0.pt"]


def test_other_os_errors_pass_through_unchanged(tmp_path):
    error = OSError(errno.EACCES, "Permission denied")
    with pytest.raises(OSError) as caught:
        with atomic_dir(tmp_path / "folder") as tmp:
            (tmp / "a.txt").write_text("a")
            raise error
    assert caught.value is error
    assert list(tmp_path.iterdir()) == []
