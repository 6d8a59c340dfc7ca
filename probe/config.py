"""Training configuration of a probe, overridable from the CLI with --set key=value."""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

PAPER_LRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class TrainConfig:
    lrs: tuple[float, ...] = PAPER_LRS
    steps: int = 3000
    batch_size: int = 32
    eval_every: int = 100
    patience: int = 6  # evaluations without a better dev score before a rate stops
    optimizer: str = "adam"
    hidden: int = 256
    grad_clip: float = 1.0
    seed: int = 0
    dev_fraction: float = 0.1  # carved from train when the store has no dev split

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrs"] = list(self.lrs)
        return d

    def override(self, assignments: list[str]) -> TrainConfig:
        """Apply `key=value` strings; values are Python literals (numbers, tuples, strings)."""
        types = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in types:
                raise ConfigError(f"--set {item!r}: expected key=value with key one of: {', '.join(types)}")
            try:
                value = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                value = raw
            current = getattr(self, key)
            try:
                if isinstance(current, tuple):
                    value = tuple(float(v) for v in (value if isinstance(value, (tuple, list)) else (value,)))
                elif isinstance(current, bool):
                    value = bool(value)
                else:
                    value = type(current)(value)
            except (TypeError, ValueError):
                raise ConfigError(f"--set {item!r}: {key} must be a {type(current).__name__}") from None
            changes[key] = value
        cfg = replace(self, **changes)
        cfg.check()
        return cfg

    def check(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError("lrs must be positive learning rates")
        for name in ("steps", "batch_size", "eval_every", "patience", "hidden"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError("optimizer must be adam or adamw")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError("dev_fraction must lie between 0 and 1")
