"""Distillation: the teacher values each model may use (``teacher_oof``, read by `kagglekit.train.teacher_file`), the
fold rule that keeps validation labels out of the student's targets, and the loss that mixes the label loss with the
distance to the teacher.

The rule: a teacher value may serve student fold K only if the teacher model that made it never trained on a
row of fold K's validation set. With the teacher's folds equal to the student's (checked row by row), that is
teacher model K alone, on fold K's training rows: the rows ``kagglekit predict --per-fold`` writes with fold K.
An out-of-fold file has no such rows (its fold-K rows are fold K's validation rows), and a full fit trained on
every row, so both are refused for fold training; the full fit (no validation) takes either.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from kagglekit.losses import Loss, activate
from kagglekit.train.teacher_file import FULL_FOLD, PER_FOLD_COMMAND, TeacherFile, mean_values, per_id_mean, read_teacher_file

if TYPE_CHECKING:
    from kagglekit.config import Config

__all__ = ["Teachers", "FoldTeacher", "read_teachers", "distill_loss", "pack", "unpack"]

_WHAT = "teacher_oof"
_SHOWN = 5  # ids an error shows


class Teachers:
    """The run's teacher files checked against its rows and folds: the values each model of the run may distil from.

    Args:
        files: the `TeacherFile` of each ``teacher_oof`` entry (several are averaged: `mean_values`).
        frame: the run's rows with their folds (``id``, ``fold``).
        kind: the student's output (single, classes, bins).
        weight: ``distill_weight``; temperature: ``distill_temperature``.

    Example:
        >>> teachers = read_teachers(cfg, frame, target.kind, target.num_outputs, loss.activation, folds=[0, 1], full=False)
        >>> fold_teacher = teachers.for_rows(train_df, 0)  # teacher model 0's values on fold 0's training rows
    """

    def __init__(self, files: Sequence[TeacherFile], frame: pd.DataFrame, *, kind: str, weight: float, temperature: float):
        self.files, self.kind, self.weight, self.temperature = list(files), kind, weight, temperature
        self.ids = frame["id"].astype(str).to_numpy()
        self.folds = frame["fold"].to_numpy(dtype=np.int64)
        self._cache: dict = {}

    @property
    def digest(self) -> dict:
        """``{"rows", "sha256"}`` (`kagglekit.train.session.frame_digest`) of the fold models' values, those CV folds may use,
        for the run card: every CV fold of a run distils from the same values. A full fit's rows are left out: the file
        made again once the teacher's full fit exists keeps its digest."""
        from kagglekit.train.session import frame_digest

        parts = [pd.DataFrame(f.values[f.model != FULL_FOLD]).assign(id=f.ids[f.model != FULL_FOLD], fold=f.model[f.model != FULL_FOLD])
                 for f in self.files]
        return frame_digest(pd.concat(parts, ignore_index=True))

    def values(self, fold: int | None) -> pd.DataFrame:
        """The teacher values student model `fold` (None: the full fit) trains with: one row per training id (index),
        D columns; from teacher model `fold` alone for a CV fold. Raises naming the file, the ids and the fix."""
        if fold not in self._cache:
            needed = self.ids if fold is None else self.ids[self.folds != fold]
            tables = [self._file_values(f, fold, needed) for f in self.files]
            self._cache[fold] = pd.DataFrame(mean_values(tables, self.kind), index=pd.Index(needed, name="id"))
        return self._cache[fold]

    def _file_values(self, file: TeacherFile, fold: int | None, needed: np.ndarray) -> np.ndarray:
        """(len(needed), D): one file's values of the `needed` ids for student model `fold`."""
        if fold is None:  # the full fit validates nothing: a full fit's rows when the file has them, else every model's mean
            keep = file.model == FULL_FOLD if (file.model == FULL_FOLD).any() else np.ones(len(file.ids), dtype=bool)
            which = "its rows"
        else:
            self._check_fold_rule(file, fold)
            keep, which = file.model == fold, f"rows of teacher model {fold} (fold {fold})"
            if not keep.any():
                raise ValueError(f"{_WHAT}: {file.path} has no rows of teacher model {fold} (fold {fold}; it has "
                                 f"{sorted({int(m) for m in file.model})}): student fold {fold} may learn from that model alone. "
                                 f"Train the teacher run's fold {fold}, then make the file again: {PER_FOLD_COMMAND}.")
        found = per_id_mean(file.values[keep], file.ids[keep], self.kind).reindex(needed)
        missing = found.isna().any(axis=1).to_numpy()
        if missing.any():
            model = "the full fit" if fold is None else f"fold {fold}"
            raise ValueError(
                f"{_WHAT}: {file.path} has no value for {int(missing.sum())} of the {len(needed)} training row(s) of {model} among "
                f"{which}, e.g. ids {needed[missing][:_SHOWN].tolist()}: every row the student trains on needs one. Make the file "
                f"from the teacher run's fold models on this run's data (the same train_csv and max_rows): {PER_FOLD_COMMAND}.")
        return found.to_numpy(dtype=np.float64)

    def _check_fold_rule(self, file: TeacherFile, fold: int) -> None:
        """Refuse a file whose values for fold `fold` would carry fold `fold`'s validation labels (see the module's rule)."""
        if file.layout == "full":
            raise ValueError(
                f"{_WHAT}: {file.path} holds a full fit's predictions (fold 'full'/-1, or no fold column): that teacher trained on "
                f"every row, fold {fold}'s validation rows included, so their labels would leak into the student's targets in "
                f"every fold. Use it only for the full fit (--fold full), and give fold training the fold teachers' "
                f"predictions on their training rows: {PER_FOLD_COMMAND}.")
        if file.layout == "oof":
            raise ValueError(
                f"{_WHAT}: {file.path} is an out-of-fold file (one row per id, no row_fold column): its values for fold {fold}'s "
                f"training rows come from teacher models that trained on fold {fold}'s validation rows, whose labels would leak "
                f"into the student's targets (and it has no value for them from teacher model {fold}). Give the fold teachers' "
                f"predictions on their training rows instead: {PER_FOLD_COMMAND}.")
        own = pd.Series(file.row_fold, index=file.ids)
        own = own[~own.index.duplicated()].reindex(self.ids)
        wrong = own.notna().to_numpy() & (own.to_numpy() != FULL_FOLD) & (own.to_numpy() != self.folds)
        if wrong.any():
            at = int(np.flatnonzero(wrong)[0])
            raise ValueError(
                f"{_WHAT}: {file.path} column 'row_fold' disagrees with this run's folds for {int(wrong.sum())} id(s), e.g. id "
                f"{self.ids[at]!r}: fold {int(own.iloc[at])} in the teacher run, fold {int(self.folds[at])} here, so teacher model "
                f"{int(self.folds[at])} trained on a row that student fold {int(self.folds[at])} validates. Train the student with the "
                "teacher run's n_folds, fold_seed and data (the same train_csv and max_rows), or distil from a teacher trained on "
                "this run's folds.")

    def for_rows(self, rows: pd.DataFrame, fold: int | None, *, label: str = "") -> FoldTeacher:
        """The teacher target of each of a model's training rows (`kagglekit.data.rows.fold_rows`, in their order).

        A row of the run takes its own id's value; a swapped copy (``swap:<id>``) its source row's (a symmetric
        task: the same pair); closure rows (``aug:<n>``) and ``extra_train_csv`` rows (fold -1) have none and take
        the label loss alone (see `distill_loss`).
        """
        table = self.values(fold)
        ids = rows["id"].astype(str)
        source = ids.where(ids.isin(table.index), ids.str.slice(5).where(ids.str.startswith("swap:")))
        if "fold" in rows:
            source = source.where(rows["fold"].to_numpy() != FULL_FOLD)  # extra rows: never a row of the run
        found = table.reindex(source.to_numpy())
        mask = found.notna().all(axis=1).to_numpy()
        if not mask.all():
            print(f"{label or 'distill'}: {int(mask.sum())} of {len(rows)} training rows have a teacher value; the other "
                  f"{int((~mask).sum())} (closure or extra rows) take the label loss alone", flush=True)
        return FoldTeacher(found.fillna(0.0).to_numpy(dtype=np.float32), mask.astype(np.float32), self.kind, self.weight,
                           self.temperature)


def read_teachers(cfg: Config, frame: pd.DataFrame, kind: str, num_outputs: int, activation: str, *, folds: Sequence[int],
                  full: bool) -> Teachers | None:
    """The run's `Teachers`, checked for every model this call trains (CV `folds`, and the full fit when `full`) before
    anything is written; None without ``teacher_oof``. Teacher ids that are no rows of the run are ignored (said once)."""
    if not cfg.teacher_oof:
        return None
    labels = frame["label"].to_numpy(dtype=np.float64)
    files = [read_teacher_file(p, kind=kind, num_outputs=num_outputs, activation=activation, labels=labels) for p in cfg.teacher_oof]
    known = set(frame["id"].astype(str))
    for file in files:
        other = sorted(set(file.ids) - known)
        if other:
            print(f"kagglekit: {_WHAT}: {file.path}: {len(other)} id(s) are no rows of this run (e.g. {other[:3]}): ignored", flush=True)
    teachers = Teachers(files, frame, kind=kind, weight=cfg.distill_weight, temperature=cfg.distill_temperature)
    for fold in folds:
        teachers.values(fold)
    if full:
        teachers.values(None)
    return teachers


# --- the loss ---------------------------------------------------------------------------------------


def pack(targets: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The label targets (B,) or (B, C), the teacher's (B, D) and its mask (B,) side by side, (B, W + D + 1): one
    tensor in the batch's ``labels``, so the step, the adversary and multi-sample dropout pass them on unchanged."""
    rows = targets.shape[0]
    return torch.cat([targets.float().reshape(rows, -1), teacher.float().reshape(rows, -1), mask.float().reshape(rows, 1)], dim=1)


def unpack(packed: torch.Tensor, width: int, single: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`pack` undone: (targets (B,) or (B, C), teacher (B, D), mask (B,)); `width` is D."""
    targets = packed[:, :-width - 1]
    return (targets[:, 0] if single else targets), packed[:, -width - 1:-1], packed[:, -1]


def _weighted_mean(per_row: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    return (per_row * weights).mean()


def _score_distance(logits: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, *, activation: str) -> torch.Tensor:
    """Mean of w_i (prediction_i - teacher_i)², both in the label's space (the loss's activation: sigmoid for bce)."""
    return _weighted_mean((activate(logits, activation) - teacher[:, 0].float()) ** 2, weights)


def _class_distance(logits: torch.Tensor, teacher: torch.Tensor, weights: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Mean of w_i T² KL(softmax(teacher_i / T) || softmax(logits_i / T)): the T² keeps the gradient's size as T grows."""
    student = F.log_softmax(logits.float() / temperature, dim=-1)
    target = F.log_softmax(teacher.float() / temperature, dim=-1)
    per_row = F.kl_div(student, target, reduction="none", log_target=True).sum(-1) * temperature**2
    return _weighted_mean(per_row, weights)


def _mixed(label_fn, distance, weight: float, width: int, single: bool, logits: torch.Tensor, packed: torch.Tensor,
           weights: torch.Tensor | None = None) -> torch.Tensor:
    targets, teacher, has = unpack(packed, width, single)
    rows = torch.ones_like(has) if weights is None else weights.float().reshape(-1)
    total = weight * distance(logits, teacher, rows * has)
    if weight < 1:
        total = total + (1 - weight) * label_fn(logits, targets, weights)
    if bool((has < 1).any()):  # rows with no teacher value: their label loss takes the teacher's share too
        total = total + weight * label_fn(logits, targets, rows * (1 - has))
    return total


def distill_loss(loss: Loss, *, kind: str, width: int, weight: float, temperature: float = 1.0) -> Loss:
    """`loss` mixed with the distance to the teacher: (1 - weight) · loss + weight · distance, on packed targets (`pack`).

    The distance is the MSE between the prediction (``loss.activation`` of the logits) and the teacher's value
    for a single score, and T² · KL(softmax(teacher / T) || softmax(logits / T)) for classes and bins. Rows
    without a teacher value (mask 0) take ``loss`` alone, at full weight; row weights (extra rows) weigh both.

    Example:
        >>> mixed = distill_loss(get_loss("bce"), kind="single", width=1, weight=0.5)
        >>> mixed.fn(logits, pack(labels, teacher, torch.ones(len(labels))))
    """
    single = kind == "single"
    distance = (partial(_score_distance, activation=loss.activation) if single else partial(_class_distance, temperature=temperature))
    name = f"{1 - weight:g}*({loss.name})+{weight:g}*distill" if weight < 1 else "distill"
    return Loss(name, partial(_mixed, loss.fn, distance, weight, width, single), loss.activation, loss.outputs)


@dataclass
class FoldTeacher:
    """One model's teacher targets, a row per training row, and the loss that reads them.

    Args:
        values: (N, D) the teacher's value of each training row (0 where it has none).
        mask: (N,) 1 where a row has a teacher value.
        kind, weight, temperature: as `Teachers` has them.
    """

    values: np.ndarray
    mask: np.ndarray
    kind: str
    weight: float
    temperature: float

    def wrap(self, loss: Loss) -> Loss:
        """The model's label `loss` mixed with the distance to the teacher (`distill_loss`)."""
        return distill_loss(loss, kind=self.kind, width=self.values.shape[1], weight=self.weight, temperature=self.temperature)

    def pack(self, targets: torch.Tensor, rows) -> torch.Tensor:
        """A batch's encoded label targets with the teacher targets of its `rows` (indices into the training rows)."""
        rows = np.asarray(rows)
        return pack(targets, torch.from_numpy(self.values[rows]), torch.from_numpy(self.mask[rows]))
