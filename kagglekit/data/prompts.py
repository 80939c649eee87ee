"""Prompts for decoder backbones: a pair's texts rendered into one template, tokenized once, and truncated
inside the texts, so the template's own words (the question and the answer cue at its end) stay whole.

A template is a format string over a row's fields: ``{text_a}`` and ``{text_b}`` for every recipe, plus
the recipe's own (`kagglekit.data.recipes.Recipe.prompt_fields`; uspppm: ``{anchor}``, ``{target}``,
``{context}`` ...). The config key ``template`` holds it; empty takes the recipe's default. Light at import:
torch loads with the batching module only when rows are encoded.
"""

from __future__ import annotations

import string
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from kagglekit.config import template_fields  # declared with the key it parses; re-exported here

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["PAIR_FIELDS", "encode_prompts", "encode_rows", "pad_token_id", "prompt_lengths", "render", "template_fields"]

PAIR_FIELDS = ("text_a", "text_b")  # what every recipe's frame holds


def render(template: str, row: Mapping[str, str]) -> tuple[str, list[tuple[int, int]]]:
    """The prompt of one row and the character span of each field value in it, in template order.

    Example:
        >>> render("A: {text_a}. B: {text_b}.", {"text_a": "x", "text_b": "yz"})
        ('A: x. B: yz.', [(3, 4), (9, 11)])
    """
    pieces, spans, pos = [], [], 0
    for literal, field, _, _ in string.Formatter().parse(template):
        pieces.append(literal)
        pos += len(literal)
        if field is not None:
            value = str(row[field])
            pieces.append(value)
            spans.append((pos, pos + len(value)))
            pos += len(value)
    return "".join(pieces), spans


def pad_token_id(tokenizer) -> int:
    """The id a batch pads with: the tokenizer's pad token, else an existing special one (eos, unk, bos).

    Llama's tokenizers have no pad token. Padded positions are masked out, so any existing token serves;
    none is ever added (that would resize the embeddings).
    """
    for name in ("pad", "eos", "unk", "bos"):
        value = getattr(tokenizer, f"{name}_token_id", None)
        if isinstance(value, int):
            return value
    raise ValueError(f"the tokenizer ({type(tokenizer).__name__}) has neither a pad token nor an eos, unk or bos token to pad "
                     "with: set pad_token in the model folder's tokenizer_config.json to one of its existing tokens.")


def _fields(frame_or_mapping, names: Sequence[str]) -> list[dict[str, str]]:
    """One {field: text} dict per row of a frame (or a mapping of columns) for the fields `names`."""
    missing = [n for n in names if n not in frame_or_mapping]
    if missing:
        raise ValueError(f"template fields {missing} are not among the rows' columns {list(frame_or_mapping)}: the recipe "
                         "adds its own fields only when the model's template names them (recipe_state['template']).")
    columns = [list(frame_or_mapping[n]) for n in names]
    return [dict(zip(names, values)) for values in zip(*columns)]


def _suffix_length(tokenizer) -> int:
    """How many special tokens the tokenizer appends after a text (an eos some tokenizers add): cut off, so that a
    prompt's last token is its own last word (the answer position)."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    full = tokenizer("x", add_special_tokens=True)["input_ids"]
    start = next((i for i in range(len(full) - len(bare) + 1) if full[i : i + len(bare)] == bare), None)
    return 0 if start is None else len(full) - start - len(bare)


def _tokenize(tokenizer, template: str, rows: list[dict[str, str]]) -> tuple[list[list[int]], list[list[int]]]:
    """Each row's prompt ids (with the tokenizer's leading special tokens) and, per token, the index of the field
    whose text it lies in (-1: the template's own text, a special token, or a token across a field's edge)."""
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError(f"decoder prompts need a fast tokenizer (tokenizer.json) to truncate inside the texts; "
                         f"{type(tokenizer).__name__} is a slow one: save the tokenizer with its tokenizer.json.")
    rendered = [render(template, row) for row in rows]
    enc = tokenizer([text for text, _ in rendered], add_special_tokens=True, return_offsets_mapping=True,
                    return_attention_mask=False, return_token_type_ids=False)
    cut = _suffix_length(tokenizer)
    ids_out, owners_out = [], []
    for ids, offsets, (_, spans) in zip(enc["input_ids"], enc["offset_mapping"], rendered):
        if cut:
            ids, offsets = ids[:-cut], offsets[:-cut]
        owners = []
        for start, end in offsets:
            owner = -1
            if end > start:
                owner = next((j for j, (s, e) in enumerate(spans) if s <= start and end <= e), -1)
            owners.append(owner)
        ids_out.append(list(ids))
        owners_out.append(owners)
    return ids_out, owners_out


def _keep_counts(counts: list[int], budget: int) -> list[int]:
    """How many tokens each field keeps so that they total at most `budget`: the longest are cut first, down to a
    common length (the largest that fits); the earlier fields above it keep one token more where room is left."""
    if sum(counts) <= budget:
        return list(counts)
    low, high = 0, max(counts)
    while low < high:  # the largest cap c with sum(min(n, c)) <= budget
        mid = (low + high + 1) // 2
        low, high = (mid, high) if sum(min(n, mid) for n in counts) <= budget else (low, mid - 1)
    keep = [min(n, low) for n in counts]
    spare = budget - sum(keep)
    for j, n in enumerate(counts):
        if spare and n > low:
            keep[j] += 1
            spare -= 1
    return keep


def _truncate(ids: list[int], owners: list[int], n_fields: int, max_len: int, template: str) -> list[int]:
    """`ids` cut to `max_len` by dropping the middle of the longest fields' tokens (head and tail kept); `owners` numbers
    the `n_fields` places a field is rendered at (`_tokenize`)."""
    if len(ids) <= max_len:
        return ids
    positions = [[t for t, o in enumerate(owners) if o == j] for j in range(n_fields)]
    fixed = len(ids) - sum(len(p) for p in positions)
    if fixed > max_len:
        raise ValueError(f"max_len={max_len}: the template's own text takes {fixed} tokens, more than max_len, so no room is left "
                         f"for the texts: raise max_len or shorten the template {template!r}.")
    kept = set()
    for pos, count in zip(positions, _keep_counts([len(p) for p in positions], max_len - fixed)):
        head = count - count // 2
        kept.update(pos[:head])
        kept.update(pos[len(pos) - count // 2 :] if count // 2 else [])
    return [i for t, (i, o) in enumerate(zip(ids, owners)) if o == -1 or t in kept]


def prompt_lengths(tokenizer, fields, template: str) -> np.ndarray:
    """Tokens per row of the untruncated prompts (with special tokens), shape (N,): what ``max_len=0`` measures."""
    ids, _ = _tokenize(tokenizer, template, _fields(fields, template_fields(template)))
    return np.fromiter((len(row) for row in ids), dtype=np.int64, count=len(ids))


def encode_prompts(tokenizer, fields, template: str, max_len: int, labels=None, features=None, weights=None):
    """Prompts as model inputs: each row rendered into `template` and tokenized once, as a `PairEncodings`
    (right-padded batches, no token types).

    Truncation never cuts the template's own text: a prompt over `max_len` tokens loses tokens from the middle
    of its longest field(s) (the start and end of each text stay), so the cue at its end stays whole.

    Args:
        tokenizer: a fast transformers tokenizer; its leading special tokens (bos) are added, trailing ones
            (an eos) are not, so each row's last token is the prompt's last (the answer position).
        fields: a frame, or a mapping of columns, holding every field the template names.
        template: the format string (`template_fields`).
        max_len, labels, features, weights: as in `PairEncodings`.

    Raises:
        ValueError: the template's own tokens exceed `max_len`, or a field is missing from `fields`.

    Example:
        >>> enc = encode_prompts(tokenizer, frame, "A: {text_a}\\nB: {text_b}\\nSame? Answer:", 256)
        >>> batch = enc.collate([0, 1])  # input_ids, attention_mask
    """
    from kagglekit.data.batching import PairEncodings  # torch: only when rows are encoded

    names = template_fields(template)
    ids, owners = _tokenize(tokenizer, template, _fields(fields, names))
    slots = sum(1 for _, field, _, _ in string.Formatter().parse(template) if field is not None)  # a field named twice: two
    rows = [_truncate(i, o, slots, max_len, template) for i, o in zip(ids, owners)]
    return PairEncodings.from_ids(rows, pad_id=pad_token_id(tokenizer), labels=labels, features=features, weights=weights)


def encode_rows(tokenizer, frame: "pd.DataFrame", max_len: int, *, template: str = "", labels=None, features=None, weights=None):
    """The rows of a normalized frame as model inputs: ``(text_a, text_b)`` pairs for an encoder, or each row's
    prompt when `template` is given (a decoder's; `encode_prompts`).

    Example:
        >>> enc = encode_rows(tokenizer, valid_df, cfg.max_len, template=cfg.template, labels=valid_df["label"])
    """
    if template:
        return encode_prompts(tokenizer, frame, template, max_len, labels, features, weights)
    from kagglekit.data.batching import PairEncodings

    return PairEncodings(tokenizer, frame["text_a"], frame["text_b"], max_len, labels, features, weights)
