"""Train one head per learning rate from the pooled cache, all in one pass over the data.

Every batch is read once and fed to every head; each head keeps its best state on dev and
stops after `patience` evaluations without improvement. The chosen rate is the best on dev;
test is scored once, for that rate only.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from avsuperb.probe.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class RateResult:
    lr: float
    best_dev: float
    best_step: int
    stopped_at: int
    state: dict


@dataclass
class SweepResult:
    rates: list[RateResult]
    chosen: RateResult
    head: nn.Module


def train_sweep(
    make_head: Callable[[], nn.Module],
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_dev: torch.Tensor,
    dev_score: Callable[[nn.Module, torch.Tensor], float],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: TrainConfig,
    progress: bool = True,
    desc: str = "probe",
) -> SweepResult:
    """`dev_score(head, x_dev)` is higher-is-better; returns the heads' best states."""
    torch.manual_seed(cfg.seed)
    template = make_head()
    heads = [copy.deepcopy(template) for _ in cfg.lrs]  # same initialisation for every rate
    opt_cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    opts = [opt_cls(h.parameters(), lr=lr) for h, lr in zip(heads, cfg.lrs)]
    best = [float("-inf")] * len(heads)
    best_step = [0] * len(heads)
    best_state = [copy.deepcopy(h.state_dict()) for h in heads]
    stale = [0] * len(heads)
    active = [True] * len(heads)
    stopped_at = [cfg.steps] * len(heads)

    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(x_train)
    order = torch.randperm(n, generator=gen)
    cursor = 0
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, unit="step", disable=not progress, leave=False)
    for step in bar:
        if cursor + cfg.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + cfg.batch_size]
        cursor += cfg.batch_size
        xb, yb = x_train[idx], y_train[idx]
        for k, (head, opt) in enumerate(zip(heads, opts)):
            if not active[k]:
                continue
            head.train()
            loss = loss_fn(head(xb), yb)
            opt.zero_grad(set_to_none=True)
            if torch.isfinite(loss):
                loss.backward()
                nn.utils.clip_grad_norm_(head.parameters(), cfg.grad_clip)
                opt.step()
        if step % cfg.eval_every == 0 or step == cfg.steps:
            for k, head in enumerate(heads):
                if not active[k]:
                    continue
                head.eval()
                with torch.no_grad():
                    score = dev_score(head, x_dev)
                if np.isfinite(score) and score > best[k]:
                    best[k], best_step[k], stale[k] = score, step, 0
                    best_state[k] = copy.deepcopy(head.state_dict())
                else:
                    stale[k] += 1
                    if stale[k] >= cfg.patience:
                        active[k], stopped_at[k] = False, step
            bar.set_postfix(dev=" ".join(f"{b:.1f}" for b in best))
            if not any(active):
                break
    bar.close()
    rates = [RateResult(lr, b, s, st, state) for lr, b, s, st, state in zip(cfg.lrs, best, best_step, stopped_at, best_state)]
    chosen = max(rates, key=lambda r: (r.best_dev, -abs(np.log10(r.lr) + 3)))  # ties: the rate nearest 1e-3
    head = copy.deepcopy(template)
    head.load_state_dict(chosen.state)
    head.eval()
    return SweepResult(rates, chosen, head)
