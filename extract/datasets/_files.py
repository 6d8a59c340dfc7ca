"""What the file-based adapters share: finding metadata and media under a root, accounting for
malformed rows and absent files, and placing a labelled segment inside its media file."""

from __future__ import annotations

import csv
import io
import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import Clip, DatasetError
from avsuperb.extract.media import MediaInfo

log = logging.getLogger(__name__)

MEDIA_EXTS = (".mp4", ".mkv", ".webm", ".avi")
SHOWN = 5  # ids named in a log line before "…"
SHOWN_ROWS = 10  # malformed rows logged one by one before only a count is given


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


def is_file(path: Path) -> bool:
    """Path.is_file, but False rather than OSError for a name the file system cannot hold (too long)."""
    return os.path.isfile(path)


def read_text(path: Path, dataset: str) -> str:
    """A metadata file's text, newlines as written; a one-line DatasetError when the file cannot be
    read or is not UTF-8 (a leading byte-order mark is dropped)."""
    try:
        return path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"{dataset}: {path} cannot be read as UTF-8 text ({type(err).__name__}: {err})") from err


@contextmanager
def open_csv(path: Path, dataset: str) -> Iterator[io.StringIO]:
    """A metadata CSV to hand to a csv reader; a csv.Error while reading it (a field past the csv
    module's size limit: an unclosed quote early in a large file) becomes a one-line DatasetError."""
    with io.StringIO(read_text(path, dataset), newline="") as f:
        try:
            yield f
        except csv.Error as err:
            raise DatasetError(f"{dataset}: {path} cannot be read as CSV ({err}); is a quote left open?") from err


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
    """Malformed metadata rows, skipped with a warning (the first few one by one, then a count).

    With `source` (one metadata file) an int `where` is a line of that file, `ok()` counts the
    good rows and `finish()` needs no argument; a corpus read from many files passes its own
    `where` strings and tells `finish` how many rows it kept."""

    def __init__(self, dataset: str, source: Path | None = None) -> None:
        self.dataset, self.source = dataset, source
        self.rows = 0  # rows seen: good ones counted by ok(), plus the skipped
        self.count = 0  # rows skipped
        self.first = ""

    def ok(self) -> None:
        self.rows += 1

    def skip(self, where: int | str, reason: str) -> None:
        self.rows += 1
        self.count += 1
        if isinstance(where, int) and self.source is not None:
            where = f"{self.source.name} line {where}"
        message = f"{where}: {reason}".replace("\r", "\\r").replace("\n", "\\n")  # one line, whatever the row held
        self.first = self.first or message
        if self.count <= SHOWN_ROWS:
            log.warning("%s: skipping malformed row %s", self.dataset, message)

    def finish(self, kept: int | None = None) -> int:
        """The skipped count, after logging the total. A DatasetError when rows were read and every
        one was malformed, or when a single `source` file has no rows at all. `kept` defaults
        to the rows counted by ok()."""
        if kept is None:
            kept = self.rows - self.count
            if self.rows == 0:
                raise DatasetError(f"{self.dataset}: {self.source} has no usable rows")
        if self.count > SHOWN_ROWS:
            log.warning("%s: %d malformed rows skipped in all", self.dataset, self.count)
        if kept == 0 and self.count:
            what = f"every row of {self.source}" if self.source is not None else f"every one of the {self.count} metadata rows"
            raise DatasetError(f"{self.dataset}: {what} is malformed ({self.first}); is --root the right folder?")
        return self.count


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
    empty: list[str] = field(default_factory=list)  # listed segment empty, or past the end of its file


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
        if not duration > 0:
            out.empty.append(row.id)
            continue
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
    if out.empty:
        log.warning(
            "%s: %d listed segments are empty or past the end of their media file; left out (first: %s)",
            dataset, len(out.empty), ", ".join(out.empty[:SHOWN]),
        )
    return out
