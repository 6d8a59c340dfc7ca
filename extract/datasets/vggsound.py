"""VGGSound: ~200k 10 s YouTube clips, one of ~310 sound classes each, official train/test split."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog, Row, existing_dirs, find_file, open_csv, resolve, scan_media
from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import Dataset, DatasetError, DatasetIndex, LabelSpec, register

META_FILE = "vggsound.csv"
META_DIRS = ("", "data", "metadata")
MEDIA_DIRS = ("video", "videos", "", "train", "test", "scratch/shared/beegfs/hchen/train_data/VGGSound_final/video")
SEGMENT_SECONDS = 10.0
SPLITS = {"train": "train", "test": "test"}
HINT = "vggsound.csv (rows ytid,start,label,train|test) in the root and clips as video/<ytid>_<start:06d>.mp4"


def file_stems(ytid: str, start: int) -> tuple[str, ...]:
    """The official naming <ytid>_<start:06d> first, then common variants."""
    ms = start * 1000
    return (f"{ytid}_{start:06d}", f"{ytid}_{start}", f"{ytid}_{ms}_{ms + int(SEGMENT_SECONDS * 1000)}")


def read_rows(path: Path, dataset: str) -> tuple[list[tuple[str, int, str, str]], int]:
    """(ytid, start, label, split) of every well-formed row of vggsound.csv; and the skipped count."""
    rows = RowLog(dataset, path)
    out, seen = [], set()
    with open_csv(path, dataset) as f:
        reader = csv.reader(f)
        for row in reader:
            if not row or row[0].lstrip().startswith("#"):
                continue
            line = reader.line_num
            if len(row) != 4:
                rows.skip(line, f"expected 4 fields (ytid, start, label, split), got {len(row)}")
                continue
            ytid, label, split = row[0].strip(), row[2].strip(), row[3].strip()
            try:
                start = float(row[1])
            except ValueError:
                start = -1.0
            if not ytid or not label or start < 0 or not start.is_integer():
                rows.skip(line, f"empty id or label, or start not whole seconds: {row!r}")
            elif split not in SPLITS:
                rows.skip(line, f"split {split!r} is neither train nor test")
            elif (ytid, int(start)) in seen:
                rows.skip(line, f"clip {ytid} at {int(start)} s is listed twice")
            else:
                seen.add((ytid, int(start)))
                out.append((ytid, int(start), label, SPLITS[split]))
                rows.ok()
    return out, rows.finish()


@register
class VGGSound(Dataset):
    name = "vggsound"
    tasks: ClassVar[tuple[str, ...]] = ("aec",)
    description = (
        "VGGSound for audio event classification (AEC, single label, accuracy): the official "
        "vggsound.csv train/test split, no dev (the prober carves one); classes are the sorted set of "
        "labels in the CSV. Clips are downloaded from YouTube by the user (10 s from each listed start)."
    )
    layout: ClassVar[str] = """\
<root>/
  vggsound.csv                  # official, no header: ytid,start,label,train|test (also under data/, metadata/)
  video/<ytid>_<start:06d>.mp4  # or videos/, train/ + test/, or the root itself; .mkv and .webm too
Clips already cut to their 10 s segment are used whole (from 0 to the file's end);
a file longer than that is taken as the full video and [start, start + 10 s) is cut from it."""

    def index(self) -> DatasetIndex:
        meta = find_file(self.root, [META_FILE], META_DIRS, dataset=self.name, hint=HINT)
        listed, skipped = read_rows(meta, self.name)
        classes = tuple(sorted({label for _, _, label, _ in listed}))
        rows = [
            Row(f"{ytid}_{start:06d}", split, {"events": label}, file_stems(ytid, start), (start, start + SEGMENT_SECONDS))
            for ytid, start, label, split in listed
        ]
        media = scan_media(existing_dirs(self.root, MEDIA_DIRS))
        if not any(s in media for row in rows for s in row.stems):
            raise DatasetError(f"{self.name}: no media file of any listed clip under {self.root}; expected {HINT}")
        found = resolve(self.name, rows, media, ProbeCache(self.root))
        return DatasetIndex(
            found.clips,
            {"events": LabelSpec("class", classes, "audio")},
            extra={"missing": found.missing, "unreadable": found.unreadable, "skipped_rows": skipped},
        )
