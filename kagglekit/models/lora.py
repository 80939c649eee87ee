"""LoRA adapters through peft on any backbone, and the 8- or 4-bit frozen base of QLoRA (bitsandbytes).

`add_lora` puts adapters into a backbone in place (peft's ``inject_adapter_in_model``: the backbone keeps its
class, so the kit's heads, layer lookups, LLRD and adversaries see the model they know) and freezes every base
weight. A fold folder saves `own_state` (adapters, head, output layer), never the base, and `AdapterLoad`
puts it back on its base; `merge_adapters` folds the adapters into the base weights for inference, and
`quantize_linears` quantises the merged layers after.
peft and bitsandbytes are imported here only, and only when a run asks for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

__all__ = ["ADAPTER", "add_lora", "check_lora_settings", "check_quantize", "compute_dtype", "linear_names", "AdapterLoad",
           "merge_adapters", "own_state", "prepare_kbit_training", "quantize_linears", "quantized_load_options", "require_peft",
           "resolve_targets", "trainable_counts"]

ADAPTER = "default"  # peft's adapter name; a fold folder holds one adapter
_MARK = ".lora_"  # in the names of peft's adapter tensors: lora_A, lora_B
_WHEEL = "offline: attach a dataset holding its wheel and pip install --no-index --no-deps <the wheel>"


def require_peft():
    """The peft module, or a ValueError that says how to install it (the command line prints it as one line)."""
    try:
        import peft
    except ImportError:
        raise ValueError(f"LoRA (lora_r > 0, or a fold folder holding adapters) needs the peft package, which is not installed: "
                         f"pip install peft (the extra kagglekit[llm]); {_WHEEL}.") from None
    return peft


def _is_linear(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2's transposed linear layer
    except ImportError:
        return False
    return isinstance(module, Conv1D)


def linear_names(backbone: nn.Module) -> list[str]:
    """Full names of the backbone's linear layers that may take adapters: every one but its LM head."""
    getter = getattr(backbone, "get_output_embeddings", None)
    head = getter() if callable(getter) else None
    return [name for name, module in backbone.named_modules() if name and _is_linear(module) and module is not head]


def resolve_targets(backbone: nn.Module, targets: Sequence[str]) -> list[str]:
    """The module names peft targets: ``["all-linear"]`` → the short names of every linear layer (`linear_names`);
    a list of names → itself, each checked to name a linear layer (a short name such as ``q_proj``, or a full one).

    Raises:
        ValueError: a name that is no linear layer of the backbone, listing the names it has.

    Example:
        >>> resolve_targets(llama, ["all-linear"])
        ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']
    """
    names = linear_names(backbone)
    short = sorted({name.rsplit(".", 1)[-1] for name in names})
    if list(targets) == ["all-linear"]:
        return short
    missing = [t for t in targets if not any(name == t or name.endswith("." + t) for name in names)]
    if missing:
        raise ValueError(f"lora_targets: {missing} is no linear layer of the {type(backbone).__name__} backbone; its linear layers "
                         f"are named {short}: name some of them, or use lora_targets=all-linear.")
    return list(targets)


def add_lora(backbone: nn.Module, *, r: int, alpha: float, dropout: float, targets: Sequence[str]) -> dict:
    """Put LoRA adapters (rank `r`) into `backbone`'s targeted linear layers, in place, and freeze every other weight.

    Each adapter's B matrix starts at zero, so the model computes exactly what the base does until it trains.

    Args:
        backbone: a transformers model (encoder or decoder).
        r: the adapters' rank.
        alpha: their scaling: the update B·A is multiplied by alpha / r.
        dropout: dropout on each adapter's input, in training.
        targets: ``["all-linear"]`` or module names (`resolve_targets`).

    Returns:
        The adapters' settings with the targets resolved (``r``, ``alpha``, ``dropout``, ``targets``): what a model
        folder records to put the same adapters back.

    Example:
        >>> add_lora(model.backbone, r=8, alpha=16, dropout=0.05, targets=["all-linear"])
    """
    peft = require_peft()
    resolved = resolve_targets(backbone, targets)
    config = peft.LoraConfig(r=int(r), lora_alpha=float(alpha), lora_dropout=float(dropout), target_modules=resolved, bias="none")
    peft.inject_adapter_in_model(config, backbone, adapter_name=ADAPTER)
    for name, param in backbone.named_parameters():
        param.requires_grad_(_MARK in "." + name)
    return {"r": int(r), "alpha": float(alpha), "dropout": float(dropout), "targets": resolved}


def own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state-dict entries a LoRA model folder holds: everything outside ``model.backbone`` (head, output layer,
    feature statistics, the label rows of token_logits) and the adapters; the base's weights stay in the base folder."""
    return {name: tensor for name, tensor in model.state_dict().items() if not name.startswith("backbone.") or _MARK in name}


def trainable_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters, a tied weight counted once."""
    params = list(model.parameters())  # each parameter once, tied or not
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


@torch.no_grad()
def merge_adapters(backbone: nn.Module) -> int:
    """Fold every adapter into its base layer's weight (W + alpha/r · B·A) and put the plain layer back in its place;
    returns how many layers were merged. The model then computes what it did with the adapters, without them."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, module) for name, module in backbone.named_modules() if isinstance(module, BaseTunerLayer)]
    for name, module in layers:
        module.merge()
        parent, _, child = name.rpartition(".")
        setattr(backbone.get_submodule(parent) if parent else backbone, child, module.get_base_layer())
    return len(layers)


def check_lora_settings(cfg, device) -> None:
    """Before a run writes anything: with ``lora_r`` > 0, peft is installed, each of ``lora_targets`` names a linear layer
    of the backbone (its structure built on the meta device: nothing is read or allocated), and ``quantize`` can run
    on `device`."""
    if cfg.lora_r == 0:
        return
    require_peft()
    check_quantize(cfg.quantize, device)
    from kagglekit.models.backbones import backbone_from_config

    with torch.device("meta"):
        backbone = backbone_from_config(cfg.backbone)
    try:
        resolve_targets(backbone, cfg.lora_targets)
    except ValueError as err:
        raise ValueError(f"backbone {cfg.backbone}: {err}") from None


# ---------------------------------------------------------------------------------------------- quantisation (CUDA)


def check_quantize(quantize: str, device) -> None:
    """Refuse ``quantize`` 8bit/4bit off CUDA or without bitsandbytes, before a run writes anything."""
    if quantize == "none":
        return
    if torch.device(device).type != "cuda":
        raise ValueError(f"quantize={quantize}: 8- and 4-bit weights (bitsandbytes) need a CUDA device, and this run's device is "
                         f"{device}. Set quantize=none for a CPU run (LoRA trains on the full-precision base), or train on a GPU.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ValueError(f"quantize={quantize} needs the bitsandbytes package, which is not installed: pip install bitsandbytes "
                         f"({_WHEEL}), or set quantize=none.") from None


def compute_dtype(precision: str) -> torch.dtype:
    """The dtype quantised layers compute in: the run's precision (fp16 on a T4, bf16 on an A100; fp32 stays fp32)."""
    return {"fp16": torch.float16, "bf16": torch.bfloat16}.get(precision, torch.float32)


def quantized_load_options(quantize: str, device, dtype: torch.dtype) -> dict:
    """``from_pretrained`` options that load a base in 8 bits (LLM.int8) or 4 bits (NF4, double quantisation) onto `device`."""
    import transformers
    from transformers import BitsAndBytesConfig

    if quantize == "8bit":
        config = BitsAndBytesConfig(load_in_8bit=True)
    else:
        config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                    bnb_4bit_compute_dtype=dtype)
    device = torch.device(device)
    index = device.index if device.index is not None else torch.cuda.current_device()
    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {"quantization_config": config, key: dtype, "device_map": {"": index}}


def prepare_kbit_training(backbone: nn.Module) -> nn.Module:
    """peft's preparation of a quantised base for training (its norms and embeddings in fp32); the kit turns gradient
    checkpointing on itself (non-reentrant, `kagglekit.models.surgery.set_gradient_checkpointing`)."""
    return require_peft().prepare_model_for_kbit_training(backbone, use_gradient_checkpointing=False)


@torch.no_grad()
def quantize_linears(module: nn.Module, quantize: str, device, dtype: torch.dtype) -> int:
    """Replace every plain linear layer of `module` (but its LM head) by a bitsandbytes 8- or 4-bit one on `device`;
    returns how many. The weights are quantised as they move to the GPU, as bitsandbytes documents it."""
    import bitsandbytes as bnb

    count = 0
    for name in linear_names(module):
        layer = module.get_submodule(name)
        if type(layer) is not nn.Linear:
            continue
        bias = layer.bias is not None
        if quantize == "8bit":
            new = bnb.nn.Linear8bitLt(layer.in_features, layer.out_features, bias=bias, has_fp16_weights=False, threshold=6.0)
        else:
            new = bnb.nn.Linear4bit(layer.in_features, layer.out_features, bias=bias, compute_dtype=dtype, quant_type="nf4")
        new.load_state_dict({k: v.to(torch.float16) for k, v in layer.state_dict().items()})
        parent, _, child = name.rpartition(".")
        setattr(module.get_submodule(parent) if parent else module, child, new.to(device))
        count += 1
    return count


# ---------------------------------------------------------------------------------------------- a LoRA model folder


@dataclass
class AdapterLoad:
    """How a LoRA model folder goes back onto its base: the base found and checked, how it loads, what follows.

    `load_model_folder` builds the model on ``base`` with ``load_options`` (the folder's structure: the same adapters
    put in), then `finish` copies the folder's own weights in (adapters, head, output layer), merges and quantises.
    The run's ``quantize`` (8bit/4bit) applies on CUDA: without merging, the base loads quantised and the adapters run
    beside it; with merging, the base loads in fp16, the adapters are merged, then the merged layers are quantised.
    Off CUDA the base is fp32 whatever the run's quantize (with a warning: scores differ slightly).
    """

    base: Path  # the base model's folder
    identity: dict  # what the folder recorded of it (kagglekit.json "base_model")
    load_options: dict  # from_pretrained options of the base
    merge: bool
    quantize: str  # "none" off CUDA
    device: torch.device
    dtype: torch.dtype  # the compute dtype of quantised layers

    @classmethod
    def plan(cls, folder, meta, device="cpu", *, base_model=None, merge_adapter: bool | None = None,
             quantize: str | None = None) -> "AdapterLoad":
        """Find the folder's base (`kagglekit.models.base_model.locate_base`) and decide how it loads.

        Args:
            folder: the model folder; meta: its `kagglekit.run.FoldMeta`.
            device: where the model goes.
            base_model: the base's folder, or folders to find it among; None: the one recorded at training.
            merge_adapter: merge the adapters into the base; None: the run's config key ``merge_adapter``.
            quantize: none | 8bit | 4bit: the base's weights at predict (predict's ``--precision 8bit``); None: as
                trained (the run's ``quantize``).

        Raises:
            ValueError: peft is missing, or the base differs from the recorded one.
            FileNotFoundError: the recorded base is gone and no `base_model` is given.
        """
        import warnings

        from kagglekit.kaggle import resolve_precision
        from kagglekit.models.backbones import fp32_load_options
        from kagglekit.models.base_model import locate_base

        require_peft()
        identity = meta.extra.get("base_model")
        if not isinstance(identity, dict) or "files" not in identity:
            raise ValueError(f"model folder {folder}: its kagglekit.json records LoRA adapters but not their base model "
                             "('base_model'): it was edited or written by another tool; re-download or retrain the fold.")
        candidates = [base_model] if isinstance(base_model, (str, os.PathLike)) else list(base_model or ())
        base = locate_base(identity, candidates, folder=folder)
        device = torch.device(device)
        merge = bool(identity.get("merge_adapter", False)) if merge_adapter is None else bool(merge_adapter)
        asked, dtype, options = quantize is not None, torch.float32, fp32_load_options()
        quantize = identity.get("quantize", "none") if quantize is None else quantize
        if quantize != "none" and device.type != "cuda" and not asked:
            warnings.warn(f"model folder {folder} was trained on its base quantised (quantize={quantize}); on {device} it predicts "
                          "with the full-precision base (bitsandbytes needs CUDA), so its scores differ slightly from a GPU's.",
                          stacklevel=3)
            quantize = "none"
        if quantize != "none":
            check_quantize(quantize, device)
            dtype = compute_dtype(resolve_precision("auto", device))
            options = quantized_load_options(quantize, device, dtype) if not merge else {k: torch.float16 for k in options}
        return cls(Path(base), dict(identity), options, merge, quantize, device, dtype)

    def finish(self, model: nn.Module, weights: Path, folder) -> nn.Module:
        """Copy the folder's own weights (file `weights`) into `model`, built on the base; merge and quantise as planned.

        Raises:
            ValueError: the file does not hold exactly this model's adapters and head.
        """
        from safetensors.torch import load_file

        saved, expected = load_file(str(weights)), own_state(model)
        if set(saved) != set(expected):
            extra, missing = sorted(set(saved) - set(expected)), sorted(set(expected) - set(saved))
            raise ValueError(f"model folder {folder}: its {weights.name} does not hold this model's adapters and head "
                             f"({len(missing)} missing, e.g. {missing[:2]}; {len(extra)} unknown, e.g. {extra[:2]}): re-download or "
                             "retrain the fold.")
        model.load_state_dict(saved, strict=False)  # copies into the model's own dtypes; the base's weights stay
        if self.merge:
            merge_adapters(model.backbone)
            if self.quantize != "none":
                quantize_linears(model.backbone, self.quantize, self.device, self.dtype)
        model.base_identity = dict(self.identity)
        return model
