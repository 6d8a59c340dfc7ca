"""Offline layer analysis: recompute each result's layer contributions from its learned
layer weights and its store's train-split L2 norms, and draw a heatmap (results x layers,
one panel per track). Nothing is retrained or re-extracted."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avsuperb.probe.analysis import layer_contributions
from avsuperb.report.leaderboard import ReportError, collect
from avsuperb.store import StoreError
from avsuperb.store.reader import StoreReader

log = logging.getLogger(__name__)
TRACK_ORDER = ("audio", "video", "fusion")


@dataclass
class Contribution:
    source: str
    label: str  # upstream · dataset · task
    track: str
    weights: list[float]
    l2_mean: list[float]
    contributions: list[float]


def analyze(results: list[dict[str, Any]]) -> list[Contribution]:
    """Contributions of every result, with the L2 norms read from the store it names."""
    out = []
    for r in results:
        source = r.get("_source", r["store"])
        try:
            with StoreReader(Path(r["store"])) as reader:
                l2 = reader.stats(r["track"]).get("l2_mean")
        except StoreError as err:
            raise ReportError(f"{source}: cannot read its store: {err}") from err
        if l2 is None:
            raise ReportError(f"{source}: store {r['store']} has no train-split statistics (extraction unfinished)")
        try:
            contrib = layer_contributions(r["layer_weights"], l2)
        except ValueError as err:
            raise ReportError(f"{source}: {err}; is this the store the result was trained on?") from err
        label = f"{r['upstream']['name']} · {r['dataset']} · {r['task']}"
        out.append(Contribution(str(source), label, r["track"], list(r["layer_weights"]), np.asarray(l2).tolist(), contrib or []))
    return out


def heatmap(items: list[Contribution], path: Path) -> Path:
    """PNG: one panel per track, rows = results, columns = layers, colour = contribution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tracks = [t for t in TRACK_ORDER if any(i.track == t for i in items)]
    heights = [max(1, sum(i.track == t for i in items)) for t in tracks]
    fig, axes = plt.subplots(len(tracks), 1, figsize=(8, 1.2 + 0.45 * sum(heights) + 0.6 * len(tracks)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, track in zip(axes[:, 0], tracks):
        rows = [i for i in items if i.track == track]
        width = max(len(i.contributions) for i in rows)
        grid = np.full((len(rows), width), np.nan)
        for k, i in enumerate(rows):
            grid[k, : len(i.contributions)] = i.contributions
        im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=max(np.nanmax(grid), 1e-9))
        ax.set_yticks(range(len(rows)), [i.label for i in rows], fontsize=8)
        ax.set_xticks(range(width), [str(x) for x in range(width)], fontsize=8)
        ax.set_xlabel("layer")
        ax.set_title(f"{track} track: layer contributions (softmax weight × mean L2 norm, normalised)", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.03)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def run_analyze(paths: list[Path], out_dir: Path) -> list[Path]:
    items = analyze(collect(paths))
    out_dir.mkdir(parents=True, exist_ok=True)
    js = out_dir / "layer_contributions.json"
    tmp = js.with_name(f".{js.name}.{os.getpid()}")
    tmp.write_text(json.dumps([asdict(i) for i in items], indent=2) + "\n")
    os.replace(tmp, js)
    return [js, heatmap(items, out_dir / "layer_contributions.png")]
