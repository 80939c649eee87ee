"""Build the kagglekit wheel offline, check it, and lay out the Kaggle dataset folder for upload.

Run through `bash build_wheel.sh`, which picks the interpreter (the project's .venv, else a minimal
build venv it makes); `bash build_wheel.sh --help` shows the options. Needs only the standard library,
pip, setuptools (with bdist_wheel) and `packaging` (pip's own copy will do). One file over STYLE's
~350 lines: it is one job run by path, and a third of it is help text and error messages.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROG = "bash build_wheel.sh"
PLACEHOLDER_ID = "YOUR_KAGGLE_USERNAME/kagglekit"
DEFAULT_PYTHON_VERSION = "3.12"
# Kaggle's image is Ubuntu 22.04 (glibc 2.35): manylinux2014 (= manylinux_2_17; pip adds the older
# manylinux2010/1 aliases) and manylinux_2_28 wheels run there; pip also takes pure py3-none-any ones.
DEP_PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64")
# Data, weights, notebooks, nested wheels and bytecode never belong in the code wheel.
FORBIDDEN_SUFFIXES = (
    ".csv", ".tsv", ".parquet", ".feather", ".jsonl", ".safetensors", ".bin", ".pt", ".pth",
    ".ckpt", ".onnx", ".pkl", ".pickle", ".npy", ".npz", ".h5", ".whl", ".zip", ".tar.gz",
    ".ipynb", ".pyc",
)
# what the build copies into its temporary source tree besides kagglekit/
PACKAGING_FILES = ("setup.py", "setup.cfg", "pyproject.toml", "MANIFEST.in", "README*", "LICENSE*", "NOTICE*")
_DIST_INFO = re.compile(r"kagglekit-[^/]+\.dist-info/")
_VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"', re.M)  # the same pattern setup.py reads

USAGE = """\
%(prog)s [--out DIR] [--dataset-id OWNER/SLUG]
                           [--with-deps "REQ ..."] [--with-deps-file FILE]
                           [--find-links DIR] [--python-version X.Y] [--dry-run]
       %(prog)s --check-wheel FILE.whl
       %(prog)s --help"""
DESCRIPTION = """\
Builds the kagglekit wheel offline (pip wheel --no-deps --no-build-isolation, from a temporary
copy of the sources so the repo gets no build/ or *.egg-info droppings), fails if the wheel holds
anything besides kagglekit/ and its .dist-info/ (tests, notebooks, data, model weights, wheels),
installs it into a fresh bare venv with `pip install --no-index --no-deps` and imports it there,
then writes the Kaggle dataset folder: the wheel plus dataset-metadata.json.

With --with-deps/--with-deps-file it also bundles wheels of runtime requirements that the Kaggle
image lacks (or has in a version you cannot use) into DIR/wheels/: binary wheels for CPython X.Y
on manylinux x86_64. Exactly the named packages are fetched, not their dependencies (pip download
--no-deps): the image has most of them already, and a resolved download would bundle numpy, torch
and the rest again. Name a missing dependency too: the notebooks' install cell installs each
bundled wheel with --no-deps, only where the image lacks that package, then checks the kit's own
requirements and names any that is missing or too old. A build with deps replaces DIR/wheels/ as a whole; a build
without them leaves an existing DIR/wheels/ as it is."""
EPILOG = """\
Environment:
  PYTHON                 interpreter that builds the wheel; needs pip and setuptools (default:
                         .venv/bin/python in the repo if present, else .venv-build/bin/python,
                         a minimal venv that build_wheel.sh makes with python3 on first use)
  KAGGLEKIT_DATASET_ID   default for --dataset-id"""


class BuildError(Exception):
    """A check failed; the message names what and the fix. main() prints it and exits with 1."""


class _Formatter(argparse.RawDescriptionHelpFormatter):
    def __init__(self, prog):
        super().__init__(prog, max_help_position=28, width=100)

    def add_usage(self, usage, actions, groups, prefix=None):
        super().add_usage(usage, actions, groups, prefix="Usage: ")


class _Parser(argparse.ArgumentParser):
    """argparse with the script's messages: `NAME needs a value`, `unknown argument: X`, exit 2."""

    def error(self, message):
        missing = re.match(r"argument (\S+?)(/\S+)?: (expected one argument|needs a value)", message)
        if missing:
            message = f"{missing.group(1)} needs a value"
        self.exit(2, f"build_wheel.sh: error: {message}\n\n{self.format_help()}")


def _value(text: str) -> str:
    """An option's value: not blank, and not another option (`--with-deps=--index-url=...`)."""
    if not text.strip() or text.startswith("-"):
        raise argparse.ArgumentTypeError("needs a value")
    return text


def make_parser() -> argparse.ArgumentParser:
    """The command line of build_wheel.sh."""
    p = _Parser(prog=PROG, usage=USAGE, description=DESCRIPTION, epilog=EPILOG, formatter_class=_Formatter,
                allow_abbrev=False)
    p.add_argument("--out", type=_value, metavar="DIR",
                   help="dataset folder to write (default: datasets/kagglekit in the repo)")
    p.add_argument("--dataset-id", type=_value, metavar="OWNER/SLUG",
                   help="Kaggle dataset id, e.g. janedoe/kagglekit; the slug is 6-50 lowercase letters, digits "
                        "and dashes. Default: $KAGGLEKIT_DATASET_ID, else the id already in "
                        f"DIR/dataset-metadata.json, else the placeholder {PLACEHOLDER_ID} (with a warning)")
    p.add_argument("--with-deps", type=_value, action="append", default=[], metavar='"REQ ..."',
                   help='requirements to bundle, whitespace-separated, e.g. "sentencepiece protobuf>=3.20,<5" '
                        "(repeatable)")
    p.add_argument("--with-deps-file", type=_value, metavar="FILE",
                   help="a pip requirements file listing requirements to bundle")
    p.add_argument("--find-links", type=_value, metavar="DIR",
                   help="take the wheels from the local folder DIR instead of PyPI "
                        "(pip download --no-index --find-links DIR)")
    p.add_argument("--python-version", type=_value, metavar="X.Y",
                   help=f"the Kaggle image's Python, for the wheels' tags (default: {DEFAULT_PYTHON_VERSION}; "
                        "`!python --version` in a Kaggle notebook tells)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the pip download command and exit; nothing is built or written")
    p.add_argument("--check-wheel", type=_value, metavar="FILE.whl",
                   help="only run the content check on an existing wheel, then exit")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse and cross-check the arguments; usage errors exit with 2 as argparse does.

    Paths become absolute (relative to the caller's directory) and `deps` holds the --with-deps
    requirements split on whitespace.
    """
    parser = make_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        parser.error(f"unknown argument: {unknown[0]}")
    args.deps = [spec for value in args.with_deps for spec in value.split()]
    args.with_deps = bool(args.deps or args.with_deps_file)
    if not args.with_deps:
        for flag, value in (("--find-links", args.find_links), ("--python-version", args.python_version),
                            ("--dry-run", args.dry_run)):
            if value:
                parser.error(f"{flag} only applies with --with-deps or --with-deps-file")
    args.python_version = args.python_version or DEFAULT_PYTHON_VERSION
    for name in ("out", "with_deps_file", "find_links", "check_wheel"):
        if getattr(args, name) is not None:
            setattr(args, name, Path(os.path.abspath(getattr(args, name))))
    args.out = args.out or ROOT / "datasets" / "kagglekit"
    return args


def _packaging():
    """The `packaging` library: the installed one, else the copy pip vendors (an interpreter given as
    PYTHON may have pip and setuptools but no packaging)."""
    try:
        import packaging.requirements
        import packaging.utils
        import packaging.version
    except ImportError:
        from pip._vendor import packaging  # noqa: F811
        import pip._vendor.packaging.requirements  # noqa: F401
        import pip._vendor.packaging.utils  # noqa: F401
        import pip._vendor.packaging.version  # noqa: F401
    return packaging


def read_version(init_file: Path = ROOT / "kagglekit" / "__init__.py") -> str:
    """kagglekit's version from its `__version__ = "X.Y.Z"` line, read without importing the package
    (setup.py reads the same line: the one source of the version)."""
    match = _VERSION_LINE.search(Path(init_file).read_text(encoding="utf-8"))
    if not match:
        raise BuildError(f'no __version__ = "X.Y.Z" line in {init_file}: add one (the wheel\'s version)')
    return match.group(1)


def check_requirement(spec: str) -> str:
    """Check one --with-deps requirement: a PyPI name with optional extras and version specifiers, and
    not kagglekit itself. Returns `spec` unchanged (pip gets it as written)."""
    pk = _packaging()
    try:
        req = pk.requirements.Requirement(spec)
    except pk.requirements.InvalidRequirement:
        req = None
    if req is None or req.url or req.marker:
        raise BuildError(
            f"--with-deps: '{spec}' is not a requirement pip download can take from an index: write NAME, "
            "NAME==VERSION or NAME>=A,<B (extras as NAME[extra]), separated by spaces; put anything else "
            "(URLs, options, markers) in a file for --with-deps-file")
    if pk.utils.canonicalize_name(req.name) == "kagglekit":
        raise BuildError(f"--with-deps: '{spec}': the kit's own wheel is built from this checkout; leave kagglekit out")
    return spec


def _requirement_name(line: str) -> str | None:
    """The canonical name of a requirement line, or None for anything else (options, comments, URLs)."""
    pk = _packaging()
    try:
        return pk.utils.canonicalize_name(pk.requirements.Requirement(line).name)
    except pk.requirements.InvalidRequirement:
        return None


def resolve_dataset_id(flag: str | None, environ: dict, out: Path) -> tuple[str, str]:
    """The dataset id and where it came from: --dataset-id, else $KAGGLEKIT_DATASET_ID, else the id in
    an existing OUT/dataset-metadata.json (unless the placeholder), else the placeholder."""
    if flag:
        dataset_id, source = flag, "--dataset-id"
    elif environ.get("KAGGLEKIT_DATASET_ID"):
        dataset_id, source = environ["KAGGLEKIT_DATASET_ID"], "KAGGLEKIT_DATASET_ID"
    else:
        dataset_id, source = _id_in_metadata(out / "dataset-metadata.json"), str(out / "dataset-metadata.json")
    if not dataset_id or dataset_id == PLACEHOLDER_ID:
        return PLACEHOLDER_ID, "placeholder"
    owner, _, slug = dataset_id.partition("/")
    if not (re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", owner) and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", slug)
            and 6 <= len(slug) <= 50):
        raise BuildError(
            f"invalid Kaggle dataset id '{dataset_id}' (from {source}): expected OWNER/SLUG, e.g. janedoe/kagglekit, "
            "where OWNER is your Kaggle username and SLUG is 6-50 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit")
    return dataset_id, source


def _id_in_metadata(path: Path) -> str:
    """The "id" of an existing dataset-metadata.json, so a rebuild keeps an id the user set; "" if none."""
    import json

    try:
        return str(json.loads(path.read_text(encoding="utf-8")).get("id", ""))
    except (OSError, ValueError, AttributeError):
        return ""


def check_deps_inputs(args: argparse.Namespace) -> None:
    """Check the --with-deps inputs before anything is downloaded or built."""
    for spec in args.deps:
        check_requirement(spec)
    if args.with_deps_file is not None:
        if not args.with_deps_file.is_file():
            raise BuildError(f"--with-deps-file: no such file: {args.with_deps_file} "
                             "(a pip requirements file, one requirement a line)")
        # only the kit itself is refused here: pip reads the file, and names what it cannot take
        for line in args.with_deps_file.read_text(encoding="utf-8").splitlines():
            if _requirement_name(line.split(" #")[0].strip()) == "kagglekit":
                raise BuildError(f"--with-deps-file: '{line.strip()}' in {args.with_deps_file}: the kit's own "
                                 "wheel is built from this checkout; leave kagglekit out")
    if args.find_links is not None and not args.find_links.is_dir():
        raise BuildError(f"--find-links: no such folder: {args.find_links} (a folder of .whl files)")
    if not re.fullmatch(r"3\.[0-9]+", args.python_version):
        raise BuildError(f"--python-version: '{args.python_version}' is not a Python version like 3.12 "
                         "(MAJOR.MINOR of the Kaggle image)")


def download_command(args: argparse.Namespace, dest: Path) -> list[str]:
    """The pip download command that fetches exactly the named binary wheels for the Kaggle image into dest."""
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary=:all:", "--no-deps",
           "--python-version", args.python_version, "--implementation", "cp"]
    for platform in DEP_PLATFORMS:
        cmd += ["--platform", platform]
    cmd += ["--dest", str(dest)]
    if args.find_links is not None:
        cmd += ["--no-index", "--find-links", str(args.find_links)]
    if args.with_deps_file is not None:
        cmd += ["-r", str(args.with_deps_file)]
    return cmd + args.deps


def check_wheel(wheel: Path, source: Path | None = None) -> list[tuple[str, str]]:
    """The content check: every file of the wheel is under kagglekit/ or its .dist-info/, none is data,
    weights, a notebook or bytecode, and (given the package's source folder) every .py file of it is in
    the wheel: a subpackage without __init__.py is silently skipped by find_packages.

    Returns:
        (member, why) for each problem; empty when the wheel passes.
    """
    if not wheel.is_file():
        raise BuildError(f"no such wheel: {wheel}")
    try:
        with zipfile.ZipFile(wheel) as z:
            names = z.namelist()
    except zipfile.BadZipFile as exc:
        raise BuildError(f"{wheel} is not a valid wheel (zip): {exc}") from None
    bad = []
    for name in names:
        if name.endswith("/"):
            continue  # a directory entry
        if not (name.startswith("kagglekit/") or _DIST_INFO.match(name)):
            bad.append((name, "outside kagglekit/ and kagglekit-*.dist-info/"))
        elif name.lower().endswith(FORBIDDEN_SUFFIXES) or "/__pycache__/" in name:
            bad.append((name, "data/weights/notebook/bytecode file"))
    if not any(_DIST_INFO.match(n) for n in names):
        bad.append(("kagglekit-*.dist-info/", "missing: not a kagglekit wheel"))
    if source is not None:
        for path in sorted(Path(source).rglob("*.py")):
            member = "kagglekit/" + path.relative_to(source).as_posix()
            if "__pycache__" not in path.parts and member not in names:
                bad.append((member, "in the source tree but missing from the wheel (no __init__.py?)"))
    return bad


def _content_check(wheel: Path, source: Path | None = None) -> None:
    bad = check_wheel(wheel, source)
    if bad:
        raise BuildError(f"wheel {wheel.name} failed the content check:\n"
                         + "\n".join(f"  {name}: {why}" for name, why in bad))
    with zipfile.ZipFile(wheel) as z:
        count = len(z.namelist())
    print(f"content check ok: {count} files, all under kagglekit/ and its .dist-info/")


def check_build_tools(version=importlib.metadata.version) -> None:
    """The offline build (--no-build-isolation) needs setuptools with bdist_wheel in this interpreter:
    setuptools >= 70.1 has it, older ones need the `wheel` package. Read from package metadata, no import."""
    Version = _packaging().version.Version
    try:
        setuptools = Version(version("setuptools"))
    except importlib.metadata.PackageNotFoundError:
        setuptools = None
    if setuptools is not None and setuptools < Version("70.1"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            version("wheel")
            return
    if setuptools is None or setuptools < Version("70.1"):
        raise BuildError(
            f"{sys.executable} lacks setuptools or bdist_wheel, which the offline build (--no-build-isolation) "
            f"needs: {sys.executable} -m pip install setuptools wheel   (or unset PYTHON: build_wheel.sh then "
            "uses the repo's .venv, or makes a build venv, .venv-build)")


def _run(cmd: list, log: Path, failure: str, **kwargs) -> None:
    """Run cmd with its output in log; on failure print the log and raise BuildError(failure)."""
    with open(log, "w") as f:
        code = subprocess.run([str(c) for c in cmd], stdout=f, stderr=subprocess.STDOUT,
                              env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}, **kwargs).returncode
    if code != 0:
        sys.stderr.write(log.read_text(errors="replace"))
        raise BuildError(failure)


def _kib(path: Path) -> int:
    return -(-path.stat().st_size // 1024)


def download_deps(args: argparse.Namespace, tmp: Path) -> list[Path]:
    """Download the dependency wheels into tmp/deps and check that they are wheels, and not kagglekit's."""
    dest = tmp / "deps"
    dest.mkdir()
    where = f" in {args.find_links}" if args.find_links is not None else ""
    _run(download_command(args, dest), tmp / "download.log",
         "pip download of the dependency wheels failed (log above). 'No matching distribution' means no binary "
         f"wheel for CPython {args.python_version} on manylinux x86_64{where}: check the name, the version and "
         "--python-version")
    deps = sorted(dest.iterdir())
    if not deps:
        raise BuildError("pip download wrote no wheels: list requirements with --with-deps or in the --with-deps-file")
    for dep in deps:
        if not dep.name.endswith(".whl"):
            raise BuildError(f"pip download wrote {dep.name}, not a wheel (only .whl files are bundled)")
        if dep.name.startswith("kagglekit-"):
            raise BuildError(f"{dep.name}: the kit's own wheel is built from this checkout; "
                             "leave kagglekit out of --with-deps-file")
        print(f"    {dep.name} ({_kib(dep)} KiB)")
    return deps


def build_kit_wheel(tmp: Path, version: str) -> Path:
    """Build the kit's wheel with pip from a copy of the packaging files and kagglekit/, so setuptools
    writes build/ and *.egg-info into tmp and stray repo files cannot leak in. Returns the wheel's path."""
    src, out = tmp / "src", tmp / "wheel"
    src.mkdir()
    for pattern in PACKAGING_FILES:
        for path in sorted(ROOT.glob(pattern)):
            if path.is_file():
                shutil.copy2(path, src)
    shutil.copytree(ROOT / "kagglekit", src / "kagglekit",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
    _run([sys.executable, "-m", "pip", "--isolated", "wheel", src, "--no-deps", "--no-build-isolation",
          "--no-index", "-w", out], tmp / "build.log", "pip wheel failed (log above)")
    built = sorted(out.glob("*.whl"))
    expected = f"kagglekit-{version}-py3-none-any.whl"
    if len(built) != 1:
        raise BuildError(f"expected one wheel from pip wheel, got: {' '.join(p.name for p in built) or 'none'}")
    if built[0].name != expected:
        raise BuildError(f"built {built[0].name}, expected {expected} "
                         "(pure-Python py3-none-any, version from kagglekit/__init__.py)")
    return built[0]


def install_check(wheel: Path, tmp: Path, version: str) -> None:
    """Install the wheel into a fresh bare venv the way a Kaggle notebook does, and import it there."""
    venv = tmp / "venv"
    python = venv / "bin" / "python"
    pip_version = _packaging().version.Version(importlib.metadata.version("pip"))
    if pip_version >= _packaging().version.Version("22.3"):
        # this pip installs into another interpreter: no ensurepip run, a few seconds saved
        _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp / "venv.log",
             f"could not create a venv with {sys.executable} -m venv")
        install = [sys.executable, "-m", "pip", "--isolated", "--python", python]
    else:
        _run([sys.executable, "-m", "venv", venv], tmp / "venv.log",
             f"could not create a venv with pip ({sys.executable} -m venv)")
        install = [python, "-m", "pip", "--isolated"]
    _run(install + ["install", "--no-index", "--no-deps", wheel], tmp / "install.log",
         "pip install --no-index --no-deps of the wheel failed in a fresh venv (log above)")
    # -I and a neutral cwd: import the installed copy, never the repo checkout
    proc = subprocess.run([str(python), "-I", "-c", "import kagglekit, os; "
                           "print(kagglekit.__version__, os.path.dirname(kagglekit.__file__))"],
                          cwd=tmp, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise BuildError("'import kagglekit' failed in the fresh venv "
                         "(it must not need torch or any dependency at import time)")
    installed_version, installed_dir = proc.stdout.split()
    if installed_version != version:
        raise BuildError(f"installed kagglekit reports version {installed_version}, "
                         f"kagglekit/__init__.py says {version}")
    if not installed_dir.startswith(str(venv) + os.sep):
        raise BuildError(f"imported kagglekit from {installed_dir}, not from the fresh venv")
    if not os.access(venv / "bin" / "kagglekit", os.X_OK):
        raise BuildError("the wheel did not install the 'kagglekit' console script")
    print(f"    import kagglekit -> {installed_version}; console script bin/kagglekit installed")


def _io():
    """kagglekit._io of this checkout: the kit's atomic file and folder writes."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from kagglekit import _io

    return _io


def write_dataset_folder(out: Path, wheel: Path, deps: list[Path] | None, dataset_id: str) -> None:
    """Write the Kaggle dataset folder, each part atomically: the kit's wheel (older kit wheels removed),
    wheels/ replaced as a whole when `deps` is a list (None: an existing wheels/ is kept), and
    dataset-metadata.json. Other files in `out` are left alone."""
    io = _io()
    print(f"==> writing dataset folder {out}")
    with io.atomic_path(out / wheel.name) as tmp:
        shutil.copyfile(wheel, tmp)
    for old in sorted(out.glob("kagglekit-*.whl")):
        if old.name != wheel.name:
            old.unlink()
            print(f"    removed older {old.name}")
    if deps is not None:
        # one version of each package: the folder is replaced as a whole
        with io.atomic_dir(out / "wheels") as tmp:
            for dep in deps:
                shutil.copy2(dep, tmp / dep.name)
        print(f"    wheels/: {len(deps)} dependency wheel(s)")
    elif (out / "wheels").is_dir():
        kept = " ".join(sorted(p.name for p in (out / "wheels").iterdir()))
        print(f"    wheels/ kept from an earlier --with-deps build: {kept}")
        print(f"    (rm -r {out / 'wheels'}, or rebuild with --with-deps, to change what is bundled)")
    io.write_json(out / "dataset-metadata.json",
                  {"title": "kagglekit", "id": dataset_id, "licenses": [{"name": "apache-2.0"}]})


def next_steps(out: Path, wheel_name: str, version: str, dataset_id: str, cwd: Path) -> tuple[str, str]:
    """What to do with the dataset folder: (the text for stdout, a warning for stderr or "")."""
    show = "." if out == cwd else os.path.relpath(out, cwd) if cwd in out.parents else str(out)
    bundled = (out / "wheels").is_dir()
    # the kaggle CLI skips subfolders unless told otherwise: --dir-mode zip uploads wheels/ too
    dir_mode = " --dir-mode zip" if bundled else ""
    kaggle = f"/kaggle/input/{dataset_id.partition('/')[2]}"
    install = f"!pip install --no-index --no-deps {kaggle}/{wheel_name}"
    if bundled:  # never over a package of the image: each bundled wheel only where the image lacks that package
        install += f"\n  and for each package the image lacks:  !pip install --no-index --no-deps {kaggle}/wheels/<wheel>"
    text = f"""
Dataset folder ready: {show}/{wheel_name}{' + wheels/' if bundled else ''} + dataset-metadata.json (id: {dataset_id})

Upload (needs the kaggle CLI and ~/.kaggle/kaggle.json):
  first time:  kaggle datasets create -p {show}{dir_mode}
  updates:     kaggle datasets version -p {show}{dir_mode} -m "kagglekit {version}"

In the notebook (Internet off), after adding the dataset {dataset_id} as input, the install cell of
train.ipynb and inference.ipynb finds and installs it (WHEEL_DIR = "auto"). By hand:
  {install}
"""
    warning = ""
    if dataset_id == PLACEHOLDER_ID:
        warning = f"""
WARNING: dataset-metadata.json has the placeholder id {PLACEHOLDER_ID}; the upload will fail
         until you set your own: rerun with --dataset-id YOURNAME/kagglekit, or export
         KAGGLEKIT_DATASET_ID=YOURNAME/kagglekit (or edit "id" in {show}/dataset-metadata.json).
"""
    return text, warning


def build(args: argparse.Namespace, tmp: Path, version: str, dataset_id: str) -> None:
    """Dependency wheels, the kit's wheel, its checks, then the dataset folder; nothing is written to the
    folder until every step before has passed."""
    deps = None
    if args.with_deps:
        # first: the download is the slow step and the likeliest to fail
        print(f"==> downloading dependency wheels (CPython {args.python_version}, {' '.join(DEP_PLATFORMS)}, "
              "no dependencies)", flush=True)
        deps = download_deps(args, tmp)
    wheel_name = f"kagglekit-{version}-py3-none-any.whl"
    print(f"==> building {wheel_name} with {sys.executable}", flush=True)
    start = time.monotonic()
    wheel = build_kit_wheel(tmp, version)
    print(f"    built in {time.monotonic() - start:.0f}s ({_kib(wheel)} KiB)")
    print("==> checking wheel contents")
    _content_check(wheel, ROOT / "kagglekit")
    print("==> installing into a fresh venv with pip install --no-index --no-deps", flush=True)
    install_check(wheel, tmp, version)
    write_dataset_folder(args.out, wheel, deps, dataset_id)
    text, warning = next_steps(args.out, wheel_name, version, dataset_id, Path(os.getcwd()))
    print(text, end="", flush=True)
    print(warning, end="", file=sys.stderr)


def main(argv: list[str] | None = None, environ: dict | None = None) -> int:
    """Run build_wheel.sh's command line.

    Args:
        argv: The arguments; None reads sys.argv.
        environ: The environment (KAGGLEKIT_DATASET_ID); None reads os.environ.

    Returns:
        0 on success, 1 when a check fails (the error names the fix), 130 on Ctrl-C. Usage errors
        exit with 2.

    Example:
        `python scripts/build_wheel.py --dataset-id janedoe/kagglekit --with-deps "sentencepiece"`
    """
    args = parse_args(argv)
    environ = os.environ if environ is None else environ
    try:
        if args.check_wheel is not None:
            _content_check(args.check_wheel)
            return 0
        dataset_id, _ = resolve_dataset_id(args.dataset_id, environ, args.out)
        if args.with_deps:
            check_deps_inputs(args)
        if args.dry_run:
            print("pip download command (dry run: nothing built, downloaded or written; a real run downloads into")
            print(f"a temporary folder and renames it to {args.out / 'wheels'} once every wheel is in):")
            print(shlex.join(download_command(args, args.out / "wheels")))
            return 0
        version = read_version()
        check_build_tools()
        with tempfile.TemporaryDirectory(prefix="kagglekit-build.") as tmp:
            build(args, Path(tmp), version, dataset_id)
    except BuildError as err:
        print(f"build_wheel.sh: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # exits through the temp folder's cleanup
    sys.exit(main())
