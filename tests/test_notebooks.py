"""The two Kaggle notebooks, executed headless on CPU with a tiny model and the synthetic sample.

Parameters are injected the way papermill does it: a cell tagged `injected-parameters` right after
the cell tagged `parameters`. The kernel runs this test's own interpreter (an explicit kernelspec,
so a `python3` kernelspec elsewhere on the machine cannot pick another Python) and imports the same
kagglekit as this process, so the notebooks' install cell finds it and skips the wheel.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")
from jupyter_client.kernelspec import KernelSpecManager  # noqa: E402
from jupyter_client.manager import KernelManager  # noqa: E402
from nbclient import NotebookClient  # noqa: E402

import kagglekit  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 300
KERNEL = "kagglekit-test"


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def tagged(nb, tag: str) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def cell_source(nb, cell_id: str) -> str:
    (cell,) = [c for c in nb.cells if c.get("id") == cell_id]
    return cell.source


def inject(nb, params: dict) -> nbformat.NotebookNode:
    """A copy of `nb` with a papermill-style `injected-parameters` cell after the `parameters` cell."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy
    (index,) = tagged(nb, "parameters")
    source = "# Parameters\n" + "".join(f"{key} = {value!r}\n" for key, value in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


@pytest.fixture(scope="module")
def kernel_dir(tmp_path_factory) -> Path:
    """A kernelspec folder whose kernel is this very interpreter."""
    root = tmp_path_factory.mktemp("kernels")
    spec = root / KERNEL
    spec.mkdir()
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "kagglekit test", "language": "python"}))
    return root


def execute(nb, params: dict, cwd: Path, kernel_dir: Path) -> nbformat.NotebookNode:
    nb = inject(nb, params)
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    # a tiny model gains nothing from threads, and on a busy machine OpenMP threads spin-wait on each other
    env.setdefault("OMP_NUM_THREADS", "1")
    # the kagglekit this test imports (a source checkout or an install), ahead of anything else
    package_root = str(Path(kagglekit.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kernel_dir)]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(cwd)}})
    client.execute(env=env)
    return nb


def text_output(nb) -> str:
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "".join(out)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from kagglekit.testing import build_tiny_model, write_uspppm_sample

    tmp = tmp_path_factory.mktemp("notebooks")
    return {
        "tmp": tmp,
        "tiny": build_tiny_model("bert", tmp / "tiny"),
        "data": write_uspppm_sample(tmp / "data"),
        "run": tmp / "run",
    }


@pytest.fixture(scope="module")
def trained(setup, kernel_dir):
    """train.ipynb executed twice, FOLD=0 then FOLD=1, into one run folder."""
    tmp, data = setup["tmp"], setup["data"]
    outputs = []
    for fold in (0, 1):
        params = {
            "WHEEL_DIR": str(tmp / "nowheel"),
            "TRAIN_CSV": str(data / "train.csv"),
            "CPC_DIR": str(data / "cpc_titles"),
            "BACKBONE": str(setup["tiny"]),
            "FOLD": fold,
            "N_FOLDS": 2,
            "OUTPUT_DIR": str(setup["run"]),
            "MODEL_DATASET_ID": "tester/uspppm-tiny-fold{FOLD}",
            "OVERRIDES": {"epochs": 1, "batch_size": 32, "max_len": 48},
        }
        outputs.append(execute(read("train.ipynb"), params, tmp, kernel_dir))
    return outputs


@pytest.fixture(scope="module")
def submission(setup, trained, kernel_dir):
    tmp, data = setup["tmp"], setup["data"]
    params = {
        "WHEEL_DIR": str(tmp / "nowheel"),
        "MODEL_DIRS": [str(setup["run"])],
        "TEST_CSV": str(data / "test.csv"),
        "SAMPLE_SUBMISSION": str(data / "sample_submission.csv"),
        "OUT": str(tmp / "submission.csv"),
    }
    nb = execute(read("inference.ipynb"), params, tmp, kernel_dir)
    return nb, tmp / "submission.csv"


# ---------------------------------------------------------------------------------------------
# The committed notebooks


@pytest.mark.parametrize("name", ["train.ipynb", "inference.ipynb"])
def test_committed_notebook_is_clean(name):
    nb = read(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: commit it without outputs"
    (params,) = tagged(nb, "parameters")
    assert tagged(nb, "injected-parameters") == []
    install = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and "pip" in c.source]
    assert install == [params + 1], "the install cell comes right after the parameters cell (it needs WHEEL_DIR)"
    # the parameters cell holds plain assignments only, so an injected cell can override every one
    compiled = compile(nb.cells[params].source, "parameters", "exec")
    namespace: dict = {}
    exec(compiled, namespace)
    assert "WHEEL_DIR" in namespace


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("bundled", [False, True], ids=["kit-only", "with-deps"])
@pytest.mark.parametrize("name", ["train.ipynb", "inference.ipynb"])
def test_install_cell_installs_the_wheel_offline_when_kagglekit_is_missing(name, bundled, tmp_path, monkeypatch):
    """Run the install cell's code here, with kagglekit made unimportable and pip replaced by a recorder."""
    source = cell_source(read(name), "install")
    wheel_dir = tmp_path / "kagglekit"
    (wheel_dir / "wheels").mkdir(parents=True)  # an empty wheels/ changes nothing
    wheel = wheel_dir / "kagglekit-0.1.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    deps = [wheel_dir / "wheels" / "b_dep-2.0-py3-none-any.whl", wheel_dir / "wheels" / "a_dep-1.0-py3-none-any.whl"]
    if bundled:
        for dep in deps:
            dep.write_bytes(b"")
    calls = []

    def fake_check_call(cmd, *args, **kwargs):
        calls.append(list(cmd))
        monkeypatch.setitem(sys.modules, "kagglekit", kagglekit)  # "installed": the import succeeds again
        return 0

    monkeypatch.setitem(sys.modules, "kagglekit", None)  # `import kagglekit` raises ImportError
    monkeypatch.setattr(subprocess, "check_call", fake_check_call)
    exec(compile(source, "install", "exec"), {"WHEEL_DIR": str(wheel_dir)})
    pip = [sys.executable, "-m", "pip", "install", "--no-index"]
    if bundled:  # every bundled wheel, named so it is installed even over an older copy; the kit's requirements resolved
        expected = pip + ["--find-links", str(wheel_dir / "wheels"), str(wheel), str(deps[1]), str(deps[0])]
    else:  # the image has the dependencies: the kit alone
        expected = pip + ["--no-deps", str(wheel)]
    assert calls == [expected]


def test_install_cell_names_the_fix_when_the_wheel_is_missing(tmp_path, monkeypatch):
    source = cell_source(read("train.ipynb"), "install")
    monkeypatch.setitem(sys.modules, "kagglekit", None)
    monkeypatch.setattr(subprocess, "check_call", lambda *a, **k: pytest.fail("pip must not run"))
    with pytest.raises(FileNotFoundError, match="attach the kagglekit dataset"):
        exec(compile(source, "install", "exec"), {"WHEEL_DIR": str(tmp_path)})


# ---------------------------------------------------------------------------------------------
# train.ipynb, twice


@pytest.mark.slow
def test_train_notebook_writes_a_complete_run_folder(setup, trained):
    run, data = setup["run"], setup["data"]
    for name in ("config.yaml", "folds.csv", "oof.csv", "run.json", "dataset-metadata.json"):
        assert (run / name).is_file(), name
    for fold in ("fold0", "fold1"):
        assert (run / fold / "model.safetensors").is_file() and (run / fold / "kagglekit.json").is_file()
    train = pd.read_csv(data / "train.csv", dtype={"id": str})
    oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
    assert sorted(oof["id"]) == sorted(train["id"]) and not oof["id"].duplicated().any()
    assert set(oof["fold"]) == {0, 1}
    card = json.loads((run / "run.json").read_text())
    assert set(card["folds"]) == {"0", "1"} and card["cv_folds"] == [0, 1]
    assert card["config"]["epochs"] == 1 and card["config"]["n_folds"] == 2


@pytest.mark.slow
def test_train_notebook_writes_the_dataset_metadata(setup, trained):
    metadata = json.loads((setup["run"] / "dataset-metadata.json").read_text())
    assert metadata == {"title": "uspppm-tiny-fold1", "id": "tester/uspppm-tiny-fold1", "licenses": [{"name": "CC0-1.0"}]}
    assert not list(setup["run"].glob("*.tmp"))


@pytest.mark.slow
def test_train_notebook_reports_the_fold(trained):
    for fold, nb in enumerate(trained):
        text = text_output(nb)
        assert "kagglekit 0." in text and "warn  gpu: no CUDA device visible" in text  # install skipped, kit imported, doctor ran
        assert f"fold {fold}: pearson" in text
        assert "model.safetensors" in text  # the output listing


# ---------------------------------------------------------------------------------------------
# inference.ipynb


@pytest.mark.slow
def test_inference_notebook_writes_the_submission(setup, submission):
    _, path = submission
    sample = pd.read_csv(setup["data"] / "sample_submission.csv", dtype={"id": str})
    sub = pd.read_csv(path, dtype={"id": str})
    assert list(sub.columns) == ["id", "score"]
    assert sub["id"].tolist() == sample["id"].tolist()
    assert not sub["score"].isna().any()
    assert np.all((sub["score"] >= 0) & (sub["score"] <= 1))


@pytest.mark.slow
def test_inference_notebook_averages_both_folds(setup, submission):
    """The submission is the mean of the two folds' predictions, each fold predicted here on its own."""
    from kagglekit.infer.predict import predict

    nb, path = submission
    text = text_output(nb)
    assert "fold0" in text and "fold1" in text and f"wrote {setup['tmp'] / 'submission.csv'}" in text
    data = setup["data"]
    sub = pd.read_csv(path, dtype={"id": str})
    per_fold = [  # batch_size as the notebook's parameters cell: padding per batch then matches too
        predict([setup["run"] / f"fold{k}"], data / "test.csv", sample_submission=data / "sample_submission.csv", batch_size=128, device="cpu")
        for k in (0, 1)
    ]
    for fold in per_fold:
        assert fold["id"].tolist() == sub["id"].tolist()
    fold0, fold1 = (fold["score"].to_numpy() for fold in per_fold)
    assert np.abs(fold0 - fold1).max() > 1e-3  # two different models: their mean is neither one
    np.testing.assert_allclose(sub["score"].to_numpy(), (fold0 + fold1) / 2, rtol=0, atol=1e-6)  # predict's default: prob averaging


@pytest.mark.slow
def test_train_notebook_shows_the_report(setup, trained):
    report = setup["tmp"] / "report"
    outputs = [o for cell in trained[1].cells for o in cell.get("outputs", [])]
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(markdown) == 1 and "| 1 | **run** (best) |" in markdown[0]
    assert markdown[0] == (report / "leaderboard.md").read_text()
    names = ["run/curve_fold0.png", "run/curve_fold1.png", "run/oof.png", "run/folds.png"]
    assert all(name in text_output(trained[1]) and (report / name).is_file() for name in names)
    assert sum("image/png" in o.get("data", {}) for o in outputs) == len(names)


@pytest.mark.slow
def test_both_notebooks_run_doctor_first(trained, submission):
    """The first code cells after the install print kagglekit doctor's lines; a failing check would stop the run."""
    for nb in (trained[0], submission[0]):
        text = text_output(nb)
        assert "ok    HF_HUB_OFFLINE: 1" in text and "torch: " in text
    assert "inference time: ~" in text_output(submission[0])  # the inference notebook times its model folders
