"""Layer contributions: softmax layer weight times the layer's mean L2 norm over the training
set (true L2 norms, from the store's statistics; the reference used mean absolute values),
normalised to sum to 1."""

from __future__ import annotations

from typing import Sequence

import numpy as np


def layer_contributions(weights: Sequence[float], l2_mean: np.ndarray | None) -> list[float] | None:
    if l2_mean is None:
        return None
    w = np.asarray(weights, dtype=np.float64)
    norms = np.asarray(l2_mean, dtype=np.float64).reshape(-1)
    if w.shape != norms.shape:
        raise ValueError(f"{len(w)} layer weights but {len(norms)} layer norms")
    c = w * norms
    total = c.sum()
    return (c / total).tolist() if total > 0 else None
