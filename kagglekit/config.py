"""The run configuration: one flat dataclass, each key declared once with its help, choices, range
and the settings it applies to (see `kagglekit._keys`).

Read from YAML, overridden by ``--set key=value`` (typed by the field), validated in one loop, and saved
with the run. An unknown key fails and names the closest valid key; a renamed key still loads, with a
warning that names the new one. Validation imports no torch: registries are checked by name here (tests
hold the names equal to the registries), and only a loss expression is parsed by `kagglekit.losses`.

About 550 lines, over the usual 350: over 100 keys are declared here, one or two lines each, and the cross-key
rules sit beside them; the declarations are the reference users read, so they stay in one class rather than
spread over modules that would each import the others' conditions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import string
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable, Mapping

import yaml

from kagglekit._keys import (LAYER_DECAY, POSITIVE, RATE, SEED, SEED_HINT, above, check_keys, check_output_dir, contains, is_set, key,
                             load_keys, parse_duration, parse_overrides, when)

__all__ = ["Config", "load_config", "parse_overrides", "field_names", "parse_cpc_levels", "changed_keys"]

# Registry names, so that validation needs no torch; tests/test_config.py holds each equal to its registry.
HEAD_NAMES = ("attention", "cls", "cls_pooler", "cnn", "concat_last_k", "last_token", "lstm", "max", "mean", "token_logits",
              "weighted_layers")  # models.heads.HEADS
METRIC_NAMES = ("pearson", "rmse", "roc_auc", "spearman")  # metrics.METRICS
EMBEDDING_POOLINGS = ("auto", "mean", "cls")  # models.embeddings takes its choices from here
# The names of the features the kit computes, declared here (the config layer) and imported by the modules that
# compute them (data.features, models.embeddings), so validation needs neither.
COOCCURRENCE_FEATURES = ("freq_a", "freq_b", "degree_a", "degree_b", "common_neighbours", "component_size", "jaccard")
EMBEDDING_FEATURES = ("embedding_cosine",)
CPC_LEVELS = ("section", "class", "subclass")  # the titles a USPPPM context code can contribute

# Where each recipe's, head's and adversary's own keys apply.
PAIRS, USPPPM = when(task="pairs"), when(task="uspppm")
GROUPING = when(task="uspppm", target_grouping=True)
EMBEDDING = when(embedding_model=is_set())
CLOSURE = when(closure=True)
EMA = when(ema=above(0))
FGM_PGD, PGD, AWP = when(adversary=("fgm", "pgd")), when(adversary="pgd"), when(adversary="awp")
ANY_ADVERSARY = when(adversary=("fgm", "pgd", "awp"))
UNIT = RATE.bounds()  # a rate or probability in [0, 1), as models.surgery checks it
LORA = when(lora_r=above(0))
DISTILL = when(teacher_oof=is_set())
QUANTIZE_CHOICES = ("none", "8bit", "4bit")  # models.lora takes its choices from here


def template_fields(template: str, key: str = "template") -> list[str]:
    """The field names a template uses, in order of first use, checked: names only, at least one.

    Raises:
        ValueError: a template that does not parse, or a field that is a position (``{}``, ``{0}``), an
            attribute or index (``{a.b}``, ``{a[0]}``), or carries a format spec or conversion.

    Example:
        >>> template_fields("Q: {text_a} vs {text_b}? Answer:")
        ['text_a', 'text_b']
    """
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as err:
        raise ValueError(f"config key {key!r}: {template!r} is not a valid template ({err}); write fields as {{text_a}}, and a "
                         "literal brace as {{ or }}.") from None
    names: list[str] = []
    for _, field, spec, conversion in parts:
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            shown = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"config key {key!r}: the field {shown} in {template!r} is not a plain name: write fields as "
                             "{text_a}, {text_b} (or the recipe's own names), without positions, formats or attributes.")
        if field not in names:
            names.append(field)
    if not names:
        raise ValueError(f"config key {key!r}: {template!r} names no field, so every row would get the same prompt: use "
                         "{text_a} and {text_b} (or the recipe's own fields).")
    return names


def parse_label_tokens(value: Any, source: str = "") -> list[str]:
    """The ``label_tokens`` key: a YAML list, a JSON list (``'[" No", " Yes"]'``) or comma-separated text (``" No, Yes"``).

    Spaces are kept as written: a leading space is part of most answer tokens (" Yes" is one token, "Yes" another).
    """
    import json

    items = value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as err:
                raise ValueError(f"config key 'label_tokens' in {source}: {value!r} is not a JSON list ({err}); write e.g. "
                                 '\'[" No", " Yes"]\'.') from None
        else:
            items = value.split(",") if text else []
    if not isinstance(items, (list, tuple)) or not all(isinstance(t, str) and t for t in items):
        raise ValueError(f"config key 'label_tokens' in {source}: expected a list of non-empty texts, got {value!r}; write e.g. "
                         '[" No", " Yes"].')
    return list(items)


@dataclass
class Config:
    """Everything a run needs. Paths are local folders or files: nothing is fetched from a hub.

    Each field is declared with `key`: its default, what it does, and its rules (choices, range,
    ``applies``: the settings without which it would do nothing). `validate` checks them all.
    """

    WHAT: ClassVar[str] = "config"
    RENAMED_KEYS: ClassVar[dict] = {"n_bins": "fold_bins"}  # old name -> new name: old configs still load, with a warning
    # Keys that say how a run is executed, not what it computes: a run may continue with other values.
    MACHINE_KEYS: ClassVar[frozenset] = frozenset({"device", "eval_batch_size", "parallel_folds", "time_budget", "resume_dir",
                                                   "wandb", "wandb_project"})
    # Keys that say where a file is: they change between sessions and machines (kagglekit merge ignores them).
    PATH_KEYS: ClassVar[frozenset] = frozenset({"train_csv", "test_csv", "cpc_dir", "backbone", "output_dir", "extra_train_csv",
                                                "embedding_model", "resume_dir", "teacher_oof"})
    REMOVED_KEYS: ClassVar[dict] = {"num_workers": "batches are pre-tokenized and always loaded in the main process."}
    # A recipe's own defaults where they differ from the field defaults below: `load_config` (so the command line and
    # the notebooks) gives them to the keys that a config file and --set leave unset; `Config(...)` itself does not.
    # uspppm's are the winner of benchmarks/uspppm_recipe.py on unseen anchors (fold 0 of 5, all-MiniLM-L6-v2, within
    # the time of one epoch of the public-baseline loop on 2 CPU cores; each lever in benchmarks/README.md).
    RECIPE_DEFAULTS: ClassVar[dict] = {
        "uspppm": {"lr": 1e-4, "max_len": 64, "epochs": 2},
    }

    # --- data ---
    task: str = key("uspppm", "recipe that reads the competition files into one normalized frame", choices=("uspppm", "pairs", "ids"))
    train_csv: str = key("", "training file of the recipe's schema")
    test_csv: str = key("", "test file, used by predict when --data is not given")
    # pairs recipe: any two-text-column CSV/TSV (STS-B, AFQMC ...)
    text_cols: str = key("sentence1,sentence2", "the two text columns, by name or 0-based position", applies=PAIRS)
    label_col: str = key("label", "the label column, by name or position", applies=PAIRS)
    id_col: str = key("", "the id column (empty: the row number)", applies=PAIRS)
    sep: str = key("", "field separator (empty: tab for .tsv/.txt, else comma)", applies=PAIRS)
    header: bool = key(True, "the first line names the columns", applies=PAIRS)
    quoting: str = key("minimal", "none: csv.QUOTE_NONE, quotes are text (as in STS-B)", choices=("minimal", "none"), applies=PAIRS)
    keep_columns: int = key(0, "keep the first N fields of each row (STS-B: 7); 0: every row has the header's width", applies=PAIRS)
    label_type: str = key("auto", "auto: binary when all labels are 0/1", choices=("auto", "regression", "binary"), applies=PAIRS)
    label_scale: float = key(0.0, "divide labels by this for training, multiply predictions back (STS-B: 5)", applies=PAIRS)
    group_col: str = key("", "fold groups (empty: text_a, so a sentence never sits on both sides of a fold)", applies=PAIRS)
    # uspppm recipe
    cpc_dir: str = key("", "CPC titles: a CPCTitleList folder or a titles.csv (code, title); empty: the context code is the text",
                       applies=USPPPM)
    cpc_levels: str = key("section,class", "which CPC titles make the context text: section, class, subclass",
                          applies=when(task="uspppm", cpc_dir=is_set()))
    target_grouping: bool = key(False, "add the other targets of the same anchor (and context) to each row", applies=USPPPM)
    target_grouping_by: str = key("context", "context: same anchor and context code; section: same anchor and CPC section",
                                  choices=("context", "section"), applies=GROUPING)
    group_max_words: int = key(64, "at most this many words of other targets per row", ge=1, applies=GROUPING)
    group_sep: str = key(", ", "between the other targets", applies=GROUPING)
    template_a: str = key("{anchor}", "first text; placeholders {anchor} {target} {context} {code} {targets}", applies=USPPPM)
    template_b: str = key("", 'second text (empty: "{target}; {context}", plus "; {targets}" with grouping)', applies=USPPPM)
    # any recipe
    max_rows: int = key(0, "use only the first N training rows (0: all); for quick runs", ge=0)
    feature_columns: str = key("", 'numeric columns of the train/test files fed to the model beside the text ("a,b")')
    cooccurrence: bool = key(False, "add co-occurrence features of the texts over train + test (frequency, degree, ...)")
    embedding_model: str = key("", "a local sentence-embedding model folder: adds the feature embedding_cosine (bi-encoder cosine)")
    embedding_pooling: str = key("auto", "auto: a sentence-transformers folder's own pooling, else mean", choices=EMBEDDING_POOLINGS,
                                 applies=EMBEDDING)
    embedding_max_len: int = key(256, "texts are truncated to this many tokens", ge=8, applies=EMBEDDING)
    closure: bool = key(False, "0/1 labels: add transitive-closure pairs to each fold's training rows")
    closure_max: int = key(0, "at most this many new pairs per fold (0: no cap)", ge=0, applies=CLOSURE)
    closure_ratio: float = key(0.0, "at most this share of the training rows as new pairs (0: no cap)", ge=0, applies=CLOSURE)
    swap: bool = key(False, "symmetric tasks: add each training pair with its texts swapped")
    extra_train_csv: str = key("", "extra labelled rows (pseudo labels, external data) in train_csv's schema: training folds only")
    extra_weight: float = key(1.0, "the loss weight of extra_train_csv's rows", gt=0, hint="e.g. 0.5 for pseudo labels",
                              applies=when(extra_train_csv=is_set()))
    # --- folds ---
    n_folds: int = key(5, "grouped, stratified folds", ge=2, hint="use n_folds=2 for a quick run")
    fold_seed: int = key(42, "folds depend only on this seed and the data, so separate fold runs agree", **SEED.bounds(),
                         hint=SEED_HINT)
    fold_bins: int = key(5, "bins a continuous label is cut into to stratify the folds (discrete labels are used as is)", ge=1,
                         hint="1 turns stratification off")
    # --- model ---
    backbone: str = key("", "a local model folder (config, tokenizer, weights)")
    head: str = key("mean", "pooling head, by name (kagglekit.models.heads.HEADS)", choices=HEAD_NAMES)
    dropout: float = key(0.1, "dropout on the pooled vector before the output layer", **UNIT)
    head_layers: int = key(4, "how many of the top hidden states", ge=1, applies=when(head=("weighted_layers", "concat_last_k")))
    head_layernorm: bool = key(False, "a LayerNorm on the pooled vector, before the output layer")
    head_pool: str = key("", "pooling over tokens (empty: the head's default)", choices=("", "cls", "mean", "max", "attention"),
                         applies=when(head=("weighted_layers", "cnn", "lstm")))
    head_hidden: int = key(0, "cnn: channels per kernel; lstm: units per direction (0: the head's default)", ge=0,
                           applies=when(head=("cnn", "lstm")))
    head_kernels: str = key("", 'odd kernel sizes, comma-separated ("1,3,5"; empty: 3)', applies=when(head="cnn"))
    template: str = key("", "decoder backbones: the prompt a pair becomes, a format string over the recipe's texts ({text_a} "
                        "{text_b}; uspppm also {anchor} {target} {context} {code} {targets}); empty: the recipe's own")
    label_tokens: list = key([], 'the answer tokens the LM head scores, e.g. [" No", " Yes"], one token each: a single score is '
                             "the last one's logit minus the first's; classes and bins take one token per output",
                             applies=when(head="token_logits"), parse=parse_label_tokens)
    # LoRA / QLoRA (peft, the extra kagglekit[llm]): adapters on the frozen backbone; the head and output layer train in full
    lora_r: int = key(0, "LoRA rank: train low-rank adapters on the frozen backbone (peft) instead of every weight; the head and "
                      "output layer still train in full. 0: full fine-tuning", ge=0, hint="8-64 is usual, 0 turns LoRA off")
    lora_alpha: float = key(16.0, "LoRA scaling: each adapter's update is multiplied by lora_alpha / lora_r", gt=0, applies=LORA)
    lora_dropout: float = key(0.05, "dropout on the adapters' input", **UNIT, applies=LORA)
    lora_targets: list = key(["all-linear"], 'the linear layers that get adapters: all-linear (every one but the LM head), or '
                             'their names ("q_proj,v_proj"; a full module name works too)', applies=LORA)
    quantize: str = key("none", "load the frozen base in 8 or 4 bits through bitsandbytes (CUDA only) and train LoRA on it "
                        "(QLoRA; gradient checkpointing on)", choices=QUANTIZE_CHOICES)
    merge_adapter: bool = key(False, "predict: merge the adapters into the base weights once loaded (before quantising, with "
                              "quantize): plain layers, faster inference", applies=LORA)
    output: str = key("single", "single score | classes (one per label value) | bins (soft labels); see kagglekit.targets",
                      choices=("single", "classes", "bins"))
    num_bins: int = key(5, "bin centres spread evenly over the label range", ge=2, applies=when(output="bins"))
    hidden_dropout: float = key(-1.0, "the backbone's hidden dropout (0 is common for regression)", **UNIT, also=(-1,),
                                hint="-1 keeps the checkpoint's own")
    attention_dropout: float = key(-1.0, "the backbone's attention dropout", **UNIT, also=(-1,), hint="-1 keeps the checkpoint's own")
    reinit_layers: int = key(0, "re-initialise the top N encoder layers before training", ge=0)
    reinit_pooler: bool = key(True, "re-initialise the pooler too", applies=when(reinit_layers=above(0)))
    freeze_embeddings: bool = key(False, "do not train the embeddings")
    freeze_layers: int = key(0, "do not train the bottom N encoder layers", ge=0)
    gradient_checkpointing: bool = key(False, "recompute activations in backward: less memory, ~30% slower")
    mixout: float = key(0.0, "mixout probability: pull encoder weights toward the pretrained ones (0: off)", **UNIT)
    msd_samples: int = key(1, "multi-sample dropout: dropout masks per row in training (1: plain dropout)", ge=1)
    msd_rates: str = key("", 'one rate per sample, comma-separated ("0.1,0.2,0.3"); empty: `dropout` for all')
    msd_average: str = key("logits", "what training averages over the samples", choices=("logits", "loss"))
    max_len: int = key(128, "tokens per pair after truncation; batches pad only to their longest", ge=8, also=(0,),
                       hint="0 takes the longest training pair, up to 512")
    # --- training ---
    output_dir: str = key("runs/run", "the run folder: config, folds, fold{K}/, oof.csv, run.json")
    seed: int = key(42, "model init, data order, dropout", **SEED.bounds(), hint=SEED_HINT)
    epochs: int = key(3, "passes over the training folds; the best epoch by the CV metric is kept", gt=0)
    batch_size: int = key(32, "training rows per forward pass (per micro-step)", gt=0)
    accum_steps: int = key(1, "micro-steps per optimizer step: the effective batch is batch_size * accum_steps", ge=1)
    bucket_size: int = key(100, "training batches drawn from length-sorted buckets of this many batches (1: plain shuffle)", ge=1)
    eval_batch_size: int = key(64, "evaluation needs no gradients, so it takes bigger batches", gt=0)
    eval_every: int = key(0, "evaluate every N optimizer steps as well as at each epoch's end (0: epoch ends only)", ge=0)
    patience: int = key(0, "stop the fold after N evaluations without improvement (0: never)", ge=0)
    checkpoint_every: int = key(0, "save the resumable state every N optimizer steps too (0: at evaluations only)", ge=0)
    lr: float = key(2e-5, "peak learning rate of the backbone's top layer", gt=0)
    head_lr: float = key(1e-3, "peak learning rate of the freshly initialised head and output layer (0: same as lr)", ge=0)
    layer_decay: float = key(1.0, "layer-wise LR decay: each layer below the top gets lr * layer_decay**depth", **LAYER_DECAY.bounds(),
                             hint="1 turns it off, 0.8-0.95 is usual")
    weight_decay: float = key(0.01, "not applied to biases and normalisation weights", ge=0)
    scheduler: str = key("cosine", "after warmup, stepped per optimizer step", choices=("linear", "cosine", "constant"))
    warmup_ratio: float = key(0.1, "share of the optimizer steps spent warming up", **UNIT)
    warmup_steps: int = key(0, "warm-up in optimizer steps instead of a ratio (0: use warmup_ratio)", ge=0)
    num_cycles: float = key(0.5, "0.5 is one half-wave down to 0; 1.5 goes down, up and down again", gt=0,
                            applies=when(scheduler="cosine"))
    max_grad_norm: float = key(1.0, "clip the unscaled gradient norm to this (0: no clipping)", ge=0)
    ema: float = key(0.0, "decay of an exponential moving average of the weights (0: off)", **UNIT, hint="0.999 is usual, 0 turns it off")
    ema_eval: bool = key(True, "evaluate and save the averaged weights, not the raw ones", applies=EMA)
    ema_warmup: bool = key(False, "decay min(ema, (1 + n) / (10 + n)) over the first updates", applies=EMA)
    nonfinite_limit: int = key(20, "stop the fold after this many NaN/inf losses in a row", ge=1)
    deterministic: bool = key(False, "deterministic GPU kernels (slower); CPU runs repeat exactly anyway")
    loss: str = key("auto", "auto | bce (logits; labels in [0, 1]) | mse | ce, kl (classes/bins), or a sum such as bce+0.5*huber; "
                    "auto: bce or mse, ce")
    metric: str = key("", "CV metric; empty: the recipe's own (pearson for uspppm)", choices=("",) + METRIC_NAMES)
    huber_delta: float = key(1.0, "where the loss turns from quadratic to linear", **POSITIVE.bounds(), applies=when(loss=contains("huber")))
    # distillation (kagglekit.train.distill): fold K learns from teacher model K's values on its training rows only
    teacher_oof: list = key([], "distil from a teacher: CSV file(s) keyed by id of its predictions (the fold teachers' rows of "
                            "kagglekit predict --per-fold; a full fit's or an out-of-fold file only for --fold full); several "
                            "are averaged. Empty: off")
    distill_weight: float = key(0.5, "loss = (1 - w) * label loss + w * distance to the teacher (MSE of the prediction, or KL)",
                                gt=0, le=1, hint="1 learns from the teacher alone; leave teacher_oof empty to turn it off",
                                applies=DISTILL)
    distill_temperature: float = key(1.0, "classes/bins: KL(softmax(teacher / T) || softmax(student / T)) * T^2", gt=0,
                                     applies=when(teacher_oof=is_set(), output=("classes", "bins")))
    adversary: str = key("none", "fgm, pgd: on the embeddings; awp: on the weights", choices=("none", "fgm", "pgd", "awp"))
    adv_epsilon: float = key(1.0, "L2 radius of the embedding perturbation", gt=0, applies=FGM_PGD)
    adv_alpha: float = key(0.3, "step size of each attack step", ge=0, applies=PGD)
    adv_steps: int = key(3, "attack steps K", ge=1, applies=PGD)
    adv_embedding: str = key("", "name of the embedding weight to perturb (empty: the backbone's input embeddings)", applies=FGM_PGD)
    awp_lr: float = key(1.0, "step of the weight perturbation, relative to each weight's norm", ge=0, applies=AWP)
    awp_eps: float = key(0.01, "bound of the perturbation, relative to each weight", ge=0, applies=AWP)
    awp_params: str = key("weight", "perturb the parameters whose names contain this", applies=AWP)
    awp_steps: int = key(1, "perturbation steps", ge=1, applies=AWP)
    adv_start_epoch: int = key(1, "attack from this epoch on (1: from the start; the USPPPM winner began AWP at 2)", ge=1,
                               applies=ANY_ADVERSARY)
    adv_start_step: int = key(0, "and from this optimizer step on", ge=0, applies=ANY_ADVERSARY)
    precision: str = key("auto", "auto: fp16 + GradScaler on CUDA without bf16 (T4), bf16 where supported, fp32 on CPU "
                         "(bf16 there only when set, on a CPU with bf16 in hardware)",
                         choices=("auto", "fp32", "fp16", "bf16"))
    device: str = key("auto", "where to train", choices=("auto", "cpu", "cuda"))
    parallel_folds: bool = key(True, "with 2+ GPUs (Kaggle's T4 x2), train one fold per GPU in child processes")
    time_budget: float = key(0.0, "stop cleanly before this much time has passed since training started, saving the fold's "
                             "resume state: seconds (41400) or \"11h30m\"; 0: no limit", ge=0, parse=parse_duration)
    resume_dir: str = key("auto", "where a fold's resumable state is written while it trains: auto = the platform's scratch "
                          "space (/kaggle/temp on Kaggle) when there is one, else <output_dir>/resume; or a folder")
    save_dtype: str = key("fp32", "dtype of the saved fold weights: fp16 halves a model dataset (predict computes in fp32 "
                          "or the device's precision either way)", choices=("fp32", "fp16"))
    seeds: int = key(1, "models per fold, seeded seed, seed+1, ...: the fold's OOF and its test predictions are their mean", ge=1)
    wandb: str = key("off", "log steps and evaluations to Weights & Biases when wandb is installed: offline (files under "
                     "<output_dir>/wandb, sync later) or online", choices=("off", "offline", "online"))
    wandb_project: str = key("kagglekit", "the W&B project", applies=when(wandb=("offline", "online")))

    def validate(self) -> "Config":
        """Check every key's declared rules, then the rules that join keys; raise naming the key, the value and the fix."""
        check_keys(self)
        for check in CROSS_CHECKS:
            check(self)
        return self

    @property
    def n_bins(self) -> int:
        """Renamed `fold_bins` (it sat beside `num_bins`, the output bins)."""
        warnings.warn("Config.n_bins is renamed Config.fold_bins.", FutureWarning, stacklevel=2)
        return self.fold_bins

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
        out: list[str] = []
        if self.cooccurrence:
            out += COOCCURRENCE_FEATURES
        if self.embedding_model:
            out += EMBEDDING_FEATURES
        return out

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


# --- rules that join keys: each a named check, run after the per-key loop --------------------------


def _loss_parses_and_trains_output(cfg: Config) -> None:
    if cfg.loss == "auto":
        return
    from kagglekit.losses import check_loss_output, get_loss  # a loss is an expression: only its parser can read it

    try:
        loss = get_loss(cfg.loss, huber_delta=cfg.huber_delta)
    except ValueError as err:
        raise ValueError(f"config key 'loss': {err} (or loss=auto)") from None
    check_loss_output(loss, cfg.output)


def _head_kernels_parse(cfg: Config) -> None:
    cfg.head_option_values()


def _msd_rates_match_samples(cfg: Config) -> None:
    rates = cfg.dropout_rates()
    if cfg.msd_rates and cfg.msd_samples not in (1, len(rates)):
        raise ValueError(f"config keys 'msd_rates' ({len(rates)} rates) and 'msd_samples' ({cfg.msd_samples}) disagree: "
                         "give one rate per sample, or leave msd_samples at 1.")
    if any(not 0 <= r < 1 for r in rates):
        raise ValueError(f"config key 'msd_rates': each rate must be in [0, 1), got {rates}.")


def _features_are_distinct(cfg: Config) -> None:
    cfg.model_features()


def _closure_settings(cfg: Config) -> None:
    if cfg.closure and cfg.feature_list():
        raise ValueError(f"closure=true with feature_columns={cfg.feature_columns!r}: the new pairs have no values for those "
                         "columns. Drop feature_columns, or use cooccurrence=true (computed for new pairs too).")
    if cfg.closure_max and cfg.closure_ratio:
        raise ValueError("set one of 'closure_max' (a count) and 'closure_ratio' (a share of the training rows), not both.")


def _cpc_levels_parse(cfg: Config) -> None:
    parse_cpc_levels(cfg.cpc_levels)


def _template_parses(cfg: Config) -> None:
    if cfg.template:
        template_fields(cfg.template)


def _token_logits_settings(cfg: Config) -> None:
    if cfg.head != "token_logits":
        return
    tokens = parse_label_tokens(cfg.label_tokens, "the config")
    count = len(tokens)
    if count < 2:
        raise ValueError(f"head=token_logits scores the pair with the LM head's logits of label_tokens, got {tokens!r}: name at "
                         'least two answer tokens, e.g. label_tokens=[" No", " Yes"] (the leading space is part of the token).')
    if len(set(tokens)) != count:
        raise ValueError(f"config key 'label_tokens' names a token twice: {tokens!r}; give each answer token once.")
    if cfg.output == "single" and count != 2:
        raise ValueError(f"output=single with head=token_logits is the log-odds of two tokens (the last against the first), "
                         f"but label_tokens has {count}: {tokens!r}. Give two, or use output=classes (one token per class).")
    if cfg.output == "bins" and count != cfg.num_bins:
        raise ValueError(f"output=bins with head=token_logits scores one token per bin: label_tokens has {count} but "
                         f"num_bins={cfg.num_bins}. Give {cfg.num_bins} tokens, or set num_bins={count}.")
    if cfg.model_features():
        raise ValueError(f"head=token_logits scores the last token's state with the LM head alone, so the numeric features "
                         f"{cfg.model_features()} cannot join it: use head=last_token (a new output layer takes them), or drop "
                         "feature_columns / cooccurrence / embedding_model.")


# settings LoRA leaves without meaning: (key, its value when off, why, the fix)
_NOT_WITH_LORA = (
    ("freeze_layers", 0, "with LoRA every backbone weight is frozen already and the adapters train in each targeted layer",
     "leave freeze_layers at 0 (or fine-tune in full with lora_r=0 to freeze bottom layers)"),
    ("freeze_embeddings", False, "with LoRA the embeddings are frozen already", "leave freeze_embeddings at false"),
    ("reinit_layers", 0, "LoRA freezes the base weights, so a re-initialised layer would stay random",
     "leave reinit_layers at 0, or fine-tune in full (lora_r=0)"),
    ("mixout", 0.0, "Mixout pulls trained weights toward the pretrained ones, and with LoRA the base weights do not train",
     "leave mixout at 0 (lora_dropout regularises the adapters)"),
)


def _lora_settings(cfg: Config) -> None:
    if cfg.lora_r == 0:
        if cfg.quantize != "none":
            raise ValueError(f"quantize={cfg.quantize} loads the backbone's weights in {cfg.quantize[0]} bits, which take no gradient: "
                             "only LoRA adapters can train on them (QLoRA). Set lora_r (e.g. lora_r=16), or quantize=none for "
                             "full fine-tuning.")
        return
    targets = cfg.lora_targets
    if not targets or not all(isinstance(t, str) and t.strip() for t in targets):
        raise ValueError(f"config key 'lora_targets': {targets!r}; name the linear layers that get adapters, e.g. "
                         "lora_targets=q_proj,v_proj, or lora_targets=all-linear.")
    if "all-linear" in targets and len(targets) > 1:
        raise ValueError(f"config key 'lora_targets': {targets!r} names all-linear beside other layers; give all-linear alone, "
                         "or only the names.")
    for name, off, why, fix in _NOT_WITH_LORA:
        if getattr(cfg, name) != off:
            raise ValueError(f"{name}={getattr(cfg, name)!r} with lora_r={cfg.lora_r}: {why}. {fix[0].upper()}{fix[1:]}.")
    if cfg.quantize != "none" and cfg.device == "cpu":
        raise ValueError(f"quantize={cfg.quantize} with device=cpu: 8- and 4-bit weights (bitsandbytes) need a CUDA device. Set "
                         "quantize=none for a CPU run (LoRA trains on the full-precision base), or train on a GPU.")


def _teacher_files_distinct(cfg: Config) -> None:
    names = [str(p).strip() for p in cfg.teacher_oof]
    if any(not n for n in names):
        raise ValueError(f"config key 'teacher_oof': {cfg.teacher_oof!r} holds an empty path; list the teacher files, e.g. "
                         "teacher_oof=teacher.csv, or leave it empty to turn distillation off.")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ValueError(f"config key 'teacher_oof' names {twice} twice: a file given twice counts twice in the teachers' "
                         "average. Give each teacher file once.")


def parse_cpc_levels(levels: str) -> list[str]:
    """``"section,class"`` -> ``["section", "class"]``, checked (the ``cpc_levels`` key; the uspppm recipe reads it so)."""
    names = [name.strip() for name in levels.split(",") if name.strip()]
    if not names or any(name not in CPC_LEVELS for name in names):
        raise ValueError(f"config key 'cpc_levels': {levels!r}; use a comma-separated subset of {list(CPC_LEVELS)}, e.g. section,class.")
    return names


CROSS_CHECKS = (check_output_dir, _loss_parses_and_trains_output, _head_kernels_parse, _msd_rates_match_samples,
                _features_are_distinct, _closure_settings, _cpc_levels_parse, _template_parses, _token_logits_settings,
                _lora_settings, _teacher_files_distinct)


def field_names() -> list[str]:
    return [f.name for f in dataclasses.fields(Config)]


def load_config(
    path: str | os.PathLike | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> Config:
    """Build a validated Config from an optional YAML file and overrides.

    Args:
        path: YAML file with a mapping of config keys, or the name of a built-in config
            (`kagglekit.configs.builtin_configs`: "afqmc", "gaiic", "stsb", "uspppm"); None gives the defaults.
        overrides: a mapping, or ``key=value`` strings as given to ``--set``; applied after the file.

    Raises:
        ValueError: `path` is a bare name with no such file and no such built-in config.

    Example:
        >>> cfg = load_config(None, ["backbone=models/tiny", "epochs=1"])
        >>> cfg.epochs
        1
        >>> load_config("stsb").train_csv
        'sts-train.csv'
    """
    with _config_file(path) as file:
        return load_keys(Config, file, overrides).validate()


def _config_file(path: str | os.PathLike | None) -> contextlib.AbstractContextManager:
    """`path` as given, or the packaged file of the built-in config it names: a string with no directory
    part and no .yaml/.yml suffix that is no file here."""
    if not isinstance(path, str) or not path or os.path.dirname(path) or path.endswith((".yaml", ".yml")) or os.path.exists(path):
        return contextlib.nullcontext(path)
    from importlib import resources

    from kagglekit.configs import builtin_config

    return resources.as_file(builtin_config(path))


def changed_keys(old: Mapping, new: Mapping, *, ignore: Iterable[str] = ()) -> list[str]:
    """The keys whose values differ between two saved configs (as `Config.to_dict` writes them), sorted.

    A key only one of them has is no change (a config saved before the key existed); `ignore` leaves
    keys out, e.g. `Config.MACHINE_KEYS` (how a run executes, not what it computes).
    """
    skip = set(ignore)
    return sorted(k for k in new if k in old and old[k] != new[k] and k not in skip)
