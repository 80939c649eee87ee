"""Check a backbone folder before a run writes anything: its weight files readable and complete, their
shapes those config.json describes, and its tokenizer the one that belongs to the embedding matrix.

The weights are not loaded: safetensors headers give names and shapes, a ``pytorch_model.bin`` is
memory-mapped. `kagglekit.models.pair_model.check_backbone` calls these.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

# The files from_pretrained reads the weights from, in the order it looks for them.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# The token embedding of every encoder family (bert ... deberta, nezha) and of decoders.
_EMBEDDING = re.compile(r"(?:^|\.)(?:word_embeddings|embed_tokens)\.weight$")
# A query projection: its input width is the hidden size (bert: query, deberta: query_proj, funnel: q_head ...).
_QUERY = re.compile(r"(?:^|\.)(?:query|query_proj|q_proj|q_head|q_lin)\.weight$")
# A transformer layer's index: encoder.layer.N (the bert family, deberta, nezha) or layers.N (decoders).
_LAYER = re.compile(r"(?:^|\.)encoder\.layers?\.(\d+)\.|^(?:model\.)?layers\.(\d+)\.")
# Embedding rows past the tokenizer's ids that are normal padding (to a multiple of 64 or 128, reserved
# ids): at most this many, or a tenth of the rows. More means the tokenizer belongs to a smaller vocabulary.
_SPARE_ROWS = 128
# An absolute position table: the longest sequence such an encoder can embed is its rows (bert, electra ...).
_POSITIONS = re.compile(r"(?:^|\.)embeddings\.position_embeddings\.weight$")
# Families whose position ids start after the pad id (roberta's convention): their limit is rows - pad_token_id - 1.
_PAD_OFFSET_POSITIONS = ("roberta", "xlm-roberta", "camembert", "xlm-roberta-xl", "data2vec-text", "mpnet", "longformer")
_FIX_WEIGHTS = "re-download the model dataset (a copy or upload that stopped part-way leaves such a file)"


def weight_shapes(folder: Path, key: str = "backbone") -> tuple[str, dict[str, tuple[int, ...]]]:
    """The weight file from_pretrained would read in `folder` and every tensor's shape, read from the
    headers (safetensors) or a memory map (``pytorch_model.bin``), shard by shard for an index.

    Args:
        folder: the backbone folder.
        key: the config key that named it, for the messages.

    Returns:
        (the file's name, {tensor name: shape}).

    Raises:
        FileNotFoundError: no weight file, or a shard the index names is missing.
        ValueError: a file that is truncated or not a checkpoint, or an index that is not JSON.

    Example:
        >>> name, shapes = weight_shapes(Path("models/tiny-bert"))
        >>> shapes["embeddings.word_embeddings.weight"]
        (1000, 64)
    """
    for name in WEIGHT_FILES:
        path = folder / name
        if not path.is_file():
            continue
        if not name.endswith(".index.json"):
            return name, _file_shapes(path, key)
        try:
            shards = sorted(set(json.loads(path.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{key} {folder}: {name} is not a shard index (JSON with a 'weight_map'): {err}. "
                             f"Re-download the model dataset.") from None
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{key} {folder}: {name} names {len(shards)} shard(s) but {missing[:3]} "
                                    f"{'is' if len(missing) == 1 else 'are'} missing: copy every shard of the checkpoint, or {_FIX_WEIGHTS}.")
        shapes: dict[str, tuple[int, ...]] = {}
        for shard in shards:
            shapes.update(_file_shapes(folder / shard, key))
        return name, shapes
    raise FileNotFoundError(f"{key} {folder} has no weights (none of {list(WEIGHT_FILES)}): point {key} at the folder of a "
                            "complete checkpoint, or re-download the model dataset.")


def _file_shapes(path: Path, key: str) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape of one weight file; a truncated or foreign file is refused, naming it."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:  # safe_open checks that the data the header describes is all there ("file not fully covered")
            with safe_open(str(path), framework="pt") as handle:
                return {name: tuple(handle.get_slice(name).get_shape()) for name in handle.keys()}
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{key} {path.parent}: {path.name} ({path.stat().st_size} bytes) is not a complete safetensors "
                             f"file ({err}): {_FIX_WEIGHTS}.") from None
    import torch

    try:
        try:  # a zip checkpoint (torch >= 1.6): memory-mapped, so nothing is read but the index
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap can only be used" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # the legacy format cannot be mapped
    except Exception as err:  # zip, pickle and torch errors alike: the file is not a readable checkpoint
        raise ValueError(f"{key} {path.parent}: {path.name} ({path.stat().st_size} bytes) is not a readable PyTorch checkpoint "
                         f"({str(err).splitlines()[0] if str(err) else type(err).__name__}): {_FIX_WEIGHTS}.") from None
    if not isinstance(state, dict):
        raise ValueError(f"{key} {path.parent}: {path.name} holds a {type(state).__name__}, not a state dict of tensors: "
                         "save the model with save_pretrained, or re-download the model dataset.")
    return {name: tuple(value.shape) for name, value in state.items() if isinstance(value, torch.Tensor)}


def embedding_rows(shapes: dict[str, tuple[int, ...]]) -> tuple[str, tuple[int, ...]] | None:
    """The token embedding's name and shape (the shortest name when a checkpoint has several), or None."""
    found = sorted((len(n), n) for n, s in shapes.items() if _EMBEDDING.search(n) and len(s) == 2)
    return (found[0][1], shapes[found[0][1]]) if found else None


def check_shapes(shapes: dict[str, tuple[int, ...]], config, folder: Path, file: str, key: str = "backbone") -> None:
    """The weights must be those config.json describes: embedding rows = ``vocab_size``, embedding width =
    ``embedding_size`` or ``hidden_size``, query inputs = ``hidden_size``, at least ``num_hidden_layers``
    layers where the names number them. Fewer layers in the config than in the weights is a trimmed model:
    it warns. A layout these names do not match is not checked (from_pretrained still is).

    Raises:
        ValueError: a size that differs, naming the config key, both values and the tensor.
    """
    hidden = getattr(config, "hidden_size", None)
    width = getattr(config, "embedding_size", None) or hidden
    fix = (f"config.json belongs to another model (or size) than {file}: use the config.json saved with these weights, "
           "or re-download the model dataset")
    embedding = embedding_rows(shapes)
    if embedding is not None:
        name, (rows, cols) = embedding
        if rows != config.vocab_size:
            raise ValueError(f"{key} {folder}: config.json vocab_size={config.vocab_size} but {file} has {rows} embedding rows "
                             f"({name}: {rows} x {cols}): {fix}.")
        if width is not None and cols != width:
            what = "embedding_size" if getattr(config, "embedding_size", None) else "hidden_size"
            raise ValueError(f"{key} {folder}: config.json {what}={width} but {file} has embeddings {cols} wide "
                             f"({name}: {rows} x {cols}): {fix}.")
    for name, shape in shapes.items():
        if hidden is not None and _QUERY.search(name) and len(shape) == 2 and shape[1] != hidden:
            raise ValueError(f"{key} {folder}: config.json hidden_size={hidden} but {file} has {name} of shape "
                             f"{shape[0]} x {shape[1]} (hidden size {shape[1]}): {fix}.")
    numbers = {int(a or b) for m in map(_LAYER.search, shapes) if m for a, b in [m.groups()]}
    layers, wanted = (max(numbers) + 1 if numbers else None), getattr(config, "num_hidden_layers", None)
    if layers is not None and isinstance(wanted, int):
        if wanted > layers:
            raise ValueError(f"{key} {folder}: config.json num_hidden_layers={wanted} but {file} holds {layers} layers: "
                             f"layers {layers}..{wanted - 1} would start from random weights: {fix}.")
        if wanted < layers:
            warnings.warn(f"{key} {folder}: config.json num_hidden_layers={wanted} but {file} holds {layers} layers: "
                          f"the last {layers - wanted} are left out.", stacklevel=3)


def check_tokenizer(tokenizer, rows: int, config_file: dict, folder: Path, key: str = "backbone") -> None:
    """The tokenizer must be the embedding's own: every id (added tokens too) and every special token has a
    row, it pads with config.json's ``pad_token_id``, and it does not leave more than a tenth of the rows
    (and over 128) without a token, which a tokenizer of a smaller vocabulary does.

    Args:
        tokenizer: the folder's tokenizer.
        rows: the embedding's rows (config.json ``vocab_size``, checked against the weights).
        config_file: config.json as written (keys a config class fills with defaults are not checked).
        folder: the backbone folder, and `key` the config key that named it, for the messages.

    Raises:
        ValueError: naming the ids, the rows and the fix.
    """
    fix = "the tokenizer files belong to another model. Use the tokenizer files saved with these weights"
    if len(tokenizer) > rows:
        raise ValueError(f"{key} {folder}: the tokenizer has {len(tokenizer)} ids but the embedding has {rows} rows (config.json "
                         f"vocab_size): {fix}.")
    special = {name: getattr(tokenizer, f"{name}_token_id", None) for name in ("pad", "unk", "cls", "sep", "mask", "bos", "eos")}
    outside = {name: i for name, i in special.items() if isinstance(i, int) and not 0 <= i < rows}
    if outside:
        raise ValueError(f"{key} {folder}: the tokenizer's special token ids {outside} have no embedding row (the embedding has "
                         f"{rows} rows): {fix}.")
    pad = config_file.get("pad_token_id")
    if isinstance(pad, int) and special["pad"] is not None and special["pad"] != pad:
        raise ValueError(f"{key} {folder}: config.json pad_token_id={pad} but the tokenizer pads with id {special['pad']} "
                         f"({tokenizer.pad_token!r}): {fix}.")
    spare = rows - len(tokenizer)
    if spare > max(_SPARE_ROWS, rows // 10):
        raise ValueError(f"{key} {folder}: the tokenizer has {len(tokenizer)} ids but the embedding has {rows} rows: {spare} rows "
                         f"have no token: {fix}.")


def position_limit(shapes: dict[str, tuple[int, ...]], config) -> int | None:
    """The most tokens a row may have for this backbone, from its absolute position table in the weights, or
    None when it has none (relative positions: deberta-v3, NeZha, funnel; rotary: decoders), which have no hard
    limit. Roberta-style families start their position ids after the pad id, so two of their rows are not usable.

    Example:
        >>> position_limit({"embeddings.position_embeddings.weight": (514, 768)}, roberta_config)
        512
    """
    found = sorted((len(n), n) for n, s in shapes.items() if _POSITIONS.search(n) and len(s) == 2)
    if not found:
        return None
    rows = shapes[found[0][1]][0]
    pad = getattr(config, "pad_token_id", None)
    if getattr(config, "model_type", "") in _PAD_OFFSET_POSITIONS and isinstance(pad, int):
        rows -= pad + 1
    return rows


def check_max_len(max_len: int, limit: int | None, folder: Path, key: str = "backbone", setting: str = "max_len") -> None:
    """A `max_len` above the backbone's position table would crash at the first long batch: refuse it, naming the fix."""
    if limit is not None and max_len > limit:
        zero = "" if setting == "embedding_max_len" else ", or 0 for a length the kit caps there"
        raise ValueError(f"config key {setting!r}: {max_len} is more tokens than {key} {folder} has positions for ({limit}, its "
                         f"position embedding): set {setting}={limit} or less{zero}.")
