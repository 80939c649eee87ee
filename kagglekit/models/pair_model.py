"""The pair model (backbone + pooling head + output layer) and its self-contained model folder.

A model folder holds the backbone config, the tokenizer files, ``model.safetensors`` (all weights)
and ``kagglekit.json`` (head settings, max_len, recipe state). It loads offline with nothing else:
the original backbone folder is not needed at inference.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from kagglekit._io import atomic_dir, write_json
from kagglekit.models.heads import create_head, head_defaults
from kagglekit.run import META_FILE, META_FORMAT, FoldMeta

WEIGHTS_FILE = "model.safetensors"
FEATURE_DIM = 32  # width of the projected numeric features fused with the pooled vector
# Vocabulary files of the slow (Python) tokenizers. transformers 5 saves only tokenizer.json, but
# 4.x needs these to load some tokenizers (DeBERTa-v3 needs spm.model), so model folders keep them.
VOCAB_FILES = ("spm.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")
# Files that hold a checkpoint's weights (one of them, or a sharded index).
BACKBONE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


class PairModel(nn.Module):
    """Backbone → pooling head → multi-sample dropout → linear.

    Args:
        backbone: a transformers encoder (``AutoModel``) returning ``last_hidden_state``.
        head: pooling head name or class (see `kagglekit.models.heads.HEADS`).
        num_outputs: 1 for regression or binary scores; C for `classes` or `bins` outputs (see `kagglekit.targets`).
        dropout: dropout rate on the pooled vector, or one rate per dropout sample.
        msd_samples: multi-sample dropout: how many dropout masks each row gets in training
            (1: plain dropout). With one rate it is used for every sample.
        msd_average: ``"logits"``: training returns the mean of the samples' logits, shape (B,);
            ``"loss"``: training returns every sample's logits, shape (S, B), for the loop to
            average the losses. Evaluation always runs one pass with dropout off.
        head_options: options of the head (e.g. ``layers``, ``pool``, ``layernorm``), only those set.
        feature_names: names of extra numeric inputs per row (e.g. co-occurrence counts), fused with
            the pooled vector: standardised with the training fold's mean and std (stored in the
            weights, see `set_feature_stats`), projected by Linear + GELU, concatenated.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: str = "mean",
        num_outputs: int = 1,
        dropout: float | Sequence[float] = 0.1,
        *,
        msd_samples: int = 1,
        msd_average: str = "logits",
        head_options: dict | None = None,
        feature_names: Sequence[str] = (),
    ):
        super().__init__()
        rates = dropout_rates(dropout, msd_samples)
        head_options = _fit_layers(head, dict(head_options or {}), backbone)
        # what rebuilds this structure around saved weights (stored in kagglekit.json as "model")
        self.init_args = {
            "head": head if isinstance(head, str) else head.__name__,
            "num_outputs": num_outputs,
            "dropout": rates,
            "msd_samples": msd_samples,
            "msd_average": msd_average,
            "head_options": dict(head_options or {}),
            "feature_names": list(feature_names),
        }
        self.backbone = backbone
        self.head = create_head(head, backbone.config.hidden_size, **(head_options or {}))
        if hasattr(self.head, "check_backbone"):
            self.head.check_backbone(backbone)  # fail at build time, not at the first forward
        if msd_average not in ("logits", "loss"):
            raise ValueError(f"msd_average={msd_average!r}: use 'logits' or 'loss'.")
        self.dropouts = nn.ModuleList(nn.Dropout(rate) for rate in rates)
        self.msd_average = msd_average
        self.feature_names = list(feature_names)
        fused = 0
        if self.feature_names:
            count = len(self.feature_names)
            self.register_buffer("feature_mean", torch.zeros(count))
            self.register_buffer("feature_std", torch.ones(count))
            self.feature_proj = nn.Sequential(nn.Linear(count, FEATURE_DIM), nn.GELU())
            fused = FEATURE_DIM
        self.fc = nn.Linear(self.head.out_features + fused, num_outputs)
        std = getattr(backbone.config, "initializer_range", 0.02)
        nn.init.normal_(self.fc.weight, std=std)
        nn.init.zeros_(self.fc.bias)
        self.num_outputs = num_outputs
        self.source_dir: Path | None = None  # folder the backbone and tokenizer came from

    def forward(self, input_ids, attention_mask, token_type_ids=None, features=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        needs_layers = getattr(self.head, "needs_hidden_states", False)
        out = self.backbone(**kwargs, output_hidden_states=needs_layers or None)
        extra = {}
        if needs_layers:
            extra["all_hidden"] = out.hidden_states  # tuple of (B, T, H), embeddings first
        if getattr(self.head, "needs_pooler", False):
            extra["pooler_output"] = getattr(out, "pooler_output", None)  # (B, H) or None
        pooled = self.head(out.last_hidden_state, attention_mask, **extra)  # (B, F)
        if self.feature_names:
            if features is None:
                raise ValueError(f"this model takes the numeric features {self.feature_names}: pass features (B, {len(self.feature_names)}).")
            scaled = (features.float() - self.feature_mean) / self.feature_std  # (B, K)
            pooled = torch.cat([pooled, self.feature_proj(scaled).to(pooled.dtype)], dim=-1)  # (B, F + FEATURE_DIM)
        if not self.training or len(self.dropouts) == 1:
            logits = self.fc(self.dropouts[0](pooled))  # (B, C)
        else:
            samples = torch.stack([self.fc(drop(pooled)) for drop in self.dropouts])  # (S, B, C)
            logits = samples if self.msd_average == "loss" else samples.mean(0)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits

    @torch.no_grad()
    def set_feature_stats(self, features) -> None:
        """Standardise the numeric features with these (training) rows' mean and std, shape (N, K)."""
        values = torch.tensor(np.asarray(features, dtype=np.float32))  # a copy: frames may hand read-only arrays
        if values.ndim != 2 or values.shape[1] != len(self.feature_names):
            raise ValueError(f"features: expected shape (N, {len(self.feature_names)}), got {tuple(values.shape)}.")
        std = values.std(dim=0, unbiased=False)
        self.feature_mean.copy_(values.mean(dim=0))
        self.feature_std.copy_(torch.where(std > 0, std, torch.ones_like(std)))  # a constant feature stays finite

    @property
    def returns_samples(self) -> bool:
        """True when a training forward returns per-sample logits (S, B) whose losses are averaged."""
        return self.training and len(self.dropouts) > 1 and self.msd_average == "loss"


def _fit_layers(head, options: dict, backbone: nn.Module) -> dict:
    """Clamp a head's ``layers`` option (given or default) to the backbone's depth, with a warning.

    The same config then runs on a 2-layer tiny model (CPU dry runs) and on the real backbone.
    """
    depth = getattr(backbone.config, "num_hidden_layers", None)
    defaults = head_defaults(head)
    layers = options.get("layers", defaults.get("layers"))
    if isinstance(layers, int) and isinstance(depth, int) and layers > depth:
        warnings.warn(f"head option layers={layers} but the backbone has {depth} layers: using {depth}.", stacklevel=3)
        options["layers"] = depth
    return options


def dropout_rates(dropout: float | Sequence[float], samples: int = 1) -> list[float]:
    """One dropout rate per multi-sample-dropout sample, checked."""
    rates = [float(dropout)] * samples if isinstance(dropout, (int, float)) else [float(r) for r in dropout]
    if samples < 1:
        raise ValueError(f"msd_samples must be 1 or more, got {samples}.")
    if len(rates) != samples and not (samples == 1 and rates):
        raise ValueError(f"msd_rates has {len(rates)} rate(s) but msd_samples={samples}: give one rate per sample.")
    for rate in rates:
        if not 0 <= rate < 1:
            raise ValueError(f"dropout rate {rate} is outside [0, 1).")
    return rates


def _check_backbone_dir(path: Path, key: str = "backbone") -> None:
    if not str(path) or not path.is_dir():
        raise FileNotFoundError(
            f"{key}: model folder not found: {path!s}. Set {key} to a local folder holding config.json, "
            "the tokenizer files and the weights (attach the model as a Kaggle dataset; hubs are unreachable)."
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{key}: {path} has no config.json: point {key} at the model folder itself.")


def _check_tokenizer_files(folder: Path, what: str) -> None:
    """transformers 5 builds an empty tokenizer (special tokens only) from a folder without vocabulary
    files instead of failing, and every word then becomes [UNK]: refuse such a folder."""
    if not any((folder / name).is_file() for name in ("tokenizer.json", *VOCAB_FILES)):
        raise FileNotFoundError(
            f"{what} {folder} has no tokenizer vocabulary (tokenizer.json or one of {list(VOCAB_FILES)}): copy the tokenizer "
            "files that came with the model into it."
        )


def check_tokenizer_fits(tokenizer, vocab_size: int, folder: Path, what: str) -> None:
    """Every token id must have an embedding row, or the first batch fails deep inside torch (index out of range)."""
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"{what} {folder}: the tokenizer has {len(tokenizer)} ids but the embedding has {vocab_size} rows (config.json "
            "vocab_size): the tokenizer files belong to another model. Use the tokenizer files saved with these weights."
        )


def check_backbone(path: str | os.PathLike, key: str = "backbone") -> None:
    """Fail before a run writes anything when the backbone folder cannot be trained as it is.

    Checked without loading the weights (`kagglekit.models.backbone_check`): the weight file (or every
    shard) is there, readable and complete; its shapes are those config.json gives (vocab_size,
    hidden_size, num_hidden_layers); the tokenizer files are there and belong to the embedding: every
    id and special token has a row, the pad id is config.json's, and the embedding has no more than a
    few spare rows.

    Args:
        path: the backbone folder.
        key: the config key that named it, for the messages (``embedding_model``).

    Raises:
        FileNotFoundError: the folder, config.json, the weights, a shard or the tokenizer files are missing.
        ValueError: a truncated or foreign weight file, or shapes or a tokenizer that do not match.

    Example:
        >>> check_backbone("models/tiny-bert")
    """
    import json

    from kagglekit.models.backbone_check import check_shapes, check_tokenizer, embedding_rows, weight_shapes

    path = Path(path)
    _check_backbone_dir(path, key)
    file, shapes = weight_shapes(path, key)
    _check_tokenizer_files(path, key)
    cls = _encoder_class(path)
    from transformers import AutoConfig, AutoModel

    config = (AutoConfig if cls is AutoModel else cls.config_class).from_pretrained(str(path), local_files_only=True)
    check_shapes(shapes, config, path, file, key)
    embedding = embedding_rows(shapes)
    rows = embedding[1][0] if embedding is not None else config.vocab_size
    tokenizer = load_tokenizer(path)
    check_tokenizer(tokenizer, rows, json.loads((path / "config.json").read_text(encoding="utf-8")), path, key)


def _encoder_class(folder: Path):
    """The class that loads the encoder in `folder`: the kit's NeZha for NeZha folders (transformers 5
    has none, and under 4.x the kit's own keeps results independent of the major), else AutoModel."""
    from transformers import AutoModel

    from kagglekit.models.nezha import NezhaModel, is_nezha_config, register_nezha

    if not is_nezha_config(folder):
        return AutoModel
    register_nezha()  # transformers 5: AutoConfig/AutoTokenizer read "nezha" folders too (4.x: no-op)
    return NezhaModel


def load_tokenizer(path: str | os.PathLike):
    """The tokenizer of a local model folder, never from a hub."""
    from transformers import AutoTokenizer

    path = Path(path)
    _check_backbone_dir(path)
    _encoder_class(path)  # registers NeZha, which the tokenizer's config lookup may need
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def fp32_load_options() -> dict:
    """from_pretrained options that load the weights in fp32 whatever dtype the checkpoint was saved in.

    transformers 5 keeps a checkpoint's own dtype by default (an fp16 or bf16 ``model.safetensors``
    loads as fp16/bf16), where 4.x loaded fp32. Training needs fp32 master weights: autocast supplies
    the half precision, and GradScaler refuses fp16 gradients.
    """
    import transformers

    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {key: torch.float32}


def load_backbone(path: str | os.PathLike):
    """Load a pretrained encoder (in fp32) and its tokenizer from a local folder, never from a hub."""
    path = Path(path)
    tokenizer = load_tokenizer(path)
    backbone = _encoder_class(path).from_pretrained(str(path), local_files_only=True, **fp32_load_options())
    return backbone, tokenizer


def build_model(backbone_dir: str | os.PathLike, **model_options):
    """A PairModel on a pretrained backbone, and the backbone's tokenizer.

    Args:
        backbone_dir: local model folder.
        **model_options: `PairModel` arguments (head, num_outputs, dropout, msd_samples, ...).

    Example:
        >>> model, tokenizer = build_model("models/tiny-bert", head="attention", msd_samples=5)
    """
    backbone, tokenizer = load_backbone(backbone_dir)
    model = PairModel(backbone, **model_options)
    model.source_dir = Path(backbone_dir)
    return model, tokenizer


SAVE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}  # the config key save_dtype's values


def save_model_folder(model: PairModel, tokenizer, folder: str | os.PathLike, meta: FoldMeta, *, dtype: str = "fp32") -> Path:
    """Write a self-contained model folder atomically (the previous one stays until the new one is complete).

    Args:
        model: the trained PairModel; left as it is (the weights are converted in a copy).
        tokenizer: its tokenizer.
        folder: destination, e.g. ``run/fold0``.
        meta: the fold's `FoldMeta`, stored as ``kagglekit.json`` with the model's own structure
            (``model.init_args``) as ``model`` and this kit's version.
        dtype: ``fp32`` or ``fp16`` (the config key ``save_dtype``): the dtype of the floating-point weights
            in ``model.safetensors``. fp16 halves the folder; integer and bool buffers keep their dtype.
            `load_model_folder` reads either into an fp32 model.

    Example:
        >>> save_model_folder(model, tokenizer, "runs/uspppm/fold0", meta, dtype=cfg.save_dtype)
    """
    from safetensors.torch import save_file

    import kagglekit

    folder = Path(folder)
    if not isinstance(meta, FoldMeta):
        raise TypeError(f"save_model_folder: meta must be a kagglekit.run.FoldMeta, got {type(meta).__name__}: build one with "
                        "FoldMeta(task=..., max_len=..., activation=...) or FoldMeta.from_json(a_dict).")
    if dtype not in SAVE_DTYPES:
        raise ValueError(f"save_model_folder: dtype={dtype!r}; use one of {list(SAVE_DTYPES)} (the config key save_dtype).")
    meta = dataclasses.replace(meta, format=META_FORMAT, kagglekit_version=kagglekit.__version__,
                               model=model.init_args)
    weights = _saved_weights(model, SAVE_DTYPES[dtype])  # before the folder: a failure leaves the old one as it was
    with atomic_dir(folder) as tmp:
        model.backbone.config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _keep_vocab_files(getattr(model, "source_dir", None), tmp)
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(tmp / META_FILE, meta.to_json())
    return folder


def _saved_weights(model: nn.Module, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """The model's state dict as it is written: CPU copies, floating-point tensors in `dtype`, a tied weight once.

    The names kept for tied weights are those safetensors' `load_model` expects when it reads them back.
    """
    from safetensors.torch import _remove_duplicate_names  # the rule load_model applies: the same names kept

    state = model.state_dict()
    for dropped in _remove_duplicate_names(state).values():
        for name in dropped:
            del state[name]
    return {name: tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype).contiguous()
            for name, tensor in state.items()}


def _keep_vocab_files(source: Path | None, dest: Path) -> None:
    """Copy the source folder's vocabulary files that `save_pretrained` did not write."""
    if source is None:
        return
    for name in VOCAB_FILES:
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)


def backbone_from_config(folder: str | os.PathLike):
    """The encoder described by ``folder/config.json``, randomly initialised: no weights are read.

    Under ``with torch.device("meta"):`` nothing is allocated either: the doctor counts parameters so.
    """
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    cls = _encoder_class(folder)
    config = (AutoConfig if cls is AutoModel else cls.config_class).from_pretrained(str(folder), local_files_only=True)
    return cls.from_config(config) if cls is AutoModel else cls(config)


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a model folder written by `save_model_folder`, offline.

    The model is fp32 whatever dtype the weights were saved in: fp16 weights are upcast as they are
    copied in, so predict computes in fp32 on CPU, or in the device's autocast precision.

    Returns:
        (model in eval mode on `device`, tokenizer, the folder's `FoldMeta`).
    """
    from safetensors.torch import load_model
    from transformers import AutoTokenizer

    folder = Path(folder)
    meta = FoldMeta.read(folder)
    for name in ("config.json", WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"model folder {folder} is incomplete: {name} is missing. Re-download or re-attach the model dataset."
            )
    backbone = backbone_from_config(folder)
    config = backbone.config
    model = PairModel(backbone, **meta.model)
    load_model(model, str(folder / WEIGHTS_FILE), strict=True, device=str(device))  # copies into the fp32 parameters
    model.source_dir = folder
    model.to(device).eval()
    _check_tokenizer_files(folder, "model folder")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"model folder {folder}: the tokenizer does not load ({err}). The folder must hold the tokenizer "
            "files saved by kagglekit train; re-download the model dataset."
        ) from err
    check_tokenizer_fits(tokenizer, config.vocab_size, folder, "model folder")
    return model, tokenizer, meta
