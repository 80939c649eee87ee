"""Id models: a vocabulary over desensitized id text, and a randomly initialised BERT or NeZha sized for it.

GAIIC 2021 track 3 ("Xiaobu") gave texts as space-separated integer ids with no pretrained model
behind them: `build_id_vocab` writes a word-level tokenizer (one token per id) from the train and test
texts, `build_id_model` a random encoder over it, to pretrain with MLM and then fine-tune. The files
themselves are read by the ``ids`` recipe (`kagglekit.data.recipes.ids`).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from kagglekit._io import atomic_dir

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
INFO_FILE = "id_vocab.json"  # what the vocabulary was built from; its max pair length sizes the model

SIZES = {  # name -> (hidden, layers, heads, intermediate)
    "tiny": (64, 2, 2, 128),
    "small": (256, 4, 4, 1024),
    "base": (768, 12, 12, 3072),
}
ARCHS = ("bert", "nezha")


def _iter_rows(files_or_texts: Iterable) -> Iterable[list[list[str]]]:
    """The token lists of each row: a file's lines (first two tab-separated fields each), a string alone."""
    if isinstance(files_or_texts, (str, os.PathLike)):
        files_or_texts = [files_or_texts]
    for item in files_or_texts:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and "\n" not in item and os.path.isfile(item)):
            with open(item, encoding="utf-8") as handle:
                for line in handle:
                    # a third field is the label, not text
                    yield [field.split() for field in line.rstrip("\n").split("\t")[:2]]
        elif isinstance(item, str):
            yield [item.split()]
        else:
            raise TypeError(f"build_id_vocab: expected file paths or id texts (str), got {type(item).__name__}: {item!r}.")


def _token_order(token: str):
    # numeric ids in numeric order, anything else after them: token ids then follow the data's ids
    return (0, int(token), "") if token.isdigit() else (1, 0, token)


def build_id_vocab(files_or_texts, out_dir, *, min_freq: int = 1, specials: tuple[str, ...] = BERT_SPECIALS) -> Path:
    """Write a word-level tokenizer folder over the whitespace-split ids of the texts.

    Tokens seen fewer than `min_freq` times map to ``specials[1]`` (the unknown token); pairs are
    encoded BERT-style, ``[CLS] a [SEP] b [SEP]`` with token types 0 / 1. The folder loads with
    ``AutoTokenizer.from_pretrained(out_dir)`` offline under transformers 4.x and 5.

    Args:
        files_or_texts: paths of id-text files (tab-separated; the first two fields of each line are
            read, a third, the label, is not) and/or id texts such as ``"12 23 4160"``; train and test
            together, so the test's ids get their own embeddings to pretrain.
        out_dir: the tokenizer folder (replaced as a whole).
        min_freq: ids seen fewer times than this become the unknown token.
        specials: pad, unk, cls, sep, mask, in that order; they take ids 0..4.

    Returns:
        `out_dir` as a Path.

    Example:
        >>> build_id_vocab(["gaiic/train.tsv", "gaiic/testA.tsv"], "vocab/gaiic", min_freq=3)
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    if int(min_freq) < 1:
        raise ValueError(f"build_id_vocab: min_freq must be 1 or more, got min_freq={min_freq}.")
    if len(specials) != 5 or len(set(specials)) != 5:
        raise ValueError(f"build_id_vocab: specials must be 5 distinct tokens (pad, unk, cls, sep, mask), got {specials}.")
    counts, longest, texts = Counter(), 0, 0
    for row in _iter_rows(files_or_texts):
        for tokens in row:
            counts.update(tokens)
        texts += len(row)
        # the longest row sizes the position table: a + b + [CLS] + a [SEP] after each text
        longest = max(longest, sum(map(len, row)) + 1 + len(row))
    if not counts:
        raise ValueError("build_id_vocab: the texts hold no tokens: pass the id-text files or texts to build from.")
    clash = sorted(set(specials) & set(counts))
    if clash:
        raise ValueError(f"build_id_vocab: special token(s) {clash} also occur in the texts; pick other specials.")
    kept = sorted((t for t, n in counts.items() if n >= min_freq), key=_token_order)
    vocab = {tok: i for i, tok in enumerate([*specials, *kept])}
    pad, unk, cls, sep, mask = specials

    backend = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    max_len = _round_up(longest)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token=unk, pad_token=pad, cls_token=cls, sep_token=sep, mask_token=mask,
        model_max_length=max_len, model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        (tmp / "vocab.txt").write_text("".join(f"{t}\n" for t in vocab), encoding="utf-8")  # id order, for other tools
        info = {"texts": texts, "tokens_seen": len(counts), "vocab_size": len(vocab), "min_freq": int(min_freq),
                "unknown_tokens": len(counts) - len(kept), "max_pair_length": longest, "specials": list(specials)}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    return out_dir


def _portable_tokenizer_config(folder: Path) -> None:
    """Name the class both majors know: 5.x saves ``TokenizersBackend``, which 4.x cannot resolve;
    ``PreTrainedTokenizerFast`` loads tokenizer.json as it is under either."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("backend", None)
    config["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _round_up(length: int, step: int = 64) -> int:
    return max(step, math.ceil(length / step) * step)


def id_model_config(vocab_dir, *, arch: str = "bert", size: str = "tiny") -> dict:
    """A config dict for a random encoder over the vocabulary in `vocab_dir`.

    Args:
        vocab_dir: a folder written by `build_id_vocab`.
        arch: bert | nezha.
        size: tiny (64 wide, 2 layers) | small (256, 4) | base (768, 12).

    Returns:
        The config as a dict (``model_type`` included): vocab_size = the tokenizer's length, pad id from
        it, max_position_embeddings = the longest pair rounded up to a multiple of 64.
    """
    from transformers import AutoTokenizer

    if arch not in ARCHS:
        raise ValueError(f"id_model_config: unknown arch {arch!r}; valid archs are {list(ARCHS)}.")
    if size not in SIZES:
        raise ValueError(f"id_model_config: unknown size {size!r}; valid sizes are {list(SIZES)}.")
    vocab_dir = Path(vocab_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(vocab_dir), local_files_only=True)
    info_path = vocab_dir / INFO_FILE
    longest = json.loads(info_path.read_text(encoding="utf-8"))["max_pair_length"] if info_path.is_file() else 512
    hidden, layers, heads, inner = SIZES[size]
    return {
        "model_type": arch,
        "architectures": ["NezhaModel" if arch == "nezha" else "BertModel"],
        "vocab_size": len(tokenizer),
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inner,
        "max_position_embeddings": _round_up(longest),
        "type_vocab_size": 2,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }


def build_id_model(vocab_dir, out_dir, *, arch: str = "bert", size: str = "tiny", seed: int = 0) -> Path:
    """Write a randomly initialised encoder folder (config, safetensors, the tokenizer) for `vocab_dir`.

    `kagglekit.models.pair_model.build_model(out_dir)` loads it; the same seed gives the same weights.

    Example:
        >>> build_id_model("vocab/gaiic", "models/gaiic-nezha", arch="nezha", size="small")
    """
    import shutil

    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from kagglekit.models.nezha import NezhaConfig, NezhaModel

    kwargs = id_model_config(vocab_dir, arch=arch, size=size)
    kwargs.pop("model_type")
    config_cls, model_cls = (NezhaConfig, NezhaModel) if arch == "nezha" else (BertConfig, BertModel)
    config = config_cls(**kwargs)
    with torch.random.fork_rng(devices=[]):  # the caller's random stream stays as it was
        torch.manual_seed(seed)
        model = model_cls(config)
    tokenizer = AutoTokenizer.from_pretrained(str(vocab_dir), local_files_only=True)
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        _portable_tokenizer_config(tmp)
        for name in ("vocab.txt", INFO_FILE):
            if (Path(vocab_dir) / name).is_file():
                shutil.copyfile(Path(vocab_dir) / name, tmp / name)
    return Path(out_dir)
