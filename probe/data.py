"""What a task trains on: one track's pooled features (or frame reader), labels and split rows."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from avsuperb import schemas as S
from avsuperb.probe.config import TrainConfig
from avsuperb.probe.tasks.base import TaskError
from avsuperb.store.reader import StoreReader
from avsuperb.store.table import ClipTable, LabelColumn

log = logging.getLogger(__name__)


@dataclass
class TaskData:
    reader: StoreReader
    track: str
    table: ClipTable
    label: LabelColumn
    rows: dict[str, np.ndarray]  # train / dev / test row indices into the store
    dev_carved: bool
    device: str = "cpu"

    def pooled(self) -> np.ndarray:
        """[N, L, D] float32 of this track (only this array is read)."""
        return np.ascontiguousarray(self.reader.pooled(self.track), dtype=np.float32)


def labelled(label: LabelColumn) -> np.ndarray:
    """Rows that carry this label."""
    v = label.values
    if label.kind == "class":
        return v >= 0
    if label.kind == "multi":
        return np.ones(len(v), dtype=bool)
    return np.array([bool(str(t).strip()) for t in v])


def split_rows(table: ClipTable, label: LabelColumn, usable: np.ndarray, cfg: TrainConfig) -> tuple[dict[str, np.ndarray], bool]:
    """train/dev/test rows; carves a seeded dev set out of train (stratified for class labels) if there is none."""
    splits = np.asarray(table.splits)
    rows = {s: np.flatnonzero((splits == s) & usable) for s in S.SPLITS}
    carved = False
    if len(rows["dev"]) == 0 and len(rows["train"]) > 1:
        rows["train"], rows["dev"] = carve_dev(rows["train"], label, cfg.dev_fraction, cfg.seed)
        carved = True
        log.info("no dev split: carved %d dev clips out of train (seed %d)", len(rows["dev"]), cfg.seed)
    for s in S.SPLITS:
        if len(rows[s]) == 0:
            raise TaskError(f"no usable {s} clips for this task")
    return rows, carved


def carve_dev(train: np.ndarray, label: LabelColumn, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    stratify = None
    if label.kind == "class":
        y = label.values[train]
        counts = np.bincount(y)
        if counts[counts > 0].min() >= 2 and int(round(fraction * len(train))) >= (counts > 0).sum():
            stratify = y
    tr, dv = train_test_split(train, test_size=fraction, random_state=seed, stratify=stratify)
    return np.sort(tr), np.sort(dv)
