"""The MLM pretraining configuration: one flat dataclass, each key declared once (see `kagglekit._keys`).

Read by the same loader as the training `Config` (YAML, ``--set`` overrides, typing, unknown keys with
a suggestion); `kagglekit.train.pretrain` runs it. Light: importing it loads no torch.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Mapping, Sequence

from kagglekit._keys import SEED, SEED_HINT, check_keys, check_output_dir, key, load_keys

if TYPE_CHECKING:
    import numpy as np

__all__ = ["PretrainConfig", "load_pretrain_config"]


def _model_config(value: Any, source: str) -> Any:
    """``from_scratch_config``: a mapping, a JSON object written inline, or the path of a JSON/YAML file."""
    if isinstance(value, Mapping):
        return dict(value)
    text = str(value).strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"pretrain config key 'from_scratch_config' in {source}: not valid JSON ({err}).") from None
    return text  # a file path, read when the run starts


@dataclass
class PretrainConfig:
    """Everything an MLM pretraining run needs. Paths are local: nothing is fetched from a hub."""

    WHAT: ClassVar[str] = "pretrain config"

    # --- corpus ---
    files: list = key([], "CSV/TSV files; the text of all of them, deduplicated, is the corpus")
    columns: list = key([], 'text columns to read (without a header: 0-based positions, "0", "1")')
    sep: str = key("", "field separator; empty: tab for .tsv/.txt, comma otherwise")
    header: bool = key(True, "the files have a header row (the GAIIC id files have none)")
    # --- model: a backbone to continue, or a model built from scratch ---
    backbone: str = key("", "local model folder to continue pretraining")
    from_scratch_config: Any = key({}, "model config dict with model_type (bert, nezha), or a JSON/YAML file", parse=_model_config)
    tokenizer_dir: str = key("", "from scratch: the tokenizer folder (vocab_size defaults to its size)")
    max_len: int = key(0, "tokens per text after truncation (0: 128, or the model's positions if fewer); batches pad to their "
                       "longest row", ge=8, also=(0,))
    # --- masking (kagglekit.data.masking.NgramMasker, which checks the masking keys together) ---
    mask_rate: float = key(0.15, "share of real tokens predicted")
    max_ngram: int = key(3, "longest masked span (3: ALBERT/ERNIE-style n-grams; 1: plain BERT masking)", gt=0)
    ngram_probs: list = key([], "weight of each span length 1..max_ngram; empty: 1/n", item=float)
    mask_token_ratio: float = key(0.8, "chosen tokens that become [MASK]")
    random_token_ratio: float = key(0.1, "chosen tokens that become a random token; the rest stay")
    whole_word: bool = key(False, 'a span unit is a whole word ("##" / "▁" pieces), not a token')
    # --- optimisation ---
    output_dir: str = key("runs/pretrain", "checkpoint-{step}/, last/, loss_log.csv, loss_curve.png, resume/")
    steps: int = key(1000, "total optimizer steps (the corpus is cycled through, reshuffled each pass)", gt=0)
    batch_size: int = key(32, "texts per step", gt=0)
    lr: float = key(5e-5, "peak learning rate", gt=0)
    weight_decay: float = key(0.01, "not applied to biases and normalisation weights", ge=0)
    warmup_ratio: float = key(0.06, "share of the steps spent warming up, then linear decay to 0", ge=0, lt=1)
    max_grad_norm: float = key(1.0, "clip the unscaled gradient norm (0: no clipping)", ge=0)
    nonfinite_limit: int = key(20, "stop after this many NaN/inf losses in a row (TrainingDiverged), as training does", ge=1)
    save_every: int = key(500, "write checkpoint-{step}/ and the resumable state every N steps (0: at the end only)", ge=0)
    keep_checkpoints: int = key(0, "keep only the newest N checkpoint-{step}/ folders (0: all)", ge=0)
    seed: int = key(42, "model init, data order, masking, dropout", **SEED.bounds(), hint=SEED_HINT)
    precision: str = key("auto", "auto: fp16 + GradScaler on T4, bf16 where supported, fp32 on CPU", choices=("auto", "fp32", "fp16", "bf16"))
    device: str = key("auto", "where to train", choices=("auto", "cpu", "cuda"))

    def validate(self) -> "PretrainConfig":
        """Check every key's declared rules, the output folder, then the corpus, the model source and the masking."""
        check_keys(self)
        check_output_dir(self)
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
        check_masking(mask_rate=self.mask_rate, max_ngram=self.max_ngram, ngram_probs=self.ngram_probs or None,
                      mask_token_ratio=self.mask_token_ratio, random_token_ratio=self.random_token_ratio)
        return self

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def load_pretrain_config(path: str | os.PathLike | None = None,
                         overrides: Mapping[str, Any] | Iterable[str] | None = None) -> PretrainConfig:
    """A validated PretrainConfig from an optional YAML file and ``key=value`` overrides.

    Lists (``files``, ``columns``, ``ngram_probs``) are YAML lists, or comma-separated in an override.

    Example:
        >>> cfg = load_pretrain_config("configs/gaiic_pretrain.yaml", ["steps=2000", "files=a.tsv,b.tsv"])
        >>> cfg.steps
        2000
    """
    return load_keys(PretrainConfig, path, overrides).validate()


# The masking keys' ranges live here, in one place: the config checks them and NgramMasker (data.masking) imports them.
def default_ngram_probs(max_ngram: int) -> np.ndarray:
    """p(n) proportional to 1/n for n = 1..max_ngram (ALBERT's n-gram masking; ERNIE/MacBERT use the same idea).

    With max_ngram=3: (6/11, 3/11, 2/11) ~ (0.545, 0.273, 0.182): short spans are the most common, and
    a mean span of 1.64 units.
    """
    import numpy as np

    weights = 1.0 / np.arange(1, max_ngram + 1)
    return weights / weights.sum()


def check_masking(*, mask_rate: float, max_ngram: int, ngram_probs: Sequence[float] | None, mask_token_ratio: float,
                  random_token_ratio: float) -> np.ndarray:
    """Check the masking options (errors name the argument and the fix); returns the span-length probabilities."""
    import numpy as np

    if not 0 < mask_rate < 1:
        raise ValueError(f"mask_rate must be in (0, 1), got mask_rate={mask_rate}: 0.15 is usual.")
    if int(max_ngram) != max_ngram or max_ngram < 1:
        raise ValueError(f"max_ngram must be an integer >= 1, got max_ngram={max_ngram}: 1 is plain token masking, 3 is usual.")
    max_ngram = int(max_ngram)
    for name, value in (("mask_token_ratio", mask_token_ratio), ("random_token_ratio", random_token_ratio)):
        if not 0 <= value <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {name}={value}.")
    if mask_token_ratio + random_token_ratio > 1 + 1e-9:
        raise ValueError(f"mask_token_ratio + random_token_ratio must be <= 1 (the rest stay unchanged), got "
                         f"{mask_token_ratio} + {random_token_ratio}: 0.8 and 0.1 are BERT's.")
    if ngram_probs is None or len(ngram_probs) == 0:
        return default_ngram_probs(max_ngram)
    probs = np.asarray(ngram_probs, dtype=float)
    if probs.shape != (max_ngram,) or (probs < 0).any() or probs.sum() <= 0:
        raise ValueError(f"ngram_probs must hold {max_ngram} non-negative weights (one per span length 1..max_ngram={max_ngram}) "
                         f"with a positive sum, got {list(ngram_probs)}; leave it empty for the 1/n default.")
    return probs / probs.sum()
