"""Tokenizer training for the tiny models: WordPiece and sentencepiece, plus transformers 4/5 shims.

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

