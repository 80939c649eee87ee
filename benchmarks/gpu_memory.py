"""Peak GPU memory and step time of a DeBERTa-v3-large-sized pair model, gradient checkpointing off vs on.

The question it answers: does a deberta-v3-large fine-tune at batch 8, max_len 192, fp16 AMP fit a
16 GB Kaggle T4, and what does gradient checkpointing buy? The model has random weights built from
deberta-v3-large's config (no download): memory and time do not depend on the weight values. Each
setting runs the kit's own `train_step` (autocast → scaled backward → unscale → clip → step) with
AdamW, on full-length rows (the worst case), in one process, side by side.

    python benchmarks/gpu_memory.py            # on a CUDA machine: the real sizes
    python benchmarks/gpu_memory.py --quick    # a 2-layer model on CPU: checks the script, times only

Last line: ``gpu_memory: off X.XX GiB Y.YYs on X.XX GiB Y.YYs`` (peak allocated memory and seconds per step).
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

# deberta-v3-large, as in its config.json (hidden 1024, 24 layers, 128k vocabulary)
LARGE = dict(
    vocab_size=128100, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
    max_position_embeddings=512, relative_attention=True, position_buckets=256, max_relative_positions=-1,
    pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm", share_att_key=True,
    type_vocab_size=0, layer_norm_eps=1e-7, hidden_act="gelu",
)
QUICK = {**LARGE, "vocab_size": 1000, "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}


def build(config_kwargs: dict, checkpointing: bool, device: torch.device):
    from transformers import AutoModel, DebertaV2Config

    from kagglekit.models.pair_model import PairModel

    torch.manual_seed(0)
    backbone = AutoModel.from_config(DebertaV2Config(**config_kwargs))
    if checkpointing:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return PairModel(backbone, head="mean").to(device)


def measure(config_kwargs: dict, *, checkpointing: bool, batch: int, max_len: int, steps: int, device: torch.device) -> tuple[float, float]:
    """(peak GiB allocated, seconds per step) for one setting; peak is NaN on CPU."""
    from transformers import get_constant_schedule

    from kagglekit.kaggle import resolve_precision, amp_dtype
    from kagglekit.losses import get_loss
    from kagglekit.train.optim import build_optimizer
    from kagglekit.train.loop import train_step

    model = build(config_kwargs, checkpointing, device)
    model.train()
    precision = resolve_precision("fp16" if device.type == "cuda" else "fp32", device)
    optimizer = build_optimizer(model, lr=2e-5, head_lr=1e-3, weight_decay=0.01)
    scheduler = get_constant_schedule(optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    ids = torch.randint(5, config_kwargs["vocab_size"], (batch, max_len), device=device)

    def step():
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.rand(batch, device=device)}
        train_step(model, inputs, loss_fn=get_loss("bce").fn, optimizer=optimizer, scheduler=scheduler,
                   scaler=scaler, amp_dtype=amp_dtype(precision), max_grad_norm=1.0)

    step()  # warm-up: allocator, optimizer state, kernels
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    del model, optimizer, scaler
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2-layer model on CPU: checks the script in seconds")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--max-len", type=int, default=192)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    device = torch.device("cpu" if args.quick or not torch.cuda.is_available() else "cuda")
    config = QUICK if args.quick else LARGE
    if device.type == "cpu" and not args.quick:
        print("no CUDA device: peak memory is not measured on CPU; run on a GPU, or pass --quick to check the script")
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "cpu"
    print(f"device {name}; deberta-v3-large-sized: {config is LARGE}; batch {args.batch} x max_len {args.max_len}; {args.steps} timed steps")
    results = {}
    for checkpointing in (False, True):
        peak, seconds = measure(config, checkpointing=checkpointing, batch=args.batch, max_len=args.max_len, steps=args.steps, device=device)
        results["on" if checkpointing else "off"] = (peak, seconds)
        print(f"gradient checkpointing {'on ' if checkpointing else 'off'}: peak {peak:.2f} GiB, {seconds:.3f} s/step", flush=True)
    print("gpu_memory: " + " ".join(f"{k} {p:.2f} GiB {s:.3f}s" for k, (p, s) in results.items()))


if __name__ == "__main__":
    main()
