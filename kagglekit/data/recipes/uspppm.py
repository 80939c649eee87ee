"""USPPPM (U.S. Patent Phrase to Phrase Matching): anchor, target and CPC context → score in [0, 1].

The pair is ``text_a = anchor`` and ``text_b = "target; context text"`` (templates, configurable),
where the context text is the CPC section and class titles (levels configurable). With target
grouping, ``text_b`` also lists the other targets of the same anchor and context: the USPPPM
winner's largest single gain. Rows are grouped by anchor, because the hidden test's
anchors are all new: folds that split an anchor leak and overstate CV. A decoder backbone reads one
prompt per row instead, whose template may name the row's own fields ({anchor}, {target}, {context},
{code}, {targets}) as well as text_a and text_b; the frame then carries the fields it names.
"""

from __future__ import annotations

import pandas as pd

from kagglekit._io import read_csv
from kagglekit.config import parse_cpc_levels
from kagglekit.data.cpc import LEVELS, context_text, context_texts, read_cpc_titles
from kagglekit.data.recipes.contract import Recipe, bad_rows, check_ids, check_labels, check_text, numeric_features

TEXT_COLUMNS = ("anchor", "target", "context")
PLACEHOLDERS = ("anchor", "target", "context", "code", "targets")


def check_templates(template_a: str, template_b: str, grouping: str) -> None:
    """Templates use only the known placeholders, and ``{targets}`` exactly when grouping is on."""
    import string

    used = set()
    for key, template in (("template_a", template_a), ("template_b", template_b)):
        try:
            names = {field for _, field, _, _ in string.Formatter().parse(template) if field is not None}
        except ValueError as err:
            raise ValueError(f"config key {key!r}: {template!r} is not a valid template ({err}); write e.g. '{{target}}; {{context}}'.") from None
        unknown = sorted(names - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(f"config key {key!r}: unknown placeholder(s) {unknown} in {template!r}; use {list(PLACEHOLDERS)}.")
        used |= names
    if grouping and "targets" not in used:
        raise ValueError("target_grouping is on but neither template names {targets}: add it, e.g. template_b='{target}; {context}; {targets}'.")
    if not grouping and "targets" in used:
        raise ValueError("a template names {targets} but target_grouping is off: set target_grouping=true or drop {targets}.")


def grouped_targets(fields: pd.DataFrame, by: str, max_words: int, sep: str) -> list[str]:
    """For each row, the other targets of its anchor and context (or anchor and CPC section).

    The row's own target is left out; the others are unique, sorted, and added whole while their
    words fit `max_words`, so the text stays within the model's length. Rows are grouped within the
    file they come from: training folds are grouped by anchor, so no fold sees another's targets.
    """
    key = fields["code"] if by == "context" else fields["code"].str[:1]
    groups = fields.assign(_key=key).groupby(["anchor", "_key"], sort=False)["target"].agg(lambda t: sorted(set(t)))
    out = []
    for anchor, code, own in zip(fields["anchor"], key, fields["target"]):
        chosen, words = [], 0
        for other in groups[(anchor, code)]:
            if other == own:
                continue
            count = len(other.split())
            if words + count > max_words:
                break
            chosen.append(other)
            words += count
        out.append(sep.join(chosen))
    return out


def check_context_codes(df: pd.DataFrame, state: dict, *, what: str, path) -> None:
    """Training rows: every context code must have a title when CPC titles are given.

    A typo or a partial CPCTitleList folder would otherwise train on bare codes where the test rows
    get titles. Test files only warn (`context_texts`): a submission must not fail on one new code.
    """
    titles = state.get("context_titles")
    if not titles:
        return
    levels = state.get("cpc_levels", ("section", "class"))
    codes = df["context"].astype(str).str.strip()
    known = {code: context_text(code, titles, levels) is not None for code in codes.unique()}
    bad = ~codes.map(known).astype(bool)
    if bad.any():
        count, shown = bad_rows(df, bad, "id", value_col="context")
        raise ValueError(
            f"{what}: {path} column 'context' has {count} code(s) with no title in cpc_dir: {shown}. Fix the codes, point "
            "cpc_dir at the full CPCTitleList folder (or a titles.csv that has them), or set cpc_dir= (empty) to use the codes as text."
        )


def _prompt_fields(template: str) -> list[str]:
    """The row fields (`PLACEHOLDERS`) a decoder's template names; none without a template."""
    if not template:
        return []
    from kagglekit.data.prompts import template_fields

    return [name for name in template_fields(template) if name in PLACEHOLDERS]


class UspppmRecipe(Recipe):
    """The USPPPM files (``id, anchor, target, context[, score]``) → pairs grouped by anchor; pearson."""

    name = "uspppm"
    id_col = "id"
    target_col = "score"
    metric = "pearson"
    label_range = (0.0, 1.0)
    prompt_fields = PLACEHOLDERS  # a decoder's template may name the row's own fields too
    DEFAULT_TEMPLATE = ("Patent context: {context}\nPhrase 1: {anchor}\nPhrase 2: {target}\n"
                        "Do the two phrases mean the same in this context? Answer:")
    GROUPED_TEMPLATE = ("Patent context: {context}\nPhrase 1: {anchor}\nPhrase 2: {target}\nOther phrases matched with phrase 1: "
                        "{targets}\nDo phrase 1 and phrase 2 mean the same in this context? Answer:")

    def default_template(self, cfg) -> str:
        """With target grouping, the default names {targets} too."""
        return self.GROUPED_TEMPLATE if cfg.target_grouping else self.DEFAULT_TEMPLATE

    def check_prompt(self, names: list[str], cfg) -> None:
        """template_a / template_b shape text_a / text_b, and target grouping fills {targets} (directly or through
        text_b): refuse each when the decoder template leaves it without effect."""
        if cfg.template_a != "{anchor}" and "text_a" not in names:
            raise ValueError(f"config key 'template_a' ({cfg.template_a!r}) shapes {{text_a}}, which the template does not name: "
                             "leave template_a at its default, or name {text_a} in the template.")
        if cfg.template_b and "text_b" not in names:
            raise ValueError(f"config key 'template_b' ({cfg.template_b!r}) shapes {{text_b}}, which the template does not name: "
                             "leave template_b empty, or name {text_b} in the template.")
        if cfg.target_grouping and not {"targets", "text_b"} & set(names):
            raise ValueError("target_grouping is on but the template names neither {targets} nor {text_b}: add {targets}, or "
                             "set target_grouping=false.")
        if "targets" in names and not cfg.target_grouping:
            raise ValueError("the template names {targets} but target_grouping is off: set target_grouping=true or drop {targets}.")

    def state(self, cfg) -> dict:
        # Only the titles of the chosen levels: a few hundred entries, small enough to ship in every
        # model folder, so predict never needs the CPC dataset attached.
        levels = parse_cpc_levels(cfg.cpc_levels)
        titles = read_cpc_titles(cfg.cpc_dir) if cfg.cpc_dir else None
        if titles:
            lengths = {LEVELS[level] for level in levels} | {LEVELS["section"]}  # a section code names itself
            titles = {code: title for code, title in titles.items() if len(code) in lengths}
        grouping = cfg.target_grouping_by if cfg.target_grouping else ""
        template_b = cfg.template_b or ("{target}; {context}; {targets}" if grouping else "{target}; {context}")
        check_templates(cfg.template_a, template_b, grouping)
        return {
            **super().state(cfg),
            "context_titles": titles,
            "cpc_levels": levels,
            "target_grouping": grouping,
            "group_max_words": cfg.group_max_words,
            "group_sep": cfg.group_sep,
            "template_a": cfg.template_a,
            "template_b": template_b,
        }

    def _frame(self, df: pd.DataFrame, state: dict, *, what: str, path) -> pd.DataFrame:
        codes = df["context"].astype(str).str.strip()
        contexts = context_texts(codes, state.get("context_titles"), what=what, levels=state.get("cpc_levels", ("section", "class")))
        features = numeric_features(df, state.get("feature_columns") or (), what=what, path=path)
        fields = pd.DataFrame({
            "anchor": df["anchor"].astype(str).str.strip(),
            "target": df["target"].astype(str).str.strip(),
            "context": contexts,
            "code": codes,
        })
        grouping = state.get("target_grouping", "")
        fields["targets"] = grouped_targets(fields, grouping, state.get("group_max_words", 64), state.get("group_sep", ", ")) if grouping else ""
        template_a, template_b = state.get("template_a", "{anchor}"), state.get("template_b", "{target}; {context}")
        prompt = _prompt_fields(state.get("template", ""))  # a decoder's template: the row's own fields it names
        return pd.DataFrame(
            {
                "id": df[self.id_col].astype(str).to_numpy(),
                "text_a": [template_a.format(**row) for row in fields.to_dict("records")],
                "text_b": [template_b.format(**row) for row in fields.to_dict("records")],
                "group": fields["anchor"].to_numpy(),
                **{name: fields[name].to_numpy() for name in prompt},
                **features,
            }
        )

    def read_train(self, path, state: dict, *, max_rows: int = 0, what: str = "train_csv") -> pd.DataFrame:
        features = state.get("feature_columns") or []
        df = read_csv(path, what=what, required=(self.id_col, *TEXT_COLUMNS, self.target_col, *features), dtype={self.id_col: str})
        if max_rows:
            df = df.iloc[:max_rows].reset_index(drop=True)
        check_ids(df, what=what, path=path)
        check_text(df, TEXT_COLUMNS, what=what, path=path)
        check_labels(df, self.target_col, *self.label_range, what=what, path=path)
        check_context_codes(df, state, what=what, path=path)
        frame = self._frame(df, state, what=what, path=path)
        frame["label"] = pd.to_numeric(df[self.target_col]).astype(float).to_numpy()
        return frame

    def read_test(self, path, state: dict) -> pd.DataFrame:
        what = "test data"
        features = state.get("feature_columns") or []
        df = read_csv(path, what=what, required=(self.id_col, *TEXT_COLUMNS, *features), dtype={self.id_col: str})
        check_ids(df, what=what, path=path)
        check_text(df, TEXT_COLUMNS, what=what, path=path)
        return self._frame(df, state, what=what, path=path)
