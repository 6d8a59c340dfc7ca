"""Probe one task on one track of a store: read, split, sweep, score, write result.json."""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from avsuperb import __version__, schemas as S
from avsuperb.probe import metrics, tasks
from avsuperb.probe.config import TrainConfig
from avsuperb.probe.heads import PooledUtteranceHead
from avsuperb.probe.sweep import train_sweep
from avsuperb.probe.tasks import Task, TaskError
from avsuperb.store import StoreError
from avsuperb.store.reader import StoreReader

log = logging.getLogger(__name__)


def open_for_task(path: Path, task: Task) -> StoreReader:
    """Open a store and check that it is finished and has the task's labels."""
    reader = StoreReader(path)
    try:
        if not reader.attrs["complete"]:
            status = reader.status()
            done = int(np.sum(status == S.STATUS_DONE))
            raise StoreError(f"extraction into {path} has not finished ({done}/{len(status)} clips done); re-run the same avsuperb-extract command to finish it")
        spec = reader.attrs["labels"].get(task.label)
        if spec is None:
            have = ", ".join(reader.label_names) or "none"
            raise TaskError(f"store {path} (dataset {reader.dataset!r}) has no {task.label!r} labels, which task {task.name!r} needs; its labels: {have}")
        if spec["kind"] not in task.label_kinds:
            raise TaskError(f"task {task.name!r} needs {task.label!r} labels of kind {'/'.join(task.label_kinds)}, the store has kind {spec['kind']!r}")
    except BaseException:
        reader.close()
        raise
    return reader


def resolve_tracks(reader: StoreReader, track: str | None) -> list[str]:
    if track is None:
        return reader.tracks
    if track not in reader.tracks:
        raise StoreError(f"store {reader.path} has no {track!r} track; it has: {', '.join(reader.tracks)}")
    return [track]


def split_rows(splits: np.ndarray, usable: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> tuple[dict[str, np.ndarray], bool]:
    """train/dev/test row indices; carves a seeded, stratified dev set out of train if there is none."""
    rows = {s: np.flatnonzero((splits == s) & usable) for s in S.SPLITS}
    carved = False
    if len(rows["dev"]) == 0 and len(rows["train"]) > 1:
        from sklearn.model_selection import train_test_split

        labels = y[rows["train"]]
        counts = np.bincount(labels)
        stratify = labels if counts[counts > 0].min() >= 2 else None
        tr, dv = train_test_split(rows["train"], test_size=cfg.dev_fraction, random_state=cfg.seed, stratify=stratify)
        rows["train"], rows["dev"], carved = np.sort(tr), np.sort(dv), True
        log.info("no dev split: carved %d dev clips out of train (seed %d)", len(dv), cfg.seed)
    for s in S.SPLITS:
        if len(rows[s]) == 0:
            raise TaskError(f"no usable {s} clips for this task")
    return rows, carved


def run_probe(
    path: Path,
    task_name: str,
    track: str,
    cfg: TrainConfig | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    reader: StoreReader | None = None,
) -> dict[str, Any]:
    """Sweep the task's head over learning rates on one track; returns (and writes) the result."""
    task = tasks.get(task_name)
    cfg = cfg or task.config
    own = reader is None
    reader = reader or open_for_task(path, task)
    try:
        resolve_tracks(reader, track)
        table = reader.table([task.label])
        col = table.labels[task.label]
        y_all = col.values.astype(np.int64)
        usable = (reader.status() == S.STATUS_DONE) & (y_all >= 0)
        skipped = int(np.sum((reader.status() != S.STATUS_DONE) & (y_all >= 0)))
        if skipped:
            log.warning("%d clips failed extraction and are left out", skipped)
        rows, carved = split_rows(np.asarray(table.splits), usable, y_all, cfg)
        pooled = reader.pooled(track)
        upstream = reader.upstream
        dataset = reader.dataset
    finally:
        if own:
            reader.close()

    x = torch.from_numpy(np.ascontiguousarray(pooled, dtype=np.float32))
    y = torch.from_numpy(y_all)
    num_layers, dim, num_classes = x.shape[1], x.shape[2], len(col.classes)

    def accuracy(outputs: torch.Tensor, part: np.ndarray) -> float:
        return metrics.accuracy(y_all[part], outputs.argmax(dim=-1).numpy())

    torch.manual_seed(cfg.seed)
    sweep = train_sweep(
        template=PooledUtteranceHead(num_layers, dim, num_classes, cfg.hidden),
        x_train=x[rows["train"]],
        y_train=y[rows["train"]],
        x_dev=x[rows["dev"]],
        dev_score=lambda out: accuracy(out, rows["dev"]),
        loss_fn=nn.functional.cross_entropy,
        cfg=cfg,
        progress=progress,
        desc=f"{task.name}/{track}",
    )
    if not np.isfinite(sweep.chosen.best_dev):
        raise TaskError(f"training diverged at every learning rate ({', '.join(map(str, cfg.lrs))})")
    with torch.no_grad():
        test = accuracy(sweep.head(x[rows["test"]]), rows["test"])
    result = {
        "schema_version": S.RESULT_SCHEMA_VERSION,
        "software_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "dataset": dataset,
        "upstream": upstream,
        "track": track,
        "store": str(Path(path).resolve()),
        "metric": {"name": task.metric, "higher_is_better": task.higher_is_better},
        "test_score": test,
        "dev_scores": {f"{r.lr:g}": r.best_dev for r in sweep.rates if np.isfinite(r.best_dev)},
        "chosen_lr": sweep.chosen.lr,
        "best_step": sweep.chosen.best_step,
        "layer_weights": sweep.head.featurizer.weights().detach().tolist(),
        "config": cfg.to_dict(),
        "splits": {"train": len(rows["train"]), "dev": len(rows["dev"]), "test": len(rows["test"]), "dev_carved_from_train": carved},
    }
    S.validate("result", result)
    if out_dir is not None:
        write_result(Path(out_dir), result)
    return result


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    tmp = path.with_name(f".result.json.{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return path
