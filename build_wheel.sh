#!/usr/bin/env bash
# Build the kagglekit wheel offline, check it, and lay out the Kaggle dataset folder for upload.
# Run `bash build_wheel.sh --help` for usage. Works from any directory.
set -euo pipefail

usage() {
    cat <<'EOF'
Usage: bash build_wheel.sh [--out DIR] [--dataset-id OWNER/SLUG]
       bash build_wheel.sh --check-wheel FILE.whl
       bash build_wheel.sh --help

Builds the kagglekit wheel offline (pip wheel --no-deps --no-build-isolation, from a temporary
copy of the sources so the repo gets no build/ or *.egg-info droppings), fails if the wheel holds
anything besides kagglekit/ and its .dist-info/ (tests, notebooks, data, model weights, wheels),
installs it into a fresh bare venv with `pip install --no-index --no-deps` and imports it there,
then writes the Kaggle dataset folder: the wheel plus dataset-metadata.json.

Options:
  --out DIR                 dataset folder to write (default: datasets/kagglekit in the repo)
  --dataset-id OWNER/SLUG   Kaggle dataset id, e.g. janedoe/kagglekit; the slug is 6-50
                            lowercase letters, digits and dashes. Default: $KAGGLEKIT_DATASET_ID,
                            else the id already in DIR/dataset-metadata.json, else the
                            placeholder YOUR_KAGGLE_USERNAME/kagglekit (with a warning)
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
while [[ $# -gt 0 ]]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --out | --dataset-id | --check-wheel)
            [[ $# -ge 2 && -n "$2" && "$2" != -* ]] || usage_error "$1 needs a value"
            case "$1" in
                --out) OUT=$(abspath "$2") ;;
                --dataset-id) DATASET_ID=$2 DATASET_ID_SOURCE="--dataset-id" ;;
                --check-wheel) CHECK_WHEEL=$(abspath "$2") ;;
            esac
            shift 2
            ;;
        --out=* | --dataset-id=* | --check-wheel=*)
            value=${1#*=}
            [[ -n "$value" ]] || usage_error "${1%%=*} needs a value"
            case "$1" in
                --out=*) OUT=$(abspath "$value") ;;
                --dataset-id=*) DATASET_ID=$value DATASET_ID_SOURCE="--dataset-id" ;;
                --check-wheel=*) CHECK_WHEEL=$(abspath "$value") ;;
            esac
            shift
            ;;
        *)
            usage_error "unknown argument: $1"
            ;;
    esac
done

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
echo "Dataset folder ready: $SHOW_OUT/$WHEEL_NAME + dataset-metadata.json (id: $DATASET_ID)"
if [[ "$DATASET_ID" == "$PLACEHOLDER_ID" ]]; then
    echo >&2
    echo "WARNING: dataset-metadata.json has the placeholder id $PLACEHOLDER_ID; the upload will fail" >&2
    echo "         until you set your own: rerun with --dataset-id YOURNAME/kagglekit, or export" >&2
    echo "         KAGGLEKIT_DATASET_ID=YOURNAME/kagglekit (or edit \"id\" in $SHOW_OUT/dataset-metadata.json)." >&2
fi
echo
echo "Upload (needs the kaggle CLI and ~/.kaggle/kaggle.json):"
echo "  first time:  kaggle datasets create -p $SHOW_OUT"
echo "  updates:     kaggle datasets version -p $SHOW_OUT -m \"kagglekit $VERSION\""
echo
echo "In the notebook (Internet off), after adding the dataset $DATASET_ID as input:"
echo "  !pip install --no-index --no-deps /kaggle/input/$SLUG/$WHEEL_NAME"
