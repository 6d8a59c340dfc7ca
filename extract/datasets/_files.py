"""What the file-based adapters share: finding metadata and media under a root, accounting for
malformed rows and absent files, and placing a labelled segment inside its media file."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import Clip, DatasetError
from avsuperb.extract.media import MediaInfo

log = logging.getLogger(__name__)

MEDIA_EXTS = (".mp4", ".mkv", ".webm", ".avi")
SHOWN = 5  # ids / rows named in a log line before "…"


def find_file(root: Path, names: Sequence[str], dirs: Sequence[str], *, dataset: str, hint: str) -> Path:
    """The first of root/dir/name that is a file; DatasetError naming the expected path otherwise."""
    for d in dirs:
        for n in names:
            p = root / d / n
            if p.is_file():
                return p
    others = [f"{d}/" for d in dirs[1:]]
    also = f" (also looked in {', '.join(others)})" if others else ""
    raise DatasetError(f"{dataset}: {root / dirs[0] / names[0]} not found{also}; expected {hint}")


def existing_dirs(root: Path, names: Iterable[str]) -> list[Path]:
    seen: list[Path] = []
    for n in names:
        p = root / n
        if p.is_dir() and p not in seen:
            seen.append(p)
    return seen


def scan_media(dirs: Iterable[Path], exts: Sequence[str] = MEDIA_EXTS, recursive: bool = False) -> dict[str, Path]:
    """File stem -> path for every media file in `dirs` (the first directory listed wins a tie)."""
    found: dict[str, Path] = {}
    for d in dirs:
        walk = os.walk(d) if recursive else [(str(d), [], os.listdir(d))]
        for top, _, names in walk:
            for n in sorted(names):
                stem, ext = os.path.splitext(n)
                if ext.lower() in exts and stem not in found:
                    found[stem] = Path(top) / n
    return found


class RowLog:
    """Counts the data rows of one metadata file and the malformed ones, which are skipped with a
    warning; a file whose every row is malformed (or that has none) is a DatasetError."""

    def __init__(self, dataset: str, source: Path) -> None:
        self.dataset, self.source = dataset, source
        self.rows = 0
        self.skipped: list[tuple[int, str]] = []

    def ok(self) -> None:
        self.rows += 1

    def skip(self, line: int, reason: str) -> None:
        self.rows += 1
        self.skipped.append((line, reason))
        if len(self.skipped) <= SHOWN:
            log.warning("%s: skipping %s line %d: %s", self.dataset, self.source.name, line, reason)

    def finish(self) -> int:
        if self.rows == 0:
            raise DatasetError(f"{self.dataset}: {self.source} has no usable rows")
        if len(self.skipped) == self.rows:
            line, reason = self.skipped[0]
            raise DatasetError(
                f"{self.dataset}: every row of {self.source} is malformed (line {line}: {reason}); is it the right file?"
            )
        if len(self.skipped) > SHOWN:
            log.warning("%s: skipped %d of %d rows of %s", self.dataset, len(self.skipped), self.rows, self.source.name)
        return len(self.skipped)


def place_segment(file_duration: float, seg_start: float, seg_end: float) -> tuple[float, float]:
    """(start, duration) of the labelled segment [seg_start, seg_end) inside a file.

    Downloaded clips are usually already cut to the segment; a file no longer than the segment
    (plus 0.5 s) is taken as such a cut and used from 0 to its end. A longer file is taken as the
    whole source video, and the segment is cut from it.
    """
    length = seg_end - seg_start
    if file_duration > length + 0.5:
        return seg_start, max(0.0, min(seg_end, file_duration) - seg_start)
    return 0.0, min(file_duration, length)


@dataclass
class Row:
    """One listed clip before its file is found: id, split, labels, the file stems it may have
    on disk (in order of preference), and its labelled range in the source video (None: whole file)."""

    id: str
    split: str
    labels: dict[str, Any]
    stems: tuple[str, ...]
    segment: tuple[float, float] | None = None


@dataclass
class Resolved:
    clips: list[Clip] = field(default_factory=list)
    infos: dict[str, MediaInfo] = field(default_factory=dict)  # clip id -> probe of its file
    missing: list[str] = field(default_factory=list)  # listed, no file on disk
    unreadable: list[str] = field(default_factory=list)  # file present, headers unreadable


def resolve(
    dataset: str, rows: Sequence[Row], media: Mapping[str, Path], cache: ProbeCache, *, keep_unreadable: bool = True
) -> Resolved:
    """Find each row's file, probe it (cached), and make its Clip with the true time range.

    Absent files are reported (logged, listed in `missing`), never fatal. A file whose headers
    cannot be read is listed in `unreadable`; with keep_unreadable it stays in the index with
    the listed segment's length, so that extraction records why it fails.
    """
    out = Resolved()
    found: list[tuple[Row, Path]] = []
    for row in rows:
        path = next((media[s] for s in row.stems if s in media), None)
        if path is None:
            out.missing.append(row.id)
        else:
            found.append((row, path))
    infos = cache.info_all(p for _, p in found)
    for row, path in found:
        info = infos[path]
        seg = row.segment
        if isinstance(info, str):
            out.unreadable.append(row.id)
            if not keep_unreadable or seg is None:
                continue
            start, duration = 0.0, seg[1] - seg[0]
        else:
            out.infos[row.id] = info
            start, duration = (0.0, info.duration) if seg is None else place_segment(info.duration, *seg)
        out.clips.append(Clip(row.id, path, row.split, duration, row.labels, start))
    if out.missing:
        log.warning(
            "%s: %d of %d listed clips have no media file (first: %s)",
            dataset, len(out.missing), len(rows), ", ".join(out.missing[:SHOWN]),
        )
    if out.unreadable:
        log.warning(
            "%s: %d media files could not be read (first: %s)",
            dataset, len(out.unreadable), ", ".join(out.unreadable[:SHOWN]),
        )
    return out
