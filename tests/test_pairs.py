"""The pairs recipe: any two-text-column CSV/TSV, by name or position, scaled and grouped."""

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import shared_data
from kagglekit.data.recipes.pairs import DEFAULTS, PairsRecipe
from kagglekit.data.recipes import FRAME_COLUMNS, Recipe, get_recipe


def make_cfg(**settings):
    cfg = SimpleNamespace(**settings)
    cfg.feature_list = lambda: []
    return cfg


def read(path, *, test=False, **settings):
    recipe = PairsRecipe()
    state = recipe.state(make_cfg(**settings))
    frame = recipe.read_test(path, state) if test else recipe.read_train(path, state)
    return recipe, state, frame


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_registered_and_base_postprocess_is_identity():
    assert isinstance(get_recipe("pairs"), PairsRecipe)
    preds = np.array([0.1, 0.9])
    assert Recipe().postprocess(preds, {}) is preds


def test_csv_with_header_by_name(tmp_path):
    path = write(tmp_path, "train.csv", 'sentence1,sentence2,label\n"a, quoted",b,1\nc,d,0\na, quoted ,e,1\n')
    with pytest.raises(ValueError, match="line 4 has 4 field"):  # an unquoted comma splits a field
        read(path)
    path = write(tmp_path, "train.csv", 'sentence1,sentence2,label\n"a, quoted",b,1\nc,d,0\n" a, quoted ",e,1\n')
    recipe, _, frame = read(path)
    assert list(frame.columns) == list(FRAME_COLUMNS)
    assert frame["text_a"].tolist() == ["a, quoted", "c", "a, quoted"]  # stripped
    assert frame["id"].tolist() == ["0", "1", "2"]  # row numbers
    assert frame["label"].tolist() == [1.0, 0.0, 1.0]
    assert recipe.label_type == "binary" and recipe.metric == "roc_auc" and recipe.label_range == (0.0, 1.0)
    assert (recipe.id_col, recipe.target_col) == ("id", "label")


def test_tsv_separator_by_extension_and_named_id(tmp_path):
    path = write(tmp_path, "train.tsv", "qid\tq1\tq2\tscore\nx7\tone\ttwo\t0.5\nx8\tthree\tfour\t2.5\n")
    recipe, state, frame = read(path, text_cols="q1,q2", label_col="score", id_col="qid")
    assert frame["id"].tolist() == ["x7", "x8"]
    assert frame["text_b"].tolist() == ["two", "four"]
    assert recipe.label_type == "regression" and recipe.metric == "pearson"
    assert recipe.label_range == (-np.inf, np.inf)
    assert (recipe.id_col, recipe.target_col) == ("qid", "score")  # the submission's columns
    assert state["sep"] == ""  # by extension at read time, so predict reads a .tsv test the same way


def test_headerless_by_position(tmp_path):
    path = write(tmp_path, "train.txt", "g\t5.0\tfirst a\tfirst b\ng\t0.0\tsecond a\tsecond b\n")
    recipe, _, frame = read(path, header=False, text_cols="2,3", label_col="1")
    assert frame["text_a"].tolist() == ["first a", "second a"]
    assert frame["label"].tolist() == [5.0, 0.0]
    assert (recipe.id_col, recipe.target_col) == ("id", "label")  # positions do not name columns


def stsb_like(tmp_path):
    # STS-B: tab-separated, no header, stray quotes, and some rows with two extra trailing fields
    rows = [
        "main-captions\tMSRvid\t2012test\t0001\t5.000\tA plane is taking off.\tAn air plane is taking off.",
        'main-news\theadlines\t2013\t0002\t3.800\tHe said "yes.\tShe said "no" twice.\textra1\textra2',
        "main-forums\tdeft\t2014\t0003\t0.000\tA cat's toy.\t\"Quoted\" start",
        "main-news\theadlines\t2015\t0004\t2.500\tA man plays.\tA man is playing a flute.",
    ]
    return write(tmp_path, "sts-train.csv", "\n".join(rows) + "\n")


STSB = dict(sep="\t", header=False, text_cols="5,6", label_col="4", quoting="none", keep_columns=7, label_scale=5.0)


def test_stsb_like_ragged_rows_stray_quotes_and_scaling_round_trip(tmp_path):
    path = stsb_like(tmp_path)
    recipe, state, frame = read(path, **STSB)
    assert len(frame) == 4
    assert frame["text_a"].iloc[1] == 'He said "yes.' and frame["text_b"].iloc[1] == 'She said "no" twice.'
    assert frame["text_b"].iloc[2] == '"Quoted" start'
    np.testing.assert_allclose(frame["label"], [1.0, 0.76, 0.0, 0.5])
    assert recipe.label_range == (0.0, 1.0) and recipe.metric == "pearson"
    # predictions go back to the file's 0-5 scale
    np.testing.assert_allclose(recipe.postprocess(frame["label"].to_numpy(), state), [5.0, 3.8, 0.0, 2.5])
    # the test file is read by the saved state alone (as predict does: a fresh recipe)
    test = PairsRecipe().read_test(path, state)
    assert test["text_b"].tolist() == frame["text_b"].tolist() and "label" not in test


def test_ragged_rows_without_keep_columns_name_the_line(tmp_path):
    path = stsb_like(tmp_path)
    settings = {**STSB, "keep_columns": 0}
    with pytest.raises(ValueError, match=r"sts-train.csv line 2 has 9 field\(s\) where 7 are expected.*keep_columns"):
        read(path, **settings)
    short = write(tmp_path, "short.tsv", "a\tb\t1\nonly one field\n")
    with pytest.raises(ValueError, match="short.tsv line 2 has 1 field"):
        read(short, header=False, text_cols="0,1", label_col="2", keep_columns=3)


def test_minimal_quoting_on_an_unclosed_quote_names_the_line(tmp_path):
    path = write(tmp_path, "bad.csv", 'sentence1,sentence2,label\na,b,1\n"unclosed,b,1\n')
    with pytest.raises(ValueError, match="bad.csv line"):
        read(path)


def test_label_type_inference_and_forcing(tmp_path):
    path = write(tmp_path, "t.csv", "sentence1,sentence2,label\na,b,0\nc,d,0\n")
    assert read(path)[0].label_type == "binary"  # a subset of {0, 1} is binary
    assert read(path, label_type="regression")[0].metric == "pearson"
    path = write(tmp_path, "r.csv", "sentence1,sentence2,label\na,b,0\nc,d,2\n")
    assert read(path)[0].label_type == "regression"
    with pytest.raises(ValueError, match=r"must hold 0 or 1 for label_type=binary.*line 3: '2'.*label_type=regression"):
        read(path, label_type="binary")
    # a scale means a score: auto never makes it binary
    assert read(write(tmp_path, "s.csv", "sentence1,sentence2,label\na,b,0\nc,d,1\n"), label_scale=5.0)[0].label_type == "regression"


def test_group_is_text_a_by_default_or_the_group_column(tmp_path):
    path = write(tmp_path, "g.csv", "sentence1,sentence2,label,topic\nx,b,1,t1\nx,c,0,t2\ny,b,1,t1\n")
    _, _, frame = read(path)
    assert frame["group"].tolist() == frame["text_a"].tolist() == ["x", "x", "y"]
    _, _, frame = read(path, group_col="topic")
    assert frame["group"].tolist() == ["t1", "t2", "t1"]


def test_test_file_without_label_and_max_rows(tmp_path):
    train = write(tmp_path, "train.csv", "sentence1,sentence2,label\na,b,1\nc,d,0\ne,f,1\n")
    recipe = PairsRecipe()
    state = recipe.state(make_cfg())
    assert len(recipe.read_train(train, state, max_rows=2)) == 2
    test = write(tmp_path, "test.csv", "sentence1,sentence2\ng,h\ni,j\n")
    frame = recipe.read_test(test, state)
    assert frame["text_a"].tolist() == ["g", "i"] and "label" not in frame


def test_missing_column_names_the_file_and_the_columns_present(tmp_path):
    path = write(tmp_path, "m.csv", "question1,question2,label\na,b,1\n")
    with pytest.raises(ValueError, match=r"m.csv has no column 'sentence1' \(config key 'text_cols'\); its columns are \['question1', 'question2', 'label'\]"):
        read(path)
    with pytest.raises(ValueError, match="no column 'is_dup' \\(config key 'label_col'\\)"):
        read(path, text_cols="question1,question2", label_col="is_dup")


def test_empty_text_non_numeric_and_out_of_range_labels(tmp_path):
    path = write(tmp_path, "e.csv", "sentence1,sentence2,label\na,b,1\n  ,c,0\n")
    with pytest.raises(ValueError, match=r"e.csv text column 'sentence1' is empty in 1 row\(s\): line 3"):
        read(path)
    path = write(tmp_path, "n.csv", "sentence1,sentence2,label\na,b,1\nc,d,high\n")
    with pytest.raises(ValueError, match=r"label column 'label' must hold numbers; 1 row\(s\): line 3: 'high'"):
        read(path)
    path = write(tmp_path, "o.csv", "sentence1,sentence2,label\na,b,1\nc,d,6\n")
    with pytest.raises(ValueError, match=r"must lie in \[0, 5\] for label_scale=5.*line 3: '6'"):
        read(path, label_scale=5.0)


def test_duplicated_ids_and_missing_file(tmp_path):
    path = write(tmp_path, "d.csv", "key,sentence1,sentence2,label\nk1,a,b,1\nk1,c,d,0\n")
    with pytest.raises(ValueError, match="duplicated ids"):
        read(path, id_col="key")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        read(tmp_path / "nope.csv")


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"text_cols": "a"}, "exactly two columns"),
        ({"quoting": "all"}, "'quoting': unknown value 'all'"),
        ({"label_type": "multiclass"}, "'label_type': unknown value"),
        ({"keep_columns": -1}, "keep_columns"),
        ({"label_scale": -2.0}, "label_scale"),
        ({"label_type": "binary", "label_scale": 5.0}, "exclude each other"),
        ({"sep": ";;"}, "'sep' must be one character"),
    ],
)
def test_bad_settings(settings, message):
    with pytest.raises(ValueError, match=message):
        PairsRecipe().state(make_cfg(**settings))


def test_header_flag_as_text(tmp_path):
    path = write(tmp_path, "h.csv", "a,b,1\nc,d,0\n")
    assert len(read(path, header="false", text_cols="0,1", label_col="2")[2]) == 2
    with pytest.raises(ValueError, match="'header' must be true or false"):
        read(path, header="maybe")


def test_feature_columns_ride_along(tmp_path):
    path = write(tmp_path, "f.csv", "sentence1,sentence2,label,len_ratio\na,b,1,0.5\nc,d,0,2\n")
    recipe = PairsRecipe()
    cfg = make_cfg()
    cfg.feature_list = lambda: ["len_ratio"]
    frame = recipe.read_train(path, recipe.state(cfg))
    assert list(frame.columns) == [*FRAME_COLUMNS, "len_ratio"] and frame["len_ratio"].tolist() == [0.5, 2.0]


def test_defaults_cover_every_setting():
    state = PairsRecipe().state(make_cfg())
    assert set(DEFAULTS) <= set(state) and state["feature_columns"] == []


# --- real data (skipped when ../shared/data is absent) -------------------------------------------------


def test_real_stsb():
    folder = shared_data("stsb")
    recipe, state, frame = read(folder / "sts-train.csv", **STSB)
    assert len(frame) == 5749
    assert frame["label"].min() >= 0.0 and frame["label"].max() <= 1.0 and frame["label"].max() == 1.0
    assert recipe.metric == "pearson"
    assert frame["text_a"].str.len().gt(0).all() and frame["text_b"].str.len().gt(0).all()
    assert len(PairsRecipe().read_train(folder / "sts-dev.csv", state)) == 1500
    assert len(PairsRecipe().read_test(folder / "sts-test.csv", state)) == 1379


def test_real_afqmc():
    folder = shared_data("afqmc")
    recipe, state, train = read(folder / "train.csv")
    assert len(train) == 34334 and recipe.label_type == "binary" and recipe.metric == "roc_auc"
    assert set(train["label"].unique()) == {0.0, 1.0}
    assert len(PairsRecipe().read_train(folder / "dev.csv", state)) == 4316
    assert len(PairsRecipe().read_test(folder / "test.csv", state)) == 3861
