"""Training configuration of a probe: defaults, then plain TOML files in probe/configs/
(TASK.toml, then TASK-DATASET.toml where the reference differs), then --set key=value."""

from __future__ import annotations

import ast
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from importlib import resources
from typing import Any

PAPER_LRS = (1e-1, 1e-2, 1e-3, 1e-4, 1e-5)


class ConfigError(Exception):
    pass


@dataclass(frozen=True)
class TrainConfig:
    lrs: tuple[float, ...] = PAPER_LRS
    steps: int = 3000
    batch_size: int = 32  # effective batch (the reference's batch x gradient accumulation)
    eval_every: int = 100
    patience: int = 6  # evaluations without a better dev score before a rate stops
    optimizer: str = "adam"  # adam | adamw
    adam_eps: float = 1e-8  # torch's Adam default; the reference's AdamW uses 1e-7 (set in its configs)
    weight_decay: float = 0.0  # adamw only; the reference's AdamW (utils/optimizers.py) has none
    hidden: int = 256  # the connector (first Linear) width
    grad_clip: float = 1.0
    seed: int = 0
    # torch's intra-op threads for the probe's arithmetic on the CPU. Fixed, not taken from the
    # machine: torch splits reductions (gradients, sums) by thread count, so another count gives
    # other rounding and, over a training run, another result. More threads: faster, other digits.
    threads: int = 1
    dev_fraction: float = 0.1  # carved from train when the store has no dev split
    folds_by: str = ""  # label whose values define leave-one-out folds (IEMOCAP: session)
    # ASV: AM-softmax
    am_scale: float = 30.0
    am_margin: float = 0.4
    # ASR: frame-level BiLSTM-CTC head
    lstm_units: int = 1024
    lstm_layers: int = 2
    dropout: float = 0.2
    upsample: int = 2
    # Not in the reference (0: off): average consecutive frames so that the head runs at about this
    # many frames per second (FBANK's 100 Hz -> 25 Hz with 25), before the upsampling.
    pool_to_hz: float = 0.0
    warmup_steps: int = 1500
    # recently read clips' frames kept in memory (0: none); reads stream regardless. An LRU cache only
    # hits when a split fits in it (a larger one is read in full at each evaluation), so it is small.
    frame_cache_mb: int = 128
    # Not in the reference: scale each layer's frames to zero mean, unit variance per dimension
    # with the store's train-split statistics before the head (speeds up CTC on raw features).
    standardize: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["lrs"] = list(self.lrs)
        return d

    def update(self, values: dict[str, Any], source: str) -> TrainConfig:
        """Apply a mapping of overrides, coerced to each field's type."""
        kinds = {f.name: f for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in values.items():
            if key not in kinds:
                raise ConfigError(f"{source}: unknown key {key!r}; keys: {', '.join(kinds)}")
            current = getattr(self, key)
            try:
                if isinstance(current, tuple):
                    items = value if isinstance(value, (tuple, list)) else (value,)
                    value = tuple(float(v) for v in items)
                elif isinstance(current, bool):
                    value = bool(value)
                elif isinstance(current, (int, float)) and isinstance(value, str):
                    value = type(current)(ast.literal_eval(value))
                else:
                    value = type(current)(value)
            except (TypeError, ValueError, SyntaxError):
                raise ConfigError(f"{source}: {key} must be a {type(current).__name__}, got {value!r}") from None
            changes[key] = value
        cfg = replace(self, **changes)
        cfg.check()
        return cfg

    def override(self, assignments: list[str]) -> TrainConfig:
        """Apply `key=value` strings (values are Python literals: 2000, 1e-3, 1e-2,1e-3)."""
        values: dict[str, Any] = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key.strip():
                raise ConfigError(f"--set {item!r}: expected key=value")
            try:
                values[key.strip()] = ast.literal_eval(raw)
            except (ValueError, SyntaxError):
                values[key.strip()] = raw
        return self.update(values, "--set")

    def check(self) -> None:
        if not self.lrs or any(lr <= 0 for lr in self.lrs):
            raise ConfigError("lrs must be positive learning rates")
        for name in ("steps", "batch_size", "eval_every", "patience", "hidden", "lstm_units", "lstm_layers", "upsample", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if self.pool_to_hz < 0:
            raise ConfigError("pool_to_hz must be 0 (off) or a positive frame rate")
        if self.optimizer not in ("adam", "adamw"):
            raise ConfigError("optimizer must be adam or adamw")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError("dev_fraction must lie between 0 and 1")


def config_files(task: str, dataset: str | None) -> list[str]:
    names = [f"{task}.toml"] + ([f"{task}-{dataset}.toml"] if dataset else [])
    folder = resources.files(__package__).joinpath("configs")
    return [n for n in names if folder.joinpath(n).is_file()]


def load_config(task: str, dataset: str | None = None, overrides: list[str] | None = None) -> TrainConfig:
    """Defaults < configs/TASK.toml < configs/TASK-DATASET.toml < --set overrides."""
    cfg = TrainConfig()
    folder = resources.files(__package__).joinpath("configs")
    for name in config_files(task, dataset):
        try:
            values = tomllib.loads(folder.joinpath(name).read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"probe/configs/{name}: {err}") from err
        cfg = cfg.update(values, f"probe/configs/{name}")
    return cfg.override(overrides or [])
