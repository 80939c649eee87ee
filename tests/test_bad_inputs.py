"""The bad-input table: each case goes through the command a user runs (train, predict, ensemble).

Every case must exit with status 2 and one error line that names where the problem is (file, column
or key), the bad value and the fix, and must leave no output behind: the run folder, submission or
weights file does not exist afterwards, and an output that existed before is byte-identical.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import warnings
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pandas as pd
import pytest

from kagglekit.cli import main
from kagglekit.config import Config
from kagglekit.testing import write_uspppm_sample

ROWS = 120  # max_rows of every training case: 15 anchors (groups) of 8 rows
SMALL = ["n_folds=2", "epochs=1", f"max_rows={ROWS}", "max_len=32", "device=cpu"]


@dataclass
class Case:
    """One bad input: the command line, what its error line must say, and the outputs to check."""

    argv: list[str]
    where: str  # regex: the file, column or key
    value: str  # regex: the bad value
    fix: str  # regex: what to do
    absent: list[Path] = field(default_factory=list)  # outputs that must not exist afterwards
    unchanged: list[Path] = field(default_factory=list)  # outputs that existed before and must stay byte-identical


def _train_args(env, out: Path, *settings: str) -> list[str]:
    """``kagglekit train`` on the sample with `settings` (key=value) overriding the defaults below."""
    values = dict(s.split("=", 1) for s in [
        f"train_csv={env.data / 'train.csv'}", f"test_csv={env.data / 'test.csv'}", f"cpc_dir={env.data / 'cpc_titles'}",
        f"backbone={env.bert}", *SMALL, f"output_dir={out}", *settings,
    ])
    argv = ["train"]
    for key, value in values.items():
        argv += ["--set", f"{key}={value}"]
    return argv


def _train_quiet(argv: list[str]) -> None:
    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(argv) == 0


@pytest.fixture(scope="module")
def env(tiny_models, tmp_path_factory):
    """The sample data, a tiny bert, a trained USPPPM run and a trained run of the pairs task on the same rows."""
    root = tmp_path_factory.mktemp("bad_inputs")
    data = write_uspppm_sample(root / "data")
    env = SimpleNamespace(root=root, data=data, bert=tiny_models("bert"), run=root / "uspppm_run", pairs_run=root / "pairs_run")
    env.train = pd.read_csv(data / "train.csv", dtype={"id": str})
    env.test = pd.read_csv(data / "test.csv", dtype={"id": str})
    _train_quiet(_train_args(env, env.run))
    pairs = pd.DataFrame({"id": env.train["id"], "sentence1": env.train["anchor"], "sentence2": env.train["target"], "label": env.train["score"]})
    pairs.to_csv(root / "pairs_train.csv", index=False)
    _train_quiet(["train", "--set", "task=pairs", "--set", f"train_csv={root / 'pairs_train.csv'}", "--set", "id_col=id",
                  "--set", f"backbone={env.bert}", "--set", f"output_dir={env.pairs_run}", *[a for s in SMALL for a in ("--set", s)]])
    return env


# ------------------------------------------------------------------------------------------------
# helpers that write one bad file each
# ------------------------------------------------------------------------------------------------

def _with(frame: pd.DataFrame, column: str, row: int, value) -> pd.DataFrame:
    """A copy of `frame` with one cell replaced."""
    out = frame.copy()
    out[column] = out[column].astype(object)
    out.loc[row, column] = value
    return out


def _csv(tmp: Path, name: str, frame: pd.DataFrame) -> Path:
    frame.to_csv(tmp / name, index=False)
    return tmp / name


def _copy_run(env, tmp: Path, name: str) -> Path:
    return Path(shutil.copytree(env.run, tmp / name))


def _bigger_tokenizer(source: Path, dest: Path, extra: int = 10) -> int:
    """Save `source`'s tokenizer with `extra` new tokens into `dest`; returns its size."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    tokenizer.add_tokens([f"zzqnewtoken{i}" for i in range(extra)])
    tokenizer.save_pretrained(str(dest))
    return len(tokenizer)


def _drop_tokenizer(folder: Path) -> None:
    for path in folder.iterdir():
        if path.name.startswith(("tokenizer", "special_tokens", "vocab")):
            path.unlink()


# ------------------------------------------------------------------------------------------------
# the cases: name -> (env, tmp) -> Case
# ------------------------------------------------------------------------------------------------

def _train_file(frame_fn: Callable, where: str, value: str, fix: str) -> Callable:
    """A training case whose train_csv is `frame_fn(env.train)`."""
    def make(env, tmp):
        path = _csv(tmp, "train.csv", frame_fn(env.train))
        out = tmp / "run"
        return Case(_train_args(env, out, f"train_csv={path}"), where.format(path=re.escape(str(path))), value, fix, absent=[out])
    return make


def _train_set(*settings: str, where: str, value: str, fix: str, extra_argv: tuple = ()) -> Callable:
    """A training case that differs from a good run only in `settings`."""
    def make(env, tmp):
        out = tmp / "run"
        return Case([*_train_args(env, out, *settings), *extra_argv], where, value, fix, absent=[out])
    return make


def _bytes_file(name: str, content: bytes, kind: str, where: str, value: str, fix: str) -> Callable:
    """A train_csv (kind="train") or --data file (kind="predict") holding `content`; `where` may name it as {path}."""
    def make(env, tmp):
        path = tmp / name
        path.write_bytes(content)
        if kind == "train":
            out = tmp / "run"
            case = Case(_train_args(env, out, f"train_csv={path}"), "", "", "", absent=[out])
        else:
            case = _predict_case(env, tmp, [env.run], path)
        return _set(case, where.format(path=re.escape(str(path))), value, fix)
    return make


def _predict_case(env, tmp: Path, runs: list[Path], data: Path, *extra: str) -> Case:
    out = tmp / "submission.csv"
    argv = ["predict", "--models", *map(str, runs), "--data", str(data), "--out", str(out), "--device", "cpu", *extra]
    return Case(argv, "", "", "", absent=[out, tmp / "submission_models.csv"])


def _ensemble_case(env, tmp: Path, edit: Callable[[Path], None]) -> Case:
    """``kagglekit ensemble`` of the trained run and a copy of it changed by `edit(copy)`."""
    other = _copy_run(env, tmp, "other")
    edit(other)
    out = tmp / "weights.json"
    return Case(["ensemble", str(env.run), str(other), "--out", str(out)], "", "", "", absent=[out])


def _edit_oof(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[Path], None]:
    def edit(run: Path) -> None:
        oof = pd.read_csv(run / "oof.csv", dtype={"id": str})
        change(oof).to_csv(run / "oof.csv", index=False)
    return edit


def _set(case: Case, where: str, value: str, fix: str) -> Case:
    case.where, case.value, case.fix = where, value, fix
    return case


def _then(make: Callable, where: str, value: str, fix: str) -> Callable:
    """Fill a case's expected message parts after it is made; `where` may name the case's folder as {tmp}."""
    def wrapped(env, tmp):
        return _set(make(env, tmp), where.format(tmp=re.escape(str(tmp))), value, fix)
    return wrapped


def _backbone_without(remove: Callable[[Path], None], where: str, value: str, fix: str) -> Callable:
    def make(env, tmp):
        backbone = Path(shutil.copytree(env.bert, tmp / "backbone"))
        remove(backbone)
        out = tmp / "run"
        return Case(_train_args(env, out, f"backbone={backbone}"), where.format(path=re.escape(str(backbone))), value, fix, absent=[out])
    return make


def _backbone_bigger_tokenizer(env, tmp):
    backbone = Path(shutil.copytree(env.bert, tmp / "backbone"))
    size = _bigger_tokenizer(backbone, backbone)
    out = tmp / "run"
    return Case(_train_args(env, out, f"backbone={backbone}"), rf"backbone {re.escape(str(backbone))}",
                rf"tokenizer has {size} ids but the embedding has 1000 rows", r"Use the tokenizer files saved with these weights", absent=[out])


def _yaml_unknown_key(env, tmp):
    config = tmp / "config.yaml"
    config.write_text(f"train_csv: {env.data / 'train.csv'}\nbackbone: {env.bert}\nwarmup_ratoi: 0.2\n")
    out = tmp / "run"
    return Case(["train", "--config", str(config), "--set", f"output_dir={out}"], rf"in {re.escape(str(config))}",
                r"unknown config key 'warmup_ratoi'", r"Did you mean 'warmup_ratio'\?", absent=[out])


USPPPM_LR = Config.RECIPE_DEFAULTS["uspppm"].get("lr", Config.lr)  # the fixture run's lr: the recipe's default


def _existing_run_other_settings(env, tmp):
    run = _copy_run(env, tmp, "run")
    return Case(_train_args(env, run, "lr=3e-4"), rf"output_dir {re.escape(str(run))} already holds a run",
                rf"lr: {re.escape(str(USPPPM_LR))} → 0\.0003", r"Use a new output_dir", unchanged=[run])


def _predict_run_of_other_task(env, tmp):
    case = _predict_case(env, tmp, [env.pairs_run], env.data / "test.csv")
    return _set(case, rf"--models {re.escape(str(env.pairs_run))} \(trained with task='pairs'\).*column 'sentence1'",
                r"its columns are \['id', 'anchor', 'target', 'context'\]", r"pass a test file of its task, or leave the run out")


def _predict_missing_weights(env, tmp):
    run = _copy_run(env, tmp, "run")
    (run / "fold1" / "model.safetensors").unlink()
    case = _predict_case(env, tmp, [run], env.data / "test.csv")
    (tmp / "submission.csv").write_text("id,score\nold,0.5\n")  # a submission from before must survive
    case.absent.remove(tmp / "submission.csv")
    case.unchanged.append(tmp / "submission.csv")
    return _set(case, rf"model folder {re.escape(str(run / 'fold1'))} is incomplete", r"model\.safetensors is missing",
                r"Re-download or re-attach the model dataset")


def _predict_missing_tokenizer(env, tmp):
    run = _copy_run(env, tmp, "run")
    _drop_tokenizer(run / "fold0")
    return _set(_predict_case(env, tmp, [run], env.data / "test.csv"), rf"model folder {re.escape(str(run / 'fold0'))}",
                r"has no tokenizer vocabulary \(tokenizer\.json or one of", r"copy the tokenizer files that came with the model")


def _predict_bigger_tokenizer(env, tmp):
    run = _copy_run(env, tmp, "run")
    size = _bigger_tokenizer(run / "fold0", run / "fold0")
    return _set(_predict_case(env, tmp, [run], env.data / "test.csv"), rf"model folder {re.escape(str(run / 'fold0'))}",
                rf"tokenizer has {size} ids but the embedding has 1000 rows", r"Use the tokenizer files saved with these weights")


def _predict_sample_other_ids(env, tmp):
    sample = _csv(tmp, "sample.csv", _with(pd.DataFrame({"id": env.test["id"], "score": 0}), "id", 0, "not-a-test-id"))
    case = _predict_case(env, tmp, [env.run], env.data / "test.csv", "--sample-submission", str(sample))
    return _set(case, rf"sample_submission: {re.escape(str(sample))}", r"disagree on 2 id\(s\).*'not-a-test-id'",
                r"pass the sample submission that belongs to this test file")


def _predict_data(frame_fn: Callable, where: str, value: str, fix: str) -> Callable:
    def make(env, tmp):
        path = _csv(tmp, "test.csv", frame_fn(env.test))
        return _set(_predict_case(env, tmp, [env.run], path), where.format(path=re.escape(str(path))), value, fix)
    return make


def _ensemble_other_metric(env, tmp):
    def edit(run: Path) -> None:
        card = json.loads((run / "run.json").read_text())
        (run / "run.json").write_text(json.dumps({**card, "metric": "rmse", "higher_is_better": False}))
    case = _ensemble_case(env, tmp, edit)
    return _set(case, r"ensemble: the runs were scored with different metrics", rf"{re.escape(str(tmp / 'other'))}: rmse",
                r"blend runs of one task and metric")


LATIN1_TRAIN = "id,anchor,target,context,score\nx1,café,chair,A47,0.5\n".encode("latin-1")
LATIN1_TEST = "id,anchor,target,context\nx1,café au lait,chair,A47\n".encode("latin-1")
TRAIN_FILE = r"train_csv: {path}"
TEST_FILE = r"cannot read --data: test data: {path}"

CASES: dict[str, Callable] = {
    # --- the training file ---
    "train_missing_column": _train_file(lambda df: df.drop(columns="score"), TRAIN_FILE + r" has no column 'score'",
                                        r"its columns are \['id', 'anchor', 'target', 'context'\]", r"Rename the column\(s\) in the file"),
    "train_misnamed_column": _train_file(lambda df: df.rename(columns={"anchor": "Anchor"}), TRAIN_FILE + r" has no column 'anchor'",
                                         r"'Anchor'", r"Rename the column\(s\) in the file"),
    "train_nan_text": _train_file(lambda df: _with(df, "target", 3, None), TRAIN_FILE + r" column 'target'",
                                  r"1 empty or missing value\(s\): line 5 \(id '\w+'\): nan", r"Fill or drop these rows"),
    "train_empty_text": _train_file(lambda df: _with(df, "anchor", 10, ""), TRAIN_FILE + r" column 'anchor'",
                                    r"1 empty or missing value\(s\): line 12 \(id '\w+'\): nan", r"Fill or drop these rows"),
    "train_whitespace_text": _train_file(lambda df: _with(df, "anchor", 0, "   "), TRAIN_FILE + r" column 'anchor'",
                                         r"line 2 \(id '\w+'\): '   '", r"Fill or drop these rows"),
    "train_label_out_of_range": _train_file(lambda df: _with(df, "score", 5, 1.5), TRAIN_FILE + r" column 'score' must hold numbers in \[0, 1\]",
                                            r"line 7 \(id '\w+'\): 1\.5", r"Fix or rescale the labels"),
    "train_label_not_a_number": _train_file(lambda df: _with(df, "score", 6, "high"), TRAIN_FILE + r" column 'score'",
                                            r"line 8 \(id '\w+'\): 'high'", r"Fix or rescale the labels"),
    "train_duplicate_ids": _train_file(lambda df: _with(df, "id", 9, df["id"][2]), TRAIN_FILE + r" column 'id'",
                                       r"2 rows with duplicated ids, e.g. \['\w+'\]", r"drop the duplicates"),
    "train_unknown_cpc_code": _train_file(lambda df: _with(df, "context", 4, "Z99"), TRAIN_FILE + r" column 'context'",
                                          r"1 code\(s\) with no title in cpc_dir: line 6 \(id '\w+'\): 'Z99'",
                                          r"point cpc_dir at the full CPCTitleList folder"),
    "train_not_utf8": _bytes_file("latin1.csv", LATIN1_TRAIN, "train", TRAIN_FILE, r"is not UTF-8 text", r"re-save it as UTF-8"),
    "train_empty_file": _bytes_file("empty.csv", b"", "train", TRAIN_FILE, r"is empty", r"needs a header row and at least one data row"),
    "train_file_not_found": _train_set("train_csv=no/such/train.csv", where=r"train_csv: file not found",
                                       value=r"no/such/train\.csv", fix=r"Check the path, or attach the dataset"),
    # --- folds and config ---
    "n_folds_above_groups": _train_set("n_folds=40", where=r"n_folds=40", value=r"larger than the number of groups \(15\)",
                                       fix=r"lower n_folds to at most 15"),
    "n_folds_below_2": _train_set("n_folds=1", where=r"config key 'n_folds'", value=r"got 1", fix=r"use n_folds=2"),
    "fold_out_of_range": _train_set(where=r"--fold 5", value=r"out of range for n_folds=2", fix=r"use 0\.\.1 or 'all'",
                                    extra_argv=("--fold", "5")),
    "unknown_key_set": _train_set("epoch=2", where=r"in --set", value=r"unknown config key 'epoch'", fix=r"Did you mean 'epochs'\?"),
    "unknown_key_yaml": _yaml_unknown_key,
    "bad_value_type": _train_set("epochs=two", where=r"config key 'epochs' in --set", value=r"expected int, got 'two'",
                                 fix=r"write e\.g\. epochs=3"),
    "unknown_head": _train_set("head=meen", where=r"config key 'head'", value=r"unknown value 'meen'",
                               fix=r"valid values are \[.*'mean'.*\]"),
    "unknown_loss": _train_set("loss=bce+peerson", where=r"config key 'loss'", value=r"unknown loss 'peerson'",
                               fix=r"Valid losses are \[.*'pearson'\]"),
    "unknown_adversary": _train_set("adversary=fgsm", where=r"config key 'adversary'", value=r"unknown value 'fgsm'",
                                    fix=r"valid values are \['none', 'fgm', 'pgd', 'awp'\]"),
    "unknown_scheduler": _train_set("scheduler=cosine_restarts", where=r"config key 'scheduler'", value=r"unknown value 'cosine_restarts'",
                                    fix=r"valid values are \['linear', 'cosine', 'constant'\]"),
    "unknown_task": _train_set("task=squad", where=r"config key 'task'", value=r"unknown value 'squad'",
                               fix=r"valid values are \['uspppm', 'pairs', 'ids'\]"),
    "existing_run_other_settings": _existing_run_other_settings,
    # --- the backbone folder ---
    "backbone_not_found": _train_set("backbone=no/such/model", where=r"backbone: model folder not found",
                                     value=r"no/such/model", fix=r"Set backbone to a local folder"),
    "backbone_without_weights": _backbone_without(lambda b: (b / "model.safetensors").unlink(), r"backbone {path}",
                                                  r"has no weights", r"point backbone at the folder of a complete checkpoint"),
    "backbone_without_tokenizer": _backbone_without(_drop_tokenizer, r"backbone {path}", r"has no tokenizer vocabulary",
                                                    r"copy the tokenizer files that came with the model"),
    "backbone_tokenizer_bigger_than_embedding": _backbone_bigger_tokenizer,
    # --- predict ---
    "predict_empty_test": _bytes_file("empty.csv", b"", "predict", TEST_FILE, r"is empty", r"needs a header row"),
    "predict_header_only_test": _bytes_file("header.csv", b"id,anchor,target,context\n", "predict", TEST_FILE,
                                            r"has a header but no rows", r"pass a test file of its task"),
    "predict_test_not_utf8": _bytes_file("latin1.csv", LATIN1_TEST, "predict", TEST_FILE, r"is not UTF-8 text", r"re-save it as UTF-8"),
    "predict_test_columns_differ": _predict_data(lambda df: df.rename(columns={"context": "cpc"}), TEST_FILE + r" has no column 'context'",
                                                 r"its columns are \['id', 'anchor', 'target', 'cpc'\]", r"Rename the column\(s\) in the file"),
    "predict_test_duplicate_ids": _predict_data(lambda df: _with(df, "id", 3, df["id"][1]), TEST_FILE + r" column 'id'",
                                                r"2 rows with duplicated ids", r"drop the duplicates"),
    "predict_test_whitespace_text": _predict_data(lambda df: _with(df, "target", 2, " \t "), TEST_FILE + r" column 'target'",
                                                  r"line 4 \(id '\w+'\): ' \\t '", r"Fill or drop these rows"),
    "predict_run_of_other_task": _predict_run_of_other_task,
    "predict_missing_weights": _predict_missing_weights,
    "predict_missing_tokenizer": _predict_missing_tokenizer,
    "predict_tokenizer_bigger_than_embedding": _predict_bigger_tokenizer,
    "predict_sample_submission_other_ids": _predict_sample_other_ids,
    # --- ensemble: OOF sets that disagree ---
    "ensemble_other_ids": _then(lambda env, tmp: _ensemble_case(env, tmp, _edit_oof(lambda oof: oof.iloc[:-3])),
                                r"ensemble: run {tmp}/other has other out-of-fold ids than run", r"3 only in .*uspppm_run",
                                r"Blend runs trained on the same training file"),
    "ensemble_other_folds": _then(lambda env, tmp: _ensemble_case(env, tmp, _edit_oof(lambda oof: oof.assign(fold=1 - oof["fold"]))),
                                  r"ensemble: run {tmp}/other puts \d+ id\(s\) in other folds", r"\(fold [01], not [01]\)",
                                  r"Train the runs with the same n_folds, fold_seed and data"),
    "ensemble_other_labels": _then(lambda env, tmp: _ensemble_case(env, tmp, _edit_oof(lambda oof: _with(oof, "label", 2, 0.123))),
                                   r"ensemble: run {tmp}/other has other labels", r"for 1 id\(s\), e\.g\. \['\w+'\]",
                                   r"blend runs whose labels are on the same scale"),
    "ensemble_other_metric": _ensemble_other_metric,
}


def _digest(path: Path) -> dict[str, str]:
    """Every file under `path` (or `path` itself) → its sha256: equal digests mean byte-identical trees."""
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return {str(p.relative_to(path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_the_table_covers_the_issue():
    assert len(CASES) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_with_one_clear_line_and_writes_nothing(name, env, tmp_path, capsys):
    check_case(name, CASES[name](env, tmp_path), tmp_path, capsys)


def check_case(name: str, case: Case, tmp_path: Path, capsys, *, status: int = 2) -> str:
    """Run `case` through the command line: exit `status` (2: the user's input; 1: the environment), one error line
    naming the place, the value and the fix, nothing written, no temporary file left. Returns the message.

    Other bad-input tables (tests/test_bad_inputs_*.py) run their cases through this too.
    """
    assert case.where and case.value and case.fix, f"{name}: every case checks the place, the value and the fix"
    before = {str(p): _digest(p) for p in case.unchanged}
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code = main(case.argv)
    err = capsys.readouterr().err
    prefix = f"kagglekit {case.argv[0]}: error: "
    assert code == status, f"{name}: exit status {code}, stderr: {err[-2000:]}"
    assert err.count(prefix) == 1, err[-2000:]
    message = err.split(prefix, 1)[1].strip()
    assert "\n" not in message, f"{name}: the error must be one line: {message!r}"
    for part in ("where", "value", "fix"):
        assert re.search(getattr(case, part), message), f"{name}: {part} {getattr(case, part)!r} not in: {message}"
    for path in case.absent:
        assert not path.exists(), f"{name}: {path} was written"
    assert {str(p): _digest(p) for p in case.unchanged} == before, f"{name}: an existing output changed"
    leftovers = [p.name for p in tmp_path.rglob(".*.tmp")]
    assert not leftovers, f"{name}: temporary files left behind: {leftovers}"
    return message
