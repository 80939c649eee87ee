"""Further MLM pretraining on the competition's own text, with n-gram span masking, resumable.

Continues a local backbone (or builds one from a config and tokenizer) on every text of the given
files; every `save_every` steps writes ``checkpoint-{step}/``, a folder ``kagglekit train`` takes as
its backbone, and ``last/`` at the end.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from transformers import PreTrainedModel
from transformers.activations import ACT2FN

from kagglekit.models.nezha import NezhaConfig, NezhaModel

STATE_FILE = "resume/state.pt"
LOG_FILE = "loss_log.csv"
CURVE_FILE = "loss_curve.png"
META_FILE = "pretrain.json"
_VOCAB_FILES = ("spm.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")
_NONFINITE_LIMIT = 20  # stop after this many NaN/inf losses in a row


@dataclass
class PretrainConfig:
    """Everything an MLM pretraining run needs. Paths are local: nothing is fetched from a hub."""

    # --- corpus ---
    files: list = field(default_factory=list)  # CSV/TSV files; the text of all of them, deduplicated, is the corpus
    columns: list = field(default_factory=list)  # text columns to read (without a header: 0-based positions, "0", "1")
    sep: str = ""  # field separator; empty: tab for .tsv/.txt, comma otherwise
    header: bool = True  # the files have a header row (the GAIIC id files have none)
    # --- model: a backbone to continue, or a model built from scratch ---
    backbone: str = ""  # local model folder to continue pretraining
    from_scratch_config: Any = field(default_factory=dict)  # model config dict with model_type (bert, nezha), or a JSON/YAML file
    tokenizer_dir: str = ""  # from scratch: the tokenizer folder (vocab_size defaults to its size)
    max_len: int = 128  # tokens per text after truncation; batches are padded to their longest row
    # --- masking (kagglekit.data.masking.NgramMasker) ---
    mask_rate: float = 0.15  # share of real tokens predicted
    max_ngram: int = 3  # longest masked span (3: ALBERT/ERNIE-style n-grams; 1: plain BERT masking)
    ngram_probs: list = field(default_factory=list)  # weight of each span length 1..max_ngram; empty: 1/n
    mask_token_ratio: float = 0.8  # chosen tokens that become [MASK]
    random_token_ratio: float = 0.1  # chosen tokens that become a random token; the rest stay
    whole_word: bool = False  # a span unit is a whole word ("##" / "▁" pieces), not a token
    # --- optimisation ---
    output_dir: str = "runs/pretrain"  # checkpoint-{step}/, last/, loss_log.csv, loss_curve.png, resume/
    steps: int = 1000  # total optimizer steps (the corpus is cycled through, reshuffled each pass)
    batch_size: int = 32  # texts per step
    lr: float = 5e-5  # peak learning rate
    weight_decay: float = 0.01  # not applied to biases and normalisation weights
    warmup_ratio: float = 0.06  # share of the steps spent warming up, then linear decay to 0
    max_grad_norm: float = 1.0  # clip the unscaled gradient norm (0: no clipping)
    save_every: int = 500  # write checkpoint-{step}/ and the resumable state every N steps (0: at the end only)
    keep_checkpoints: int = 0  # keep only the newest N checkpoint-{step}/ folders (0: all)
    seed: int = 42  # model init, data order, masking, dropout
    precision: str = "auto"  # auto | fp32 | fp16 | bf16 (auto: fp16 + GradScaler on T4, bf16 where supported, fp32 on CPU)
    device: str = "auto"  # auto | cpu | cuda

    def validate(self) -> "PretrainConfig":
        """Check values; raise ValueError naming the key, the bad value and the fix."""
        if not self.files:
            raise ValueError("pretrain config key 'files' is empty: list the CSV/TSV files whose text is the corpus, "
                             "e.g. files: [data/train.tsv, data/test.tsv].")
        if not self.columns:
            raise ValueError("pretrain config key 'columns' is empty: name the text columns to read, e.g. columns: [anchor, target] "
                             "(files without a header: positions, columns: ['0', '1']).")
        if self.backbone and (self.from_scratch_config or self.tokenizer_dir):
            raise ValueError("pretrain config: set either 'backbone' (continue a model) or 'from_scratch_config' + 'tokenizer_dir' "
                             "(a new model), not both.")
        if not self.backbone and not (self.from_scratch_config and self.tokenizer_dir):
            missing = "from_scratch_config" if not self.from_scratch_config else "tokenizer_dir"
            raise ValueError("pretrain config: no model. Set 'backbone' to a local model folder, or 'from_scratch_config' "
                             f"(a config dict with model_type) and 'tokenizer_dir' (a tokenizer folder); {missing!r} is missing.")
        for key, allowed in (("precision", ("auto", "fp32", "fp16", "bf16")), ("device", ("auto", "cpu", "cuda"))):
            if getattr(self, key) not in allowed:
                raise ValueError(f"pretrain config key {key!r}: unknown value {getattr(self, key)!r}; valid values are {list(allowed)}.")
        for key in ("steps", "batch_size", "lr", "max_ngram"):
            if not getattr(self, key) > 0:
                raise ValueError(f"pretrain config key {key!r} must be > 0, got {getattr(self, key)!r}.")
        for key in ("save_every", "keep_checkpoints", "weight_decay", "max_grad_norm"):
            if getattr(self, key) < 0:
                raise ValueError(f"pretrain config key {key!r} must be >= 0, got {getattr(self, key)!r}.")
        if self.max_len < 8:
            raise ValueError(f"pretrain config key 'max_len' must be at least 8 tokens, got {self.max_len}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"pretrain config key 'warmup_ratio' must be in [0, 1), got {self.warmup_ratio}.")
        from kagglekit.data.masking import check_masking

        check_masking(mask_rate=self.mask_rate, max_ngram=self.max_ngram, ngram_probs=self.ngram_probs or None,
                      mask_token_ratio=self.mask_token_ratio, random_token_ratio=self.random_token_ratio)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _unknown_key(key: str, source: str) -> ValueError:
    names = [f.name for f in fields(PretrainConfig)]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {', '.join(names)}."
    return ValueError(f"unknown pretrain config key {key!r} in {source}.{hint}")


def _coerce(key: str, value: Any, source: str) -> Any:
    """Convert `value` (from YAML or a --set string) to the type of field `key`."""
    default = getattr(PretrainConfig(), key)
    if key == "from_scratch_config":
        if isinstance(value, Mapping):
            return dict(value)
        text = str(value).strip()
        if text.startswith("{"):
            try:
                return json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"pretrain config key 'from_scratch_config' in {source}: not valid JSON ({err}).") from None
        return text  # a file path, read when the run starts
    if isinstance(default, list):
        items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
        items = [v.strip() if isinstance(v, str) else v for v in items]
        if key == "ngram_probs":
            try:
                return [float(v) for v in items]
            except (TypeError, ValueError):
                raise ValueError(f"pretrain config key 'ngram_probs' in {source}: expected numbers, got {value!r}.") from None
        return [str(v) for v in items]
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = "" if value is None else str(value).strip()
    if kind is str:
        return text
    try:
        if kind is bool and text.lower() in _BOOLS:
            return _BOOLS[text.lower()]
        if kind is int and float(text) == int(float(text)):
            return int(float(text))
        if kind is float:
            return float(text)
    except ValueError:
        pass
    raise ValueError(f"pretrain config key {key!r} in {source}: expected {kind.__name__}, got {value!r}.")


_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def load_pretrain_config(path: str | os.PathLike | None = None,
                         overrides: Mapping[str, Any] | Iterable[str] | None = None) -> PretrainConfig:
    """A validated PretrainConfig from an optional YAML file and ``key=value`` overrides.

    Lists (``files``, ``columns``, ``ngram_probs``) are YAML lists, or comma-separated in an override.

    Example:
        >>> cfg = load_pretrain_config("configs/pretrain.yaml", ["steps=2000", "files=a.tsv,b.tsv"])
        >>> summary = run_pretraining(cfg)
    """
    from kagglekit.config import read_values

    names = {f.name for f in fields(PretrainConfig)}
    values = read_values(path, overrides, names=names, coerce=_coerce, unknown=_unknown_key, what="pretrain config")
    return PretrainConfig(**values).validate()


# --- NeZha's MLM head: transformers 5 has none; names as 4.x's NezhaForMaskedLM, so its checkpoints load ---


class NezhaPredictionHeadTransform(nn.Module):
    """dense -> activation -> LayerNorm, as BERT's ``cls.predictions.transform``."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, hidden):
        return self.LayerNorm(self.transform_act_fn(self.dense(hidden)))


class NezhaLMPredictionHead(nn.Module):
    """The transform, then scores against the (tied) word embeddings plus an output-only bias."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.transform = NezhaPredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, hidden, word_embeddings: torch.Tensor):
        return F.linear(self.transform(hidden), word_embeddings, self.bias)  # (B, T, V)


class NezhaOnlyMLMHead(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.predictions = NezhaLMPredictionHead(config)


class NezhaForMaskedLM(PreTrainedModel):
    """The kit's NeZha encoder (``nezha.*``, no pooler) with BERT's MLM head (``cls.predictions.*``).

    The decoder is the word-embedding matrix itself (a functional tie: no second parameter to keep
    tied across transformers versions), so 4.x checkpoints' ``cls.predictions.decoder.*`` copies
    are skipped on loading, and 4.x's ``NezhaForMaskedLM`` re-ties them when it loads this one.
    """

    config_class = NezhaConfig
    base_model_prefix = "nezha"
    supports_gradient_checkpointing = True
    _keys_to_ignore_on_load_unexpected = [r"cls\.predictions\.decoder\.", r"pooler\.", r"relative_positions_encoding",
                                          r"embeddings\.(token_type_ids|position_ids)$"]

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.nezha = NezhaModel(config, add_pooling_layer=False)
        self.cls = NezhaOnlyMLMHead(config)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        NezhaModel._init_weights(self, module)  # BERT's init; it only reads self.config
        if isinstance(module, NezhaLMPredictionHead):
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.nezha.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.nezha.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, **kwargs):
        """input_ids, attention_mask (B, T) -> an object with ``logits`` (B, T, V)."""
        hidden = self.nezha(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids, return_dict=True).last_hidden_state
        from transformers.modeling_outputs import MaskedLMOutput

        return MaskedLMOutput(logits=self.cls.predictions(hidden, self.get_input_embeddings().weight))


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
        try:
            frame = pd.read_csv(path, sep=sep, header=0 if cfg.header else None, dtype=str, keep_default_na=False, **options)
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
        value = yaml.safe_load(path.read_text(encoding="utf-8"))  # YAML reads JSON too
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

    One step: mask a batch (`NgramMasker`, drawn from a generator seeded by (seed, step)) →
    autocast forward → MLM loss → scaled backward → unscale → clip → optimizer step → scaler update
    → zero grad → scheduler step (linear warmup and decay). Every `cfg.save_every` steps and at the
    end it writes ``checkpoint-{step}/`` and the resumable state ``resume/state.pt`` (weights,
    optimizer, scheduler, scaler, step, RNGs, loss log); the data order and masks depend only on the
    seed and the step, so a resumed run equals an uninterrupted one. At the end ``last/`` holds the
    final model.

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
    from kagglekit.train.loop import seed_everything
    from kagglekit.train.optim import build_optimizer, build_scheduler
    from kagglekit.train.state import capture_rng, load_state, restore_rng, save_state

    start = time.time()
    cfg.validate()
    output_dir = Path(cfg.output_dir)
    texts = read_corpus(cfg)
    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    seed_everything(cfg.seed)
    model, tokenizer = build_mlm_model(cfg)
    model.to(device).train()
    rows = tokenizer(texts, truncation=True, max_length=cfg.max_len)["input_ids"]  # list of id lists, with special tokens
    masker = NgramMasker(tokenizer, mask_rate=cfg.mask_rate, max_ngram=cfg.max_ngram, ngram_probs=cfg.ngram_probs or None,
                         mask_token_ratio=cfg.mask_token_ratio, random_token_ratio=cfg.random_token_ratio,
                         whole_word=cfg.whole_word, seed=cfg.seed)
    optimizer = build_optimizer(model, lr=cfg.lr, head_lr=0.0, weight_decay=cfg.weight_decay)
    scheduler = build_scheduler(optimizer, "linear", total_steps=cfg.steps, warmup_ratio=cfg.warmup_ratio)
    amp_dtype = to_amp_dtype(precision)
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    source = Path(cfg.backbone or cfg.tokenizer_dir)

    step, log_rows = 0, []
    state_file = output_dir / STATE_FILE
    if resume and state_file.is_file():
        saved = load_state(state_file)
        changed = [k for k, v in cfg.to_dict().items() if k != "output_dir" and saved["config"].get(k) != v]
        if changed:
            warnings.warn(f"resuming {output_dir} with changed settings {changed}: the result will differ from an uninterrupted run.",
                          stacklevel=2)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        scaler.load_state_dict(saved["scaler"])
        step, log_rows = saved["step"], saved["log"]
        restore_rng(saved["rng"])
        print(f"pretrain: resumed {output_dir} at step {step}/{cfg.steps}", flush=True)
    elif resume:
        print(f"pretrain: no resumable state at {state_file}; starting at step 0", flush=True)
    write_text(output_dir / "pretrain_config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))

    def save(folder: Path) -> None:
        meta = {"step": step, "loss": log_rows[-1]["loss"] if log_rows else None, "texts": len(texts), "config": cfg.to_dict()}
        save_checkpoint(model, tokenizer, folder, source=source, meta=meta)

    def snapshot() -> None:
        save_state(state_file, {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                "scaler": scaler.state_dict(), "step": step, "log": log_rows, "rng": capture_rng(),
                                "config": cfg.to_dict()})

    nonfinite = 0
    progress = tqdm(total=cfg.steps, initial=step, desc="pretrain", dynamic_ncols=True)
    while step < cfg.steps:
        picked = batch_rows(len(rows), cfg.batch_size, cfg.seed, step)
        batch = masker([rows[i] for i in picked], rng=np.random.default_rng([cfg.seed, step, 1]))  # masks: a function of the step
        batch = {key: value.to(device, non_blocking=True) for key, value in batch.items()}
        labels = batch.pop("labels")  # (B, T), -100 where not predicted
        with torch.autocast(device_type=device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            loss = mlm_loss(model(**batch).logits, labels)  # logits (B, T, V)
        value = loss.item()
        if math.isfinite(value):
            nonfinite = 0
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the real gradient, not the scaled one
            if cfg.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            scaler.step(optimizer)  # skipped on inf/NaN gradients (fp16 overflow)
            scaler.update()
        else:  # in fp32 nothing else would stop NaN reaching the weights: skip the update, as the scaler would
            nonfinite += 1
            if nonfinite >= _NONFINITE_LIMIT:
                raise ValueError(f"pretraining diverged: {nonfinite} non-finite losses in a row up to step {step + 1}; lower lr "
                                 f"(now {cfg.lr}) or use precision=fp32. The last checkpoint is kept.")
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        log_rows.append({"step": step, "loss": value, "lr": lr})
        progress.update(1)
        progress.set_postfix(loss=f"{value:.4f}", lr=f"{lr:.2e}")
        if step == cfg.steps or (cfg.save_every and step % cfg.save_every == 0):
            save(output_dir / f"checkpoint-{step}")
            _prune_checkpoints(output_dir, cfg.keep_checkpoints)
            snapshot()
            _write_log(output_dir, log_rows)
    progress.close()
    save(output_dir / "last")
    _write_log(output_dir, log_rows)
    losses = [row["loss"] for row in log_rows[-10:]]
    return {
        "steps": step, "final_loss": float(np.mean(losses)) if losses else float("nan"), "last_dir": str(output_dir / "last"),
        "checkpoints": sorted(str(p) for p in output_dir.glob("checkpoint-*") if p.is_dir()),
        "loss_log": str(output_dir / LOG_FILE), "loss_curve": str(output_dir / CURVE_FILE), "texts": len(texts),
        "seconds": time.time() - start,
    }
