"""CPC context titles: read the CPCTitleList folder format and turn a context code into text.

USPPPM gives each pair a CPC class code such as ``A47``. Models score better with the words of the
section ("HUMAN NECESSITIES") and class ("FURNITURE; ...") titles than with the bare code.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

# The levels the context text is built from, in order: section (1 char) and class (3 chars).
_CODE_LENGTHS = (1, 3)


def read_cpc_titles(cpc_dir: str | os.PathLike) -> dict[str, str]:
    """Read section and class titles from a CPCTitleList folder.

    The folder holds one file per section (``cpc-section-A_20220201.txt`` ...); each line is
    ``code<TAB>level<TAB>title``. Only section and class codes are kept: deeper levels would make
    a title table of 260k lines where the context text uses a few hundred.

    Args:
        cpc_dir: the folder (the ``cpc_dir`` config key).

    Returns:
        ``{code: title}`` for sections (``"A"``) and classes (``"A47"``).
    """
    cpc_dir = Path(cpc_dir)
    if not cpc_dir.is_dir():
        raise FileNotFoundError(
            f"cpc_dir: folder not found: {cpc_dir}. Attach the CPC title dataset and point cpc_dir at the folder "
            "holding cpc-section-*.txt, or set cpc_dir to empty to use the context codes as text."
        )
    files = sorted(cpc_dir.glob("cpc-section-*.txt"))
    if not files:
        raise FileNotFoundError(
            f"cpc_dir: {cpc_dir} holds no cpc-section-*.txt files (found: {sorted(p.name for p in cpc_dir.iterdir())[:5]}). "
            "Point cpc_dir at the CPCTitleList folder itself."
        )
    titles: dict[str, str] = {}
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                parts = line.rstrip("\n").split("\t")
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


def context_text(code: str, titles: dict[str, str] | None) -> str | None:
    """Text for a context code: ``"section title; class title"`` in lower case.

    Returns None when `titles` is given but knows neither the section nor the class, so the
    caller can warn once for all unknown codes.
    """
    if not titles:
        return code
    # section then class; a code that is itself a section gives one title
    keys = dict.fromkeys((code[:1], code[:3]))
    parts = [titles[key] for key in keys if key in titles]
    if not parts:
        return None
    return "; ".join(parts).lower()


def context_texts(codes, titles: dict[str, str] | None, *, what: str) -> list[str]:
    """Map every code to its text; unknown codes warn (once, listing them) and fall back to the code."""
    out, unknown = [], set()
    for code in codes:
        text = context_text(code, titles)
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
