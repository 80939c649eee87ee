"""The two Kaggle notebooks, executed headless on CPU as a user runs them on Kaggle, from a fake input tree.

The kernel is a venv standing in for Kaggle's image (its packages, no kagglekit: `test_install.image_venv`);
the notebooks' install cell installs the real wheel found under the fake `/kaggle/input`
(``KAGGLEKIT_INPUT_ROOT``), which holds the competition under ``competitions/``, the CPC titles under
``datasets/``, the backbone under ``models/`` in Kaggle Models' versioned layout, and later the runs. Every
parameter that can be ``"auto"`` is left so.

The path through them is the one the README prescribes: fold 0 in one session; fold 1 in a second session
that stops at its time budget; a third session that continues the second from its output, attached as a
notebook output; ``kagglekit merge`` of the two runs, ``ensemble`` and ``report``; then the inference
notebook, which finds the merged run and the test file by itself and blends with the ensemble's weights.

Parameters are injected the way papermill does it: a cell tagged `injected-parameters` right after the cell
tagged `parameters`.
"""

import importlib.util
import json
import os
import shutil
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
from test_install import KIT, VERSION, image_venv, site_packages  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
CELL_TIMEOUT = 300
KERNEL = "kagglekit-image"
COMPETITION = "us-patent-phrase-to-phrase-matching"
OVERRIDES = {"n_folds": 2, "epochs": 1, "batch_size": 32, "max_len": 48}


def read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def tagged(nb, tag: str) -> list[int]:
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def inject(nb, params: dict) -> nbformat.NotebookNode:
    """A copy of `nb` with a papermill-style `injected-parameters` cell after the `parameters` cell."""
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))  # deep copy
    (index,) = tagged(nb, "parameters")
    source = "# Parameters\n" + "".join(f"{key} = {value!r}\n" for key, value in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(index + 1, cell)
    return nb


def text_output(nb) -> str:
    out = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            out.append(output.get("text", "") or output.get("data", {}).get("text/plain", ""))
    return "".join(out)


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
    namespace: dict = {}
    exec(compile(nb.cells[params].source, "parameters", "exec"), namespace)
    assert namespace["WHEEL_DIR"] == "auto" and namespace["CONFIG"] == "uspppm"
    # the markdown says what to attach for every built-in config, and for each the file names that config looks for
    from kagglekit.config import load_config
    from kagglekit.configs import builtin_configs

    intro = nb.cells[0].source
    for config in builtin_configs():
        row = next(line for line in intro.splitlines() if line.startswith(f"| `{config}` |"))
        for key in ("train_csv", "test_csv"):
            assert f"`{getattr(load_config(config), key)}`" in row, (config, key)
    # no mount point is written into a notebook: every input is found under the input root
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "/kaggle/input" not in code.replace('"/kaggle/input"', "").replace("under /kaggle/input", ""), name


def test_notebooks_match_their_generator():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_notebooks.py"), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# A fake Kaggle: input tree, working folder, an image without kagglekit


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    """The fake platform: input root with the wheel, competition, CPC titles and backbone; scratch; the kernel."""
    from kagglekit.testing import build_tiny_model, write_uspppm_sample

    spec = importlib.util.spec_from_file_location("build_wheel_script", ROOT / "scripts" / "build_wheel.py")
    build_wheel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_wheel)
    tmp = tmp_path_factory.mktemp("kaggle")
    (tmp / "build").mkdir()
    wheel = build_wheel.build_kit_wheel(tmp / "build", VERSION)

    data = write_uspppm_sample(tmp / "sample")
    root = tmp / "input"
    competition = root / "competitions" / COMPETITION
    competition.mkdir(parents=True)
    for name in ("train.csv", "test.csv", "sample_submission.csv"):
        shutil.copy(data / name, competition / name)
    shutil.copytree(data / "cpc_titles", root / "datasets" / "me" / "cpc-codes" / "CPCTitleList202202")
    build_tiny_model("bert", root / "models" / "me" / "tiny-bert" / "transformers" / "default" / "1")
    kit = root / "datasets" / "me" / "kagglekit"
    kit.mkdir(parents=True)
    shutil.copy(wheel, kit / KIT)

    python = image_venv(tmp / "image")
    kernels = tmp / "kernels"
    (kernels / KERNEL).mkdir(parents=True)
    argv = [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (kernels / KERNEL / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "fake image", "language": "python"}))
    return {"tmp": tmp, "root": root, "data": data, "python": python, "kernels": kernels, "scratch": tmp / "scratch"}


def execute(kaggle, name: str, params: dict, working: Path, root: Path | None = None, **extra_env: str) -> nbformat.NotebookNode:
    """Run notebook `name` in the image's kernel, in `working`, with the input root `root`; returns it with outputs."""
    nb = inject(read(name), params)
    working.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_", "KAGGLE"))}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="",
               PIP_NO_INDEX="1", KAGGLEKIT_INPUT_ROOT=str(root or kaggle["root"]), KAGGLEKIT_SCRATCH=str(kaggle["scratch"]),
               **extra_env)
    env.setdefault("OMP_NUM_THREADS", "1")  # a tiny model gains nothing from threads
    km = KernelManager(kernel_name=KERNEL, kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(kaggle["kernels"])]))
    client = NotebookClient(nb, km=km, timeout=CELL_TIMEOUT, resources={"metadata": {"path": str(working)}})
    client.execute(env=env)
    return nb


def kit(kaggle, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`kagglekit ARGS` with the image's python, where the notebooks installed the wheel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "KAGGLE"))}
    done = subprocess.run([str(kaggle["python"]), "-m", "kagglekit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def sessions(kaggle):
    """train.ipynb three times: fold 0; fold 1 stopped by its budget; fold 1 continued from that output."""
    tmp = kaggle["tmp"]
    params = {"FOLDS": 0, "OUTPUT_DIR": str(tmp / "s1" / "run"), "MODEL_DATASET_ID": "tester/uspppm-s1", "OVERRIDES": OVERRIDES}
    first = execute(kaggle, "train.ipynb", params, tmp / "s1")
    params = {**params, "FOLDS": [1], "OUTPUT_DIR": str(tmp / "s2" / "run"), "TIME_BUDGET": 1, "MODEL_DATASET_ID": "tester/uspppm-s2"}
    second = execute(kaggle, "train.ipynb", params, tmp / "s2")
    # the saved version's output, attached to the next session as a notebook output (read-only there)
    attached = kaggle["root"] / "notebooks" / "tester" / "uspppm-train-s2"
    shutil.copytree(tmp / "s2", attached, ignore=shutil.ignore_patterns("report"))
    params = {**params, "OUTPUT_DIR": str(tmp / "s3" / "run"), "TIME_BUDGET": "auto", "RESUME_FROM": "uspppm-train-s2",
              "MODEL_DATASET_ID": "tester/uspppm-s3"}
    third = execute(kaggle, "train.ipynb", params, tmp / "s3")
    return {"notebooks": [first, second, third], "runs": [tmp / "s1" / "run", tmp / "s2" / "run", tmp / "s3" / "run"]}


@pytest.fixture(scope="module")
def merged(kaggle, sessions):
    """merge → a second experiment → ensemble → report, with the kagglekit the notebooks installed."""
    tmp = kaggle["tmp"]
    s1, _, s3 = sessions["runs"]
    out = tmp / "after" / "merged"
    kit(kaggle, "merge", str(s1), str(s3), "--out", str(out), cwd=tmp)
    other = tmp / "after" / "other"  # the same data with another learning rate, both folds in one call (the recipe default is 1e-4)
    kit(kaggle, "train", "--config", str(s1 / "config.yaml"), "--set", f"output_dir={other}", "--set", "lr=3e-4", cwd=tmp)
    weights = tmp / "weights.json"
    kit(kaggle, "ensemble", str(out), str(other), "--out", str(weights), cwd=tmp)
    kit(kaggle, "report", str(out.parent), "--out", str(tmp / "report"), cwd=tmp)
    return {"run": out, "other": other, "weights": weights, "report": tmp / "report"}


@pytest.fixture(scope="module")
def inference(kaggle, merged):
    """inference.ipynb on a second input tree: the wheel, the competition and both runs, each at <dataset>/run."""
    tmp = kaggle["tmp"]
    root = tmp / "input2"
    for part in (f"competitions/{COMPETITION}", "datasets/me/kagglekit"):
        shutil.copytree(kaggle["root"] / part, root / part)
    runs = [root / "datasets" / "me" / "uspppm-merged" / "run", root / "datasets" / "me" / "uspppm-other" / "run"]
    shutil.copytree(merged["run"], runs[0])
    shutil.copytree(merged["other"], runs[1])
    out = tmp / "infer" / "submission.csv"
    params = {"OUT": str(out), "WEIGHTS": str(merged["weights"]), "AVERAGE": "logit", "BATCH_SIZE": 16}
    nb = execute(kaggle, "inference.ipynb", params, tmp / "infer", root=root)
    return nb, out, runs


# ---------------------------------------------------------------------------------------------
# train.ipynb


@pytest.mark.slow
def test_the_first_session_installs_the_wheel_and_finds_every_input(kaggle, sessions):
    text = text_output(sessions["notebooks"][0])
    site = site_packages(kaggle["python"])
    assert f"installed {KIT}" in text and f"kagglekit {VERSION} from {site / 'kagglekit'}" in text
    root = kaggle["root"]
    for key, path in [("train_csv", f"competitions/{COMPETITION}/train.csv"), ("test_csv", f"competitions/{COMPETITION}/test.csv"),
                      ("cpc_dir", "datasets/me/cpc-codes/CPCTitleList202202"),
                      ("backbone", "models/me/tiny-bert/transformers/default/1")]:
        assert f"{root / path}" in text, key
    assert "output size: " in text  # the doctor's size check of the planned folds
    # the later sessions find the wheel installed already
    assert f"kagglekit {VERSION} is installed already: nothing to install" in text_output(sessions["notebooks"][2])


@pytest.mark.slow
def test_a_session_that_reaches_its_time_budget_ends_cleanly_and_says_how_to_continue(sessions):
    text = text_output(sessions["notebooks"][1])
    assert "RESUME_FROM" in text  # how to continue, printed by the train cell
    card = json.loads((sessions["runs"][1] / "run.json").read_text())
    assert card["stopped"]["folds_left"] == [1] and card["folds"] == {}


@pytest.mark.slow
def test_the_continued_session_trains_the_stopped_fold(sessions):
    s1, _, s3 = sessions["runs"]
    card = json.loads((s3 / "run.json").read_text())
    assert set(card["folds"]) == {"1"} and not card.get("stopped")
    assert (s3 / "fold1" / "kagglekit.json").is_file() and not (s3 / "resume").exists()
    # the same folds in both sessions: folds depend only on fold_seed and the data
    assert (s1 / "folds.csv").read_bytes() == (s3 / "folds.csv").read_bytes()
    text = text_output(sessions["notebooks"][2])
    assert "fold 1: pearson" in text


@pytest.mark.slow
def test_the_train_notebook_writes_the_dataset_metadata_and_the_report(sessions):
    s1 = sessions["runs"][0]
    metadata = json.loads((s1 / "dataset-metadata.json").read_text())
    assert metadata == {"title": "uspppm-s1", "id": "tester/uspppm-s1", "licenses": [{"name": "CC0-1.0"}]}
    assert not list(s1.glob("*.tmp"))
    report = s1.parent / "report"
    outputs = [o for cell in sessions["notebooks"][0].cells for o in cell.get("outputs", [])]
    markdown = [o["data"]["text/markdown"] for o in outputs if "text/markdown" in o.get("data", {})]
    assert len(markdown) == 1 and markdown[0] == (report / "leaderboard.md").read_text()
    assert (report / "run" / "curve_fold0.png").is_file()


# ---------------------------------------------------------------------------------------------
# merge → ensemble → report → inference.ipynb


@pytest.mark.slow
def test_the_sessions_merge_into_one_run_with_one_cv(sessions, merged):
    s1, _, s3 = sessions["runs"]
    card = json.loads((merged["run"] / "run.json").read_text())
    assert set(card["folds"]) == {"0", "1"} and card["cv_folds"] == [0, 1]
    oof = pd.read_csv(merged["run"] / "oof.csv", dtype={"id": str})
    parts = pd.concat([pd.read_csv(r / "oof.csv", dtype={"id": str}) for r in (s1, s3)]).set_index("id").loc[oof["id"]]
    np.testing.assert_array_equal(oof["pred"].to_numpy(), parts["pred"].to_numpy())
    weights = json.loads(merged["weights"].read_text())
    assert [r["name"] for r in weights["runs"]] == ["merged", "other"] and all(r["run_id"] for r in weights["runs"])
    assert "merged" in (merged["report"] / "leaderboard.md").read_text()


@pytest.mark.slow
def test_the_inference_notebook_finds_the_runs_and_blends_as_predict_does(kaggle, merged, inference):
    from kagglekit.infer.predict import predict

    nb, out, runs = inference
    text = text_output(nb)
    assert all(str(run) in text for run in runs) and f"competitions/{COMPETITION}/test.csv" in text  # what it found
    assert "inference time: ~" in text  # outside a rerun the doctor times the folds
    data = kaggle["data"]
    sub = pd.read_csv(out, dtype={"id": str})
    sample = pd.read_csv(data / "sample_submission.csv", dtype={"id": str})
    assert list(sub.columns) == list(sample.columns) and sub["id"].tolist() == sample["id"].tolist()
    # both runs attached as <dataset>/run: the weights find each by its run_id
    expected = predict(runs, data / "test.csv", sample_submission=data / "sample_submission.csv", average="logit", batch_size=16,
                       weights=merged["weights"], device="cpu")
    np.testing.assert_allclose(sub["score"].to_numpy(), expected["score"].to_numpy(), rtol=0, atol=1e-6)
    equal = predict(runs, data / "test.csv", average="logit", batch_size=16, device="cpu")
    assert np.abs(equal["score"].to_numpy() - sub.set_index("id").loc[equal["id"], "score"].to_numpy()).max() > 1e-6  # weighted


@pytest.mark.slow
def test_a_competition_rerun_skips_the_timing(kaggle, inference):
    """KAGGLE_IS_COMPETITION_RERUN: the model folders are still checked, nothing is timed."""
    _, _, runs = inference
    tmp = kaggle["tmp"]
    params = {"OUT": str(tmp / "rerun" / "submission.csv"), "BATCH_SIZE": 16, "MODEL_DIRS": str(runs[0])}  # one folder, not a list
    nb = execute(kaggle, "inference.ipynb", params, tmp / "rerun", root=runs[0].parents[3], KAGGLE_IS_COMPETITION_RERUN="True")
    text = text_output(nb)
    assert "inference time: ~" not in text and "ok    model " in text
    assert str(runs[0]) in text and str(runs[1]) not in text  # only the run it was given
    assert (tmp / "rerun" / "submission.csv").is_file()
