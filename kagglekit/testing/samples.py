"""A synthetic data set in the USPPPM (patent phrase matching) schema, and the CPC title folder.

Phrases are built from the concept groups in `vocab.DOMAINS`, so scores follow from shared concepts
and a model can learn them. pandas is imported inside functions only.
"""

from __future__ import annotations

import hashlib
import random
import string
from pathlib import Path

from kagglekit._io import write_text
from kagglekit.testing.vocab import DOMAINS, QUALIFIERS, SAMPLE_CPC_TITLES

__all__ = ["make_uspppm_sample", "write_cpc_titles", "write_uspppm_sample"]

_LEVELS = (1.0, 0.75, 0.5, 0.25, 0.0)
_LEVEL_WEIGHTS = (0.15, 0.2, 0.25, 0.2, 0.2)
_TWO_CONTEXT_SHARE = 0.1


def _pick_other(rng: random.Random, forms: list[str], avoid: str) -> str:
    others = [f for f in forms if f != avoid]
    return rng.choice(others) if others else avoid


def _make_target(rng: random.Random, level: float, code: str, mi: int, hi: int, anchor_forms) -> str:
    """One target phrase whose relation to the anchor (domain `code`, concepts mi/hi) fits `level`."""
    dom = DOMAINS[code]
    mods, heads = dom["mods"], dom["heads"]
    am, ah = anchor_forms
    if level == 1.0:
        # Same two concepts. Mostly one word swapped for a synonym, as in the competition where 1.0 is
        # a near copy; swapping both leaves no shared word and needs real synonym knowledge.
        m, h = _pick_other(rng, mods[mi], am), _pick_other(rng, heads[hi], ah)
        if rng.random() < 0.7:
            m, h = (am, h) if rng.random() < 0.5 else (m, ah)
        return f"{m} {h}"
    if level == 0.75:
        h = rng.choice(heads[hi])
        return f"{rng.choice(QUALIFIERS)} {h}" if rng.random() < 0.5 else h
    if level == 0.5:
        if rng.random() < 0.5:
            other = rng.choice([j for j in range(len(heads)) if j != hi])
            return f"{rng.choice(mods[mi])} {rng.choice(heads[other])}"
        other = rng.choice([j for j in range(len(mods)) if j != mi])
        return f"{rng.choice(mods[other])} {rng.choice(heads[hi])}"
    if level == 0.25:
        m = rng.choice([g for j, g in enumerate(mods) if j != mi])
        h = rng.choice([g for j, g in enumerate(heads) if j != hi])
    else:
        far = DOMAINS[rng.choice([c for c in DOMAINS if c != code])]
        m, h = rng.choice(far["mods"]), rng.choice(far["heads"])
    phrase = f"{rng.choice(m)} {rng.choice(h)}"
    return f"{rng.choice(QUALIFIERS)} {phrase}" if rng.random() < 0.1 else phrase


def _row_id(seed: int, split: str, anchor: str, target: str, context: str) -> str:
    key = f"{seed}|{split}|{anchor}|{target}|{context}".encode()
    return hashlib.sha1(key).hexdigest()[:16]


def _rows_for_anchor(rng, seed, split, code, mi, hi, n_targets):
    dom = DOMAINS[code]
    forms = [(m, h) for m in dom["mods"][mi] for h in dom["heads"][hi]]
    # Anchors stay at two or three words where the synonyms allow it, like most real USPPPM anchors.
    short = [(m, h) for m, h in forms if len(f"{m} {h}".split()) <= 3]
    am, ah = rng.choice(short or forms)
    anchor = f"{am} {ah}"
    if n_targets >= len(_LEVELS):
        levels = list(_LEVELS) + rng.choices(_LEVELS, weights=_LEVEL_WEIGHTS, k=n_targets - len(_LEVELS))
    else:
        levels = rng.sample(_LEVELS, n_targets)
    rng.shuffle(levels)
    contexts = [code]
    if rng.random() < _TWO_CONTEXT_SHARE and n_targets >= 2:
        contexts.append(dom["alt"])
    rows, seen = [], {anchor}
    for k, level in enumerate(levels):
        for _ in range(20):  # re-draw on duplicates; small concept groups collide now and then
            target = _make_target(rng, level, code, mi, hi, (am, ah))
            if target not in seen:
                break
        else:
            continue
        seen.add(target)
        # Two-context anchors alternate so that both codes really occur.
        context = contexts[k % len(contexts)]
        rows.append({"id": _row_id(seed, split, anchor, target, context), "anchor": anchor, "target": target,
                     "context": context, "score": level})
    return rows


def make_uspppm_sample(*, n_anchors: int = 120, targets_per_anchor: int = 8, n_test_anchors: int = 15,
                       seed: int = 0) -> dict:
    """Build a small synthetic data set in the USPPPM (patent phrase matching) schema.

    Anchors are two-concept phrases ("engine housing"); targets keep both concepts via synonyms (1.0),
    keep only the head (0.75), share one concept (0.5), stay in the domain (0.25) or leave it (0.0).
    Test anchors are concept pairs never used in train; about one anchor in ten has its rows split
    over two related contexts.

    Args:
        n_anchors: Distinct train anchors, each with about `targets_per_anchor` rows.
        targets_per_anchor: Targets per anchor in train and test.
        n_test_anchors: Distinct test anchors, disjoint from the train anchors.
        seed: Seed for every random choice; the same seed gives identical frames.

    Returns:
        Dict with "train" (id, anchor, target, context, score), "test" (id, anchor, target, context),
        "sample_submission" (id, score=0) data frames and "cpc_titles" ({code: title}).

    Raises:
        ValueError: More anchors are asked for than concept pairs exist, or a count is not positive.
    """
    import pandas as pd

    pairs = [(code, mi, hi) for code, dom in DOMAINS.items()
             for mi in range(len(dom["mods"])) for hi in range(len(dom["heads"]))]
    if n_anchors < 1 or targets_per_anchor < 1 or n_test_anchors < 0:
        raise ValueError(f"counts must be positive, got n_anchors={n_anchors}, "
                         f"targets_per_anchor={targets_per_anchor}, n_test_anchors={n_test_anchors}")
    if n_anchors + n_test_anchors > len(pairs):
        raise ValueError(f"n_anchors + n_test_anchors = {n_anchors + n_test_anchors} exceeds the "
                         f"{len(pairs)} distinct anchors available; ask for fewer")
    rng = random.Random(seed)
    # Round-robin over domains keeps every CPC context represented in both splits.
    by_code: dict[str, list] = {code: [] for code in DOMAINS}
    for p in pairs:
        by_code[p[0]].append(p)
    for lst in by_code.values():
        rng.shuffle(lst)
    codes = list(DOMAINS)
    rng.shuffle(codes)
    order = []
    for i in range(max(len(lst) for lst in by_code.values())):
        order += [by_code[c][i] for c in codes if i < len(by_code[c])]
    test_pairs, train_pairs = order[:n_test_anchors], order[n_test_anchors:n_test_anchors + n_anchors]

    train_rows = [r for code, mi, hi in train_pairs
                  for r in _rows_for_anchor(rng, seed, "train", code, mi, hi, targets_per_anchor)]
    test_rows = [r for code, mi, hi in test_pairs
                 for r in _rows_for_anchor(rng, seed, "test", code, mi, hi, targets_per_anchor)]
    rng.shuffle(test_rows)

    ids = [r["id"] for r in train_rows + test_rows]
    if len(set(ids)) != len(ids):  # 64-bit hash prefixes; a clash would mean duplicated rows
        raise RuntimeError(f"duplicate ids for seed={seed}; try another seed")

    train = pd.DataFrame(train_rows, columns=["id", "anchor", "target", "context", "score"])
    # Sorted by anchor like the competition's train.csv, which keeps anchor groups contiguous.
    train = train.sort_values("anchor", kind="stable").reset_index(drop=True)
    train["score"] = train["score"].astype("float64")
    test = pd.DataFrame(test_rows, columns=["id", "anchor", "target", "context", "score"]).drop(columns="score")
    submission = pd.DataFrame({"id": test["id"], "score": 0})
    return {"train": train, "test": test, "sample_submission": submission, "cpc_titles": dict(SAMPLE_CPC_TITLES)}


_CPC_FILE = "cpc-section-{}_20220201.txt"


def write_cpc_titles(titles: dict, out_dir) -> Path:
    """Write CPC titles in the layout of the CPCTitleList202202 folder.

    One file per section, `cpc-section-{S}_20220201.txt`, each line `code<TAB>level<TAB>title`. The
    level is empty for sections, classes and subclasses, and numeric for groups ("0" for main groups
    like `A47B1/00`, "1" below them). Section files in `out_dir` that `titles` no longer covers are
    removed, so the folder always matches `titles` exactly.

    Args:
        titles: Mapping CPC code -> title, e.g. {"A": "...", "A47": "...", "A47B1/00": "..."}.
        out_dir: Folder to write; created if missing.

    Returns:
        `out_dir` as a `Path`.

    Raises:
        ValueError: A code does not start with a section letter, or a code/title contains a tab or
            line break.
    """
    out_dir = Path(out_dir)
    sections: dict[str, list[str]] = {}
    for code, title in titles.items():
        code, title = str(code), str(title)
        if not code or code[0] not in string.ascii_uppercase:
            raise ValueError(f"CPC code {code!r} must start with a section letter A-Z, e.g. 'A47'")
        if any(ch in code + title for ch in "\t\r\n"):
            raise ValueError(f"CPC code/title for {code!r} contains a tab or line break; remove it")
        level = "" if "/" not in code else ("0" if code.endswith("/00") else "1")
        sections.setdefault(code[0], []).append((code, f"{code}\t{level}\t{title}\n"))
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {_CPC_FILE.format(s) for s in sections}
    for old in out_dir.glob(_CPC_FILE.format("*")):
        if old.name not in wanted:
            old.unlink()
    for section, lines in sorted(sections.items()):
        write_text(out_dir / _CPC_FILE.format(section), "".join(line for _, line in sorted(lines)))
    return out_dir


def write_uspppm_sample(out_dir, *, seed: int = 0, **kwargs) -> Path:
    """Write the synthetic data set as train.csv, test.csv, sample_submission.csv and cpc_titles/.

    Each file is written to a temporary name and renamed, so readers never see a partial file.

    Args:
        out_dir: Folder to write; created if missing.
        seed: Seed passed to `make_uspppm_sample`.
        **kwargs: Other `make_uspppm_sample` arguments (n_anchors, targets_per_anchor, n_test_anchors).

    Returns:
        `out_dir` as a `Path`.
    """
    out_dir = Path(out_dir)
    data = make_uspppm_sample(seed=seed, **kwargs)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in ("train", "test", "sample_submission"):
        write_text(out_dir / f"{name}.csv", data[name].to_csv(index=False, lineterminator="\n"))
    write_cpc_titles(data["cpc_titles"], out_dir / "cpc_titles")
    return out_dir
