"""Tiny randomly initialised encoders and decoders with their own trained tokenizers, registered by arch name.

`build_tiny_model("bert", out_dir)` writes a folder that loads offline with `AutoModel` and
`AutoTokenizer` (a decoder's also with `AutoModelForCausalLM`); `TINY_BUILDERS` maps each arch name
to the function that builds it, `TINY_ENCODERS` and `TINY_DECODERS` split the names by kind, and
`get_tiny_builder` looks a name up. torch and transformers are imported inside functions only.
About 400 lines: ten builders of a few lines each, beside the registry they fill (their tokenizer
training lives in `_tokenizers`).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable

from kagglekit._io import atomic_dir
from kagglekit.testing._tokenizers import (
    DEBERTA_SPM_SPECIALS,
    FUNNEL_SPECIALS,
    LLAMA3_PATTERN,
    MAX_LEN,
    QWEN2_PATTERN,
    VOCAB_TARGET,
    add_legacy_rope_theta,
    bos_template,
    byte_level_bpe,
    gemma_bpe,
    save_tokenizer,
    train_sentencepiece,
    transformers_v5,
    vocab_kwargs,
    wordpiece_tokenizer,
)
from kagglekit.testing.vocab import corpus_lines

__all__ = ["TINY_ARCHS", "TINY_BUILDERS", "TINY_DECODERS", "TINY_ENCODERS", "build_tiny_model", "get_tiny_builder"]

_DIMS = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "max_position_embeddings": MAX_LEN,
}
# Funnel names the same sizes its own way, and has no position table (relative attention only).
# One layer per block: the second block runs on the sequence pooled to half length.
_FUNNEL_DIMS = {
    "d_model": _DIMS["hidden_size"],
    "n_head": _DIMS["num_attention_heads"],
    "d_head": _DIMS["hidden_size"] // _DIMS["num_attention_heads"],
    "d_inner": _DIMS["intermediate_size"],
    "block_sizes": [1] * _DIMS["num_hidden_layers"],
    "num_decoder_layers": 1,  # upsamples back to full length: last_hidden_state is (B, T, H)
}

# Files any builder may write: an overwrite removes the ones the new build did not produce, so a
# folder switched from one arch to another keeps no stale tokenizer file.
_MODEL_FILES = frozenset({
    "config.json", "model.safetensors", "pytorch_model.bin", "tokenizer.json", "tokenizer_config.json",
    "special_tokens_map.json", "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spm.model",
    "sentencepiece.bpe.model", "generation_config.json",
})

TINY_BUILDERS: dict[str, Callable[[Path, int], None]] = {}
"""Registry arch name -> builder(work_dir, seed) that writes a complete model folder."""
_DECODER_NAMES: set[str] = set()


def _register(name: str, *, decoder: bool = False):
    """Decorator: register a builder under the arch name `name` (the order sets `TINY_ARCHS`).

    `decoder=True` files it under `TINY_DECODERS` (a causal LM), else under `TINY_ENCODERS`.
    """
    def deco(fn):
        assert name not in TINY_BUILDERS, f"tiny arch {name!r} registered twice"
        TINY_BUILDERS[name] = fn
        if decoder:
            _DECODER_NAMES.add(name)
        return fn
    return deco


def get_tiny_builder(arch: str) -> Callable[[Path, int], None]:
    """The registered builder for `arch`.

    Args:
        arch: A tiny architecture name, one of `TINY_ARCHS`.

    Returns:
        The function `builder(work_dir, seed)` that writes the complete model folder into `work_dir`.

    Raises:
        ValueError: `arch` is not registered; the message lists the valid names.
    """
    try:
        return TINY_BUILDERS[arch]
    except (KeyError, TypeError):
        raise ValueError(f"unknown tiny arch {arch!r}; choose one of {', '.join(TINY_BUILDERS)}") from None


def _save_encoder(work_dir: Path, model_type: str, tokenizer, seed: int, *, dims: dict = _DIMS,
                  **overrides) -> None:
    """Build a randomly initialised bare encoder matching `tokenizer` and save it as safetensors.

    `dims` holds the sizes under the config's own names (BERT's by default).
    """
    import torch
    from transformers import AutoConfig, AutoModel

    tokenizer.save_pretrained(work_dir)
    kwargs = dict(dims, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    kwargs.update(overrides)
    if model_type == "nezha":  # transformers 5 has no NeZha: the kit's own, under either major
        from kagglekit.models.nezha import NezhaConfig, NezhaModel

        config, build = NezhaConfig(**kwargs), NezhaModel
    else:
        config, build = AutoConfig.for_model(model_type, **kwargs), AutoModel.from_config
    # Forked RNG: seeding must not disturb the caller's own torch random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build(config)
    model.save_pretrained(work_dir)  # safetensors: the default since transformers 4.35, the only format in 5


@_register("bert")
def _build_bert(work_dir: Path, seed: int) -> None:
    tokenizer = wordpiece_tokenizer(work_dir, "BertTokenizerFast")
    _save_encoder(work_dir, "bert", tokenizer, seed)


@_register("electra")
def _build_electra(work_dir: Path, seed: int) -> None:
    # transformers 5 makes ElectraTokenizerFast an alias of BertTokenizerFast: the folder then says
    # "BertTokenizer", which every version loads.
    tokenizer = wordpiece_tokenizer(work_dir, "ElectraTokenizerFast")
    _save_encoder(work_dir, "electra", tokenizer, seed, embedding_size=32)


@_register("roberta")
def _build_roberta(work_dir: Path, seed: int) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizerFast

    backend = ByteLevelBPETokenizer()
    # RoBERTa's own id order for the first specials: <s>=0, <pad>=1, </s>=2, <unk>=3.
    backend.train_from_iterator(
        corpus_lines(), vocab_size=VOCAB_TARGET, min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"], show_progress=False,
    )
    vocab_json, merges_txt = backend.save_model(str(work_dir))
    tokenizer = RobertaTokenizerFast(**vocab_kwargs(vocab=vocab_json, merges=merges_txt), model_max_length=MAX_LEN)
    # RoBERTa position ids start after the padding index, hence the +2 positions.
    _save_encoder(
        work_dir, "roberta", tokenizer, seed,
        max_position_embeddings=MAX_LEN + 2, type_vocab_size=1,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )


@_register("funnel")
def _build_funnel(work_dir: Path, seed: int) -> None:
    # Funnel's own vocabulary layout (<pad>=0 ... </s>=6); the tokenizer gives <cls> token type 2.
    # Funnel's attention reads token_type_ids, which transformers 4.x returns and 5 drops unless
    # the folder names them: stated here, both majors feed the model the same inputs.
    tokenizer = wordpiece_tokenizer(work_dir, "FunnelTokenizerFast", FUNNEL_SPECIALS,
                                     model_input_names=["input_ids", "token_type_ids", "attention_mask"])
    # AutoModel maps "funnel" to two classes and picks by config.architectures (it fails on None):
    # FunnelModel (encoder + upsampling decoder, full length), not the pooled-length FunnelBaseModel.
    _save_encoder(work_dir, "funnel", tokenizer, seed, dims=_FUNNEL_DIMS, architectures=["FunnelModel"])


@_register("xlm-roberta")
def _build_xlm_roberta(work_dir: Path, seed: int) -> None:
    import sentencepiece as spm
    from transformers import XLMRobertaTokenizerFast

    # XLM-R's sentencepiece model has <unk>=0, <s>=1, </s>=2 and no pad; the tokenizer follows
    # fairseq's dictionary: <s>=0, <pad>=1, </s>=2, <unk>=3, then pieces 3.. of the model shifted
    # by one, then <mask>. Two ids are added, so the model gets two fewer pieces.
    proto = train_sentencepiece(
        vocab_size=VOCAB_TARGET - 2,
        unk_id=0, unk_piece="<unk>", bos_id=1, bos_piece="<s>", eos_id=2, eos_piece="</s>", pad_id=-1,
    )
    # transformers 5 writes only tokenizer.json; 4.x reads the sentencepiece model for its slow class.
    spm_path = work_dir / "sentencepiece.bpe.model"
    spm_path.write_bytes(proto)
    if transformers_v5():
        sp = spm.SentencePieceProcessor(model_proto=proto)
        vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
        vocab += [(sp.id_to_piece(i), sp.get_score(i)) for i in range(3, sp.get_piece_size())]
        files = {"vocab": vocab + [("<mask>", 0.0)]}
    else:
        files = {"vocab_file": str(spm_path)}
    tokenizer = XLMRobertaTokenizerFast(**files, model_max_length=MAX_LEN)
    _save_encoder(
        work_dir, "xlm-roberta", tokenizer, seed,
        max_position_embeddings=MAX_LEN + 2, type_vocab_size=1,  # RoBERTa's position offset
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )

@_register("nezha")
def _build_nezha(work_dir: Path, seed: int) -> None:
    # NeZha checkpoints ship BERT's WordPiece vocabulary and tokenizer
    tokenizer = wordpiece_tokenizer(work_dir, "BertTokenizerFast")
    _save_encoder(work_dir, "nezha", tokenizer, seed, bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id)


@_register("deberta-v2")
def _build_deberta_v2(work_dir: Path, seed: int) -> None:
    import sentencepiece as spm
    from transformers import DebertaV2TokenizerFast

    proto = train_sentencepiece(**DEBERTA_SPM_SPECIALS)
    # transformers 5 writes only tokenizer.json; 4.x needs spm.model to load a DeBERTa-v3 folder.
    spm_path = work_dir / "spm.model"
    spm_path.write_bytes(proto)
    if transformers_v5():
        sp = spm.SentencePieceProcessor(model_proto=proto)
        # From the piece list, not from_pretrained(spm.model): that path saves the specials as a
        # list-valued extra_special_tokens, which transformers 4.x fails to load.
        files = {"vocab": [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]}
    else:
        files = {"vocab_file": str(spm_path)}
    tokenizer = DebertaV2TokenizerFast(**files, do_lower_case=False, model_max_length=MAX_LEN)
    _save_encoder(
        work_dir, "deberta-v2", tokenizer, seed,
        # DeBERTa-v3 style: relative attention only, log buckets, no absolute position embeddings.
        relative_attention=True, position_buckets=256, max_relative_positions=-1,
        pos_att_type=["p2c", "c2p"], position_biased_input=False, norm_rel_ebd="layer_norm",
        share_att_key=True, type_vocab_size=0, layer_norm_eps=1e-7,
    )


# --------------------------------------------------------------------------------------------------
# Decoders: causal LMs with the LM head, tokenizers laid out as the real ones
# --------------------------------------------------------------------------------------------------

# GQA: 4 query heads share 2 key/value heads, as Llama-3, Qwen2 and Gemma-2 all do.
_DECODER_DIMS = dict(_DIMS, num_key_value_heads=2)


def _save_decoder(work_dir: Path, model_type: str, tokenizer, seed: int, *, tokenizer_class: str,
                  vocab_size: int | None = None, **overrides) -> None:
    """Build a randomly initialised causal LM (`*ForCausalLM`, LM head included) and save it as safetensors.

    `tokenizer_class` goes into tokenizer_config.json as the real folders name it (`save_tokenizer`).
    `vocab_size` defaults to the tokenizer's length; `overrides` set the config's ids, ties and
    arch-specific sizes.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    save_tokenizer(tokenizer, work_dir, tokenizer_class)
    config = AutoConfig.for_model(model_type, **_DECODER_DIMS, vocab_size=vocab_size or len(tokenizer), **overrides)
    with torch.random.fork_rng(devices=[]):  # seeding must not disturb the caller's torch random stream
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(work_dir)
    add_legacy_rope_theta(work_dir)  # Llama-3's and Qwen2's theta must survive transformers 4.x


@_register("llama", decoder=True)
def _build_llama(work_dir: Path, seed: int) -> None:
    from tokenizers import processors
    from transformers import PreTrainedTokenizerFast

    # Llama-3: byte-level BPE, bos and eos appended after the learned pieces, bos added to every
    # text, and NO pad token (config.pad_token_id is None too).
    bos, eos = "<|begin_of_text|>", "<|end_of_text|>"
    backend = byte_level_bpe(LLAMA3_PATTERN, (bos, eos, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"))
    backend.post_processor = processors.Sequence([processors.ByteLevel(trim_offsets=False),
                                                  bos_template(bos, backend.token_to_id(bos))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos,
                                        model_max_length=MAX_LEN)
    _save_decoder(work_dir, "llama", tokenizer, seed, tokenizer_class="PreTrainedTokenizerFast",
                  bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
                  rope_theta=500000.0, rms_norm_eps=1e-5, tie_word_embeddings=False)  # Llama-3-8B: untied


@_register("qwen2", decoder=True)
def _build_qwen2(work_dir: Path, seed: int) -> None:
    from tokenizers import processors
    from transformers import Qwen2TokenizerFast

    # Qwen2: NFC, byte-level BPE, no bos added; <|endoftext|> is eos and the tokenizer's pad, while
    # config.json names it bos and eos and has no pad_token_id. Its embedding has more rows than the
    # tokenizer has tokens (151936 for 151646), padded to a multiple of 128; here 1024 for 1000.
    eot = "<|endoftext|>"
    backend = byte_level_bpe(QWEN2_PATTERN, (eot, "<|im_start|>", "<|im_end|>"), nfc=True)
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer = Qwen2TokenizerFast(tokenizer_object=backend, bos_token=None, eos_token=eot, pad_token=eot,
                                   unk_token=None, model_max_length=MAX_LEN)
    _save_decoder(work_dir, "qwen2", tokenizer, seed, tokenizer_class="Qwen2Tokenizer",
                  vocab_size=-(-len(tokenizer) // 128) * 128,
                  bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=None,
                  rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True)  # Qwen2-0.5B: tied


@_register("gemma2", decoder=True)
def _build_gemma2(work_dir: Path, seed: int) -> None:
    from transformers import GemmaTokenizerFast

    # Gemma-2: BPE with byte fallback over "▁"-spaced text, <pad>=0 <eos>=1 <bos>=2 <unk>=3, bos
    # added to every text, left padding (the tokenizer class's default); embeddings always tied.
    backend = gemma_bpe()
    backend.post_processor = bos_template("<bos>", backend.token_to_id("<bos>"))
    tokenizer = GemmaTokenizerFast(tokenizer_object=backend, add_bos_token=True, add_eos_token=False,
                                   model_max_length=MAX_LEN)
    head_dim = _DIMS["hidden_size"] // _DIMS["num_attention_heads"]
    _save_decoder(work_dir, "gemma2", tokenizer, seed, tokenizer_class="GemmaTokenizer",
                  pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                  bos_token_id=tokenizer.bos_token_id, head_dim=head_dim, query_pre_attn_scalar=head_dim,
                  # local (sliding window) and global layers alternate; a window shorter than a
                  # prompt, so tests exercise it
                  sliding_window=32, attn_logit_softcapping=50.0, final_logit_softcapping=30.0,
                  hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True)


TINY_ARCHS: tuple[str, ...] = tuple(TINY_BUILDERS)
"""Every registered arch name, encoders first."""
TINY_ENCODERS: tuple[str, ...] = tuple(arch for arch in TINY_ARCHS if arch not in _DECODER_NAMES)
"""The encoder archs (bare `AutoModel` folders)."""
TINY_DECODERS: tuple[str, ...] = tuple(arch for arch in TINY_ARCHS if arch in _DECODER_NAMES)
"""The decoder archs (causal LM folders, LM head included): llama, qwen2, gemma2."""


def build_tiny_model(arch: str, out_dir, *, seed: int = 0) -> Path:
    """Write a tiny randomly initialised encoder or decoder plus its own freshly trained tokenizer.

    The folder loads with `AutoTokenizer.from_pretrained` and `AutoModel.from_pretrained` offline
    (nezha: with `kagglekit.models.nezha.NezhaModel.from_pretrained`, or `AutoModel` after
    `register_nezha()` under transformers 5; the kit's `build_model` does that itself). A decoder
    (`TINY_DECODERS`) is a 2-layer causal LM saved with its LM head, so it also loads with
    `AutoModelForCausalLM` and `AutoModelForSequenceClassification`; its tokenizer has the special
    tokens of the real family (llama: bos and eos, no pad; qwen2: `<|endoftext|>` as eos and pad,
    no bos; gemma2: `<pad>`, `<bos>`, `<eos>`, bos added, left padding), and " Yes" and " No" are
    single tokens in every vocabulary.
    The build happens in a temporary folder next to `out_dir` that is moved in place at the end, so
    an interrupted build never leaves a half-written model behind.

    Args:
        arch: One of `TINY_ARCHS` ("bert", "electra", "roberta", "funnel", "xlm-roberta", "nezha",
            "deberta-v2", "llama", "qwen2", "gemma2").
        out_dir: Target folder. Created if missing; if it exists, its model and tokenizer files are
            replaced and unrelated files are left alone.
        seed: Seed for the weights; the same seed gives bit-identical tensors.

    Returns:
        The model folder as a `Path`.

    Raises:
        ValueError: `arch` is not a registered tiny architecture, or `out_dir` is a file.

    Example:
        >>> folder = build_tiny_model("bert", "/tmp/tiny-bert")  # doctest: +SKIP
    """
    builder = get_tiny_builder(arch)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} is a file; pass a folder path for the model")
    if not out_dir.exists():
        # A new folder appears whole or not at all.
        with atomic_dir(out_dir) as work_dir, _quiet_transformers():
            builder(work_dir, seed)
        return out_dir
    # An existing folder keeps the files no builder writes (notes, the user's own files), so it is
    # not swapped as a whole: the build happens beside it and each model file is renamed into it.
    with tempfile.TemporaryDirectory(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent) as tmp:
        work_dir = Path(tmp)
        with _quiet_transformers():
            builder(work_dir, seed)
        built = {p.name for p in work_dir.iterdir()}
        for name in sorted(_MODEL_FILES - built):
            (out_dir / name).unlink(missing_ok=True)
        for name in sorted(built):
            os.replace(work_dir / name, out_dir / name)
    return out_dir


class _quiet_transformers:
    """Silence transformers' logs and progress bars inside the block, restoring the caller's settings."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._level = hf_logging.get_verbosity()
        self._bars = hf_logging.is_progress_bar_enabled()
        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
        return self

    def __exit__(self, *exc):
        self._logging.set_verbosity(self._level)
        if self._bars:
            self._logging.enable_progress_bar()
        return False

