"""Decoder (causal LM) backbones: how the kit tells them from encoders, loads them, and scores with their LM head.

A decoder folder is any local causal LM that transformers loads (Llama, Qwen2/Qwen3, Gemma-2/3, Mistral,
Phi ...). Its pairs become prompts (`kagglekit.data.prompts`); its tokenizer pads with an existing
special token when it has no pad token; its positions count real tokens only, so left- and
right-padded batches give the same scores. ``head: token_logits`` scores with the LM head's rows of
the ``label_tokens`` at the last real token (`LabelLogits`), never the full vocabulary.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kagglekit.data.prompts import pad_token_id

__all__ = ["DECODER_MODEL_TYPES", "LabelLogits", "backbone_kind", "check_decoder_settings", "check_label_ids", "check_label_tokens",
           "decoder_template", "is_decoder", "is_decoder_config", "label_token_ids", "lm_head_output", "load_decoder", "position_ids",
           "prepare_tokenizer", "rebuild_backbone"]

# model_type values of causal LMs, for folders whose config.json names no ForCausalLM architecture
DECODER_MODEL_TYPES = frozenset({
    "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "gemma", "gemma2", "gemma3_text",
    "phi", "phi3", "gpt2", "gpt_neox", "gptj", "falcon", "olmo", "olmo2", "stablelm", "starcoder2", "cohere", "granite",
})
_CAUSAL_SUFFIXES = ("ForCausalLM", "LMHeadModel")
# heads that read the first token, which in a causal LM has seen nothing but itself
_FIRST_TOKEN_HEADS = ("cls", "cls_pooler", "concat_last_k")


def is_decoder_config(config: Mapping[str, Any] | Any) -> bool:
    """Whether a model config (config.json as a dict, or a transformers config) describes a causal LM.

    The rule: not an encoder-decoder (T5, BART), and one of: ``is_decoder`` is true, an architecture
    ends in ``ForCausalLM`` or ``LMHeadModel``, or ``model_type`` is a known decoder family
    (`DECODER_MODEL_TYPES`: a ``LlamaForSequenceClassification`` folder is a decoder too).

    Example:
        >>> is_decoder_config({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})
        True
        >>> is_decoder_config({"model_type": "bert", "architectures": ["BertForMaskedLM"]})
        False
    """
    if not isinstance(config, Mapping):
        config = config.to_dict()
    if config.get("is_encoder_decoder"):
        return False
    architectures = config.get("architectures") or ()
    return bool(config.get("is_decoder")) or any(str(a).endswith(_CAUSAL_SUFFIXES) for a in architectures) \
        or config.get("model_type") in DECODER_MODEL_TYPES


def backbone_kind(folder: str | os.PathLike) -> str | None:
    """``"decoder"`` or ``"encoder"`` by the folder's config.json; None when it has none that reads (the backbone
    checks then say what is wrong)."""
    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    return "decoder" if is_decoder_config(config) else "encoder"


def is_decoder(backbone: nn.Module) -> bool:
    """Whether a loaded backbone is a causal LM (by its config)."""
    config = getattr(backbone, "config", None)
    return config is not None and hasattr(config, "to_dict") and is_decoder_config(config)


def prepare_tokenizer(tokenizer, config_pad: int | None = None):
    """A decoder's tokenizer made ready for the kit's batches: one without a pad token (Llama's) pads with
    config.json's ``pad_token_id`` when that is one of its ids, else an existing special token
    (`kagglekit.data.prompts.pad_token_id`: eos first). Nothing is added to the vocabulary, so the embeddings
    keep their size; padded positions are masked out, so which token pads changes no score. Saved with the
    fold, so predict pads alike."""
    if tokenizer.pad_token_id is None:
        pad = config_pad if isinstance(config_pad, int) and 0 <= config_pad < len(tokenizer) else pad_token_id(tokenizer)
        tokenizer.pad_token = tokenizer.convert_ids_to_tokens(pad)
    return tokenizer


def load_decoder(folder: str | os.PathLike, *, lm_head: bool, load_options: Mapping[str, Any]):
    """A decoder and its prepared tokenizer from a local folder: with its LM head (``AutoModelForCausalLM``) when
    the scoring head needs it, else the bare model (``AutoModel``), which never allocates the LM head."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    cls = AutoModelForCausalLM if lm_head else AutoModel
    model = cls.from_pretrained(str(folder), local_files_only=True, **load_options)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    return model, prepare_tokenizer(tokenizer, getattr(model.config, "pad_token_id", None))


def rebuild_backbone(folder: str | os.PathLike, class_name: str, load_options: Mapping[str, Any]) -> nn.Module:
    """The backbone class a fold folder recorded (``backbone_class`` in kagglekit.json), built from its config.json
    with random weights (the fold's weights are loaded next), in the dtype of `load_options`."""
    import transformers

    cls = getattr(transformers, class_name, None)
    if cls is None:
        raise ValueError(f"model folder {folder}: its backbone class {class_name!r} is not in transformers "
                         f"{transformers.__version__}: predict with the transformers version it was trained with, or newer.")
    config = transformers.AutoConfig.from_pretrained(str(folder), local_files_only=True)
    return cls._from_config(config, **load_options)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only (B, T): 0, 1, ... from each row's first real token, so a left-padded
    row gets the positions of the same row unpadded; padded positions get 0."""
    return (mask.long().cumsum(dim=1) - 1).clamp(min=0)


def label_token_ids(tokenizer, tokens: Sequence[str]) -> list[int]:
    """The id of each label token, checked: each must be one token of this tokenizer.

    Raises:
        ValueError: a token that splits, naming it and its pieces.

    Example:
        >>> label_token_ids(tokenizer, [" No", " Yes"])
        [912, 3363]
    """
    ids = []
    for token in tokens:
        pieces = tokenizer(token, add_special_tokens=False)["input_ids"]
        if len(pieces) != 1:
            shown = tokenizer.convert_ids_to_tokens(pieces)
            raise ValueError(f"label_tokens: {token!r} is {len(pieces)} tokens for this tokenizer ({shown}), not one: each "
                             "answer must be a single token. Try it with or without a leading space (' Yes' / 'Yes'), or "
                             "another word.")
        ids.append(pieces[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"label_tokens {list(tokens)!r} map to the ids {ids}: two are the same token; give distinct answers.")
    return ids


class LabelLogits(nn.Module):
    """The LM head's logits of the label tokens only, from one state per row: (B, H) → (B, K).

    Equal to the causal LM's own logits at that position restricted to the label ids (Gemma's final soft-capping,
    Cohere's and Granite's logit scales included), computed from the K rows of the LM head's weight instead of
    all V. The ids are a buffer, saved with the weights; `bind` sets them from a tokenizer.

    Args:
        tokens: the label tokens (the config key ``label_tokens``), two or more.
        config: the backbone's config (its logit soft-capping and scales).
        own_rows: keep a copy of the K rows as this module's own parameters (``weight`` (K, H), ``bias`` (K,) when
            the LM head has one), copied from the LM head by `bind`: with LoRA the LM head stays frozen and out of the
            fold folder, while its label rows, the output layer, train in full and are saved.
        bias: with `own_rows`, whether the LM head has a bias.
    """

    def __init__(self, tokens: Sequence[str], config, *, own_rows: bool = False, bias: bool = False):
        super().__init__()
        if len(tokens) < 2:
            raise ValueError(f"label_tokens: expected two or more answer tokens, got {list(tokens)!r}.")
        self.tokens = list(tokens)
        self.register_buffer("label_ids", torch.full((len(tokens),), -1, dtype=torch.long))
        self.softcap = getattr(config, "final_logit_softcapping", None)
        self.scale = float(getattr(config, "logit_scale", None) or 1.0) / float(getattr(config, "logits_scaling", None) or 1.0)
        self.weight = nn.Parameter(torch.zeros(len(tokens), config.hidden_size)) if own_rows else None
        self.bias = nn.Parameter(torch.zeros(len(tokens))) if own_rows and bias else None

    @torch.no_grad()
    def bind(self, tokenizer, lm_head: nn.Module | None = None) -> None:
        """Set the label ids from the tokenizer (`label_token_ids`); with own rows, copy them from `lm_head`."""
        self.label_ids.copy_(torch.tensor(label_token_ids(tokenizer, self.tokens)))
        if self.weight is not None and lm_head is not None:
            self.weight.copy_(lm_head.weight[self.label_ids])
            if self.bias is not None:
                self.bias.copy_(lm_head.bias[self.label_ids])

    def forward(self, pooled: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
        if bool((self.label_ids < 0).any()):
            raise ValueError("LabelLogits: the label ids are not set: build the model with build_model or load_model_folder.")
        if self.weight is not None:
            weight, bias = self.weight, self.bias
        else:
            weight = lm_head.weight[self.label_ids]  # (K, H): only the label rows
            bias = None if getattr(lm_head, "bias", None) is None else lm_head.bias[self.label_ids]
        logits = F.linear(pooled.to(weight.dtype), weight, bias) * self.scale  # (B, K)
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits


def check_decoder_settings(cfg, decoder: bool | None) -> None:
    """Refuse settings that do nothing or make no sense for the backbone's kind, before a run writes anything.

    Args:
        cfg: the run's `kagglekit.config.Config`.
        decoder: `backbone_kind` of ``cfg.backbone`` is "decoder"; None: unknown (the backbone checks report it).
    """
    if decoder is None:
        return
    if not decoder:
        if cfg.template:
            raise ValueError(f"config key 'template' is set but backbone {cfg.backbone} is an encoder, which reads the pair as "
                             "two texts (text_a, text_b), not as one prompt: leave template empty, or use a decoder backbone "
                             "(a causal LM folder).")
        if cfg.head == "token_logits":
            raise ValueError(f"head=token_logits scores with a causal LM's next-token logits, but backbone {cfg.backbone} is an "
                             "encoder: use another head (head=last_token works on encoders too), or a decoder backbone.")
        return
    pool = cfg.head_pool if cfg.head in ("weighted_layers", "cnn", "lstm") else ""
    if cfg.head in _FIRST_TOKEN_HEADS or pool == "cls":
        what = f"head={cfg.head}" + (f" with head_pool={pool}" if pool else "")
        raise ValueError(f"{what} reads the first token, and in a decoder ({cfg.backbone}) the first token has seen nothing "
                         "but itself: use head=last_token or head=token_logits (or a pooling over all tokens: mean, max, "
                         "attention).")


def lm_head_output(backbone: nn.Module, label_tokens: Sequence[str], num_outputs: int, feature_names: Sequence[str], *,
                   own_rows: bool = False) -> LabelLogits:
    """The output layer of ``head="token_logits"``: the backbone's LM head restricted to `label_tokens`, checked
    against the model's outputs (one: two tokens, their log-odds; C: C tokens) and inputs (no numeric features).
    `own_rows`: the label rows as trainable parameters of their own (LoRA: see `LabelLogits`)."""
    if backbone.get_output_embeddings() is None:
        raise ValueError(f"head 'token_logits' scores with the backbone's LM head, and {type(backbone).__name__} has none: it needs "
                         "a causal LM with its head (AutoModelForCausalLM; build_model loads it so for this head).")
    if feature_names:
        raise ValueError(f"head 'token_logits' scores the last token's state with the LM head alone: the numeric features "
                         f"{list(feature_names)} cannot join it. Use head='last_token', or no features.")
    count = len(label_tokens)
    if count != num_outputs and not (num_outputs == 1 and count == 2):
        want = "2 (one output is the log-odds of the last token against the first)" if num_outputs == 1 else f"{num_outputs}, one per output"
        raise ValueError(f"label_tokens {list(label_tokens)!r}: {count} token(s) for {num_outputs} output(s); give {want}.")
    bias = getattr(backbone.get_output_embeddings(), "bias", None) is not None
    return LabelLogits(label_tokens, backbone.config, own_rows=own_rows, bias=bias)


def decoder_template(cfg, recipe) -> str:
    """The prompt template of a decoder backbone (``cfg.template`` or the recipe's default, checked by
    `Recipe.prompt_template`), or "" for an encoder; settings that make no sense for the backbone's kind are
    refused first (`check_decoder_settings`). The runner records it in the recipe state for predict."""
    kind = backbone_kind(cfg.backbone)  # None: no readable config.json, which the backbone checks report
    check_decoder_settings(cfg, None if kind is None else kind == "decoder")
    return recipe.prompt_template(cfg) if kind == "decoder" else ""


def check_label_tokens(cfg, num_outputs: int) -> None:
    """``head: token_logits``: each of ``label_tokens`` must be one token of the backbone's tokenizer, and there must be
    one per output (two for a single score); checked before a run writes anything. Other heads: nothing to check."""
    if cfg.head != "token_logits":
        return
    from transformers import AutoTokenizer  # the folder is checked already (check_backbone): its own tokenizer, offline

    count = len(cfg.label_tokens)
    if count != num_outputs and not (num_outputs == 1 and count == 2):
        raise ValueError(f"label_tokens {cfg.label_tokens!r}: head=token_logits scores one token per output, and output={cfg.output} "
                         f"has {num_outputs} here (the training labels' classes): give {num_outputs} tokens, lowest class first.")
    try:
        label_token_ids(AutoTokenizer.from_pretrained(str(cfg.backbone), local_files_only=True), cfg.label_tokens)
    except ValueError as err:
        raise ValueError(f"backbone {cfg.backbone}: {err}") from None


def check_label_ids(label_logits: LabelLogits, tokenizer, folder) -> None:
    """A model folder's tokenizer must still map the label tokens to the ids its weights were trained to score."""
    saved = label_logits.label_ids.tolist()
    try:
        found = label_token_ids(tokenizer, label_logits.tokens)
    except ValueError as err:
        found = str(err)
    if found != saved:
        raise ValueError(f"model folder {folder}: its tokenizer maps the label tokens {label_logits.tokens!r} to {found}, but the "
                         f"model was trained on the ids {saved}: the tokenizer files were replaced. Re-download the model dataset.")
