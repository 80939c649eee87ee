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
from kagglekit.models.backbones import (BACKBONE_WEIGHTS, VOCAB_FILES, _check_tokenizer_files, backbone_from_config,
                                        check_backbone, check_tokenizer_fits, fp32_load_options, load_backbone, load_tokenizer)
from kagglekit.models.decoder import backbone_kind, is_decoder, lm_head_output, position_ids
from kagglekit.models.heads import HEADS, create_head, head_defaults
from kagglekit.run import META_FILE, META_FORMAT, FoldMeta

# The backbone loaders and checks live in kagglekit.models.backbones; they are re-exported here, where they were first defined.
__all__ = ["BACKBONE_WEIGHTS", "FEATURE_DIM", "SAVE_DTYPES", "VOCAB_FILES", "WEIGHTS_FILE", "PairModel", "backbone_from_config",
           "build_model", "check_backbone", "check_tokenizer_fits", "dropout_rates", "fp32_load_options", "load_backbone",
           "load_model_folder", "load_tokenizer", "save_model_folder"]

WEIGHTS_FILE = "model.safetensors"
FEATURE_DIM = 32  # width of the projected numeric features fused with the pooled vector


class PairModel(nn.Module):
    """Backbone → pooling head → multi-sample dropout → linear (or, for ``token_logits``, the LM head's label rows).

    Args:
        backbone: a transformers encoder (``AutoModel``) returning ``last_hidden_state``, or a decoder
            (`kagglekit.models.decoder`): the bare model, or the causal LM for ``head="token_logits"``.
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
        label_tokens: ``head="token_logits"`` only: the answer tokens whose rows of the backbone's LM head
            score the pooled vector in place of a new output layer (`kagglekit.models.decoder.LabelLogits`;
            `build_model` sets their ids from the tokenizer). One output: the last token's logit minus the
            first's; otherwise one token per output.
        backbone_class: the backbone's class name, as a decoder model records it (a model folder rebuilds it).

    A decoder (causal LM) backbone gets positions that count real tokens only (left- and right-padded
    batches score alike) and no KV cache; given with an LM head that its head does not use, it keeps
    only the bare model.
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
        label_tokens: Sequence[str] = (),
        backbone_class: str | None = None,
    ):
        super().__init__()
        rates = dropout_rates(dropout, msd_samples)
        head_options = _fit_layers(head, dict(head_options or {}), backbone)
        self.is_decoder = is_decoder(backbone)
        scores_with_lm_head = getattr(HEADS.get(head) if isinstance(head, str) else head, "needs_lm_head", False)
        if self.is_decoder and not scores_with_lm_head and backbone.base_model is not backbone:
            backbone = backbone.base_model  # a causal LM's head that nothing reads: the bare model is enough
        if backbone_class is not None and backbone_class != type(backbone).__name__:
            raise ValueError(f"backbone_class={backbone_class!r} but the backbone is a {type(backbone).__name__}: rebuild the "
                             "backbone the model folder records (load_model_folder does).")
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
        if self.is_decoder:
            self.init_args["backbone_class"] = type(backbone).__name__
        if label_tokens:
            self.init_args["label_tokens"] = list(label_tokens)
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
        self.fc, self.label_logits = None, None
        if scores_with_lm_head:  # the LM head's label rows are the output layer
            self.label_logits = lm_head_output(backbone, label_tokens, num_outputs, self.feature_names)
        elif label_tokens:
            raise ValueError(f"label_tokens={list(label_tokens)!r} apply to head='token_logits' only (the LM head scores them); "
                             f"head {self.init_args['head']!r} trains a new output layer: leave label_tokens empty.")
        else:
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
        encoder = self.backbone
        if self.is_decoder:  # positions of real tokens only; the base model, so no full-vocabulary logits
            kwargs.update(position_ids=position_ids(attention_mask), use_cache=False)
            encoder = self.backbone.base_model
        needs_layers = getattr(self.head, "needs_hidden_states", False)
        out = encoder(**kwargs, output_hidden_states=needs_layers or None)
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
            logits = self._output(self.dropouts[0](pooled))  # (B, C)
        else:
            samples = torch.stack([self._output(drop(pooled)) for drop in self.dropouts])  # (S, B, C)
            logits = samples if self.msd_average == "loss" else samples.mean(0)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits

    def _output(self, pooled: torch.Tensor) -> torch.Tensor:
        """The output layer: (B, F) → (B, C); the LM head's label rows for token_logits (one output: the log-odds)."""
        if self.fc is not None:
            return self.fc(pooled)
        scores = self.label_logits(pooled, self.backbone.get_output_embeddings())  # (B, K)
        return scores if self.num_outputs > 1 else (scores[:, -1] - scores[:, 0]).unsqueeze(-1)

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


def build_model(backbone_dir: str | os.PathLike, **model_options):
    """A PairModel on a pretrained backbone, and the backbone's tokenizer.

    A decoder folder (`kagglekit.models.decoder.backbone_kind`) loads as a causal LM with its LM head for
    ``head="token_logits"`` (whose label ids are set from the tokenizer here), else as the bare model; its
    tokenizer pads with an existing token when it has no pad token.

    Args:
        backbone_dir: local model folder.
        **model_options: `PairModel` arguments (head, num_outputs, dropout, msd_samples, label_tokens, ...).

    Example:
        >>> model, tokenizer = build_model("models/tiny-bert", head="attention", msd_samples=5)
        >>> model, tokenizer = build_model("models/tiny-llama", head="token_logits", label_tokens=[" No", " Yes"])
    """
    path = Path(backbone_dir)
    if backbone_kind(path) == "decoder":
        from kagglekit.models.decoder import load_decoder

        _check_tokenizer_files(path, "backbone")
        head = model_options.get("head", "mean")
        lm_head = getattr(HEADS.get(head) if isinstance(head, str) else head, "needs_lm_head", False)
        backbone, tokenizer = load_decoder(path, lm_head=lm_head, load_options=fp32_load_options())
    else:
        backbone, tokenizer = load_backbone(path)
    model = PairModel(backbone, **model_options)
    if model.label_logits is not None:
        model.label_logits.bind(tokenizer)
    model.source_dir = path
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
    backbone = backbone_from_config(folder, meta.model.get("backbone_class"))
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
    if model.label_logits is not None:
        _check_label_ids(model, tokenizer, folder)
    return model, tokenizer, meta


def _check_label_ids(model: PairModel, tokenizer, folder: Path) -> None:
    """The folder's tokenizer must still map the label tokens to the ids the weights were trained to score."""
    from kagglekit.models.decoder import label_token_ids

    saved = model.label_logits.label_ids.tolist()
    try:
        found = label_token_ids(tokenizer, model.label_logits.tokens)
    except ValueError as err:
        found = str(err)
    if found != saved:
        raise ValueError(f"model folder {folder}: its tokenizer maps the label tokens {model.label_logits.tokens!r} to {found}, but the "
                         f"model was trained on the ids {saved}: the tokenizer files were replaced. Re-download the model dataset.")
