"""Regenerate datasets/sample/, the synthetic USPPPM-style data set used by tests and the demo.

Usage: python scripts/make_sample_data.py [--out datasets/sample] [--seed 0]
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Lets the script run from a plain checkout, before `pip install -e .`.
sys.path.insert(0, str(ROOT))

from kagglekit.testing import write_uspppm_sample  # noqa: E402


def main(argv=None) -> int:
    """Write train.csv, test.csv, sample_submission.csv and cpc_titles/ into --out.

    Args:
        argv: Command-line arguments; None reads sys.argv.

    Returns:
        Process exit status (0).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "datasets" / "sample",
                        help="output folder (default: datasets/sample in this checkout)")
    parser.add_argument("--seed", type=int, default=0,
                        help="generator seed; tests expect the committed files to come from seed 0")
    args = parser.parse_args(argv)
    out = write_uspppm_sample(args.out, seed=args.seed)
    for path in sorted(p for p in out.rglob("*") if p.is_file() and p.name != "README.md"):
        print(path.relative_to(out), path.stat().st_size, "bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
