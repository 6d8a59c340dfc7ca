"""LRS3-TED for speech recognition: one clip per utterance, transcripts in the CTC vocabulary.

Splits follow the reference: `test/` is test; 1,000 utterances of `trainval/` are held out as
dev and the rest (30,982 of the full set) is train. The reference's dev list ships with its
toolkit (downstream_tasks/av_asr/val_set_metadata_clean.json); put it, or a plain list
`lists/dev.txt` (one `trainval/{talk}/{utt}` per line), in the root to use exactly those
utterances. Without one, the 1,000 are a seeded choice. A trainval of fewer than 10,000
utterances (a subset) holds out a tenth of them, rounded up, instead: min(1000, ceil(n / 10)),
so a small subset is not left without training data (1,000 is 3.1 % of the full 31,982).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog
from avsuperb.extract.datasets._scan import read_durations, report_missing, require, seeded_order
from avsuperb.extract.datasets.base import Clip, Dataset, DatasetError, DatasetIndex, LabelSpec, register
from avsuperb.probe.tasks.asr import SEPARATOR, CharVocab

log = logging.getLogger(__name__)

DEV_SIZE = 1000  # utterances of trainval held out as dev (reference)
DEV_FRACTION_CAP = 0.1  # a smaller trainval holds out ceil(10 %) instead
SEED = 0
DEV_LISTS = ("val_set_metadata_clean.json", "lists/dev.txt")  # the reference's file, or plain relative paths


def dev_count(n: int) -> int:
    """How many of n trainval utterances are held out as dev."""
    if n < 2:
        return 0
    return min(DEV_SIZE, max(1, math.ceil(DEV_FRACTION_CAP * n)))


def read_transcript(path: Path) -> str:
    """The words of an LRS3 `{utt}.txt` (first line `Text:  WORDS`); ValueError when it has none."""
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline().strip()
    if not first.startswith("Text:"):
        raise ValueError(f"first line is not 'Text:  WORDS' but {first[:40]!r}")
    return first[len("Text:") :].strip()


@register
class LRS3(Dataset):
    name = "lrs3"
    description = (
        "LRS3-TED (ASR): TED talk utterances with transcripts; test/ is test, 1,000 trainval "
        "utterances are dev (the reference's list if given), the rest train"
    )
    tasks: ClassVar[tuple[str, ...]] = ("asr",)
    layout: ClassVar[str] = (
        "ROOT/trainval/{talk}/{utt}.mp4 + {utt}.txt   (first line: 'Text:  WORDS')\n"
        "ROOT/test/{talk}/{utt}.mp4 + {utt}.txt\n"
        "ROOT/val_set_metadata_clean.json or ROOT/lists/dev.txt   (optional: the dev utterances)"
    )
    splits_dirs: ClassVar[dict[str, str]] = {"trainval": "train", "test": "test"}

    def index(self) -> DatasetIndex:
        folders = {d: require(self.root / d, "folder", self.name) for d in self.splits_dirs}
        vocab = CharVocab()
        rows = RowLog(self.name)
        found: dict[str, tuple[Path, str, str]] = {}  # clip id -> media, transcript, talk
        missing: list[Path] = []
        for folder_name, folder in folders.items():
            texts = {p.with_suffix(""): p for p in folder.glob("*/*.txt")}
            media = {p.with_suffix(""): p for p in folder.glob("*/*.mp4")}
            for stem in sorted(set(texts) | set(media)):
                where = str(stem.relative_to(self.root))
                if stem not in texts:
                    rows.skip(where, "video without a transcript file")
                    continue
                try:
                    words = read_transcript(texts[stem])
                except (OSError, ValueError) as err:
                    rows.skip(where + ".txt", str(err))
                    continue
                text = vocab.normalise(words).replace(SEPARATOR, " ")
                if not text:
                    rows.skip(where + ".txt", "transcript has no characters of the vocabulary")
                    continue
                if stem not in media:
                    missing.append(stem.with_suffix(".mp4"))
                    continue
                found[where.replace("\\", "/")] = (media[stem], text, stem.parent.name)
        if vocab.dropped:
            log.info("%s: characters outside the vocabulary dropped from transcripts: %s", self.name, dict(vocab.dropped))

        report_missing(missing, self.name)
        durations = read_durations([m for m, _, _ in found.values()], self.name, self.root)
        rows.finish(len(durations.seconds))
        trainval = [cid for cid, (m, _, _) in found.items() if cid.startswith("trainval/") and m in durations.seconds]
        dev, dev_source = self._dev_ids(trainval)

        clips = []
        for cid, (path, text, talk) in sorted(found.items()):
            if path not in durations.seconds:
                continue
            split = "test" if cid.startswith("test/") else ("dev" if cid in dev else "train")
            clips.append(Clip(cid, path, split, durations.seconds[path], {"transcript": text, "speaker": talk}))
        talks = tuple(sorted({c.labels["speaker"] for c in clips}))
        log.info("%s: %d clips (dev: %s)", self.name, len(clips), dev_source)
        return DatasetIndex(
            clips,
            {"transcript": LabelSpec("text"), "speaker": LabelSpec("class", talks)},
            extra={
                "skipped_rows": rows.count,
                "missing": [str(p) for p in missing + durations.missing],
                "unreadable": {str(p): e for p, e in durations.unreadable.items()},
                "dev_source": dev_source,
            },
        )

    def _dev_ids(self, trainval: list[str]) -> tuple[set[str], str]:
        """The dev utterance ids and where they come from (a list file, or the seeded rule)."""
        for name in DEV_LISTS:
            path = self.root / name
            if path.is_file():
                listed = self._read_dev_list(path)
                known = set(trainval)
                absent = sorted(listed - known)
                if absent:
                    log.warning("%s: %d utterances of %s are not usable trainval clips, e.g. %s",
                                self.name, len(absent), name, absent[0])
                return listed & known, name
        k = dev_count(len(trainval))
        return set(seeded_order(trainval, SEED)[:k]), f"{k} seeded (seed {SEED})"

    def _read_dev_list(self, path: Path) -> set[str]:
        try:
            if path.suffix == ".json":
                entries = [str(e["path"]) for e in json.loads(path.read_text())]
            else:
                entries = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DatasetError(f"{path} is not a dev list ({type(err).__name__}: {err})") from err
        ids = set()
        for entry in entries:
            if not Path(entry).name:  # "/", ".": no utterance; reported below with the other unusable entries
                ids.add(entry)
                continue
            parts = Path(entry).with_suffix("").parts[-3:]
            if len(parts) == 2:  # talk/utt, relative to trainval/
                parts = ("trainval", *parts)
            ids.add("/".join(parts))
        return ids
