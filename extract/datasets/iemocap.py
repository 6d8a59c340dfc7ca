"""IEMOCAP for emotion recognition: one clip per utterance, decoded straight from its dialog
video by the time range of the EmoEvaluation file (no pre-cut clips).

Reference rules (roger-tseng/av-superb, downstream_tasks/emotion/IEMOCAP_preprocess.py):
utterances labelled neu, hap, ang, sad or exc are kept, exc counted as hap, classes in the
order neu, hap, ang, sad; a dialog's utterances are cut from `dialog/avi/DivX/{dialog}.avi`
where `{dialog}` is the EmoEvaluation file's name. Evaluation is leave-one-session-out, so each
clip carries a `session` label (Session1..Session5), and the prober folds on it, carving dev
from the training sessions (20 %, as the reference's valid_ratio). For a single run without
folds, the split column gives the reference's default fold: Session1 is "test", the other
sessions "train" (no "dev": the prober carves it from train).
Not reproduced: the reference drops 18 utterances it failed to cut with moviepy
(downstream_tasks/emotion/miss.txt) and utterances without a sentence wav; here every
labelled utterance whose dialog video exists is a clip.
"""

from __future__ import annotations

import logging
import math
import re
from collections import Counter
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog
from avsuperb.extract.datasets._scan import report_missing
from avsuperb.extract.datasets.base import Clip, Dataset, DatasetError, DatasetIndex, LabelSpec, register

log = logging.getLogger(__name__)

EMOTIONS = ("neu", "hap", "ang", "sad")  # class order of the reference
MERGED = {"exc": "hap"}
SESSIONS = tuple(f"Session{i}" for i in range(1, 6))
TEST_SESSION = "Session1"  # the reference's default fold (test_fold: fold1)
_LINE = re.compile(r"^\[\s*(\d+(?:\.\d*)?)\s*-\s*(\d+(?:\.\d*)?)\s*\]\s+(\S+)\s+(\S+)\s+\[")


def parse_line(line: str) -> tuple[float, float, str, str]:
    """start, end, utterance id, raw label of an EmoEvaluation line `[S - E]\\tID\\tLABEL\\t[V, A, D]`."""
    m = _LINE.match(line)
    if not m:
        raise ValueError(f"not '[START - END]<tab>UTTERANCE<tab>LABEL<tab>[V, A, D]': {line.strip()[:60]!r}")
    start, end = float(m.group(1)), float(m.group(2))
    if not math.isfinite(end):
        raise ValueError(f"time range [{start} - {end}] has no finite end")
    if round(end - start, 6) <= 0:  # durations are kept to the microsecond
        raise ValueError(f"empty time range [{start} - {end}]")
    return start, end, m.group(3), m.group(4)


@register
class IEMOCAP(Dataset):
    name = "iemocap"
    description = (
        "IEMOCAP (ER): 4-class emotion (neu, hap+exc, ang, sad) of utterances cut by time range "
        "from the dialog videos; leave-one-session-out folds on the `session` label"
    )
    tasks: ClassVar[tuple[str, ...]] = ("er",)
    layout: ClassVar[str] = (
        "ROOT/Session{1..5}/dialog/avi/DivX/{dialog}.avi\n"
        "ROOT/Session{1..5}/dialog/EmoEvaluation/{dialog}.txt   ('[START - END]<tab>UTT_ID<tab>LABEL<tab>[V, A, D]')"
    )

    def index(self) -> DatasetIndex:
        sessions = [s for s in SESSIONS if (self.root / s).is_dir()]
        if not sessions:
            raise DatasetError(
                f"{self.name}: expected folder {self.root / SESSIONS[0] / 'dialog' / 'EmoEvaluation'} is missing; "
                f"is --root the IEMOCAP folder holding Session1..Session5?"
            )
        absent = [s for s in SESSIONS if s not in sessions]
        if absent:
            log.warning("%s: sessions %s are absent under %s", self.name, ", ".join(absent), self.root)
        rows = RowLog(self.name)
        dropped: Counter[str] = Counter()
        missing: list[Path] = []
        lost = 0
        clips: list[Clip] = []
        seen: set[str] = set()
        for session in sessions:
            labels_dir = self.root / session / "dialog" / "EmoEvaluation"
            if not labels_dir.is_dir():
                raise DatasetError(f"{self.name}: expected folder {labels_dir} is missing")
            video_dir = self.root / session / "dialog" / "avi" / "DivX"
            for txt in sorted(p for p in labels_dir.glob("*.txt") if not p.name.startswith(".")):
                dialog = txt.stem
                video = video_dir / f"{dialog}.avi"
                utterances = []
                for n, line in enumerate(txt.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
                    if not line.startswith("["):
                        continue  # headers, annotator lines, blank lines
                    where = f"{session}/{txt.name} line {n}"
                    try:
                        start, end, utt, raw = parse_line(line)
                    except ValueError as err:
                        rows.skip(where, str(err))
                        continue
                    if not utt.startswith(dialog + "_"):
                        rows.skip(where, f"utterance {utt} is not of dialog {dialog}")
                        continue
                    if utt in seen:
                        rows.skip(where, f"utterance {utt} listed twice")
                        continue
                    seen.add(utt)
                    label = MERGED.get(raw, raw)
                    if label not in EMOTIONS:
                        dropped[raw] += 1
                        continue
                    utterances.append((utt, start, end, label))
                if utterances and not video.is_file():
                    missing.append(video)
                    lost += len(utterances)
                    continue
                split = "test" if session == TEST_SESSION else "train"
                clips.extend(
                    Clip(utt, video, split, round(end - start, 6), {"emotion": label, "session": session}, start=start)
                    for utt, start, end, label in utterances
                )
        rows.finish(len(clips) + sum(dropped.values()) + lost)
        report_missing(missing, self.name)
        if lost:
            log.warning("%s: %d utterances left out: their dialog video is absent", self.name, lost)
        log.info("%s: %d clips from %d sessions; other labels left out: %s",
                 self.name, len(clips), len(sessions), dict(dropped))
        return DatasetIndex(
            clips,
            {"emotion": LabelSpec("class", EMOTIONS), "session": LabelSpec("class", SESSIONS)},
            extra={
                "skipped_rows": rows.count,
                "missing": [str(p) for p in missing],
                "utterances_without_video": lost,
                "dropped_labels": dict(sorted(dropped.items())),
            },
        )
