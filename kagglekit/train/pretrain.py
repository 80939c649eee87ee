"""Further MLM pretraining on the competition's own text, with n-gram span masking, resumable.

Continues a local backbone (or builds one from a config and tokenizer) on every text of the given
files; every `save_every` steps writes ``checkpoint-{step}/``, a folder ``kagglekit train`` takes as
its backbone, and ``last/`` at the end.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import time
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml

from kagglekit._io import check_header, header_fields, read_text, read_yaml
from kagglekit.config_pretrain import PretrainConfig, load_pretrain_config  # noqa: F401 (re-exported: the config lives there)
from kagglekit.models.nezha import NezhaConfig, NezhaForMaskedLM  # NezhaForMaskedLM was defined here: still importable

STATE_FILE = "resume/state.pt"
LOG_FILE = "loss_log.csv"
CURVE_FILE = "loss_curve.png"
META_FILE = "pretrain.json"
DEFAULT_MAX_LEN = 128  # max_len=0: this many tokens, or the model's positions if fewer
_VOCAB_FILES = ("spm.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")


# --- corpus and model ---


def read_corpus(cfg: PretrainConfig) -> list[str]:
    """Every non-empty text of `cfg.columns` in `cfg.files`, stripped, deduplicated in first-seen order."""
    import csv

    texts: dict[str, None] = {}
    for name in cfg.files:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"pretrain config key 'files': file not found: {path}. Check the path, or attach the dataset.")
        sep = cfg.sep or ("\t" if path.suffix.lower() in (".tsv", ".txt") else ",")
        options = {"quoting": csv.QUOTE_NONE} if sep == "\t" else {}  # raw text files: a quote is just a character
        what = "pretrain config key 'files'"
        text = read_text(path, what=what)  # UTF-8, a BOM dropped
        if cfg.header:  # a column named twice, or another separator, is refused as for any CSV the kit reads
            check_header(header_fields(text, sep, **options), what=what, path=path, sep=sep, sep_key="sep")
        try:
            frame = pd.read_csv(io.StringIO(text), sep=sep, header=0 if cfg.header else None, dtype=str, keep_default_na=False,
                                **options)
        except pd.errors.EmptyDataError:
            frame = pd.DataFrame()
        frame.columns = [str(c) for c in frame.columns]
        missing = [c for c in cfg.columns if c not in frame.columns]
        if missing:
            raise ValueError(f"pretrain config key 'columns': {path} has no column {missing}; its columns are {list(frame.columns)}"
                             f"{' (no header: 0-based positions)' if not cfg.header else ''}. Fix 'columns', 'header' or 'sep'.")
        for column in cfg.columns:
            texts.update(dict.fromkeys(t.strip() for t in frame[column] if t.strip()))
    if not texts:
        raise ValueError(f"pretrain corpus is empty: the columns {cfg.columns} of {cfg.files} hold no text. Check 'columns' and 'files'.")
    return list(texts)


def _scratch_config_dict(cfg: PretrainConfig) -> dict:
    value = cfg.from_scratch_config
    if isinstance(value, (str, os.PathLike)):
        path = Path(value)
        if not path.is_file():
            raise FileNotFoundError(f"pretrain config key 'from_scratch_config': file not found: {path}. "
                                    "Give a config dict or a JSON/YAML file.")
        value = read_yaml(path, what="pretrain config key 'from_scratch_config' file")  # YAML reads JSON too
    if not isinstance(value, Mapping) or not value.get("model_type"):
        raise ValueError("pretrain config key 'from_scratch_config' needs a 'model_type' (bert, nezha, ...), e.g. "
                         "{model_type: nezha, hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12}.")
    return dict(value)


def build_mlm_model(cfg: PretrainConfig):
    """The MLM model and tokenizer: from `cfg.backbone`, or a fresh model from `cfg.from_scratch_config`."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

    from kagglekit.models.nezha import is_nezha_config, register_nezha
    from kagglekit.models.pair_model import fp32_load_options

    source = Path(cfg.backbone or cfg.tokenizer_dir)
    key = "backbone" if cfg.backbone else "tokenizer_dir"
    if not source.is_dir():
        raise FileNotFoundError(f"pretrain config key {key!r}: folder not found: {source}. Give a local folder (hubs are unreachable).")
    register_nezha()  # transformers 5: AutoTokenizer reads "nezha" folders (4.x: no-op)
    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    if tokenizer.mask_token_id is None:
        raise ValueError(f"pretrain config key {key!r}: the tokenizer in {source} has no mask token; "
                         "add one (e.g. '[MASK]') and save it again.")
    if cfg.backbone:
        if not (source / "config.json").is_file():
            raise FileNotFoundError(f"pretrain config key 'backbone': {source} has no config.json: point it at the model folder itself.")
        options = fp32_load_options()  # an fp16 checkpoint trains with fp32 master weights
        if is_nezha_config(source):
            return NezhaForMaskedLM.from_pretrained(str(source), local_files_only=True, **options), tokenizer
        return AutoModelForMaskedLM.from_pretrained(str(source), local_files_only=True, **options), tokenizer
    options = _scratch_config_dict(cfg)
    model_type = options.pop("model_type")
    options.setdefault("vocab_size", len(tokenizer))
    options.setdefault("pad_token_id", tokenizer.pad_token_id)
    if options["vocab_size"] < len(tokenizer):
        raise ValueError(f"pretrain config key 'from_scratch_config': vocab_size={options['vocab_size']} is smaller than the tokenizer's "
                         f"{len(tokenizer)} tokens; leave vocab_size out to use the tokenizer's size.")
    if model_type == NezhaConfig.model_type:
        return NezhaForMaskedLM(NezhaConfig(**options)), tokenizer
    try:
        config = AutoConfig.for_model(model_type, **options)
    except ValueError as err:
        raise ValueError(f"pretrain config key 'from_scratch_config': model_type={model_type!r}: {err}") from None
    return AutoModelForMaskedLM.from_config(config), tokenizer


def mlm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the predicted positions, in fp32; 0 (not NaN) when a batch predicts none."""
    total = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100, reduction="sum")  # logits (B, T, V)
    return total / labels.ne(-100).sum().clamp(min=1)


def masked_lm_loss(output, labels: torch.Tensor) -> torch.Tensor:
    """`mlm_loss` on a masked-LM model's output: the ``loss_fn`` `kagglekit.train.loop.train_step` calls with it."""
    return mlm_loss(output.logits, labels)  # logits (B, T, V), labels (B, T) with -100 where not predicted


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The corpus order of pass `epoch`: a function of (seed, epoch) only, so a resumed run draws it again."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def batch_rows(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Corpus rows of (0-based) optimizer step `step`: consecutive slices of each pass's order; the last
    slice of a pass may be shorter."""
    per_epoch = math.ceil(n / batch_size)
    epoch, index = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch)[index * batch_size : (index + 1) * batch_size]


# --- the run ---


def save_checkpoint(model, tokenizer, folder: str | os.PathLike, *, source: Path | None, meta: dict) -> Path:
    """Write a model folder atomically: config, safetensors weights (encoder and MLM head), tokenizer,
    `META_FILE`. ``AutoModel``/the kit's NeZha load the encoder from it (the MLM head is skipped, the
    pooler, which MLM does not train, is initialised fresh), so ``kagglekit train`` takes it as backbone."""
    from kagglekit._io import atomic_dir, write_json

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        for name in _VOCAB_FILES:  # vocabulary files some tokenizers do not write back (4.x, other tools read them)
            if source is not None and (source / name).is_file() and not (tmp / name).exists():
                shutil.copyfile(source / name, tmp / name)
        write_json(tmp / META_FILE, meta)
    return folder


def _write_log(output_dir: Path, rows: list[dict]) -> None:
    from kagglekit._io import write_csv
    from kagglekit.train.curves import plot_curve

    frame = pd.DataFrame(rows, columns=["step", "loss", "lr"])
    write_csv(output_dir / LOG_FILE, frame)
    plot_curve(frame.assign(score=float("nan")), output_dir / CURVE_FILE, metric="", title="MLM pretraining loss")


def _prune_checkpoints(output_dir: Path, keep: int) -> None:
    if keep <= 0:
        return
    found = sorted((int(p.name.split("-")[1]), p) for p in output_dir.glob("checkpoint-*") if p.name.split("-")[1].isdigit())
    for _, path in found[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def run_pretraining(cfg: PretrainConfig, *, resume: bool = False) -> dict:
    """Pretrain with masked language modelling for `cfg.steps` optimizer steps.

    One step: mask a batch (`NgramMasker`, drawn from a generator seeded by (seed, step)), then
    fine-tuning's `kagglekit.train.loop.train_step` with the MLM loss (autocast forward → scaled
    backward → unscale → clip → optimizer step → scaler update → zero grad → scheduler step, linear
    warmup and decay). Every `cfg.save_every` steps and at the end it writes ``checkpoint-{step}/``
    and the resumable state ``resume/state.pt`` (a `kagglekit.train.fold_state.FoldState`: weights,
    optimizer, scheduler, scaler, step, RNGs, loss log); the data order and masks depend only on the
    seed and the step, so a resumed run equals an uninterrupted one. At the end ``last/`` holds the
    final model. ``nonfinite_limit`` non-finite losses in a row raise `TrainingDiverged`, as in
    fine-tuning (a skipped step's scheduler does not advance, as there).

    Args:
        cfg: the settings (validated here).
        resume: continue from ``output_dir/resume/state.pt`` when there is one.

    Returns:
        ``{"steps", "final_loss" (mean of the last 10 losses), "last_dir", "checkpoints", "loss_log",
        "loss_curve", "texts", "seconds"}``.

    Example:
        >>> cfg = PretrainConfig(files=["train.csv"], columns=["anchor", "target"], backbone="models/deberta-v3-base",
        ...                      output_dir="runs/mlm", steps=2000, save_every=500)
        >>> run_pretraining(cfg)["last_dir"]  # then train with --set backbone=runs/mlm/last
        'runs/mlm/last'
    """
    from tqdm import tqdm

    from kagglekit._io import write_text
    from kagglekit.data.masking import NgramMasker
    from kagglekit.kaggle import amp_dtype as to_amp_dtype, resolve_device, resolve_precision
    from kagglekit.train.components import Components
    from kagglekit.train.fold_state import FoldState
    from kagglekit.train.loop import TrainingDiverged, _to_device, seed_everything, train_step
    from kagglekit.train.optim import build_optimizer, build_scheduler

    start = time.time()
    cfg.validate()
    output_dir = Path(cfg.output_dir)
    texts = read_corpus(cfg)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    model, tokenizer = build_mlm_model(cfg)
    from kagglekit.models.backbone_check import check_max_len, position_limit

    limit = position_limit({name: tuple(param.shape) for name, param in model.named_parameters()}, model.config)
    if cfg.max_len:
        check_max_len(cfg.max_len, limit, Path(cfg.backbone) if cfg.backbone else "from_scratch_config",
                      "backbone" if cfg.backbone else "the model of")
    max_len = cfg.max_len or min(DEFAULT_MAX_LEN, limit or DEFAULT_MAX_LEN)
    model.to(device).train()
    rows = tokenizer(texts, truncation=True, max_length=max_len)["input_ids"]  # list of id lists, with special tokens
    masker = NgramMasker(tokenizer, mask_rate=cfg.mask_rate, max_ngram=cfg.max_ngram, ngram_probs=cfg.ngram_probs or None,
                         mask_token_ratio=cfg.mask_token_ratio, random_token_ratio=cfg.random_token_ratio,
                         whole_word=cfg.whole_word, seed=cfg.seed)
    optimizer = build_optimizer(model, lr=cfg.lr, head_lr=0.0, weight_decay=cfg.weight_decay)
    parts = Components(model, optimizer, build_scheduler(optimizer, "linear", total_steps=cfg.steps, warmup_ratio=cfg.warmup_ratio),
                       torch.amp.GradScaler(device.type, enabled=precision == "fp16"), amp_dtype=to_amp_dtype(precision),
                       tokenizer=tokenizer)
    state = FoldState(parts)  # no batch-order generator: batches and masks are functions of (seed, step)
    state_file = output_dir / STATE_FILE
    if resume and state_file.is_file():
        saved = state.load(state_file)
        changed = [k for k, v in cfg.to_dict().items() if k != "output_dir" and saved["config"].get(k) != v]
        if changed:
            warnings.warn(f"resuming {output_dir} with changed settings {changed}: the result will differ from an uninterrupted run.",
                          stacklevel=2)
        print(f"pretrain: resumed {output_dir} at step {state.step}/{cfg.steps}", flush=True)
    elif resume:
        print(f"pretrain: no resumable state at {state_file}; starting at step 0", flush=True)
    write_text(output_dir / "pretrain_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    nonfinite_limit = cfg.nonfinite_limit

    progress = tqdm(total=cfg.steps, initial=state.step, desc="pretrain", dynamic_ncols=True)
    while state.step < cfg.steps:
        picked = batch_rows(len(rows), cfg.batch_size, cfg.seed, state.step)
        batch = masker([rows[i] for i in picked], rng=np.random.default_rng([cfg.seed, state.step, 1]))  # masks: a function of the step
        lr = parts.scheduler.get_last_lr()[0]  # the rate this step uses
        value = train_step(model, _to_device(batch, device), loss_fn=masked_lm_loss, optimizer=parts.optimizer,
                           scheduler=parts.scheduler, scaler=parts.scaler, amp_dtype=parts.amp_dtype, max_grad_norm=cfg.max_grad_norm)
        if state.count_loss(value) >= nonfinite_limit:
            raise TrainingDiverged(
                f"pretraining: the training loss was NaN or infinite for {state.nonfinite} steps in a row (step {state.step + 1}). "
                f"Try a lower lr (now {cfg.lr:g}), precision=fp32 (or bf16 on an A100/H100), max_grad_norm=1. The last checkpoint "
                f"is kept in {output_dir}.")
        state.step += 1
        state.log.append({"step": state.step, "loss": value, "lr": lr})
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        if state.step == cfg.steps or (cfg.save_every and state.step % cfg.save_every == 0):
            _save_model(state, output_dir / f"checkpoint-{state.step}", cfg, texts)
            _prune_checkpoints(output_dir, cfg.keep_checkpoints)
            state.save(state_file, config=cfg.to_dict())
            _write_log(output_dir, state.log)
    progress.close()
    _save_model(state, output_dir / "last", cfg, texts)
    _write_log(output_dir, state.log)
    losses = [row["loss"] for row in state.log[-10:]]
    return {
        "steps": state.step, "final_loss": float(np.mean(losses)) if losses else float("nan"), "last_dir": str(output_dir / "last"),
        "checkpoints": sorted(str(p) for p in output_dir.glob("checkpoint-*") if p.is_dir()),
        "loss_log": str(output_dir / LOG_FILE), "loss_curve": str(output_dir / CURVE_FILE), "texts": len(texts),
        "seconds": time.time() - start,
    }


def _save_model(state, folder: Path, cfg: PretrainConfig, texts: list[str]) -> None:
    meta = {"step": state.step, "loss": state.log[-1]["loss"] if state.log else None, "texts": len(texts), "config": cfg.to_dict()}
    save_checkpoint(state.parts.model, state.parts.tokenizer, folder, source=Path(cfg.backbone or cfg.tokenizer_dir), meta=meta)
