"""predict on several devices at once: the same submission as one device, real overlap, errors naming the folder,
the round-robin record, the auto path's GPU list, and a test-input cache shared by the workers.

No GPU is needed: two "cpu" entries make two real worker threads; the auto path sees two GPUs through a
monkeypatched `visible_gpus`, and its per-folder function runs on the CPU while recording the device it was given.
"""

import shutil
import threading
import time
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import kagglekit.infer.inputs as inputs_module
import kagglekit.infer.predict as predict_module
import kagglekit.kaggle as kaggle
from conftest import SAMPLE, perturbed_copy
from kagglekit.cli import main
from kagglekit.config import load_config
from kagglekit.infer.inputs import InputCache
from kagglekit.infer.predict import FolderFailed, assign_devices, inference_devices, models_path, predict
from kagglekit.models.pair_model import load_model_folder
from kagglekit.run import RunFolder
from kagglekit.train import train_folds

USPPPM = ["task=uspppm", f"train_csv={SAMPLE / 'train.csv'}", f"test_csv={SAMPLE / 'test.csv'}", f"cpc_dir={SAMPLE / 'cpc_titles'}",
          "n_folds=2", "epochs=1", "max_rows=120", "lr=1e-3", "batch_size=32"]
TEST = SAMPLE / "test.csv"
TWO_WORKERS = ["cpu", "cpu"]  # two real worker threads, no GPU needed


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    """a: bert, 2 folds + a second seed of fold 1 + a full fit (4 model folders). b: electra, 5 classes, 2 folds + a full fit."""
    root = tmp_path_factory.mktemp("devices")
    a, b = root / "a", root / "b"
    train_folds(load_config(None, [*USPPPM, f"backbone={tiny_models('bert')}", f"output_dir={a}", "max_len=32"]), folds="all")
    train_folds(load_config(None, [*USPPPM, f"backbone={tiny_models('electra')}", f"output_dir={b}", "max_len=24",
                                   "output=classes"]), folds="all")
    perturbed_copy(a / "fold1", RunFolder(a).fold_dir(1, seed=43), 1, seed=43)
    perturbed_copy(a / "fold0", RunFolder(a).full_dir(), 2, fold=None, full=True)
    perturbed_copy(b / "fold1", RunFolder(b).full_dir(), 3, fold=None, full=True)
    return SimpleNamespace(a=a, b=b, folders=[a / "fold0", a / "fold1", a / "fold1-seed43", a / "full", b / "fold0", b / "fold1", b / "full"])


@pytest.mark.parametrize("options", [{}, {"average": "logit", "full_weight": 0.4}])
def test_two_workers_write_the_sequential_submission_bit_for_bit(runs, tmp_path, options):
    one = predict([runs.a, runs.b], TEST, tmp_path / "one.csv", device="cpu", **options)
    two = predict([runs.a, runs.b], TEST, tmp_path / "two.csv", devices=TWO_WORKERS, **options)
    pd.testing.assert_frame_equal(one, two, check_exact=True)
    assert (tmp_path / "one.csv").read_bytes() == (tmp_path / "two.csv").read_bytes()
    assert models_path(tmp_path / "one.csv").read_bytes() == models_path(tmp_path / "two.csv").read_bytes()


def _recording(monkeypatch, *, wait_for=None, on_cpu=False):
    """Replace predict's per-folder function with one that records (folder, device, thread) and can wait on a barrier
    (once per thread) or run on the CPU whatever device it is asked for."""
    calls, waited = [], set()
    folder_outputs = predict_module.folder_outputs

    def recorded(folder, inputs, *, device, amp_dtype, **kwargs):
        calls.append((folder, str(device), threading.get_ident()))
        if wait_for is not None and threading.get_ident() not in waited:
            waited.add(threading.get_ident())
            wait_for.wait()  # passes only when another worker is inside a folder at the same time
        if on_cpu:
            device, amp_dtype = torch.device("cpu"), None
        return folder_outputs(folder, inputs, device=device, amp_dtype=amp_dtype, **kwargs)

    monkeypatch.setattr(predict_module, "folder_outputs", recorded)
    return calls


def test_two_workers_really_predict_at_the_same_time(runs, monkeypatch, tmp_path):
    barrier = threading.Barrier(2, timeout=60)
    calls = _recording(monkeypatch, wait_for=barrier)
    sub = predict([runs.a, runs.b], TEST, devices=TWO_WORKERS)
    assert len({thread for _, _, thread in calls}) == 2 and not barrier.broken
    assert sorted(str(folder) for folder, _, _ in calls) == sorted(str(f) for f in runs.folders)  # each folder once
    monkeypatch.undo()
    pd.testing.assert_frame_equal(sub, predict([runs.a, runs.b], TEST, device="cpu"), check_exact=True)


def test_one_device_never_overlaps(runs, monkeypatch):
    """The barrier's other side: one worker alone cannot pass it, so the overlap test above can fail."""
    _recording(monkeypatch, wait_for=threading.Barrier(2, timeout=1))
    with pytest.raises(threading.BrokenBarrierError):
        predict([runs.b], TEST, device="cpu")


def test_a_failing_folder_is_named_and_nothing_is_written(runs, monkeypatch, tmp_path, capsys):
    folder_outputs = predict_module.folder_outputs
    bad = runs.b / "fold1"

    def failing(folder, *args, **kwargs):
        if folder == bad:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return folder_outputs(folder, *args, **kwargs)

    monkeypatch.setattr(predict_module, "folder_outputs", failing)
    out = tmp_path / "sub.csv"
    with pytest.raises(FolderFailed, match=rf"predict: model folder {bad} failed on cpu: RuntimeError: CUDA error: an illegal") as info:
        predict([runs.a, runs.b], TEST, out, devices=TWO_WORKERS)
    assert isinstance(info.value.__cause__, RuntimeError) and not out.exists()
    assert main(["predict", "--models", str(runs.a), str(runs.b), "--data", str(TEST), "--out", str(out), "--devices", "cpu,cpu"]) == 1
    err = capsys.readouterr().err
    assert f"kagglekit predict: error: predict: model folder {bad} failed on cpu" in err and not out.exists()


def test_a_user_error_in_a_worker_keeps_its_text(runs, monkeypatch, tmp_path):
    """A folder whose weights are missing fails in its worker; the message still says which file and the fix."""
    broken = shutil.copytree(runs.b, tmp_path / "b_broken")
    (broken / "fold0" / "model.safetensors").unlink()
    with pytest.raises(FolderFailed, match=r"fold0 failed on cpu: FileNotFoundError: model folder .*fold0 is incomplete: "
                                           r"model.safetensors is missing"):
        predict([runs.a, broken], TEST, devices=TWO_WORKERS)


@pytest.mark.parametrize("n, devices, plan", [
    (5, ["cuda:0", "cuda:1"], [[0, 2, 4], [1, 3]]),
    (6, ["cuda:0", "cuda:1", "cuda:2"], [[0, 3], [1, 4], [2, 5]]),
    (1, ["cuda:0", "cuda:1"], [[0], []]),
    (0, ["cpu"], [[]]),
    (3, ["cpu"], [[0, 1, 2]]),
])
def test_assign_devices_is_round_robin_and_covers_every_folder_once(n, devices, plan):
    got = assign_devices(n, devices)
    assert got == plan
    assert sorted(i for part in got for i in part) == list(range(n))


def test_assign_devices_checks_its_arguments():
    with pytest.raises(ValueError, match=r"n_folders must be a count \(0 or more\), got n_folders=-1"):
        assign_devices(-1, ["cpu"])
    with pytest.raises(ValueError, match=r"devices is empty"):
        assign_devices(3, [])


def test_auto_spreads_the_folders_over_every_visible_gpu(runs, monkeypatch):
    monkeypatch.setattr(kaggle, "visible_gpus", lambda: [0, 1])
    assert inference_devices("auto") == [torch.device("cuda", 0), torch.device("cuda", 1)]
    assert inference_devices("cpu") == [torch.device("cpu")]  # an explicit device is one device
    calls = _recording(monkeypatch, on_cpu=True)  # nothing touches CUDA: each folder runs on the CPU
    sub = predict([runs.a, runs.b], TEST)
    assert {device for _, device, _ in calls} == {"cuda:0", "cuda:1"} and len(calls) == len(runs.folders)
    monkeypatch.undo()
    pd.testing.assert_frame_equal(sub, predict([runs.a, runs.b], TEST, device="cpu"), check_exact=True)


def test_one_visible_gpu_or_none_is_one_device(monkeypatch):
    monkeypatch.setattr(kaggle, "visible_gpus", lambda: [0])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_devices("auto") == [torch.device("cuda")]
    monkeypatch.setattr(kaggle, "visible_gpus", lambda: [])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_devices("auto") == [torch.device("cpu")]


def test_device_lists_are_checked(monkeypatch):
    monkeypatch.setattr(kaggle, "visible_gpus", lambda: [0, 1])
    assert inference_devices(devices=["cuda:1", "cuda:0", "cuda:1"]) == [torch.device("cuda", i) for i in (1, 0, 1)]
    with pytest.raises(ValueError, match=r"--devices: cuda:2 is not visible: this process sees 2 CUDA device\(s\) \['cuda:0', 'cuda:1'\]"):
        inference_devices(devices=["cuda:0", "cuda:2"])
    for bad in ("tpu", "cuda:x", "mps"):
        with pytest.raises(ValueError, match=rf"--devices: '{bad}' is not a device: use cpu or cuda:N"):
            inference_devices(devices=[bad])
    with pytest.raises(ValueError, match=r"device='cpu' and devices=\['cuda:0'\] are both given"):
        inference_devices("cpu", ["cuda:0"])
    with pytest.raises(ValueError, match=r"--devices is empty"):
        inference_devices(devices=[])
    with pytest.raises(TypeError, match=r"pass a list of devices, e.g. devices=\['cuda:0', 'cuda:1'\]"):
        inference_devices(devices="cuda:0,cuda:1")


def test_the_input_cache_tokenizes_once_when_workers_ask_together(runs, monkeypatch):
    """Two threads ask for the same encodings at once: one tokenizes (slowly), the other waits and gets the same object."""
    built, pair_encodings = [], inputs_module.PairEncodings

    def slow(*args, **kwargs):
        built.append(threading.get_ident())
        time.sleep(0.3)  # without the lock the other thread would start its own tokenization meanwhile
        return pair_encodings(*args, **kwargs)

    monkeypatch.setattr(inputs_module, "PairEncodings", slow)
    model, tokenizer, meta = load_model_folder(runs.a / "fold0")
    cache, got = InputCache(TEST), []
    threads = [threading.Thread(target=lambda: got.append(cache.encodings(meta, tokenizer, runs.a / "fold0", model.feature_names)))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(built) == 1 and len(got) == 2 and got[0] is got[1]
    np.testing.assert_array_equal(got[0].lengths, pair_encodings(tokenizer, *_texts(cache, meta), meta.max_len).lengths)


def _texts(cache, meta):
    frame = cache.frame(meta)[1]
    return frame["text_a"], frame["text_b"]
