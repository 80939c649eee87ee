"""kagglekit report --lb-file: LB scores kept in a file of the user's choice, for read-only run folders."""

import errno
import json
import os
import stat
from pathlib import Path

import pytest

import kagglekit.tools.report as report_module
from kagglekit.cli import main
from kagglekit.tools.report import read_lb, read_lb_file, run_identity, store_lb, write_report
from test_report import cli, make_run


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "input"
    make_run(root, "deberta", {0: 0.80, 1: 0.82}, cv=0.81, n_folds=2)
    make_run(root, "electra", {0: 0.78, 1: 0.80}, cv=0.79, n_folds=2)
    return root


@pytest.fixture
def read_only(runs, monkeypatch):
    """The run folders made read-only, as attached Kaggle inputs are. root ignores permission bits, so there the
    refusal the OS would give is given by the write itself."""
    folders = [runs, *runs.iterdir()]
    for folder in folders:
        folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    if os.geteuid() == 0:
        write_json = report_module.write_json

        def refuse_inside_runs(path, obj):
            if runs in Path(path).parents:
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return write_json(path, obj)

        monkeypatch.setattr(report_module, "write_json", refuse_inside_runs)
    yield runs
    for folder in folders:
        folder.chmod(0o755)


def _snapshot(root):
    return sorted((str(p.relative_to(root)), p.stat().st_mtime_ns) for p in root.rglob("*"))


def test_a_read_only_run_folder_says_to_use_lb_file(read_only, tmp_path, capsys):
    before = _snapshot(read_only)
    with pytest.raises(ValueError, match=r"--lb: cannot write .*deberta/lb.json: the run folder is read-only .* --lb-file "
                                         r"/kaggle/working/lb.json"):
        write_report(read_only, tmp_path / "report", lb={"deberta": 0.83})
    assert main(["report", str(read_only), "--out", str(tmp_path / "report"), "--lb", "deberta=0.83"]) == 2
    assert "kagglekit report: error: --lb: cannot write" in capsys.readouterr().err
    assert _snapshot(read_only) == before


def test_lb_file_stores_beside_read_only_runs_and_the_leaderboard_shows_it(read_only, tmp_path, capsys):
    before = _snapshot(read_only)
    lb_file = tmp_path / "working" / "lb.json"
    assert cli(["report", str(read_only), "--out", str(tmp_path / "report"), "--lb", "deberta=0.8376", "--lb-file", str(lb_file)]) == 0
    assert "| 0.8100 | 0.8376 |" in capsys.readouterr().out
    assert _snapshot(read_only) == before  # nothing written into the runs
    data = json.loads(lb_file.read_text())
    assert data["format"] == 1 and list(data["runs"]) == ["deberta"]
    assert data["runs"]["deberta"]["lb"] == 0.8376 and data["runs"]["deberta"]["run"] == "deberta"
    assert not list(lb_file.parent.glob("*.tmp"))

    again = write_report(read_only, tmp_path / "report", lb_file=lb_file)  # a later report reads it back
    assert again.table.set_index("run")["lb"].to_dict() == pytest.approx({"deberta": 0.8376, "electra": float("nan")}, nan_ok=True)
    assert read_lb(read_only / "deberta", lb_file=lb_file) == 0.8376 and read_lb(read_only / "deberta") is None


def test_entries_merge_and_a_score_is_replaced(runs, tmp_path):
    lb_file = tmp_path / "lb.json"
    other = {"format": 1, "runs": {"old-run": {"lb": 0.7, "run": "old-run", "updated": "2024-01-01T00:00:00+00:00"}}}
    lb_file.write_text(json.dumps(other))
    write_report(runs, lb={"deberta": 0.83}, lb_file=lb_file)
    write_report(runs, lb={"electra": 0.80}, lb_file=lb_file)
    write_report(runs, lb={"deberta": 0.84}, lb_file=lb_file)
    entries = read_lb_file(lb_file)
    assert entries["old-run"] == other["runs"]["old-run"]  # another run's score is kept as it was
    assert {k: v["lb"] for k, v in entries.items()} == {"old-run": 0.7, "deberta": 0.84, "electra": 0.80}
    table = write_report(runs, lb_file=lb_file).table.set_index("run")["lb"]
    assert table.to_dict() == {"deberta": 0.84, "electra": 0.80}
    assert not list(runs.rglob("lb.json"))  # with --lb-file the runs' folders are not written


def test_a_score_in_the_file_wins_over_the_runs_own_lb_json(runs, tmp_path):
    store_lb(runs / "deberta", 0.5)  # an old score kept in the run folder
    store_lb(runs / "electra", 0.6)
    lb_file = tmp_path / "lb.json"
    store_lb(runs / "deberta", 0.83, lb_file=lb_file)
    table = write_report(runs, lb_file=lb_file).table.set_index("run")["lb"]
    assert table.to_dict() == {"deberta": 0.83, "electra": 0.6}  # electra has no entry: its lb.json


def test_the_identity_is_run_id_when_the_card_has_one(runs, tmp_path):
    card_path = runs / "deberta" / "run.json"
    card = json.loads(card_path.read_text())
    assert run_identity(runs / "deberta") == "deberta"
    card_path.write_text(json.dumps({**card, "run_id": "2024-05-01-deberta-abc123"}))
    lb_file = tmp_path / "lb.json"
    write_report(runs, lb={"deberta": 0.83}, lb_file=lb_file)
    assert list(read_lb_file(lb_file)) == ["2024-05-01-deberta-abc123"]
    moved = runs.parent / "elsewhere" / "renamed"  # the folder moved and was renamed: the run_id still finds it
    moved.parent.mkdir()
    (runs / "deberta").rename(moved)
    assert read_lb(moved, lb_file=lb_file) == 0.83


def test_runs_sharing_a_folder_name_are_refused_and_not_read(tmp_path):
    root = tmp_path / "input"
    make_run(root, "session0/run", {0: 0.8}, cv=0.8)
    make_run(root, "session1/run", {1: 0.7}, cv=0.7)
    lb_file = tmp_path / "lb.json"
    with pytest.raises(ValueError, match=r"runs session0/run, session1/run share the identity 'run' in --lb-file"):
        write_report(root, lb={"session0/run": 0.8}, lb_file=lb_file)
    assert not lb_file.exists()
    lb_file.write_text(json.dumps({"format": 1, "runs": {"run": {"lb": 0.9}}}))  # written by another report
    report = write_report(root, lb_file=lb_file)
    assert report.table["lb"].isna().all()
    assert any("share the identity 'run'" in message for message in report.skipped)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"runs": []}', '{"runs": {"a": {"lb": "high"}}}', '{"runs": {"a": 0.8}}'])
def test_a_corrupt_lb_file_is_an_error_naming_it(runs, tmp_path, text, capsys):
    lb_file = tmp_path / "lb.json"
    lb_file.write_text(text)
    with pytest.raises(ValueError, match=rf"--lb-file {lb_file}: (not valid JSON|expected)"):
        write_report(runs, lb_file=lb_file)
    with pytest.raises(ValueError, match=rf"--lb-file {lb_file}"):
        write_report(runs, lb={"deberta": 0.8}, lb_file=lb_file)
    assert lb_file.read_text() == text  # left as it was
    assert not list(runs.rglob("lb.json"))
