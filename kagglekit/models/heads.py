"""Pooling heads by name: token states (B, T, H) and a mask (B, T) → one vector per row (B, F).

Every head honours one contract: ``forward(hidden, mask, **extra)`` returns (B, F) and
``out_features`` is F. Heads that need more than the last layer say so (``needs_hidden_states``:
``all_hidden``, the tuple of every layer's states, embeddings first; ``needs_pooler``:
``pooler_output``; ``needs_lm_head``: the model scores the pooled vector with the backbone's LM head
instead of a new output layer). Padding tokens never change a head's output, and a row with no real token
gives zeros, not NaN. Masks are right-padded (ones, then zeros), as the kit's collator makes them
(`last_token` and `token_logits` take left-padded ones too).

Each head takes ``layernorm=True`` for a LayerNorm on its output, before the output layer.
"""

from __future__ import annotations

import inspect
from typing import Sequence

import torch
from torch import nn

POOLS = ("cls", "mean", "max", "attention")


# --------------------------------------------------------------------------------------------------
# Masked reductions over tokens: (B, T, H) × (B, T) → (B, H)


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    total = (hidden * weights).sum(dim=1)  # (B, H)
    count = weights.sum(dim=1).clamp(min=1.0)  # (B, 1); an empty row gives zeros, not NaN
    return total / count


def masked_max(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    real = mask.unsqueeze(-1).bool()  # (B, T, 1)
    filled = hidden.masked_fill(~real, torch.finfo(hidden.dtype).min)
    out = filled.max(dim=1).values  # (B, H)
    return out.masked_fill(~real.any(dim=1), 0.0)  # an empty row gives zeros, not -inf


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """The position of each row's last real token, shape (B,), for right- and left-padded masks alike; 0 for an empty row."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)  # (B, T)
    return torch.where(mask.bool(), positions, -1).max(dim=1).values.clamp(min=0)


def last_token(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each row's state at its last real token (B, H); zeros for a row with no real token."""
    rows = torch.arange(hidden.shape[0], device=hidden.device)
    out = hidden[rows, last_token_index(mask)]  # (B, H)
    return out * mask.bool().any(dim=1, keepdim=True).to(out.dtype)


class AttentionPool(nn.Module):
    """Masked attention pooling: a score per token (a small tanh MLP), softmax over real tokens."""

    def __init__(self, hidden_size: int, attention_size: int | None = None):
        super().__init__()
        attention_size = attention_size or hidden_size
        self.score = nn.Sequential(nn.Linear(hidden_size, attention_size), nn.Tanh(), nn.Linear(attention_size, 1))

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        scores = self.score(hidden).squeeze(-1).float()  # (B, T); softmax in fp32 under autocast
        real = mask.bool()
        scores = scores.masked_fill(~real, torch.finfo(scores.dtype).min)
        weights = torch.softmax(scores, dim=1) * real  # (B, T); zero on padding, all zero on an empty row
        return torch.einsum("bt,bth->bh", weights.to(hidden.dtype), hidden)


def _pool(kind: str, hidden_size: int) -> nn.Module | None:
    """A pooling module for `kind`, or None for the parameter-free ones (see `_reduce`)."""
    if kind not in POOLS:
        raise ValueError(f"head option pool={kind!r}: valid pools are {list(POOLS)}.")
    return AttentionPool(hidden_size) if kind == "attention" else None


def _reduce(kind: str, module: nn.Module | None, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if kind == "cls":
        return hidden[:, 0]
    if kind == "mean":
        return masked_mean(hidden, mask)
    if kind == "max":
        return masked_max(hidden, mask)
    return module(hidden, mask)


# --------------------------------------------------------------------------------------------------
# Heads


class Head(nn.Module):
    """Base class: subclasses set ``out_features`` and implement ``pool``; the optional LayerNorm is here."""

    needs_hidden_states = False
    needs_pooler = False

    def __init__(self, out_features: int, layernorm: bool = False):
        super().__init__()
        self.out_features = out_features
        self.norm = nn.LayerNorm(out_features) if layernorm else nn.Identity()

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor, **extra) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor, **extra) -> torch.Tensor:
        return self.norm(self.pool(hidden, mask, **extra))


class ClsHead(Head):
    """The first token's state (BERT's [CLS], RoBERTa's <s>)."""

    def __init__(self, hidden_size: int, *, layernorm: bool = False):
        super().__init__(hidden_size, layernorm)

    def pool(self, hidden, mask, **extra):
        return hidden[:, 0]


class ClsPoolerHead(Head):
    """The first token's state concatenated with the backbone's pooler output (B, 2H)."""

    needs_pooler = True

    def __init__(self, hidden_size: int, *, layernorm: bool = False):
        super().__init__(2 * hidden_size, layernorm)

    @staticmethod
    def check_backbone(backbone: nn.Module) -> None:
        if getattr(backbone, "pooler", None) is None:
            kind = getattr(backbone.config, "model_type", type(backbone).__name__)
            raise ValueError(
                f"head 'cls_pooler' needs a backbone with a pooler output, and {kind} has none: "
                "use head=cls, mean or attention instead."
            )

    def pool(self, hidden, mask, pooler_output=None, **extra):
        if pooler_output is None:
            raise ValueError("head 'cls_pooler': the backbone returned no pooler_output; use head=cls instead.")
        return torch.cat([hidden[:, 0], pooler_output.to(hidden.dtype)], dim=-1)


class MeanPooling(Head):
    """Mean of the token states over real (mask == 1) tokens."""

    def __init__(self, hidden_size: int, *, layernorm: bool = False):
        super().__init__(hidden_size, layernorm)

    def pool(self, hidden, mask, **extra):
        return masked_mean(hidden, mask)


class MaxPooling(Head):
    """Elementwise max of the token states over real tokens."""

    def __init__(self, hidden_size: int, *, layernorm: bool = False):
        super().__init__(hidden_size, layernorm)

    def pool(self, hidden, mask, **extra):
        return masked_max(hidden, mask)


class AttentionPooling(Head):
    """Masked attention pooling over the last layer's token states."""

    def __init__(self, hidden_size: int, *, layernorm: bool = False):
        super().__init__(hidden_size, layernorm)
        self.attention = AttentionPool(hidden_size)

    def pool(self, hidden, mask, **extra):
        return self.attention(hidden, mask)


class WeightedLayersPooling(Head):
    """Learned softmax weights over the last `layers` hidden states, then `pool` over tokens.

    The weights start equal, so training begins from the plain average of the top layers.
    """

    needs_hidden_states = True

    def __init__(self, hidden_size: int, *, layers: int = 4, pool: str = "mean", layernorm: bool = False):
        super().__init__(hidden_size, layernorm)
        if layers < 1:
            raise ValueError(f"head 'weighted_layers': layers must be 1 or more, got {layers}.")
        self.layers = layers
        self.layer_logits = nn.Parameter(torch.zeros(layers))
        self.kind = pool
        self.reducer = _pool(pool, hidden_size)

    def pool(self, hidden, mask, all_hidden=None, **extra):
        stack = torch.stack(_top_layers(all_hidden, self.layers, "weighted_layers"))  # (L, B, T, H)
        weights = torch.softmax(self.layer_logits.float(), dim=0).to(stack.dtype)  # (L,)
        mixed = torch.einsum("l,lbth->bth", weights, stack)  # (B, T, H)
        return _reduce(self.kind, self.reducer, mixed, mask)


class ConcatLastKHead(Head):
    """The first token's state of each of the last `layers` layers, concatenated (B, layers * H)."""

    needs_hidden_states = True

    def __init__(self, hidden_size: int, *, layers: int = 4, layernorm: bool = False):
        if layers < 1:
            raise ValueError(f"head 'concat_last_k': layers must be 1 or more, got {layers}.")
        super().__init__(layers * hidden_size, layernorm)
        self.layers = layers

    def pool(self, hidden, mask, all_hidden=None, **extra):
        # top layer first, so the first H features are the plain CLS
        top = _top_layers(all_hidden, self.layers, "concat_last_k")[::-1]
        return torch.cat([layer[:, 0] for layer in top], dim=-1)


class CnnHead(Head):
    """1-D convolutions over the token states (one per kernel size, ReLU), then `pool` over tokens.

    Padded positions are zeroed before the convolution, so a real token next to the padding sees
    the same zeros as at the end of an unpadded row.
    """

    def __init__(self, hidden_size: int, *, hidden: int = 0, kernels: Sequence[int] = (3,), pool: str = "max", layernorm: bool = False):
        kernels = tuple(int(k) for k in kernels)
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"head 'cnn': kernels must be odd sizes >= 1 (same-length output), got {list(kernels)}.")
        channels = hidden or hidden_size
        super().__init__(channels * len(kernels), layernorm)
        self.convs = nn.ModuleList(nn.Conv1d(hidden_size, channels, k, padding=k // 2) for k in kernels)
        self.kind = pool
        self.reducer = _pool(pool, self.out_features)

    def pool(self, hidden, mask, **extra):
        x = (hidden * mask.unsqueeze(-1).to(hidden.dtype)).transpose(1, 2)  # (B, H, T)
        feats = torch.cat([torch.relu(conv(x)) for conv in self.convs], dim=1).transpose(1, 2)  # (B, T, C*K)
        return _reduce(self.kind, self.reducer, feats, mask)


class LstmHead(Head):
    """A bidirectional LSTM over the token states, then `pool` over tokens.

    Rows are packed by their real length, so the backward direction starts at the last real token
    and padding never enters the recurrence.
    """

    def __init__(self, hidden_size: int, *, hidden: int = 0, pool: str = "mean", layernorm: bool = False):
        per_direction = hidden or hidden_size // 2
        super().__init__(2 * per_direction, layernorm)
        self.lstm = nn.LSTM(hidden_size, per_direction, batch_first=True, bidirectional=True)
        self.kind = pool
        self.reducer = _pool(pool, self.out_features)

    def pool(self, hidden, mask, **extra):
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        lengths = mask.sum(dim=1).clamp(min=1).cpu()  # (B,); an empty row runs one (masked) step
        packed = pack_padded_sequence(hidden, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=hidden.shape[1])  # (B, T, 2h)
        return _reduce(self.kind, self.reducer, out, mask)


class LastTokenPooling(Head):
    """The state of each row's last real token: in a causal LM (decoder) the only one that has read the whole prompt.

    On an encoder it is the closing special token ([SEP], </s>), which attends to every token too.
    """

    def __init__(self, hidden_size: int, *, layernorm: bool = False):
        super().__init__(hidden_size, layernorm)

    def pool(self, hidden, mask, **extra):
        return last_token(hidden, mask)


class TokenLogitsHead(LastTokenPooling):
    """The last real token's state, scored by the backbone's own LM head instead of a new output layer.

    The pooling is `LastTokenPooling`'s; ``needs_lm_head`` tells `PairModel` to score the pooled vector
    with the LM head's rows of the label tokens (`kagglekit.models.decoder.LabelLogits`), so the
    backbone must be a causal LM with its head (``AutoModelForCausalLM``).
    """

    needs_lm_head = True


def _top_layers(all_hidden, k: int, name: str) -> list[torch.Tensor]:
    """The last `k` layers' token states (bottom to top); the embedding output is not a layer."""
    if all_hidden is None:
        raise ValueError(f"head {name!r} needs the backbone's hidden states (output_hidden_states).")
    layers = list(all_hidden[1:])
    if k > len(layers):
        raise ValueError(f"head {name!r}: layers={k} but the backbone has {len(layers)} layers; set head_layers <= {len(layers)}.")
    return layers[-k:]


HEADS: dict[str, type[nn.Module]] = {
    "cls": ClsHead,
    "cls_pooler": ClsPoolerHead,
    "mean": MeanPooling,
    "max": MaxPooling,
    "attention": AttentionPooling,
    "weighted_layers": WeightedLayersPooling,
    "concat_last_k": ConcatLastKHead,
    "cnn": CnnHead,
    "lstm": LstmHead,
    "last_token": LastTokenPooling,
    "token_logits": TokenLogitsHead,
}


def head_defaults(head: str | type[nn.Module]) -> dict:
    """The options a head takes besides the hidden size, with their defaults."""
    cls = HEADS[head] if isinstance(head, str) else head
    params = inspect.signature(cls.__init__).parameters
    return {name: p.default for name, p in params.items() if name not in ("self", "hidden_size")}


def head_options(head: str | type[nn.Module]) -> list[str]:
    """The options a head takes besides the hidden size (e.g. ``["layers", "pool", "layernorm"]``)."""
    return list(head_defaults(head))


def create_head(name: str | type[nn.Module], hidden_size: int, **options) -> nn.Module:
    """Build a head by name; a head class passes straight through.

    Args:
        name: a key of `HEADS`, or an ``nn.Module`` class taking ``(hidden_size, **options)``.
        hidden_size: the backbone's hidden size H.
        **options: the head's own options (see `head_options`); one it does not take is an error.

    Example:
        >>> head = create_head("weighted_layers", 768, layers=4, pool="attention", layernorm=True)
    """
    if isinstance(name, type) and issubclass(name, nn.Module):
        cls = name
    elif name in HEADS:
        cls = HEADS[name]
    else:
        raise ValueError(f"unknown head {name!r}; valid heads are {sorted(HEADS)}.")
    accepted = head_options(cls)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        label = name if isinstance(name, str) else cls.__name__
        raise ValueError(
            f"head {label!r} takes no option {unknown[0]!r} (config key 'head_{unknown[0]}'); its options are {accepted}. "
            "Leave that key at its default for this head."
        )
    return cls(hidden_size, **options)
