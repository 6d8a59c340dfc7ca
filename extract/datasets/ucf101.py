"""UCF101, official split 1, restricted (as the reference is) to the videos that have an audio track."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog, Row, existing_dirs, find_file, is_file, read_text, resolve
from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import Dataset, DatasetError, DatasetIndex, LabelSpec, register

log = logging.getLogger(__name__)

LIST_DIRS = ("ucfTrainTestlist", "UCF-101/ucfTrainTestlist")
VIDEO_DIRS = ("UCF-101", "")
CLASS_FILE, TRAIN_LIST, TEST_LIST = "classInd.txt", "trainlist01.txt", "testlist01.txt"
HINT = "ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt and UCF-101/<Class>/v_<Class>_gXX_cYY.avi under the root"


def read_classes(path: Path, dataset: str) -> tuple[str, ...]:
    """Class names in index order from classInd.txt (lines `1 ApplyEyeMakeup`, 1-based)."""
    rows = RowLog(dataset, path)
    by_index: dict[int, str] = {}
    for line_no, line in enumerate(read_text(path, dataset).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdecimal() or int(parts[0]) in by_index:
            rows.skip(line_no, f"expected `<index> <ClassName>`, got {line.strip()!r}")
            continue
        if parts[1] in by_index.values():
            rows.skip(line_no, f"class {parts[1]!r} is listed twice")
            continue
        by_index[int(parts[0])] = parts[1]
        rows.ok()
    rows.finish()
    if sorted(by_index) != list(range(1, len(by_index) + 1)):
        raise DatasetError(f"{dataset}: the indices in {path} are not 1..{len(by_index)} without gaps")
    return tuple(by_index[i] for i in range(1, len(by_index) + 1))


def read_list(
    path: Path, split: str, classes: tuple[str, ...], seen: set[str], dataset: str
) -> tuple[list[tuple[Row, str]], int]:
    """Lines `Class/v_Class_gXX_cYY.avi [index]` (the train list carries the 1-based class index)."""
    rows = RowLog(dataset, path)
    index = {name: i for i, name in enumerate(classes, 1)}
    out = []
    for line_no, line in enumerate(read_text(path, dataset).splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        rel = parts[0]
        folder, stem = rel.split("/")[0], Path(rel).stem
        if len(parts) > 2 or "/" not in rel:
            rows.skip(line_no, f"expected `<Class>/<video>.avi [index]`, got {line.strip()!r}")
        elif folder not in index:
            rows.skip(line_no, f"unknown class {folder!r} (not in {CLASS_FILE})")
        elif len(parts) == 2 and parts[1] != str(index[folder]):
            rows.skip(line_no, f"class index {parts[1]} does not match {folder} ({index[folder]} in {CLASS_FILE})")
        elif stem in seen:
            rows.skip(line_no, f"video {stem} is listed twice")
        else:
            seen.add(stem)
            out.append((Row(stem, split, {"action": folder}, (stem,)), rel))
            rows.ok()
    return out, rows.finish()


@register
class UCF101(Dataset):
    name = "ucf101"
    tasks: ClassVar[tuple[str, ...]] = ("ar",)
    description = (
        "UCF101 for action recognition (AR, accuracy): official split 1 (trainlist01 -> train, "
        "testlist01 -> test, no dev: the prober carves one), keeping only the videos with an audio "
        "track (51 of the 101 classes have one), as the reference does; the class list keeps all 101 "
        "names of classInd.txt. Data from the UCF101 site (UCF101.rar and the recognition splits zip)."
    )
    layout: ClassVar[str] = """\
<root>/
  UCF-101/<Class>/v_<Class>_gXX_cYY.avi        # or the class folders directly in the root
  ucfTrainTestlist/classInd.txt                # `1 ApplyEyeMakeup` (1-based)
  ucfTrainTestlist/trainlist01.txt             # `ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1`
  ucfTrainTestlist/testlist01.txt              # `ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi`
Which videos have audio is read from the file headers once and cached in
$AVSUPERB_CACHE/probe/ (default ~/.cache/avsuperb/probe/); the root may be read-only."""

    def index(self) -> DatasetIndex:
        meta = {
            n: find_file(self.root, [n], LIST_DIRS, dataset=self.name, hint=HINT) for n in (CLASS_FILE, TRAIN_LIST, TEST_LIST)
        }
        classes = read_classes(meta[CLASS_FILE], self.name)
        seen: set[str] = set()
        train, bad_train = read_list(meta[TRAIN_LIST], "train", classes, seen, self.name)
        test, bad_test = read_list(meta[TEST_LIST], "test", classes, seen, self.name)
        listed = train + test

        has_videos = (d for d in existing_dirs(self.root, VIDEO_DIRS) if any(is_file(d / rel) for _, rel in listed))
        videos = next(has_videos, None)
        if videos is None:
            raise DatasetError(f"{self.name}: no listed video found under {self.root / VIDEO_DIRS[0]}; expected {HINT}")
        media = {row.id: videos / rel for row, rel in listed if is_file(videos / rel)}

        found = resolve(self.name, [row for row, _ in listed], media, ProbeCache(self.root), keep_unreadable=False)
        silent = [c.id for c in found.clips if not found.infos[c.id].has_audio]
        clips = [c for c in found.clips if found.infos[c.id].has_audio]
        log.info("%s: %d of %d videos have an audio track and are kept", self.name, len(clips), len(found.clips))
        if not clips:
            raise DatasetError(f"{self.name}: none of the {len(found.clips)} videos under {videos} has an audio track")
        return DatasetIndex(
            clips,
            {"action": LabelSpec("class", classes, "video")},
            extra={
                "missing": found.missing,
                "unreadable": found.unreadable,
                "skipped_rows": bad_train + bad_test,
                "no_audio": silent,
            },
        )
