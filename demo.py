"""The demo: the whole pipeline on the built-in synthetic corpus with the two handcrafted baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.probe import tasks
from avsuperb.probe.run import open_for_task, run_probe
from avsuperb.store.reader import StoreReader

log = logging.getLogger(__name__)

DEMO_MODELS = ("fbank", "hog")


def run_demo(workdir: Path, root: Path | None, overrides: list[str], progress: bool = True) -> str:
    """Extract (or resume) both stores, probe every task the stores have labels for, return the table."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, dict[str, float]]] = []
    chance: dict[str, float] = {}
    for model in DEMO_MODELS:
        store = workdir / f"{model}-synthetic.zarr"
        summary = run_extraction(ExtractOptions(model, "synthetic", store, root, progress=progress))
        log.info(summary.line())
        with StoreReader(store) as reader:
            names = [t for t in tasks.available() if tasks.get(t).label in reader.label_names]
            tracks = reader.tracks
            for name in names:
                col = reader.table([tasks.get(name).label]).labels[tasks.get(name).label]
                chance[name] = 100.0 / len(col.classes)
        for track in tracks:
            scores: dict[str, float] = {}
            for name in names:
                task = tasks.get(name)
                cfg = task.config.override(overrides)
                with open_for_task(store, task) as reader:
                    result = run_probe(store, name, track, cfg, workdir / "results" / f"{model}-synthetic" / f"{name}-{track}", progress, reader)
                scores[name] = result["test_score"]
            rows.append((model, track, scores))
    return format_table(rows, chance, workdir)


def format_table(rows: list[tuple[str, str, dict[str, float]]], chance: dict[str, float], workdir: Path) -> str:
    names = sorted(chance)
    header = f"{'upstream':<10}{'track':<8}" + "".join(f"{n + ' acc %':>12}" for n in names)
    lines = ["", "Test scores on the synthetic corpus (learning rate chosen on dev):", header, "-" * len(header)]
    for model, track, scores in rows:
        lines.append(f"{model:<10}{track:<8}" + "".join(f"{scores.get(n, np.nan):>12.1f}" for n in names))
    lines.append(f"{'chance':<18}" + "".join(f"{chance[n]:>12.1f}" for n in names))
    lines.append(f"\nStores and result.json files are under {workdir}/.")
    return "\n".join(lines)
