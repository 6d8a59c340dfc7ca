"""Probing tasks, registered by name: which label each needs, its head, metric and training."""

from avsuperb.probe.tasks.base import REGISTRY, Metric, Outcome, Task, TaskError, available, get, register
from avsuperb.probe.tasks import aec, asv, classification  # noqa: F401  (register built-ins)
from avsuperb.probe.tasks import asr  # noqa: F401  (registers the frame-level ASR task)

__all__ = ["REGISTRY", "Metric", "Outcome", "Task", "TaskError", "available", "get", "register"]
