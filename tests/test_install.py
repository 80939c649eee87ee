"""The notebooks' install cell, for real: the built wheel installed with pip into a venv that has the image's packages
but no kagglekit; and `kagglekit.requirements`, the check the cell ends with.

The venv sees this interpreter's packages (torch, pip ...) through a folder of links named in a .pth file, kagglekit's
own left out (here it is an editable install), as a Kaggle image has them. Nothing reaches the network (--no-index).
"""

import base64
import hashlib
import importlib.metadata as md
import importlib.util
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from kagglekit import requirements

ROOT = Path(__file__).resolve().parents[1]
CELL = (ROOT / "scripts" / "install_cell.py").read_text(encoding="utf-8")
IMAGE_DIST = "scikit-learn"  # installed here: a bundled wheel of it must be left alone (its file name spells it scikit_learn)


def _version() -> str:
    return re.search(r'^__version__ = "([^"]+)"', (ROOT / "kagglekit" / "__init__.py").read_text(), re.M)[1]


VERSION = _version()
KIT = f"kagglekit-{VERSION}-py3-none-any.whl"


def write_wheel(folder: Path, dist: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel written by hand: `files` (path -> text) plus METADATA, WHEEL and a RECORD with hashes."""
    info = f"{dist}-{version}.dist-info"
    members = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n",
               f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: kagglekit-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in members.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{dist}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        for path, text in members.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "\n".join(record + [f"{info}/RECORD,,"]) + "\n")
    return wheel


def run_cell_here(wheel_dir, monkeypatch, *, kit_importable: bool):
    """The cell's code in this process, pip replaced by a failure: for the paths that must not install anything."""
    if not kit_importable:
        monkeypatch.setitem(sys.modules, "kagglekit", None)  # `import kagglekit` fails, find_spec says None
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail(f"pip must not run: {a}"))
    exec(compile(CELL, "install_cell.py", "exec"), {"WHEEL_DIR": str(wheel_dir), "__name__": "__main__"})


# ---------------------------------------------------------------------------------------------- finding the wheel


def test_no_wheel_under_the_input_root_names_the_fix(tmp_path, monkeypatch):
    (tmp_path / "competitions" / "x").mkdir(parents=True)
    (tmp_path / "competitions" / "x" / "train.csv").write_text("id\n1\n")
    monkeypatch.setenv("KAGGLEKIT_INPUT_ROOT", str(tmp_path))
    with pytest.raises(FileNotFoundError) as err:
        run_cell_here("auto", monkeypatch, kit_importable=False)
    assert str(err.value) == (f"no kagglekit-*.whl under {tmp_path}: attach the kagglekit dataset built by build_wheel.sh "
                              "(Add Input), or set WHEEL_DIR to its folder.")


def test_no_wheel_in_a_given_folder_names_it(tmp_path, monkeypatch):
    (tmp_path / "deeper").mkdir()
    (tmp_path / "deeper" / KIT).write_bytes(b"a wheel one level down is not looked for")
    with pytest.raises(FileNotFoundError, match=re.escape(f"no kagglekit-*.whl in {tmp_path}: attach the kagglekit dataset")):
        run_cell_here(tmp_path, monkeypatch, kit_importable=False)


def test_two_different_wheels_are_an_error_naming_both(tmp_path, monkeypatch):
    first = tmp_path / "datasets" / "me" / "kagglekit" / KIT
    second = tmp_path / "kagglekit-old" / "kagglekit-0.0.1-py3-none-any.whl"
    for path, content in ((first, b"new"), (second, b"old")):
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    monkeypatch.setenv("KAGGLEKIT_INPUT_ROOT", str(tmp_path))
    with pytest.raises(RuntimeError) as err:
        run_cell_here("auto", monkeypatch, kit_importable=False)
    assert str(err.value) == (f"2 different kagglekit wheels under {tmp_path}: {first}, {second}. Set WHEEL_DIR to the "
                              "folder of the one to install, or detach the other dataset.")


def test_one_wheel_mounted_twice_is_one_and_bundled_folders_are_not_searched(tmp_path, monkeypatch, capsys):
    # the same dataset under its old and its new mount point, and a kagglekit wheel inside some wheels/ folder
    for folder in ("kagglekit", "datasets/me/kagglekit"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / KIT).write_bytes(b"the same bytes")
    (tmp_path / "other" / "wheels").mkdir(parents=True)
    (tmp_path / "other" / "wheels" / "kagglekit-0.0.1-py3-none-any.whl").write_bytes(b"bundled elsewhere")
    monkeypatch.setenv("KAGGLEKIT_INPUT_ROOT", str(tmp_path))
    run_cell_here("auto", monkeypatch, kit_importable=True)  # this kagglekit has the wheel's version: nothing to install
    import kagglekit

    assert capsys.readouterr().out.splitlines() == [
        f"kagglekit {VERSION} is installed already: nothing to install",
        f"kagglekit {VERSION} from {os.path.dirname(kagglekit.__file__)}",
    ]


def test_without_a_wheel_an_importable_kit_is_used_as_it_is(tmp_path, monkeypatch, capsys):
    run_cell_here(tmp_path / "nowheel", monkeypatch, kit_importable=True)
    assert capsys.readouterr().out.splitlines()[0] == (
        f"no kagglekit wheel in {tmp_path / 'nowheel'}: using the kagglekit {VERSION} that this Python imports")


# ---------------------------------------------------------------------------------------------- pip, for real


@pytest.fixture(scope="module")
def kit_wheel(tmp_path_factory) -> Path:
    """The real wheel, built as build_wheel.sh builds it (from a copy of the sources, offline)."""
    spec = importlib.util.spec_from_file_location("build_wheel_script", ROOT / "scripts" / "build_wheel.py")
    build_wheel = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build_wheel)
    return build_wheel.build_kit_wheel(tmp_path_factory.mktemp("build"), VERSION)


def image_venv(root: Path, leave_out: tuple = ()) -> Path:
    """A venv standing in for Kaggle's image: this interpreter's packages through links in a folder named by a .pth
    file, without kagglekit (and without the distributions in `leave_out`). Returns its python."""
    packages = root / "packages"
    packages.mkdir(parents=True)
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not (entry.name.lower().startswith(("kagglekit", "__editable__", "_kagglekit", *leave_out)) or entry.suffix == ".pth"):
            (packages / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    (site_packages(python) / "image_packages.pth").write_text(f"{packages}\n")
    return python


def site_packages(python: Path) -> Path:
    """Where pip run by `python` installs."""
    return Path(run(python, "import sysconfig; print(sysconfig.get_paths()['purelib'])", python.parent).stdout.strip())


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    return image_venv(tmp_path_factory.mktemp("image"))


def run(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "PIP_"))}
    env.update(PIP_NO_INDEX="1")
    return subprocess.run([str(python), "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def where(python: Path, cwd: Path) -> dict:
    """What the image's python imports: kagglekit's version and folder, the bundled packages, IMAGE_DIST's metadata."""
    code = f"""if True:
        import importlib.metadata as md, importlib.util as u, json, os
        spec = u.find_spec("kagglekit")
        dist = md.distribution({IMAGE_DIST!r})
        out = {{"kit": spec and os.path.dirname(spec.origin), "extra": u.find_spec("kk_extra") and u.find_spec("kk_extra").origin,
               "image": [dist.version, str(dist.locate_file(""))]}}
        if spec:
            import kagglekit
            out["version"] = kagglekit.__version__
        print(json.dumps(out))"""
    done = run(python, code, cwd)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_the_cell_installs_the_kit_and_the_missing_bundled_wheel_and_leaves_the_image_alone(kit_wheel, image, tmp_path):
    site = site_packages(image)
    work = tmp_path / "working"  # the notebook's working directory: neither the repo nor the input
    work.mkdir()
    before = where(image, work)
    assert before["kit"] is None and before["extra"] is None  # the image lacks both
    assert before["image"] == [md.version(IMAGE_DIST), str(image.parents[2] / "packages")]  # the image's own copy

    dataset = tmp_path / "input" / "datasets" / "me" / "kagglekit"
    dataset.mkdir(parents=True)
    (dataset / KIT).write_bytes(kit_wheel.read_bytes())
    write_wheel(dataset / "wheels", "kk_extra", "1.0", {"kk_extra.py": "VALUE = 42\n"})
    write_wheel(dataset / "wheels", "scikit_learn", "0.1", {"kk_not_sklearn.py": "X = 1\n"})  # must not replace the image's
    (tmp_path / "input" / "competitions" / "x").mkdir(parents=True)
    (tmp_path / "input" / "competitions" / "x" / "train.csv").write_text("id\n1\n")
    cell = f"import os\nos.environ['KAGGLEKIT_INPUT_ROOT'] = {str(tmp_path / 'input')!r}\nWHEEL_DIR = 'auto'\n" + CELL

    first = run(image, cell, work)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines() == [
        f"installed {KIT}",
        "installed kk_extra-1.0-py3-none-any.whl",
        f"left alone scikit_learn-0.1-py3-none-any.whl: the image has version {md.version(IMAGE_DIST)}",
        f"kagglekit {VERSION} from {site / 'kagglekit'}",  # imported in the same process right after pip ran
    ]
    after = where(image, work)
    assert after == {"kit": str(site / "kagglekit"), "version": VERSION, "extra": str(site / "kk_extra.py"),
                     "image": before["image"]}
    assert not (site / "kk_not_sklearn.py").exists()

    # a second run (the cell run again, or the next session of a notebook that saved its environment)
    files = sorted(str(p.relative_to(site)) for p in site.rglob("*") if "__pycache__" not in p.parts)
    again = run(image, cell, work)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.splitlines() == [f"kagglekit {VERSION} is installed already: nothing to install",
                                         f"kagglekit {VERSION} from {site / 'kagglekit'}"]
    assert sorted(str(p.relative_to(site)) for p in site.rglob("*") if "__pycache__" not in p.parts) == files

    # an older kit, installed and already imported in this kernel: replaced, and the import reads the new one
    old = write_wheel(tmp_path / "old", "kagglekit", "0.0.1", {"kagglekit/__init__.py": '__version__ = "0.0.1"\n'})
    assert run(image, f"import subprocess, sys; subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '--no-deps', "
                      f"'--force-reinstall', {str(old)!r}], check=True)", work).returncode == 0
    kernel = f"import kagglekit\nassert kagglekit.__version__ == '0.0.1'\n{cell}\nassert kagglekit.__version__ == {VERSION!r}\n"
    upgraded = run(image, kernel, work)
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    assert upgraded.stdout.splitlines() == [
        f"installed {KIT}",
        "left alone kk_extra-1.0-py3-none-any.whl: the image has version 1.0",
        f"left alone scikit_learn-0.1-py3-none-any.whl: the image has version {md.version(IMAGE_DIST)}",
        f"kagglekit {VERSION} from {site / 'kagglekit'}",
    ]
    assert where(image, work)["version"] == VERSION


@pytest.mark.slow
def test_the_cell_stops_when_a_requirement_is_missing(kit_wheel, tmp_path):
    python = image_venv(tmp_path / "image", leave_out=("sentencepiece",))  # an image without sentencepiece
    spec = next(r for r in md.requires("kagglekit") if r.startswith("sentencepiece"))
    done = run(python, f"WHEEL_DIR = {str(kit_wheel.parent)!r}\n" + CELL, tmp_path)
    assert done.returncode == 1
    assert done.stdout.splitlines() == [f"installed {KIT}"]
    assert done.stderr.rstrip().splitlines()[-2:] == [
        "RuntimeError: kagglekit's requirements are not met:",
        f"  sentencepiece: not installed; kagglekit needs {spec}: attach a dataset holding a sentencepiece wheel and "
        f"pip install --no-index --no-deps <the wheel> (build_wheel.sh --with-deps '{spec}' bundles one in the "
        "kagglekit dataset).",
    ]


# ---------------------------------------------------------------------------------------------- requirements


@pytest.fixture
def metadata(monkeypatch):
    """kagglekit's metadata and the installed versions, faked: set `requires`, `python` and `versions`."""
    fake = {"requires": [], "python": ">=3.10", "versions": {}}

    def version(name):
        if name not in fake["versions"]:
            raise md.PackageNotFoundError(name)
        return fake["versions"][name]

    monkeypatch.setattr(md, "requires", lambda name: fake["requires"])
    monkeypatch.setattr(md, "metadata", lambda name: {"Requires-Python": fake["python"]})
    monkeypatch.setattr(md, "version", version)
    return fake


def test_requirement_problems_name_the_version_the_range_and_the_fix(metadata):
    metadata["requires"] = [
        "torch>=2.3", "transformers<6,>=4.44", "kk-missing>=1.0", "kk-new<2", "kk-fine>=1",
        "pytest>=7; extra == \"dev\"",  # an extra: not needed
        "kk-old-python>=1; python_version < \"3\"",  # a marker that does not hold here
        "kk-here>=2; python_version >= \"3\"",  # one that does
    ]
    metadata["versions"] = {"torch": "2.1.0", "transformers": "5.0.0rc1", "kk-new": "2.0", "kk-fine": "1.5", "kk-here": "1.0"}
    fix = "pip install --no-index --no-deps <the wheel>"
    assert requirements.requirement_problems() == [
        f"torch: 2.1.0 is outside the range kagglekit supports (>=2.3): attach a dataset holding a torch wheel in that range and {fix}.",
        f"kk-missing: not installed; kagglekit needs kk-missing>=1.0: attach a dataset holding a kk-missing wheel and {fix} "
        "(build_wheel.sh --with-deps 'kk-missing>=1.0' bundles one in the kagglekit dataset).",
        f"kk-new: 2.0 is outside the range kagglekit supports (<2): attach a dataset holding a kk-new wheel in that range and {fix}.",
        f"kk-here: 1.0 is outside the range kagglekit supports (>=2): attach a dataset holding a kk-here wheel in that range and {fix}.",
    ]
    with pytest.raises(RuntimeError) as err:
        requirements.check_requirements()
    assert str(err.value).splitlines() == ["kagglekit's requirements are not met:",
                                           *("  " + p for p in requirements.requirement_problems())]


def test_statuses_list_python_first_and_skip_extras(metadata):
    metadata["requires"] = ["transformers>=4.44,<6", "onnx>=1.14; extra == \"onnx\""]
    metadata["versions"] = {"transformers": "4.57.1"}
    assert requirements.requirement_statuses() == [
        requirements.Status("python", ">=3.10", platform.python_version(), "ok"),
        requirements.Status("transformers", ">=4.44,<6", "4.57.1", "ok"),
    ]
    assert requirements.requirement_problems() == []
    requirements.check_requirements()  # nothing to raise


def test_an_extra_asked_for_counts_its_requirements(metadata):
    """A LoRA run asks for the llm extra: peft is then checked like a plain requirement; other extras stay out."""
    metadata["requires"] = ["transformers>=4.44,<6", "peft>=0.13; extra == \"llm\"", "onnx>=1.14; extra == \"onnx\""]
    metadata["versions"] = {"transformers": "4.57.1"}
    assert [s.name for s in requirements.requirement_statuses()] == ["python", "transformers"]
    assert requirements.requirement_statuses(("llm",))[2] == requirements.Status("peft", ">=0.13", None, "missing")
    assert requirements.requirement_problems(("llm",)) == [
        "peft: not installed; kagglekit needs peft>=0.13: attach a dataset holding a peft wheel and pip install --no-index "
        "--no-deps <the wheel> (build_wheel.sh --with-deps 'peft>=0.13' bundles one in the kagglekit dataset)."]
    with pytest.raises(RuntimeError, match=r"\n  peft: not installed"):
        requirements.check_requirements(extras=("llm",))
    requirements.check_requirements()  # without the extra, nothing is missing
    metadata["versions"]["peft"] = "0.12.0"
    assert requirements.requirement_statuses(("llm",))[2].state == "outside"


def test_a_python_outside_the_range(metadata, monkeypatch):
    monkeypatch.setattr(platform, "python_version", lambda: "3.9.18")
    assert requirements.requirement_problems() == [
        "python: 3.9.18 is outside the range kagglekit supports (>=3.10): run kagglekit on a Python in that range."]


def test_an_unparsable_version_is_no_problem_but_is_reported(metadata):
    metadata["requires"] = ["torch>=2.3"]
    metadata["versions"] = {"torch": "not-a-version"}
    assert requirements.requirement_problems() == []
    assert requirements.requirement_statuses()[1].detail() == "not-a-version is not a version number the range >=2.3 can be checked against."


def test_a_kit_run_from_a_source_folder_says_so_and_checks_nothing(monkeypatch):
    def not_installed(name):
        raise md.PackageNotFoundError(name)

    monkeypatch.setattr(md, "requires", not_installed)
    with pytest.warns(UserWarning, match="kagglekit is imported from a source folder, not installed, so its requirements are unknown"):
        assert requirements.requirement_problems() == []


def test_the_real_metadata_is_met_here():
    if importlib.util.find_spec("kagglekit") is None or not _installed():
        pytest.skip("kagglekit is not installed: no package metadata")
    assert requirements.requirement_problems() == []
    names = [s.name for s in requirements.requirement_statuses()]
    assert names[0] == "python" and {"torch", "transformers", "tokenizers", "sentencepiece"} <= set(names)
    assert not {"pytest", "onnx", "onnxruntime"} & set(names)  # extras


def _installed() -> bool:
    try:
        return md.requires("kagglekit") is not None
    except md.PackageNotFoundError:
        return False


@pytest.mark.parametrize("name", ["train.ipynb", "inference.ipynb"])
def test_the_notebooks_hold_this_cell_verbatim(name):
    cells = json.loads((ROOT / "notebooks" / name).read_text())["cells"]
    (cell,) = [c for c in cells if c.get("id") == "install"]
    assert "".join(cell["source"]) == CELL.rstrip("\n")
