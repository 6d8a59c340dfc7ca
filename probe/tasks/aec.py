"""Audio event classification: multi-label with BCE and macro mAP (AudioSet-20K), or
single-label with accuracy (VGGSound) — the task follows the label kind the dataset has."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avsuperb.probe import metrics
from avsuperb.probe.config import TrainConfig
from avsuperb.probe.data import TaskData
from avsuperb.probe.tasks.base import Metric, register
from avsuperb.probe.tasks.pooled import PooledTask


@register
class AudioEventClassification(PooledTask):
    name = "aec"
    label = "events"
    label_kinds = ("multi", "class")
    description = "audio event classification (AudioSet-20K multi-label mAP %, VGGSound accuracy %)"

    def metric(self, label_kind: str) -> Metric:
        return Metric("map", True) if label_kind == "multi" else Metric("accuracy", True)

    def targets(self, data: TaskData) -> torch.Tensor:
        if data.label.kind == "multi":
            return torch.from_numpy(np.asarray(data.label.values, dtype=np.float32))
        return super().targets(data)

    def loss(self, out: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        if y.dtype == torch.float32:
            return nn.functional.binary_cross_entropy_with_logits(out, y)
        return super().loss(out, y, cfg)

    def dev_metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        if y.dtype == torch.float32:
            return metrics.mean_average_precision(y.cpu().numpy(), out.detach().cpu().numpy())
        return super().dev_metric(out, y)
