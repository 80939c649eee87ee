"""Training: the run orchestrator (`train_folds`) and the per-fold loop."""

from kagglekit.train.runner import train_folds

__all__ = ["train_folds"]
