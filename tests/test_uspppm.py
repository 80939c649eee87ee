"""USPPPM recipe: CPC titles to context text, the normalized frame, and bad input errors."""


import pandas as pd
import pytest

from conftest import ROOT
from kagglekit.config import load_config
from kagglekit.data.cpc import context_text, read_cpc_titles
from kagglekit.data.recipes import get_recipe

TITLES = {"A": "HUMAN NECESSITIES", "A47": "FURNITURE; DOMESTIC ARTICLES", "G": "PHYSICS", "G02": "OPTICS"}


def write_cpc(folder, titles):
    folder.mkdir(parents=True, exist_ok=True)
    by_section = {}
    for code, title in titles.items():
        by_section.setdefault(code[0], []).append(f"{code}\t\t{title}")
    for section, lines in by_section.items():
        # deeper levels carry a number in the level column and must be skipped
        lines.append(f"{section}01B1/00\t0\tsome deep group")
        (folder / f"cpc-section-{section}_20220201.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def frame(rows=None, **changes):
    df = pd.DataFrame(
        rows
        or [
            {"id": "a1", "anchor": "abatement", "target": "noise reduction", "context": "A47", "score": 0.5},
            {"id": "a2", "anchor": "abatement", "target": "pollution control", "context": "A47", "score": 0.75},
            {"id": "b1", "anchor": "lens", "target": "optical element", "context": "G02", "score": 1.0},
        ]
    )
    for column, value in changes.items():
        df[column] = value
    return df


def test_read_cpc_titles_keeps_sections_and_classes(tmp_path):
    titles = read_cpc_titles(write_cpc(tmp_path / "cpc", TITLES))
    assert titles == TITLES


def test_context_text():
    assert context_text("A47", TITLES) == "human necessities; furniture; domestic articles"
    assert context_text("G", TITLES) == "physics"
    assert context_text("G99", TITLES) == "physics"  # class unknown, section known
    assert context_text("Z11", TITLES) is None
    assert context_text("A47", None) == "A47"


def test_frame_with_titles(tmp_path):
    cpc = write_cpc(tmp_path / "cpc", TITLES)
    path = tmp_path / "train.csv"
    frame().to_csv(path, index=False)
    recipe = get_recipe("uspppm")
    state = recipe.state(load_config(None, [f"cpc_dir={cpc}"]))
    assert state == {"feature_columns": [], "context_titles": read_cpc_titles(cpc), "cpc_levels": ["section", "class"],
                     "target_grouping": "", "group_max_words": 64, "group_sep": ", ", "template_a": "{anchor}",
                     "template_b": "{target}; {context}"}
    out = recipe.read_train(path, state)
    assert list(out.columns) == ["id", "text_a", "text_b", "group", "label"]
    assert out["text_b"].tolist()[0] == "noise reduction; human necessities; furniture; domestic articles"
    assert out["group"].tolist() == ["abatement", "abatement", "lens"]
    assert out["label"].tolist() == [0.5, 0.75, 1.0]
    # without titles the code itself is the context
    plain = recipe.read_train(path, {"context_titles": None})
    assert plain["text_b"].tolist()[2] == "optical element; G02"
    assert recipe.read_train(path, {}, max_rows=2)["id"].tolist() == ["a1", "a2"]


def read(tmp_path, df, *, test=False, state=None):
    path = tmp_path / "data.csv"
    df.to_csv(path, index=False)
    recipe = get_recipe("uspppm")
    if test:
        return recipe.read_test(path, state or {})
    return recipe.read_train(path, state or {})


@pytest.mark.parametrize(
    "df, message",
    [
        (frame().drop(columns=["target"]), r"has no column 'target'; its columns are \['id', 'anchor', 'context', 'score'\]"),
        (frame(target=["x", None, "y"]), r"column 'target' has 1 empty or missing value\(s\): line 3 \(id 'a2'\)"),
        (frame(anchor=["x", "   ", "y"]), r"column 'anchor' has 1 empty"),
        (frame(score=[0.5, 1.5, 0.0]), r"column 'score' must hold numbers in \[0, 1\]; 1 row\(s\) do not: line 3 \(id 'a2'\): 1.5"),
        (frame(score=[0.5, "high", 0.0]), r"column 'score' must hold numbers"),
        (frame(id=["a1", "a1", "b1"]), r"column 'id' has 2 rows with duplicated ids"),
    ],
)
def test_bad_train_input(tmp_path, df, message):
    with pytest.raises(ValueError, match=message):
        read(tmp_path, df)


def test_missing_file_names_key(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train_csv: file not found: .*nope.csv"):
        get_recipe("uspppm").read_train(tmp_path / "nope.csv", {})
    with pytest.raises(ValueError, match=r"train_csv is not set"):
        get_recipe("uspppm").read_train("", {})


def test_non_utf8_and_empty_files(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("id,anchor,target,context,score\nx,caf\xe9,b,A47,0.5\n".encode("latin-1"))
    with pytest.raises(ValueError, match="is not UTF-8"):
        get_recipe("uspppm").read_train(path, {})
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        get_recipe("uspppm").read_test(empty, {})


def test_unknown_context_code_warns_in_test_files_and_fails_in_training_files(tmp_path):
    df = frame(context=["A47", "Z99", "Z98"])
    with pytest.warns(UserWarning, match=r"2 context code\(s\) not in the CPC titles, e.g. \['Z98', 'Z99'\]"):
        out = read(tmp_path, df.drop(columns="score"), test=True, state={"context_titles": TITLES})
    assert out["text_b"].tolist()[1] == "pollution control; Z99"
    with pytest.raises(ValueError, match=r"column 'context' has 2 code\(s\) with no title in cpc_dir: "
                                         r"line 3 \(id 'a2'\): 'Z99', line 4 \(id 'b1'\): 'Z98'"):
        read(tmp_path, df, state={"context_titles": TITLES})


def test_test_file_needs_no_score(tmp_path):
    out = read(tmp_path, frame().drop(columns=["score"]), test=True)
    assert "label" not in out.columns and len(out) == 3


def test_unknown_task():
    with pytest.raises(ValueError, match=r"unknown task 'squad'; valid tasks are \[.*'uspppm'\]"):
        get_recipe("squad")


# --------------------------------------------------------------------------------------------------
# CPC levels, titles.csv, target grouping, templates, max_len from the data


LEVEL_TITLES = {**TITLES, "A47B": "TABLES; DESKS", "A47C": "CHAIRS; SOFAS", "A61K": "MEDICAL PREPARATIONS"}


def state_for(tmp_path, *settings):
    cpc = write_cpc(tmp_path / "cpc", LEVEL_TITLES)
    return get_recipe("uspppm").state(load_config(None, [f"cpc_dir={cpc}", *settings]))


def test_cpc_levels(tmp_path):
    assert context_text("A47", LEVEL_TITLES, ["class"]) == "furniture; domestic articles"
    assert context_text("A47", LEVEL_TITLES, ["section", "class", "subclass"]) == (
        "human necessities; furniture; domestic articles; tables; desks; chairs; sofas")
    assert context_text("A47", LEVEL_TITLES, ["subclass"]) == "tables; desks; chairs; sofas"  # not A61K
    state = state_for(tmp_path, "cpc_levels=section,subclass")
    assert sorted(state["context_titles"]) == ["A", "A47B", "A47C", "A61K", "G"]  # only what the levels use
    with pytest.raises(ValueError, match=r"'cpc_levels': 'group'; use a comma-separated subset of \['section', 'class', 'subclass'\]"):
        load_config(None, ["cpc_dir=x", "cpc_levels=group"])


def test_titles_csv_format(tmp_path):
    csv = tmp_path / "titles.csv"
    pd.DataFrame({"code": ["A", "A47", "A47B", "A47B1/00"], "title": ["HUMAN NECESSITIES", "FURNITURE", "TABLES", "deep"],
                  "section": ["A"] * 4}).to_csv(csv, index=False)
    assert read_cpc_titles(csv) == {"A": "HUMAN NECESSITIES", "A47": "FURNITURE", "A47B": "TABLES"}
    with pytest.raises(ValueError, match=r"cpc_dir: .*bad.csv has no column 'title'"):
        bad = tmp_path / "bad.csv"
        pd.DataFrame({"code": ["A"]}).to_csv(bad, index=False)
        read_cpc_titles(bad)


def grouping_frame():
    return frame([
        {"id": "1", "anchor": "abatement", "target": "noise reduction", "context": "A47", "score": 0.5},
        {"id": "2", "anchor": "abatement", "target": "pollution control", "context": "A47", "score": 0.75},
        {"id": "3", "anchor": "abatement", "target": "air cleaning", "context": "A47", "score": 0.25},
        {"id": "4", "anchor": "abatement", "target": "forest region", "context": "A61", "score": 0.0},
        {"id": "5", "anchor": "lens", "target": "optical element", "context": "G02", "score": 1.0},
    ])


def test_target_grouping_by_context_and_by_section(tmp_path):
    path = tmp_path / "train.csv"
    grouping_frame().to_csv(path, index=False)
    recipe = get_recipe("uspppm")
    by_context = recipe.read_train(path, state_for(tmp_path, "target_grouping=true"))
    assert by_context["text_b"].tolist()[:2] == [
        "noise reduction; human necessities; furniture; domestic articles; air cleaning, pollution control",
        "pollution control; human necessities; furniture; domestic articles; air cleaning, noise reduction",
    ]
    assert by_context["text_b"].tolist()[3].endswith("; ")  # alone in its context: no other target
    by_section = recipe.read_train(path, state_for(tmp_path, "target_grouping=true", "target_grouping_by=section", "group_sep= | "))
    assert by_section["text_b"].tolist()[3].endswith("; air cleaning | noise reduction | pollution control")
    # the cap takes whole targets while their words fit
    capped = recipe.read_train(path, state_for(tmp_path, "target_grouping=true", "group_max_words=3"))
    assert capped["text_b"].tolist()[0].endswith("; air cleaning")  # "pollution control" would make 4 words


def test_templates(tmp_path):
    path = tmp_path / "train.csv"
    grouping_frame().to_csv(path, index=False)
    state = state_for(tmp_path, "template_a=[{code}] {anchor}", "template_b={target}")
    out = get_recipe("uspppm").read_train(path, state)
    assert out["text_a"].tolist()[0] == "[A47] abatement" and out["text_b"].tolist()[0] == "noise reduction"
    with pytest.raises(ValueError, match=r"names \{targets\} but target_grouping is off"):
        state_for(tmp_path, "template_b={target} {targets}")
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) \['score'\]"):
        state_for(tmp_path, "template_a={score}")
    with pytest.raises(ValueError, match=r"'group_max_words' \(10\) does nothing with target_grouping=false"):
        load_config(None, ["group_max_words=10"])


def test_max_len_zero_takes_the_longest_training_pair(tiny_bert, tmp_path):
    import json

    from kagglekit.data.batching import PairEncodings
    from kagglekit.models.pair_model import load_tokenizer
    from kagglekit.train import train_folds

    cfg = load_config(ROOT / "configs" / "uspppm.yaml", [f"backbone={tiny_bert}", f"output_dir={tmp_path / 'r'}", "max_len=0",
                                                         "max_rows=120", "n_folds=2", "epochs=1"])
    card = train_folds(cfg, folds=0)
    recipe = get_recipe("uspppm")
    rows = recipe.read_train(cfg.train_csv, recipe.state(cfg), max_rows=120)
    longest = int(PairEncodings(load_tokenizer(tiny_bert), rows["text_a"], rows["text_b"], 10_000).lengths.max())
    assert card["max_len"] == longest and card["config"]["max_len"] == 0
    assert json.loads((tmp_path / "r" / "fold0" / "kagglekit.json").read_text())["max_len"] == longest
