"""build_wheel.sh and scripts/build_wheel.py: argument and requirement checks, the dataset id, the
version, the wheel content check and the dataset folder's layout, tested on the script's functions
with the build step stubbed; then end-to-end: the real offline build, the bundled dependency wheels
(--with-deps) and the notebooks' install cell in a fresh venv; and the shell entry point's choice of
interpreter (with stand-in interpreters).

Nothing here touches the network: dependency wheels come from a local wheelhouse of stand-in packages
built in tmp (--find-links), and the PyPI command line is checked with --dry-run.
"""

import importlib.metadata
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "build_wheel.sh"
DATASET_ID = "someone/kagglekit-test"
PLACEHOLDER = "YOUR_KAGGLE_USERNAME/kagglekit"
# the stand-ins for dependencies: kk-standin needs kk-standin-base; kk-unrequested is in the wheelhouse only
STANDINS = {
    "kk_standin": ("1.0", ["kk-standin-base>=1.0"], "import kk_standin_base\n\nVALUE = kk_standin_base.BASE + 1\n"),
    "kk_standin_base": ("1.0", [], "BASE = 41\n"),
    "kk_unrequested": ("1.0", [], "X = 0\n"),
}
BUNDLED = ["kk_standin-1.0-py3-none-any.whl", "kk_standin_base-1.0-py3-none-any.whl"]
PLATFORMS = ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]


def _load_script():
    spec = importlib.util.spec_from_file_location("build_wheel_script", ROOT / "scripts" / "build_wheel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bw = _load_script()


def repo_version() -> str:
    """kagglekit.__version__ of this checkout (loaded from the file, never from an installed copy)."""
    spec = importlib.util.spec_from_file_location("_kagglekit_init", ROOT / "kagglekit" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.__version__


def run_script(*args, env_extra=None, timeout=300):
    """build_wheel.sh in a subprocess, with this interpreter as PYTHON."""
    env = {k: v for k, v in os.environ.items() if k != "KAGGLEKIT_DATASET_ID"}
    env["PYTHON"] = sys.executable
    env["PIP_NO_INDEX"] = "1"  # belt and braces: the build must never need the network
    env.update(env_extra or {})
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)


def run_main(capsys, *args, environ=None):
    """scripts/build_wheel.py's main() in this process: (exit status, stdout, stderr)."""
    try:
        code = bw.main([str(a) for a in args], environ=environ or {})
    except SystemExit as exc:  # argparse: --help, usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def droppings():
    return {p.name for p in ROOT.iterdir() if p.name == "build" or p.name.endswith(".egg-info")}


# ---------------------------------------------------------------------------------------------
# The version, read from one place


def test_version_has_one_source(tmp_path):
    assert bw.read_version() == repo_version()
    # setup.py reads the same line; it holds no version literal of its own
    setup = (ROOT / "setup.py").read_text()
    assert "version=VERSION" in setup and not re.search(r"""version\s*=\s*['"]""", setup)
    init = tmp_path / "__init__.py"
    init.write_text('"""Doc."""\n\n__version__ = "9.8.7rc1"\n__all__ = ["__version__"]\n')
    assert bw.read_version(init) == "9.8.7rc1"
    init.write_text("VERSION = '1.0'\n")
    with pytest.raises(bw.BuildError, match=r'no __version__ = "X.Y.Z" line in .*__init__.py'):
        bw.read_version(init)


# ---------------------------------------------------------------------------------------------
# Arguments and requirements


def test_parse_args_splits_deps_and_makes_paths_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "house").mkdir()
    args = bw.parse_args(["--out", "ds", "--with-deps", " a  b>=1,<2 ", "--with-deps=c[x]==1",
                          "--with-deps-file", "req.txt", "--find-links", "house", "--python-version", "3.11"])
    assert args.deps == ["a", "b>=1,<2", "c[x]==1"] and args.with_deps
    assert (args.out, args.with_deps_file, args.find_links) == (tmp_path / "ds", tmp_path / "req.txt",
                                                                 tmp_path / "house")
    assert args.python_version == "3.11" and not args.dry_run and args.check_wheel is None
    defaults = bw.parse_args([])
    assert defaults.out == ROOT / "datasets" / "kagglekit"
    assert (defaults.deps, defaults.with_deps, defaults.python_version) == ([], False, "3.12")
    assert bw.parse_args(["--with-deps-file", "r.txt"]).with_deps  # a file alone is enough


@pytest.mark.parametrize("spec", ["sentencepiece", "protobuf>=3.20,<5", "Foo_Bar[x]==1.0", "a~=1.2",
                                  "tokenizers===0.20.3", "kaggle-kit"])
def test_check_requirement_takes_index_requirements_as_written(spec):
    assert bw.check_requirement(spec) == spec


@pytest.mark.parametrize(
    "spec, message",
    [
        ("./evil.whl", "is not a requirement pip download can take"),
        ("git+https://example.org/x", "is not a requirement pip download can take"),
        ("x@https://example.org/x.whl", "is not a requirement pip download can take"),
        ("x;python_version>'3'", "is not a requirement pip download can take"),
        ("numpy==", "is not a requirement pip download can take"),
        ("kagglekit", "the kit's own wheel"),
        ("KaggleKit[onnx]>=0.1", "the kit's own wheel"),
        ("kaggle_kit", None),  # another name: canonical form kaggle-kit, accepted
    ],
)
def test_check_requirement_rejects_what_pip_download_cannot_take(spec, message):
    if message is None:
        assert bw.check_requirement(spec) == spec
        return
    with pytest.raises(bw.BuildError) as err:
        bw.check_requirement(spec)
    assert f"'{spec}'" in str(err.value) and message in str(err.value)


def test_help_and_unknown_flags(capsys):
    code, out, _ = run_main(capsys, "--help")
    assert code == 0
    assert out.startswith("Usage: bash build_wheel.sh")
    for flag in ("--out", "--dataset-id", "--check-wheel", "--with-deps", "--with-deps-file", "--find-links",
                 "--python-version", "--dry-run", "PYTHON", "KAGGLEKIT_DATASET_ID"):
        assert flag in out

    for args in (["--bogus"], ["--out"], ["--bogus=1"], ["stray"], ["--ou", "x"]):
        code, _, err = run_main(capsys, *args)
        assert code == 2, args
        assert "Usage: bash build_wheel.sh" in err
    assert "unknown argument: --bogus" in run_main(capsys, "--bogus")[2]
    assert "unknown argument: --ou" in run_main(capsys, "--ou", "x")[2]  # no abbreviations
    assert "--out needs a value" in run_main(capsys, "--out", "--dataset-id", "a/kagglekit")[2]


@pytest.mark.parametrize("variant", ["defaults", "options"])
def test_dry_run_prints_the_pypi_download_command(tmp_path, capsys, variant):
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
    code, stdout, err = run_main(capsys, "--out", out, "--dry-run", *args)
    assert code == 0, err
    command = stdout.strip().splitlines()[-1]
    assert shlex.split(command) == expected
    assert command == shlex.join(expected)
    assert "building" not in stdout
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
        (["--with-deps", "x", "--python-version", "3.12.1"], 1, "--python-version: '3.12.1' is not a Python version"),
        (["--find-links", "."], 2, "--find-links only applies with --with-deps or --with-deps-file"),
        (["--python-version", "3.12"], 2, "--python-version only applies with --with-deps"),
        (["--dry-run"], 2, "--dry-run only applies with --with-deps"),
        (["--with-deps"], 2, "--with-deps needs a value"),
        (["--with-deps", "  "], 2, "--with-deps needs a value"),
        (["--with-deps=--index-url=http://x"], 2, "--with-deps needs a value"),
    ],
)
def test_bad_deps_input_is_rejected_before_building(tmp_path, capsys, monkeypatch, args, status, message):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "ds"
    code, stdout, err = run_main(capsys, "--out", out, *args)
    assert code == status, err
    assert message in err
    assert "building" not in stdout and "downloading" not in stdout
    assert not out.exists()


def test_requirements_file_naming_the_kit_is_rejected(tmp_path, capsys):
    requirements = tmp_path / "req.txt"
    requirements.write_text("# bundled\n--prefer-binary\nsentencepiece\nkagglekit[onnx]>=0.1  # no\n")
    code, stdout, err = run_main(capsys, "--out", tmp_path / "ds", "--with-deps-file", requirements)
    assert code == 1
    assert f"--with-deps-file: 'kagglekit[onnx]>=0.1  # no' in {requirements}: the kit's own wheel" in err
    assert "building" not in stdout and not (tmp_path / "ds").exists()


# ---------------------------------------------------------------------------------------------
# The dataset id


@pytest.mark.parametrize("dataset_id", ["janedoe/kagglekit", "Jane_Doe-2/abc123", "a/" + "x" * 50, "a/ab-cd1"])
def test_valid_dataset_ids(tmp_path, dataset_id):
    assert bw.resolve_dataset_id(dataset_id, {}, tmp_path) == (dataset_id, "--dataset-id")


@pytest.mark.parametrize("dataset_id", ["Bad Id", "janedoe", "jane/doe/kagglekit", "jane/kaggl", "a/" + "x" * 51,
                                        "jane/KaggleKit", "jane/-kagglekit", "jane/kagglekit-", "-jane/kagglekit",
                                        "jane doe/kagglekit", "/kagglekit"])
def test_invalid_dataset_ids_name_the_rule(tmp_path, dataset_id):
    with pytest.raises(bw.BuildError) as err:
        bw.resolve_dataset_id(dataset_id, {}, tmp_path)
    assert f"'{dataset_id}' (from --dataset-id)" in str(err.value) and "OWNER/SLUG" in str(err.value)


def test_dataset_id_sources_in_order(tmp_path):
    env = {"KAGGLEKIT_DATASET_ID": "env/kagglekit"}
    assert bw.resolve_dataset_id("flag/kagglekit", env, tmp_path) == ("flag/kagglekit", "--dataset-id")
    assert bw.resolve_dataset_id(None, env, tmp_path) == ("env/kagglekit", "KAGGLEKIT_DATASET_ID")
    assert bw.resolve_dataset_id(None, {}, tmp_path) == (PLACEHOLDER, "placeholder")
    meta = tmp_path / "dataset-metadata.json"
    meta.write_text(json.dumps({"id": "kept/kagglekit"}))
    assert bw.resolve_dataset_id(None, {}, tmp_path) == ("kept/kagglekit", str(meta))
    assert bw.resolve_dataset_id(None, env, tmp_path)[0] == "env/kagglekit"
    meta.write_text(json.dumps({"id": PLACEHOLDER}))
    assert bw.resolve_dataset_id(None, {}, tmp_path) == (PLACEHOLDER, "placeholder")
    meta.write_text("{not json")
    assert bw.resolve_dataset_id(None, {}, tmp_path) == (PLACEHOLDER, "placeholder")
    meta.write_text(json.dumps({"id": "bad id"}))
    with pytest.raises(bw.BuildError, match=re.escape(f"'bad id' (from {meta})")):
        bw.resolve_dataset_id(None, {}, tmp_path)


@pytest.mark.parametrize("how", ["flag", "env"])
def test_bad_dataset_id_is_rejected_before_building(tmp_path, capsys, how):
    out = tmp_path / "ds"
    if how == "flag":
        code, stdout, err = run_main(capsys, "--out", out, "--dataset-id", "Bad Id")
    else:
        code, stdout, err = run_main(capsys, "--out", out, environ={"KAGGLEKIT_DATASET_ID": "Bad Id"})
    assert code == 1
    assert "'Bad Id'" in err
    assert "OWNER/SLUG" in err
    assert "building" not in stdout
    assert not out.exists()


# ---------------------------------------------------------------------------------------------
# The checks on the interpreter and on the wheel


def _versions(**installed):
    def version(name):
        if name not in installed:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed[name]
    return version



def test_check_build_tools_wants_bdist_wheel():
    bw.check_build_tools(_versions(setuptools="84.2.1"))  # bdist_wheel is in setuptools >= 70.1
    bw.check_build_tools(_versions(setuptools="70.1.0"))
    bw.check_build_tools(_versions(setuptools="65.5.0", wheel="0.45.1"))
    for installed in ({"setuptools": "65.5.0"}, {"setuptools": "70.0.0"}, {"wheel": "0.45.1"}, {}):
        with pytest.raises(bw.BuildError, match="lacks setuptools or bdist_wheel.*pip install setuptools wheel"):
            bw.check_build_tools(_versions(**installed))


def _wheel(path: Path, members, dist_info=True) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name in members:
            z.writestr(name, "x = 1\n")
        if dist_info:
            version = path.name.split("-")[1]
            z.writestr(f"kagglekit-{version}.dist-info/METADATA", "Name: kagglekit\n")
    return path


def test_check_wheel_rejects_leaked_files(tmp_path, capsys):
    bad = tmp_path / "kagglekit-0.0.0-py3-none-any.whl"
    with zipfile.ZipFile(bad, "w") as z:
        z.writestr("kagglekit/__init__.py", '__version__ = "0.0.0"\n')
        z.writestr("kagglekit-0.0.0.dist-info/METADATA", "Name: kagglekit\n")
        z.writestr("tests/test_x.py", "def test(): pass\n")
        z.writestr("kagglekit/weights/model.safetensors", b"\0" * 8)
    code, _, err = run_main(capsys, "--check-wheel", bad)
    assert code != 0
    assert "tests/test_x.py" in err
    assert "kagglekit/weights/model.safetensors" in err
    assert "kagglekit/__init__.py" not in err


def test_check_wheel_lists_each_problem(tmp_path):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    for name in ("__init__.py", "cli.py", "sub/mod.py"):
        (source / name).write_text("")
    (source / "__pycache__").mkdir()
    (source / "__pycache__" / "cli.py").write_text("")  # not a module: never expected in the wheel
    good = _wheel(tmp_path / "kagglekit-1.0-py3-none-any.whl",
                  ["kagglekit/__init__.py", "kagglekit/cli.py", "kagglekit/sub/mod.py", "kagglekit/data/x.json"])
    assert bw.check_wheel(good, source) == []
    assert bw.check_wheel(good) == []

    bad = _wheel(tmp_path / "kagglekit-2.0-py3-none-any.whl",
                 ["kagglekit/__init__.py", "kagglekit/cli.py", "kagglekit/run.csv", "kagglekit/__pycache__/cli.pyc",
                  "kagglekit/m.ONNX", "notebooks/train.ipynb", "kagglekit/deps/x.tar.gz",
                  "kagglekit/sub/__pycache__/cache.json"])
    assert dict(bw.check_wheel(bad, source)) == {
        "kagglekit/run.csv": "data/weights/notebook/bytecode file",
        "kagglekit/__pycache__/cli.pyc": "data/weights/notebook/bytecode file",
        "kagglekit/m.ONNX": "data/weights/notebook/bytecode file",
        "kagglekit/deps/x.tar.gz": "data/weights/notebook/bytecode file",
        "kagglekit/sub/__pycache__/cache.json": "data/weights/notebook/bytecode file",
        "notebooks/train.ipynb": "outside kagglekit/ and kagglekit-*.dist-info/",
        "kagglekit/sub/mod.py": "in the source tree but missing from the wheel (no __init__.py?)",
    }
    other = _wheel(tmp_path / "other-1.0-py3-none-any.whl", ["kagglekit/__init__.py"], dist_info=False)
    assert bw.check_wheel(other) == [("kagglekit-*.dist-info/", "missing: not a kagglekit wheel")]

    with pytest.raises(bw.BuildError, match="no such wheel"):
        bw.check_wheel(tmp_path / "missing.whl")
    (tmp_path / "broken.whl").write_bytes(b"not a zip")
    with pytest.raises(bw.BuildError, match="is not a valid wheel"):
        bw.check_wheel(tmp_path / "broken.whl")


@pytest.mark.parametrize(
    "written, message",
    [
        (None, "pip download of the dependency wheels failed (log above). 'No matching distribution' means no "
               "binary wheel for CPython 3.11 on manylinux x86_64 in {house}: check the name"),
        ([], "pip download wrote no wheels"),
        (["a-1.0-py3-none-any.whl", "b-1.0.tar.gz"], "pip download wrote b-1.0.tar.gz, not a wheel"),
        (["kagglekit-0.1-py3-none-any.whl"], "kagglekit-0.1-py3-none-any.whl: the kit's own wheel"),
        (["a-1.0-py3-none-any.whl", "b-2.0-cp312-cp312-manylinux_2_17_x86_64.whl"], None),
    ],
)
def test_download_deps_checks_what_pip_wrote(tmp_path, monkeypatch, capsys, written, message):
    house = tmp_path / "house"
    house.mkdir()
    args = bw.parse_args(["--with-deps", "a b", "--find-links", str(house), "--python-version", "3.11"])
    seen = []

    def fake_run(cmd, log, failure, **kwargs):
        seen.append(cmd)
        if written is None:
            raise bw.BuildError(failure)
        for name in written:
            (Path(cmd[cmd.index("--dest") + 1]) / name).write_bytes(b"w" * 2000)

    monkeypatch.setattr(bw, "_run", fake_run)
    work = tmp_path / "work"
    work.mkdir()
    if message is None:
        deps = bw.download_deps(args, work)
        assert [p.name for p in deps] == sorted(written)
        assert "    a-1.0-py3-none-any.whl (2 KiB)" in capsys.readouterr().out
    else:
        with pytest.raises(bw.BuildError) as err:
            bw.download_deps(args, work)
        assert message.format(house=house) in str(err.value)
    assert seen == [bw.download_command(args, work / "deps")]


# ---------------------------------------------------------------------------------------------
# The dataset folder, with the build, install and download steps stubbed


@pytest.fixture
def stubbed(tmp_path, monkeypatch):
    """Replace the slow steps: the build returns a wheel holding every module of the package, the
    install check passes (or raises `stubbed.fail_install`), and the download writes one wheel per
    requirement. `stubbed.calls` records the order of the steps."""
    version = repo_version()
    modules = ["kagglekit/" + p.relative_to(ROOT / "kagglekit").as_posix() for p in (ROOT / "kagglekit").rglob("*.py")
               if "__pycache__" not in p.parts]
    fake = _wheel(tmp_path / f"kagglekit-{version}-py3-none-any.whl", modules)

    class Stub:
        calls = []
        fail_install = None

    def build_kit_wheel(tmp, v):
        Stub.calls.append("build")
        assert v == version
        return Path(shutil.copy2(fake, tmp))

    def install_check(wheel, tmp, v):
        Stub.calls.append("install")
        if Stub.fail_install:
            raise Stub.fail_install

    def download_deps(args, tmp):
        Stub.calls.append("download")
        (tmp / "deps").mkdir()
        deps = [tmp / "deps" / f"{spec.split('=')[0]}-1.0-py3-none-any.whl" for spec in args.deps]
        for dep in deps:
            dep.write_bytes(dep.name.encode())
        return deps

    monkeypatch.setattr(bw, "build_kit_wheel", build_kit_wheel)
    monkeypatch.setattr(bw, "install_check", install_check)
    monkeypatch.setattr(bw, "download_deps", download_deps)
    Stub.wheel = fake.name
    return Stub


def test_rerun_replaces_older_wheel_and_keeps_folder_tidy(tmp_path, capsys, stubbed):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "kagglekit-0.0.1-py3-none-any.whl").write_bytes(b"old")
    (out / "notes.txt").write_text("user file, left alone\n")
    code, stdout, err = run_main(capsys, "--out", out)  # no id anywhere: placeholder + warning
    assert code == 0, err
    assert stubbed.calls == ["build", "install"]
    version = repo_version()
    assert sorted(p.name for p in out.iterdir()) == sorted([stubbed.wheel, "dataset-metadata.json", "notes.txt"])
    assert (out / stubbed.wheel).read_bytes() == (tmp_path / stubbed.wheel).read_bytes()
    assert "removed older kagglekit-0.0.1-py3-none-any.whl" in stdout
    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta == {"title": "kagglekit", "id": PLACEHOLDER, "licenses": [{"name": "apache-2.0"}]}
    assert "WARNING" in err and "--dataset-id" in err and "KAGGLEKIT_DATASET_ID" in err
    # no wheels/: the upload and the install as before
    assert f"kaggle datasets create -p {out}\n" in stdout
    assert f'kaggle datasets version -p {out} -m "kagglekit {version}"\n' in stdout
    wheel = f"/kaggle/input/kagglekit/kagglekit-{version}-py3-none-any.whl"
    assert f"pip install --no-index --no-deps {wheel}\n" in stdout


def test_rebuild_keeps_the_id_already_in_the_folder(tmp_path, capsys, stubbed):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "dataset-metadata.json").write_text(json.dumps({"id": "kept/kagglekit-x", "title": "old"}))
    code, stdout, err = run_main(capsys, "--out", out)
    assert code == 0, err
    assert json.loads((out / "dataset-metadata.json").read_text())["id"] == "kept/kagglekit-x"
    assert "WARNING" not in err and "(id: kept/kagglekit-x)" in stdout
    assert "/kaggle/input/kagglekit-x/" in stdout


def test_build_without_deps_keeps_an_existing_wheels_folder(tmp_path, capsys, stubbed):
    out = tmp_path / "ds"
    (out / "wheels").mkdir(parents=True)
    kept = out / "wheels" / "kk_old-1.0-py3-none-any.whl"
    kept.write_bytes(b"bundled earlier")
    code, stdout, err = run_main(capsys, "--out", out, "--dataset-id", DATASET_ID)
    assert code == 0, err
    assert [p.name for p in (out / "wheels").iterdir()] == [kept.name]
    assert kept.read_bytes() == b"bundled earlier"
    assert f"wheels/ kept from an earlier --with-deps build: {kept.name}" in stdout
    assert f"kaggle datasets create -p {out} --dir-mode zip" in stdout
    assert "pip install --no-index --no-deps /kaggle/input/kagglekit-test/wheels/<wheel>" in stdout


def test_with_deps_replaces_the_wheels_folder_as_a_whole(tmp_path, capsys, stubbed):
    out = tmp_path / "ds"
    (out / "wheels").mkdir(parents=True)
    (out / "wheels" / "kk_stale-0.1-py3-none-any.whl").write_bytes(b"stale")
    code, stdout, err = run_main(capsys, "--out", out, "--dataset-id", DATASET_ID, "--with-deps", "aa bb==2")
    assert code == 0, err
    assert stubbed.calls == ["download", "build", "install"]  # a failed download costs no build
    assert sorted(p.name for p in (out / "wheels").iterdir()) == ["aa-1.0-py3-none-any.whl", "bb-1.0-py3-none-any.whl"]
    assert (out / "wheels" / "bb-1.0-py3-none-any.whl").read_bytes() == b"bb-1.0-py3-none-any.whl"
    # no temporary or old copies left beside it
    assert sorted(p.name for p in out.iterdir()) == sorted([stubbed.wheel, "dataset-metadata.json", "wheels"])
    assert "wheels/: 2 dependency wheel(s)" in stdout
    assert f"Dataset folder ready: {out}/{stubbed.wheel} + wheels/ + dataset-metadata.json" in stdout


def test_a_failed_check_leaves_the_folder_as_it_was(tmp_path, capsys, stubbed):
    out = tmp_path / "ds"
    (out / "wheels").mkdir(parents=True)
    before = {"kagglekit-0.0.1-py3-none-any.whl": b"old", "dataset-metadata.json": b'{"id": "a/kagglekit"}',
              "wheels/kk-1.0-py3-none-any.whl": b"dep"}
    for name, data in before.items():
        (out / name).write_bytes(data)
    stubbed.fail_install = bw.BuildError("'import kagglekit' failed in the fresh venv")
    code, stdout, err = run_main(capsys, "--out", out, "--with-deps", "aa")
    assert code == 1
    assert "build_wheel.sh: error: 'import kagglekit' failed in the fresh venv" in err
    assert "writing dataset folder" not in stdout
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before


def test_next_steps_show_the_folder_relative_to_the_caller(tmp_path):
    version = repo_version()
    wheel = f"kagglekit-{version}-py3-none-any.whl"
    out = tmp_path / "datasets" / "kagglekit"
    (out / "wheels").mkdir(parents=True)
    text, warning = bw.next_steps(out, wheel, version, "jane/kagglekit", tmp_path)
    assert warning == ""
    assert f"Dataset folder ready: datasets/kagglekit/{wheel} + wheels/ + dataset-metadata.json (id: jane/kagglekit)" in text
    assert "kaggle datasets create -p datasets/kagglekit --dir-mode zip\n" in text
    text, warning = bw.next_steps(out, wheel, version, PLACEHOLDER, out)
    assert "kaggle datasets create -p . --dir-mode zip\n" in text
    assert 'edit "id" in ./dataset-metadata.json' in warning
    text, _ = bw.next_steps(out, wheel, version, "jane/kagglekit", tmp_path / "elsewhere")
    assert f"kaggle datasets create -p {out} --dir-mode zip\n" in text


# ---------------------------------------------------------------------------------------------
# build_wheel.sh: the interpreter it picks, with stand-in interpreters that log their arguments

FAKE_PYTHON = """#!/usr/bin/env bash
echo "$0 $*" >> "$BW_LOG"
if [[ "$1 $2" == "-m venv" ]]; then
    dir="${@: -1}"; mkdir -p "$dir/bin"; cp "$BW_FAKE" "$dir/bin/python"; chmod +x "$dir/bin/python"
fi
"""


@pytest.fixture
def shell_copy(tmp_path):
    """build_wheel.sh in an empty folder, a stand-in python3 first on PATH, and the log they write."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy2(SCRIPT, repo / "build_wheel.sh")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    log = tmp_path / "log"
    env = {k: v for k, v in os.environ.items() if k != "PYTHON"}
    env.update(PATH=f"{bin_dir}:{os.environ['PATH']}", BW_LOG=str(log), BW_FAKE=str(fake))

    def run(*args, **env_extra):
        proc = subprocess.run(["bash", str(repo / "build_wheel.sh"), *args], cwd=tmp_path,
                              env={**env, **env_extra}, capture_output=True, text=True, timeout=60)
        lines = log.read_text().splitlines() if log.exists() else []
        log.unlink(missing_ok=True)
        return proc, lines

    return repo, run


def test_shell_makes_a_build_venv_once_when_the_repo_has_none(shell_copy, tmp_path):
    repo, run = shell_copy
    script = repo / "scripts" / "build_wheel.py"
    proc, calls = run("--with-deps", "a b", "--out", "my dir")
    assert proc.returncode == 0, proc.stderr
    python = f"{repo}/.venv-build/bin/python"
    assert calls == [
        f"{tmp_path}/bin/python3 -m venv --clear {repo}/.venv-build",
        f"{python} -m pip install -q --disable-pip-version-check setuptools wheel packaging",
        f"{python} {script} --with-deps a b --out my dir",
    ]
    assert (repo / ".venv-build" / ".stamp").is_file()
    # made once: the next run goes straight to it
    proc, calls = run("--help")
    assert calls == [f"{python} {script} --help"]


def test_shell_prefers_python_then_the_project_venv(shell_copy, tmp_path):
    repo, run = shell_copy
    script = repo / "scripts" / "build_wheel.py"
    (repo / ".venv" / "bin").mkdir(parents=True)
    venv_python = repo / ".venv" / "bin" / "python"
    shutil.copy2(tmp_path / "bin" / "python3", venv_python)
    proc, calls = run("--help")
    assert proc.returncode == 0 and calls == [f"{venv_python} {script} --help"]
    assert not (repo / ".venv-build").exists()
    proc, calls = run("--help", PYTHON=str(tmp_path / "bin" / "python3"))
    assert calls == [f"{tmp_path}/bin/python3 {script} --help"]
    proc, calls = run("--help", PYTHON=str(tmp_path / "no-such-python"))
    assert proc.returncode == 1 and calls == []
    assert "is not an executable interpreter" in proc.stderr


def test_shell_passes_arguments_and_exit_status_through():
    helped = run_script("--help", timeout=60)
    assert helped.returncode == 0 and helped.stdout.startswith("Usage: bash build_wheel.sh")
    bogus = run_script("--bogus", timeout=60)
    assert bogus.returncode == 2 and "unknown argument: --bogus" in bogus.stderr
    spaced = run_script("--with-deps", "a  b>=1,<2", "--dry-run", "--out", "/tmp/x y", timeout=60)
    assert spaced.returncode == 0, spaced.stderr
    assert shlex.split(spaced.stdout.splitlines()[-1])[-4:] == ["--dest", "/tmp/x y/wheels", "a", "b>=1,<2"]


# ---------------------------------------------------------------------------------------------
# End to end: the real offline build, installed; dependency wheels from a local wheelhouse


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


@pytest.mark.slow
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
    assert "import kagglekit -> " + version in proc.stdout  # installed in a fresh venv and imported there

    meta = json.loads((out / "dataset-metadata.json").read_text())
    assert meta == {"title": "kagglekit", "id": DATASET_ID, "licenses": [{"name": "apache-2.0"}]}
    # no temp files; the kit at the root, the dependencies under wheels/
    assert sorted(p.name for p in out.iterdir()) == sorted(wheels + ["dataset-metadata.json", "wheels"])

    # the kaggle CLI skips subfolders unless --dir-mode says otherwise
    assert f"kaggle datasets create -p {out} --dir-mode zip" in proc.stdout
    assert f'kaggle datasets version -p {out} --dir-mode zip -m "kagglekit {version}"' in proc.stdout
    kaggle = "/kaggle/input/kagglekit-test"
    assert f"pip install --no-index --no-deps {kaggle}/kagglekit-{version}-py3-none-any.whl" in proc.stdout
    assert f"{kaggle}/wheels/<wheel>" in proc.stdout  # bundled wheels: only those the image lacks, also --no-deps
    assert "WARNING" not in log

    # the build ran from a temp copy: no build/ or *.egg-info left in the repo
    assert droppings() <= before


@pytest.mark.slow
def test_built_wheel_passes_check_wheel(build):
    proc, out, _ = build
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (wheel,) = out.glob("*.whl")
    assert bw.check_wheel(wheel, ROOT / "kagglekit") == []
    check = run_script("--check-wheel", str(wheel))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "content check ok" in check.stdout


@pytest.mark.slow
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


@pytest.mark.slow
def test_no_wheel_for_the_target_python_fails_before_building(tmp_path, wheelhouse):
    out = tmp_path / "ds"
    proc = run_script("--out", str(out), "--with-deps", "kk-native", "--find-links", str(wheelhouse), timeout=60)
    assert proc.returncode == 1
    assert "No matching distribution found for kk-native" in proc.stderr  # pip's log
    assert f"no binary wheel for CPython 3.12 on manylinux x86_64 in {wheelhouse}: check" in proc.stderr
    assert "building" not in proc.stdout
    assert not out.exists()


