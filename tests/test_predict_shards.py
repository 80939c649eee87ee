"""One model on several devices: predict cuts a folder into parts (the two text orders of swap TTA, or shards of the
length-sorted rows), a copy of the model on each device, and writes the submission one device writes.

No GPU is needed: two "cpu" entries make two real worker threads, and the auto path sees two GPUs through a
monkeypatched `visible_gpus` while its per-folder function runs on the CPU.
"""

import threading
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import kagglekit.infer.predict as predict_module
import kagglekit.kaggle as kaggle
from conftest import SAMPLE
from kagglekit.config import load_config
from kagglekit.data.batching import PairEncodings
from kagglekit.infer.predict import predict
from kagglekit.infer.shards import Part, join_parts, plan_parts, shard_rows
from kagglekit.train import train_folds

TEST = SAMPLE / "test.csv"
SETTINGS = ["task=uspppm", f"train_csv={SAMPLE / 'train.csv'}", f"cpc_dir={SAMPLE / 'cpc_titles'}", "n_folds=2", "epochs=1",
            "max_rows=120", "lr=1e-3", "batch_size=32", "max_len=32"]


@pytest.fixture(scope="module")
def one_fold(tiny_models, tmp_path_factory):
    """Runs with a single model folder each (fold 0 of 2): plain, and trained with swap=true (for swap TTA)."""
    root = tmp_path_factory.mktemp("shards")
    plain, swap = root / "plain", root / "swap"
    train_folds(load_config(None, [*SETTINGS, f"backbone={tiny_models('bert')}", f"output_dir={plain}"]), folds=0)
    train_folds(load_config(None, [*SETTINGS, f"backbone={tiny_models('bert')}", f"output_dir={swap}", "swap=true"]), folds=0)
    return SimpleNamespace(plain=plain, swap=swap)


def _recording(monkeypatch, barrier=None, on_cpu=False):
    """Record (folder, device, part, thread) of each call; optionally wait on a barrier (proves overlap) or run on the CPU."""
    calls, real = [], predict_module.folder_outputs

    def recorded(folder, inputs, *, device, amp_dtype, part=None, **kwargs):
        calls.append((folder, str(device), part, threading.get_ident()))
        if barrier is not None:
            barrier.wait()
        if on_cpu:
            device, amp_dtype = torch.device("cpu"), None
        return real(folder, inputs, device=device, amp_dtype=amp_dtype, part=part, **kwargs)

    monkeypatch.setattr(predict_module, "folder_outputs", recorded)
    return calls


# ---------------------------------------------------------------------------------------------------- the plan


@pytest.mark.parametrize("folders, devices, tta, expected", [
    (1, 2, "none", [Part(0, (False,), 0, 2), Part(0, (False,), 1, 2)]),
    (1, 2, "swap", [Part(0, (False,), 0, 1), Part(0, (True,), 0, 1)]),
    (1, 4, "swap", [Part(0, (False,), 0, 2), Part(0, (False,), 1, 2), Part(0, (True,), 0, 2), Part(0, (True,), 1, 2)]),
    (1, 3, "swap", [Part(0, (False,), 0, 1), Part(0, (True,), 0, 1)]),  # the third device has no whole share
    (2, 4, "none", [Part(0, (False,), 0, 2), Part(0, (False,), 1, 2), Part(1, (False,), 0, 2), Part(1, (False,), 1, 2)]),
    (2, 2, "swap", [Part(0, (False, True)), Part(1, (False, True))]),  # enough folders: whole ones
    (5, 2, "none", [Part(i, (False,)) for i in range(5)]),
    (3, 1, "none", [Part(i, (False,)) for i in range(3)]),
    (0, 2, "none", []),
])
def test_plan_parts(folders, devices, tta, expected):
    parts = plan_parts(folders, devices, tta)
    assert parts == expected and len(parts) <= max(devices, folders)
    for folder in range(folders):  # each (folder, view) is covered by shards 0..n-1 exactly once
        for view in ((False, True) if tta == "swap" else (False,)):
            shards = sorted((p.shard, p.shards) for p in parts if p.folder == folder and view in p.views)
            assert shards == [(k, shards[0][1]) for k in range(shards[0][1])]


def test_plan_parts_checks_its_counts():
    with pytest.raises(ValueError, match=r"n_devices must be a count \(1 or more\), got n_devices=0"):
        plan_parts(1, 0)
    with pytest.raises(ValueError, match=r"n_folders must be a count \(0 or more\), got n_folders=-1"):
        plan_parts(-1, 2)


@pytest.mark.parametrize("shards", [1, 2, 3, 4])
def test_shards_partition_the_rows_and_share_the_tokens_evenly(shards):
    lengths = np.random.default_rng(shards).integers(3, 200, size=1001)
    pieces = [shard_rows(lengths, k, shards) for k in range(shards)]
    np.testing.assert_array_equal(np.sort(np.concatenate(pieces)), np.arange(len(lengths)))
    assert all(np.all(np.diff(p) > 0) for p in pieces)  # ascending, no repeat
    tokens = [int(lengths[p].sum()) for p in pieces]
    assert max(tokens) - min(tokens) <= lengths.max()  # equal work within one row's length
    assert max(len(p) for p in pieces) - min(len(p) for p in pieces) <= 1


def test_shard_rows_example_and_bounds():
    np.testing.assert_array_equal(shard_rows(np.array([5, 1, 4, 2, 3]), 1, 2), [2, 3])  # length order 1, 3, 4, 2, 0
    with pytest.raises(ValueError, match=r"shard 2 of 2"):
        shard_rows(np.array([1, 2]), 2, 2)


def test_join_parts_puts_rows_back_and_refuses_gaps():
    rng = np.random.default_rng(0)
    full = rng.normal(size=(7, 3)).astype(np.float32)
    rows = [np.array([0, 3, 6]), np.array([1, 2, 4, 5])]
    pieces = [(view, r, full[r] + view) for view in (True, False) for r in rows]
    given, swapped = join_parts(7, pieces)
    np.testing.assert_array_equal(given, full)
    np.testing.assert_array_equal(swapped, full + 1)
    with pytest.raises(ValueError, match=r"cover 3 rows of 7 in the given order"):
        join_parts(7, [(False, rows[0], full[rows[0]])])
    with pytest.raises(ValueError, match=r"cover 7 rows of 7 in the given order"):  # a row twice, another never
        join_parts(7, [(False, np.array([0, 0, 1, 2, 3, 4, 5]), full)])


def test_subset_keeps_each_rows_tokens(tiny_models):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_models("bert"))
    enc = PairEncodings(tokenizer, ["a b c", "d", "e f", "g h i j"], ["x", "y z", "w", "v"], 16, labels=[0.1, 0.2, 0.3, 0.4],
                        features=np.arange(8).reshape(4, 2))
    sub = enc.subset([3, 1])
    np.testing.assert_array_equal(sub.lengths, enc.lengths[[3, 1]])
    for key, value in sub.collate([0, 1]).items():
        np.testing.assert_array_equal(value.numpy(), enc.collate([3, 1])[key].numpy(), err_msg=key)


# ---------------------------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("tta", ["none", "swap"])
def test_one_model_on_two_devices_writes_the_one_device_submission(one_fold, monkeypatch, tmp_path, tta):
    run = one_fold.swap if tta == "swap" else one_fold.plain
    one = predict([run], TEST, tmp_path / "one.csv", device="cpu", tta=tta)
    calls = _recording(monkeypatch, barrier=threading.Barrier(2, timeout=60))  # both parts run at once
    two = predict([run], TEST, tmp_path / "two.csv", devices=["cpu", "cpu"], tta=tta)
    assert len(calls) == 2 and len({thread for *_, thread in calls}) == 2
    parts = [part for _, _, part, _ in calls]
    if tta == "swap":  # the given order on one copy, the swapped order on the other
        assert sorted(p.views for p in parts) == [(False,), (True,)] and all(p.shards == 1 for p in parts)
    else:  # half of the length-sorted rows each
        assert sorted((p.shard, p.shards) for p in parts) == [(0, 2), (1, 2)]
    assert list(two.columns) == list(one.columns) and two["id"].tolist() == one["id"].tolist()
    np.testing.assert_allclose(two["score"], one["score"], rtol=0, atol=1e-6)


def test_two_visible_gpus_and_one_model_use_both(one_fold, monkeypatch):
    monkeypatch.setattr(kaggle, "visible_gpus", lambda: [0, 1])
    calls = _recording(monkeypatch, on_cpu=True)  # nothing touches CUDA
    sub = predict([one_fold.swap], TEST, tta="swap")
    assert sorted((device, part.views) for _, device, part, _ in calls) == [("cuda:0", (False,)), ("cuda:1", (True,))]
    monkeypatch.undo()
    np.testing.assert_allclose(sub["score"], predict([one_fold.swap], TEST, device="cpu", tta="swap")["score"], atol=1e-6)


def test_many_folders_stay_whole(one_fold, monkeypatch):
    """With as many folders as devices, no folder is cut: each loads once."""
    calls = _recording(monkeypatch)
    predict([one_fold.plain, one_fold.swap], TEST, devices=["cpu", "cpu"])
    assert len(calls) == 2 and all(part is None for _, _, part, _ in calls)


def test_a_failing_part_names_its_folder(one_fold, monkeypatch, tmp_path):
    real = predict_module.folder_outputs

    def failing(folder, inputs, *, part=None, **kwargs):
        if part is not None and part.shard == 1:
            raise RuntimeError("CUDA out of memory")
        return real(folder, inputs, part=part, **kwargs)

    monkeypatch.setattr(predict_module, "folder_outputs", failing)
    out = tmp_path / "sub.csv"
    with pytest.raises(predict_module.FolderFailed, match=rf"model folder {one_fold.plain / 'fold0'} failed on cpu: RuntimeError: CUDA out"):
        predict([one_fold.plain], TEST, out, devices=["cpu", "cpu"])
    assert not out.exists()
    pd.read_csv(TEST)  # the input is untouched


# ---------------------------------------------------------------------------------------------------- 8 and 4 bits


def test_8bit_on_a_cpu_is_refused_before_anything_is_written(one_fold, tmp_path, capsys):
    from kagglekit.cli import main

    out = tmp_path / "sub.csv"
    assert main(["predict", "--models", str(one_fold.plain), "--data", str(TEST), "--out", str(out), "--device", "cpu",
                 "--precision", "8bit"]) == 2
    err = capsys.readouterr().err
    assert "precision=8bit: 8-bit weights (bitsandbytes) need a CUDA device, and predict runs on cpu: use --precision auto" in err
    assert not out.exists() and not (tmp_path / "sub.models.json").exists()


def test_8bit_reaches_every_copy_of_a_split_model(one_fold, monkeypatch, tmp_path):
    """The plumbing without a GPU: the device check and bitsandbytes are stood in for by LLM.int8's rounding."""
    from kagglekit.models import lora
    from test_lora import fake_int8

    full = predict([one_fold.plain], TEST, device="cpu")
    rounded = []
    monkeypatch.setattr(predict_module, "device_and_amp", lambda device, precision: (torch.device("cpu"), None))
    monkeypatch.setattr(lora, "check_quantize", lambda quantize, device: None)
    monkeypatch.setattr(lora, "quantize_linears", lambda module, quantize, *a: rounded.append(quantize) or fake_int8(module, quantize, *a))
    eight = predict([one_fold.plain], TEST, devices=["cpu", "cpu"], precision="8bit")
    assert rounded == ["8bit", "8bit"]  # one copy per device, each rounded
    assert not np.array_equal(eight["score"], full["score"])
    np.testing.assert_allclose(eight["score"], full["score"], rtol=0, atol=0.02)


def test_an_unknown_precision_names_the_choices(one_fold, tmp_path):
    with pytest.raises(ValueError, match=r"precision='int8' is unknown: use one of \['auto', 'fp32', 'fp16', 'bf16', '8bit', '4bit'\]"):
        predict([one_fold.plain], TEST, tmp_path / "sub.csv", device="cpu", precision="int8")
    assert not (tmp_path / "sub.csv").exists()
