"""Distillation's bad inputs (``teacher_oof``, ``predict --per-fold``): a teacher file that would leak validation labels
(an out-of-fold file, a full fit's, folds that differ), one that lacks rows or holds bad values, settings that do nothing.

Each case goes through `check_case` (tests/test_bad_inputs.py): exit status 2, one error line with the place, the
value and the fix, nothing written.
"""

from __future__ import annotations

import io
import re
from contextlib import redirect_stderr, redirect_stdout
from types import SimpleNamespace
from typing import Callable

import pandas as pd
import pytest

from kagglekit.cli import main
from test_bad_inputs import ROWS, Case, _train_args, check_case, env  # noqa: F401  (env is a module fixture)

PER_FOLD = r"kagglekit predict --models TEACHER_RUN --data train\.csv --per-fold --out teacher\.csv"


@pytest.fixture(scope="module")
def teacher(env, tmp_path_factory):
    """The per-fold teacher file of the table's run on the rows it trained on, made through the command line."""
    root = tmp_path_factory.mktemp("teacher")
    rows = root / "rows.csv"
    env.train.head(ROWS).to_csv(rows, index=False)
    path = root / "teacher.csv"
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
        assert main(["predict", "--models", str(env.run), "--data", str(rows), "--per-fold", "--out", str(path), "--device", "cpu"]) == 0
    return SimpleNamespace(path=path, rows=rows, frame=pd.read_csv(path, dtype={"id": str, "fold": str}))


def _student(edit: Callable | None, where: str, value: str, fix: str, *settings: str) -> Callable:
    """A student trained on `edit(teacher frame)` (None: the run's oof.csv) with `settings`; `where` may name it as {path}."""
    def make(env, teacher, tmp):
        if edit is None:
            path = env.run / "oof.csv"
        else:
            path = tmp / "teacher.csv"
            edit(teacher.frame.copy()).to_csv(path, index=False)
        out = tmp / "student"
        return Case(_train_args(env, out, f"teacher_oof={path}", *settings), where.format(path=re.escape(str(path))), value, fix,
                    absent=[out])
    return make


def _settings(*settings: str, where: str, value: str, fix: str) -> Callable:
    def make(env, teacher, tmp):
        out = tmp / "student"
        return Case(_train_args(env, out, *[s.format(teacher=teacher.path) for s in settings]), where, value, fix, absent=[out])
    return make


def _predict(*options: str, models: Callable = lambda env: env.run, where: str, value: str, fix: str) -> Callable:
    def make(env, teacher, tmp):
        out = tmp / "per_fold.csv"
        weights = tmp / "weights.json"
        weights.write_text('{"weights": {}}')
        argv = ["predict", "--models", str(models(env)), "--data", str(teacher.rows), "--per-fold", "--out", str(out),
                *[o.format(weights=weights) for o in options]]
        return Case(argv, where, value, fix, absent=[out])
    return make


def _teacher_in_output_dir(env, teacher, tmp):
    """The teacher file kept in the student's output_dir under a name the run writes: it would be overwritten."""
    out = tmp / "student"
    out.mkdir()
    path = out / "oof.csv"
    path.write_bytes(teacher.path.read_bytes())
    return Case(_train_args(env, out, f"teacher_oof={path}"), r"output_dir's oof\.csv", r"teacher_oof", r"choose another path",
                unchanged=[path])


def _drop_one_training_row(frame: pd.DataFrame) -> pd.DataFrame:
    fold0 = frame[frame["fold"] == "0"]
    victim = fold0.loc[fold0["row_fold"] != 0, "id"].iloc[0]  # a training row of fold 0, under teacher model 0
    return frame[~((frame["id"] == victim) & (frame["fold"] == "0"))]


def _cell(column: str, value) -> Callable:
    def edit(frame: pd.DataFrame) -> pd.DataFrame:
        frame[column] = frame[column].astype(object)
        frame.loc[3, column] = value
        return frame
    return edit


CASES: dict[str, Callable] = {
    "an out-of-fold file for fold training": _student(
        None, r"teacher_oof: {path} is an out-of-fold file", r"one row per id, no row_fold column", PER_FOLD),
    "a full fit's file for fold training": _student(
        lambda f: f[f["fold"] == "0"].drop(columns=["fold", "row_fold"]), r"teacher_oof: {path} holds a full fit's predictions",
        r"fold 'full'/-1, or no fold column", r"Use it only for the full fit \(--fold full\).*" + PER_FOLD),
    "a full fit's rows for fold training": _student(
        lambda f: f.assign(fold="full").drop_duplicates("id"), r"teacher_oof: {path} holds a full fit's predictions",
        r"every row, fold 0's validation rows included", r"Use it only for the full fit"),
    "a training row without a value": _student(
        _drop_one_training_row, r"teacher_oof: {path}", r"no value for 1 of the \d+ training row\(s\) of fold 0 .*e\.g\. ids \['\w+'\]",
        r"every row the student trains on needs one\. Make the file .* same train_csv and max_rows\): " + PER_FOLD),
    "other folds than the teacher's": _student(
        lambda f: f, r"teacher_oof: {path} column 'row_fold'", r"e\.g\. id '\w+': fold \d in the teacher run, fold \d here",
        r"Train the student with the teacher run's n_folds, fold_seed and data", "fold_seed=7"),
    "a text pred": _student(
        _cell("pred", "abc"), r"teacher_oof: {path} column 'pred'", r"holds 'abc' \(id '\w+', line 5\)", PER_FOLD),
    "a pred off the label scale": _student(
        _cell("pred", 4.0), r"teacher_oof: {path} column 'pred'", r"holds 4\.0 .*outside \[0, 1\]",
        r"Give the teacher's pred in the label's space"),
    "a fold that is no fold": _student(
        _cell("fold", "x"), r"teacher_oof: {path} column 'fold'", r"holds 'x'", r"a fold number 0, 1, \.\.\. or 'full'"),
    "a repeated row": _student(
        lambda f: pd.concat([f, f.head(1)], ignore_index=True), r"teacher_oof: {path}", r"1 repeated \(id, fold\) row",
        r"Write the file once per teacher model"),
    "a pred column missing": _student(
        lambda f: f.rename(columns={"pred": "score"}), r"teacher_oof: {path} has no column 'pred'", r"'score'",
        r"point teacher_oof at the right file"),
    "a score teacher for a classes student": _student(
        lambda f: f, r"teacher_oof: {path} has no class columns logit_0\.\.logit_4", r"its columns are \['id', 'fold', 'row_fold', 'pred'\]",
        r"Make the file from a teacher run with the same output and classes", "output=classes"),
    "the teacher where the run writes its oof.csv": _teacher_in_output_dir,
    "no such file": _settings(
        "teacher_oof=no_such_teacher.csv", where=r"teacher_oof: file not found", value=r"no_such_teacher\.csv", fix=r"Check the path"),
    "one file twice": _settings(
        "teacher_oof={teacher},{teacher}", where=r"config key 'teacher_oof'", value=r"names \[.*teacher\.csv'\] twice",
        fix=r"Give each teacher file once"),
    "distill_weight without a teacher": _settings(
        "distill_weight=0.3", where=r"config key 'distill_weight'", value=r"\(0\.3\) does nothing without teacher_oof",
        fix=r"set teacher_oof"),
    "distill_weight 0": _settings(
        "teacher_oof={teacher}", "distill_weight=0", where=r"config key 'distill_weight'", value=r"must be in \(0, 1\], got 0\.0",
        fix=r"leave teacher_oof empty to turn it off"),
    "a temperature for one score": _settings(
        "teacher_oof={teacher}", "distill_temperature=2", where=r"config key 'distill_temperature'",
        value=r"\(2\.0\) does nothing with output='single'", fix=r"applies only when output is one of \['classes', 'bins'\]"),
    "per-fold with blend weights": _predict(
        "--weights", "{weights}", where=r"--per-fold", value=r"--weights does not apply", fix=r"Leave it out"),
    "per-fold from a lone model folder": _predict(
        models=lambda env: env.run / "fold0", where=r"--per-fold: .*fold0 has no folds\.csv", value=r"which fold each row belongs to",
        fix=r"pass the run folder written by kagglekit train"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_distillation_input_fails_with_one_clear_line_and_writes_nothing(name, env, teacher, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_case(name, CASES[name](env, teacher, tmp_path), tmp_path, capsys)


def test_the_good_file_trains(env, teacher, tmp_path, capsys):
    """The table's teacher file itself trains the student: each case above fails for its one change only."""
    out = tmp_path / "student"
    assert main([*_train_args(env, out, f"teacher_oof={teacher.path}"), "--fold", "0"]) == 0
    assert (out / "fold0").is_dir() and (out / "oof.csv").is_file()
