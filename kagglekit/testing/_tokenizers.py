"""Tokenizer training for the tiny models: WordPiece, sentencepiece and BPE, plus transformers 4/5 shims.

Every tokenizer learns its vocabulary from `vocab.corpus_lines()`, deterministically, so a build with
the same seed writes the same files byte for byte. Shared by the builders in `models.py`.
"""

from __future__ import annotations

import io
import os
import string
from pathlib import Path

from kagglekit.testing.vocab import corpus_lines

MAX_LEN = 512
"""The tokenizers' model_max_length and the encoders' position table size."""
VOCAB_TARGET = 1000
"""Vocabulary size each tokenizer trainer aims at (a small corpus may give a few less)."""


def transformers_v5() -> bool:
    """Whether the installed transformers is major version 5 or later (its tokenizer classes differ)."""
    import transformers

    return int(transformers.__version__.split(".")[0]) >= 5


def vocab_kwargs(**files: Path) -> dict:
    """Vocabulary file arguments under the names the installed transformers expects.

    transformers 5 builds its tokenizers-backed classes from `vocab=`/`merges=`; 4.x takes
    `vocab_file=`/`merges_file=` and converts them into a fast tokenizer itself.
    """
    if transformers_v5():
        return {name: str(path) for name, path in files.items()}
    return {f"{name}_file": str(path) for name, path in files.items()}


def save_tokenizer(tokenizer, folder: Path, tokenizer_class: str) -> None:
    """`tokenizer.save_pretrained(folder)`, with tokenizer_config.json naming `tokenizer_class`.

    transformers 5 writes its backend's class name ("TokenizersBackend"), which 4.x cannot load;
    the real folders name the class that both majors know ("PreTrainedTokenizerFast", "Qwen2Tokenizer", ...).
    """
    import json

    from kagglekit._io import write_json

    tokenizer.save_pretrained(folder)
    path = Path(folder) / "tokenizer_config.json"
    write_json(path, {**json.loads(path.read_text(encoding="utf-8")), "tokenizer_class": tokenizer_class})


def add_legacy_rope_theta(folder: Path) -> None:
    """Give a saved config.json the top-level `rope_theta` that transformers 4.x reads.

    Hub folders (written by 4.x) carry rope_theta; 5 writes only `rope_parameters`, which 4.x
    ignores, falling back to theta 10000. With both keys the folder reads the same under either major.
    """
    import json

    from kagglekit._io import write_json

    path = Path(folder) / "config.json"
    saved = json.loads(path.read_text(encoding="utf-8"))
    theta = (saved.get("rope_parameters") or {}).get("rope_theta")
    if theta is not None and "rope_theta" not in saved:
        write_json(path, {**saved, "rope_theta": theta})


# WordPiece specials, in id order from 0; the unknown token comes second in both layouts.
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
FUNNEL_SPECIALS = ("<pad>", "<unk>", "<cls>", "<sep>", "<mask>", "<s>", "</s>")


def wordpiece_tokenizer(work_dir: Path, class_name: str, specials: tuple[str, ...] = BERT_SPECIALS,
                        **options):
    """Lower-cased WordPiece tokenizer, specials first, with vocab.txt written next to it.

    The tokenizer class is called with its default special tokens, so `specials` must be the ones
    it expects; `options` go to the class as they are.
    """
    import transformers
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    # Every printable ASCII character gets a piece, so unseen words split instead of becoming [UNK].
    chars = sorted(string.ascii_lowercase + string.digits + string.punctuation)
    backend = Tokenizer(models.WordPiece(unk_token=specials[1]))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=VOCAB_TARGET,
        # The trainer numbers "##x" pieces in hash-map order, and merge ties follow those ids, so the
        # learned vocab changes from run to run. Listing them up front fixes their ids; only vocab.txt
        # is handed on, so they end up as plain pieces, not special tokens.
        special_tokens=list(specials) + [f"##{c}" for c in chars],
        initial_alphabet=chars,
        show_progress=False,
    )
    backend.train_from_iterator(corpus_lines(), trainer)
    # transformers 5 saves only tokenizer.json; vocab.txt is what 4.x and other tools read.
    (vocab_txt,) = backend.model.save(str(work_dir))
    cls = getattr(transformers, class_name)
    return cls(**vocab_kwargs(vocab=vocab_txt), do_lower_case=True, model_max_length=MAX_LEN, **options)


# DeBERTa-v3's special pieces: [PAD]=0, [CLS]=1, [SEP]=2, [UNK]=3 and [MASK]=4.
DEBERTA_SPM_SPECIALS = {
    "pad_id": 0, "pad_piece": "[PAD]", "bos_id": 1, "bos_piece": "[CLS]", "eos_id": 2, "eos_piece": "[SEP]",
    "unk_id": 3, "unk_piece": "[UNK]", "user_defined_symbols": ["[MASK]"],
}


def train_sentencepiece(vocab_size: int = VOCAB_TARGET, **specials) -> bytes:
    """Unigram sentencepiece model as bytes; `specials` are trainer options placing the special pieces."""
    import sentencepiece as spm

    buf = io.BytesIO()
    with open(os.devnull, "w") as sink:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(corpus_lines()),
            model_writer=buf,
            logstream=sink,
            minloglevel=2,
            model_type="unigram",
            vocab_size=vocab_size,
            hard_vocab_limit=False,  # a small corpus may support fewer pieces; take what it gives
            **specials,
            required_chars=string.ascii_letters + string.digits + string.punctuation,
            character_coverage=1.0,
            # identity: no 240 kB NFKC table in spm.model; transformers 5 ignores it anyway.
            normalization_rule_name="identity",
            num_threads=1,  # single thread: EM updates are then bit-reproducible
        )
    return buf.getvalue()



# --------------------------------------------------------------------------------------------------
# Decoder tokenizers: BPE as Llama-3, Qwen2 and Gemma-2 ship it
# --------------------------------------------------------------------------------------------------

LABEL_WORDS = ("Yes", "No")
"""Answer words each decoder vocabulary holds as one token after a space (" Yes": "ĠYes" or "▁Yes")."""

# The pre-tokenizer patterns of Llama-3 (digits in runs of up to three) and Qwen2 (one digit at a time).
LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Gemma's specials come first, in its own id order; its byte pieces <0x00>..<0xFF> follow them.
GEMMA_SPECIALS = ("<pad>", "<eos>", "<bos>", "<unk>", "<mask>")


def decoder_corpus_lines() -> list[str]:
    """`corpus_lines()` plus each line once more as a question answered by a label word.

    Real vocabularies hold " Yes" and " No" as single tokens; here the answers occur often enough
    (every other line) that BPE learns them whole too.
    """
    lines = corpus_lines()
    return lines + [f"{line} Is that right? {LABEL_WORDS[i % 2]}" for i, line in enumerate(lines)]


def byte_level_bpe(pattern: str, specials: tuple[str, ...], *, nfc: bool = False):
    """Byte-level BPE in the layout of Llama-3 and Qwen2: learned pieces first, `specials` appended after.

    Args:
        pattern: The regex that splits text into words before the byte mapping (`LLAMA3_PATTERN`, ...).
        specials: Special tokens, given the ids after the learned pieces in this order.
        nfc: NFC-normalise the text first, as Qwen2 does.

    Returns:
        A `tokenizers.Tokenizer`, without a post-processor (the caller decides on bos).
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())  # every byte has a piece: no unknown token
    if nfc:
        backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET - len(specials), min_frequency=1, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(decoder_corpus_lines(), trainer)
    backend.add_special_tokens(list(specials))
    _check_label_words(backend)
    return backend


def gemma_bpe():
    """BPE with byte fallback in the layout of Gemma-2: `GEMMA_SPECIALS` (ids 0-4), 256 byte pieces, learned pieces.

    Spaces become "▁" and text is not split into words, the pipeline transformers 5's
    `GemmaTokenizer` rebuilds from the vocabulary: trained on words split before each "▁", the
    merges never span a "▁", so the whole-text BPE gives the same pieces. Characters outside the
    vocabulary fall back to their UTF-8 bytes.

    Returns:
        A `tokenizers.Tokenizer`, without a post-processor (the caller adds `<bos>`).
    """
    import json

    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    byte_pieces = [f"<0x{b:02X}>" for b in range(256)]
    learner = Tokenizer(models.BPE())
    learner.normalizer = normalizers.Replace(" ", "▁")
    learner.pre_tokenizer = pre_tokenizers.Split("▁", behavior="merged_with_next")
    trainer = trainers.BpeTrainer(vocab_size=VOCAB_TARGET - len(GEMMA_SPECIALS) - len(byte_pieces),
                                  min_frequency=1, show_progress=False)
    learner.train_from_iterator(decoder_corpus_lines(), trainer)
    learned = json.loads(learner.to_str())["model"]
    pieces = sorted(learned["vocab"], key=learned["vocab"].get)  # in the order the trainer numbered them
    vocab = {piece: i for i, piece in enumerate([*GEMMA_SPECIALS, *byte_pieces, *pieces])}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in learned["merges"]]

    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    backend.normalizer = normalizers.Replace(" ", "▁")
    # transformers 5's GemmaTokenizer: a split on " " that never matches once spaces are "▁".
    backend.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous", invert=False)
    backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens(list(GEMMA_SPECIALS))
    _check_label_words(backend)
    return backend


def _check_label_words(backend) -> None:
    """Each of `LABEL_WORDS` after a space is one token (the corpus decides; a smaller one could split them)."""
    for word in LABEL_WORDS:
        pieces = backend.encode(f" {word}", add_special_tokens=False).tokens
        assert len(pieces) == 1, (f"the tiny vocabulary splits {' ' + word!r} into {pieces}: "
                                  "decoder_corpus_lines() must hold it more often")


def bos_template(bos: str, bos_id: int):
    """Post-processor that starts each text with `bos` (a pair: bos a bos b), as Llama-3 and Gemma-2 do."""
    from tokenizers import processors

    return processors.TemplateProcessing(single=f"{bos}:0 $A:0", pair=f"{bos}:0 $A:0 {bos}:1 $B:1",
                                         special_tokens=[(bos, bos_id)])
