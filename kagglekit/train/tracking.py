"""Optional experiment tracking: each model's steps, evaluations and final score in Weights & Biases.

``wandb=off`` (the default) imports nothing and every call does nothing. ``offline`` writes each run
under ``<output_dir>/wandb`` (Kaggle sessions have no internet: ``wandb sync`` them later), ``online``
sends them. The tracker only reads what the loop already computed, so results are the same either way.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

from kagglekit.config import Config
from kagglekit.train.session import TimeBudgetReached


class ModelLog:
    """One model's W&B run (a fold's seed, or a full fit); with `run` None each call does nothing.

    Args:
        run: the object ``wandb.init`` returned, or None (tracking off).

    Example:
        >>> log.step({"step": 1, "epoch": 0.25, "loss": 0.71, "lr": 2e-5})   # a step log row
        >>> log.evaluation(step=4, score=0.81)
    """

    def __init__(self, run=None):
        self.run = run

    def step(self, row: dict) -> None:
        """An optimizer step, as the step log has it (`kagglekit.train.curves.LOG_COLUMNS`): loss, lr and epoch at its step."""
        if self.run is not None:
            self.run.log({"loss": row["loss"], "lr": row["lr"], "epoch": row["epoch"]}, step=row["step"])

    def evaluation(self, step: int, score: float) -> None:
        """A validation score, at the step the step log records it on."""
        if self.run is not None:
            self.run.log({"score": score}, step=step)

    def summary(self, **values) -> None:
        """The model's final values (best score, best epoch; a full fit's epochs) in the run's summary."""
        if self.run is not None:
            self.run.summary.update(values)


class Tracker:
    """Opens one W&B run per model a training call trains; with ``wandb=off`` it does nothing.

    Each run is named ``<run folder>-<model folder>`` (``runs/x`` → ``x-fold0``, ``x-fold0-seed43``,
    ``x-full``), grouped by the run folder's name, with the whole config as its config; it is
    finished when the model ends, with exit code 1 when training raised.

    Args:
        cfg: the run configuration (``wandb``, ``wandb_project``, ``output_dir``).
        wandb: the imported ``wandb`` module; None when tracking is off.

    Example:
        >>> tracker = Tracker.create(cfg)           # before anything is written: a missing wandb fails here
        >>> with tracker.model_run("fold0") as log:
        ...     result = train_fold(cfg, frame, plan, ..., log=log)
    """

    def __init__(self, cfg: Config, wandb=None):
        self.cfg, self.wandb = cfg, wandb

    @classmethod
    def create(cls, cfg: Config) -> "Tracker":
        """The tracker `cfg` asks for; imports ``wandb`` only when ``cfg.wandb`` is offline or online.

        Raises:
            ValueError: wandb is asked for but not installed.
        """
        if cfg.wandb == "off":
            return cls(cfg)
        try:
            import wandb
        except ImportError:
            raise ValueError(f"wandb={cfg.wandb}: the wandb package is not installed. Install it (pip install wandb) or set "
                             "wandb=off; training does not need it.") from None
        return cls(cfg, wandb)

    @property
    def active(self) -> bool:
        return self.wandb is not None

    @contextlib.contextmanager
    def model_run(self, folder_name: str) -> Iterator[ModelLog]:
        """A W&B run for the model folder `folder_name` (``fold0``, ``full-seed43`` ...), finished when the block
        ends: exit code 0 when it ends or a time budget stops it (``stopped`` in its summary), 1 on any error."""
        if not self.active:
            yield ModelLog()
            return
        out = Path(self.cfg.output_dir)
        group = out.resolve().name
        run = self.wandb.init(project=self.cfg.wandb_project, name=f"{group}-{folder_name}", group=group,
                              config=self.cfg.to_dict(), mode=self.cfg.wandb, dir=os.fspath(out))
        log = ModelLog(run)
        try:
            yield log
        except TimeBudgetReached:
            log.summary(stopped="time_budget")
            run.finish(exit_code=0)
            raise
        except BaseException:
            run.finish(exit_code=1)
            raise
        run.finish(exit_code=0)
