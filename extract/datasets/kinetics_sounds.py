"""Kinetics-Sounds: the 32 Kinetics-400 action classes that can be heard, K400's train/val/test."""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog, Row, existing_dirs, is_file, open_csv, resolve, scan_media
from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import Dataset, DatasetError, DatasetIndex, LabelSpec, register

log = logging.getLogger(__name__)

# The 32-class Kinetics-Sounds of the AV-SUPERB reference (class_num 32), as defined by SeLaVi
# (Asano et al. 2020, facebookresearch/selavi), in K400's spelling and sorted. The reference's
# lists carry class indices 0-31, read here as indices into this sorted tuple.
KINETICS_SOUNDS_CLASSES: tuple[str, ...] = (
    "blowing nose", "blowing out candles", "bowling", "chopping wood", "dribbling basketball",
    "laughing", "mowing lawn", "playing accordion", "playing bagpipes", "playing bass guitar",
    "playing clarinet", "playing drums", "playing guitar", "playing harmonica", "playing keyboard",
    "playing organ", "playing piano", "playing saxophone", "playing trombone", "playing trumpet",
    "playing violin", "playing xylophone", "ripping paper", "shoveling snow", "shuffling cards",
    "singing", "stomping grapes", "strumming guitar", "tap dancing", "tapping guitar",
    "tapping pen", "tickling",
)  # fmt: skip

SPLITS = {"train": "train", "val": "dev", "test": "test"}  # K400 name -> our split
LIST_DIRS = ("kinetics_sounds", "")  # reference lists {split}_data_path.csv: relative_path,class_index
ANNOTATION_DIR = "annotations"  # K400 annotations {split}.csv: label,youtube_id,time_start,time_end,...
REPLACEMENT_DIR = "replacement"  # the CVDF mirror's replacements for corrupted K400 videos
SEGMENT = re.compile(r"_(\d{6})_(\d{6})$")
HINT = (
    "the Kinetics-400 folder with train/, val/, test/ (<ytid>_<start:06d>_<end:06d>.mp4) and either the reference's "
    "kinetics_sounds/{train,val,test}_data_path.csv or annotations/{train,val,test}.csv"
)


def normalise(label: str) -> str:
    return " ".join(label.replace("_", " ").strip().strip('"').lower().split())


def read_reference_list(path: Path, split: str, seen: set[str], dataset: str) -> tuple[list[tuple[Row, str]], int]:
    """Rows `relative_path,class_index` of the reference's {split}_data_path.csv."""
    rows = RowLog(dataset, path)
    out = []
    with open_csv(path, dataset) as f:
        reader = csv.reader(f)
        for row in reader:
            if not row:
                continue
            line = reader.line_num
            try:
                rel, index = row[0].strip(), int(row[1])
                label = KINETICS_SOUNDS_CLASSES[index] if index >= 0 and len(row) == 2 else None
            except (ValueError, IndexError):
                label = None
            if label is None or not rel:
                rows.skip(line, f"expected relative_path,class_index (0-31), got {row!r}")
                continue
            clip_id = Path(rel).stem
            if clip_id in seen:
                rows.skip(line, f"clip {clip_id} is listed twice")
                continue
            seen.add(clip_id)
            out.append((Row(clip_id, split, {"action": label}, (clip_id,), segment_of(clip_id)), rel))
            rows.ok()
    return out, rows.finish()


def read_annotations(path: Path, split: str, seen: set[str], dataset: str) -> tuple[list[tuple[Row, str]], int]:
    """Kinetics-Sounds rows of a K400 annotation CSV (header label,youtube_id,time_start,time_end[,split,...])."""
    rows = RowLog(dataset, path)
    out = []
    wanted = set(KINETICS_SOUNDS_CLASSES)
    with open_csv(path, dataset) as f:
        reader = csv.DictReader(f)
        need = {"label", "youtube_id", "time_start", "time_end"}
        if not need <= set(reader.fieldnames or ()):
            columns = ", ".join(sorted(need))
            raise DatasetError(f"{dataset}: {path} should have the columns {columns} (a Kinetics-400 annotation file)")
        for row in reader:
            line = reader.line_num
            label = normalise(row.get("label") or "")
            if label not in wanted:
                continue  # one of the other 368 Kinetics-400 classes
            try:
                ytid, t0, t1 = row["youtube_id"].strip(), int(float(row["time_start"])), int(float(row["time_end"]))
            except (ValueError, TypeError, AttributeError, OverflowError):  # overflow: an infinite time
                rows.skip(line, f"time_start/time_end are not numbers: {row!r}")
                continue
            clip_id = f"{ytid}_{t0:06d}_{t1:06d}"
            if not ytid or not 0 <= t0 < t1:
                rows.skip(line, f"empty id or bad time range: {row!r}")
            elif clip_id in seen:
                rows.skip(line, f"clip {clip_id} is listed twice")
            else:
                seen.add(clip_id)
                out.append((Row(clip_id, split, {"action": label}, (clip_id,), (float(t0), float(t1))), ""))
                rows.ok()
    return out, rows.finish()


def segment_of(stem: str) -> tuple[float, float] | None:
    m = SEGMENT.search(stem)
    if m is None or int(m.group(1)) >= int(m.group(2)):
        return None  # no segment in the name, or a misnamed file: used whole
    return float(m.group(1)), float(m.group(2))


@register
class KineticsSounds(Dataset):
    name = "kinetics_sounds"
    fills_missing_streams = True
    tasks: ClassVar[tuple[str, ...]] = ("ar",)
    description = (
        "Kinetics-Sounds for action recognition (AR, 32 classes, accuracy): K400 train -> train, "
        "val -> dev, test -> test, restricted to the 32 audible classes; the reference's clip lists "
        "when present, else the K400 annotation CSVs. Videos from the CVDF Kinetics-400 mirror. "
        "Clips without audio or video are kept and listed in extra['no_audio'] / extra['no_video']."
    )
    layout: ClassVar[str] = """\
<root>/                              # the Kinetics-400 folder (CVDF mirror: k400/)
  train/<ytid>_<start:06d>_<end:06d>.mp4
  val/...   test/...                 # also train/<class name>/<file> (class folders)
  replacement/...                    # optional: replacements for corrupted videos, preferred
  kinetics_sounds/{train,val,test}_data_path.csv   # the reference's lists (relative_path,class_index 0-31)
  annotations/{train,val,test}.csv                 # or K400's annotations (label,youtube_id,time_start,time_end,...)
Clips are used whole (they are cut to their <=10 s segment). A clip without an audio or video
stream stays in the index, listed in extra['no_audio'] / extra['no_video'], for the decode step
to fill with silence / blank frames as the reference does."""

    def _metadata(self) -> tuple[str, dict[str, Path]]:
        """('reference' | 'annotations', K400 split -> file); the reference's lists win when both are there."""
        lists = {s: [d for d in LIST_DIRS if (self.root / d / f"{s}_data_path.csv").is_file()] for s in SPLITS}
        if all(lists.values()):
            return "reference", {s: self.root / lists[s][0] / f"{s}_data_path.csv" for s in SPLITS}
        notes = {s: self.root / ANNOTATION_DIR / f"{s}.csv" for s in SPLITS}
        if all(p.is_file() for p in notes.values()):
            return "annotations", notes
        if any(lists.values()):
            missing = next(s for s in SPLITS if not lists[s])
            raise DatasetError(f"{self.name}: {self.root / LIST_DIRS[0] / f'{missing}_data_path.csv'} not found; expected {HINT}")
        missing = next(p for p in notes.values() if not p.is_file())
        raise DatasetError(
            f"{self.name}: {missing} not found (nor {self.root / LIST_DIRS[0] / 'train_data_path.csv'}); expected {HINT}"
        )

    def _media(self, listed: list[tuple[Row, str]]) -> dict[str, Path]:
        """Clip id -> file: a replacement video first, then the listed path, then split or class folders."""
        replaced = scan_media(existing_dirs(self.root, [REPLACEMENT_DIR]), recursive=True)
        inverse = {ours: k400 for k400, ours in SPLITS.items()}
        out: dict[str, Path] = {}
        for row, rel in listed:
            if row.id in replaced:
                out[row.id] = replaced[row.id]
                continue
            folder = self.root / inverse[row.split]
            label = row.labels["action"]
            tries = [self.root / rel] if rel else []
            tries += [folder / sub / f"{row.id}.mp4" for sub in ("", label, label.replace(" ", "_"))]
            path = next((p for p in tries if is_file(p)), None)
            if path is not None:
                out[row.id] = path
        return out

    def index(self) -> DatasetIndex:
        source, files = self._metadata()
        read = read_reference_list if source == "reference" else read_annotations
        listed: list[tuple[Row, str]] = []
        skipped, seen = 0, set()
        for k400_split, path in files.items():
            rows, bad = read(path, SPLITS[k400_split], seen, self.name)
            listed += rows
            skipped += bad
        media = self._media(listed)
        if not media:
            raise DatasetError(f"{self.name}: no media file of any listed clip under {self.root}; expected {HINT}")

        found = resolve(self.name, [row for row, _ in listed], media, ProbeCache(self.root))
        no_audio = [c.id for c in found.clips if c.id in found.infos and not found.infos[c.id].has_audio]
        no_video = [c.id for c in found.clips if c.id in found.infos and not found.infos[c.id].has_video]
        if no_audio or no_video:
            log.info("%s: %d clips have no audio stream, %d no video stream", self.name, len(no_audio), len(no_video))
        return DatasetIndex(
            found.clips,
            {"action": LabelSpec("class", KINETICS_SOUNDS_CLASSES, "video")},
            extra={
                "missing": found.missing,
                "unreadable": found.unreadable,
                "skipped_rows": skipped,
                "no_audio": no_audio,
                "no_video": no_video,
                "metadata": source,
            },
        )
