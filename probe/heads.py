"""Probing heads on the upstream's layers."""

from __future__ import annotations

import torch
from torch import nn


class WeightedSum(nn.Module):
    """Softmax-weighted sum over layers; weights start at 0 (uniform), as in SUPERB."""

    def __init__(self, num_layers: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(num_layers))

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., L, D] -> [..., D]."""
        return torch.einsum("l,...ld->...d", self.weights(), x)


class PooledUtteranceHead(nn.Module):
    """Weighted sum -> Linear(D, 256) -> mean over valid frames -> Linear(256, C).

    Fed per-layer time means [B, L, D]: the weighted sum and the first Linear are linear
    maps, so they commute with the time mean and the result equals the frame-level head's.
    """

    def __init__(self, num_layers: int, dim: int, num_classes: int, hidden: int = 256) -> None:
        super().__init__()
        self.featurizer = WeightedSum(num_layers)
        self.projector = nn.Linear(dim, hidden)
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.projector(self.featurizer(pooled)))


class AMSoftmaxHead(nn.Module):
    """Weighted sum -> Linear(D, 256) -> mean over time = the speaker embedding; outputs the
    cosine between the L2-normalised embedding and each speaker's weight vector (the
    additive margin and scale are applied in the loss)."""

    def __init__(self, num_layers: int, dim: int, num_speakers: int, hidden: int = 256) -> None:
        super().__init__()
        self.featurizer = WeightedSum(num_layers)
        self.projector = nn.Linear(dim, hidden)
        self.weight = nn.Parameter(torch.randn(num_speakers, hidden) * 0.01)

    def embed(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.projector(self.featurizer(pooled))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        e = nn.functional.normalize(self.embed(pooled), dim=-1)
        return e @ nn.functional.normalize(self.weight, dim=-1).T
