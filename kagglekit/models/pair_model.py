"""The pair model (backbone + pooling head + output layer) and its self-contained model folder.

A model folder holds the backbone config, the tokenizer files, ``model.safetensors`` (all weights)
and ``kagglekit.json`` (head settings, max_len, recipe state). It loads offline with nothing else:
the original backbone folder is not needed at inference. A LoRA model's folder holds its adapters and
head only, and the base model's identity (`kagglekit.models.base_model`): it loads with that base.

About 390 lines, a little over the usual 350: the model and the save and load of its folder are one format
(what `save_model_folder` writes, `load_model_folder` reads); the backbone loaders and the LoRA and decoder
parts already live in `backbones`, `lora` and `decoder`.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from kagglekit._io import atomic_dir, write_json
from kagglekit.models.backbones import (BACKBONE_WEIGHTS, VOCAB_FILES, _check_tokenizer_files, backbone_from_config,
                                        check_backbone, check_tokenizer_fits, fp32_load_options, keep_vocab_files, load_backbone,
                                        load_tokenizer)
from kagglekit.models.decoder import backbone_kind, check_label_ids, is_decoder, lm_head_output, position_ids
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
        lora: LoRA adapters in the backbone (`kagglekit.models.lora.add_lora`: ``r``, ``alpha``, ``dropout``,
            ``targets``); the base weights are then frozen, and only the adapters, the head and the output layer
            train (token_logits: the LM head's label rows, copied into the output layer). None: no adapters.

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
        lora: dict | None = None,
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
        self.lora = None
        if lora:
            from kagglekit.models.lora import add_lora

            self.lora = add_lora(backbone, **lora)  # the base frozen; the head made below trains in full
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
        if self.lora is not None:
            self.init_args["lora"] = dict(self.lora)
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
            self.label_logits = lm_head_output(backbone, label_tokens, num_outputs, self.feature_names, own_rows=self.lora is not None)
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
        self.base_identity: dict | None = None  # LoRA: the base's identity and how predict loads it (kagglekit.json "base_model")

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


def build_model(backbone_dir: str | os.PathLike, *, load_options: dict | None = None, prepare=None, **model_options):
    """A PairModel on a pretrained backbone, and the backbone's tokenizer.

    A decoder folder (`kagglekit.models.decoder.backbone_kind`) loads as a causal LM with its LM head for
    ``head="token_logits"`` (whose label ids are set from the tokenizer here), else as the bare model; its
    tokenizer pads with an existing token when it has no pad token.

    Args:
        backbone_dir: local model folder.
        load_options: ``from_pretrained`` options (default: fp32 weights); a QLoRA base's quantisation.
        prepare: a function applied to the loaded backbone before the model is built on it (a quantised base's
            preparation for training, `kagglekit.models.lora.prepare_kbit_training`).
        **model_options: `PairModel` arguments (head, num_outputs, dropout, msd_samples, label_tokens, lora, ...).

    Example:
        >>> model, tokenizer = build_model("models/tiny-bert", head="attention", msd_samples=5)
        >>> model, tokenizer = build_model("models/tiny-llama", head="token_logits", label_tokens=[" No", " Yes"])
        >>> model, tokenizer = build_model("models/tiny-llama", head="last_token", lora={"r": 8, "alpha": 16, "dropout": 0.0,
        ...                                                                              "targets": ["all-linear"]})
    """
    path = Path(backbone_dir)
    options = fp32_load_options() if load_options is None else load_options
    if backbone_kind(path) == "decoder":
        from kagglekit.models.decoder import load_decoder

        _check_tokenizer_files(path, "backbone")
        head = model_options.get("head", "mean")
        lm_head = getattr(HEADS.get(head) if isinstance(head, str) else head, "needs_lm_head", False)
        backbone, tokenizer = load_decoder(path, lm_head=lm_head, load_options=options)
    else:
        backbone, tokenizer = load_backbone(path, options)
    if prepare is not None:
        backbone = prepare(backbone)
    model = PairModel(backbone, **model_options)
    if model.label_logits is not None:
        model.label_logits.bind(tokenizer, model.backbone.get_output_embeddings())
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

    A LoRA model (``model.lora``) writes its adapters, head and output layer only (`kagglekit.models.lora.own_state`),
    and ``model.base_identity`` as ``base_model`` in ``kagglekit.json``: the folder is a small fraction of the base.

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
    state = None
    if getattr(model, "lora", None) is not None:
        from kagglekit.models.lora import own_state

        if not getattr(model, "base_identity", None):
            raise ValueError("save_model_folder: a LoRA model's folder records its base model: set model.base_identity "
                             "(kagglekit.models.base_model.base_identity of the backbone folder; build_components does).")
        meta = dataclasses.replace(meta, extra={**meta.extra, "base_model": model.base_identity})
        state = own_state(model)
    weights = _saved_weights(model, SAVE_DTYPES[dtype], state)  # before the folder: a failure leaves the old one as it was
    with atomic_dir(folder) as tmp:
        model.backbone.config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        keep_vocab_files(getattr(model, "source_dir", None), tmp)
        save_file(weights, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        write_json(tmp / META_FILE, meta.to_json())
    return folder


def _saved_weights(model: nn.Module, dtype: torch.dtype, state: dict | None = None) -> dict[str, torch.Tensor]:
    """The model's state dict (or the part `state` of it) as it is written: CPU copies, floating-point tensors in
    `dtype`, a tied weight once.

    The names kept for tied weights are those safetensors' `load_model` expects when it reads them back.
    """
    from safetensors.torch import _remove_duplicate_names  # the rule load_model applies: the same names kept

    state = model.state_dict() if state is None else dict(state)
    for dropped in _remove_duplicate_names(state).values():
        for name in dropped:
            del state[name]
    return {name: tensor.detach().to("cpu", dtype if tensor.is_floating_point() else tensor.dtype).contiguous()
            for name, tensor in state.items()}


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu", *, base_model=None,
                      merge_adapter: bool | None = None, quantize: str | None = None):
    """Load a model folder written by `save_model_folder`, offline.

    The model is fp32 whatever dtype the weights were saved in: fp16 weights are upcast as they are
    copied in, so predict computes in fp32 on CPU, or in the device's autocast precision. A LoRA folder
    loads onto its base model (`kagglekit.models.lora.AdapterLoad`).

    Args:
        folder: the model folder.
        device: where the model goes.
        base_model: LoRA folders only: the base model's folder, or a list of folders to find it among (checked
            against the digests the folder recorded); None: the folder recorded at training.
        merge_adapter: LoRA folders only: merge the adapters into the base weights; None: as the run's config
            key ``merge_adapter`` says.
        quantize: none | 8bit | 4bit: the backbone's linear layers in 8 or 4 bits (bitsandbytes, CUDA only; a LoRA
            folder's base, merged first when ``merge_adapter``); None: as trained (a LoRA run's ``quantize``, else none).

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
    if meta.model.get("lora"):  # the adapters and head, back on their base
        from kagglekit.models.lora import AdapterLoad

        plan = AdapterLoad.plan(folder, meta, device, base_model=base_model, merge_adapter=merge_adapter, quantize=quantize)
        model, _ = build_model(plan.base, load_options=plan.load_options, **meta.model)
        plan.finish(model, folder / WEIGHTS_FILE, folder)
    else:
        model = PairModel(backbone_from_config(folder, meta.model.get("backbone_class")), **meta.model)
        load_model(model, str(folder / WEIGHTS_FILE), strict=True, device=str(device))  # copies into the fp32 parameters
        if quantize not in (None, "none"):  # the trained weights, rounded to 8 or 4 bits as they move to the GPU
            from kagglekit.kaggle import resolve_precision
            from kagglekit.models.lora import check_quantize, compute_dtype, quantize_linears

            check_quantize(quantize, device)
            quantize_linears(model.backbone, quantize, torch.device(device), compute_dtype(resolve_precision("auto", torch.device(device))))
    config = model.backbone.config
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
        check_label_ids(model.label_logits, tokenizer, folder)
    return model, tokenizer, meta
