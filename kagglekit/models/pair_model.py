"""The pair model (backbone + pooling head + output layer) and its self-contained model folder.

A model folder holds the backbone config, the tokenizer files, ``model.safetensors`` (all weights)
and ``kagglekit.json`` (head settings, max_len, recipe state). It loads offline with nothing else:
the original backbone folder is not needed at inference.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from torch import nn

from kagglekit._io import atomic_dir, write_json
from kagglekit.models.heads import create_head

META_FILE = "kagglekit.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1
# Vocabulary files of the slow (Python) tokenizers. transformers 5 saves only tokenizer.json, but
# 4.x needs these to load some tokenizers (DeBERTa-v3 needs spm.model), so model folders keep them.
VOCAB_FILES = ("spm.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")


class PairModel(nn.Module):
    """Backbone → pooling head → dropout → linear.

    Args:
        backbone: a transformers encoder (``AutoModel``) returning ``last_hidden_state``.
        head: pooling head name or class (see `kagglekit.models.heads.HEADS`).
        num_outputs: 1 for regression or binary scores.
        dropout: dropout on the pooled vector.
    """

    def __init__(self, backbone: nn.Module, head: str = "mean", num_outputs: int = 1, dropout: float = 0.1):
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = create_head(head, hidden)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(self.head.out_features, num_outputs)
        std = getattr(backbone.config, "initializer_range", 0.02)
        nn.init.normal_(self.fc.weight, std=std)
        nn.init.zeros_(self.fc.bias)
        self.num_outputs = num_outputs
        self.source_dir: Path | None = None  # folder the backbone and tokenizer came from

    def forward(self, input_ids, attention_mask, token_type_ids=None) -> torch.Tensor:
        kwargs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        hidden = self.backbone(**kwargs).last_hidden_state  # (B, T, H)
        pooled = self.head(hidden, attention_mask)  # (B, F)
        logits = self.fc(self.dropout(pooled))  # (B, C)
        return logits.squeeze(-1) if self.num_outputs == 1 else logits


def _check_backbone_dir(path: Path) -> None:
    if not str(path) or not path.is_dir():
        raise FileNotFoundError(
            f"backbone: model folder not found: {path!s}. Set backbone to a local folder holding config.json, "
            "the tokenizer files and the weights (attach the model as a Kaggle dataset; hubs are unreachable)."
        )
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"backbone: {path} has no config.json: point backbone at the model folder itself.")


def load_backbone(path: str | os.PathLike):
    """Load a pretrained encoder and its tokenizer from a local folder, never from a hub."""
    from transformers import AutoModel, AutoTokenizer

    path = Path(path)
    _check_backbone_dir(path)
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    backbone = AutoModel.from_pretrained(str(path), local_files_only=True)
    return backbone, tokenizer


def build_model(backbone_dir: str | os.PathLike, *, head: str = "mean", num_outputs: int = 1, dropout: float = 0.1):
    """A PairModel on a pretrained backbone, and the backbone's tokenizer.

    Example:
        >>> model, tokenizer = build_model("models/tiny-bert", head="mean")
    """
    backbone, tokenizer = load_backbone(backbone_dir)
    model = PairModel(backbone, head=head, num_outputs=num_outputs, dropout=dropout)
    model.source_dir = Path(backbone_dir)
    return model, tokenizer


def save_model_folder(model: PairModel, tokenizer, folder: str | os.PathLike, meta: dict) -> Path:
    """Write a self-contained model folder atomically (the previous one stays until the new one is complete).

    Args:
        model: the trained PairModel.
        tokenizer: its tokenizer.
        folder: destination, e.g. ``run/fold0``.
        meta: kit settings to store in ``kagglekit.json``: at least ``head``, ``max_len``, ``activation``.
    """
    from safetensors.torch import save_model

    import kagglekit

    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        model.backbone.config.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        _keep_vocab_files(getattr(model, "source_dir", None), tmp)
        save_model(model, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        payload = {"format": FORMAT_VERSION, "kagglekit_version": kagglekit.__version__, **meta}
        payload.setdefault("num_outputs", model.num_outputs)
        write_json(tmp / META_FILE, payload)
    return folder


def _keep_vocab_files(source: Path | None, dest: Path) -> None:
    """Copy the source folder's vocabulary files that `save_pretrained` did not write."""
    if source is None:
        return
    for name in VOCAB_FILES:
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)


def read_meta(folder: str | os.PathLike) -> dict:
    folder = Path(folder)
    path = folder / META_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a kagglekit model folder: {META_FILE} is missing. Pass a run folder "
            "(with fold*/ inside) or a fold folder written by kagglekit train."
        )
    return json.loads(path.read_text(encoding="utf-8"))


def load_model_folder(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """Load a model folder written by `save_model_folder`, offline.

    Returns:
        (model in eval mode on `device`, tokenizer, meta dict).
    """
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    folder = Path(folder)
    meta = read_meta(folder)
    for name in ("config.json", WEIGHTS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"model folder {folder} is incomplete: {name} is missing. Re-download or re-attach the model dataset."
            )
    config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
    backbone = AutoModel.from_config(config)
    model = PairModel(backbone, head=meta["head"], num_outputs=meta.get("num_outputs", 1), dropout=meta.get("dropout", 0.0))
    load_model(model, str(folder / WEIGHTS_FILE), strict=True, device=str(device))
    model.source_dir = folder
    model.to(device).eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as err:
        raise FileNotFoundError(
            f"model folder {folder}: the tokenizer does not load ({err}). The folder must hold the tokenizer "
            "files saved by kagglekit train; re-download the model dataset."
        ) from err
    return model, tokenizer, meta
