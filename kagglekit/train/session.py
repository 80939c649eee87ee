"""A run across sessions: the time budget of one session, and a run carried into the next.

A Kaggle session ends at 12 h (9 h in a code competition's rerun). `Budget` stops training in time
to save each fold's state into the run folder; `continue_run` copies that folder from the previous
version's output (attached read-only) into this session's output, to train on from there; the run's
identity (`kagglekit.run.run_identity`) tells one run from another wherever its folder lies; `FoldClaims` keeps two
processes from training the same fold of one run folder at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

if TYPE_CHECKING:
    import pandas as pd

DEADLINE_ENV = "KAGGLEKIT_DEADLINE"  # the parent's deadline (epoch seconds), handed to one-fold-per-GPU children
MIN_MARGIN_S = 30.0  # never plan to stop closer to the deadline than this
STEP_FACTOR = 2.0  # the longest stretch between two checks, counted twice: the next one may be as long, plus slack
SAVE_FACTOR = 1.5  # the longest timed save, with room for a slower disk (scratch vs the output folder)
WRITE_BYTES_PER_S = 100e6  # assumed before any save was timed (deberta-v3-large's ~5 GB: ~50 s)
OWNER_SUFFIX = ".owner"  # <model folder name>.owner in the run folder: the process training that fold


def now() -> float:
    """The clock budgets run on: wall-clock epoch seconds, the same in every process (tests replace it)."""
    return time.time()


def format_duration(seconds: float) -> str:
    """``41400`` -> ``"11h30m"``, ``95`` -> ``"1m35s"``, ``20`` -> ``"20s"`` (as `parse_duration` reads it back)."""
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs or not seconds else ""]
    return "".join(parts)


class TimeBudgetReached(Exception):
    """A model (a fold's seed, or a full fit: `fold` None) stopped because the time budget ran out; its state
    is saved at `path` (in the run folder)."""

    def __init__(self, fold: int | None, epoch: int, step: int, path: Path):
        what = "full fit" if fold is None else f"fold {fold}"
        super().__init__(f"{what}: time_budget reached at epoch {epoch + 1}, step {step}; state saved in {path}")
        self.fold, self.epoch, self.step, self.path = fold, epoch, step, path


@dataclass
class Budget:
    """The time a session has left, and the margin a fold keeps to save its state before the end.

    The margin is ``max(MIN_MARGIN_S, STEP_FACTOR * longest_stretch + save)``: the longest stretch
    between two checks (an optimizer step, plus the evaluation or checkpoint done there) counted
    twice, plus the time to save the state, ``SAVE_FACTOR`` times the longest save timed so far, or
    before any save the state's size at ``WRITE_BYTES_PER_S``. A fold checks at every optimizer step;
    a fold does not start with less than the margin left.

    Args:
        deadline: when to have stopped, in `now` seconds; None: no limit.
        seconds: the budget as configured (``time_budget``), for messages.

    Example:
        >>> budget = Budget.start(cfg.time_budget)    # at the start of train_folds
        >>> budget.mark()                              # before a fold's first step
        >>> if budget.should_stop(): ...               # at each optimizer step: save the state and stop
    """

    deadline: float | None = None
    seconds: float = 0.0
    longest_stretch: float = 0.0
    longest_save: float = 0.0
    state_bytes: int = 0  # the resume state's size, estimated by the fold before its first save
    _last: float | None = field(default=None, repr=False)

    @classmethod
    def start(cls, time_budget: float, environ: Mapping[str, str] = os.environ) -> "Budget":
        """`time_budget` seconds from now (0: no limit), cut to an inherited ``KAGGLEKIT_DEADLINE``
        when a parent process set one (the children of one fold per GPU share the parent's clock)."""
        deadlines = [now() + time_budget] if time_budget > 0 else []
        inherited = environ.get(DEADLINE_ENV, "").strip()
        if inherited:
            try:
                deadlines.append(float(inherited))
            except ValueError:
                raise ValueError(f"{DEADLINE_ENV}={inherited!r}: expected epoch seconds, as kagglekit's parent process "
                                 "sets it for one fold per GPU; unset the variable.") from None
        return cls(min(deadlines) if deadlines else None, seconds=time_budget)

    @property
    def limited(self) -> bool:
        return self.deadline is not None

    def left(self) -> float:
        """Seconds until the deadline (infinite without one; negative once past)."""
        return float("inf") if self.deadline is None else self.deadline - now()

    def margin(self) -> float:
        save = SAVE_FACTOR * self.longest_save if self.longest_save else self.state_bytes / WRITE_BYTES_PER_S
        return max(MIN_MARGIN_S, STEP_FACTOR * self.longest_stretch + save)

    def can_start(self) -> bool:
        """Whether a fold may start: at least the margin is left (always, without a deadline)."""
        return self.left() >= self.margin()

    def mark(self) -> None:
        """Start timing a stretch: call before a fold's first step (its setup is not a step)."""
        self._last = now()

    def should_stop(self) -> bool:
        """Call at each optimizer step boundary: records the stretch since the last call (or `mark`);
        True when less than the margin is left."""
        moment = now()
        if self._last is not None:
            self.longest_stretch = max(self.longest_stretch, moment - self._last)
        self._last = moment
        return self.deadline is not None and self.deadline - moment < self.margin()

    @contextlib.contextmanager
    def timing_save(self) -> Iterator[None]:
        """Time a state save: the longest one sets the save part of the margin."""
        begin = now()
        yield
        self.longest_save = max(self.longest_save, now() - begin)


# --- a run's identity -----------------------------------------------------------------------------


def frame_digest(frame: "pd.DataFrame") -> dict:
    """``{"rows", "sha256"}`` of a data frame's contents (the normalized training rows), for the run card:
    a moved run pointed at another file with the same settings is caught by it."""
    text = frame.to_csv(index=False, lineterminator="\n")
    return {"rows": int(len(frame)), "sha256": hashlib.sha256(text.encode()).hexdigest()[:16]}


def stored_run_id(folder: str | os.PathLike) -> str:
    """A run folder's id (`kagglekit.run.run_id`); an error when it has neither a card's id nor config.yaml and folds.csv."""
    from kagglekit.run import RunFolder, run_id

    RunFolder(folder).read_card(what="continue_run")  # a folder with no run.json: say so first
    found = run_id(folder)
    if found is None:
        raise FileNotFoundError(f"{folder} lacks config.yaml or folds.csv: it is not a complete kagglekit run folder.")
    return found


# --- who trains which fold right now ------------------------------------------------------------


class FoldClaims:
    """This process's claim on the folds it trains in a run folder, so that a second process asked for
    the same fold is refused instead of writing ``fold{K}/`` at the same time.

    Each fold (``fold{K}``, or ``full`` for the full fit) gets ``<run>/fold{K}.owner``, locked (flock)
    for as long as this process trains and naming it (pid, host, start). The operating system drops a
    lock when its process ends, however it ends: a marker left by a killed process, or copied from
    another session, is unlocked and taken over with a warning. `acquire` and `release` run under the
    run folder's lock (`RunFolder.lock`), so a claim and the run's settings check are one step.

    Args:
        run_dir: the run folder.
        names: the model folder names claimed (``fold0``, ``full`` ...); none for a parent whose children
            (one fold per GPU) claim their own.

    Example:
        >>> claims = FoldClaims(run.path, ["fold0"])
        >>> with run.lock():
        ...     claims.acquire()          # ValueError when another process trains fold 0
        >>> ...                           # train fold 0
        >>> with run.lock():
        ...     claims.release()
    """

    def __init__(self, run_dir: str | os.PathLike, names: list[str]):
        self.paths = [Path(run_dir) / f"{name}{OWNER_SUFFIX}" for name in names]
        self._held: list = []  # (path, open handle holding the flock)

    def acquire(self) -> None:
        """Claim every fold, or none: a fold another live process holds raises. Hold the run folder's lock.

        Raises:
            ValueError: a fold is being trained by another process (named with its pid and host).
        """
        import fcntl

        for path in self.paths:
            handle = open(path, "a+", encoding="utf-8")  # the marker's text says who; its flock says whether alive
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                owner = _describe_owner(handle.read())
                handle.close()
                self.release()
                name = path.name[: -len(OWNER_SUFFIX)]
                raise ValueError(
                    f"{name}/ of run {path.parent} is being trained by another process ({owner}; its claim: {path}): two "
                    f"processes writing one fold would mix their models. Wait for it to end, or train another fold "
                    "(--fold K) or into another output_dir."
                ) from None
            handle.seek(0)
            earlier = handle.read()
            if earlier.strip():
                warnings.warn(f"{path}: taking over the claim of {_describe_owner(earlier)}, which ended without releasing it "
                              "(killed, or a run folder copied from another session).", stacklevel=2)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}))
            handle.flush()
            self._held.append((path, handle))

    def release(self) -> None:
        """Remove the markers and drop their locks (removed first, while still locked and under the run
        folder's lock, so no other process can lock a marker that is going away). Hold the run folder's lock."""
        for path, handle in self._held:
            path.unlink(missing_ok=True)
            handle.close()
        self._held = []


def _describe_owner(text: str) -> str:
    """``pid 123 on host h since 2024-05-01 12:00:00`` from a marker's text; what it holds when unreadable."""
    try:
        owner = json.loads(text)
        return f"pid {owner['pid']} on host {owner['host']} since {owner['since']}"
    except (json.JSONDecodeError, KeyError, TypeError):
        return f"an unknown process (marker text {text[:80]!r})"


# --- carrying a run into the next session ---------------------------------------------------------


def continue_run(source: str | os.PathLike, output_dir: str | os.PathLike) -> Path:
    """Copy a previous session's run folder into `output_dir`, to train on from there.

    The notebook's ``RESUME_FROM``: the previous version's output is attached read-only; its run
    folder (with ``resume/`` holding the state of a fold a time budget stopped) is copied to a hidden
    sibling of `output_dir` and renamed into place, so an interruption leaves either no `output_dir`
    or a complete one. Then ``train_folds(cfg, folds, resume=True)`` with ``output_dir`` in `cfg`
    skips the complete folds and continues the stopped one.

    An `output_dir` that already holds the same run (same `run_id`) with every fold complete in
    `source` complete there too is kept as it is: it is this session's continuation, as far as
    `source` or further (re-running the notebook cell loses nothing). Any other non-empty
    `output_dir` is refused. Files are copied without their permissions (an input is read-only);
    temporary files of an interrupted write (``.*.tmp``, ``.*.old``) and fold claims (``*.owner``) are left behind.

    Args:
        source: the previous run folder (with ``run.json``), e.g. ``/kaggle/input/<notebook>/run``.
        output_dir: where this session trains, e.g. ``/kaggle/working/run``.

    Returns:
        `output_dir` as a Path.

    Raises:
        FileNotFoundError: `source` is no run folder (run folders found inside it are named).
        ValueError: `output_dir` holds another run, a run behind `source`, or files that are no run;
            or one folder lies inside the other.

    Example:
        >>> out = continue_run("/kaggle/input/my-train-notebook/run", "/kaggle/working/run")
        >>> card = train_folds(load_config(CONFIG, [f"output_dir={out}"]), "all", resume=True)
    """
    from kagglekit._io import atomic_dir
    from kagglekit.run import CARD_FILE, RunFolder

    source, out = Path(source), Path(output_dir)
    if not (source / CARD_FILE).is_file():
        found = sorted(str(p.parent) for p in source.glob(f"*/{CARD_FILE}")) if source.is_dir() else []
        hint = f"; run folders inside it: {found}" if found else ""
        raise FileNotFoundError(f"continue_run: {source} is not a kagglekit run folder (no {CARD_FILE}){hint}. Pass the "
                                "folder that holds run.json, config.yaml and fold*/ in the previous version's output.")
    a, b = source.resolve(), out.resolve()
    if a != b and (a in b.parents or b in a.parents):
        raise ValueError(f"continue_run: output_dir {out} and the source {source} lie one inside the other; "
                         "use separate folders.")
    source_id = stored_run_id(source)
    if out.is_dir() and any(out.iterdir()):
        if not (out / CARD_FILE).is_file():
            raise ValueError(f"continue_run: output_dir {out} holds files but no kagglekit run ({CARD_FILE}): use an empty "
                             "or new output_dir, or delete it.")
        out_id = stored_run_id(out)
        if out_id != source_id:
            raise ValueError(f"continue_run: output_dir {out} already holds another run (run_id {out_id}) than {source} "
                             f"(run_id {source_id}). Use another output_dir, or delete {out} to continue {source}.")
        behind = sorted(set(RunFolder(source).read_card().get("folds", {})) - set(RunFolder(out).read_card().get("folds", {})), key=int)
        if behind:
            raise ValueError(f"continue_run: output_dir {out} holds run {out_id} but lacks fold(s) {[int(f) for f in behind]} "
                             f"that are complete in {source}: it is behind. Delete {out} to copy {source} again.")
        print(f"kagglekit: {out} already holds run {out_id}, as far as {source} or further: kept as it is", flush=True)
        return out
    if out.exists() and not out.is_dir():
        raise ValueError(f"continue_run: output_dir {out} is a file; pass a folder path.")
    with atomic_dir(out) as tmp:
        copied = _copy_files(source, tmp)
    print(f"kagglekit: copied run {source_id} from {source} to {out} ({copied} files)", flush=True)
    return out


def _copy_files(source: Path, dest: Path) -> int:
    """Copy the files under `source` into `dest` (contents only: new files get this process's permissions)."""
    count = 0
    for folder, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not _leftover(d))
        target = dest / Path(folder).relative_to(source)
        target.mkdir(parents=True, exist_ok=True)
        for name in sorted(files):
            if not _leftover(name):
                shutil.copyfile(Path(folder) / name, target / name)
                count += 1
    return count


def _leftover(name: str) -> bool:
    """A temporary file or folder of an interrupted atomic write (`kagglekit._io`), or a fold claim of a
    process of the previous session (`FoldClaims`)."""
    return name.startswith(".") and name.endswith((".tmp", ".old")) or name.endswith(OWNER_SUFFIX)
