"""The synthetic vocabulary behind the tiny tokenizers and the sample data, read from package data.

The word lists live in `kagglekit/testing/data/` and ship in the wheel; they are read once, at import,
with `importlib.resources`, so they load the same from a source tree, an installed wheel or a zip.

- `domains.json`: one domain per CPC class, each with modifier ("mods") and head ("heads") concepts
  and a related class ("alt"). A concept is a group of interchangeable surface forms; every form
  belongs to exactly one group, so "shares a concept" is well defined and a synonym-aware overlap
  feature recovers the score.
- `cpc_titles.json`: CPC code -> title for every code the sample data uses (sections, classes and a
  few subclasses and groups).
- `corpus.txt`: hand-written patent-flavoured and everyday sentences, one a line.
"""

from __future__ import annotations

import json
from importlib import resources

__all__ = ["DOMAINS", "QUALIFIERS", "SAMPLE_CPC_TITLES", "SAMPLE_SYNONYM_GROUPS", "corpus_lines", "read_data"]


def read_data(name: str) -> str:
    """The text of the package data file `data/<name>` (UTF-8).

    Args:
        name: File name inside `kagglekit/testing/data/`, e.g. "corpus.txt".

    Raises:
        FileNotFoundError: No such data file; the message lists the ones there are.
    """
    folder = resources.files(__package__) / "data"
    path = folder / name
    if not path.is_file():
        names = sorted(p.name for p in folder.iterdir() if p.is_file())
        raise FileNotFoundError(f"kagglekit.testing has no data file {name!r}; the data files are {names}")
    return path.read_text(encoding="utf-8")


DOMAINS: dict[str, dict] = json.loads(read_data("domains.json"))
"""CPC class -> {"alt": related class, "mods": [[form, ...], ...], "heads": [[form, ...], ...]} (file order)."""

# Qualifiers that change little: they turn a head-only target into a "close" (0.75) match and also
# decorate some low-score targets, so their presence alone does not give the score away.
QUALIFIERS = ("main", "improved", "auxiliary", "modular", "compact")

SAMPLE_SYNONYM_GROUPS: tuple[tuple[str, ...], ...] = tuple(
    tuple(group) for dom in DOMAINS.values() for kind in ("mods", "heads") for group in dom[kind]
)
"""Every concept group the synthetic phrases are built from (forms within a group are synonyms)."""

SAMPLE_CPC_TITLES: dict[str, str] = json.loads(read_data("cpc_titles.json"))
"""CPC code -> title for the sample data, in the layout of the competition's CPC title list."""

_CORPUS_SENTENCES: tuple[str, ...] = tuple(line for line in read_data("corpus.txt").splitlines() if line.strip())


def corpus_lines() -> list[str]:
    """Training text for the tiny tokenizers: the corpus sentences, the CPC titles and concept phrases.

    Returns:
        A new list of lines, the same on every call (tokenizer training depends on its order).
    """
    lines = list(_CORPUS_SENTENCES)
    lines += list(SAMPLE_CPC_TITLES.values())
    templates = ("the {m} {h} is shown in figure {i}", "{m} {h}", "a {m} {h} according to claim {i}",
                 "The {h} of the {m} is adjusted")
    for d, dom in enumerate(DOMAINS.values()):
        heads = dom["heads"]
        for i, mods in enumerate(dom["mods"]):
            # Rotate through forms so every surface form of every group occurs, without the full product.
            parts = []
            for j, hgroup in enumerate(heads):
                k = i + j + d
                parts.append(templates[k % len(templates)].format(
                    m=mods[k % len(mods)], h=hgroup[k % len(hgroup)], i=1 + k % 9))
            lines.append("; ".join(parts) + ".")
        for hgroup in heads:
            lines.append(", ".join(hgroup) + " and " + ", ".join(f for g in dom["mods"] for f in g[:1]) + ".")
    return lines
