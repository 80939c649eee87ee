"""CPC context titles: read the CPCTitleList folder format and turn a context code into text.

USPPPM gives each pair a CPC class code such as ``A47``. Models score better with the words of the
section ("HUMAN NECESSITIES") and class ("FURNITURE; ...") titles than with the bare code; the subclass titles add detail.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from kagglekit._io import read_csv, read_text
from kagglekit.config import CPC_LEVELS

# CPC levels by code length: section ("A"), class ("A47"), subclass ("A47B").
LEVELS = dict(zip(CPC_LEVELS, (1, 3, 4)))  # the code length of each level
_CODE_LENGTHS = tuple(LEVELS.values())


def read_cpc_titles(source: str | os.PathLike) -> dict[str, str]:
    """Read section, class and subclass titles from a CPCTitleList folder or a ``titles.csv`` file.

    The folder holds one file per section (``cpc-section-A_20220201.txt`` ...); each line is
    ``code<TAB>level<TAB>title``. A CSV file has the columns ``code`` and ``title`` (e.g. the
    "cpc-codes" Kaggle dataset's ``titles.csv``). Deeper levels (groups such as ``A47B1/00``) are
    dropped: a title table of 260k lines where the context text uses a few hundred. Files are UTF-8
    (a BOM is dropped); older lists in Windows-1252/Latin-1 are read too, with a warning naming the file.

    Args:
        source: the folder or the CSV file (the ``cpc_dir`` config key).

    Returns:
        ``{code: title}`` for sections (``"A"``), classes (``"A47"``) and subclasses (``"A47B"``).
    """
    source = Path(source)
    if source.is_file():
        return _read_titles_csv(source)
    if not source.is_dir():
        raise FileNotFoundError(
            f"cpc_dir: not found: {source}. Attach the CPC title dataset and point cpc_dir at the folder "
            "holding cpc-section-*.txt (or at a titles.csv with code and title columns), or set cpc_dir to "
            "empty to use the context codes as text."
        )
    files = sorted(source.glob("cpc-section-*.txt"))
    if not files:
        raise FileNotFoundError(
            f"cpc_dir: {source} holds no cpc-section-*.txt files (found: {sorted(p.name for p in source.iterdir())[:5]}). "
            "Point cpc_dir at the CPCTitleList folder itself, or at a titles.csv file."
        )
    titles: dict[str, str] = {}
    for path in files:
        # split on newlines only: str.splitlines would also split a Latin-1 title at a control byte such as 0x85
        for number, line in enumerate(read_text(path, what="cpc_dir", legacy=True).split("\n"), 1):
            parts = line.rstrip("\r").split("\t")
            if len(parts) < 3:
                if line.strip():
                    raise ValueError(
                        f"cpc_dir: {path} line {number} is not code<TAB>level<TAB>title: {line.strip()[:80]!r}"
                    )
                continue
            code, title = parts[0].strip(), parts[2].strip()
            if len(code) in _CODE_LENGTHS and title:
                titles[code] = title
    return titles


def _read_titles_csv(path: Path) -> dict[str, str]:
    frame = read_csv(path, what="cpc_dir", required=("code", "title"), legacy=True, dtype=str, keep_default_na=False)
    codes, titles = frame["code"].str.strip(), frame["title"].str.strip()
    keep = codes.str.len().isin(_CODE_LENGTHS) & titles.ne("")
    return dict(zip(codes[keep], titles[keep]))


def context_text(code: str, titles: dict[str, str] | None, levels=("section", "class")) -> str | None:
    """Text for a context code: the titles of the chosen levels, ``"; "``-joined, in lower case.

    USPPPM's codes are classes (``A47``): ``section`` and ``class`` are their own titles, and
    ``subclass`` is every subclass title under the class (``A47B``, ``A47C`` ...), in code order.
    Returns None when `titles` is given but knows none of them, so the caller can warn once for
    all unknown codes.
    """
    if not titles:
        return code
    parts = []
    for level in levels:
        if level == "subclass":
            parts += [titles[key] for key in sorted(titles) if len(key) == 4 and key.startswith(code[:3])]
        elif code[: LEVELS[level]] in titles and titles[code[: LEVELS[level]]] not in parts:
            parts.append(titles[code[: LEVELS[level]]])  # a code that is itself a section gives one title
    if not parts:
        return None
    return "; ".join(parts).lower()


def context_texts(codes, titles: dict[str, str] | None, *, what: str, levels=("section", "class")) -> list[str]:
    """Map every code to its text; unknown codes warn (once, listing them) and fall back to the code."""
    out, unknown, cache = [], set(), {}
    for code in codes:
        if code not in cache:
            cache[code] = context_text(code, titles, levels)
        text = cache[code]
        if text is None:
            unknown.add(code)
            text = code
        out.append(text)
    if unknown:
        shown = sorted(unknown)[:10]
        warnings.warn(
            f"{what}: {len(unknown)} context code(s) not in the CPC titles, e.g. {shown}; using the code itself as "
            "text for them. Check that cpc_dir is the full CPCTitleList folder.",
            stacklevel=2,
        )
    return out
