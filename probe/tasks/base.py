"""The task interface and registry.

A task names the store label it learns, the label kinds it accepts, its metric, and how to
train and score a head on one track; `probe.run` does the rest (store checks, result file).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from avsuperb.probe.config import TrainConfig
    from avsuperb.probe.data import TaskData


class TaskError(Exception):
    """A task that cannot run on the store it was given."""


@dataclass(frozen=True)
class Metric:
    name: str  # accuracy | map | eer | cer
    higher_is_better: bool


@dataclass
class Outcome:
    """What a task's training produced, before it becomes a result file."""

    test_score: float
    dev_scores: dict[str, float]
    chosen_lr: float
    best_step: int
    layer_weights: list[float]
    metric: Metric
    extra: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    name: ClassVar[str]
    label: ClassVar[str]
    label_kinds: ClassVar[tuple[str, ...]]
    description: ClassVar[str]
    frame_level: ClassVar[bool] = False

    def metric(self, label_kind: str) -> Metric:
        return Metric("accuracy", True)

    @abstractmethod
    def train(self, data: TaskData, cfg: TrainConfig, progress: bool) -> Outcome: ...


REGISTRY: dict[str, Task] = {}


def register(cls: type[Task]) -> type[Task]:
    REGISTRY[cls.name] = cls()
    return cls


def available() -> list[str]:
    return sorted(REGISTRY)


def get(name: str) -> Task:
    if name not in REGISTRY:
        raise TaskError(f"unknown task {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name]
