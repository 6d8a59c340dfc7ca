"""Utterance-level tasks trained from the pooled cache with the vectorised LR sweep."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from avsuperb.probe import metrics
from avsuperb.probe.config import TrainConfig
from avsuperb.probe.data import TaskData
from avsuperb.probe.heads import PooledUtteranceHead
from avsuperb.probe.sweep import train_sweep
from avsuperb.probe.tasks.base import Outcome, Task


class PooledTask(Task):
    """Sweep a head over the learning rates on train, choose on dev, score test once."""

    def num_outputs(self, data: TaskData) -> int:
        return len(data.label.classes)

    def targets(self, data: TaskData) -> torch.Tensor:
        return torch.from_numpy(np.asarray(data.label.values, dtype=np.int64))

    def make_head(self, num_layers: int, dim: int, outputs: int, cfg: TrainConfig) -> nn.Module:
        return PooledUtteranceHead(num_layers, dim, outputs, cfg.hidden)

    def loss(self, out: torch.Tensor, y: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
        return nn.functional.cross_entropy(out, y)

    def dev_metric(self, out: torch.Tensor, y: torch.Tensor) -> float:
        """Higher is better; the rate is chosen on it."""
        return metrics.accuracy(y.cpu().numpy(), out.argmax(dim=-1).cpu().numpy())

    def test_metric(self, head: nn.Module, x: torch.Tensor, y: torch.Tensor, data: TaskData) -> float:
        with torch.no_grad():
            return self.dev_metric(head(x[data.rows["test"]]), y[data.rows["test"]])

    def train(self, data: TaskData, cfg: TrainConfig, progress: bool) -> Outcome:
        device = torch.device(data.device)
        x = torch.from_numpy(data.pooled()).to(device)
        y = self.targets(data).to(device)
        train, dev = data.rows["train"], data.rows["dev"]
        torch.manual_seed(cfg.seed)
        template = self.make_head(x.shape[1], x.shape[2], self.num_outputs(data), cfg).to(device)
        sweep = train_sweep(
            template=template,
            x_train=x[train],
            y_train=y[train],
            x_dev=x[dev],
            dev_score=lambda out: self.dev_metric(out, y[dev]),
            loss_fn=lambda out, target: self.loss(out, target, cfg),
            cfg=cfg,
            progress=progress,
            desc=f"{self.name}/{data.track}",
        )
        head = sweep.head
        test = self.test_metric(head, x, y, data)
        return Outcome(
            test_score=float(test),
            dev_scores={f"{r.lr:g}": r.best_dev for r in sweep.rates if np.isfinite(r.best_dev)},
            chosen_lr=sweep.chosen.lr,
            best_step=sweep.chosen.best_step,
            layer_weights=head.featurizer.weights().detach().cpu().tolist(),
            metric=self.metric(data.label.kind),
            extra={"dev_score": sweep.chosen.best_dev},
        )
