"""AudioSet-20K: the balanced training set and the evaluation set, multi-label over 527 classes."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog, Row, existing_dirs, find_file, open_csv, resolve, scan_media
from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import Dataset, DatasetError, DatasetIndex, LabelSpec, register

META_DIRS = ("", "csv", "metadata")
CLASS_FILE = "class_labels_indices.csv"
# official segment list -> (split, media folders tried in order; shared folders come after)
SPLITS = {
    "balanced_train_segments.csv": (
        "train",
        ("balanced_train", "balanced_train_segments", "data/balanced_train/video_mp4_288p", "data/balanced_train"),
    ),
    "eval_segments.csv": ("test", ("eval", "eval_segments", "data/eval/video_mp4_288p", "data/eval")),
}
SHARED_MEDIA_DIRS = ("videos", "video", "")
HINT = (
    "balanced_train_segments.csv, eval_segments.csv and class_labels_indices.csv in the root (or csv/), "
    "clips as balanced_train/<ytid>.mp4 and eval/<ytid>.mp4"
)


def read_classes(path: Path, dataset: str) -> tuple[tuple[str, ...], dict[str, str]]:
    """Class names in index order, and MID -> class name, from class_labels_indices.csv."""
    rows = RowLog(dataset, path)
    by_index: dict[int, tuple[str, str]] = {}
    mids: set[str] = set()
    with open_csv(path, dataset) as f:
        reader = csv.reader(f, skipinitialspace=True)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["index", "mid", "display_name"]:
            raise DatasetError(f"{dataset}: {path} should start with the header index,mid,display_name")
        for row in reader:
            if not row:
                continue
            try:
                index, mid, name = int(row[0]), row[1].strip(), row[2].strip()
            except (ValueError, IndexError):
                rows.skip(reader.line_num, f"expected index,mid,display_name, got {row!r}")
                continue
            if not mid or not name or index in by_index or mid in mids:
                rows.skip(reader.line_num, f"empty or repeated entry {row!r}")
                continue
            by_index[index] = (mid, name)
            mids.add(mid)
            rows.ok()
    rows.finish()
    if sorted(by_index) != list(range(len(by_index))):
        raise DatasetError(f"{dataset}: the indices in {path} are not 0..{len(by_index) - 1} without gaps")
    entries = [by_index[i] for i in range(len(by_index))]
    counts = Counter(name for _, name in entries)
    classes = tuple(name if counts[name] == 1 else f"{name} ({mid})" for mid, name in entries)  # names are unique in practice
    return classes, {mid: cls for (mid, _), cls in zip(entries, classes)}


def file_stems(ytid: str, start: float, end: float) -> tuple[str, ...]:
    """Names a downloaded segment commonly has: the reference's <ytid>.mp4 first, then the
    usual downloader namings with the segment start (and end) in seconds or milliseconds."""
    s, e = int(round(start)), int(round(end))
    return (
        ytid,
        f"Y{ytid}",
        f"{ytid}_{s}",
        f"{ytid}_{start:.3f}",
        f"{ytid}_{s:06d}",
        f"{ytid}_{s}_{e}",
        f"{ytid}_{s:06d}_{e:06d}",
        f"{ytid}_{int(round(start * 1000))}_{int(round(end * 1000))}",
    )


Segment = tuple[str, float, float, list[str]]  # ytid, start, end, class names


def read_segments(path: Path, mid_to_class: dict[str, str], seen: set[str], dataset: str) -> tuple[list[Segment], int]:
    """Rows `YTID, start_seconds, end_seconds, "MID,MID,..."` (lines starting with # are comments)."""
    rows = RowLog(dataset, path)
    out = []
    with open_csv(path, dataset) as f:
        reader = csv.reader(f, skipinitialspace=True)
        for row in reader:
            if not row or row[0].lstrip().startswith("#"):
                continue
            line = reader.line_num
            if len(row) != 4:
                rows.skip(line, f"expected 4 fields (YTID, start, end, labels), got {len(row)}")
                continue
            ytid = row[0].strip()
            try:
                start, end = float(row[1]), float(row[2])
            except ValueError:
                rows.skip(line, f"start/end are not numbers: {row[1]!r}, {row[2]!r}")
                continue
            mids = [m.strip() for m in row[3].split(",") if m.strip()]
            unknown = [m for m in mids if m not in mid_to_class]
            if not ytid or not 0 <= start < end < math.inf or not mids:
                rows.skip(line, f"empty id, bad time range or no labels: {row!r}")
            elif unknown:
                rows.skip(line, f"unknown label MID(s) {', '.join(unknown)} (not in {CLASS_FILE})")
            elif ytid in seen:
                rows.skip(line, f"clip {ytid} is listed twice")
            else:
                seen.add(ytid)
                out.append((ytid, start, end, [mid_to_class[m] for m in mids]))
                rows.ok()
    return out, rows.finish()


@register
class AudioSet20K(Dataset):
    name = "audioset20k"
    tasks: ClassVar[tuple[str, ...]] = ("aec",)
    description = (
        "AudioSet-20K for audio event classification (AEC, 527 classes, multi-label, mAP): "
        "balanced_train -> train, eval -> test, no dev (the prober carves one). Google's official "
        "segment CSVs and class_labels_indices.csv; the clips are downloaded from YouTube by the user."
    )
    layout: ClassVar[str] = """\
<root>/
  balanced_train_segments.csv   # official; also accepted under csv/ or metadata/
  eval_segments.csv
  class_labels_indices.csv      # index,mid,display_name
  balanced_train/<ytid>.mp4     # or data/balanced_train/video_mp4_288p/ (reference), videos/
  eval/<ytid>.mp4               # or data/eval/video_mp4_288p/; also <ytid>_<start>[_<end>].mp4, .mkv, .webm
Clips already cut to their 10 s segment are used whole (from 0 to the file's end);
a file longer than its segment is taken as the full video and the segment is cut from it."""

    def _metadata(self, name: str) -> Path:
        return find_file(self.root, [name], META_DIRS, dataset=self.name, hint=HINT)

    def index(self) -> DatasetIndex:
        segment_files = {name: self._metadata(name) for name in SPLITS}
        classes, mid_to_class = read_classes(self._metadata(CLASS_FILE), self.name)

        rows: list[Row] = []
        media: dict[str, Path] = {}
        skipped, seen = 0, set()
        shared = existing_dirs(self.root, SHARED_MEDIA_DIRS)
        for name, (split, dirs) in SPLITS.items():
            segments, bad = read_segments(segment_files[name], mid_to_class, seen, self.name)
            skipped += bad
            files = scan_media(existing_dirs(self.root, dirs) + shared)
            for ytid, start, end, labels in segments:
                row = Row(ytid, split, {"events": labels}, file_stems(ytid, start, end), (start, end))
                rows.append(row)
                media.update({s: files[s] for s in row.stems if s in files})
        if not media:
            raise DatasetError(f"{self.name}: no media file of any listed clip under {self.root}; expected {HINT}")

        found = resolve(self.name, rows, media, ProbeCache(self.root))
        return DatasetIndex(
            found.clips,
            {"events": LabelSpec("multi", classes, "audio")},
            extra={"missing": found.missing, "unreadable": found.unreadable, "skipped_rows": skipped},
        )
