"""Train one head per learning rate from the pooled cache, all in one pass over the data.

The heads are stacked (torch.func) and trained as one vectorised model with a per-rate Adam,
so a batch is read once and a 5-rate sweep costs about one run. Each rate keeps its best state
on dev and stops after `patience` evaluations without improvement. The chosen rate is the
best on dev; the caller scores test once, for that rate only.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm import tqdm

from avsuperb.probe.config import TrainConfig

log = logging.getLogger(__name__)

BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass
class RateResult:
    lr: float
    best_dev: float
    best_step: int
    stopped_at: int


@dataclass
class SweepResult:
    rates: list[RateResult]
    chosen: RateResult
    head: nn.Module  # the chosen rate's best state


class StackedHeads:
    """K copies of one head with identical initialisation, evaluated with vmap."""

    def __init__(self, template: nn.Module, k: int) -> None:
        self.template = copy.deepcopy(template).to("meta")
        params, buffers = stack_module_state([copy.deepcopy(template) for _ in range(k)])
        self.params = {n: p.detach().clone().requires_grad_(True) for n, p in params.items()}
        self.buffers = buffers
        self._source = template

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, ...] -> [K, B, ...]"""

        def one(params: dict, buffers: dict, inp: torch.Tensor) -> torch.Tensor:
            return functional_call(self.template, (params, buffers), (inp,))

        return vmap(one, in_dims=(0, 0, None))(self.params, self.buffers, x)

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.params.items()}

    def head(self, state: dict[str, torch.Tensor], k: int) -> nn.Module:
        module = copy.deepcopy(self._source)
        module.load_state_dict({n: v[k] for n, v in state.items()} | {n: b[k] for n, b in self.buffers.items()})
        return module.eval()


class StackedAdam:
    """Adam / AdamW over stacked parameters with one learning rate per stacked copy."""

    def __init__(self, params: dict[str, torch.Tensor], lrs: list[float], decoupled_decay: float = 0.0, eps: float = ADAM_EPS) -> None:
        self.params = params
        device = next(iter(params.values())).device
        self.lrs = torch.tensor(lrs, dtype=torch.float32, device=device)
        self.decay = decoupled_decay
        self.eps = eps
        self.m = {n: torch.zeros_like(p) for n, p in params.items()}
        self.v = {n: torch.zeros_like(p) for n, p in params.items()}
        self.t = 0

    @torch.no_grad()
    def step(self, active: torch.Tensor, clip: float) -> None:
        grads = {n: (p.grad if p.grad is not None else torch.zeros_like(p)) for n, p in self.params.items()}
        k = len(self.lrs)
        norm = torch.sqrt(sum(g.reshape(k, -1).pow(2).sum(dim=1) for g in grads.values()))
        scale = torch.clamp(clip / (norm + 1e-6), max=1.0)  # clip_grad_norm_, per copy
        self.t += 1
        b1, b2 = BETAS
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for n, p in self.params.items():
            shape = (k,) + (1,) * (p.dim() - 1)
            g = grads[n] * scale.view(shape)
            self.m[n].mul_(b1).add_(g, alpha=1 - b1)
            self.v[n].mul_(b2).addcmul_(g, g, value=1 - b2)
            lr = (self.lrs * active).view(shape)
            if self.decay:
                p.mul_(1 - lr * self.decay)
            p.sub_(lr * (self.m[n] / c1) / ((self.v[n] / c2).sqrt() + self.eps))
            p.grad = None


def train_sweep(
    template: nn.Module,
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    x_dev: torch.Tensor,
    dev_score: Callable[[torch.Tensor], float],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    cfg: TrainConfig,
    progress: bool = True,
    desc: str = "probe",
) -> SweepResult:
    """`template` is the freshly initialised head; `dev_score(outputs)` is higher-is-better."""
    k = len(cfg.lrs)
    heads = StackedHeads(template, k)
    opt = StackedAdam(heads.params, list(cfg.lrs), cfg.weight_decay if cfg.optimizer == "adamw" else 0.0, cfg.adam_eps)
    device = x_train.device
    active = torch.ones(k, device=device)
    best = [float("-inf")] * k
    best_step = [0] * k
    stale = [0] * k
    stopped_at = [cfg.steps] * k
    best_state = heads.snapshot()

    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(x_train)
    batch = min(cfg.batch_size, n)
    order, cursor = torch.randperm(n, generator=gen).to(device), 0
    bar = tqdm(range(1, cfg.steps + 1), desc=desc, unit="step", disable=not progress, leave=False)
    for step in bar:
        if cursor + batch > n:
            order, cursor = torch.randperm(n, generator=gen).to(device), 0
        idx = order[cursor : cursor + batch]
        cursor += batch
        out = heads(x_train[idx])
        losses = torch.stack([loss_fn(out[j], y_train[idx]) for j in range(k)])
        finite = torch.isfinite(losses)
        torch.where(finite, losses, torch.zeros_like(losses)).sum().backward()
        opt.step(active * finite, cfg.grad_clip)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            with torch.no_grad():
                dev_out = heads(x_dev)
            for j in range(k):
                if not active[j]:
                    continue
                score = dev_score(dev_out[j])
                if np.isfinite(score) and score > best[j]:
                    best[j], best_step[j], stale[j] = score, step, 0
                    for name, p in heads.params.items():
                        best_state[name][j] = p.detach()[j]
                else:
                    stale[j] += 1
                    if stale[j] >= cfg.patience:
                        active[j], stopped_at[j] = 0.0, step
            bar.set_postfix(dev=" ".join(f"{b:.1f}" for b in best))
            if not active.any():
                break
    bar.close()
    rates = [RateResult(lr, b, s, st) for lr, b, s, st in zip(cfg.lrs, best, best_step, stopped_at)]
    j = max(range(k), key=lambda i: (best[i], -abs(np.log10(cfg.lrs[i]) + 3)))  # ties: the rate nearest 1e-3
    return SweepResult(rates, rates[j], heads.head(best_state, j))
