"""The dataset adapter interface and its registry: official files in, a clip table out."""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from avsuperb.store.table import ClipTable, LabelColumn


class DatasetError(Exception):
    """A dataset that cannot be read as asked (missing root, broken metadata)."""


@dataclass(frozen=True)
class Clip:
    id: str
    path: Path
    split: str
    duration: float  # seconds decoded from `start`
    labels: dict[str, Any]
    start: float = 0.0


@dataclass(frozen=True)
class LabelSpec:
    kind: str  # class | multi | text
    classes: tuple[str, ...] = ()
    carried_by: str | None = None


@dataclass
class DatasetIndex:
    clips: list[Clip]
    labels: dict[str, LabelSpec]
    trials: list[tuple[str, str, int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """sha256 of everything the store depends on: ids, paths, ranges, splits, labels, trials."""
        doc = {
            "clips": [[c.id, str(c.path), c.start, c.duration, c.split, c.labels] for c in self.clips],
            "labels": {k: [v.kind, list(v.classes)] for k, v in self.labels.items()},
            "trials": self.trials,
        }
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def table(self) -> ClipTable:
        cols = {
            name: LabelColumn.encode(spec.kind, [c.labels.get(name) for c in self.clips], spec.classes, spec.carried_by)
            for name, spec in self.labels.items()
        }
        trials = None
        if self.trials is not None:
            row = {c.id: i for i, c in enumerate(self.clips)}
            trials = np.array([[row[a], row[b], int(t)] for a, b, t in self.trials], dtype=np.int64).reshape(-1, 3)
        return ClipTable(
            ids=[c.id for c in self.clips],
            splits=[c.split for c in self.clips],
            durations=np.array([c.duration for c in self.clips], dtype=np.float64),
            labels=cols,
            trials=trials,
        )


class Dataset(ABC):
    """Turns a dataset's files under `root` into a DatasetIndex."""

    name: ClassVar[str]
    description: ClassVar[str] = ""
    tasks: ClassVar[tuple[str, ...]] = ()  # probing tasks its labels serve
    layout: ClassVar[str] = ""  # the files expected under --root, for --list-datasets
    # True where the reference decodes a missing audio/video stream as silence/black frames
    # (the clips are listed in DatasetIndex.extra["no_audio"] / ["no_video"])
    fills_missing_streams: ClassVar[bool] = False

    def __init__(self, root: Path | None) -> None:
        self.root = self.resolve_root(root)

    def resolve_root(self, root: Path | None) -> Path:
        if root is None:
            raise DatasetError(f"dataset {self.name!r} needs --root, the directory that holds it")
        root = Path(root).expanduser()
        if not root.is_dir():
            raise DatasetError(f"dataset root {root} does not exist or is not a directory")
        return root

    @abstractmethod
    def index(self) -> DatasetIndex: ...

    def has_transcripts(self, index: DatasetIndex) -> bool:
        return any(spec.kind == "text" for spec in index.labels.values())


REGISTRY: dict[str, type[Dataset]] = {}


def register(cls: type[Dataset]) -> type[Dataset]:
    REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    return sorted(REGISTRY)


def build(name: str, root: Path | None) -> Dataset:
    if name not in REGISTRY:
        raise DatasetError(f"unknown dataset {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name](root)
