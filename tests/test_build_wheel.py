"""build_wheel.sh: the offline wheel build, its content check, and the Kaggle dataset folder."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "build_wheel.sh"
DATASET_ID = "someone/kagglekit-test"


def repo_version() -> str:
    """kagglekit.__version__ of this checkout (loaded from the file, never from an installed copy)."""
    spec = importlib.util.spec_from_file_location("_kagglekit_init", ROOT / "kagglekit" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.__version__


def run_script(*args, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if k != "KAGGLEKIT_DATASET_ID"}
    env["PYTHON"] = sys.executable
    env["PIP_NO_INDEX"] = "1"  # belt and braces: the build must never need the network
    env.update(env_extra or {})
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def droppings():
    return {p.name for p in ROOT.iterdir() if p.name == "build" or p.name.endswith(".egg-info")}


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """One full build into a temp dataset folder, shared by the assertions below."""
    out = tmp_path_factory.mktemp("build") / "ds"
    before = droppings()
    proc = run_script("--out", str(out), "--dataset-id", DATASET_ID)
    return proc, out, before


def test_build_writes_clean_installable_wheel(build):
    proc, out, before = build
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    version = repo_version()

    wheels = sorted(p.name for p in out.glob("*.whl"))
    assert wheels == [f"kagglekit-{version}-py3-none-any.whl"], wheels
    names = zipfile.ZipFile(out / wheels[0]).namelist()
    dist_info = f"kagglekit-{version}.dist-info/"
    outside = [n for n in names if not (n.startswith("kagglekit/") or n.startswith(dist_info))]
    assert outside == [], outside
    for required in ("kagglekit/__init__.py", "kagglekit/__main__.py", dist_info + "METADATA"):
        assert required in names
    entry_points = zipfile.ZipFile(out / wheels[0]).read(dist_info + "entry_points.txt").decode()
    assert re.search(r"^kagglekit\s*=\s*kagglekit\.cli:main", entry_points, re.M), entry_points

    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta == {"title": "kagglekit", "id": DATASET_ID, "licenses": [{"name": "apache-2.0"}]}
    assert sorted(p.name for p in out.iterdir()) == sorted(wheels + ["dataset-metadata.json"])  # no temp files

    assert f"kaggle datasets create -p {out}" in proc.stdout
    assert f'kaggle datasets version -p {out} -m "kagglekit {version}"' in proc.stdout
    assert (
        f"pip install --no-index --no-deps /kaggle/input/kagglekit-test/kagglekit-{version}-py3-none-any.whl"
        in proc.stdout
    )
    assert "WARNING" not in log

    # the build ran from a temp copy: no build/ or *.egg-info left in the repo
    assert droppings() <= before


def test_built_wheel_passes_check_wheel(build):
    proc, out, _ = build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    check = run_script("--check-wheel", str(wheel))
    assert check.returncode == 0, check.stdout + check.stderr


def test_check_wheel_rejects_leaked_files(tmp_path):
    bad = tmp_path / "kagglekit-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("kagglekit/__init__.py", '__version__ = "0.0.0"\n')
        z.writestr("kagglekit-0.0.0.dist-info/METADATA", "Name: kagglekit\n")
        z.writestr("tests/test_x.py", "def test(): pass\n")
        z.writestr("kagglekit/weights/model.safetensors", b"\0" * 8)
    proc = run_script("--check-wheel", str(bad))
    assert proc.returncode != 0
    assert "tests/test_x.py" in proc.stderr
    assert "kagglekit/weights/model.safetensors" in proc.stderr
    assert "kagglekit/__init__.py" not in proc.stderr


def test_rerun_replaces_older_wheel_and_keeps_folder_tidy(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "kagglekit-0.0.1-py3-none-any.whl").write_bytes(b"old")
    (out / "notes.txt").write_text("user file, left alone\n")
    proc = run_script("--out", str(out))  # no id anywhere: placeholder + warning
    assert proc.returncode == 0, proc.stdout + proc.stderr
    version = repo_version()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"kagglekit-{version}-py3-none-any.whl", "dataset-metadata.json", "notes.txt"]
    )
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta["id"] == "YOUR_KAGGLE_USERNAME/kagglekit"
    assert "WARNING" in proc.stderr and "--dataset-id" in proc.stderr and "KAGGLEKIT_DATASET_ID" in proc.stderr
    assert f"/kaggle/input/kagglekit/kagglekit-{version}-py3-none-any.whl" in proc.stdout


@pytest.mark.parametrize("how", ["flag", "env"])
def test_bad_dataset_id_is_rejected_before_building(tmp_path, how):
    out = tmp_path / "ds"
    if how == "flag":
        proc = run_script("--out", str(out), "--dataset-id", "Bad Id", timeout=30)
    else:
        proc = run_script("--out", str(out), env_extra={"KAGGLEKIT_DATASET_ID": "Bad Id"}, timeout=30)
    assert proc.returncode != 0
    assert "'Bad Id'" in proc.stderr
    assert "OWNER/SLUG" in proc.stderr
    assert "building" not in proc.stdout
    assert not out.exists()


def test_help_and_unknown_flags():
    helped = run_script("--help", timeout=30)
    assert helped.returncode == 0
    assert helped.stdout.startswith("Usage: bash build_wheel.sh")
    for flag in ("--out", "--dataset-id", "--check-wheel"):
        assert flag in helped.stdout

    for args in (["--with-deps"], ["--bogus"], ["--out"]):
        proc = run_script(*args, timeout=30)
        assert proc.returncode == 2, args
        assert "Usage: bash build_wheel.sh" in proc.stderr
    assert "unknown argument: --with-deps" in run_script("--with-deps", timeout=30).stderr
