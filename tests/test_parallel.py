"""One fold per GPU: the queue keeps each device busy with one fold at a time, failures are reported
with their logs, Ctrl-C stops the children, and the launcher builds the `kagglekit train` command.

No GPU needed: the devices are fake indices and the children are short Python sleepers.
"""

import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT
from kagglekit.train import parallel
from kagglekit.train.parallel import default_launcher, plan, run_folds_parallel, visible_gpus


def sleeper_launcher(seconds=0.4, codes=None, calls=None):
    """A fake `launch`: a child that logs its start and end times, sleeps, and exits with codes[fold] (0)."""
    codes = codes or {}

    def launch(fold, device, log_path):
        if calls is not None:
            calls.append((fold, device))
        code = (
            "import sys, time; print('start', time.time(), flush=True); "
            f"time.sleep({seconds}); print('boom: CUDA out of memory' if {codes.get(fold, 0)} else 'ok'); "
            f"print('end', time.time()); sys.exit({codes.get(fold, 0)})"
        )
        with open(log_path, "w") as log:
            return subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)

    return launch


def intervals(log_dir, folds):
    """{fold: (start, end)} in wall-clock seconds, as each child logged them."""
    out = {}
    for fold in folds:
        stamps = dict(line.split() for line in (log_dir / f"fold{fold}.log").read_text().splitlines() if line.startswith(("start", "end")))
        out[fold] = (float(stamps["start"]), float(stamps["end"]))
    return out


def max_running(spans):
    """The largest number of intervals that overlap at one instant."""
    return max(sum(s <= start < e for s, e in spans) for start, _ in spans)


def test_two_devices_run_two_folds_at_a_time_and_each_fold_once(tmp_path):
    calls = []
    codes = run_folds_parallel(range(5), [0, 1], sleeper_launcher(calls=calls), tmp_path / "logs", poll=0.02)
    assert codes == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0}
    assert sorted(fold for fold, _ in calls) == [0, 1, 2, 3, 4] and [fold for fold, _ in calls] == [0, 1, 2, 3, 4]
    assert {device for _, device in calls} == {0, 1} and calls[:2] == [(0, 0), (1, 1)]
    spans = intervals(tmp_path / "logs", range(5))
    assert max_running(list(spans.values())) == 2  # both GPUs busy at once, never three folds
    for device in (0, 1):  # one fold at a time on each GPU
        mine = sorted(spans[fold] for fold, d in calls if d == device)
        assert all(end <= start for (_, end), (start, _) in zip(mine, mine[1:]))
    # the queue took about 3 rounds of 0.4 s, not 5
    assert max(e for _, e in spans.values()) - min(s for s, _ in spans.values()) < 5 * 0.4


def test_a_failing_fold_is_named_with_its_log_and_the_others_still_run(tmp_path):
    log_dir = tmp_path / "logs"
    with pytest.raises(RuntimeError) as info:
        run_folds_parallel([0, 1, 2, 3], [0, 1], sleeper_launcher(0.2, codes={1: 3}), log_dir, poll=0.02)
    message = str(info.value)
    assert "fold(s) [1] failed" in message and "exit code 3" in message
    assert str(log_dir / "fold1.log") in message and "boom: CUDA out of memory" in message
    assert "fold 0:" not in message and "fold 2:" not in message
    assert set(intervals(log_dir, [0, 1, 2, 3])) == {0, 1, 2, 3}  # every fold ran to its end


def test_one_device_runs_the_folds_one_after_another_in_order(tmp_path):
    calls = []
    codes = run_folds_parallel([2, 0, 1], [0], sleeper_launcher(0.1, calls=calls), tmp_path, poll=0.02)
    assert codes == {2: 0, 0: 0, 1: 0} and calls == [(2, 0), (0, 0), (1, 0)]
    spans = intervals(tmp_path, [2, 0, 1])
    assert max_running(list(spans.values())) == 1
    assert spans[2][1] <= spans[0][0] and spans[0][1] <= spans[1][0]


def test_ctrl_c_terminates_the_running_children(tmp_path):
    started = []

    def launch(fold, device, log_path):
        if fold == 3:  # Ctrl-C arrives while the parent starts the next fold
            raise KeyboardInterrupt
        seconds = 0 if fold == 0 else 60
        started.append(subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"]))
        return started[-1]

    begin = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_folds_parallel(range(5), [0, 1, 2], launch, tmp_path, poll=0.02)
    assert len(started) == 3 and started[0].returncode == 0
    assert [p.returncode for p in started[1:]] == [-signal.SIGTERM, -signal.SIGTERM]  # stopped, not orphaned
    assert time.monotonic() - begin < 30


def test_plan_is_round_robin_in_fold_order():
    assert plan([0, 1, 2, 3, 4], [0, 1]) == [[0, 2, 4], [1, 3]]
    assert plan([4, 3, 2], [1, 0]) == [[4, 2], [3]]
    assert plan([0, 1], [0, 1, 2]) == [[0], [1], []]
    assert plan(range(3), [0]) == [[0, 1, 2]]
    with pytest.raises(ValueError, match="devices is empty"):
        plan([0, 1], [])
    with pytest.raises(ValueError, match=r"folds must not repeat an entry, got folds=\[0, 0\]"):
        plan([0, 0], [0, 1])


class FakePopen:
    """Records what Popen was given instead of starting anything."""

    def __init__(self, args, **kwargs):
        self.args, self.kwargs = args, kwargs
        self.log_name = kwargs["stdout"].name
        self.log_mode = kwargs["stdout"].mode


def test_default_launcher_builds_the_train_command_and_the_gpu_environment(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel.subprocess, "Popen", FakePopen)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    overrides = ["output_dir=runs/x", "epochs=2"]
    launch = default_launcher("configs/uspppm.yaml", overrides)
    overrides.append("lr=1")  # the caller's list changing later does not leak in
    child = launch(3, 1, tmp_path / "fold3.log")
    assert child.args == [
        sys.executable, "-m", "kagglekit", "train", "--config", "configs/uspppm.yaml", "--fold", "3",
        "--set", "device=cuda", "--set", "output_dir=runs/x", "--set", "epochs=2",
    ]
    assert child.kwargs["env"]["CUDA_VISIBLE_DEVICES"] == "1" and child.kwargs["env"]["PYTHONUNBUFFERED"] == "1"
    assert child.kwargs["stderr"] == subprocess.STDOUT and child.log_name == str(tmp_path / "fold3.log") and child.log_mode == "w"
    assert (tmp_path / "fold3.log").exists()

    # no config file, resume: --resume and the log is appended to; this process's own GPU list is mapped
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    child = default_launcher(None, [], resume=True)(0, 1, tmp_path / "fold0.log")
    assert child.args == [sys.executable, "-m", "kagglekit", "train", "--fold", "0", "--set", "device=cuda", "--resume"]
    assert child.kwargs["env"]["CUDA_VISIBLE_DEVICES"] == "6" and child.log_mode == "a"
    with pytest.raises(ValueError, match=r"device 2 is not visible: CUDA_VISIBLE_DEVICES='4,6'"):
        default_launcher(None, [])(0, 2, tmp_path / "fold0.log")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only failure path of real children")
def test_real_children_parse_the_command_and_report_their_error(tiny_bert, tmp_path, monkeypatch):
    """The launcher's command line is one the real CLI accepts: on a CPU the children get as far as the
    device check and fail there, and the error quotes their logs."""
    monkeypatch.chdir(ROOT)
    overrides = [f"backbone={tiny_bert}", f"output_dir={tmp_path / 'run'}", "n_folds=2"]
    launch = default_launcher("configs/uspppm.yaml", overrides, resume=True)  # --resume is a flag the CLI knows
    with pytest.raises(RuntimeError) as info:
        run_folds_parallel([0, 1], [0, 1], launch, tmp_path / "logs", poll=0.1)
    message = str(info.value)
    assert "fold(s) [0, 1] failed" in message and message.count("exit code 2") == 2
    assert message.count("no CUDA device is visible") == 2
    assert not (tmp_path / "run").exists()  # bad input writes nothing


def test_visible_gpus_counts_cuda_devices():
    assert visible_gpus() == list(range(torch.cuda.device_count()))
