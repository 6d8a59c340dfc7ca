"""Probe one task on one track of a store: check, split, train, score, write result.json."""

from __future__ import annotations

import json
import logging
import os
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from avsuperb import __version__, schemas as S
from avsuperb.probe import tasks
from avsuperb.probe.analysis import layer_contributions
from avsuperb.probe.config import TrainConfig, load_config
from avsuperb.probe.data import TaskData, carve_dev, labelled, split_rows
from avsuperb.probe.tasks import Outcome, Task, TaskError
from avsuperb.store import StoreError
from avsuperb.store.reader import StoreReader

log = logging.getLogger(__name__)


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def open_for_task(path: Path, task: Task) -> StoreReader:
    """Open a store and check that it is finished and has the task's labels."""
    reader = StoreReader(path)
    try:
        writers = reader.writers()
        if writers:  # even a complete store: a re-run may be rewriting its statistics
            raise StoreError(f"{path} is being written by avsuperb-extract (process {', '.join(writers)}); "
                             "probe it once that run has finished")
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
        if task.frame_level and not reader.attrs["frames"]:
            raise TaskError(f"task {task.name!r} needs frame-level features, and {path} holds none; extract with --frames")
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


def run_probe(
    path: Path,
    task_name: str,
    track: str,
    cfg: TrainConfig | None = None,
    out_dir: Path | None = None,
    progress: bool = True,
    reader: StoreReader | None = None,
    device: str | None = None,
) -> dict[str, Any]:
    """Train and score the task on one track; returns (and, given out_dir, writes) the result."""
    task = tasks.get(task_name)
    own = reader is None
    reader = reader or open_for_task(path, task)
    try:
        resolve_tracks(reader, track)
        if out_dir is not None:
            check_out_dir(Path(out_dir), reader, task.name, track)
        cfg = cfg or load_config(task.name, reader.dataset)
        labels = [task.label] + ([cfg.folds_by] if cfg.folds_by else [])
        missing = [name for name in labels if name not in reader.label_names]
        if missing:
            raise TaskError(f"config asks for folds by {missing[0]!r}, a label the store does not have")
        table = reader.table(labels)
        label = table.labels[task.label]
        done = reader.status() == S.STATUS_DONE
        usable = done & labelled(label)
        skipped = int(np.sum(~done & labelled(label)))
        if skipped:
            log.warning("%d clips failed extraction and are left out", skipped)
        device = device or default_device()
        with intra_op_threads(cfg.threads):
            outcome, splits, folds = _train(reader, track, table, label, usable, cfg, task, device, progress)
        stats = reader.stats(track)
        upstream, dataset = reader.upstream, reader.dataset
    finally:
        if own:
            reader.close()

    if not np.isfinite(outcome.test_score) or not outcome.dev_scores:
        raise TaskError(f"training diverged at every learning rate ({', '.join(map(str, cfg.lrs))})")
    result: dict[str, Any] = {
        "schema_version": S.RESULT_SCHEMA_VERSION,
        "software_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "task": task.name,
        "dataset": dataset,
        "upstream": upstream,
        "track": track,
        "store": str(Path(path).resolve()),
        "metric": {"name": outcome.metric.name, "higher_is_better": outcome.metric.higher_is_better},
        "test_score": outcome.test_score,
        "dev_scores": outcome.dev_scores,
        "chosen_lr": outcome.chosen_lr,
        "best_step": outcome.best_step,
        "layer_weights": outcome.layer_weights,
        "layer_contributions": layer_contributions(outcome.layer_weights, stats.get("l2_mean")),
        "config": cfg.to_dict(),
        "splits": splits,
        "device": device,
        **outcome.extra,
    }
    if folds is not None:
        result["folds"] = folds
    S.validate("result", result)
    if out_dir is not None:
        write_result(Path(out_dir), result)
    return result


def _train(reader, track, table, label, usable, cfg, task, device, progress):
    """The task's outcome, its split counts and (leave-one-out) its folds."""
    if cfg.folds_by:
        return _run_folds(reader, track, table, label, usable, cfg, task, device, progress)
    rows, carved = split_rows(table, label, usable, cfg)
    data = TaskData(reader, track, table, label, rows, carved, device)
    outcome = task.train(data, cfg, progress)
    return outcome, _split_counts(data.rows, carved), None  # the task may leave clips out


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """torch's intra-op thread count set to `n` for the block, then restored."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _split_counts(rows: dict[str, np.ndarray], carved: bool) -> dict[str, Any]:
    return {"train": len(rows["train"]), "dev": len(rows["dev"]), "test": len(rows["test"]), "dev_carved_from_train": carved}


def _run_folds(reader, track, table, label, usable, cfg, task, device, progress):
    """Leave-one-group-out (IEMOCAP: session): each group is test once; dev is carved from the rest."""
    groups = table.labels[cfg.folds_by]
    values = np.unique(groups.values[usable & labelled(groups)])
    if len(values) < 2:
        raise TaskError(f"folds by {cfg.folds_by!r} need at least two groups; the store has {len(values)}")
    folds, outcomes = [], []
    for v in values:
        test = np.flatnonzero(usable & (groups.values == v))
        rest = np.flatnonzero(usable & labelled(groups) & (groups.values != v))
        train, dev = carve_dev(rest, label, cfg.dev_fraction, cfg.seed)
        rows = {"train": train, "dev": dev, "test": test}
        name = groups.classes[v] if groups.classes else str(v)
        log.info("fold %s: train %d, dev %d, test %d", name, len(train), len(dev), len(test))
        outcome = task.train(TaskData(reader, track, table, label, rows, True, device), cfg, progress)
        outcomes.append(outcome)
        folds.append({"fold": name, "test_score": outcome.test_score, "dev_scores": outcome.dev_scores,
                      "chosen_lr": outcome.chosen_lr, "layer_weights": outcome.layer_weights,
                      "splits": _split_counts(rows, True)})
    lrs = [f"{lr:g}" for lr in cfg.lrs]
    mean_dev = {lr: float(np.mean([o.dev_scores[lr] for o in outcomes])) for lr in lrs if all(lr in o.dev_scores for o in outcomes)}
    merged = Outcome(
        test_score=float(np.mean([o.test_score for o in outcomes])),
        dev_scores=mean_dev,
        chosen_lr=Counter(o.chosen_lr for o in outcomes).most_common(1)[0][0],
        best_step=int(np.median([o.best_step for o in outcomes])),
        layer_weights=np.mean([o.layer_weights for o in outcomes], axis=0).tolist(),
        metric=outcomes[0].metric,
    )
    splits = {"train": int(np.mean([f["splits"]["train"] for f in folds])), "dev": int(np.mean([f["splits"]["dev"] for f in folds])),
              "test": int(sum(f["splits"]["test"] for f in folds)), "dev_carved_from_train": True}
    return merged, splits, folds


def check_out_dir(out_dir: Path, reader: StoreReader, task: str, track: str) -> None:
    """A result already in `out_dir` is replaced only by a re-run of the same probe: a result of
    another upstream, dataset, task or track there (or a file that is no result) is refused, not lost."""
    path = out_dir / "result.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
        was = (old["upstream"]["name"], old["upstream"].get("checkpoint_sha256"), old["dataset"], old["task"], old["track"])
    except (OSError, ValueError, KeyError, TypeError):
        raise StoreError(f"{path} exists and is not an avsuperb result; choose another --out") from None
    now = (reader.upstream["name"], reader.upstream.get("checkpoint_sha256"), reader.dataset, task, track)
    if was != now:
        raise StoreError(f"{path} holds the {was[3]} result of upstream {was[0]!r} on {was[2]!r} ({was[4]} track), "
                         f"not of this store ({now[0]!r} on {now[2]!r}, {now[3]}, {now[4]} track); choose another --out")


def write_result(out_dir: Path, result: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "result.json"
    tmp = path.with_name(f".result.json.{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2) + "\n")
    os.replace(tmp, path)
    return path
