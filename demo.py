"""The demo: the whole pipeline on the built-in synthetic corpus with the two handcrafted baselines."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from avsuperb.extract.datasets.synthetic_gen import SYNTHETIC_VERSION
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.probe import tasks
from avsuperb.probe.config import load_config
from avsuperb.probe.run import open_for_task, run_probe
from avsuperb.store.reader import StoreReader
from avsuperb.store.table import ClipTable

log = logging.getLogger(__name__)

DEMO_MODELS = ("fbank", "hog")


def run_demo(workdir: Path, root: Path | None, overrides: list[str], progress: bool = True) -> str:
    """Extract (or resume) both stores, probe every task the stores have labels for, return the table."""
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[str, str, dict[str, float]]] = []
    columns: dict[str, tuple[str, bool, float]] = {}  # task -> (metric, higher is better, chance)
    for model in DEMO_MODELS:
        # named by corpus version: a store of an older corpus (which extraction would refuse to
        # append to) stays as it is, and the new corpus gets its own
        store = workdir / f"{model}-synthetic-v{SYNTHETIC_VERSION}.zarr"
        summary = run_extraction(ExtractOptions(model, "synthetic", store, root, progress=progress))
        log.info(summary.line())
        with StoreReader(store) as reader:
            names = [t for t in tasks.available() if tasks.get(t).label in reader.label_names]
            tracks = reader.tracks
            table = reader.table([tasks.get(n).label for n in names])
        for track in tracks:
            scores: dict[str, float] = {}
            for name in names:
                cfg = load_config(name, "synthetic", overrides)
                with open_for_task(store, tasks.get(name)) as reader:
                    out = workdir / "results" / f"{model}-synthetic" / f"{name}-{track}"
                    result = run_probe(store, name, track, cfg, out, progress, reader)
                scores[name] = result["test_score"]
                metric = result["metric"]
                columns[name] = (metric["name"], metric["higher_is_better"], chance_level(metric["name"], table, tasks.get(name).label))
            rows.append((model, track, scores))
    return format_table(rows, columns, workdir)


def chance_level(metric: str, table: ClipTable, label: str) -> float:
    """What a model that knows nothing scores on test: uniform guessing, random ranking, EER 50."""
    if metric == "eer":
        return 50.0
    if metric == "cer":
        return 100.0  # an empty transcript
    col = table.labels[label]
    test = table.split_rows("test")
    if metric == "map":
        return float(np.asarray(col.values)[test].mean() * 100)
    return 100.0 / len(col.classes)


def format_table(rows: list[tuple[str, str, dict[str, float]]], columns: dict[str, tuple[str, bool, float]], workdir: Path) -> str:
    names = sorted(columns)
    heads = [f"{n} {columns[n][0]} {'↑' if columns[n][1] else '↓'}" for n in names]
    header = f"{'upstream':<10}{'track':<8}" + "".join(f"{h:>16}" for h in heads)
    lines = ["", "Test scores (%) on the synthetic corpus, learning rate chosen on dev:", header, "-" * len(header)]
    for model, track, scores in rows:
        lines.append(f"{model:<10}{track:<8}" + "".join(f"{scores.get(n, np.nan):>16.1f}" for n in names))
    lines.append(f"{'chance':<18}" + "".join(f"{columns[n][2]:>16.1f}" for n in names))
    lines.append(f"\nStores and result.json files are under {workdir}/.")
    return "\n".join(lines)
