"""Outputs never overwrite inputs; predict takes only the real models of a run; OS errors as one line.

Through the command line (`check_case`: exit status, one line with place, value and fix, nothing written,
inputs byte-identical): an output that is an input under another spelling (``./``, ``..``, a symbolic
link), an output inside a folder the command reads, a file where a folder is needed and the reverse, a
run given twice (by path or by identity), a run folder holding copies of its models (``--strict``), runs
whose predictions lie on different scales. Then direct tests: the copies are skipped with a warning and the
submission is the one without them, `check_outputs` rule by rule, `os_error_line`.

We run as root, where file permissions do not stop writes: a folder without write permission is
simulated by monkeypatching ``os.access`` (the check before anything is computed) or ``os.replace``
(the write itself) to refuse it.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Callable

import pandas as pd
import pytest
from test_bad_inputs import env  # noqa: F401  (the module fixture: the sample data, a tiny bert and a trained run)
from test_bad_inputs import Case, _copy_run, _digest, _predict_case, _set, _train_args, check_case

from kagglekit._paths import check_outputs, os_error_line, resolved
from kagglekit.cli import main
from kagglekit.infer.predict import models_path, predict
from kagglekit.run import SkippedFolder, find_model_dirs


def _esc(path) -> str:
    return re.escape(str(path))


def _edit_json(path: Path, **changes) -> None:
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


# ------------------------------------------------------------------------------------------------
# the cases: name -> (env, tmp) -> Case
# ------------------------------------------------------------------------------------------------

def _predict_out(out_fn: Callable, data_fn: Callable | None = None, *, extra: Callable | None = None, where: str, value: str,
                 fix: str, keep: Callable | None = None) -> Callable:
    """A predict case whose --out is `out_fn(env, tmp, data)` (data: a copy of the test file, or `data_fn(env, tmp)`);
    `extra(env, tmp)` adds arguments; `keep(env, tmp, data)` lists the files that must stay byte-identical (default: the data)."""
    def make(env, tmp):
        data = data_fn(env, tmp) if data_fn else Path(shutil.copy(env.data / "test.csv", tmp / "test.csv"))
        out = out_fn(env, tmp, data)
        argv = ["predict", "--models", str(env.run), "--data", str(data), "--out", str(out), "--device", "cpu",
                *(extra(env, tmp) if extra else ())]
        fill = {"data": _esc(data), "out": _esc(out), "tmp": _esc(tmp), "real": _esc(resolved(data))}
        keep_files = (keep or (lambda e, t, d: [d]))(env, tmp, data)
        absent = [p for p in (out, models_path(out)) if p not in keep_files and not p.is_dir() and p != data]
        return Case(argv, where.format(**fill), value.format(**fill), fix, absent=absent, unchanged=keep_files)
    return make


def _sample(env, tmp) -> list[str]:
    pd.DataFrame({"id": env.test["id"], "score": 0.5}).to_csv(tmp / "sample.csv", index=False)
    return ["--sample-submission", str(tmp / "sample.csv")]


def _symlink(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


def _models_file_is_data(env, tmp):
    data = Path(shutil.copy(env.data / "test.csv", tmp / "sub_models.csv"))  # what --out sub.csv writes beside it
    return data


def _run_with(env, tmp, name: str, edit: Callable[[Path], None]) -> Path:
    run = _copy_run(env, tmp, name)
    edit(run)
    return run


def _backup_copy(run: Path) -> None:
    shutil.copytree(run / "fold0", run / "fold0_backup")


def _renamed_copy(run: Path) -> None:
    shutil.copytree(run / "fold0", run / "fold2")  # its kagglekit.json still says fold 0


def _as_classes(run: Path) -> None:
    """A run whose models predict three classes 0, 1, 2 (their expected value: the scale [0, 2]) and another run_id."""
    output = {"kind": "classes", "values": [0.0, 1.0, 2.0]}
    for meta in run.glob("fold*/kagglekit.json"):
        _edit_json(meta, output=output, activation="expected")
    _edit_json(run / "run.json", output=output, run_id="three-classes")


def _predict_runs(runs_fn: Callable, *extra: str, where: str, value: str, fix: str) -> Callable:
    """A predict case of the runs `runs_fn(env, tmp)` (strings, as typed); messages may name {run} and {tmp}."""
    def make(env, tmp):
        runs = runs_fn(env, tmp)
        case = _predict_case(env, tmp, runs, env.data / "test.csv", *extra)
        fill = {"run": _esc(env.run), "parent": _esc(env.run.parent), "tmp": _esc(tmp)}
        return _set(case, where.format(**fill), value.format(**fill), fix)
    return make


def _ensemble_out(out_fn: Callable, where: str, value: str, fix: str) -> Callable:
    def make(env, tmp):
        other = _copy_run(env, tmp, "other")
        out = out_fn(other)
        return Case(["ensemble", str(env.run), str(other), "--out", str(out)], where.format(other=_esc(other), out=_esc(out)),
                    value, fix, unchanged=[other])
    return make


def _merge_out_inside_via_link(env, tmp):
    a, b = _copy_run(env, tmp, "a"), _copy_run(env, tmp, "b")
    link = _symlink(tmp / "link", a)
    out = link / "merged"
    return Case(["merge", str(a), str(b), "--out", str(out)], rf"--out {_esc(out)} lies inside the input run folder {_esc(a)}",
                rf"\({_esc(resolved(a))}\)", r"the kit never writes into a folder it reads; choose a path outside it",
                absent=[a / "merged"], unchanged=[a, b])


def _merge_out_is_a_file(env, tmp):
    a, b = _copy_run(env, tmp, "a"), _copy_run(env, tmp, "b")
    out = tmp / "notes.txt"
    out.write_text("mine")
    return Case(["merge", str(a), str(b), "--out", str(out)], rf"--out {_esc(out)}", r"is a file, not a folder",
                r"give the path of a folder", unchanged=[out, a, b])


def _report_lb_file_is_a_run_card(env, tmp):
    runs = tmp / "runs"
    runs.mkdir()
    run = _copy_run(env, runs, "a")
    card = run / "run.json"
    return Case(["report", str(runs), "--lb", "a=0.8", "--lb-file", str(card), "--out", str(tmp / "report")],
                rf"--lb-file {_esc(card)} is the run file {_esc(card)}", r"is the run file", r"choose another path",
                absent=[tmp / "report"], unchanged=[run])


def _report_out_inside_a_fold(env, tmp):
    runs = tmp / "runs"
    runs.mkdir()
    run = _copy_run(env, runs, "a")
    out = run / "fold0" / "report"
    return Case(["report", str(runs), "--out", str(out)], rf"--out {_esc(out)} lies inside the run folder {_esc(run / 'fold0')}",
                r"lies inside", r"choose a path outside it", absent=[out], unchanged=[run])


def _export_out_in_model_folder(name: str) -> Callable:
    def make(env, tmp):
        run = _copy_run(env, tmp, "run")
        out = run / "fold0" / name
        return Case(["export", "--model", str(run / "fold0"), "--out", str(out)],
                    rf"--out {_esc(out)} lies inside the --model folder {_esc(run / 'fold0')}", r"lies inside",
                    r"choose a path outside it", unchanged=[run])
    return make


def _train_out(settings_fn: Callable, where: str, value: str, fix: str, *, extra: tuple = ()) -> Callable:
    """A training case: `settings_fn(env, tmp)` gives (settings, the inputs that must stay unchanged, outputs that must not exist)."""
    def make(env, tmp):
        settings, keep, absent = settings_fn(env, tmp)
        fill = {"tmp": _esc(tmp)}
        return Case([*_train_args(env, tmp / "run", *settings), *extra], where.format(**fill), value.format(**fill), fix,
                    absent=absent, unchanged=keep)
    return make


def _backbone_copy(env, tmp, where: Path) -> Path:
    return Path(shutil.copytree(env.bert, where))


def _output_dir_is_backbone(env, tmp):
    backbone = _backbone_copy(env, tmp, tmp / "backbone")
    return [f"backbone={backbone}", f"output_dir={backbone}"], [backbone], []


def _output_dir_inside_backbone(env, tmp):
    backbone = _backbone_copy(env, tmp, tmp / "backbone")
    return [f"backbone={backbone}", f"output_dir={backbone / 'run'}"], [backbone], [backbone / "run"]


def _backbone_is_a_fold_folder_trained(env, tmp):
    backbone = _backbone_copy(env, tmp, tmp / "run" / "fold0")  # the model this call's fold 0 would replace
    return [f"backbone={backbone}"], [backbone], [tmp / "run" / "config.yaml"]


def _train_csv_is_the_runs_oof(env, tmp):
    (tmp / "run").mkdir()
    train = Path(shutil.copy(env.data / "train.csv", tmp / "run" / "oof.csv"))
    return [f"train_csv={train}"], [train], [tmp / "run" / "config.yaml"]


def _output_dir_is_a_file(env, tmp):
    out = tmp / "run.txt"
    out.write_text("mine")
    return [f"output_dir={out}"], [out], []


def _id_vocab_out_holds_its_input(env, tmp):
    """The tokenizer folder is replaced as a whole: an --out holding the id files would delete them."""
    ids = tmp / "vocab" / "ids.txt"
    ids.parent.mkdir()
    ids.write_text("1 2 3\t4 5\n")
    return Case(["id-vocab", str(ids), "--out", str(ids.parent)], rf"--out {re.escape(str(ids.parent))}",
                rf"would replace the folder that holds the files {re.escape(str(ids))}", r"choose another path", unchanged=[ids])


def _pretrain_output_dir_is_the_backbone(env, tmp):
    backbone = Path(shutil.copytree(env.bert, tmp / "backbone"))
    argv = ["pretrain", *[a for s in (f"files={env.data / 'train.csv'}", "columns=anchor,target", f"backbone={backbone}",
                                      f"output_dir={backbone}", "steps=2") for a in ("--set", s)]]
    return Case(argv, rf"output_dir {re.escape(str(backbone))}", r"backbone folder", r"choose another path", unchanged=[backbone])


CASES: dict[str, Callable] = {
    "id_vocab_out_holds_its_input": _id_vocab_out_holds_its_input,
    "pretrain_output_dir_is_the_backbone": _pretrain_output_dir_is_the_backbone,
    # --- predict: --out against the inputs ---
    "predict_out_is_the_data_file": _predict_out(lambda env, tmp, data: data, where=r"--out {out} is the --data file {data}",
                                                 value=r"{data}", fix=r"choose another path"),
    "predict_out_is_the_data_under_another_spelling": _predict_out(
        lambda env, tmp, data: tmp / "sub" / ".." / "test.csv", where=r"--out {out} is the --data file {data}",
        value=r"\(both are {real}\)", fix=r"choose another path"),
    "predict_out_is_a_link_to_the_data": _predict_out(
        lambda env, tmp, data: _symlink(tmp / "submission.csv", data), where=r"--out {out} is the --data file {data}",
        value=r"\(both are {real}\)", fix=r"choose another path", keep=lambda env, tmp, data: [data, tmp / "submission.csv"]),
    "predict_models_file_is_the_data_file": _predict_out(
        lambda env, tmp, data: tmp / "sub.csv", _models_file_is_data, where=r"--out \(its per-run file\) {data} is the --data file",
        value=r"{data}", fix=r"choose another path"),
    "predict_out_is_the_sample_submission": _predict_out(
        lambda env, tmp, data: tmp / "sample.csv", extra=_sample, where=r"--out {tmp}/sample\.csv is the --sample-submission file",
        value=r"sample\.csv", fix=r"choose another path", keep=lambda env, tmp, data: [data, tmp / "sample.csv"]),
    "predict_out_is_a_runs_oof": _predict_out(
        lambda env, tmp, data: env.run / "oof.csv", where=r"--out .*uspppm_run/oof\.csv is the --models file",
        value=r"oof\.csv", fix=r"choose another path", keep=lambda env, tmp, data: [env.run / "oof.csv", data]),
    "predict_out_inside_a_fold_folder": _predict_out(
        lambda env, tmp, data: env.run / "fold0" / "submission.csv", where=r"--out .*submission\.csv lies inside the --models folder",
        value=r"uspppm_run/fold0", fix=r"choose a path outside it", keep=lambda env, tmp, data: [env.run]),
    "predict_out_is_a_folder": _predict_out(
        lambda env, tmp, data: (tmp / "subs").mkdir() or tmp / "subs", where=r"--out {tmp}/subs", value=r"is a folder",
        fix=r"give the path of a file"),
    "predict_out_under_a_file": _predict_out(
        lambda env, tmp, data: data / "submission.csv", where=r"--out {data}/submission\.csv: {real} is a file",
        value=r"is a file, not a folder", fix=r"choose a path whose folders are folders"),
    # --- predict: which runs and models ---
    "predict_same_run_two_spellings": _predict_runs(
        lambda env, tmp: [str(env.run), f"{env.run.parent}/./{env.run.name}"], where=r"--models {parent}/\./uspppm_run and {run}",
        value=r"hold the same model fold0/ \(both are {run}/fold0\)", fix=r"Give each run once"),
    "predict_run_and_a_link_to_it": _predict_runs(
        lambda env, tmp: [str(env.run), str(_symlink(tmp / "link", env.run))], where=r"--models {tmp}/link and {run}",
        value=r"both are {run}/fold0", fix=r"Give each run once"),
    "predict_run_and_its_copy": _predict_runs(
        lambda env, tmp: [str(env.run), str(_copy_run(env, tmp, "copy"))], where=r"--models {tmp}/copy and {run}",
        value=r"run_id \w+: a copy of the run", fix=r"Give each run once"),
    "predict_run_and_its_own_fold": _predict_runs(
        lambda env, tmp: [str(env.run), str(env.run / "fold1")], where=r"--models {run}/fold1 and {run}",
        value=r"hold the same model fold1/", fix=r"Give each run once"),
    "predict_strict_refuses_a_backup_copy": _predict_runs(
        lambda env, tmp: [str(_run_with(env, tmp, "run", _backup_copy))], "--strict", where=r"--models {tmp}/run \(--strict\)",
        value=r"fold0_backup/: a model folder whose name is none of a run's", fix=r"Move them out of the run folder, or leave --strict out"),
    "predict_strict_refuses_a_renamed_copy": _predict_runs(
        lambda env, tmp: [str(_run_with(env, tmp, "run", _renamed_copy))], "--strict", where=r"--models {tmp}/run \(--strict\)",
        value=r"fold2/: its kagglekit\.json says fold 0", fix=r"leave --strict out to skip them"),
    "predict_runs_on_different_scales": _predict_runs(
        lambda env, tmp: [str(env.run), str(_run_with(env, tmp, "classes", _as_classes))], where=r"--models: {tmp}/classes predicts",
        value=r"classes \[0\.0, 1\.0, 2\.0\] on the scale \[0, 2\] but {run} predicts one score \(sigmoid\) on \[0, 1\]",
        fix=r"Blend runs trained on the same labels"),
    # --- ensemble, merge, report, export ---
    "ensemble_out_is_a_runs_oof": _ensemble_out(lambda other: other / "oof.csv", r"--out {out} is the RUN_DIR file {out}",
                                                r"is the RUN_DIR file", r"choose another path"),
    "ensemble_same_run_two_spellings": lambda env, tmp: Case(
        ["ensemble", str(env.run), f"{env.run.parent}/./{env.run.name}", "--out", str(tmp / "w.json")],
        rf"ensemble: run folder {_esc(env.run.parent)}/\./uspppm_run is given twice", rf"also as {_esc(env.run)}",
        r"give each run once", absent=[tmp / "w.json"]),
    "merge_out_inside_a_run_through_a_link": _merge_out_inside_via_link,
    "merge_out_is_a_file": _merge_out_is_a_file,
    "report_lb_file_is_a_run_card": _report_lb_file_is_a_run_card,
    "report_out_inside_a_fold_folder": _report_out_inside_a_fold,
    "export_out_inside_the_model_folder": _export_out_in_model_folder("model.onnx"),
    "export_out_is_the_weights": _export_out_in_model_folder("model.safetensors"),
}

# Train cases: they need kagglekit/_paths.check_train_outputs called in kagglekit/train/runner.py train_folds.
TRAIN_CASES: dict[str, Callable] = {
    "train_output_dir_is_the_backbone": _train_out(
        _output_dir_is_backbone, r"output_dir {tmp}/backbone is the backbone folder {tmp}/backbone", r"is the backbone folder",
        r"choose another path"),
    "train_output_dir_inside_the_backbone": _train_out(
        _output_dir_inside_backbone, r"output_dir {tmp}/backbone/run lies inside the backbone folder {tmp}/backbone",
        r"lies inside", r"choose a path outside it"),
    "train_fold_folder_holds_the_backbone": _train_out(
        _backbone_is_a_fold_folder_trained, r"output_dir's fold0/ {tmp}/run/fold0", r"is the backbone folder {tmp}/run/fold0",
        r"choose another path", extra=("--fold", "0")),
    "train_run_file_is_the_train_csv": _train_out(
        _train_csv_is_the_runs_oof, r"output_dir's oof\.csv {tmp}/run/oof\.csv is the train_csv file", r"{tmp}/run/oof\.csv",
        r"choose another path"),
    "train_output_dir_is_a_file": _train_out(_output_dir_is_a_file, r"output_dir {tmp}/run\.txt", r"is a file, not a folder",
                                             r"give the path of a folder"),
}


def test_the_table_covers_the_issue():
    assert len(CASES) + len(TRAIN_CASES) >= 25


@pytest.mark.parametrize("name", list(CASES))
def test_an_output_that_meets_an_input_fails_with_one_line_and_writes_nothing(name, env, tmp_path, capsys):
    check_case(name, CASES[name](env, tmp_path), tmp_path, capsys)


@pytest.mark.parametrize("name", list(TRAIN_CASES))
def test_train_outputs_never_meet_its_inputs(name, env, tmp_path, capsys):
    check_case(name, TRAIN_CASES[name](env, tmp_path), tmp_path, capsys)


# ------------------------------------------------------------------------------------------------
# operating-system errors through the command line: one line, exit 1 (the machine) or 2 (the path)
# ------------------------------------------------------------------------------------------------

def test_a_folder_without_write_permission_is_refused_before_predicting(env, tmp_path, capsys, monkeypatch):
    """Simulated: os.access says the folder takes no writes (root ignores permissions, a read-only mount does not)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == locked and mode & os.W_OK else access(path, mode, **kw))
    loads = []
    monkeypatch.setattr("kagglekit.infer.predict.run_folders", lambda *a, **k: loads.append(a) or [])
    case = _predict_case(env, tmp_path, [env.run], env.data / "test.csv")
    case.argv[case.argv.index("--out") + 1] = str(locked / "submission.csv")
    case = _set(case, rf"--out {_esc(locked)}/submission\.csv: cannot write in {_esc(locked)}", r"no write permission, or a read-only",
                r"choose a folder you can write to \(on Kaggle: /kaggle/working\)")
    case.absent.append(locked / "submission.csv")
    check_case("locked folder", case, tmp_path, capsys, status=1)
    assert loads == []  # refused before any model ran


def test_a_write_refused_by_the_os_is_one_line_exit_1(env, tmp_path, capsys, monkeypatch):
    """Simulated: os.replace (the atomic write's last step) raises PermissionError for every file of tmp_path."""
    replace = os.replace

    def refusing(src, dst, *args, **kwargs):
        if Path(dst).parent == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied", str(src), None, str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", refusing)
    case = _set(_predict_case(env, tmp_path, [env.run], env.data / "test.csv"), rf"permission denied: {_esc(tmp_path)}/submission_models\.csv",
                r"\(Permission denied\)", r"choose a folder you can write to")
    check_case("refused write", case, tmp_path, capsys, status=1)


def test_a_folder_where_a_file_is_written_is_one_line_exit_2(env, tmp_path, capsys, monkeypatch):
    """A folder appears at --out after the checks (another process): the write's IsADirectoryError is one line."""
    replace = os.replace

    def into_a_folder(src, dst, *args, **kwargs):
        if Path(dst).name == "submission_models.csv":
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(src), None, str(dst))
        return replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", into_a_folder)
    case = _set(_predict_case(env, tmp_path, [env.run], env.data / "test.csv"), rf"{_esc(tmp_path)}/submission_models\.csv is a folder",
                r"where a file is needed", r"give the path of a file")
    check_case("folder at --out", case, tmp_path, capsys, status=2)


def test_id_vocab_under_a_file_is_one_line_exit_2(tmp_path, capsys):
    """A folder on the way that is a file: refused before anything is read, naming the option."""
    ids = tmp_path / "ids.txt"
    ids.write_text("1 2 3\t4 5\n")
    blocker = tmp_path / "afile"
    blocker.write_text("")
    assert main(["id-vocab", str(ids), "--out", str(blocker / "vocab")]) == 2
    err = capsys.readouterr().err
    assert err == (f"kagglekit id-vocab: error: --out {blocker / 'vocab'}: {blocker} is a file, not a folder: choose a path whose "
                   "folders are folders.\n")


# ------------------------------------------------------------------------------------------------
# predict takes a run's real models only
# ------------------------------------------------------------------------------------------------

def _cli_predict(run, data, out, *extra) -> int:
    return main(["predict", "--models", str(run), "--data", str(data), "--out", str(out), "--device", "cpu", *extra])


def _to_stderr(message, category, filename, lineno, file=None, line=None):
    """Show a warning as Python does outside pytest (which records them): `warnings.formatwarning` to stderr."""
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))


def test_a_backup_copy_is_skipped_with_a_warning_and_changes_nothing(env, tmp_path, capsys):
    run = _run_with(env, tmp_path, "run", _backup_copy)
    shutil.copytree(run / "fold0", run / "fold0 (1)")
    assert _cli_predict(env.run, env.data / "test.csv", tmp_path / "clean.csv") == 0
    capsys.readouterr()
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = _to_stderr  # restored when the block ends
        assert _cli_predict(run, env.data / "test.csv", tmp_path / "with_copies.csv") == 0
    err = capsys.readouterr().err
    for name in ("fold0 (1)", "fold0_backup"):
        assert f"kagglekit predict: warning: --models {run}: skipped {name}/: a model folder whose name is none of a run's" in err
    assert len([line for line in err.splitlines() if "warning:" in line]) == 2 and "SkippedFolder" not in err  # a line each
    assert (tmp_path / "with_copies.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()


def test_a_renamed_copy_is_skipped_and_the_run_predicts_with_its_real_folds(env, tmp_path):
    run = _run_with(env, tmp_path, "run", _renamed_copy)  # fold2/: a copy of fold0/ whose kagglekit.json says fold 0
    with pytest.warns(SkippedFolder, match=rf"--models {_esc(run)}: skipped fold2/: its kagglekit\.json says fold 0: a copy"):
        got = predict([run], env.data / "test.csv", device="cpu")
    pd.testing.assert_frame_equal(got, predict([env.run], env.data / "test.csv", device="cpu"), check_exact=True)
    _edit_json(run / "fold2" / "kagglekit.json", fold=2)  # now its content says so: it counts, and the submission moves
    moved = predict([run], env.data / "test.csv", device="cpu")
    assert (moved["score"] - got["score"]).abs().max() > 1e-6


def test_models_that_disagree_with_the_run_card_or_are_unfinished_are_skipped(env, tmp_path):
    run = _copy_run(env, tmp_path, "run")
    _edit_json(run / "fold1" / "kagglekit.json", task="pairs")
    (run / "fold2").mkdir()  # a fold still training
    (run / "logs").mkdir()  # not a model folder at all: no word about it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert find_model_dirs(run) == ([run / "fold0"], [])
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, SkippedFolder))
    assert messages == [
        f"--models {run}: skipped fold1/: its kagglekit.json says task='pairs' but the run's run.json says 'uspppm': a model of another run",
        f"--models {run}: skipped fold2/: no kagglekit.json: a model still training, or copied without it",
    ]
    with pytest.raises(ValueError, match=r"\(--strict\): 2 folder\(s\) are not complete models of the run: fold1/: .*; fold2/: no kagglekit"):
        find_model_dirs(run, strict=True)


def test_without_a_run_card_most_models_decide_and_a_tie_is_an_error(env, tmp_path):
    run = _copy_run(env, tmp_path, "run")
    (run / "run.json").unlink()
    shutil.copytree(run / "fold0", run / "fold0-seed7")
    _edit_json(run / "fold0-seed7" / "kagglekit.json", seed=7)
    _edit_json(run / "fold1" / "kagglekit.json", activation="identity")
    with pytest.warns(SkippedFolder, match=r"fold1/: its kagglekit.json says activation='identity' where the run's other models say 'sigmoid'"):
        assert find_model_dirs(run) == ([run / "fold0", run / "fold0-seed7"], [])
    shutil.rmtree(run / "fold0-seed7")
    with pytest.raises(ValueError, match=rf"has no run\.json to tell which are the run's"):
        find_model_dirs(run)


@pytest.mark.parametrize("spelling", ["dot", "link"])
def test_a_run_under_two_spellings_is_refused_naming_both(env, tmp_path, spelling):
    other = f"{env.run.parent}/./{env.run.name}" if spelling == "dot" else str(_symlink(tmp_path / "link", env.run))
    with pytest.raises(ValueError, match=rf"--models {re.escape(other)} and {_esc(env.run)} hold the same model fold0/"):
        predict([env.run, other], env.data / "test.csv", tmp_path / "s.csv", device="cpu")
    assert list(tmp_path.iterdir()) == ([] if spelling == "dot" else [tmp_path / "link"])


def test_runs_of_one_scale_still_blend(env, tmp_path):
    """Classes 0, 0.5, 1 and one sigmoid score lie on one scale: the check lets them blend (a common ensemble)."""
    run = _copy_run(env, tmp_path, "classes")
    output = {"kind": "classes", "values": [0.0, 0.5, 1.0]}
    for meta in run.glob("fold*/kagglekit.json"):
        _edit_json(meta, output=output, activation="expected")
    _edit_json(run / "run.json", output=output, run_id="three-classes")
    from kagglekit.infer.inputs import InputCache
    from kagglekit.infer.predict import _plan_runs

    plans = _plan_runs([env.run, run], InputCache(env.data / "test.csv"), average="prob", tta="none", full_weight=None, strict=False)
    assert [p.scale for p in plans] == [(0.0, 1.0), (0.0, 1.0)]


# ------------------------------------------------------------------------------------------------
# check_outputs rule by rule, os_error_line case by case
# ------------------------------------------------------------------------------------------------

def test_check_outputs_compares_resolved_paths(tmp_path):
    data = tmp_path / "data" / "test.csv"
    data.parent.mkdir()
    data.write_text("id\n1\n")
    (tmp_path / "alias").symlink_to(tmp_path / "data")
    for out in (data, tmp_path / "data" / "x" / ".." / "test.csv", tmp_path / "alias" / "test.csv"):
        if out.parent.name == "x":
            (tmp_path / "data" / "x").mkdir(exist_ok=True)
        with pytest.raises(ValueError, match=rf"^--out {_esc(out)} is the --data file {_esc(data)}"):
            check_outputs({"--out": out}, {"--data": data})
    check_outputs({"--out": tmp_path / "data" / "submission.csv"}, {"--data": data, "--weights": None, "--models": []})


def test_check_outputs_folders_written_whole_or_into(tmp_path):
    run, data = tmp_path / "run", tmp_path / "run" / "train.csv"
    run.mkdir()
    data.write_text("id\n1\n")
    check_outputs({"output_dir": run}, {"train_csv": data}, folders={"output_dir"}, into={"output_dir"})  # data beside the run: fine
    with pytest.raises(ValueError, match=rf"^merged {_esc(run)} would replace the folder that holds the train_csv {_esc(data)}"):
        check_outputs({"merged": run}, {"train_csv": data}, folders={"merged"})
    with pytest.raises(ValueError, match=rf"^--out {_esc(run / 'sub' / 'x.csv')} lies inside the --models folder {_esc(run)}"):
        check_outputs({"--out": run / "sub" / "x.csv"}, {"--models": [tmp_path / "other", run]})
    with pytest.raises(ValueError, match=r"^b .* and a .* are the same path"):
        check_outputs({"a": tmp_path / "x.csv", "b": tmp_path / "." / "x.csv"}, {})


def test_check_outputs_shapes(tmp_path):
    (tmp_path / "file").write_text("")
    (tmp_path / "dir").mkdir()
    with pytest.raises(ValueError, match=r"is a folder: give the path of a file"):
        check_outputs({"--out": tmp_path / "dir"}, {})
    with pytest.raises(ValueError, match=r"is a file, not a folder: give the path of a folder"):
        check_outputs({"--out": tmp_path / "file"}, {}, folders={"--out"})
    with pytest.raises(ValueError, match=rf"{_esc(tmp_path / 'file')} is a file, not a folder: choose a path whose folders are folders"):
        check_outputs({"--out": tmp_path / "file" / "deeper" / "x.csv"}, {})
    check_outputs({"--out": tmp_path / "new" / "deeper" / "x.csv", "dir": tmp_path / "dir"}, {}, folders={"dir"})


@pytest.mark.parametrize("err, status, line", [
    (IsADirectoryError(errno.EISDIR, "Is a directory", "/w/.sub.csv.k2j.tmp", None, "/w/sub.csv"), 2,
     "/w/sub.csv is a folder where a file is needed: give the path of a file (a name inside it, e.g. /w/sub.csv/NAME)."),
    (PermissionError(errno.EACCES, "Permission denied", "/w/.sub.csv.k2j.tmp"), 1,
     "permission denied: /w/sub.csv (Permission denied): the kit may not write (or read) there; choose a folder you can write to "
     "(on Kaggle: /kaggle/working), or fix the permissions."),
    (PermissionError(errno.EACCES, "--out x: cannot write in /w"), 1, "--out x: cannot write in /w"),
    (FileExistsError(errno.EEXIST, "File exists", "/nonexistent-kk/run"), 2,
     "/nonexistent-kk/run already exists (File exists): choose another path, or move it away."),
    (OSError(errno.EIO, "Input/output error", "/w/oof.csv"), 1,
     "Input/output error: /w/oof.csv: check that path and its disk, or choose another place."),
])
def test_os_error_line_names_the_path_and_the_fix(err, status, line):
    assert os_error_line(err) == (status, line)


def test_a_file_on_the_way_is_named(tmp_path):
    (tmp_path / "f").write_text("")
    err = NotADirectoryError(errno.ENOTDIR, "Not a directory", str(tmp_path / "f" / "run"))
    assert os_error_line(err) == (2, f"{tmp_path / 'f'} is a file where a folder is needed (on the way to {tmp_path / 'f' / 'run'}): "
                                     "choose another path, or move the file away.")


def test_a_report_may_go_into_a_run_folder_and_still_counts_that_run(env, tmp_path):
    """Its default for one run is RUN/report; an --out that is a run folder no longer hides that run from the report."""
    from kagglekit.tools.report import write_report

    runs = tmp_path / "runs"
    runs.mkdir()
    a, b = _copy_run(env, runs, "a"), _copy_run(env, runs, "b")
    before = _digest(a)
    assert write_report(a).csv == a / "report" / "leaderboard.csv"
    report = write_report(runs, a)
    assert sorted(report.table["run"]) == ["a", "b"] and report.csv == a / "leaderboard.csv"
    after = _digest(a)
    assert {k: after.get(k) for k in before} == before  # the run's own files are byte-identical; the report's are new


def test_a_submission_may_go_beside_the_runs_files(env, tmp_path):
    """A run folder is read, not replaced: a new file beside its own files (runs/x/submission.csv) is no collision."""
    run = Path(shutil.copytree(env.run, tmp_path / "run"))
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    assert _cli_predict(run, env.data / "test.csv", run / "submission.csv") == 0
    assert (run / "submission.csv").is_file() and (run / "submission_models.csv").is_file()
    assert {name: (run / name).read_bytes() for name in before} == before
