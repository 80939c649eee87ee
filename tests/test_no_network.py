"""Kaggle's scoring sessions have no internet: train, predict, pretrain and both notebooks run with
every connection refused, and none is even attempted.

In this process the socket functions are replaced by recorders that refuse, and the hub's offline
flags are cleared, so a library that wanted the network would try it and be seen. The notebooks run in
a kernel (another process): `tests/nonet/sitecustomize.py`, put on the kernel's PYTHONPATH, does the
same there and writes every attempt to a log file.
"""

import errno
import re
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT, SAMPLE
from kagglekit.cli import main

try:  # the notebooks need nbclient and ipykernel: without them tests/test_notebooks.py skips, and so do these
    import test_notebooks as notebooks
except pytest.skip.Exception:
    notebooks = None

CONFIG = ROOT / "configs" / "uspppm.yaml"
NONET = Path(__file__).resolve().parent / "nonet"
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")

needs_kernel = pytest.mark.skipif(notebooks is None, reason="nbclient or ipykernel is not installed")
if notebooks is not None:  # the fake Kaggle of tests/test_notebooks.py, reused (pytest finds fixtures by name)
    kaggle = notebooks.kaggle


@pytest.fixture
def attempts(monkeypatch) -> list:
    """Refuse every connection and name lookup of this process, recording each; no offline mode set."""
    import huggingface_hub.constants
    import transformers.utils.hub

    recorded = []

    def refuse(name):
        def blocked(*args, **kwargs):
            recorded.append((name, args[1:] if name.startswith("connect") else args))
            raise OSError(errno.ENETUNREACH, f"network blocked by the test: {name}")
        return blocked

    monkeypatch.setattr(socket.socket, "connect", refuse("connect"))
    monkeypatch.setattr(socket.socket, "connect_ex", refuse("connect_ex"))
    monkeypatch.setattr(socket, "create_connection", refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
    for key in OFFLINE_VARS:
        monkeypatch.delenv(key, raising=False)
    # huggingface_hub (and transformers 4.x) read HF_HUB_OFFLINE when imported (set by conftest then): clear it too
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(transformers.utils.hub, "_is_offline_mode", False, raising=False)
    return recorded


@pytest.mark.compat
def test_the_blocker_refuses_and_records(attempts):
    import huggingface_hub.constants
    import transformers.utils.hub

    with pytest.raises(OSError, match="network blocked by the test: create_connection"):
        socket.create_connection(("huggingface.co", 443), timeout=1)
    with pytest.raises(OSError, match="network blocked by the test: connect"):
        with socket.socket() as sock:
            sock.connect(("93.184.215.14", 80))
    assert attempts == [("create_connection", (("huggingface.co", 443),)), ("connect", (("93.184.215.14", 80),))]
    # a hub download would really be tried
    assert not huggingface_hub.constants.HF_HUB_OFFLINE and not transformers.utils.hub.is_offline_mode()


@pytest.mark.compat
@pytest.mark.slow
def test_train_predict_and_pretrain_attempt_no_connection(tiny_bert, tmp_path, attempts):
    run, out = tmp_path / "run", tmp_path / "submission.csv"
    sets = [f"backbone={tiny_bert}", f"output_dir={run}", "max_rows=240", "n_folds=2", "epochs=1", "max_len=40", "batch_size=16"]
    assert main(["train", "--config", str(CONFIG), "--fold", "all", *[a for s in sets for a in ("--set", s)]]) == 0
    assert {"fold0", "fold1", "oof.csv", "run.json"} <= {p.name for p in run.iterdir()}

    assert main(["predict", "--models", str(run), "--data", str(SAMPLE / "test.csv"),
                 "--sample-submission", str(SAMPLE / "sample_submission.csv"), "--out", str(out)]) == 0
    sample = pd.read_csv(SAMPLE / "sample_submission.csv", dtype={"id": str})
    assert pd.read_csv(out, dtype={"id": str})["id"].tolist() == sample["id"].tolist()

    pretrain = tmp_path / "pretrain"
    sets = [f"files={SAMPLE / 'train.csv'}", "columns=anchor,target", f"backbone={tiny_bert}", f"output_dir={pretrain}",
            "steps=3", "batch_size=8", "max_len=32", "save_every=0", "device=cpu"]
    assert main(["pretrain", *[a for s in sets for a in ("--set", s)]]) == 0
    assert (pretrain / "last" / "config.json").is_file()
    assert attempts == []


# ---------------------------------------------------------------------------------------------
# The notebooks, in a kernel whose sockets tests/nonet/sitecustomize.py blocks


@pytest.fixture(scope="module")
def offline_notebooks(kaggle):
    """train.ipynb (fold 0 of 2), then inference.ipynb on its run, from the fake input tree, with the network blocked in
    the kernel and in every process it starts (the install cell's pip among them)."""
    import shutil

    tmp = kaggle["tmp"] / "offline"
    log = tmp / "network-attempts.log"
    blocked = {"KAGGLEKIT_NONET_LOG": str(log), "PYTHONPATH": str(NONET)}
    run = tmp / "train" / "run"
    params = {"FOLDS": 0, "OUTPUT_DIR": str(run), "MODEL_DATASET_ID": "tester/offline", "OVERRIDES": notebooks.OVERRIDES}
    train = notebooks.execute(kaggle, "train.ipynb", params, tmp / "train", **blocked)
    root = tmp / "input"  # the inference session's inputs: the wheel, the competition and the run
    for part in (f"competitions/{notebooks.COMPETITION}", "datasets/me/kagglekit"):
        shutil.copytree(kaggle["root"] / part, root / part)
    shutil.copytree(run, root / "datasets" / "me" / "offline-run" / "run")
    submission = tmp / "infer" / "submission.csv"
    inference = notebooks.execute(kaggle, "inference.ipynb", {"OUT": str(submission)}, tmp / "infer", root=root, **blocked)
    return (train, inference), log.read_text().splitlines(), submission


def test_the_kernel_blocker_refuses_and_records(tmp_path):
    log = tmp_path / "attempts.log"
    code = "import socket\ntry:\n    socket.create_connection(('huggingface.co', 443))\nexcept OSError as err:\n    print(err)"
    env = {"KAGGLEKIT_NONET_LOG": str(log), "PYTHONPATH": str(NONET), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code + "\nimport os; print(os.environ.get('HF_HUB_OFFLINE'))"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert out.splitlines() == ["[Errno 101] network blocked by tests/nonet/sitecustomize.py: create_connection ('huggingface.co', 443)",
                                "None"]
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and lines[0].endswith(" start -c")
    assert lines[1].split(" ", 1)[1] == "refused create_connection ('huggingface.co', 443)"


@needs_kernel
@pytest.mark.slow
def test_both_notebooks_run_with_the_network_blocked(kaggle, offline_notebooks):
    (train_nb, inference_nb), log, submission = offline_notebooks
    # the blocker ran in both kernels (`python -m ipykernel_launcher -f <connection file>`: at startup
    # Python has not yet put the module name into sys.argv), and in what they started
    kernels = [line for line in log if re.fullmatch(r"\d+ start -m -f \S+\.json", line)]
    assert len(kernels) == 2, log
    assert [line for line in log if " start " not in line] == [], "a notebook tried to reach the network"
    for nb in (train_nb, inference_nb):
        # the kernel started without HF_HUB_OFFLINE: the notebook set it itself before loading a model
        assert "ok    HF_HUB_OFFLINE: 1" in notebooks.text_output(nb)
    assert "fold 0: pearson" in notebooks.text_output(train_nb)
    sample = pd.read_csv(kaggle["data"] / "sample_submission.csv", dtype={"id": str})
    assert pd.read_csv(submission, dtype={"id": str})["id"].tolist() == sample["id"].tolist()
