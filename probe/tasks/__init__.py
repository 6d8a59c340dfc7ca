"""Probing tasks, registered by name: which label each needs, its head, metric and defaults."""

from avsuperb.probe.tasks.base import REGISTRY, Task, TaskError, available, get, register
from avsuperb.probe.tasks import classification  # noqa: F401  (register built-ins)

__all__ = ["REGISTRY", "Task", "TaskError", "available", "get", "register"]
