"""Dataset adapters, registered by name."""

from avsuperb.extract.datasets.base import (
    REGISTRY,
    Clip,
    Dataset,
    DatasetError,
    DatasetIndex,
    LabelSpec,
    available,
    build,
    register,
)
from avsuperb.extract.datasets import audioset20k, kinetics_sounds, synthetic, ucf101, vggsound  # noqa: F401  (register built-ins)

__all__ = ["REGISTRY", "Clip", "Dataset", "DatasetError", "DatasetIndex", "LabelSpec", "available", "build", "register"]
