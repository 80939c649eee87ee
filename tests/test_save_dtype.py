"""save_dtype: fold weights written as fp16 are half the bytes, load into an fp32 model, and predict as the fp32 folder does."""

import numpy as np
import pytest
import torch
from safetensors import safe_open

from kagglekit.data.batching import PairEncodings
from kagglekit.models.forward import run_inference
from kagglekit.models.pair_model import WEIGHTS_FILE, build_model, load_model_folder, save_model_folder
from kagglekit.run import FoldMeta

pytestmark = pytest.mark.compat  # model folders: also under transformers 4.x

META = FoldMeta(task="uspppm", max_len=32, activation="sigmoid")
PAIRS = (["a solar panel mount", "rotating shaft", "x", "wireless charging coil", "heat sink fin", "valve seat"],
         ["photovoltaic bracket", "spinning axle", "y z", "inductive charger", "cooling fin", "seat of a valve"])
# measured on this tiny bert with its weights scaled up (below): max |delta| of the sigmoid outputs 4.6e-4 (probabilities
# 0.26 .. 0.94); fp16 keeps 11 significant bits, a relative error up to 2**-11 ~ 5e-4 per weight. The weights file:
# 341,506 B in fp16 against 678,156 B in fp32 (0.504; the header with the tensor names is the rest)
PROB_TOLERANCE = 2e-3


@pytest.fixture(scope="module")
def model(tiny_bert):
    """A tiny bert PairModel with numeric features (float buffers), its weights spread out as trained ones are,
    so that its predictions differ between pairs and fp16 rounding shows."""
    torch.manual_seed(0)
    model, tokenizer = build_model(tiny_bert, feature_names=["f1", "f2"])
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(5.0)
    model.set_feature_stats(np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 20.0]]))
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def folders(model, tmp_path_factory):
    net, tokenizer = model
    root = tmp_path_factory.mktemp("save_dtype")
    return {dtype: save_model_folder(net, tokenizer, root / dtype, META, dtype=dtype) for dtype in ("fp32", "fp16")}


def encodings(tokenizer):
    features = np.array([[1.0, 12.0], [3.0, 25.0], [0.5, 18.0], [2.0, 22.0], [4.0, 11.0], [1.5, 29.0]])
    return PairEncodings(tokenizer, *PAIRS, 32, features=features)


def predict(net, tokenizer) -> np.ndarray:
    return run_inference(net, encodings(tokenizer), batch_size=4, device=torch.device("cpu"), activation="sigmoid")


def test_an_fp16_folder_is_half_the_bytes(folders):
    sizes = {dtype: (folder / WEIGHTS_FILE).stat().st_size for dtype, folder in folders.items()}
    assert 0.49 <= sizes["fp16"] / sizes["fp32"] <= 0.55, sizes
    with safe_open(str(folders["fp16"] / WEIGHTS_FILE), "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"F16"}
    with safe_open(str(folders["fp32"] / WEIGHTS_FILE), "pt") as f:
        assert {f.get_slice(name).get_dtype() for name in f.keys()} == {"F32"}


def test_saving_fp16_leaves_the_live_model_in_fp32(model, folders):
    net, _ = model
    assert {p.dtype for p in net.parameters()} == {torch.float32}
    assert {b.dtype for b in net.buffers() if b.is_floating_point()} == {torch.float32}


def test_the_fp16_folder_loads_into_an_fp32_model_holding_the_rounded_weights(model, folders):
    net, _ = model
    loaded, _, meta = load_model_folder(folders["fp16"])
    assert meta.task == "uspppm"
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    live = net.state_dict()
    for name, tensor in loaded.state_dict().items():  # each weight is the live one rounded to fp16, then widened
        assert torch.equal(tensor, live[name].half().float()), name


def test_fp16_and_fp32_folders_predict_alike(model, folders):
    net, tokenizer = model
    live = predict(net, tokenizer)
    fp32 = predict(*load_model_folder(folders["fp32"])[:2])
    fp16 = predict(*load_model_folder(folders["fp16"])[:2])
    assert np.array_equal(fp32, live)  # fp32 is exact
    assert np.ptp(live) > 0.05  # the rows differ: a constant output would hide any error
    delta = np.abs(fp16 - fp32).max()
    assert 0 < delta <= PROB_TOLERANCE, delta


def test_round_trip_of_a_loaded_fp16_folder(folders, tmp_path):
    # fp16 -> fp32 model -> fp16 again: the same bytes of weights (rounding an already rounded weight changes nothing)
    loaded, tokenizer, meta = load_model_folder(folders["fp16"])
    again = save_model_folder(loaded, tokenizer, tmp_path / "again", meta, dtype="fp16")
    with safe_open(str(folders["fp16"] / WEIGHTS_FILE), "pt") as a, safe_open(str(again / WEIGHTS_FILE), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        for name in a.keys():
            assert torch.equal(a.get_tensor(name), b.get_tensor(name)), name
    assert np.array_equal(predict(*load_model_folder(again)[:2]), predict(loaded, tokenizer))


def test_integer_buffers_keep_their_dtype(tiny_bert, tmp_path):
    net, tokenizer = build_model(tiny_bert)
    net.register_buffer("seen_batches", torch.tensor([7, 9], dtype=torch.int64))
    net.register_buffer("mask", torch.tensor([True, False]))
    folder = save_model_folder(net, tokenizer, tmp_path / "m", META, dtype="fp16")
    with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
        assert f.get_slice("seen_batches").get_dtype() == "I64" and f.get_tensor("seen_batches").tolist() == [7, 9]
        assert f.get_slice("mask").get_dtype() == "BOOL" and f.get_tensor("mask").tolist() == [True, False]
        assert f.get_slice("fc.weight").get_dtype() == "F16"


def test_tied_weights_are_written_once_and_load_back(tiny_bert, tmp_path):
    from safetensors.torch import load_model

    net, tokenizer = build_model(tiny_bert)
    net.head.register_parameter("tied", net.fc.weight)  # one parameter under two names, as tied embeddings are
    folder = save_model_folder(net, tokenizer, tmp_path / "tied", META, dtype="fp16")
    with safe_open(str(folder / WEIGHTS_FILE), "pt") as f:
        assert ("fc.weight" in f.keys()) != ("head.tied" in f.keys())  # written once
    fresh, _ = build_model(tiny_bert)
    fresh.head.register_parameter("tied", fresh.fc.weight)
    load_model(fresh, str(folder / WEIGHTS_FILE), strict=True)  # the name kept is the one load_model looks for
    assert fresh.head.tied is fresh.fc.weight and torch.equal(fresh.fc.weight, net.fc.weight.detach().half().float())


def test_an_unknown_dtype_is_refused(model, tmp_path):
    net, tokenizer = model
    with pytest.raises(ValueError, match=r"dtype='bf16'; use one of \['fp32', 'fp16'\] \(the config key save_dtype\)"):
        save_model_folder(net, tokenizer, tmp_path / "m", META, dtype="bf16")
    assert not (tmp_path / "m").exists()
