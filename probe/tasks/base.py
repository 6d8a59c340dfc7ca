"""The task interface and registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from avsuperb.probe.config import TrainConfig


class TaskError(Exception):
    """A task that cannot run on the store it was given."""


@dataclass(frozen=True)
class Task:
    name: str
    label: str  # the store label it learns
    label_kinds: tuple[str, ...]
    metric: str
    higher_is_better: bool
    description: str
    config: TrainConfig = field(default_factory=TrainConfig)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "metric": self.metric}


REGISTRY: dict[str, Task] = {}


def register(task: Task) -> Task:
    REGISTRY[task.name] = task
    return task


def available() -> list[str]:
    return sorted(REGISTRY)


def get(name: str) -> Task:
    if name not in REGISTRY:
        raise TaskError(f"unknown task {name!r}; choose one of: {', '.join(available())}")
    return REGISTRY[name]
