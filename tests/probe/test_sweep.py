"""The vectorised sweep trains each rate exactly as a lone head with torch's own optimiser would."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from avsuperb.probe.config import TrainConfig
from avsuperb.probe.heads import PooledUtteranceHead, WeightedSum
from avsuperb.probe.sweep import StackedAdam, StackedHeads, train_sweep


def toy_data(n=96, layers=3, dim=8, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, classes, (n,), generator=g)
    x = torch.randn(n, layers, dim, generator=g)
    x[:, 1, :classes] += 5.0 * nn.functional.one_hot(y, classes)  # only layer 1 is informative
    return x, y


def test_weighted_sum_starts_uniform():
    ws = WeightedSum(4)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(ws(x), x.mean(dim=1))


def test_stacked_adam_matches_torch_adam_per_rate():
    torch.manual_seed(0)
    x, y = toy_data()
    template = PooledUtteranceHead(3, 8, 3, hidden=16)
    lrs = [1e-1, 1e-2, 1e-3]
    for decay, opt_cls in [(0.0, torch.optim.Adam), (1e-2, torch.optim.AdamW)]:
        heads = StackedHeads(template, len(lrs))
        opt = StackedAdam(heads.params, lrs, decay)
        singles = [copy.deepcopy(template) for _ in lrs]
        opts = [opt_cls(h.parameters(), lr=lr) for h, lr in zip(singles, lrs)]
        for step in range(20):
            idx = torch.arange(step * 4, step * 4 + 16) % len(x)
            out = heads(x[idx])
            sum(nn.functional.cross_entropy(out[k], y[idx]) for k in range(len(lrs))).backward()
            opt.step(torch.ones(len(lrs)), clip=1.0)
            for h, o in zip(singles, opts):
                loss = nn.functional.cross_entropy(h(x[idx]), y[idx])
                o.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(h.parameters(), 1.0)
                o.step()
        for k, h in enumerate(singles):
            for name, p in h.named_parameters():
                torch.testing.assert_close(heads.params[name][k], p.detach(), rtol=1e-4, atol=1e-5)


def test_frozen_rate_does_not_move():
    x, y = toy_data()
    heads = StackedHeads(PooledUtteranceHead(3, 8, 3, hidden=16), 2)
    before = heads.snapshot()
    opt = StackedAdam(heads.params, [1e-2, 1e-2])
    out = heads(x[:16])
    sum(nn.functional.cross_entropy(out[k], y[:16]) for k in range(2)).backward()
    opt.step(torch.tensor([1.0, 0.0]), clip=1.0)
    for name, p in heads.params.items():
        assert not torch.equal(p[0], before[name][0]) or name == "featurizer.logits"
        torch.testing.assert_close(p[1], before[name][1], rtol=0, atol=0)


def test_sweep_learns_and_picks_the_informative_layer():
    x, y = toy_data(n=240)
    cfg = TrainConfig(lrs=(1e-1, 1e-3, 1e-5), steps=300, eval_every=25, patience=4, batch_size=32)
    dev_x, dev_y = x[160:200], y[160:200]

    def dev_score(out):
        return float((out.argmax(-1) == dev_y).float().mean() * 100)

    res = train_sweep(PooledUtteranceHead(3, 8, 3, hidden=16), x[:160], y[:160], dev_x, dev_score,
                      nn.functional.cross_entropy, cfg, progress=False)
    assert [r.lr for r in res.rates] == [1e-1, 1e-3, 1e-5]
    assert res.chosen.best_dev >= 90
    assert res.chosen.lr != 1e-5
    by_lr = {r.lr: r.best_dev for r in res.rates}
    assert by_lr[1e-5] < res.chosen.best_dev
    test_acc = (res.head(x[200:]).argmax(-1) == y[200:]).float().mean().item()
    assert test_acc >= 0.9
    weights = res.head.featurizer.weights().detach().numpy()
    assert np.argmax(weights) == 1


@pytest.mark.parametrize("task, dataset", [("aec", "audioset20k"), ("ar", "kinetics_sounds"), ("asr", "lrs3"), ("asv", "voxceleb2")])
def test_adamw_is_the_references_eps_1e7_without_weight_decay(task, dataset):
    """Where the reference trains with AdamW, it is its own class (utils/optimizers.py): eps 1e-7,
    weight decay 0 (a decay would also shrink the layer-weight logits)."""
    from avsuperb.probe.config import load_config

    cfg = load_config(task, dataset)
    assert (cfg.optimizer, cfg.adam_eps, cfg.weight_decay) == ("adamw", 1e-7, 0.0)
