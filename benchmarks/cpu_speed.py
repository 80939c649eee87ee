"""CPU training speed: fp32 against bf16 autocast, each with and without frozen embeddings, side by side.

All four variants train copies of one all-MiniLM-L6-v2 initialisation with the kit's `train_step` (mean head,
BCE, AdamW, clipping at 1.0) on the same length-bucketed batches of real USPPPM pairs, in one process: a
warm-up, then rounds in which each variant trains the same number of batches, the order rotating each
round. On a CPU with bf16 in hardware (AVX512-BF16: AMD Zen 4, Intel Cooper Lake; AMX: Sapphire Rapids)
`precision=bf16` is autocast; frozen embeddings (`freeze_embeddings=true`) skip the gradient and the AdamW
update of the 30,522 x 384 word table, the largest single tensor of a small model.

    python benchmarks/cpu_speed.py --threads 2            # all-MiniLM-L6-v2, the context code as text, ~3 min
    python benchmarks/cpu_speed.py --threads 2 --titles   # the pair with CPC section and class titles (longer rows)
    python benchmarks/cpu_speed.py --quick                # a tiny random bert: checks the script in ~30 s

Last line: ``cpu_speed: bf16 X freeze X freeze+bf16 X`` (each variant's samples/s over fp32's, the median
of the rounds' ratios).
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import Variant, describe_lengths, pick_backbone  # noqa: E402


def uspppm_pairs(titles: bool, max_rows: int):
    """The kit's USPPPM pairs from the real file: target with the context code, or with its CPC titles."""
    from kagglekit.data.cpc import read_cpc_titles
    from kagglekit.data.recipes import UspppmRecipe
    from train_throughput import data_root

    folder = data_root() / "uspppm"
    if not (folder / "train.csv").is_file():
        raise SystemExit(f"no USPPPM data at {folder}: set KAGGLEKIT_DATA to the folder holding uspppm/")
    context = {"context_titles": read_cpc_titles(folder / "cpc_titles_202202")} if titles else {}
    frame = UspppmRecipe().read_train(folder / "train.csv", context, max_rows=max_rows)
    return frame["text_a"].tolist(), frame["text_b"].tolist(), frame["label"].to_numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random bert: checks the script")
    parser.add_argument("--titles", action="store_true", help="pairs with CPC titles (default: the context code as text)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steady on a busy machine)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=8, help="batches per variant per round")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-len", type=int, default=64)
    parser.add_argument("--rows", type=int, default=0, help="use the first N rows (0: all)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from kagglekit.data.batching import PairEncodings, bucketed_batches
    from kagglekit.kaggle import cpu_bf16, set_offline_env
    from kagglekit.models.pair_model import build_model
    from kagglekit.models.surgery import freeze

    if not cpu_bf16():
        raise SystemExit("this CPU has no bf16 in hardware (AVX512-BF16 or AMX): bf16 would be emulated, slower than fp32; "
                         "nothing to measure here")
    set_offline_env()
    device = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        backbone, model_name = pick_backbone(args.quick, None, Path(tmp))
        torch.manual_seed(0)
        model, tokenizer = build_model(backbone, head="mean", dropout=0.1)
    text_a, text_b, labels = uspppm_pairs(args.titles, args.rows or (4000 if args.quick else 0))
    enc = PairEncodings(tokenizer, text_a, text_b, args.max_len, labels)
    print(f"model: {model_name} on {args.threads} CPU thread(s); batch {args.batch_size}, {len(enc)} USPPPM pairs "
          f"({'with CPC titles' if args.titles else 'context code as text'}); {args.rounds} rounds x {args.steps} batches")
    print(describe_lengths(enc.lengths, args.max_len))

    variants, dtypes = [], {}
    for name, frozen, dtype in (("fp32", False, None), ("bf16", False, torch.bfloat16),
                                ("freeze", True, None), ("freeze+bf16", True, torch.bfloat16)):
        copy_ = copy.deepcopy(model)
        if frozen:
            freeze(copy_.backbone, embeddings=True)
        rng = np.random.default_rng(0)  # every variant sees the same batches in the same order
        variants.append(Variant(name, copy_, lambda rng=rng: bucketed_batches(enc.lengths, args.batch_size, rng), enc.collate, device))
        dtypes[name] = dtype
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for variant in variants:
        variant.run(2, scaler=scaler, amp_dtype=dtypes[variant.name], record=False)
    ratios: dict[str, list[float]] = {v.name: [] for v in variants[1:]}
    for round_ in range(args.rounds):
        order = variants[round_ % 4:] + variants[:round_ % 4]
        rate = {v.name: v.run(args.steps, scaler=scaler, amp_dtype=dtypes[v.name]) for v in order}
        for name in ratios:
            ratios[name].append(rate[name] / rate["fp32"])
        print(f"round {round_ + 1}: " + ", ".join(f"{v.name} {rate[v.name]:.1f}" for v in variants) + " samples/s", flush=True)
    for v in variants:
        print(f"{v.name:12s} {v.rows / v.seconds:7.1f} samples/s")
    print("cpu_speed: " + " ".join(f"{name} {np.median(r):.2f}" for name, r in ratios.items()))


if __name__ == "__main__":
    main()
