"""ONNX export of a kit model folder, and an onnxruntime predictor that answers in the label space.

`export_onnx` writes one ``.onnx`` file holding the whole `PairModel` (backbone, pooling head,
numeric-feature fusion) and the activation that `kagglekit.infer.predict` applies, with dynamic batch and
token axes. Before anything is written, onnxruntime runs the file on a batch of another size and
length than the export example and must agree with PyTorch, so a graph that froze a shape is
refused instead of shipped. `OnnxPredictor` runs the file on tokenized pairs.

onnx and onnxruntime are an optional extra (``pip install "kagglekit[onnx]"``), imported only here.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:
    from kagglekit.data.batching import PairEncodings
    from kagglekit.run import FoldMeta

DEFAULT_OPSET = 17
META_KEY = "kagglekit"  # the ONNX metadata entry holding the settings the predictor needs (JSON)
FORMAT_VERSION = 1
INPUT_ORDER = ("input_ids", "attention_mask", "token_type_ids", "features")
OUTPUT_NAME = "pred"
TOLERANCE = 1e-4  # onnxruntime vs PyTorch, absolute and relative, on the check batch
INSTALL_HINT = 'pip install "kagglekit[onnx]" (or: pip install onnx onnxruntime)'
# Pairs for the export example (2 rows) and the check batch (3 rows, longer, another batch size).
EXAMPLE_PAIRS = (("a short anchor", "its target; a title"), ("an anchor phrase", "a longer target phrase; section; class title"))
CHECK_WORDS = "the quick brown fox jumps over the lazy dog while patent phrases match their targets".split()


def _require(module: str):
    """Import an optional dependency, or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"ONNX export and inference need the package {module!r}, which is not installed: {INSTALL_HINT}") from err


def export_onnx(model_folder: str | os.PathLike, out_path: str | os.PathLike, *, opset: int = DEFAULT_OPSET) -> Path:
    """Export a kit model folder to one ONNX file, checked against PyTorch before it is written.

    The graph's inputs are the model's: ``input_ids`` and ``attention_mask`` (B, T) int64,
    ``token_type_ids`` (B, T) when the backbone reads them, ``features`` (B, K) float32 when the model
    fuses numeric features; its output ``pred`` (B,) is the prediction in the label space (sigmoid,
    identity or the expected class value, as `kagglekit.infer.predict` gives per fold). Batch and token
    axes are dynamic. Uses torch's TorchScript-based exporter (``dynamo=False``): it needs no
    onnxscript and exports every head, the packed LSTM included, which torch.export refuses.

    Args:
        model_folder: a model folder written by ``kagglekit train`` (e.g. ``runs/uspppm/fold0``).
        out_path: the ``.onnx`` file to write (atomically; at most 2 GB, the protobuf limit); not inside `model_folder`.
        opset: ONNX opset version (default 17; 14 or newer).

    Returns:
        The path written.

    Raises:
        ValueError: onnxruntime disagrees with PyTorch (beyond 1e-4) or fails on the check batch: the
            backbone's graph kept a fixed shape (Funnel does); nothing is written.
        ImportError: onnx or onnxruntime is missing (the message gives the pip command).

    Example:
        >>> export_onnx("runs/uspppm/fold0", "fold0.onnx")
        >>> OnnxPredictor("fold0.onnx").predict(encodings)
    """
    import torch

    from kagglekit._io import atomic_path
    from kagglekit._paths import check_outputs
    from kagglekit.models.pair_model import load_model_folder

    folder = _check_model_folder(model_folder)
    check_outputs({"--out": out_path}, {"--model": folder})  # not a file of the model folder, nor inside it
    onnx = _require("onnx")
    _require("onnxruntime")
    if isinstance(opset, bool) or not isinstance(opset, int) or opset < 14:
        raise ValueError(f"opset must be an integer of 14 or more (scaled dot-product attention needs 14), got opset={opset!r}.")
    model, tokenizer, meta = load_model_folder(folder, device="cpu", merge_adapter=True)  # LoRA: plain layers in the graph
    if meta.recipe_state.get("template"):
        raise ValueError(f"--model: {folder} is a decoder's fold (its rows are prompts of template {meta.recipe_state['template']!r}): "
                         "ONNX export takes encoder folds only; predict decoder folds with kagglekit predict or Scorer.")
    example = _pair_batch(tokenizer, EXAMPLE_PAIRS, meta, seed=0)
    names = [name for name in INPUT_ORDER if name in example]
    wrapper = _label_space_module(model, meta, names)
    buffer = io.BytesIO()
    with torch.no_grad(), _quiet_legacy_exporter():
        torch.onnx.export(
            wrapper, tuple(example[name] for name in names), buffer, input_names=names, output_names=[OUTPUT_NAME],
            dynamic_axes={**{name: _dynamic_axes(name) for name in names}, OUTPUT_NAME: {0: "batch"}},
            opset_version=opset, do_constant_folding=True, dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(_predictor_meta(meta, folder))
    data = proto.SerializeToString()
    _check_against_torch(data, wrapper, _pair_batch(tokenizer, _check_pairs(), meta, seed=1), folder)
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        tmp.write_bytes(data)
    return out_path


def _check_model_folder(model_folder) -> Path:
    from kagglekit.run import META_FILE, fold_dirs, full_dirs, is_model_dir

    folder = Path(model_folder)
    if is_model_dir(folder):
        return folder
    folds = [p.name for p in fold_dirs(folder) + full_dirs(folder)]
    if folds:
        raise ValueError(f"--model: {folder} is a run folder with folds {folds}: export one fold at a time, e.g. --model {folder / folds[0]}.")
    raise FileNotFoundError(f"--model: {folder} is not a kagglekit model folder (no {META_FILE}): pass a fold folder written by kagglekit train.")


def _dynamic_axes(name: str) -> dict[int, str]:
    return {0: "batch"} if name == "features" else {0: "batch", 1: "tokens"}


def _label_space_module(model, meta: FoldMeta, names: list[str]):
    """The PairModel followed by the activation predict applies: the inputs `names`, positionally → (B,)."""
    import torch

    from kagglekit.losses import activate

    activation, values = meta.activation, meta.output.values

    class LabelSpace(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
            logits = self.model(**dict(zip(names, inputs)))  # (B,) or (B, C)
            return activate(logits, activation, values)  # (B,)

    return LabelSpace().eval()


def _pair_batch(tokenizer, pairs, meta: FoldMeta, *, seed: int) -> dict:
    """A padded batch of `pairs` as predict builds it (`PairEncodings.collate`), plus random features."""
    from kagglekit.data.batching import PairEncodings

    names = meta.model.get("feature_names") or []
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(len(pairs), len(names))) * 2 + 1 if names else None
    enc = PairEncodings(tokenizer, [a for a, _ in pairs], [b for _, b in pairs], meta.max_len, features=features)
    return {name: value for name, value in enc.collate(list(range(len(pairs)))).items() if name in INPUT_ORDER}


def _check_pairs() -> list[tuple[str, str]]:
    """Three pairs of different, longer lengths than the example's: another batch size and width."""
    words = CHECK_WORDS
    return [(" ".join(words[: 2 + i]), " ".join((words * 4)[: 9 + 11 * i])) for i in range(3)]


@contextlib.contextmanager
def _quiet_legacy_exporter() -> Iterator[None]:
    """Silence what the TorchScript exporter says about tracing: the check batch is the real test."""
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=".*aten::index operator of advanced indexing", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*batch_size other than 1, with a variable length with LSTM", category=UserWarning)
        warnings.filterwarnings("ignore", message="To copy construct from a tensor", category=UserWarning)  # DeBERTa: sizes are tensors when traced
        yield


def _predictor_meta(meta: FoldMeta, folder: Path) -> dict:
    import kagglekit

    return {
        "format": FORMAT_VERSION,
        "kagglekit_version": kagglekit.__version__,
        "source": str(folder),
        "task": meta.task,
        "max_len": meta.max_len,
        "activation": meta.activation,
        "feature_names": list(meta.model.get("feature_names") or []),
    }


def _check_against_torch(data: bytes, wrapper, batch: dict, folder: Path) -> None:
    """onnxruntime on the serialized model vs PyTorch on `batch`: a ValueError unless they agree."""
    import torch

    ort = _require("onnxruntime")
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    feed_names = [node.name for node in session.get_inputs()]
    shape = tuple(batch["input_ids"].shape)
    advice = ("its graph kept a fixed batch size or length (Funnel's does). Serve this model with kagglekit "
              "predict (PyTorch) instead.")
    try:
        got = session.run(None, {name: batch[name].numpy() for name in feed_names})[0]
    except Exception as err:  # onnxruntime's errors derive from Exception only
        raise ValueError(f"export: the ONNX graph of {folder} fails on a batch of {shape[0]} rows x {shape[1]} tokens "
                         f"({type(err).__name__}: {str(err).splitlines()[0]}): {advice}") from err
    with torch.no_grad():
        want = wrapper(*[batch[name] for name in INPUT_ORDER if name in batch]).numpy()  # (B,)
    diff = float(np.max(np.abs(got - want))) if got.shape == want.shape else float("inf")  # inf: shapes differ
    if not np.isfinite(diff) or not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
        raise ValueError(f"export: the ONNX graph of {folder} disagrees with PyTorch on a batch of {shape[0]} rows x "
                         f"{shape[1]} tokens (max difference {diff:.2e}, tolerance {TOLERANCE}): {advice}")


class OnnxPredictor:
    """An exported model under onnxruntime: tokenized pairs in, predictions in the label space out.

    Gives what `kagglekit.infer.predict.run_inference` gives for the same model folder (to ~1e-6 in fp32):
    one fold's predictions, before fold averaging and the recipe's post-processing (e.g. STS-B's 0-5).

    Args:
        path: an ``.onnx`` file written by `export_onnx`.
        threads: onnxruntime's intra-op threads (0: its own choice, one per core).

    Example:
        >>> predictor = OnnxPredictor("fold0.onnx", threads=1)
        >>> enc = PairEncodings(tokenizer, ["opc drum"], ["inorganic photoconductor drum; physics"], predictor.meta["max_len"])
        >>> predictor.predict(enc)          # array([0.71...])
        >>> predictor(enc.collate([0]))     # one batch of tensors or arrays, in its own order
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = 0):
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX model not found: {path}. Write one with: kagglekit export --model FOLD_FOLDER --out {path}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        raw = self.session.get_modelmeta().custom_metadata_map.get(META_KEY)
        if raw is None:
            raise ValueError(f"{path} has no {META_KEY!r} metadata: it was not written by kagglekit export. Export the model folder with it.")
        self.meta: dict = json.loads(raw)
        self.input_names = [node.name for node in self.session.get_inputs()]

    def __call__(self, batch: Mapping[str, object]) -> np.ndarray:
        """Predictions for one padded batch (``input_ids``, ``attention_mask`` ... as tensors or arrays), shape (B,).

        Keys the graph does not take (``labels``, or ``token_type_ids`` for a backbone that ignores
        them) are left out.
        """
        missing = [name for name in self.input_names if name not in batch]
        if missing:
            hint = f" (the model fuses the numeric features {self.meta['feature_names']}: build the encodings with features=)" if "features" in missing else ""
            raise ValueError(f"batch: missing input(s) {missing}; this ONNX model takes {self.input_names}{hint}.")
        feed = {name: _as_array(batch[name], np.float32 if name == "features" else np.int64) for name in self.input_names}
        return self.session.run([OUTPUT_NAME], feed)[0].astype(np.float64)

    def predict(self, encodings: "PairEncodings", *, batch_size: int = 64) -> np.ndarray:
        """Predictions for every row of `encodings`, visited sorted by length, in their original order, shape (N,)."""
        from kagglekit.data.batching import sorted_batches

        out = np.empty(len(encodings), dtype=np.float64)
        for indices in sorted_batches(encodings.lengths, batch_size):
            out[indices] = self(encodings.collate(indices))
        return out


def _as_array(value, dtype) -> np.ndarray:
    value = value.numpy() if hasattr(value, "numpy") else value  # a CPU torch tensor, or already an array
    return np.ascontiguousarray(value, dtype=dtype)


def _cmd_export(args: argparse.Namespace) -> int:
    import sys

    try:
        path = export_onnx(args.model, args.out, opset=args.opset)
    except ImportError as err:
        print(f"kagglekit export: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB); onnxruntime matches PyTorch within {TOLERANCE} on a check batch")
    return 0


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``kagglekit export --model FOLDER --out model.onnx [--opset N]`` on the CLI's subparsers."""
    p = sub.add_parser("export", help="export a trained model folder to ONNX (needs the onnx extra), checked against PyTorch")
    p.add_argument("--model", required=True, help="a model folder, e.g. runs/uspppm/fold0")
    p.add_argument("--out", required=True, help="the .onnx file to write")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset version (default {DEFAULT_OPSET})")
    p.set_defaults(func=_cmd_export)
    return p
