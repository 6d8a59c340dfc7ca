"""The clip table: ids, splits, durations and encoded labels, as both stages see it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from avsuperb.schemas import LABEL_KINDS


@dataclass(frozen=True)
class LabelColumn:
    """One label of every clip: class index (-1 = none), multi-hot rows, or text."""

    kind: str
    values: np.ndarray
    classes: tuple[str, ...] = ()
    carried_by: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in LABEL_KINDS:
            raise ValueError(f"label kind {self.kind!r} is not one of {', '.join(LABEL_KINDS)}")

    def spec(self) -> dict:
        out: dict = {"kind": self.kind}
        if self.kind != "text":
            out["classes"] = list(self.classes)
        if self.carried_by:
            out["carried_by"] = self.carried_by
        return out

    @staticmethod
    def encode(kind: str, raw: list, classes: tuple[str, ...] = (), carried_by: str | None = None) -> LabelColumn:
        """Encode raw labels (class names, lists of class names, or strings) as a column."""
        index = {name: i for i, name in enumerate(classes)}
        if kind == "class":
            values = np.array([-1 if r is None else index[r] for r in raw], dtype=np.int64)
        elif kind == "multi":
            values = np.zeros((len(raw), len(classes)), dtype=np.uint8)
            for row, names in enumerate(raw):
                values[row, [index[n] for n in names or ()]] = 1
        else:
            values = np.array(["" if r is None else str(r) for r in raw], dtype=object)
        return LabelColumn(kind, values, tuple(classes), carried_by)


@dataclass
class ClipTable:
    ids: list[str]
    splits: list[str]
    durations: np.ndarray
    labels: dict[str, LabelColumn] = field(default_factory=dict)
    trials: np.ndarray | None = None  # [M, 3]: row of clip a, row of clip b, target 1 / 0

    def __len__(self) -> int:
        return len(self.ids)

    def split_rows(self, split: str) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.splits) == split)
