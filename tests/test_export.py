"""ONNX export: onnxruntime's predictions equal PyTorch's, at other batch sizes and lengths than the export example."""

import argparse
import dataclasses
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from kagglekit.data.batching import PairEncodings, sorted_batches  # noqa: E402
from kagglekit.infer.export import EXAMPLE_PAIRS, OnnxPredictor, add_parser, export_onnx  # noqa: E402
from kagglekit.models.pair_model import build_model, load_model_folder, save_model_folder  # noqa: E402
from kagglekit.models.forward import run_inference  # noqa: E402
from kagglekit.run import FoldMeta  # noqa: E402
from kagglekit.targets import Target  # noqa: E402
from kagglekit.testing import make_uspppm_sample  # noqa: E402

pytestmark = pytest.mark.compat  # model folders and export also under transformers 4.x, when onnxruntime is installed

MAX_LEN = 48
CLASS_VALUES = [0.0, 0.25, 0.5, 0.75, 1.0]
CPU = torch.device("cpu")


def _pairs(n: int = 30) -> tuple[list[str], list[str]]:
    """USPPPM-shaped pairs, as the kit writes them (anchor / "target; context"), the last one truncated at MAX_LEN."""
    train = make_uspppm_sample(seed=3)["train"].sample(n - 1, random_state=0)
    text_b = train["target"] + "; " + train["context"]
    return train["anchor"].tolist() + ["gas flow"], text_b.tolist() + ["; ".join(text_b.iloc[:20])]


def _features(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2)) * [3.0, 0.5] + [10.0, -1.0]


def _model_folder(tiny_models, out, *, arch: str, head: str = "mean", output: str = "single", features: bool = False):
    """A model folder as training writes it, with an output layer scaled up so predictions spread widely."""
    torch.manual_seed(0)
    names = ["overlap", "freq_a"] if features else []
    num_outputs = len(CLASS_VALUES) if output == "classes" else 1
    model, tokenizer = build_model(tiny_models(arch), head=head, num_outputs=num_outputs, feature_names=names)
    with torch.no_grad():
        model.fc.weight.normal_(std=0.5)  # random heads give logits near 0; spread them so the comparison means something
    if features:
        model.set_feature_stats(_features(200, seed=9))
    meta = FoldMeta(task="uspppm", max_len=MAX_LEN, loss="bce", activation="sigmoid")
    if output == "classes":
        meta = dataclasses.replace(meta, loss="ce", activation="expected", output=Target("classes", tuple(CLASS_VALUES)))
    return save_model_folder(model, tokenizer, out, meta)


@pytest.fixture(scope="module")
def folders(tiny_models, tmp_path_factory):
    """name -> (model folder, exported .onnx path)."""
    root = tmp_path_factory.mktemp("export")
    specs = {
        "bert": dict(arch="bert"),
        "deberta-v2 classes": dict(arch="deberta-v2", head="attention", output="classes"),
        "electra features": dict(arch="electra", features=True),
        "bert lstm": dict(arch="bert", head="lstm"),
    }
    out = {}
    for name, spec in specs.items():
        folder = _model_folder(tiny_models, root / name.replace(" ", "-"), **spec)
        out[name] = (folder, export_onnx(folder, root / f"{name.replace(' ', '-')}.onnx"))
    return out


@pytest.mark.parametrize("name", ["bert", "deberta-v2 classes", "electra features", "bert lstm"])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_onnxruntime_matches_pytorch_at_other_shapes(folders, name, batch_size):
    folder, onnx_path = folders[name]
    model, tokenizer, meta = load_model_folder(folder)
    text_a, text_b = _pairs()
    features = _features(len(text_a), seed=1) if model.feature_names else None
    enc = PairEncodings(tokenizer, text_a, text_b, MAX_LEN, features=features)
    want = run_inference(model, enc, batch_size=batch_size, device=CPU, activation=meta.activation,
                         values=meta.output.values)
    got = OnnxPredictor(onnx_path, threads=1).predict(enc, batch_size=batch_size)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
    assert np.ptp(want) > 0.1  # predictions spread, so agreement is not two constants agreeing
    # other shapes than the export example's: another batch size, narrower and wider batches (up to MAX_LEN)
    example = PairEncodings(tokenizer, *zip(*EXAMPLE_PAIRS), MAX_LEN)
    widths = {int(enc.lengths[b].max()) for b in sorted_batches(enc.lengths, batch_size)}
    assert batch_size != len(EXAMPLE_PAIRS) and int(example.lengths.max()) not in widths and max(widths) == MAX_LEN


def test_classes_graph_gives_the_expected_value_under_the_softmax(folders):
    folder, onnx_path = folders["deberta-v2 classes"]
    model, tokenizer, _ = load_model_folder(folder)
    batch = PairEncodings(tokenizer, *_pairs(9), MAX_LEN).collate(list(range(9)))
    with torch.no_grad():
        logits = model(**batch).double().numpy()  # (9, 5)
    probs = np.exp(logits - logits.max(1, keepdims=True))
    by_hand = (probs / probs.sum(1, keepdims=True)) @ np.array(CLASS_VALUES)
    got = OnnxPredictor(onnx_path)(batch)
    assert got.shape == (9,) and got.dtype == np.float64
    np.testing.assert_allclose(got, by_hand, atol=1e-5)
    assert OnnxPredictor(onnx_path).input_names == ["input_ids", "attention_mask"]  # DeBERTa-v3 takes no token types


def test_numeric_features_are_standardised_inside_the_graph(folders):
    folder, onnx_path = folders["electra features"]
    model, tokenizer, _ = load_model_folder(folder)
    predictor = OnnxPredictor(onnx_path)
    assert predictor.input_names == ["input_ids", "attention_mask", "token_type_ids", "features"]
    assert predictor.meta["feature_names"] == ["overlap", "freq_a"]
    text_a, text_b = _pairs(12)
    one, other = _features(12, seed=1), _features(12, seed=2)
    got = [predictor.predict(PairEncodings(tokenizer, text_a, text_b, MAX_LEN, features=f), batch_size=5) for f in (one, other)]
    # by hand: the model with its stored mean and std, the features given raw
    mean, std = model.feature_mean.numpy(), model.feature_std.numpy()
    np.testing.assert_allclose(mean, _features(200, seed=9).mean(0), rtol=1e-5)
    for f, pred in zip((one, other), got):
        batch = PairEncodings(tokenizer, text_a, text_b, MAX_LEN, features=f).collate(list(range(12)))
        with torch.no_grad():
            pooled = model.head(model.backbone(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).last_hidden_state, batch["attention_mask"])
            fused = torch.cat([pooled, model.feature_proj(torch.tensor((f - mean) / std, dtype=torch.float32))], dim=-1)
            by_hand = torch.sigmoid(model.fc(fused)).squeeze(-1).numpy()  # (12,)
        np.testing.assert_allclose(pred, by_hand, atol=1e-5)
    assert np.abs(got[0] - got[1]).max() > 0.01  # the features reach the output
    with pytest.raises(ValueError, match=r"missing input\(s\) \['features'\].*overlap"):
        predictor(PairEncodings(tokenizer, text_a, text_b, MAX_LEN).collate([0, 1]))


def test_graph_axes_and_metadata(folders):
    _, onnx_path = folders["bert"]
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert {node.name: node.shape for node in session.get_inputs()} == {name: ["batch", "tokens"] for name in ("input_ids", "attention_mask", "token_type_ids")}
    assert [(node.name, node.shape) for node in session.get_outputs()] == [("pred", ["batch"])]
    meta = OnnxPredictor(onnx_path).meta
    assert (meta["activation"], meta["max_len"], meta["task"], meta["feature_names"]) == ("sigmoid", MAX_LEN, "uspppm", [])


def test_a_graph_that_froze_its_shape_is_refused_and_nothing_written(folders, tmp_path, monkeypatch):
    folder, _ = folders["bert"]
    real_export = torch.onnx.export

    def static_export(*args, dynamic_axes=None, **kwargs):  # what a backbone that bakes in the example's shape gives
        return real_export(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", static_export)
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ValueError, match=r"fails on a batch of 3 rows x \d+ tokens.*kagglekit predict"):
        export_onnx(folder, out)
    assert out.read_bytes() == b"previous" and sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]


def test_bad_arguments_name_the_fix(folders, tmp_path):
    folder, onnx_path = folders["bert"]
    (tmp_path / "run" / "fold0").mkdir(parents=True)
    (tmp_path / "run" / "fold0" / "kagglekit.json").write_text("{}")
    with pytest.raises(ValueError, match=r"export one fold at a time, e.g. --model .*fold0"):
        export_onnx(tmp_path / "run", tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError, match="not a kagglekit model folder"):
        export_onnx(tmp_path / "missing", tmp_path / "x.onnx")
    with pytest.raises(ValueError, match="opset must be an integer of 14 or more.*opset=11"):
        export_onnx(folder, tmp_path / "x.onnx", opset=11)
    with pytest.raises(FileNotFoundError, match="kagglekit export --model"):
        OnnxPredictor(tmp_path / "none.onnx")
    import onnx

    plain = onnx.load(str(onnx_path))
    del plain.metadata_props[:]
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not written by kagglekit export"):
        OnnxPredictor(tmp_path / "plain.onnx")


def test_missing_onnxruntime_gives_the_pip_command(folders, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    with pytest.raises(ImportError, match=r'pip install "kagglekit\[onnx\]"'):
        OnnxPredictor(folders["bert"][1])
    with pytest.raises(ImportError, match="onnxruntime"):
        export_onnx(folders["bert"][0], tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


def _cli(argv):
    parser = argparse.ArgumentParser(prog="kagglekit")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_export_command(folders, tmp_path, capsys, monkeypatch):
    folder, reference = folders["bert"]
    out = tmp_path / "fold0.onnx"
    assert _cli(["export", "--model", str(folder), "--out", str(out), "--opset", "17"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    enc = PairEncodings(load_model_folder(folder)[1], *_pairs(20), MAX_LEN)
    np.testing.assert_allclose(OnnxPredictor(out).predict(enc), OnnxPredictor(reference).predict(enc), atol=1e-6)
    monkeypatch.setitem(sys.modules, "onnx", None)
    assert _cli(["export", "--model", str(folder), "--out", str(tmp_path / "y.onnx")]) == 2
    assert 'pip install "kagglekit[onnx]"' in capsys.readouterr().err
