"""Scorer: in-memory rows get the numbers `kagglekit predict` writes for the same rows; the package's entry points.

The references are predict itself (the function and the command line) on the test files the rows came
from: the scorer must agree with them to 1e-6, whatever the shape or order of the rows it is given.
"""

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

import kagglekit
from conftest import SAMPLE
from kagglekit.cli import main
from kagglekit.infer.inputs import read_rows
from kagglekit.infer.predict import predict
from kagglekit.infer.scorer import Scorer
from kagglekit.run import FoldMeta
from test_predict import CPU, USPPPM, _train, _write_pairs


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    """u: uspppm with CPC context titles and target grouping (a feature across rows). p: pairs, mse,
    label_scale 5, swap=true (for swap TTA)."""
    root = tmp_path_factory.mktemp("scorer_runs")
    pairs_train, pairs_test = _write_pairs(root)
    u = _train(root / "u", tiny_models("bert"), *USPPPM, "max_len=64", "target_grouping=true")  # 64: room for the grouped targets
    p = _train(root / "p", tiny_models("bert"), "task=pairs", f"train_csv={pairs_train}", f"test_csv={pairs_test}",
               "text_cols=sentence1,sentence2", "label_col=label", "id_col=id", "label_scale=5", "loss=mse", "swap=true", "max_len=32")
    test = pd.read_csv(SAMPLE / "test.csv", dtype={"id": str})
    pairs = pd.read_csv(pairs_test, dtype={"id": str})
    return SimpleNamespace(
        u=u, p=p, root=root, test=SAMPLE / "test.csv", pairs_test=pairs_test,
        u_rows=list(zip(test["anchor"], test["target"], test["context"])),
        p_rows=list(zip(pairs["sentence1"], pairs["sentence2"])),
        u_scorer=Scorer.from_run(u, **CPU), p_scorer=Scorer.from_run(p, **CPU),
    )


def test_uspppm_rows_score_as_predict_and_the_command_line_score_the_test_file(runs, tmp_path):
    got = runs.u_scorer.predict(runs.u_rows)
    assert isinstance(got, np.ndarray) and got.shape == (len(runs.u_rows),) and got.dtype == np.float64
    by_function = predict([runs.u], runs.test, **CPU)["score"].to_numpy()
    np.testing.assert_allclose(got, by_function, rtol=0, atol=1e-6)
    assert main(["predict", "--models", str(runs.u), "--data", str(runs.test), "--out", str(tmp_path / "s.csv"), "--device", "cpu"]) == 0
    np.testing.assert_allclose(got, pd.read_csv(tmp_path / "s.csv")["score"], rtol=0, atol=1e-6)
    assert got.std() > 1e-4  # the rows really get different scores: the equality above is no accident of a constant model
    assert runs.u_scorer.fields == ("anchor", "target", "context") and len(runs.u_scorer.folders) == 2


def test_pairs_rows_and_frames_score_as_predict(runs):
    expected = predict([runs.p], runs.pairs_test, **CPU)["label"].to_numpy()
    np.testing.assert_allclose(runs.p_scorer.predict(runs.p_rows), expected, rtol=0, atol=1e-6)
    frame = pd.read_csv(runs.pairs_test, dtype={"id": str})
    before = frame.copy()
    np.testing.assert_allclose(runs.p_scorer.predict(frame), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(runs.p_scorer.predict(frame.drop(columns="id")), expected, rtol=0, atol=1e-6)  # ids are added
    pd.testing.assert_frame_equal(frame, before)  # the caller's frame is left as it was
    assert expected.max() > 1.0 and runs.p_scorer.fields == ("sentence1", "sentence2")  # on the file's 0-5 scale


def test_one_row_gives_a_float_and_many_rows_an_array(runs):
    rows = runs.u_rows[:5]
    many = runs.u_scorer.predict(rows)
    one = runs.u_scorer.predict(rows[0])
    assert isinstance(one, float)
    assert runs.u_scorer.predict(list(rows[0])) == one  # a list of strings is one row too, as in CrossEncoder
    listed = runs.u_scorer.predict([rows[0]])
    assert isinstance(listed, np.ndarray) and listed.shape == (1,) and listed[0] == one
    pair = runs.p_scorer.predict(runs.p_rows[0])
    assert isinstance(pair, float) and abs(pair - runs.p_scorer.predict(runs.p_rows[:3])[0]) < 1e-6
    assert many.shape == (5,)


def test_shuffled_rows_get_the_same_score_each(runs):
    order = np.random.default_rng(0).permutation(len(runs.u_rows))
    plain = runs.u_scorer.predict(runs.u_rows)
    rows = [runs.u_rows[i] for i in order]
    copy = list(rows)
    shuffled = runs.u_scorer.predict(rows)
    np.testing.assert_allclose(shuffled, plain[order], rtol=0, atol=1e-6)
    assert rows == copy  # the caller's list is left as it was
    p_plain = runs.p_scorer.predict(runs.p_rows)
    p_order = order[order < len(runs.p_rows)]
    np.testing.assert_allclose(runs.p_scorer.predict([runs.p_rows[i] for i in p_order]), p_plain[p_order], rtol=0, atol=1e-6)


def test_target_grouping_sees_the_rows_of_one_call_together(runs):
    """A feature across rows (the other targets of an anchor) sees the call's rows, as it sees one test file's."""
    anchor = pd.Series([a for a, _, _ in runs.u_rows]).value_counts().index[0]
    together = [r for r in runs.u_rows if r[0] == anchor]
    assert len(together) > 2
    as_group = runs.u_scorer.predict(together)
    alone = np.array([runs.u_scorer.predict(r) for r in together])
    assert np.abs(as_group - alone).max() > 1e-5


def test_swap_tta_matches_predict_tta_swap(runs):
    scorer = Scorer.from_run(runs.p, tta="swap", **CPU)
    expected = predict([runs.p], runs.pairs_test, tta="swap", **CPU)["label"].to_numpy()
    got = scorer.predict(runs.p_rows)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert np.abs(got - runs.p_scorer.predict(runs.p_rows)).max() > 1e-4  # the swapped order was scored
    with pytest.raises(ValueError, match=r"--tta swap: run .*/u \(task 'uspppm'\) was trained with swap=false"):
        Scorer.from_run(runs.u, tta="swap", **CPU)


@pytest.mark.parametrize("rows, message", [
    ([("memory display", "user handling")], r"row 0 has 2 field\(s\), expected 3: a tuple of \(anchor, target, context\)"),
    (("memory display", "user handling", "G06", "extra"), r"row 0 has 4 field\(s\), expected 3: .*\(anchor, target, context\)"),
    ([], r"the list is empty: pass a tuple of \(anchor, target, context\) for one row"),
    (pd.DataFrame(columns=["anchor", "target", "context"]), r"the DataFrame has no rows: pass a tuple of \(anchor, target, context\)"),
    ([("memory display", 7, "G06")], r"row 0 field 'target' must be text, got 7: a tuple of \(anchor, target, context\)"),
    ([("a", "b", "G06"), "a b G06"], r"row 1 has a str, expected 3"),
])
def test_bad_rows_name_the_expected_fields(runs, rows, message):
    with pytest.raises(ValueError, match=message):
        runs.u_scorer.predict(rows)


def test_pairs_rows_of_the_wrong_length_name_the_pair_columns_and_bad_options_are_refused(runs):
    with pytest.raises(ValueError, match=r"row 1 has 3 field\(s\), expected 2: a tuple of \(sentence1, sentence2\)"):
        runs.p_scorer.predict([("a", "b"), ("a", "b", "c")])
    with pytest.raises(TypeError, match=r"rows: got str; pass a tuple of \(sentence1, sentence2\)"):
        runs.p_scorer.predict("a b")
    with pytest.raises(ValueError, match=r"average='mean' is unknown: use 'prob'"):
        Scorer.from_run(runs.p, average="mean")
    with pytest.raises(ValueError, match=r"tta='flip' is unknown"):
        Scorer.from_run(runs.p, tta="flip")
    with pytest.raises(ValueError, match=r"batch_size must be a positive integer, got batch_size=0"):
        Scorer.from_run(runs.p, batch_size=0)
    with pytest.raises(FileNotFoundError, match=r"run_dir: .* holds no trained fold"):
        Scorer.from_run(runs.root)


def test_a_row_the_recipe_refuses_is_named_as_a_row_not_a_temporary_file(runs):
    with pytest.raises(ValueError, match=r"column 'target' has 1 empty or missing value\(s\): line 3") as err:
        runs.u_scorer.predict([("a", "b", "G06"), ("c", "   ", "G06")])
    assert "the given rows" in str(err.value) and "kagglekit-rows-" not in str(err.value)


def _scorer_for(task: str, state: dict) -> Scorer:
    """A Scorer around a fold's meta alone (no model): enough to turn rows into the test file's frame."""
    meta = FoldMeta(task=task, max_len=16, activation="sigmoid", recipe_state=state)
    return Scorer("run", [(Path("run/fold0"), None, None, meta)], device=None, amp_dtype=None, batch_size=8, average="prob", tta="none")


def test_ids_rows_are_written_in_the_gaiic_layout_and_read_by_the_ids_recipe():
    """The ids task: header-less, tab-separated, no quoting; two id texts or two sequences of ints per row."""
    from kagglekit.data.recipes import get_recipe

    recipe = get_recipe("ids")
    state = recipe.state(SimpleNamespace(feature_list=lambda: []))
    scorer = _scorer_for("ids", state)
    assert scorer.fields == ("text_a (column 0)", "text_b (column 1)")
    frame, single = scorer._frame(([12, 5, 7], "3 4"))
    assert single and list(frame.columns) == ["0", "1"]
    read = read_rows(recipe, frame, state)
    assert read[["id", "text_a", "text_b"]].values.tolist() == [["0", "12 5 7", "3 4"]]
    with pytest.raises(ValueError, match=r"row 0 column '0' holds the separator '\\t'"):
        read_rows(recipe, scorer._frame([("1\t2", "3")])[0], state)


def test_pairs_rows_fill_the_positional_id_and_group_columns_of_a_headerless_layout():
    from kagglekit.data.recipes import get_recipe

    recipe = get_recipe("pairs")
    cfg = SimpleNamespace(feature_list=lambda: [], text_cols="2,3", id_col="0", group_col="1", header=False, sep="\t", quoting="none",
                          keep_columns=5, label_col="4", label_type="auto", label_scale=0.0)
    state = recipe.state(cfg)
    read = read_rows(recipe, _scorer_for("pairs", state)._frame([("a 'x\"", "b"), ("c", "d")])[0], state)
    assert read[["id", "text_a", "text_b", "group"]].values.tolist() == [["0", "a 'x\"", "b", "a 'x\""], ["1", "c", "d", "c"]]


def test_the_package_exports_its_entry_points_lazily():
    code = ("import sys, kagglekit; heavy = [m for m in ('torch', 'transformers', 'pandas') if m in sys.modules]; "
            "assert not heavy, heavy; print(sorted(kagglekit.__all__))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == str(sorted(["__version__", "load_config", "train_folds", "predict", "Scorer"])), result.stderr
    from kagglekit.config import load_config
    from kagglekit.train import train_folds

    for name, obj in (("load_config", load_config), ("train_folds", train_folds), ("predict", predict), ("Scorer", Scorer)):
        assert getattr(kagglekit, name) is obj and name in kagglekit.__all__ and name in dir(kagglekit)
    from kagglekit import Scorer as imported

    assert imported is Scorer and kagglekit.__version__ == "0.1.0"
    with pytest.raises(AttributeError, match="has no attribute 'Scorerr'"):
        kagglekit.Scorerr
