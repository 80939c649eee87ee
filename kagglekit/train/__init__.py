"""Training: the run orchestrator (`train_folds`), the per-fold loop, and runs that span sessions (`continue_run`)."""

from kagglekit.train.runner import train_folds
from kagglekit.train.session import continue_run

__all__ = ["continue_run", "train_folds"]
