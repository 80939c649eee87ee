"""The run configuration: one flat dataclass with a commented default per field.

Read from YAML, overridden by ``--set key=value`` (typed by the field), validated, and saved with
the run. An unknown key fails and names the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

# Values a field may take, where the set is closed. Registries (heads, losses) grow with the kit,
# so those fields are checked against the registries themselves in `validate`.
CHOICES = {
    "task": ("uspppm", "pairs", "ids"),
    "scheduler": ("linear", "cosine", "constant"),
    "adversary": ("none", "fgm", "pgd", "awp"),
    "precision": ("auto", "fp32", "fp16", "bf16"),
    "device": ("auto", "cpu", "cuda"),
    "msd_average": ("logits", "loss"),
    "output": ("single", "classes", "bins"),
    "head_pool": ("", "cls", "mean", "max", "attention"),
    "target_grouping_by": ("context", "section"),
    "quoting": ("minimal", "none"),
    "label_type": ("auto", "regression", "binary"),
}

# Keys that only one recipe reads: set for another task, they would do nothing.
TASK_KEYS = {
    "pairs": ("text_cols", "label_col", "id_col", "sep", "header", "quoting", "keep_columns", "label_type", "label_scale", "group_col"),
    "uspppm": ("cpc_dir", "cpc_levels", "target_grouping", "target_grouping_by", "group_max_words", "group_sep", "template_a", "template_b"),
}


# Keys that only one family of losses or adversaries reads: set for another, they would do nothing.
ONLY_FOR = {
    "huber_delta": ("huber",),
    "adv_epsilon": ("fgm", "pgd"),
    "adv_embedding": ("fgm", "pgd"),
    "adv_alpha": ("pgd",),
    "adv_steps": ("pgd",),
    "awp_lr": ("awp",),
    "awp_eps": ("awp",),
    "awp_params": ("awp",),
    "awp_steps": ("awp",),
    "adv_start_epoch": ("fgm", "pgd", "awp"),
    "adv_start_step": ("fgm", "pgd", "awp"),
}


@dataclass
class Config:
    """Everything a run needs. Paths are local folders or files: nothing is fetched from a hub."""

    # --- data ---
    task: str = "uspppm"  # recipe that reads the competition files into one normalized frame
    train_csv: str = ""  # training file of the recipe's schema
    test_csv: str = ""  # test file, used by predict when --data is not given
    # pairs recipe: any two-text-column CSV/TSV (STS-B, AFQMC ...)
    text_cols: str = "sentence1,sentence2"  # pairs: the two text columns, by name or 0-based position
    label_col: str = "label"  # pairs: the label column, by name or position
    id_col: str = ""  # pairs: the id column (empty: the row number)
    sep: str = ""  # pairs: field separator (empty: tab for .tsv/.txt, else comma)
    header: bool = True  # pairs: the first line names the columns
    quoting: str = "minimal"  # pairs: minimal | none (csv.QUOTE_NONE: quotes are text, as in STS-B)
    keep_columns: int = 0  # pairs: keep the first N fields of each row (STS-B: 7); 0: every row has the header's width
    label_type: str = "auto"  # pairs: auto | regression | binary (auto: binary when all labels are 0/1)
    label_scale: float = 0.0  # pairs: divide labels by this for training, multiply predictions back (STS-B: 5)
    group_col: str = ""  # pairs: fold groups (empty: text_a, so a sentence never sits on both sides of a fold)
    # uspppm recipe
    cpc_dir: str = ""  # CPC titles: a CPCTitleList folder or a titles.csv (code, title); empty: the context code is the text
    cpc_levels: str = "section,class"  # which CPC titles make the context text: section, class, subclass
    target_grouping: bool = False  # uspppm: add the other targets of the same anchor (and context) to each row
    target_grouping_by: str = "context"  # context: same anchor and context code | section: same anchor and CPC section
    group_max_words: int = 64  # target grouping: at most this many words of other targets per row
    group_sep: str = ", "  # target grouping: between the other targets
    template_a: str = "{anchor}"  # uspppm first text; placeholders {anchor} {target} {context} {code} {targets}
    template_b: str = ""  # uspppm second text (empty: "{target}; {context}", plus "; {targets}" with grouping)
    max_rows: int = 0  # use only the first N training rows (0: all); for quick runs
    feature_columns: str = ""  # numeric columns of the train/test files fed to the model beside the text ("a,b")
    cooccurrence: bool = False  # add co-occurrence features of the texts over train + test (frequency, degree, ...)
    embedding_model: str = ""  # a local sentence-embedding model folder: adds the feature embedding_cosine (bi-encoder cosine)
    embedding_pooling: str = "auto"  # embedding_model: mean | cls | auto (a sentence-transformers folder's own, else mean)
    embedding_max_len: int = 256  # embedding_model: texts are truncated to this many tokens
    closure: bool = False  # 0/1 labels: add transitive-closure pairs to each fold's training rows
    closure_max: int = 0  # closure: at most this many new pairs per fold (0: no cap)
    closure_ratio: float = 0.0  # closure: at most this share of the training rows as new pairs (0: no cap)
    swap: bool = False  # symmetric tasks: add each training pair with its texts swapped
    extra_train_csv: str = ""  # extra labelled rows (pseudo labels, external data) in train_csv's schema: training folds only
    extra_weight: float = 1.0  # extra_train_csv: the loss weight of its rows (e.g. 0.5 for pseudo labels)
    # --- folds ---
    n_folds: int = 5  # grouped, stratified folds
    fold_seed: int = 42  # folds depend only on this seed and the data, so separate fold runs agree
    n_bins: int = 5  # bins for stratifying a continuous label (discrete labels are used as is)
    # --- model ---
    backbone: str = ""  # a local model folder (config, tokenizer, weights)
    head: str = "mean"  # pooling head, by name (see kagglekit.models.heads.HEADS)
    dropout: float = 0.1  # dropout on the pooled vector before the output layer
    head_layers: int = 4  # weighted_layers, concat_last_k: how many of the top hidden states
    head_layernorm: bool = False  # a LayerNorm on the pooled vector, before the output layer
    head_pool: str = ""  # weighted_layers, cnn, lstm: cls | mean | max | attention over tokens (empty: the head's default)
    head_hidden: int = 0  # cnn: channels per kernel; lstm: units per direction (0: the head's default)
    head_kernels: str = ""  # cnn: odd kernel sizes, comma-separated ("1,3,5"; empty: 3)
    output: str = "single"  # single score | classes (one per label value) | bins (soft labels); see kagglekit.targets
    num_bins: int = 5  # output=bins: bin centres spread evenly over the label range
    hidden_dropout: float = -1.0  # the backbone's hidden dropout (-1: keep the checkpoint's; 0 is common for regression)
    attention_dropout: float = -1.0  # the backbone's attention dropout (-1: keep the checkpoint's)
    reinit_layers: int = 0  # re-initialise the top N encoder layers before training
    reinit_pooler: bool = True  # with reinit_layers > 0: re-initialise the pooler too
    freeze_embeddings: bool = False  # do not train the embeddings
    freeze_layers: int = 0  # do not train the bottom N encoder layers
    gradient_checkpointing: bool = False  # recompute activations in backward: less memory, ~30% slower
    mixout: float = 0.0  # mixout probability: pull encoder weights toward the pretrained ones (0: off)
    msd_samples: int = 1  # multi-sample dropout: dropout masks per row in training (1: plain dropout)
    msd_rates: str = ""  # one rate per sample, comma-separated ("0.1,0.2,0.3"); empty: `dropout` for all
    msd_average: str = "logits"  # logits | loss: what training averages over the samples
    max_len: int = 128  # tokens per pair after truncation (0: the longest training pair, up to 512); batches pad only to their longest
    # --- training ---
    output_dir: str = "runs/run"  # the run folder: config, folds, fold{K}/, oof.csv, run.json
    seed: int = 42  # model init, data order, dropout
    epochs: int = 3  # passes over the training folds; the best epoch by the CV metric is kept
    batch_size: int = 32  # training rows per forward pass (per micro-step)
    accum_steps: int = 1  # micro-steps per optimizer step: the effective batch is batch_size * accum_steps
    bucket_size: int = 100  # training batches drawn from length-sorted buckets of this many batches (1: plain shuffle)
    eval_batch_size: int = 64  # evaluation needs no gradients, so it takes bigger batches
    eval_every: int = 0  # evaluate every N optimizer steps as well as at each epoch's end (0: epoch ends only)
    patience: int = 0  # stop the fold after N evaluations without improvement (0: never)
    checkpoint_every: int = 0  # save the resumable state every N optimizer steps too (0: at evaluations only)
    lr: float = 2e-5  # peak learning rate of the backbone's top layer
    head_lr: float = 1e-3  # peak learning rate of the freshly initialised head and output layer (0: same as lr)
    layer_decay: float = 1.0  # layer-wise LR decay: each layer below the top gets lr * layer_decay**depth (1: off)
    weight_decay: float = 0.01  # not applied to biases and normalisation weights
    scheduler: str = "cosine"  # linear | cosine | constant, after warmup, stepped per optimizer step
    warmup_ratio: float = 0.1  # share of the optimizer steps spent warming up
    warmup_steps: int = 0  # warm-up in optimizer steps instead of a ratio (0: use warmup_ratio)
    num_cycles: float = 0.5  # cosine: 0.5 is one half-wave down to 0; 1.5 goes down, up and down again
    max_grad_norm: float = 1.0  # clip the unscaled gradient norm to this (0: no clipping)
    ema: float = 0.0  # decay of an exponential moving average of the weights, e.g. 0.999 (0: off)
    ema_eval: bool = True  # with ema > 0: evaluate and save the averaged weights, not the raw ones
    ema_warmup: bool = False  # with ema > 0: decay min(ema, (1 + n) / (10 + n)) over the first updates
    nonfinite_limit: int = 20  # stop the fold after this many NaN/inf losses in a row
    deterministic: bool = False  # deterministic GPU kernels (slower); CPU runs repeat exactly anyway
    loss: str = "auto"  # auto | bce (logits; labels in [0, 1]) | mse | ce, kl (classes/bins); auto: bce or mse, ce
    metric: str = ""  # CV metric; empty: the recipe's own (pearson for uspppm)
    huber_delta: float = 1.0  # loss=huber: where the loss turns from quadratic to linear
    adversary: str = "none"  # none | fgm | pgd (on the embeddings) | awp (on the weights)
    adv_epsilon: float = 1.0  # fgm, pgd: L2 radius of the embedding perturbation
    adv_alpha: float = 0.3  # pgd: step size of each attack step
    adv_steps: int = 3  # pgd: attack steps K
    adv_embedding: str = ""  # fgm, pgd: name of the embedding weight to perturb (empty: the backbone's input embeddings)
    awp_lr: float = 1.0  # awp: step of the weight perturbation, relative to each weight's norm
    awp_eps: float = 0.01  # awp: bound of the perturbation, relative to each weight
    awp_params: str = "weight"  # awp: perturb the parameters whose names contain this
    awp_steps: int = 1  # awp: perturbation steps
    adv_start_epoch: int = 1  # attack from this epoch on (1: from the start; the USPPPM winner began AWP at 2)
    adv_start_step: int = 0  # and from this optimizer step on
    precision: str = "auto"  # auto: fp16 + GradScaler on CUDA without bf16 (T4), bf16 where supported, fp32 on CPU
    device: str = "auto"  # auto | cpu | cuda
    parallel_folds: bool = True  # with 2+ GPUs (Kaggle's T4 x2), train one fold per GPU in child processes
    num_workers: int = 0  # DataLoader workers; batches are pre-tokenized, so 0 is usually fastest

    def validate(self) -> "Config":
        """Check values; raise ValueError naming the key, the bad value and the fix."""
        for key, allowed in CHOICES.items():
            value = getattr(self, key)
            if value not in allowed:
                raise ValueError(f"config key {key!r}: unknown value {value!r}; valid values are {list(allowed)}.")
        from kagglekit.metrics import METRICS
        from kagglekit.models.heads import HEADS

        if self.head not in HEADS:
            raise ValueError(f"config key 'head': unknown value {self.head!r}; valid values are {sorted(HEADS)}.")
        if self.loss != "auto":
            from kagglekit.losses import check_loss_output, get_loss

            try:
                loss = get_loss(self.loss, huber_delta=self.huber_delta)
            except ValueError as err:
                raise ValueError(f"config key 'loss': {err} (or loss=auto)") from None
            check_loss_output(loss, self.output)
        if self.num_cycles != Config.num_cycles and self.scheduler != "cosine":
            raise ValueError(f"config key 'num_cycles' ({self.num_cycles}) applies to scheduler='cosine' only, not {self.scheduler!r}.")
        if self.output == "bins" and self.num_bins < 2:
            raise ValueError(f"config key 'num_bins' must be 2 or more for output=bins, got {self.num_bins}.")
        from kagglekit.models.heads import head_options

        accepted = head_options(self.head)
        for key, value in self.head_option_values().items():
            if key not in accepted:
                raise ValueError(
                    f"config key 'head_{key}' ({value!r}) does not apply to head {self.head!r}; its options are "
                    f"{['head_' + a for a in accepted]}. Leave it at its default for this head."
                )
        for key in ("hidden_dropout", "attention_dropout"):
            value = getattr(self, key)
            if value != -1 and not 0 <= value < 1:
                raise ValueError(f"config key {key!r} must be in [0, 1), or -1 to keep the checkpoint's own, got {value}.")
        for key in ("accum_steps", "bucket_size", "nonfinite_limit", "adv_steps", "awp_steps", "adv_start_epoch"):
            if getattr(self, key) < 1:
                raise ValueError(f"config key {key!r} must be 1 or more, got {getattr(self, key)!r}.")
        if not 0 < self.layer_decay <= 1:
            raise ValueError(f"config key 'layer_decay' must be in (0, 1], got {self.layer_decay}: 1 turns it off, 0.8-0.95 is usual.")
        if self.ema == 0 and (self.ema_warmup or not self.ema_eval):
            raise ValueError("config keys 'ema_warmup'/'ema_eval' do nothing with ema=0: set ema (e.g. 0.999) or leave them at their defaults.")
        if self.ema >= 1:
            raise ValueError(f"config key 'ema' must be in [0, 1), got {self.ema}: 0.999 is usual, 0 turns it off.")
        if self.adv_epsilon <= 0 or self.huber_delta <= 0 or self.num_cycles <= 0:
            raise ValueError("config keys 'adv_epsilon', 'huber_delta' and 'num_cycles' must be > 0, got "
                             f"{self.adv_epsilon}, {self.huber_delta}, {self.num_cycles}.")
        for task, keys in TASK_KEYS.items():
            changed = [key for key in keys if getattr(self, key) != getattr(Config, key)]
            if changed and self.task != task:
                raise ValueError(f"config key(s) {changed} belong to task={task!r} and do nothing with task={self.task!r}: "
                                 "leave them at their defaults, or set task.")
        for key, users in ONLY_FOR.items():
            kind = self.loss if key == "huber_delta" else self.adversary
            terms = [t.strip() for t in kind.replace("*", "+").split("+")]
            if getattr(self, key) != getattr(Config, key) and not any(u in terms for u in users):
                what = "loss" if key == "huber_delta" else "adversary"
                raise ValueError(f"config key {key!r} ({getattr(self, key)!r}) does nothing with {what}={kind!r}: it applies to "
                                 f"{what} {list(users)}. Leave it at its default, or set {what}.")
        if not 0 <= self.mixout < 1:
            raise ValueError(f"config key 'mixout' must be in [0, 1), got {self.mixout}.")
        self.model_features()
        changed = [key for key in ("embedding_pooling", "embedding_max_len") if getattr(self, key) != getattr(Config, key)]
        if changed and not self.embedding_model:
            raise ValueError(f"config key(s) {changed} do nothing without embedding_model: set embedding_model to a sentence-embedding "
                             "model folder, or leave them at their defaults.")
        from kagglekit.data.embeddings import POOLINGS

        if self.embedding_pooling not in POOLINGS:
            raise ValueError(f"config key 'embedding_pooling': unknown value {self.embedding_pooling!r}; valid values are {list(POOLINGS)}.")
        if self.embedding_max_len < 8:
            raise ValueError(f"config key 'embedding_max_len' must be at least 8 tokens, got {self.embedding_max_len}.")
        if self.extra_weight != 1.0 and not self.extra_train_csv:
            raise ValueError(f"config key 'extra_weight' ({self.extra_weight!r}) does nothing without extra_train_csv: set "
                             "extra_train_csv to the file of extra rows, or leave extra_weight at 1.")
        if not (isinstance(self.extra_weight, (int, float)) and math.isfinite(self.extra_weight) and self.extra_weight > 0):
            raise ValueError(f"config key 'extra_weight' must be a number > 0, got {self.extra_weight!r} (e.g. 0.5 for pseudo labels).")
        if (self.closure_max or self.closure_ratio) and not self.closure:
            raise ValueError("config keys 'closure_max'/'closure_ratio' do nothing with closure=false: set closure=true or leave them at 0.")
        if self.closure_max < 0 or not 0 <= self.closure_ratio:
            raise ValueError(f"config keys 'closure_max' and 'closure_ratio' must be >= 0, got {self.closure_max}, {self.closure_ratio}.")
        if self.closure and self.feature_list():
            raise ValueError(f"closure=true with feature_columns={self.feature_columns!r}: the new pairs have no values for those "
                             "columns. Drop feature_columns, or use cooccurrence=true (computed for new pairs too).")
        if self.closure_max and self.closure_ratio:
            raise ValueError("set one of 'closure_max' (a count) and 'closure_ratio' (a share of the training rows), not both.")
        if self.metric and self.metric not in METRICS:
            raise ValueError(f"config key 'metric': unknown value {self.metric!r}; valid values are {sorted(METRICS)}.")
        positive = ("epochs", "batch_size", "eval_batch_size", "lr")
        for key in positive:
            if not getattr(self, key) > 0:
                raise ValueError(f"config key {key!r} must be > 0, got {getattr(self, key)!r}.")
        if self.n_folds < 2:
            raise ValueError(f"config key 'n_folds' must be 2 or more, got {self.n_folds}: use n_folds=2 for a quick run.")
        for key in ("max_rows", "head_lr", "weight_decay", "max_grad_norm", "num_workers", "head_hidden", "reinit_layers", "freeze_layers",
                    "eval_every", "patience", "checkpoint_every", "warmup_steps", "ema", "adv_start_step", "adv_alpha", "awp_lr", "awp_eps"):
            if getattr(self, key) < 0:
                raise ValueError(f"config key {key!r} must be >= 0, got {getattr(self, key)!r}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"config key 'warmup_ratio' must be in [0, 1), got {self.warmup_ratio}.")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"config key 'dropout' must be in [0, 1), got {self.dropout}.")
        if self.head_layers < 1:
            raise ValueError(f"config key 'head_layers' must be 1 or more, got {self.head_layers}.")
        rates = self.dropout_rates()
        if self.msd_rates and self.msd_samples not in (1, len(rates)):
            raise ValueError(
                f"config keys 'msd_rates' ({len(rates)} rates) and 'msd_samples' ({self.msd_samples}) disagree: "
                "give one rate per sample, or leave msd_samples at 1."
            )
        if self.msd_samples < 1 or any(not 0 <= r < 1 for r in rates):
            raise ValueError(f"config keys 'msd_samples'/'msd_rates': need samples >= 1 and rates in [0, 1), got {self.msd_samples}, {rates}.")
        if self.max_len != 0 and self.max_len < 8:
            raise ValueError(f"config key 'max_len' must be at least 8 tokens, or 0 to take it from the data, got {self.max_len}.")
        from kagglekit.data.cpc import parse_levels

        parse_levels(self.cpc_levels)
        if not self.cpc_dir and self.cpc_levels != Config.cpc_levels:
            raise ValueError(f"config key 'cpc_levels' ({self.cpc_levels!r}) does nothing without cpc_dir: set cpc_dir to the CPC titles.")
        grouping_keys = ("target_grouping_by", "group_max_words", "group_sep")
        changed = [key for key in grouping_keys if getattr(self, key) != getattr(Config, key)]
        if changed and not self.target_grouping:
            raise ValueError(f"config key(s) {changed} do nothing with target_grouping=false: set target_grouping=true or leave them.")
        if self.group_max_words < 1:
            raise ValueError(f"config key 'group_max_words' must be 1 or more, got {self.group_max_words}.")
        return self

    def head_option_values(self) -> dict:
        """The head options set away from their defaults, under the heads' own option names."""
        out: dict = {}
        if self.head_layers != Config.head_layers:
            out["layers"] = self.head_layers
        if self.head_layernorm:
            out["layernorm"] = True
        if self.head_pool:
            out["pool"] = self.head_pool
        if self.head_hidden:
            out["hidden"] = self.head_hidden
        if self.head_kernels.strip():
            try:
                out["kernels"] = [int(k) for k in self.head_kernels.split(",") if k.strip()]
            except ValueError:
                raise ValueError(f"config key 'head_kernels': expected comma-separated integers, got {self.head_kernels!r}.") from None
        return out

    def feature_list(self) -> list[str]:
        """The ``feature_columns`` names, checked."""
        names = [name.strip() for name in self.feature_columns.split(",") if name.strip()]
        if len(set(names)) != len(names):
            raise ValueError(f"config key 'feature_columns' names a column twice: {names}.")
        return names

    def model_features(self) -> list[str]:
        """Every numeric input of the model: the ``feature_columns``, then the co-occurrence features,
        then the embedding cosine."""
        names = self.feature_list()
        computed = self.computed_features()
        clash = sorted(set(names) & set(computed))
        if clash:
            raise ValueError(f"config key 'feature_columns' names {clash}, which the kit computes itself "
                             "(cooccurrence=true / embedding_model): rename the column(s).")
        return names + computed

    def computed_features(self) -> list[str]:
        """The features the kit computes for any pair (so closure-augmented pairs get them too)."""
        from kagglekit.data.embeddings import EMBEDDING_FEATURES
        from kagglekit.data.features import FEATURE_NAMES

        return (list(FEATURE_NAMES) if self.cooccurrence else []) + (list(EMBEDDING_FEATURES) if self.embedding_model else [])

    def dropout_rates(self) -> list[float]:
        """One dropout rate per multi-sample-dropout sample."""
        if not self.msd_rates.strip():
            return [self.dropout] * self.msd_samples
        try:
            return [float(part) for part in self.msd_rates.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"config key 'msd_rates': expected comma-separated numbers, got {self.msd_rates!r}.") from None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike) -> Path:
        from kagglekit._io import write_text

        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def field_names() -> list[str]:
    return [f.name for f in fields(Config)]


def _unknown_key(key: str, source: str) -> ValueError:
    names = field_names()
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else f" Valid keys: {', '.join(names)}."
    return ValueError(f"unknown config key {key!r} in {source}.{hint}")


def _coerce(key: str, value: Any, source: str) -> Any:
    """Convert `value` to the type of field `key` (from YAML or from a --set string)."""
    default = getattr(Config(), key)
    kind = type(default)
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    text = str(value).strip()
    try:
        if kind is bool:
            lowered = text.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            number = float(text)
            if number != int(number):
                raise ValueError
            return int(number)
        if kind is float:
            return float(text)
        if kind is str:
            return "" if value is None else text
    except ValueError:
        pass
    example = str(default).lower() if kind is bool else default
    raise ValueError(f"config key {key!r} in {source}: expected {kind.__name__}, got {value!r}; write e.g. {key}={example} (its default).")


def parse_overrides(items: Iterable[str] | None) -> dict[str, str]:
    """Turn ``["epochs=2", "lr=3e-5"]`` into a dict; a malformed item names itself and the form."""
    out: dict[str, str] = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set {item!r}: expected key=value, e.g. --set epochs=2")
        out[key.strip()] = value
    return out


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> Config:
    """Build a validated Config from an optional YAML file and overrides.

    Args:
        path: YAML file with a mapping of config keys; None gives the defaults.
        overrides: a mapping, or ``key=value`` strings as given to ``--set``; applied after the file.

    Example:
        >>> cfg = load_config(None, ["backbone=models/tiny", "epochs=1"])
        >>> cfg.epochs
        1
    """
    values = read_values(path, overrides, names=set(field_names()), coerce=_coerce, unknown=_unknown_key)
    return Config(**values).validate()


def read_values(path, overrides, *, names: set, coerce, unknown, what: str = "config") -> dict[str, Any]:
    """Key-value pairs from an optional YAML file, then ``--set`` overrides, each checked and typed.

    Shared by every config of the kit (`load_config`, `kagglekit.train.pretrain.load_pretrain_config`).

    Args:
        path: YAML file holding a mapping, or None.
        overrides: a mapping, or ``key=value`` strings.
        names: the valid keys.
        coerce: ``(key, value, source) -> value`` of the key's type.
        unknown: ``(key, source) -> ValueError`` naming the closest valid key.
        what: how errors name the file ("config", "pretrain config").
    """
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{what} file not found: {path}. Pass the YAML file given to --config.")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ValueError(f"{what} file {path} is not valid YAML: {err}") from err
        if not isinstance(loaded, dict):
            raise ValueError(f"{what} file {path} must hold a mapping of key: value, got {type(loaded).__name__}.")
        for key, value in loaded.items():
            if key not in names:
                raise unknown(str(key), str(path))
            values[key] = coerce(key, value, str(path))
    if overrides is not None:
        if not isinstance(overrides, Mapping):
            overrides = parse_overrides(overrides)
        for key, value in overrides.items():
            if key not in names:
                raise unknown(key, "--set")
            values[key] = coerce(key, value, "--set")
    return values
