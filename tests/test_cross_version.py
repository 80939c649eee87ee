"""Model folders cross transformers majors: saved under one, loaded under the other, same predictions.

Needs a second environment with the other major and this tree installed editable; its python is
named by KAGGLEKIT_OTHER_PYTHON (`make test` points it at .venv-tf4). One run covers both directions:
every tiny arch is built and saved here and predicted there, and built and saved there and
predicted here. Run as a script, this file is the worker that the other environment executes.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kagglekit.models.embeddings import TextEmbedder
from kagglekit.testing import TINY_ENCODERS

ROOT = Path(__file__).resolve().parents[1]
OTHER_PYTHON = os.environ.get("KAGGLEKIT_OTHER_PYTHON", "")
PAIRS = (
    ["engine housing", "a wireless transmitter with two antennas", "Zebra-42 QUANTUM widget? (x+y)=3%",
     "café naïve  double  spaces ``quoted''", "word " * 40],
    ["motor casing", "radio", "dental implant", "plain", "other " * 40],
)
MAX_LEN = 32  # the last pair is truncated
ATOL = 1e-5

pytestmark = pytest.mark.skipif(
    not OTHER_PYTHON,
    reason="KAGGLEKIT_OTHER_PYTHON is not set: point it at the python of an environment with the other "
           "transformers major and kagglekit installed editable (make test uses .venv-tf4/bin/python)",
)


# --------------------------------------------------------------------------------------------------
# Both sides: build and save, or load and predict
# --------------------------------------------------------------------------------------------------

def _predict(model, tokenizer) -> dict:
    """Raw logits (N,) on PAIRS, and the ids the tokenizer gave, as JSON-ready lists."""
    import torch

    from kagglekit.data.batching import PairEncodings
    from kagglekit.models.forward import run_inference

    enc = PairEncodings(tokenizer, *PAIRS, max_len=MAX_LEN)
    logits = run_inference(model, enc, batch_size=2, device=torch.device("cpu"))
    return {"logits": logits.tolist(), "input_ids": enc.input_ids, "token_type_ids": enc.token_type_ids}


def build_and_save(arch: str, root: Path) -> dict:
    """Tiny backbone → PairModel (seed 0) → model folder `root/arch/model`; its predictions."""
    import torch

    from kagglekit.models.pair_model import build_model, save_model_folder
    from kagglekit.run import FoldMeta
    from kagglekit.testing import build_tiny_model

    backbone = build_tiny_model(arch, root / arch / "backbone", seed=0)
    torch.manual_seed(0)
    model, tokenizer = build_model(backbone)
    save_model_folder(model, tokenizer, root / arch / "model", FoldMeta(task="uspppm", max_len=MAX_LEN, activation="sigmoid"))
    TextEmbedder(backbone).save(root / arch / "embedder")  # a run's copy of its embedding model (embedding_model)
    return {**_predict(model.eval(), tokenizer), "cosine": _cosine(root / arch / "embedder")}


def load_and_predict(folder: Path) -> dict:
    from kagglekit.models.pair_model import load_model_folder

    model, tokenizer, _ = load_model_folder(folder)
    return {**_predict(model, tokenizer), "cosine": _cosine(folder.parent / "embedder")}


def _cosine(embedder_folder: Path) -> list:
    """embedding_cosine of PAIRS from an embedding-model copy."""
    return TextEmbedder(embedder_folder).cosine(*PAIRS).tolist()


def _versions() -> dict:
    import kagglekit
    import tokenizers
    import transformers

    return {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
            "kagglekit": str(Path(kagglekit.__file__).resolve().parent)}


def _worker(job_path: str) -> None:
    """The other side: build and save `job["build"]` archs under `job["here"]`, predict `job["load"]` folders."""
    job = json.loads(Path(job_path).read_text())
    results = {"versions": _versions(), "built": {}, "loaded": {}}
    for arch in job["build"]:
        results["built"][arch] = build_and_save(arch, Path(job["root"]))
    for arch, folder in job["load"].items():
        results["loaded"][arch] = load_and_predict(Path(folder))
    Path(job["out"]).write_text(json.dumps(results))


if __name__ == "__main__":
    _worker(sys.argv[1])
    sys.exit(0)


# --------------------------------------------------------------------------------------------------
# Tests (this side)
# --------------------------------------------------------------------------------------------------

def _major(version: str) -> int:
    return int(version.split(".")[0])


@pytest.fixture(scope="module")
def exchange(tmp_path_factory):
    """Folders saved here and there, and each side's predictions on the other side's folders."""
    if not Path(OTHER_PYTHON).is_file():
        pytest.fail(f"KAGGLEKIT_OTHER_PYTHON={OTHER_PYTHON!r} is not a file: build the other environment "
                    "first (make venv-tf4) or point the variable at its python")
    tmp = tmp_path_factory.mktemp("cross")
    here_root, there_root = tmp / "saved-here", tmp / "saved-there"
    saved_here = {arch: build_and_save(arch, here_root) for arch in TINY_ENCODERS}
    job = {"build": list(TINY_ENCODERS), "root": str(there_root), "out": str(tmp / "there.json"),
           "load": {arch: str(here_root / arch / "model") for arch in TINY_ENCODERS}}
    (tmp / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("PYTHONPATH", None)  # the other side imports its own packages, and this tree via its editable install
    result = subprocess.run([OTHER_PYTHON, __file__, str(tmp / "job.json")], cwd=tmp, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"the other environment failed:\n{result.stderr[-4000:]}"
    there = json.loads((tmp / "there.json").read_text())
    loaded_here = {arch: load_and_predict(there_root / arch / "model") for arch in TINY_ENCODERS}
    return {"here_versions": _versions(), "there_versions": there["versions"], "saved_here": saved_here,
            "loaded_there": there["loaded"], "saved_there": there["built"], "loaded_here": loaded_here}


def test_the_other_environment_runs_the_other_major_on_this_tree(exchange):
    here, there = exchange["here_versions"], exchange["there_versions"]
    assert _major(here["transformers"]) != _major(there["transformers"]), (
        f"both environments run transformers {here['transformers']} / {there['transformers']}: "
        "KAGGLEKIT_OTHER_PYTHON must name an environment with the other major")
    assert there["kagglekit"] == here["kagglekit"] == str(ROOT / "kagglekit"), (
        "the other environment imports kagglekit from elsewhere: install this tree there with pip install -e .")


def _assert_same(saved: dict, loaded: dict) -> None:
    import numpy as np

    assert loaded["input_ids"] == saved["input_ids"]  # the tokenizer encodes the same under both majors
    assert loaded["token_type_ids"] == saved["token_type_ids"]
    np.testing.assert_allclose(loaded["logits"], saved["logits"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(loaded["cosine"], saved["cosine"], rtol=0, atol=ATOL)  # the embedding feature too


@pytest.mark.parametrize("arch", TINY_ENCODERS)
def test_saved_here_predicts_the_same_there(exchange, arch):
    _assert_same(exchange["saved_here"][arch], exchange["loaded_there"][arch])


@pytest.mark.parametrize("arch", TINY_ENCODERS)
def test_saved_there_predicts_the_same_here(exchange, arch):
    _assert_same(exchange["saved_there"][arch], exchange["loaded_here"][arch])
