"""NeZha (BERT with functional relative positions), kept by the kit because transformers 5 dropped it.

Parameter names are those of transformers 4.x's ``NezhaModel``, so folders written by 4.x (``model.safetensors``
or ``pytorch_model.bin``) load with ``NezhaModel.from_pretrained(folder)``. Under transformers 5,
`register_nezha` makes ``AutoConfig``/``AutoModel`` resolve ``"nezha"`` to these classes. Under 4.x,
``AutoModel`` keeps mapping ``"nezha"`` to transformers' own class and `register_nezha` leaves it alone: the kit
loads NeZha folders with ``NezhaModel.from_pretrained`` there too, so results do not depend on the major version.
`NezhaForMaskedLM` (the encoder with BERT's MLM head) is what ``kagglekit pretrain`` trains.

One model family in one file, as transformers' ``modeling_nezha`` (about 400 lines): the encoder's parts, its
pooler and its MLM head share the config, the init and the checkpoint names, and are read together.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import BaseModelOutputWithPoolingAndCrossAttentions, MaskedLMOutput

__all__ = ["NezhaConfig", "NezhaModel", "NezhaForMaskedLM", "is_nezha_config", "register_nezha",
           "relative_position_table"]


class NezhaConfig(PretrainedConfig):
    """NeZha settings; fields and defaults as transformers 4.x's ``NezhaConfig`` (nezha-cn-base sizes).

    Args:
        max_relative_position: distances beyond this many tokens share one encoding (clipping).
        max_position_embeddings: kept for compatibility with 4.x folders; NeZha has no absolute positions and
            this implementation accepts longer inputs.
        Other arguments: as ``BertConfig``.
    """

    model_type = "nezha"

    # A hand-written __init__ (as remote-code configs have) works with both 4.x's plain class and 5.x's dataclass.
    def __init__(self, vocab_size=21128, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1,
                 max_position_embeddings=512, max_relative_position=64, type_vocab_size=2, initializer_range=0.02,
                 layer_norm_eps=1e-12, classifier_dropout=0.1, pad_token_id=0, bos_token_id=2, eos_token_id=3,
                 use_cache=True, **kwargs):
        super().__init__(pad_token_id=pad_token_id, bos_token_id=bos_token_id, eos_token_id=eos_token_id, **kwargs)
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.max_relative_position = max_relative_position
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        self.use_cache = use_cache


def relative_position_table(length: int, depth: int, max_relative_position: int, device=None) -> torch.Tensor:
    """Fixed sinusoid encoding of each key-minus-query distance, shared by keys and values.

    Entry ``[i, j]`` encodes ``clamp(j - i, -M, M) + M``. The paper writes the sinusoid of ``j - i``; the shift
    by ``M`` follows Huawei's released code and transformers 4.x, which the pretrained checkpoints were trained with.

    Returns:
        float32 tensor of shape (length, length, depth).
    """
    inv_freq = torch.exp(torch.arange(0, depth, 2, device=device).float() * (-math.log(10000.0) / depth))  # (D/2,)
    angles = torch.arange(2 * max_relative_position + 1, device=device).float()[:, None] * inv_freq  # (2M+1, D/2)
    table = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(1)[:, :depth]  # (2M+1, D): sin even, cos odd
    pos = torch.arange(length, device=device)
    distance = (pos[None, :] - pos[:, None]).clamp(-max_relative_position, max_relative_position)  # (T, T)
    return table[distance + max_relative_position]  # (T, T, D)


class NezhaEmbeddings(nn.Module):
    """Word + token-type embeddings; positions enter only inside attention."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids=None, token_type_ids=None, inputs_embeds=None) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (B, T, H)
        if token_type_ids is None:
            token_type_ids = torch.zeros(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        return self.dropout(self.LayerNorm(inputs_embeds + self.token_type_embeddings(token_type_ids)))


class NezhaSelfAttention(nn.Module):
    """Multi-head attention whose scores and outputs both add the relative-position encoding."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(f"hidden_size={config.hidden_size} is not a multiple of num_attention_heads="
                             f"{config.num_attention_heads}; pick a head count that divides it.")
        self.num_heads = config.num_attention_heads
        self.head_size = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = nn.Dropout(config.attention_probs_dropout_prob)

    def forward(self, hidden, mask, rel):
        """hidden (B, T, H), mask (B, 1, 1, T) additive, rel (T, T, D) -> context (B, T, H), probs (B, h, T, T)."""
        b, t, _ = hidden.shape
        q, k, v = (proj(hidden).view(b, t, self.num_heads, self.head_size).transpose(1, 2)  # (B, h, T, D)
                   for proj in (self.query, self.key, self.value))
        rel = rel.to(q.dtype)
        scores = q @ k.transpose(-1, -2) + torch.einsum("bhid,ijd->bhij", q, rel)  # (B, h, T, T)
        scores = scores / math.sqrt(self.head_size) + mask
        probs = self.dropout(scores.softmax(dim=-1))
        context = probs @ v + torch.einsum("bhij,ijd->bhid", probs, rel)  # (B, h, T, D)
        return context.transpose(1, 2).reshape(b, t, -1), probs


class NezhaResidualOutput(nn.Module):
    """dense -> dropout -> LayerNorm(x + residual): BERT's ``attention.output`` and ``output`` blocks."""

    def __init__(self, in_features: int, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x, residual):
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class NezhaAttention(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.self = NezhaSelfAttention(config)
        self.output = NezhaResidualOutput(config.hidden_size, config)

    def forward(self, hidden, mask, rel):
        context, probs = self.self(hidden, mask, rel)
        return self.output(context, hidden), probs


class NezhaIntermediate(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act] if isinstance(config.hidden_act, str) else config.hidden_act

    def forward(self, x):
        return self.act(self.dense(x))


class NezhaLayer(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.attention = NezhaAttention(config)
        self.intermediate = NezhaIntermediate(config)
        self.output = NezhaResidualOutput(config.intermediate_size, config)

    def forward(self, hidden, mask, rel):
        attended, probs = self.attention(hidden, mask, rel)  # (B, T, H)
        return self.output(self.intermediate(attended), attended), probs


class NezhaEncoder(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.layer = nn.ModuleList(NezhaLayer(config) for _ in range(config.num_hidden_layers))
        # transformers' gradient_checkpointing_enable() (4.x and 5.x) sets this flag and _gradient_checkpointing_func
        # on every module that has the attribute.
        self.gradient_checkpointing = False

    def forward(self, hidden, mask, rel, output_hidden_states=False, output_attentions=False):
        all_hidden = [hidden] if output_hidden_states else None
        all_probs = [] if output_attentions else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training:
                # positional tensors: reentrant checkpointing (4.x's default) only tracks positional inputs
                hidden, probs = self._gradient_checkpointing_func(layer.__call__, hidden, mask, rel)
            else:
                hidden, probs = layer(hidden, mask, rel)
            if output_hidden_states:
                all_hidden.append(hidden)
            if output_attentions:
                all_probs.append(probs)
        return hidden, _tuple_or_none(all_hidden), _tuple_or_none(all_probs)


def _tuple_or_none(items):
    return None if items is None else tuple(items)


class NezhaPooler(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return torch.tanh(self.dense(hidden[:, 0]))  # (B, H) from the first ([CLS]) token


class NezhaModel(PreTrainedModel):
    """Bare NeZha encoder returning ``last_hidden_state`` (B, T, H) and ``pooler_output`` (B, H).

    Args:
        config: a `NezhaConfig`.
        add_pooling_layer: build the tanh pooler over the first token (4.x checkpoints have it).

    Example:
        >>> model = NezhaModel.from_pretrained("models/nezha-cn-base")
        >>> out = model(input_ids, attention_mask=attention_mask, output_hidden_states=True)
    """

    config_class = NezhaConfig
    base_model_prefix = "nezha"  # 4.x heads (NezhaForMaskedLM, ...) keep the encoder under "nezha."
    supports_gradient_checkpointing = True
    # Older NeZha code saved the sinusoid table of every layer and BERT's index buffers; here they are recomputed.
    _keys_to_ignore_on_load_unexpected = [r"relative_positions_encoding\.positions_encoding",
                                          r"embeddings\.(token_type_ids|position_ids)$"]

    def __init__(self, config: NezhaConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = NezhaEmbeddings(config)
        self.encoder = NezhaEncoder(config)
        self.pooler = NezhaPooler(config) if add_pooling_layer else None
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """BERT's initialisation of one module (not its children); safe to call on any submodule.

        ``nn.init`` functions, not in-place tensor methods: transformers 5 swaps them during loading for versions
        that skip weights already read from the checkpoint.
        """
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            # a loaded table (flag set by transformers 5) kept its values above, so its padding row stays too
            if module.padding_idx is not None and not getattr(module.weight, "_is_hf_initialized", False):
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings.word_embeddings = value

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, inputs_embeds=None,
                output_attentions=None, output_hidden_states=None, return_dict=None):
        """Encode a batch.

        Args:
            input_ids: (B, T) token ids, or None when `inputs_embeds` (B, T, H) is given.
            attention_mask: (B, T), 1 for real tokens and 0 for padding; default all ones.
            token_type_ids: (B, T) segment ids; default all zeros.
            output_attentions: also return each layer's attention probabilities (B, h, T, T).
            output_hidden_states: also return the embeddings and every layer's output, each (B, T, H).
            return_dict: return a `BaseModelOutputWithPoolingAndCrossAttentions` (default) or a tuple.
        """
        cfg = self.config
        output_attentions = bool(getattr(cfg, "output_attentions", False) if output_attentions is None
                                 else output_attentions)
        output_hidden_states = bool(cfg.output_hidden_states if output_hidden_states is None else output_hidden_states)
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("NezhaModel.forward: pass exactly one of input_ids and inputs_embeds, got "
                             f"{'both' if input_ids is not None else 'neither'}.")

        hidden = self.embeddings(input_ids, token_type_ids, inputs_embeds)  # (B, T, H)
        b, t = hidden.shape[:2]
        if attention_mask is None:
            attention_mask = torch.ones(b, t, device=hidden.device)
        if attention_mask.shape != (b, t):
            raise ValueError(f"attention_mask must have shape (batch, seq_len) = {(b, t)}, "
                             f"got {tuple(attention_mask.shape)}.")
        # additive mask: 0 where attended, the dtype's most negative value on padding
        mask = (1.0 - attention_mask[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min  # (B,1,1,T)
        head_size = cfg.hidden_size // cfg.num_attention_heads
        rel = relative_position_table(t, head_size, cfg.max_relative_position, hidden.device)  # (T, T, D)

        hidden, all_hidden, all_probs = self.encoder(hidden, mask, rel, output_hidden_states, output_attentions)
        pooled = self.pooler(hidden) if self.pooler is not None else None  # (B, H)
        if not return_dict:
            return tuple(v for v in (hidden, pooled, all_hidden, all_probs) if v is not None)
        return BaseModelOutputWithPoolingAndCrossAttentions(
            last_hidden_state=hidden, pooler_output=pooled, hidden_states=all_hidden, attentions=all_probs)


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
        return nn.functional.linear(self.transform(hidden), word_embeddings, self.bias)  # (B, T, V)


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
        return MaskedLMOutput(logits=self.cls.predictions(hidden, self.get_input_embeddings().weight))


def is_nezha_config(path_or_dict) -> bool:
    """Whether a model folder, config.json file, config dict or config object describes a NeZha model.

    Raises:
        FileNotFoundError: a path is given but holds no config.json.
    """
    if isinstance(path_or_dict, PretrainedConfig):
        return path_or_dict.model_type == NezhaConfig.model_type
    if isinstance(path_or_dict, Mapping):
        return path_or_dict.get("model_type") == NezhaConfig.model_type
    path = Path(os.fspath(path_or_dict))
    file = path / "config.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"is_nezha_config: no config.json at {str(file)!r}; pass a model folder, "
                                "its config.json or a config dict.")
    return json.loads(file.read_text(encoding="utf-8")).get("model_type") == NezhaConfig.model_type


def register_nezha() -> bool:
    """Let ``AutoConfig``/``AutoModel`` build these classes for ``model_type="nezha"`` where transformers has none.

    Idempotent. Under transformers 4.x, whose own NeZha stays registered, nothing changes.

    Returns:
        True when ``"nezha"`` now resolves to the kit's classes, False when transformers keeps its own.
    """
    from transformers import AutoConfig, AutoModel
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING

    if NezhaConfig.model_type in CONFIG_MAPPING and CONFIG_MAPPING[NezhaConfig.model_type] is not NezhaConfig:
        return False
    AutoConfig.register(NezhaConfig.model_type, NezhaConfig, exist_ok=True)
    AutoModel.register(NezhaConfig, NezhaModel, exist_ok=True)
    return True
