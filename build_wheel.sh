#!/usr/bin/env bash
# Build the kagglekit wheel offline, check it, and lay out the Kaggle dataset folder for upload.
# Run `bash build_wheel.sh --help` for usage. Works from any directory. The work is done by
# scripts/build_wheel.py; this picks the interpreter that runs it: $PYTHON if set, else the
# project's .venv (`make venv`), else .venv-build, a minimal venv (setuptools, wheel, packaging)
# made here with python3 on first use, so a fresh machine needs nothing installed by hand.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
die() { echo "build_wheel.sh: error: $*" >&2; exit 1; }

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$ROOT/.venv/bin/python" ]]; then
        PYTHON=$ROOT/.venv/bin/python
    else
        PYTHON=$ROOT/.venv-build/bin/python
        if [[ ! -f "$ROOT/.venv-build/.stamp" ]]; then
            echo "==> no .venv here: making the build environment .venv-build (setuptools, wheel, packaging)"
            python3 -m venv --clear "$ROOT/.venv-build" \
                || die "python3 -m venv failed: install Python 3.10+ with its venv module (Debian: apt-get install python3-venv)"
            "$PYTHON" -m pip install -q --disable-pip-version-check setuptools wheel packaging \
                || die "pip install setuptools wheel packaging into $ROOT/.venv-build failed (log above)"
            touch "$ROOT/.venv-build/.stamp"
        fi
    fi
fi
command -v "$PYTHON" >/dev/null 2>&1 || die "PYTHON=$PYTHON is not an executable interpreter"
exec "$PYTHON" "$ROOT/scripts/build_wheel.py" "$@"
