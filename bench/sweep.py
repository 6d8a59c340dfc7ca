"""A full 5-rate sweep of one utterance task, the reference's way versus extract-once + cached sweep.

Reference way (s3prl / AV-SUPERB): the frozen upstream runs inside the training loop. For each
learning rate in turn, every training step decodes its batch's clips, runs the upstream on
them and trains the weighted-sum head (weighted sum over layers -> Linear(D, 256) -> mean over
valid frames -> Linear(256, C), cross-entropy, Adam, gradient clipping at 1.0) on the frames;
every `eval_every` steps the dev clips are decoded and run through the upstream to score the
head; the chosen rate's test clips likewise at the end.

avsuperb way: `run_extraction` (every clip decoded and run through the upstream once, written
to a store), then `run_probe`, which trains all rates together from the pooled cache.

Both sides use the same corpus, upstream, head initialisation, batch order, number of steps
(early stopping is switched off on both sides: patience larger than the number of evaluations),
batch size, evaluation interval and rates. The two are run back to back in one process.

    python bench/sweep.py --small
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

import _common as C

log = logging.getLogger("bench.sweep")

TASK, LABEL, TRACK = "er", "emotion", "audio"


def reference_sweep(checkpoint: Path, root: Path, lrs: list[float], steps: int, batch_size: int, eval_every: int,
                    hidden: int, seed: int) -> dict[str, float]:
    """The reference's loop: decode + upstream forward on every step, one rate after another.
    Returns each rate's best dev accuracy and the chosen rate's test accuracy."""
    from avsuperb.extract import datasets, upstreams
    from avsuperb.extract.media import decode
    from avsuperb.probe.heads import PooledUtteranceHead

    upstream = upstreams.build("hubert", checkpoint, "cpu", {})
    info = upstream.tracks[TRACK]
    sample_rate, fps = upstream.needs([TRACK])
    dataset = datasets.build("synthetic", root)
    index = dataset.index()
    table = index.table()
    label = table.labels[LABEL]
    y_all = torch.from_numpy(np.asarray(label.values, dtype=np.int64))
    splits = np.asarray(table.splits)
    rows = {s: np.flatnonzero((splits == s) & (label.values >= 0)) for s in ("train", "dev", "test")}
    num_classes = len(label.classes)

    def frames_of(batch_rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode the clips and run the frozen upstream: padded [B, T, L, D] and lengths [B]."""
        items = []
        for r in batch_rows:
            clip = index.clips[int(r)]
            media = decode(clip.path, sample_rate=sample_rate, fps=fps, start=clip.start,
                           end=clip.start + clip.duration, fill_missing=dataset.fills_missing_streams)
            items.append((media.audio, media.video))
        feats = [torch.from_numpy(f[TRACK]) for f in upstream.extract_batch([TRACK], items)]
        lengths = torch.tensor([len(f) for f in feats])
        return nn.utils.rnn.pad_sequence(feats, batch_first=True), lengths

    def logits(head: PooledUtteranceHead, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        h = head.projector(head.featurizer(x))  # [B, T, hidden]
        valid = (torch.arange(x.shape[1]) < lengths[:, None]).unsqueeze(-1)
        return head.classifier((h * valid).sum(dim=1) / lengths[:, None])

    def accuracy(head: PooledUtteranceHead, split_rows: np.ndarray) -> float:
        correct = 0
        with torch.no_grad():
            for i in range(0, len(split_rows), batch_size):
                part = split_rows[i:i + batch_size]
                x, n = frames_of(part)
                correct += int((logits(head, x, n).argmax(-1) == y_all[part]).sum())
        return 100.0 * correct / len(split_rows)

    train = rows["train"]
    batch = min(batch_size, len(train))
    best: dict[float, tuple[float, dict[str, torch.Tensor]]] = {}
    for lr in lrs:
        torch.manual_seed(seed)
        head = PooledUtteranceHead(info.num_layers, info.dim, num_classes, hidden)
        opt = torch.optim.Adam(head.parameters(), lr=lr)
        gen = torch.Generator().manual_seed(seed)
        order, cursor = torch.randperm(len(train), generator=gen), 0
        best_dev, best_state = float("-inf"), None
        for step in range(1, steps + 1):
            if cursor + batch > len(train):
                order, cursor = torch.randperm(len(train), generator=gen), 0
            idx = train[order[cursor:cursor + batch].numpy()]
            cursor += batch
            x, n = frames_of(idx)
            loss = nn.functional.cross_entropy(logits(head, x, n), y_all[idx])
            opt.zero_grad()
            if torch.isfinite(loss):
                loss.backward()
                nn.utils.clip_grad_norm_(head.parameters(), 1.0)
                opt.step()
            if step % eval_every == 0 or step == steps:
                dev = accuracy(head, rows["dev"])
                if dev > best_dev:
                    best_dev, best_state = dev, {k: v.clone() for k, v in head.state_dict().items()}
        best[lr] = (best_dev, best_state)
        log.info("reference way: lr %g done, best dev %.1f", lr, best_dev)
    chosen = max(lrs, key=lambda lr: (best[lr][0], -abs(np.log10(lr) + 3)))
    torch.manual_seed(seed)
    head = PooledUtteranceHead(info.num_layers, info.dim, num_classes, hidden)
    head.load_state_dict(best[chosen][1])
    out = {f"dev@{lr:g}": best[lr][0] for lr in lrs}
    out["chosen_lr"] = chosen
    out["test"] = accuracy(head, rows["test"])
    return out


def avsuperb_sweep(checkpoint: Path, root: Path, store: Path, lrs: list[float], steps: int, batch_size: int,
                   eval_every: int, hidden: int, seed: int) -> tuple[float, float, dict[str, float]]:
    """Extraction then the cached, vectorised sweep; returns (extract s, probe s, scores)."""
    from avsuperb.extract.run import ExtractOptions, run_extraction
    from avsuperb.probe.config import load_config
    from avsuperb.probe.run import run_probe

    C.fresh(store)
    with C.timer() as t_extract:
        summary = run_extraction(ExtractOptions("hubert", "synthetic", store, root, checkpoint=checkpoint, progress=False))
    assert summary.failed == 0 and summary.pending == 0, summary.line()
    with C.timer() as t_probe:
        cfg = load_config(TASK, None, [f"lrs={','.join(f'{lr:g}' for lr in lrs)}", f"steps={steps}", f"batch_size={batch_size}",
                                       f"eval_every={eval_every}", f"patience={steps + 1}", f"hidden={hidden}", f"seed={seed}"])
        result = run_probe(store, TASK, TRACK, cfg, None, progress=False, device="cpu")
    scores = {f"dev@{lr:g}": result["dev_scores"].get(f"{lr:g}", float("nan")) for lr in lrs}
    scores["chosen_lr"] = result["chosen_lr"]
    scores["test"] = result["test_score"]
    return t_extract[0], t_probe[0], scores


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="the small configuration (reference side: a few minutes on 2 cores)")
    p.add_argument("--clips", type=str, default=None, help="train/dev/test clips of the synthetic corpus, e.g. 16/4/4")
    p.add_argument("--steps", type=int, default=None, help="training steps per rate")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--eval-every", type=int, default=None)
    p.add_argument("--lrs", type=str, default="1e-1,1e-2,1e-3,1e-4,1e-5")
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--threads", type=int, default=1, help="torch threads on both sides (default 1: the machine is shared)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    C.setup_logging(args.verbose)
    torch.set_num_threads(args.threads)
    # small: 16 train clips x 30 epochs per rate; default: the corpus of the demo, er.toml's batch, 1,000 steps
    clips = args.clips or ("16/4/4" if args.small else "200/60/60")
    steps = args.steps or (60 if args.small else 1000)
    batch_size = args.batch_size or (8 if args.small else 32)
    eval_every = args.eval_every or (10 if args.small else 100)
    n_train, n_dev, n_test = (int(v) for v in clips.split("/"))
    lrs = [float(v) for v in args.lrs.split(",")]

    root = C.corpus(n_train, n_dev, n_test, args.seed)
    checkpoint = C.small_hubert_checkpoint(seed=args.seed)
    store = C.BENCH_ROOT / f"sweep-{n_train}-{n_dev}-{n_test}.zarr"

    log.info("avsuperb way: extract once, then the cached sweep")
    t_extract, t_probe, ours = avsuperb_sweep(checkpoint, root, store, lrs, steps, batch_size, eval_every, args.hidden, args.seed)
    log.info("reference way: upstream forward on every step, %d rates x %d steps x %d clips", len(lrs), steps, batch_size)
    with C.timer() as t_ref:
        ref = reference_sweep(checkpoint, root, lrs, steps, batch_size, eval_every, args.hidden, args.seed)
    C.fresh(store)

    ours_total = t_extract + t_probe
    C.print_machine()
    print(f"config: task {TASK}, track {TRACK}, synthetic corpus {n_train}/{n_dev}/{n_test} clips, small HuBERT "
          f"(5 x 256 at 50 Hz), rates {args.lrs}, {steps} steps per rate, batch {batch_size}, dev every {eval_every} steps, "
          f"no early stopping, torch threads {args.threads}")
    passes = len(lrs) * (steps * min(batch_size, n_train) + ((steps + eval_every - 1) // eval_every) * n_dev) + n_test
    print(f"upstream passes: reference way {passes} clips, avsuperb {n_train + n_dev + n_test} clips")
    C.print_table("wall time (s)", ["side", "extract", "sweep", "total"], [
        ["reference way (forward every step)", "-", f"{t_ref[0]:.1f}", f"{t_ref[0]:.1f}"],
        ["avsuperb (extract once + cached sweep)", f"{t_extract:.1f}", f"{t_probe:.1f}", f"{ours_total:.1f}"],
    ])
    ratio = t_ref[0] / ours_total
    print(f"\nratio reference / avsuperb: {ratio:.1f}x (target >= 50x: {'met' if ratio >= 50 else 'NOT met'})")
    C.print_table("scores (accuracy %; the two should agree up to float rounding)", ["", *[k for k in ref]], [
        ["reference way", *[f"{v:g}" if isinstance(v, float) else v for v in ref.values()]],
        ["avsuperb", *[f"{ours[k]:g}" if isinstance(ours[k], float) else ours[k] for k in ref]],
    ])
    return 0


if __name__ == "__main__":
    sys.exit(main())
