"""AFQMC (Ant Financial question matching, 0/1 labels): dev AUC of a small BERT trained from scratch,
with and without n-gram MLM pretraining on the AFQMC texts, and with and without closure augmentation.

The four runs share everything else: a character vocabulary built from the texts (BERT's basic
tokenizer splits Chinese into characters), one random initialisation (`build_id_model`, seed 0), the
pairs recipe with swap augmentation, fold 0 of 5 on train.csv for early stopping, then `kagglekit
predict` on dev.csv, scored by ROC AUC against dev's labels. Pretraining reads the texts of train.csv
and test.csv (not dev.csv: its labels score the comparison) with 2-gram span masking, and starts from
the same initialisation. Budget: 30 minutes of CPU time for the whole comparison (process CPU time,
both cores counted, printed per stage).

    python benchmarks/afqmc.py            # tiny BERT (64 wide, 2 layers), one CPU thread, within 30 CPU-min
    python benchmarks/afqmc.py --quick    # tiny model, 2,000 rows, 60 pretraining steps: checks the script

Last line: ``afqmc_auc: scratch X.XXXX closure X.XXXX pretrained X.XXXX pretrained+closure X.XXXX``.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import data_root  # noqa: E402  (one rule for where the real data sets are)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_char_vocab(files: list[Path], out: Path, *, min_freq: int = 2) -> Path:
    """A BERT-style tokenizer folder over every character seen `min_freq` times in the files' texts.

    BERT's normalizer puts spaces around Chinese characters, so the raw text splits into characters;
    pairs encode as ``[CLS] a [SEP] b [SEP]`` with token types 0 / 1, as `build_id_vocab`'s do.
    """
    import pandas as pd
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from kagglekit.models.ids import _portable_tokenizer_config

    counts = collections.Counter()
    for path in files:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        for column in ("sentence1", "sentence2"):
            for text in frame[column]:
                counts.update(text.lower())
    chars = sorted(c for c, n in counts.items() if n >= min_freq and not c.isspace())
    vocab = {token: i for i, token in enumerate(SPECIALS + chars)}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                        sep_token="[SEP]", mask_token="[MASK]")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    _portable_tokenizer_config(out)
    return out


class CpuClock:
    """Process CPU time (all threads) per named stage."""

    def __init__(self):
        self.stages: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start, wall = time.process_time(), time.time()
        result = fn(*args, **kwargs)
        self.stages[name] = time.process_time() - start
        print(f"[{name}] {self.stages[name] / 60:.1f} CPU-min, {(time.time() - wall) / 60:.1f} min wall", flush=True)
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 2,000 rows, 60 pretraining steps")
    parser.add_argument("--size", default="tiny", choices=["tiny", "small"], help="model size: tiny (64 wide, 2 layers; default) or small (256, 4)")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps (default 800; quick 60)")
    parser.add_argument("--epochs", type=int, default=None, help="fine-tuning epochs (default 2; quick 1)")
    parser.add_argument("--max-rows", type=int, default=None, help="training rows (default all 34,334; quick 2,000)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: CPU time = wall time, steady beside other jobs)")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = parser.parse_args()
    size = args.size
    steps = args.steps or (60 if args.quick else 800)
    epochs = args.epochs or (1 if args.quick else 2)
    max_rows = args.max_rows if args.max_rows is not None else (2000 if args.quick else 0)

    import torch

    torch.set_num_threads(args.threads)
    from kagglekit.config import load_config
    from kagglekit.models.ids import build_id_model, id_model_config
    from kagglekit.kaggle import set_offline_env
    from kagglekit.metrics import roc_auc
    from kagglekit.infer.predict import predict
    from kagglekit.train.pretrain import PretrainConfig, run_pretraining
    from kagglekit.train import train_folds

    set_offline_env()
    folder = data_root() / "afqmc"
    train, dev, test = folder / "train.csv", folder / "dev.csv", folder / "test.csv"
    if not train.is_file():
        raise SystemExit(f"AFQMC not found at {folder}: set KAGGLEKIT_DATA to the folder holding afqmc/.")
    clock = CpuClock()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        vocab = clock.run("vocab", build_char_vocab, [train, dev, test], work / "vocab")
        scratch = clock.run("init", build_id_model, vocab, work / "scratch", arch="bert", size=size, seed=0)
        config = id_model_config(vocab, arch="bert", size=size)
        print(f"vocabulary {config['vocab_size']} characters; bert {size}: hidden {config['hidden_size']}, "
              f"{config['num_hidden_layers']} layers; {steps} pretraining steps; {epochs} fine-tuning epochs", flush=True)
        result = clock.run("pretrain", run_pretraining, PretrainConfig(
            files=[str(train), str(test)], columns=["sentence1", "sentence2"], backbone=str(scratch),
            max_len=64, max_ngram=2, mask_rate=0.15, steps=steps, batch_size=128, lr=1e-3, warmup_ratio=0.06,
            save_every=0, output_dir=str(work / "pretrain"), seed=0,
        ))
        print(f"pretraining loss: {result['first_loss']:.3f} -> {result['final_loss']:.3f}" if "first_loss" in result
              else f"pretraining final loss {result['final_loss']:.3f}", flush=True)
        dev_labels = __import__("pandas").read_csv(dev)["label"].to_numpy()
        scores = {}
        for name, backbone, closure in (("scratch", scratch, False), ("closure", scratch, True),
                                        ("pretrained", result["last_dir"], False), ("pretrained+closure", result["last_dir"], True)):
            out = work / f"run-{name.replace('+', '-')}"
            cfg = load_config(ROOT / "configs" / "afqmc.yaml", [
                f"train_csv={train}", f"test_csv={test}", f"backbone={backbone}", f"output_dir={out}",
                f"closure={str(closure).lower()}", f"closure_ratio={0.5 if closure else 0}", "cooccurrence=false",
                f"epochs={epochs}", "lr=5e-4", "head_lr=5e-4", "batch_size=64", "max_len=64", f"max_rows={max_rows}", "seed=0",
            ])
            card = clock.run(f"train {name}", train_folds, cfg, folds=0)
            sub = clock.run(f"predict {name}", predict, [out], dev)
            scores[name] = roc_auc(dev_labels, sub.iloc[:, 1].to_numpy())
            added = card["folds"]["0"]["augmentation"]
            print(f"{name}: fold 0 valid AUC {card['folds']['0']['score']:.4f}, dev AUC {scores[name]:.4f}; augmentation {added}", flush=True)
    total = sum(clock.stages.values())
    print(json.dumps({k: round(v / 60, 2) for k, v in clock.stages.items()}))
    print(f"total: {total / 60:.1f} CPU-min (budget 30)")
    print("afqmc_auc: " + " ".join(f"{name} {score:.4f}" for name, score in scores.items()))


if __name__ == "__main__":
    main()
