"""Backbone folders: checked before a run writes anything, loaded offline (weights in fp32), or built from config.json.

Encoders load with ``AutoModel`` (the kit's own NeZha for NeZha folders); a decoder's loading lives in
`kagglekit.models.decoder`, and `backbone_from_config` rebuilds either. `kagglekit.models.pair_model`
re-exports these names, where they were first defined.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from kagglekit.models.decoder import backbone_kind

__all__ = ["BACKBONE_WEIGHTS", "VOCAB_FILES", "backbone_from_config", "check_backbone", "check_tokenizer_fits", "fp32_load_options",
           "keep_vocab_files", "load_backbone", "load_tokenizer"]

# Vocabulary files of the slow (Python) tokenizers. transformers 5 saves only tokenizer.json, but
# 4.x needs these to load some tokenizers (DeBERTa-v3 needs spm.model), so model folders keep them.
VOCAB_FILES = ("spm.model", "sentencepiece.bpe.model", "vocab.txt", "vocab.json", "merges.txt")
# Files that hold a checkpoint's weights (one of them, or a sharded index).
BACKBONE_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


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


def check_backbone(path: str | os.PathLike, key: str = "backbone", *, max_len: int = 0, setting: str = "max_len") -> int | None:
    """Fail before a run writes anything when the backbone folder cannot be trained as it is.

    Checked without loading the weights (`kagglekit.models.backbone_check`): the weight file (or every
    shard) is there, readable and complete; its shapes are those config.json gives (vocab_size,
    hidden_size, num_hidden_layers); the tokenizer files are there and belong to the embedding: every
    id and special token has a row, the pad id is config.json's, and the embedding has no more than a
    few spare rows.

    Args:
        path: the backbone folder.
        key: the config key that named it, for the messages (``embedding_model``).
        max_len: the row length the run asks for (0: derived later): more than the backbone's absolute position
            table holds is refused, under the config key `setting`.

    Returns:
        The most tokens a row may have (`backbone_check.position_limit`), None without an absolute position table.

    Raises:
        FileNotFoundError: the folder, config.json, the weights, a shard or the tokenizer files are missing.
        ValueError: a truncated or foreign weight file, shapes or a tokenizer that do not match, or a `max_len` above
            the position table.

    Example:
        >>> check_backbone("models/tiny-bert")
    """
    import json

    from kagglekit.models.backbone_check import check_max_len, check_shapes, check_tokenizer, embedding_rows, position_limit, weight_shapes

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
    limit = position_limit(shapes, config)
    check_max_len(max_len, limit, path, key, setting)
    return limit


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


def keep_vocab_files(source: Path | None, dest: Path) -> None:
    """Copy the `source` model folder's vocabulary files (`VOCAB_FILES`) that ``save_pretrained`` did not write into `dest`."""
    import shutil

    if source is None:
        return
    for name in VOCAB_FILES:
        if (source / name).is_file() and not (dest / name).exists():
            shutil.copyfile(source / name, dest / name)


def fp32_load_options() -> dict:
    """from_pretrained options that load the weights in fp32 whatever dtype the checkpoint was saved in.

    transformers 5 keeps a checkpoint's own dtype by default (an fp16 or bf16 ``model.safetensors``
    loads as fp16/bf16), where 4.x loaded fp32. Training needs fp32 master weights: autocast supplies
    the half precision, and GradScaler refuses fp16 gradients.
    """
    import transformers

    key = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
    return {key: torch.float32}


def load_backbone(path: str | os.PathLike, load_options: dict | None = None):
    """Load a pretrained encoder and its tokenizer from a local folder, never from a hub: in fp32, or as
    `load_options` (``from_pretrained`` options: a LoRA base quantised with bitsandbytes) say."""
    path = Path(path)
    tokenizer = load_tokenizer(path)
    options = fp32_load_options() if load_options is None else load_options
    backbone = _encoder_class(path).from_pretrained(str(path), local_files_only=True, **options)
    return backbone, tokenizer


def backbone_from_config(folder: str | os.PathLike, class_name: str | None = None):
    """The backbone described by ``folder/config.json``, randomly initialised: no weights are read.

    `class_name` is the class a model folder recorded (a decoder's ``backbone_class``), built in fp32; without
    it an encoder folder gives its ``AutoModel`` and a decoder folder its causal LM (`PairModel` keeps the bare
    model when its head does not score with the LM head). Under ``with torch.device("meta"):`` nothing is
    allocated either: the doctor counts parameters so.
    """
    from transformers import AutoConfig, AutoModel

    folder = Path(folder)
    if class_name is not None:
        from kagglekit.models.decoder import rebuild_backbone

        return rebuild_backbone(folder, class_name, fp32_load_options())
    if backbone_kind(folder) == "decoder":
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(str(folder), local_files_only=True))
    cls = _encoder_class(folder)
    config = (AutoConfig if cls is AutoModel else cls.config_class).from_pretrained(str(folder), local_files_only=True)
    return cls.from_config(config) if cls is AutoModel else cls(config)
