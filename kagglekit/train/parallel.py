"""Train several folds at once, one process per GPU (Kaggle's T4×2), each with its own log.

A work queue: every free GPU starts the next fold in a child ``kagglekit train --fold K`` that sees
only that GPU (``CUDA_VISIBLE_DEVICES``); a GPU that finishes takes the next fold. One failed fold
does not stop the others; the failures are reported together at the end, with their log tails.

The children write into the same run folder at the same time. Each writes its own ``fold{K}/`` (and
resume state); the shared files (``oof.csv``, ``run.json``) are read-modify-written by the runner,
which must hold the run folder's lock while it does so. ``config.yaml`` and ``folds.csv`` should be
written by the parent before the children start, so that no two children create them at once.

Under a time budget the parent hands its deadline to each child (``KAGGLEKIT_DEADLINE``, epoch
seconds), so every fold stops by the parent's clock, and starts no child with less than
`kagglekit.train.session.MIN_MARGIN_S` left.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Callable, Sequence

from kagglekit.kaggle import visible_gpus  # the runner asks here; predict asks kagglekit.kaggle

from kagglekit.train import session

Launch = Callable[[int, int, Path], subprocess.Popen]

_TAIL_LINES = 20  # log lines of a failed fold quoted in the error


class FoldsFailed(RuntimeError):
    """One or more fold processes exited with an error; the message names them and quotes their logs."""


def plan(folds: Sequence[int], devices: Sequence[int]) -> list[list[int]]:
    """Which folds each device trains if all folds take equally long: round-robin in fold order.

    For the record (the log and the run card); the actual schedule is the queue of
    `run_folds_parallel`, where a device that finishes early takes the next fold.

    Example:
        >>> plan([0, 1, 2, 3, 4], [0, 1])
        [[0, 2, 4], [1, 3]]
    """
    folds, devices = _check(folds, devices)
    return [folds[i :: len(devices)] for i in range(len(devices))]


def run_folds_parallel(
    folds: Sequence[int], devices: Sequence[int], launch: Launch, log_dir: str | os.PathLike, poll: float = 0.5,
    deadline: float | None = None,
) -> dict[int, int]:
    """Train `folds` on `devices`, one child process per device at a time; returns {fold: exit code} of
    the folds started (all of them, unless a deadline leaves some unstarted).

    Args:
        folds: fold numbers, started in this order.
        devices: GPU indices as this process sees them (`visible_gpus`); one child runs on each at a time.
        launch: ``launch(fold, device, log_path) -> Popen`` starts one fold (`default_launcher` makes one);
            it must send the child's output to ``log_path``.
        log_dir: where ``fold{K}.log`` files go (created).
        poll: seconds between checks on the running children.
        deadline: epoch seconds (`kagglekit.train.session.now`) after which no fold is started
            (``MIN_MARGIN_S`` before it); the launch must hand it to the child (`default_launcher` does).

    Raises:
        RuntimeError: after every fold has ended, when some exited non-zero; names each failed fold,
            its exit code and log file, with the log's last lines.
        KeyboardInterrupt: re-raised after the running children are terminated.

    Example:
        >>> codes = run_folds_parallel([0, 1, 2, 3, 4], visible_gpus(), default_launcher("cfg.yaml", []), Path("runs/x/logs"))
    """
    folds, devices = _check(folds, devices)
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    queue, free = deque(folds), deque(devices)
    running: dict[int, tuple[int, subprocess.Popen, float]] = {}  # device -> (fold, process, start time)
    codes: dict[int, int] = {}
    print(f"kagglekit: folds {folds} on GPUs {devices}, one fold per GPU at a time; logs in {log_dir}", flush=True)
    try:
        while queue or running:
            if queue and deadline is not None and deadline - session.now() < session.MIN_MARGIN_S:
                print(f"kagglekit: time_budget: fold(s) {list(queue)} not started, too little time left", flush=True)
                queue.clear()
            while queue and free:
                fold, device = queue.popleft(), free.popleft()
                log_path = log_dir / f"fold{fold}.log"
                running[device] = (fold, launch(fold, device, log_path), time.monotonic())
                print(f"kagglekit: fold {fold} started on GPU {device} (log: {log_path})", flush=True)
            ended = [device for device, (_, process, _) in running.items() if process.poll() is not None]
            for device in ended:
                fold, process, start = running.pop(device)
                codes[fold] = process.returncode
                free.append(device)
                status = "done" if process.returncode == 0 else f"FAILED ({_describe_code(process.returncode)})"
                print(f"kagglekit: fold {fold} on GPU {device} {status} after {time.monotonic() - start:.0f} s", flush=True)
            if not ended:
                time.sleep(poll)
    except BaseException:  # Ctrl-C (KeyboardInterrupt) or any error here: leave no orphan training a fold
        _terminate([process for _, process, _ in running.values()])
        raise
    failed = [fold for fold in folds if fold in codes and codes[fold] != 0]
    if failed:
        raise FoldsFailed(f"fold(s) {failed} failed; the other folds ran to the end.\n" + "\n".join(
            _failure_report(fold, codes[fold], log_dir / f"fold{fold}.log") for fold in failed
        ))
    return {fold: codes[fold] for fold in folds if fold in codes}


def default_launcher(config_path: str | os.PathLike | None, overrides: Sequence[str], *, resume: bool = False,
                     deadline: float | None = None) -> Launch:
    """A `launch` callable that runs ``python -m kagglekit train --fold K`` on one GPU.

    The child sees only its GPU (``CUDA_VISIBLE_DEVICES``, mapped through this process's own value
    when it has one), trains with ``device=cuda``, and writes stdout and stderr to the log (appended
    when `resume`, so the interrupted attempt's log stays).

    Args:
        config_path: the YAML given to ``--config``; None for none.
        overrides: ``key=value`` strings as given to ``--set``, passed on after ``device=cuda``.
        resume: pass ``--resume`` to each child (continue a fold from its saved state).
        deadline: the parent's time-budget deadline (epoch seconds), passed as ``KAGGLEKIT_DEADLINE``:
            the child stops its fold by the parent's clock (`kagglekit.train.session.Budget.start`).
    """
    overrides = list(overrides)  # a copy: later changes to the caller's list do not leak in

    def launch(fold: int, device: int, log_path: Path) -> subprocess.Popen:
        command = [sys.executable, "-m", "kagglekit", "train"]
        if config_path is not None:
            command += ["--config", str(config_path)]
        command += ["--fold", str(fold), "--set", "device=cuda"]
        for item in overrides:
            command += ["--set", item]
        if resume:
            command.append("--resume")
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": _physical_id(device), "PYTHONUNBUFFERED": "1"}
        if deadline is not None:
            env[session.DEADLINE_ENV] = repr(float(deadline))
        with open(log_path, "a" if resume else "w", encoding="utf-8") as log:  # the child keeps its own handle
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)

    return launch


def _check(folds: Sequence[int], devices: Sequence[int]) -> tuple[list[int], list[int]]:
    folds, devices = [int(f) for f in folds], [int(d) for d in devices]
    if not devices:
        raise ValueError("devices is empty: pass the GPU indices to use, e.g. visible_gpus(); with no GPU train in-process.")
    for name, values in (("folds", folds), ("devices", devices)):
        if len(set(values)) != len(values):
            raise ValueError(f"{name} must not repeat an entry, got {name}={values}.")
    return folds, devices


def _physical_id(device: int) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry for a child that must use this process's GPU `device`.

    With ``CUDA_VISIBLE_DEVICES=2,3`` here, GPU 0 of this process is the machine's GPU 2.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    if not visible:
        return str(device)
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if not 0 <= device < len(entries):
        raise ValueError(f"device {device} is not visible: CUDA_VISIBLE_DEVICES={visible!r} gives devices 0..{len(entries) - 1}.")
    return entries[device]


def _terminate(processes: list[subprocess.Popen], grace: float = 10.0) -> None:
    """Ask each child to stop (SIGTERM), wait up to `grace` seconds in all, then kill what is left."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + grace
    for process in processes:
        try:
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _describe_code(code: int) -> str:
    return f"killed by signal {-code}" if code < 0 else f"exit code {code}"


def _failure_report(fold: int, code: int, log_path: Path) -> str:
    try:
        lines = log_path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError as err:
        lines = [f"(log not readable: {err})"]
    tail = [line for line in lines if line.strip()][-_TAIL_LINES:]
    return f"fold {fold}: {_describe_code(code)}; log {log_path}, last lines:\n" + "\n".join(f"    {line}" for line in tail)
