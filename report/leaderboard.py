"""The AV-SUPERB leaderboard (the paper's Table 1) built offline from saved result.json files.

`collect` finds and validates results, `build` arranges them into rows (track, upstream) and
columns (the 7 benchmark datasets, then any others), `to_markdown` / `to_csv` render it and
`write` saves both. Only the standard library and the result schema are used: no torch, no
extract code.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from avsuperb import schemas

logger = logging.getLogger(__name__)

RESULT_NAME = "result.json"
MARKDOWN_NAME = "leaderboard.md"
CSV_NAME = "leaderboard.csv"
# Key that `collect` adds to each result: the file it was read from (used to name duplicates).
SOURCE_KEY = "_source"
MISSING = "–"  # en dash, as in the paper's tables

TRACK_LABELS: dict[str, str] = {"audio": "Audio-only", "video": "Video-only", "fusion": "Audio-visual fusion"}
METRIC_LABELS: dict[str, str] = {"map": "mAP", "accuracy": "Acc", "cer": "CER", "wer": "WER", "eer": "EER"}


class ReportError(Exception):
    """Results that cannot be reported: a missing path, a broken or invalid result file, nothing found."""


@dataclass(frozen=True)
class Column:
    """One leaderboard column: the results of one task on one dataset with one metric."""

    dataset: str
    title: str
    task: str
    metric: str
    higher_is_better: bool
    benchmark: bool = True  # one of the 7 that make up the overall score

    @property
    def key(self) -> str:
        """Column id (CSV header): the dataset name, or dataset:task:metric for an extra column."""
        return self.dataset if self.benchmark else f"{self.dataset}:{self.task}:{self.metric}"

    @property
    def unit(self) -> str:
        """Second header line: metric and arrow ("mAP ↑", "CER ↓"); extra columns name their task too."""
        label = f"{METRIC_LABELS.get(self.metric, self.metric)} {'↑' if self.higher_is_better else '↓'}"
        return label if self.benchmark else f"{self.task.upper()}, {label}"


# The 7 benchmark columns in the order of the paper's Table 1; `dataset` is the stores' dataset name.
BENCHMARK: tuple[Column, ...] = (
    Column("audioset20k", "AS-20K", "aec", "map", True),
    Column("vggsound", "VGGSound", "aec", "accuracy", True),
    Column("kinetics_sounds", "Kinetics-Sounds", "ar", "accuracy", True),
    Column("ucf101", "UCF101", "ar", "accuracy", True),
    Column("lrs3", "LRS3-TED", "asr", "cer", False),
    Column("voxceleb2", "VoxCeleb2", "asv", "eer", False),
    Column("iemocap", "IEMOCAP", "er", "accuracy", True),
)
_BY_IDENTITY: dict[tuple[str, str, str], Column] = {(c.dataset, c.task, c.metric): c for c in BENCHMARK}


@dataclass
class Row:
    """One upstream on one track: test scores by column key, and the overall score when complete."""

    track: str
    upstream: str
    cells: dict[str, float] = field(default_factory=dict)
    overall: float | None = None


@dataclass
class Leaderboard:
    """Columns (the 7 benchmark ones, then extras sorted) and rows (by track, then first appearance)."""

    columns: list[Column]
    rows: list[Row]


@dataclass(frozen=True)
class _Entry:
    score: float
    created: datetime
    index: int
    source: str


def collect(paths: Sequence[Path | str]) -> list[dict[str, Any]]:
    """Read and validate every result: each path is a result file or a folder searched recursively.

    Each returned document carries the file it came from under SOURCE_KEY.
    """
    if not paths:
        raise ReportError("no result paths given")
    files: list[Path] = []
    seen: set[Path] = set()
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob(RESULT_NAME) if p.is_file())
            if not found:
                logger.warning("no %s under %s", RESULT_NAME, path)
        elif path.is_file():
            found = [path]
        else:
            raise ReportError(f"{path}: no such file or folder")
        for file in found:
            real = file.resolve()
            if real not in seen:
                seen.add(real)
                files.append(file)
    if not files:
        raise ReportError(f"no {RESULT_NAME} found under {', '.join(map(str, paths))}")
    results = [_load(file) for file in files]
    logger.info("collected %d results", len(results))
    return results


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _load(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ReportError(f"{path}: not valid JSON (not UTF-8 text: {err.reason})") from None
    except OSError as err:
        raise ReportError(f"{path}: cannot read ({err.strerror or err})") from None
    try:
        doc = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise ReportError(f"{path}: not valid JSON ({err.msg} at line {err.lineno} column {err.colno})") from None
    except ValueError as err:
        raise ReportError(f"{path}: not valid JSON ({err})") from None
    problem = schemas.validation_error("result", doc)
    if problem is not None:
        raise ReportError(f"{path}: not a valid result ({problem})")
    doc[SOURCE_KEY] = str(path)
    return doc


def _created(text: Any, source: str) -> datetime:
    try:
        when = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ReportError(f"{source}: created {text!r} is not an ISO 8601 time") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=timezone.utc)


def _column_of(result: Mapping[str, Any]) -> Column:
    dataset, task = str(result["dataset"]), str(result["task"]).lower()
    metric = str(result["metric"]["name"]).lower()
    column = _BY_IDENTITY.get((dataset, task, metric))
    if column is not None:
        return column
    if any(c.dataset == dataset for c in BENCHMARK):
        logger.info("%s with task %s and metric %s is not a benchmark column; reported as an extra column", dataset, task, metric)
    return Column(dataset, dataset, task, metric, bool(result["metric"]["higher_is_better"]), benchmark=False)


def overall_score(cells: Mapping[str, float]) -> float | None:
    """Mean of the 7 benchmark scores, error rates entered as 100 − value; None unless all 7 are there."""
    if any(c.key not in cells for c in BENCHMARK):
        return None
    values = [cells[c.key] if c.higher_is_better else 100.0 - cells[c.key] for c in BENCHMARK]
    return math.fsum(values) / len(values)


def build(results: Iterable[Mapping[str, Any]]) -> Leaderboard:
    """Arrange results into a leaderboard; of several results for one cell the newest (`created`) wins."""
    entries: dict[tuple[str, str, str], list[_Entry]] = {}
    extras: dict[str, Column] = {}
    first_seen: dict[tuple[str, str], int] = {}
    for index, result in enumerate(results):
        source = str(result.get(SOURCE_KEY) or f"result #{index} (store {result.get('store', '?')})")
        try:
            track, upstream = str(result["track"]), str(result["upstream"]["name"])
            column = _column_of(result)
            score = float(result["test_score"])
            created = _created(result["created"], source)
        except (KeyError, TypeError, ValueError) as err:
            raise ReportError(f"{source}: not a usable result (missing or bad field {err})") from None
        if track not in TRACK_LABELS:
            raise ReportError(f"{source}: unknown track {track!r}; expected one of {', '.join(TRACK_LABELS)}")
        if not math.isfinite(score):
            raise ReportError(f"{source}: test_score is {score}")
        if not column.benchmark:
            extras.setdefault(column.key, column)
        first_seen.setdefault((track, upstream), index)
        entries.setdefault((track, upstream, column.key), []).append(_Entry(score, created, index, source))

    rows = {key: Row(*key) for key in first_seen}
    for (track, upstream, key), group in entries.items():
        newest = max(group, key=lambda e: (e.created, e.index))
        if len(group) > 1:
            others = [e for e in group if e is not newest]
            logger.warning(
                "%s / %s / %s: %d results; keeping %s (created %s), ignoring %s",
                track, upstream, key, len(group), newest.source, newest.created.isoformat(),
                "; ".join(f"{e.source} (created {e.created.isoformat()})" for e in others),
            )
        rows[(track, upstream)].cells[key] = newest.score
    ordered = sorted(rows.values(), key=lambda r: (list(TRACK_LABELS).index(r.track), first_seen[(r.track, r.upstream)]))
    for row in ordered:
        row.overall = overall_score(row.cells)
    columns = [*BENCHMARK, *(extras[k] for k in sorted(extras))]
    return Leaderboard(columns=columns, rows=ordered)


def format_score(value: float | None) -> str:
    """Two decimals, halves rounded up (as printed in the paper); MISSING for None."""
    if value is None:
        return MISSING
    return str(Decimal(f"{value:.9f}").quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def _md_line(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def to_markdown(lb: Leaderboard) -> str:
    """A Table-1-like Markdown table: dataset header, metric/arrow line, one group per track."""
    width = 2 + len(lb.columns)
    lines = [
        _md_line(["Upstream", "Overall", *(c.title for c in lb.columns)]),
        "|" + "|".join([" --- ", *[" ---: "] * (width - 1)]) + "|",
        _md_line(["", "↑", *(c.unit for c in lb.columns)]),
    ]
    for track, label in TRACK_LABELS.items():
        rows = [r for r in lb.rows if r.track == track]
        if not rows:
            continue
        lines.append(_md_line([f"**{label}**", *[""] * (width - 1)]))
        for row in rows:
            cells = [format_score(row.cells.get(c.key)) for c in lb.columns]
            lines.append(_md_line([row.upstream, format_score(row.overall), *cells]))
    return "\n".join(lines) + "\n"


def to_csv(lb: Leaderboard) -> str:
    """One line per row: track, upstream, overall, then every column (full precision; empty when missing)."""
    def num(value: float | None) -> str:
        return "" if value is None else repr(value)

    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["track", "upstream", "overall", *(c.key for c in lb.columns)])
    for row in lb.rows:
        writer.writerow([row.track, row.upstream, num(row.overall), *(num(row.cells.get(c.key)) for c in lb.columns)])
    return out.getvalue()


def _write_atomic(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write(lb: Leaderboard, out_dir: Path) -> list[Path]:
    """Write leaderboard.md and leaderboard.csv into out_dir (created if needed); returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_write_atomic(out_dir / MARKDOWN_NAME, to_markdown(lb)), _write_atomic(out_dir / CSV_NAME, to_csv(lb))]
    logger.info("wrote %s", ", ".join(map(str, paths)))
    return paths
