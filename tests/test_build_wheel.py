"""build_wheel.sh: the offline wheel build, its content check, the Kaggle dataset folder, and the bundled
dependency wheels (--with-deps), installed the way the notebooks' install cell does it.

Nothing here touches the network: dependency wheels come from a local wheelhouse of stand-in packages
built in tmp (--find-links), and the PyPI command line is checked with --dry-run.
"""

import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "build_wheel.sh"
DATASET_ID = "someone/kagglekit-test"
# the stand-ins for dependencies: kk-standin needs kk-standin-base; kk-unrequested is in the wheelhouse only
STANDINS = {
    "kk_standin": ("1.0", ["kk-standin-base>=1.0"], "import kk_standin_base\n\nVALUE = kk_standin_base.BASE + 1\n"),
    "kk_standin_base": ("1.0", [], "BASE = 41\n"),
    "kk_unrequested": ("1.0", [], "X = 0\n"),
}
BUNDLED = ["kk_standin-1.0-py3-none-any.whl", "kk_standin_base-1.0-py3-none-any.whl"]
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]


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
def wheelhouse(tmp_path_factory) -> Path:
    """Pure-Python wheels of the stand-in packages, built from setup.py files with pip wheel, offline."""
    root = tmp_path_factory.mktemp("standins")
    sources = []
    for name, (version, requires, code) in STANDINS.items():
        src = root / "src" / name
        (src / name).mkdir(parents=True)
        (src / name / "__init__.py").write_text(code)
        (src / "setup.py").write_text(
            "from setuptools import setup\n"
            f"setup(name={name!r}, version={version!r}, packages=[{name!r}], install_requires={requires!r})\n"
        )
        sources.append(str(src))
    house = root / "house"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(house), *sources],
        check=True, capture_output=True, text=True, env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    # a binary wheel for another Python only: --python-version 3.12 must not take it
    (house / "kk_native-1.0-cp311-cp311-manylinux_2_17_x86_64.whl").write_bytes(b"")
    return house


@pytest.fixture(scope="module")
def build(tmp_path_factory, wheelhouse):
    """One full build with two bundled stand-ins (one named on the command line, one in a requirements
    file) into a dataset folder whose wheels/ holds a stale wheel from an earlier build."""
    tmp = tmp_path_factory.mktemp("build")
    out = tmp / "ds"
    (out / "wheels").mkdir(parents=True)
    (out / "wheels" / "kk_stale-0.1-py3-none-any.whl").write_bytes(b"stale")
    requirements = tmp / "requirements.txt"
    requirements.write_text("# bundled for the test\nkk_standin_base>=1.0\n")
    before = droppings()
    proc = run_script("--out", str(out), "--dataset-id", DATASET_ID, "--with-deps", "kk-standin",
                      "--with-deps-file", str(requirements), "--find-links", str(wheelhouse))
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
    # no temp files; the kit at the root, the dependencies under wheels/
    assert sorted(p.name for p in out.iterdir()) == sorted(wheels + ["dataset-metadata.json", "wheels"])

    # the kaggle CLI skips subfolders unless --dir-mode says otherwise
    assert f"kaggle datasets create -p {out} --dir-mode zip" in proc.stdout
    assert f'kaggle datasets version -p {out} --dir-mode zip -m "kagglekit {version}"' in proc.stdout
    kaggle = "/kaggle/input/kagglekit-test"
    assert (
        f"pip install --no-index --find-links {kaggle}/wheels {kaggle}/kagglekit-{version}-py3-none-any.whl "
        f"{kaggle}/wheels/*.whl" in proc.stdout
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
    # no wheels/: the upload and the install as before
    assert f"kaggle datasets create -p {out}\n" in proc.stdout
    wheel = f"/kaggle/input/kagglekit/kagglekit-{version}-py3-none-any.whl"
    assert f"pip install --no-index --no-deps {wheel}\n" in proc.stdout


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
    for flag in ("--out", "--dataset-id", "--check-wheel", "--with-deps", "--with-deps-file", "--find-links",
                 "--python-version", "--dry-run"):
        assert flag in helped.stdout

    for args in (["--bogus"], ["--out"], ["--bogus=1"]):
        proc = run_script(*args, timeout=30)
        assert proc.returncode == 2, args
        assert "Usage: bash build_wheel.sh" in proc.stderr
    assert "unknown argument: --bogus" in run_script("--bogus", timeout=30).stderr


# ---------------------------------------------------------------------------------------------
# Dependency wheels (--with-deps)


def test_with_deps_bundles_exactly_the_named_wheels(build, wheelhouse):
    proc, out, _ = build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # the two requested, not kk-unrequested; the stale wheel of the earlier build is gone (wheels/ replaced)
    assert sorted(p.name for p in (out / "wheels").iterdir()) == BUNDLED
    for name in BUNDLED:
        assert (out / "wheels" / name).read_bytes() == (wheelhouse / name).read_bytes()
    assert "wheels/: 2 dependency wheel(s)" in proc.stdout
    # downloaded before the kit is built: a failed download costs no build
    assert proc.stdout.index("downloading dependency wheels") < proc.stdout.index("building")


def test_build_without_deps_keeps_an_existing_wheels_folder(tmp_path):
    out = tmp_path / "ds"
    (out / "wheels").mkdir(parents=True)
    kept = out / "wheels" / "kk_old-1.0-py3-none-any.whl"
    kept.write_bytes(b"bundled earlier")
    proc = run_script("--out", str(out), "--dataset-id", DATASET_ID)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert [p.name for p in (out / "wheels").iterdir()] == [kept.name]
    assert kept.read_bytes() == b"bundled earlier"
    assert f"wheels/ kept from an earlier --with-deps build: {kept.name}" in proc.stdout
    assert f"kaggle datasets create -p {out} --dir-mode zip" in proc.stdout
    assert "pip install --no-index --find-links /kaggle/input/kagglekit-test/wheels " in proc.stdout


@pytest.mark.parametrize("variant", ["defaults", "options"])
def test_dry_run_prints_the_pypi_download_command(tmp_path, variant):
    out = tmp_path / "ds"
    head = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps"]
    if variant == "defaults":
        args = ["--with-deps", "sentencepiece  protobuf>=3.20,<5", "--with-deps", "Foo_Bar[x]==1.0"]
        expected = head + ["--python-version", "3.12", "--implementation", "cp"]
        expected += [word for platform in PLATFORMS for word in ("--platform", platform)]
        expected += ["--dest", str(out / "wheels"), "sentencepiece", "protobuf>=3.20,<5", "Foo_Bar[x]==1.0"]
    else:
        requirements = tmp_path / "req.txt"
        requirements.write_text("tokenizers==0.20.3\n")
        house = tmp_path / "house"
        house.mkdir()
        args = ["--with-deps-file", str(requirements), "--python-version", "3.11", "--find-links", str(house)]
        expected = head + ["--python-version", "3.11", "--implementation", "cp"]
        expected += [word for platform in PLATFORMS for word in ("--platform", platform)]
        expected += ["--dest", str(out / "wheels"), "--no-index", "--find-links", str(house), "-r", str(requirements)]
    proc = run_script("--out", str(out), "--dry-run", *args, timeout=30)
    assert proc.returncode == 0, proc.stderr
    command = proc.stdout.strip().splitlines()[-1]
    assert shlex.split(command) == expected
    assert command == shlex.join(expected)
    assert "building" not in proc.stdout
    assert not out.exists()


@pytest.mark.parametrize(
    "args, status, message",
    [
        (["--with-deps", "numpy ./evil.whl"], 1, "'./evil.whl' is not a requirement"),
        (["--with-deps", "git+https://example.org/x"], 1, "'git+https://example.org/x' is not a requirement"),
        (["--with-deps", "KaggleKit[onnx]>=0.1"], 1, "'KaggleKit[onnx]>=0.1': the kit's own wheel"),
        (["--with-deps-file", "no-such-requirements.txt"], 1, "--with-deps-file: no such file:"),
        (["--with-deps", "x", "--find-links", "no-such-folder"], 1, "--find-links: no such folder:"),
        (["--with-deps", "x", "--python-version", "3"], 1, "--python-version: '3' is not a Python version"),
        (["--find-links", "."], 2, "--find-links only applies with --with-deps or --with-deps-file"),
        (["--python-version", "3.12"], 2, "--python-version only applies with --with-deps"),
        (["--dry-run"], 2, "--dry-run only applies with --with-deps"),
        (["--with-deps"], 2, "--with-deps needs a value"),
        (["--with-deps", "  "], 2, "--with-deps needs a value"),
        (["--with-deps=--index-url=http://x"], 2, "--with-deps needs a value"),
    ],
)
def test_bad_deps_input_is_rejected_before_building(tmp_path, args, status, message):
    out = tmp_path / "ds"
    proc = run_script("--out", str(out), *args, timeout=30)
    assert proc.returncode == status, proc.stderr
    assert message in proc.stderr
    assert "building" not in proc.stdout and "downloading" not in proc.stdout
    assert not out.exists()


def test_no_wheel_for_the_target_python_fails_before_building(tmp_path, wheelhouse):
    out = tmp_path / "ds"
    proc = run_script("--out", str(out), "--with-deps", "kk-native", "--find-links", str(wheelhouse), timeout=60)
    assert proc.returncode == 1
    assert "No matching distribution found for kk-native" in proc.stderr  # pip's log
    assert f"no binary wheel for CPython 3.12 on manylinux x86_64 in {wheelhouse}: check" in proc.stderr
    assert "building" not in proc.stdout
    assert not out.exists()


def _install_cell() -> str:
    nb = json.loads((ROOT / "notebooks" / "train.ipynb").read_text())
    (cell,) = [c for c in nb["cells"] if c.get("id") == "install"]
    return "".join(cell["source"])


def _fresh_venv(root: Path) -> Path:
    """A venv without kagglekit that sees this interpreter's packages (torch, pip ...) as installed.

    The packages are linked into a folder named by a .pth file, leaving out kagglekit's own (an editable
    install here), so the venv starts without the kit but satisfies its requirements, as Kaggle's image does.
    """
    shadow = root / "shadow"
    shadow.mkdir()
    site = Path(sysconfig.get_paths()["purelib"])
    for entry in site.iterdir():
        if entry.name.startswith(("kagglekit", "__editable__", "_kagglekit")) or entry.suffix == ".pth":
            continue
        (shadow / entry.name).symlink_to(entry)
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip()
    (Path(venv_site) / "_standins_shadow.pth").write_text(f"{shadow}\n")
    return python


def _run_in(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_notebook_install_cell_installs_kit_and_bundled_deps_offline(build, tmp_path):
    """The notebooks' install cell, run in a fresh venv against the built dataset folder."""
    proc, out, _ = build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    from importlib import metadata

    missing = [r for r in metadata.requires("kagglekit") or [] if "extra ==" not in r
               and not _installed(re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0])]
    if missing:
        pytest.skip(f"this interpreter lacks kagglekit requirements the install resolves against: {missing}")
    python = _fresh_venv(tmp_path)
    cell = _install_cell()

    # kk-standin without kk-standin-base: the resolving install fails, names the missing one, installs nothing
    partial = tmp_path / "partial"
    shutil.copytree(out, partial)
    (partial / "wheels" / BUNDLED[1]).unlink()
    failed = _run_in(python, f"WHEEL_DIR = {str(partial)!r}\n" + cell, tmp_path)
    assert failed.returncode != 0
    assert "No matching distribution found for kk-standin-base>=1.0" in failed.stdout + failed.stderr
    nothing = _run_in(python, "import importlib.util as u; print(u.find_spec('kagglekit'), u.find_spec('kk_standin'))",
                      tmp_path)
    assert nothing.stdout.split() == ["None", "None"], nothing.stderr

    installed = _run_in(python, f"WHEEL_DIR = {str(out)!r}\n" + cell, tmp_path)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    venv = python.parent.parent
    check = _run_in(python, textwrap.dedent("""\
        import kagglekit, kk_standin, kk_standin_base
        print(kagglekit.__version__, kk_standin.VALUE)
        for module in (kagglekit, kk_standin, kk_standin_base):
            print(module.__file__)
    """), tmp_path)
    assert check.returncode == 0, check.stderr
    lines = check.stdout.split("\n")
    assert lines[0] == f"{repo_version()} 42"
    for path in lines[1:4]:
        assert path.startswith(str(venv) + os.sep), path
    assert f"kagglekit {repo_version()} from {venv}" in installed.stdout


def _installed(name: str) -> bool:
    from importlib import metadata

    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        return False
    return True
