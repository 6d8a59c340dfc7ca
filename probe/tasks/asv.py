"""Speaker verification: speaker identification with AM-softmax on the mean-pooled connector
output, then cosine scoring of the trial list with L2-normalised embeddings; EER %."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn

from avsuperb.probe import metrics
from avsuperb.probe.config import TrainConfig
from avsuperb.probe.data import TaskData
from avsuperb.probe.heads import AMSoftmaxHead
from avsuperb.probe.tasks.base import Metric, TaskError, register
from avsuperb.probe.tasks.pooled import PooledTask

log = logging.getLogger(__name__)


@register
class SpeakerVerification(PooledTask):
    name = "asv"
    label = "speaker"
    label_kinds = ("class",)
    description = "speaker verification (VoxCeleb2): AM-softmax speaker ID, cosine trials, EER %"

    def metric(self, label_kind: str) -> Metric:
        return Metric("eer", False)

    def _speakers(self, data: TaskData) -> np.ndarray:
        """Train speakers, in index order: the classes of the speaker-ID head."""
        return np.unique(data.label.values[data.rows["train"]])

    def num_outputs(self, data: TaskData) -> int:
        return len(self._speakers(data))

    def targets(self, data: TaskData) -> torch.Tensor:
        speakers = self._speakers(data)
        index = np.full(max(int(data.label.values.max()) + 1, 1), -1, dtype=np.int64)
        index[speakers] = np.arange(len(speakers))
        y = index[np.maximum(data.label.values, 0)]
        y[data.label.values < 0] = -1
        if np.any(y[data.rows["dev"]] < 0):  # dev clips of unseen speakers cannot be identified
            data.rows["dev"] = data.rows["dev"][y[data.rows["dev"]] >= 0]
            if len(data.rows["dev"]) == 0:
                raise TaskError("no dev clip of a training speaker: speaker-ID validation needs some")
        return torch.from_numpy(y)

    def make_head(self, num_layers: int, dim: int, outputs: int, cfg: TrainConfig) -> nn.Module:
        return AMSoftmaxHead(num_layers, dim, outputs, cfg.hidden)

    def loss(self, out: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        margin = cfg.am_margin * nn.functional.one_hot(y, out.shape[-1]).to(out.dtype)
        return nn.functional.cross_entropy(cfg.am_scale * (out - margin), y)

    def test_metric(self, head: nn.Module, x: torch.Tensor, y: torch.Tensor, data: TaskData) -> float:
        trials = data.table.trials
        if trials is None or len(trials) == 0:
            raise TaskError("the store has no verification trials; asv needs clips/trials")
        usable = np.zeros(len(x), dtype=bool)
        usable[data.rows["test"]] = True
        keep = usable[trials[:, 0]] & usable[trials[:, 1]]
        if not keep.all():
            log.warning("%d trials left out: a clip of theirs is not a usable test clip", int((~keep).sum()))
        trials = trials[keep]
        with torch.no_grad():
            emb = nn.functional.normalize(head.embed(x), dim=-1)
        scores = (emb[trials[:, 0]] * emb[trials[:, 1]]).sum(dim=-1).cpu().numpy()
        return metrics.equal_error_rate(trials[:, 2], scores)
