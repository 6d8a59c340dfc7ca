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
from avsuperb.extract.datasets import (  # noqa: F401  (register built-ins)
    audioset20k,
    iemocap,
    kinetics_sounds,
    lrs3,
    manifest,
    synthetic,
    ucf101,
    vggsound,
    voxceleb2,
)

__all__ = ["REGISTRY", "Clip", "Dataset", "DatasetError", "DatasetIndex", "LabelSpec", "available", "build", "register"]
