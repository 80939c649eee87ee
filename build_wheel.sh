#!/usr/bin/env bash
# Build the kagglekit wheel offline, check it, and lay out the Kaggle dataset folder for upload.
# Run `bash build_wheel.sh --help` for usage. Works from any directory.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash build_wheel.sh [--out DIR] [--dataset-id OWNER/SLUG]
                           [--with-deps "REQ ..."] [--with-deps-file FILE]
                           [--find-links DIR] [--python-version X.Y] [--dry-run]
       bash build_wheel.sh --check-wheel FILE.whl
       bash build_wheel.sh --help

Builds the kagglekit wheel offline (pip wheel --no-deps --no-build-isolation, from a temporary
copy of the sources so the repo gets no build/ or *.egg-info droppings), fails if the wheel holds
anything besides kagglekit/ and its .dist-info/ (tests, notebooks, data, model weights, wheels),
installs it into a fresh bare venv with `pip install --no-index --no-deps` and imports it there,
then writes the Kaggle dataset folder: the wheel plus dataset-metadata.json.

With --with-deps/--with-deps-file it also bundles wheels of runtime requirements that the Kaggle
image lacks (or has in a version you cannot use) into DIR/wheels/: binary wheels for CPython X.Y
on manylinux x86_64. Exactly the named packages are fetched, not their dependencies (pip download
--no-deps): the image has most of them already, and a resolved download would bundle numpy, torch
and the rest again. Name a missing dependency too; the notebooks' offline install resolves, and
names any requirement it cannot satisfy. A build with deps replaces DIR/wheels/ as a whole; a build
without them leaves an existing DIR/wheels/ as it is.

Options:
  --out DIR                 dataset folder to write (default: datasets/kagglekit in the repo)
  --dataset-id OWNER/SLUG   Kaggle dataset id, e.g. janedoe/kagglekit; the slug is 6-50
                            lowercase letters, digits and dashes. Default: $KAGGLEKIT_DATASET_ID,
                            else the id already in DIR/dataset-metadata.json, else the
                            placeholder YOUR_KAGGLE_USERNAME/kagglekit (with a warning)
  --with-deps "REQ ..."     requirements to bundle, whitespace-separated, e.g.
                            "sentencepiece protobuf>=3.20,<5" (repeatable)
  --with-deps-file FILE     a pip requirements file listing requirements to bundle
  --find-links DIR          take the wheels from the local folder DIR instead of PyPI
                            (pip download --no-index --find-links DIR)
  --python-version X.Y      the Kaggle image's Python, for the wheels' tags (default: 3.12;
                            `!python --version` in a Kaggle notebook tells)
  --dry-run                 print the pip download command and exit; nothing is built or written
  --check-wheel FILE.whl    only run the content check on an existing wheel, then exit
  -h, --help                show this help and exit

Environment:
  PYTHON                 interpreter that builds the wheel; needs pip and setuptools
                         (default: .venv/bin/python in the repo if present, else python3)
  KAGGLEKIT_DATASET_ID   default for --dataset-id
EOF
}

die() {
    echo "build_wheel.sh: error: $*" >&2
    exit 1
}

usage_error() {
    echo "build_wheel.sh: error: $*" >&2
    echo >&2
    usage >&2
    exit 2
}

CALLER_PWD=$(pwd -P)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)

abspath() {  # absolute, normalised form of a path given relative to the caller's directory
    local p=$1
    [[ "$p" == /* ]] || p="$CALLER_PWD/$p"
    realpath -ms -- "$p" 2>/dev/null || printf '%s\n' "$p"
}

# ---------------------------------------------------------------------------------------------
# Arguments
OUT=""
DATASET_ID=""
DATASET_ID_SOURCE=""
CHECK_WHEEL=""
DEP_SPECS=()   # --with-deps: requirement specifiers
DEPS_FILE=""   # --with-deps-file
FIND_LINKS=""  # --find-links
DEPS_PYTHON="" # --python-version
DRY_RUN=""
VALUE_FLAGS="|--out|--dataset-id|--check-wheel|--with-deps|--with-deps-file|--find-links|--python-version|"

set_option() {  # set_option FLAG VALUE
    local specs
    case "$1" in
        --out) OUT=$(abspath "$2") ;;
        --dataset-id) DATASET_ID=$2 DATASET_ID_SOURCE="--dataset-id" ;;
        --check-wheel) CHECK_WHEEL=$(abspath "$2") ;;
        --with-deps) read -r -a specs <<<"$2" && DEP_SPECS+=("${specs[@]}") ;;
        --with-deps-file) DEPS_FILE=$(abspath "$2") ;;
        --find-links) FIND_LINKS=$(abspath "$2") ;;
        --python-version) DEPS_PYTHON=$2 ;;
    esac
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run)
            DRY_RUN=1
            shift
            ;;
        --*=*)
            flag=${1%%=*} value=${1#*=}
            [[ "$VALUE_FLAGS" == *"|$flag|"* ]] || usage_error "unknown argument: $1"
            [[ -n "${value//[[:space:]]/}" && "$value" != -* ]] || usage_error "$flag needs a value"
            set_option "$flag" "$value"
            shift
            ;;
        *)
            [[ "$VALUE_FLAGS" == *"|$1|"* ]] || usage_error "unknown argument: $1"
            [[ $# -ge 2 && -n "${2//[[:space:]]/}" && "$2" != -* ]] || usage_error "$1 needs a value"
            set_option "$1" "$2"
            shift 2
            ;;
    esac
done
WITH_DEPS=""
if [[ ${#DEP_SPECS[@]} -gt 0 || -n "$DEPS_FILE" ]]; then
    WITH_DEPS=1
else
    for pair in "--find-links=$FIND_LINKS" "--python-version=$DEPS_PYTHON" "--dry-run=$DRY_RUN"; do
        [[ -z "${pair#*=}" ]] || usage_error "${pair%%=*} only applies with --with-deps or --with-deps-file"
    done
fi
DEPS_PYTHON=${DEPS_PYTHON:-3.12}

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON="$ROOT/.venv/bin/python"
    else
        PYTHON=python3
    fi
elif [[ "$PYTHON" == */* ]]; then
    PYTHON=$(abspath "$PYTHON")
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not an executable interpreter"

cd "$ROOT"

# ---------------------------------------------------------------------------------------------
# Wheel content check (also reachable alone as --check-wheel FILE.whl).
# Usage: check_wheel WHEEL [SOURCE_PACKAGE_DIR]. With a source dir, it also fails when a .py file
# of the package is missing from the wheel (a subpackage without __init__.py is silently skipped
# by find_packages, and would then be missing on Kaggle).
check_wheel() {
    "$PYTHON" - "$@" <<'PY'
import re
import sys
import zipfile
from pathlib import Path

wheel = Path(sys.argv[1])
source = Path(sys.argv[2]) if len(sys.argv) > 2 else None
if not wheel.is_file():
    sys.exit(f"build_wheel.sh: error: no such wheel: {wheel}")
try:
    names = zipfile.ZipFile(wheel).namelist()
except zipfile.BadZipFile as exc:
    sys.exit(f"build_wheel.sh: error: {wheel} is not a valid wheel (zip): {exc}")

# Data, weights, notebooks and nested wheels never belong in the code wheel.
FORBIDDEN_SUFFIXES = (
    ".csv", ".tsv", ".parquet", ".feather", ".jsonl", ".safetensors", ".bin", ".pt", ".pth",
    ".ckpt", ".onnx", ".pkl", ".pickle", ".npy", ".npz", ".h5", ".whl", ".zip", ".tar.gz",
    ".ipynb", ".pyc",
)
dist_info = re.compile(r"kagglekit-[^/]+\.dist-info/")
bad = []
for name in names:
    if name.endswith("/"):
        continue  # directory entry
    if not (name.startswith("kagglekit/") or dist_info.match(name)):
        bad.append((name, "outside kagglekit/ and kagglekit-*.dist-info/"))
    elif name.lower().endswith(FORBIDDEN_SUFFIXES) or "/__pycache__/" in name:
        bad.append((name, "data/weights/notebook/bytecode file"))
if not any(dist_info.match(n) for n in names):
    bad.append(("kagglekit-*.dist-info/", "missing: not a kagglekit wheel"))
if source is not None:
    in_wheel = set(names)
    for path in sorted(source.rglob("*.py")):
        if "__pycache__" in path.parts:
            continue
        member = "kagglekit/" + path.relative_to(source).as_posix()
        if member not in in_wheel:
            bad.append((member, "in the source tree but missing from the wheel (no __init__.py?)"))
if bad:
    print(f"build_wheel.sh: error: wheel {wheel.name} failed the content check:", file=sys.stderr)
    for name, why in bad:
        print(f"  {name}: {why}", file=sys.stderr)
    sys.exit(1)
print(f"content check ok: {len(names)} files, all under kagglekit/ and its .dist-info/")
PY
}

if [[ -n "$CHECK_WHEEL" ]]; then
    check_wheel "$CHECK_WHEEL"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
# Dataset id: validate before spending time on the build.
PLACEHOLDER_ID="YOUR_KAGGLE_USERNAME/kagglekit"
OUT=${OUT:-$ROOT/datasets/kagglekit}
if [[ -z "$DATASET_ID" && -n "${KAGGLEKIT_DATASET_ID:-}" ]]; then
    DATASET_ID=$KAGGLEKIT_DATASET_ID
    DATASET_ID_SOURCE="KAGGLEKIT_DATASET_ID"
fi
if [[ -z "$DATASET_ID" && -f "$OUT/dataset-metadata.json" ]]; then
    # keep an id the user already set in the folder rather than clobbering it with the placeholder
    DATASET_ID=$("$PYTHON" -c 'import json, sys
try:
    print(json.load(open(sys.argv[1])).get("id", ""))
except Exception:
    pass' "$OUT/dataset-metadata.json")
    if [[ "$DATASET_ID" == "$PLACEHOLDER_ID" ]]; then
        DATASET_ID=""
    elif [[ -n "$DATASET_ID" ]]; then
        DATASET_ID_SOURCE="$OUT/dataset-metadata.json"
    fi
fi
if [[ -n "$DATASET_ID" ]]; then
    owner=${DATASET_ID%%/*}
    slug=${DATASET_ID#*/}
    if [[ "$DATASET_ID" != */* || "$slug" == */* \
        || ! "$owner" =~ ^[A-Za-z0-9][A-Za-z0-9_-]*$ \
        || ! "$slug" =~ ^[a-z0-9]([a-z0-9-]*[a-z0-9])?$ \
        || ${#slug} -lt 6 || ${#slug} -gt 50 ]]; then
        die "invalid Kaggle dataset id '$DATASET_ID' (from $DATASET_ID_SOURCE): expected OWNER/SLUG," \
            "e.g. janedoe/kagglekit, where OWNER is your Kaggle username and SLUG is 6-50 lowercase" \
            "letters, digits and dashes, starting and ending with a letter or digit"
    fi
else
    DATASET_ID=$PLACEHOLDER_ID
fi
SLUG=${DATASET_ID#*/}

# ---------------------------------------------------------------------------------------------
# Dependency wheels (--with-deps): validate, and the pip download command, before any build.
# Kaggle's image is Ubuntu 22.04 (glibc 2.35): manylinux2014 (= manylinux_2_17, pip adds the older
# manylinux2010/1 aliases) and manylinux_2_28 wheels run there; pip also takes pure py3-none-any ones.
DEP_PLATFORMS=(manylinux2014_x86_64 manylinux_2_17_x86_64 manylinux_2_28_x86_64)
# NAME[EXTRAS][SPECIFIER,...]: a PyPI name, no URLs, paths or pip options
REQ_RE='^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(\[[A-Za-z0-9._,-]+\])?((~=|===|==|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+(,(~=|===|==|!=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+)*)?$'
if [[ -n "$WITH_DEPS" ]]; then
    for spec in "${DEP_SPECS[@]}"; do
        [[ "$spec" =~ $REQ_RE ]] \
            || die "--with-deps: '$spec' is not a requirement pip download can take from an index: write" \
                "NAME, NAME==VERSION or NAME>=A,<B (extras as NAME[extra]), separated by spaces; put" \
                "anything else (URLs, options) in a file for --with-deps-file"
        name=$(printf '%s' "${spec%%[\[<>=!~]*}" | tr 'A-Z_.' 'a-z--')
        [[ "$name" != "kagglekit" ]] \
            || die "--with-deps: '$spec': the kit's own wheel is built from this checkout; leave kagglekit out"
    done
    [[ -z "$DEPS_FILE" || -f "$DEPS_FILE" ]] \
        || die "--with-deps-file: no such file: $DEPS_FILE (a pip requirements file, one requirement a line)"
    [[ -z "$FIND_LINKS" || -d "$FIND_LINKS" ]] \
        || die "--find-links: no such folder: $FIND_LINKS (a folder of .whl files)"
    [[ "$DEPS_PYTHON" =~ ^3\.[0-9]+$ ]] \
        || die "--python-version: '$DEPS_PYTHON' is not a Python version like 3.12 (MAJOR.MINOR of the Kaggle image)"
fi

# download_cmd DEST: sets DOWNLOAD_CMD, the pip download command (an array) into DEST
download_cmd() {
    DOWNLOAD_CMD=("$PYTHON" -m pip download --only-binary=:all: --no-deps
        --python-version "$DEPS_PYTHON" --implementation cp)
    local platform
    for platform in "${DEP_PLATFORMS[@]}"; do
        DOWNLOAD_CMD+=(--platform "$platform")
    done
    DOWNLOAD_CMD+=(--dest "$1")
    if [[ -n "$FIND_LINKS" ]]; then
        DOWNLOAD_CMD+=(--no-index --find-links "$FIND_LINKS")
    fi
    if [[ -n "$DEPS_FILE" ]]; then
        DOWNLOAD_CMD+=(-r "$DEPS_FILE")
    fi
    DOWNLOAD_CMD+=("${DEP_SPECS[@]}")
}

if [[ -n "$DRY_RUN" ]]; then
    download_cmd "$OUT/wheels"
    echo "pip download command (dry run: nothing built, downloaded or written; a real run downloads into"
    echo "a temporary folder and renames it to $OUT/wheels once every wheel is in):"
    "$PYTHON" -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' "${DOWNLOAD_CMD[@]}"
    exit 0
fi

# ---------------------------------------------------------------------------------------------
VERSION=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' kagglekit/__init__.py | head -n 1)
[[ -n "$VERSION" ]] || die "no __version__ = \"X.Y.Z\" line in kagglekit/__init__.py"
WHEEL_NAME="kagglekit-$VERSION-py3-none-any.whl"

"$PYTHON" -c '
import setuptools
try:
    import setuptools.command.bdist_wheel  # setuptools >= 70.1
except ImportError:
    import wheel.bdist_wheel' 2>/dev/null \
    || die "$PYTHON lacks setuptools or bdist_wheel, which the offline build (--no-build-isolation) needs:" \
        "$PYTHON -m pip install setuptools wheel   (or point PYTHON at the repo's .venv/bin/python)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/kagglekit-build.XXXXXX")
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

export PIP_DISABLE_PIP_VERSION_CHECK=1

# 0. Dependency wheels first: the download is the slow step and the likeliest to fail, and nothing is
#    written to the dataset folder until everything has passed.
if [[ -n "$WITH_DEPS" ]]; then
    echo "==> downloading dependency wheels (CPython $DEPS_PYTHON, ${DEP_PLATFORMS[*]}, no dependencies)"
    mkdir -p "$TMP/deps"
    download_cmd "$TMP/deps"
    if ! "${DOWNLOAD_CMD[@]}" >"$TMP/download.log" 2>&1; then
        cat "$TMP/download.log" >&2
        die "pip download of the dependency wheels failed (log above). 'No matching distribution' means no" \
            "binary wheel for CPython $DEPS_PYTHON on manylinux x86_64${FIND_LINKS:+ in $FIND_LINKS}: check" \
            "the name, the version and --python-version"
    fi
    shopt -s nullglob
    deps=("$TMP"/deps/*)
    shopt -u nullglob
    [[ ${#deps[@]} -gt 0 ]] \
        || die "pip download wrote no wheels: list requirements with --with-deps or in the --with-deps-file"
    for dep in "${deps[@]}"; do
        base=$(basename "$dep")
        [[ "$base" == *.whl ]] || die "pip download wrote $base, not a wheel (only .whl files are bundled)"
        [[ "$base" != kagglekit-* ]] \
            || die "$base: the kit's own wheel is built from this checkout; leave kagglekit out of --with-deps-file"
        echo "    $base ($(du -k "$dep" | cut -f1) KiB)"
    done
fi

# 1. Build from a copy of the packaging files and the package itself, so setuptools writes its
#    build/ and *.egg-info into the temp dir, and stray repo files cannot leak in.
echo "==> building $WHEEL_NAME with $PYTHON"
SECONDS=0
mkdir -p "$TMP/src" "$TMP/wheel"
for f in setup.py setup.cfg pyproject.toml MANIFEST.in README* LICENSE* NOTICE*; do
    if [[ -f "$f" ]]; then cp "$f" "$TMP/src/"; fi
done
tar -C "$ROOT" -cf - --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' kagglekit \
    | tar -C "$TMP/src" -xf -
if ! "$PYTHON" -m pip --isolated wheel "$TMP/src" --no-deps --no-build-isolation --no-index \
    -w "$TMP/wheel" >"$TMP/build.log" 2>&1; then
    cat "$TMP/build.log" >&2
    die "pip wheel failed (log above)"
fi
shopt -s nullglob
built=("$TMP"/wheel/*.whl)
shopt -u nullglob
[[ ${#built[@]} -eq 1 ]] || die "expected one wheel from pip wheel, got: ${built[*]:-none}"
[[ "$(basename "${built[0]}")" == "$WHEEL_NAME" ]] \
    || die "built $(basename "${built[0]}"), expected $WHEEL_NAME (pure-Python py3-none-any, version from kagglekit/__init__.py)"
WHEEL="${built[0]}"
echo "    built in ${SECONDS}s ($(du -k "$WHEEL" | cut -f1) KiB)"

# 2. Content check: nothing but kagglekit/ and its dist-info, and every package module present.
echo "==> checking wheel contents"
check_wheel "$WHEEL" "$ROOT/kagglekit"

# 3. Install into a fresh bare venv the way a Kaggle notebook does, and import it there.
echo "==> installing into a fresh venv with pip install --no-index --no-deps"
"$PYTHON" -m venv --without-pip "$TMP/venv" || die "could not create a venv with $PYTHON -m venv"
if "$PYTHON" -m pip --help 2>/dev/null | grep -q -- '--python '; then
    # pip >= 22.3 installs into another interpreter: no ensurepip run, a few seconds saved
    install_cmd=("$PYTHON" -m pip --isolated --python "$TMP/venv/bin/python")
else
    rm -rf "$TMP/venv"
    "$PYTHON" -m venv "$TMP/venv" || die "could not create a venv with pip ($PYTHON -m venv)"
    install_cmd=("$TMP/venv/bin/python" -m pip --isolated)
fi
if ! "${install_cmd[@]}" install --no-index --no-deps "$WHEEL" >"$TMP/install.log" 2>&1; then
    cat "$TMP/install.log" >&2
    die "pip install --no-index --no-deps of the wheel failed in a fresh venv (log above)"
fi
# -I and a neutral cwd: import the installed copy, never the repo checkout.
installed=$(cd "$TMP" && "$TMP/venv/bin/python" -I -c \
    'import kagglekit, os; print(kagglekit.__version__, os.path.dirname(kagglekit.__file__))') \
    || die "'import kagglekit' failed in the fresh venv (it must not need torch or any dependency at import time)"
read -r installed_version installed_dir <<<"$installed"
[[ "$installed_version" == "$VERSION" ]] \
    || die "installed kagglekit reports version $installed_version, kagglekit/__init__.py says $VERSION"
[[ "$installed_dir" == "$TMP/venv/"* ]] || die "imported kagglekit from $installed_dir, not from the fresh venv"
[[ -x "$TMP/venv/bin/kagglekit" ]] || die "the wheel did not install the 'kagglekit' console script"
echo "    import kagglekit -> $installed_version; console script bin/kagglekit installed"

# 4. The Kaggle dataset folder: the wheel and dataset-metadata.json, each written atomically.
echo "==> writing dataset folder $OUT"
mkdir -p "$OUT"
cp "$WHEEL" "$OUT/.$WHEEL_NAME.tmp.$$"
mv -f "$OUT/.$WHEEL_NAME.tmp.$$" "$OUT/$WHEEL_NAME"
for old in "$OUT"/kagglekit-*.whl; do
    [[ -e "$old" && "$(basename "$old")" != "$WHEEL_NAME" ]] || continue
    rm -f "$old"
    echo "    removed older $(basename "$old")"
done
if [[ -n "$WITH_DEPS" ]]; then
    # one version of each package: the folder is replaced as a whole (a copy beside it, then renames)
    rm -rf "$OUT/.wheels.tmp.$$" "$OUT/.wheels.old.$$"
    cp -R "$TMP/deps" "$OUT/.wheels.tmp.$$"
    if [[ -e "$OUT/wheels" ]]; then
        mv "$OUT/wheels" "$OUT/.wheels.old.$$"
    fi
    mv "$OUT/.wheels.tmp.$$" "$OUT/wheels"
    rm -rf "$OUT/.wheels.old.$$"
    echo "    wheels/: ${#deps[@]} dependency wheel(s)"
elif [[ -d "$OUT/wheels" ]]; then
    echo "    wheels/ kept from an earlier --with-deps build: $(cd "$OUT/wheels" && ls | tr '\n' ' ')"
    echo "    (rm -r $OUT/wheels, or rebuild with --with-deps, to change what is bundled)"
fi
"$PYTHON" - "$DATASET_ID" "$OUT/.dataset-metadata.json.tmp.$$" <<'PY'
import json
import sys

meta = {"title": "kagglekit", "id": sys.argv[1], "licenses": [{"name": "apache-2.0"}]}
with open(sys.argv[2], "w", encoding="utf-8") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")
PY
mv -f "$OUT/.dataset-metadata.json.tmp.$$" "$OUT/dataset-metadata.json"

# 5. What to do next.
case "$OUT" in
    "$CALLER_PWD") SHOW_OUT=. ;;
    "$CALLER_PWD"/*) SHOW_OUT=${OUT#"$CALLER_PWD"/} ;;
    *) SHOW_OUT=$OUT ;;
esac
echo
BUNDLED=""
if [[ -d "$OUT/wheels" ]]; then
    BUNDLED=1
fi
echo "Dataset folder ready: $SHOW_OUT/$WHEEL_NAME${BUNDLED:+ + wheels/} + dataset-metadata.json (id: $DATASET_ID)"
if [[ "$DATASET_ID" == "$PLACEHOLDER_ID" ]]; then
    echo >&2
    echo "WARNING: dataset-metadata.json has the placeholder id $PLACEHOLDER_ID; the upload will fail" >&2
    echo "         until you set your own: rerun with --dataset-id YOURNAME/kagglekit, or export" >&2
    echo "         KAGGLEKIT_DATASET_ID=YOURNAME/kagglekit (or edit \"id\" in $SHOW_OUT/dataset-metadata.json)." >&2
fi
# the kaggle CLI skips subfolders unless told otherwise: --dir-mode zip uploads wheels/ too
DIR_MODE=${BUNDLED:+ --dir-mode zip}
INPUT=/kaggle/input/$SLUG
echo
echo "Upload (needs the kaggle CLI and ~/.kaggle/kaggle.json):"
echo "  first time:  kaggle datasets create -p $SHOW_OUT$DIR_MODE"
echo "  updates:     kaggle datasets version -p $SHOW_OUT$DIR_MODE -m \"kagglekit $VERSION\""
echo
echo "In the notebook (Internet off), after adding the dataset $DATASET_ID as input:"
if [[ -n "$BUNDLED" ]]; then
    echo "  !pip install --no-index --find-links $INPUT/wheels $INPUT/$WHEEL_NAME $INPUT/wheels/*.whl"
else
    echo "  !pip install --no-index --no-deps $INPUT/$WHEEL_NAME"
fi
