"""Backbone surgery before fine-tuning: dropout rates, top-layer re-init, freezing, checkpointing, Mixout.

Every function works on a transformers encoder (``AutoModel``) of the bert, roberta, xlm-roberta,
electra, deberta-v2, nezha and funnel families, and on the layers and token embedding of causal LMs
(llama, qwen2, gemma2 ...), and changes it in place; `apply_surgery` runs them in the order a
training loop needs.

About 365 lines: each operation is short, but each must find the layers, dropout keys and embeddings
of seven architectures that name them differently; that lookup is shared and lives here with them.
"""

from __future__ import annotations

import copy
import inspect
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kagglekit._keys import RATE

SUPPORTED_ARCHS = ("bert", "roberta", "xlm-roberta", "electra", "deberta-v2", "nezha", "funnel")

# Config keys holding dropout rates, most specific first. "hidden" covers every dropout outside the
# attention probabilities, so hidden=0, attention=0 leaves no random op in the forward pass; that is
# why funnel's (and BART-style) activation_dropout follows the hidden rate.
_HIDDEN_KEYS = ("hidden_dropout_prob", "hidden_dropout", "dropout")
_ATTENTION_KEYS = ("attention_probs_dropout_prob", "attention_dropout")
_EXTRA_HIDDEN_KEYS = ("activation_dropout",)
# Distinct rates no real config uses: a copy of the model built with them on the meta device shows
# which module attribute reads which config key, without guessing from module names.
_SENTINELS = (0.01234567, 0.02345678, 0.03456789, 0.04567891, 0.05678912)


def _arch(backbone_or_config) -> str:
    config = getattr(backbone_or_config, "config", backbone_or_config)
    return getattr(config, "model_type", None) or type(backbone_or_config).__name__


def _check_rate(name: str, rate: float | None, what: str = "a dropout rate") -> None:
    if rate is not None:
        RATE.check(name, rate, what=what, fix="use 0 to switch it off")


def _check_count(name: str, value: int, backbone: nn.Module, n_layers: int) -> None:
    if not 0 <= value <= n_layers:
        raise ValueError(f"{name}={value}: the {_arch(backbone)!r} backbone has {n_layers} layers; use 0 to {n_layers}.")


def _dropout_keys(config) -> tuple[list[str], list[str]]:
    """(hidden keys, attention keys) that `config` has."""
    hidden = [k for k in _HIDDEN_KEYS if hasattr(config, k)][:1]
    hidden += [k for k in _EXTRA_HIDDEN_KEYS if hasattr(config, k)]
    attention = [k for k in _ATTENTION_KEYS if hasattr(config, k)][:1]
    if not hidden and not attention:
        raise ValueError(
            f"{_arch(config)!r} config has none of the dropout keys {_HIDDEN_KEYS + _ATTENTION_KEYS}; "
            f"supported archs: {', '.join(SUPPORTED_ARCHS)}."
        )
    return hidden, attention


def dropout_overrides(config, hidden: float | None = None, attention: float | None = None) -> dict:
    """The config keys to set so that a backbone is built with these dropout rates.

    Args:
        config: the backbone's config (``AutoConfig.from_pretrained(path)``).
        hidden: rate of every dropout outside attention (embeddings, residual branches, FFN
            activations); None keeps the config's.
        attention: rate of the dropout on attention probabilities; None keeps the config's.

    Returns:
        ``{key: rate}``, e.g. ``{"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}``.

    Example:
        >>> config = AutoConfig.from_pretrained(path)
        >>> backbone = AutoModel.from_pretrained(path, **dropout_overrides(config, 0.0, 0.0))
    """
    _check_rate("hidden", hidden)
    _check_rate("attention", attention)
    hidden_keys, attention_keys = _dropout_keys(config)
    for name, rate, keys in (("hidden", hidden, hidden_keys), ("attention", attention, attention_keys)):
        if rate is not None and not keys:
            raise ValueError(f"{name}={rate}: {_arch(config)!r} config has no {name} dropout key; pass {name}=None.")
    overrides = {k: float(hidden) for k in hidden_keys if hidden is not None}
    overrides.update({k: float(attention) for k in attention_keys if attention is not None})
    return overrides


def _dropout_sites(backbone: nn.Module) -> list[tuple[str, str, str]]:
    """(module name, attribute, config key) of every float attribute holding a configured dropout rate:
    nn.Dropout's ``p`` and rates kept as plain floats (e.g. a ``dropout_prob`` handed to SDPA)."""
    hidden_keys, attention_keys = _dropout_keys(backbone.config)
    config = copy.deepcopy(backbone.config)
    by_value = {}
    for key, value in zip(hidden_keys + attention_keys, _SENTINELS):
        setattr(config, key, value)
        by_value[value] = key
    with torch.device("meta"):  # no memory, no init cost
        probe = type(backbone)(config)
    return [
        (name, attr, by_value[value])
        for name, module in probe.named_modules()
        for attr, value in vars(module).items()
        if type(value) is float and value in by_value
    ]


def set_dropout(backbone: nn.Module, hidden: float | None = None, attention: float | None = None) -> dict:
    """Change the dropout rates of an already built backbone: its config and every module that reads them.

    Gives the same modules as loading with `dropout_overrides`. Args as in `dropout_overrides`.

    Returns:
        The config keys set, as `dropout_overrides` gives them.
    """
    overrides = dropout_overrides(backbone.config, hidden, attention)
    if not overrides:
        return overrides
    for name, attr, key in _dropout_sites(backbone):
        if key not in overrides:
            continue
        try:
            module = backbone.get_submodule(name)
        except AttributeError:  # built without that part (e.g. add_pooling_layer=False)
            continue
        setattr(module, attr, overrides[key])
    for key, rate in overrides.items():
        setattr(backbone.config, key, rate)
    return overrides


def encoder_layers(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's transformer layers, bottom to top.

    bert-style encoders keep them in ``encoder.layer``; funnel in ``encoder.blocks`` (a list of
    blocks, flattened here) followed by its ``decoder.layers``, which run on top of the encoder;
    causal LMs (Llama, Qwen, Gemma ...) in their base model's ``layers``.
    """
    base = getattr(backbone, "base_model", backbone)
    if isinstance(getattr(base, "layers", None), nn.ModuleList) and isinstance(getattr(base, "embed_tokens", None), nn.Module):
        return list(base.layers)
    encoder = getattr(backbone, "encoder", None)
    if isinstance(getattr(encoder, "layer", None), nn.ModuleList):
        return list(encoder.layer)
    if isinstance(getattr(encoder, "blocks", None), nn.ModuleList):
        layers = [layer for block in encoder.blocks for layer in block]
        decoder = getattr(backbone, "decoder", None)
        return layers + list(getattr(decoder, "layers", []))
    raise ValueError(
        f"{_arch(backbone)!r} backbone ({type(backbone).__name__}): encoder layers not found in "
        f"encoder.layer or encoder.blocks; supported archs: {', '.join(SUPPORTED_ARCHS)}."
    )


@torch.no_grad()
def reinit_top_layers(backbone: nn.Module, n: int, *, pooler: bool = True) -> list[str]:
    """Re-draw the top `n` encoder layers (and the pooler) with the backbone's own initializer.

    Draws from torch's global RNG (seed it to repeat a run). Call it before `apply_mixout`: a
    MixLinear keeps the weight it saw as its target.

    Args:
        backbone: a transformers ``PreTrainedModel`` encoder.
        n: how many layers, counted from the top; 0 re-initialises only the pooler (if asked).
        pooler: also re-initialise ``backbone.pooler`` where there is one.

    Returns:
        Parameter-name prefixes re-initialised, e.g. ``["encoder.layer.11.", "pooler."]``.
    """
    layers = encoder_layers(backbone)
    _check_count("reinit_layers", n, backbone, len(layers))
    if not callable(getattr(backbone, "_init_weights", None)):
        raise ValueError(f"{type(backbone).__name__} has no _init_weights: pass a transformers PreTrainedModel.")
    targets = layers[len(layers) - n:]
    if pooler and isinstance(getattr(backbone, "pooler", None), nn.Module):
        targets.append(backbone.pooler)
    names = {id(module): name for name, module in backbone.named_modules()}
    for target in targets:
        tensors = list(target.parameters()) + list(target.buffers())
        # transformers 5 marks loaded tensors `_is_hf_initialized` and its init functions skip them;
        # lift the mark while re-drawing and put back what was there.
        saved = [t.__dict__.get("_is_hf_initialized") for t in tensors]
        for t in tensors:
            t._is_hf_initialized = False
        try:
            target.apply(backbone._init_weights)
            for norm in (m for m in target.modules() if isinstance(m, nn.LayerNorm)):
                norm.reset_parameters()  # ones and zeros, as every initializer; transformers 4.x funnel's skips them
        finally:
            for t, flag in zip(tensors, saved):
                if flag is None:
                    del t._is_hf_initialized
                else:
                    t._is_hf_initialized = flag
    return [names[id(target)] + "." for target in targets]


def _embedding_modules(backbone: nn.Module) -> list[nn.Module]:
    # electra projects small embeddings to the hidden width; the projection belongs to the embeddings.
    # A causal LM's token embedding is its base model's embed_tokens.
    base = getattr(backbone, "base_model", backbone)
    found = [getattr(backbone, name, None) for name in ("embeddings", "embeddings_project")] + [getattr(base, "embed_tokens", None)]
    return [m for m in found if isinstance(m, nn.Module)]


def freeze(backbone: nn.Module, *, embeddings: bool = False, bottom_layers: int = 0) -> int:
    """Stop training the embeddings and/or the bottom encoder layers (requires_grad=False).

    Args:
        embeddings: freeze ``backbone.embeddings`` (and electra's ``embeddings_project``).
        bottom_layers: how many encoder layers to freeze, counted from the bottom.

    Returns:
        The number of scalar parameters frozen.
    """
    layers = encoder_layers(backbone)
    _check_count("freeze_layers", bottom_layers, backbone, len(layers))
    if embeddings and not _embedding_modules(backbone):
        raise ValueError(f"freeze_embeddings=True: the {_arch(backbone)!r} backbone has no 'embeddings' module.")
    modules = (_embedding_modules(backbone) if embeddings else []) + layers[:bottom_layers]
    params = {id(p): p for m in modules for p in m.parameters()}  # by id: tied weights count once
    for p in params.values():
        p.requires_grad_(False)
    return sum(p.numel() for p in params.values())


def set_gradient_checkpointing(backbone: nn.Module, enabled: bool) -> None:
    """Switch activation (gradient) checkpointing on or off, non-reentrant where transformers allows.

    Non-reentrant checkpointing gives gradients to layers above frozen embeddings and replays the
    RNG state, so dropout and Mixout masks are the same in the recomputation.
    """
    supported = getattr(backbone, "supports_gradient_checkpointing", False)
    if not enabled:
        if supported:  # an unsupported backbone never checkpoints: nothing to switch off
            if hasattr(backbone, "activation_checkpointing_disable"):  # transformers 5: the old name warns
                backbone.activation_checkpointing_disable()
            else:
                backbone.gradient_checkpointing_disable()
        return
    if not supported:
        raise ValueError(
            f"gradient_checkpointing=True: {type(backbone).__name__} ({_arch(backbone)!r}) does not support "
            "gradient checkpointing in this transformers version; set gradient_checkpointing=False."
        )
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    elif "gradient_checkpointing_kwargs" in inspect.signature(backbone.gradient_checkpointing_enable).parameters:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    else:  # transformers < 4.35: reentrant only
        backbone.gradient_checkpointing_enable()


class MixLinear(nn.Linear):
    """nn.Linear with Mixout (Lee et al., ICLR 2020): in training each weight element is swapped for its
    pretrained value with probability `p` and the result rescaled so that E[W'] = W.

    The pretrained weight is a non-persistent buffer ``target``: state_dicts keep the keys of a
    plain nn.Linear, so saved folders load into an unmodified backbone. The bias is not mixed.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, p: float = 0.0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=dtype)
        self.p = p
        self.register_buffer("target", self.weight.detach().clone(), persistent=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear, p: float) -> "MixLinear":
        """A MixLinear sharing `linear`'s parameters, its current weight as the target."""
        mix = cls(linear.in_features, linear.out_features, linear.bias is not None, p, device="meta")
        mix.weight, mix.bias = linear.weight, linear.bias  # same Parameter objects: optimizers stay valid
        mix.target = linear.weight.detach().clone()
        return mix.train(linear.training)  # a new module starts in training mode; keep the model's mode

    def mixed_weight(self) -> torch.Tensor:
        """W' = T + M (W - T) / (1 - p), M ~ Bernoulli(1 - p) elementwise; W in eval or when p = 0.

        Algebraically equal to the paper's (M W + (1 - M) T - p T) / (1 - p); this form gives
        W' = W bit for bit when W = T, and W' = T exactly where an element is swapped.
        """
        if not self.training or self.p == 0:
            return self.weight
        keep = torch.empty_like(self.weight).bernoulli_(1 - self.p)  # (out, in), 1 = keep W
        return self.target + keep * (self.weight - self.target) / (1 - self.p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.mixed_weight(), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, p={self.p}"


def apply_mixout(backbone: nn.Module, p: float, *, layers: Sequence[int] | None = None) -> int:
    """Replace every nn.Linear in the encoder layers with a `MixLinear` whose target is its current weight.

    Args:
        backbone: the encoder, with its pretrained weights loaded.
        p: Mixout probability in [0, 1); 0 changes nothing. Applying again only changes p.
        layers: indices into `encoder_layers` to cover; None covers all.

    Returns:
        The number of MixLinear layers in the covered layers.
    """
    _check_rate("mixout", p, "the Mixout probability")
    if p == 0:
        return 0
    all_layers = encoder_layers(backbone)
    layers = range(len(all_layers)) if layers is None else layers
    if any(not 0 <= i < len(all_layers) for i in layers):
        raise ValueError(f"layers={list(layers)}: the {_arch(backbone)!r} backbone has layers 0 to {len(all_layers) - 1}; "
                         "pass indices in that range.")
    count = 0
    for layer in (all_layers[i] for i in layers):
        for name, module in list(layer.named_modules()):
            if isinstance(module, MixLinear):
                module.p = p
            elif type(module) is nn.Linear:  # not subclasses such as quantized linears
                parent_name, _, child = name.rpartition(".")
                setattr(layer.get_submodule(parent_name), child, MixLinear.from_linear(module, p))
            else:
                continue
            count += 1
    return count


def apply_surgery(
    backbone: nn.Module,
    *,
    reinit_layers: int = 0,
    reinit_pooler: bool = True,
    freeze_embeddings: bool = False,
    freeze_layers: int = 0,
    gradient_checkpointing: bool = False,
    mixout: float = 0.0,
) -> dict:
    """Apply the chosen surgery in place and return a summary for the run card.

    Order: re-init → freeze → Mixout → checkpointing. Mixout regularises a layer toward its
    *pretrained* weights; a re-initialised layer has none (its target would be random noise, a pull
    the re-init is meant to escape), and a frozen layer never moves (W = T, so Mixout is an identity
    at a cost), so Mixout covers only the layers between the frozen bottom and the re-initialised top.
    The pooler is re-initialised only together with layers (reinit_layers > 0).

    Args:
        reinit_layers: top encoder layers to re-draw with the backbone's initializer.
        reinit_pooler: with reinit_layers > 0, also re-draw the pooler where there is one.
        freeze_embeddings: stop training the embeddings.
        freeze_layers: bottom encoder layers to stop training.
        gradient_checkpointing: recompute activations in backward to save memory.
        mixout: Mixout probability in [0, 1).

    Example:
        >>> summary = apply_surgery(model.backbone, reinit_layers=1, mixout=0.1, gradient_checkpointing=True)
    """
    n_layers = len(encoder_layers(backbone))
    _check_rate("mixout", mixout, "the Mixout probability")  # every check before the first change
    _check_count("reinit_layers", reinit_layers, backbone, n_layers)
    _check_count("freeze_layers", freeze_layers, backbone, n_layers)
    if reinit_layers + freeze_layers > n_layers:
        raise ValueError(
            f"reinit_layers={reinit_layers} + freeze_layers={freeze_layers} exceeds the {n_layers} layers of the "
            f"{_arch(backbone)!r} backbone: a frozen re-initialised layer would stay random; lower one of them."
        )
    summary = {"reinit": [], "frozen_params": 0, "mixout_layers": 0, "mixout": mixout,
               "gradient_checkpointing": bool(gradient_checkpointing)}
    if reinit_layers:
        summary["reinit"] = reinit_top_layers(backbone, reinit_layers, pooler=reinit_pooler)
    if freeze_embeddings or freeze_layers:
        summary["frozen_params"] = freeze(backbone, embeddings=freeze_embeddings, bottom_layers=freeze_layers)
    summary["mixout_layers"] = apply_mixout(backbone, mixout, layers=range(freeze_layers, n_layers - reinit_layers))
    if gradient_checkpointing:
        set_gradient_checkpointing(backbone, True)
    return summary
