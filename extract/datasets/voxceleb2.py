"""VoxCeleb2 for speaker verification: speaker-ID training clips from the dev split, and
verification trials between clips of the test split.

Reference rules (roger-tseng/av-superb, downstream_tasks/sv/dataset.py):
- train / dev: the lists `train_5vid.lst` and `valid_5vid.lst` in the root (lines
  `speaker,index,dev/mp4/{speaker}/{video}/{utt}.mp4`; every utterance of one video per speaker
  in the valid list). Without them the same shape is drawn with a seed: per speaker, 5 videos
  of dev/mp4, one of them dev and the other 4 train; all their utterances are clips. (The
  reference's fallback puts every other video of a speaker in train, ~1M clips; the shipped
  lists are the 5-video subset.) A speaker with a single video keeps it in train.
- trials: `trials.txt` (VoxCeleb format `1 id00017/vid/00001.wav id00017/vid2/00002.wav`) or the
  reference's `test.lst` (`1,path_a,path_b`) in the root; otherwise built from test/mp4 as the
  reference does: for every speaker, every pair of its videos gives one positive trial (one
  seeded utterance from each video), and every video gives one negative trial (a seeded
  utterance of it against a seeded utterance of a seeded video of a seeded other speaker).
  That is sum over speakers of C(videos, 2) positives plus one negative per video: on the full
  test split (118 speakers, 4,911 videos, ~42 per speaker) at least ~99,700 positives (more,
  the more unequal the speakers' video counts) and 4,911 negatives. One trial per video pair,
  not per utterance pair, keeps the count from exploding (utterance pairs would be ~5.5M).
Every test clip is listed (split "test"), with its speaker, whether or not a trial uses it.
"""

from __future__ import annotations

import itertools
import logging
from collections import defaultdict
from pathlib import Path
from typing import ClassVar

from avsuperb.extract.datasets._files import RowLog, read_text
from avsuperb.extract.datasets._scan import pick, read_durations, require, seeded_order
from avsuperb.extract.datasets.base import Clip, Dataset, DatasetError, DatasetIndex, LabelSpec, register

log = logging.getLogger(__name__)

SEED = 0
VIDEOS_PER_SPEAKER = 5  # videos of a dev-split speaker used for speaker ID (reference lists: "5vid")
DEV_VIDEOS = 1  # of which held out for validation (reference: one video per speaker)
TRAIN_LIST, DEV_LIST = "train_5vid.lst", "valid_5vid.lst"
TRIAL_LISTS = ("trials.txt", "test.lst")


def clip_id(path: str) -> str:
    """`{speaker}/{video}/{utt}` of any path to a VoxCeleb file (.mp4, .wav, .m4a; relative or absolute)."""
    parts = Path(path.strip()).with_suffix("").parts
    if len(parts) < 3 or "" in parts[-3:]:
        raise ValueError(f"{path!r} does not end in {{speaker id}}/{{video}}/{{utterance}}")
    return "/".join(parts[-3:])


@register
class VoxCeleb2(Dataset):
    name = "voxceleb2"
    description = (
        "VoxCeleb2 (ASV): speaker ID on 5 videos per dev-split speaker (the reference's lists if "
        "given), verification trials on the test split"
    )
    tasks: ClassVar[tuple[str, ...]] = ("asv",)
    layout: ClassVar[str] = (
        "ROOT/dev/mp4/{speaker id}/{video}/{nnnnn}.mp4\n"
        "ROOT/test/mp4/{speaker id}/{video}/{nnnnn}.mp4\n"
        "ROOT/train_5vid.lst + ROOT/valid_5vid.lst   (optional: the reference's speaker-ID lists)\n"
        "ROOT/trials.txt or ROOT/test.lst   (optional: verification trials)"
    )

    def index(self) -> DatasetIndex:
        dev_root = require(self.root / "dev" / "mp4", "folder", self.name)
        test_root = require(self.root / "test" / "mp4", "folder", self.name)
        rows = RowLog(self.name)
        if (self.root / TRAIN_LIST).is_file() or (self.root / DEV_LIST).is_file():
            chosen = {split: self._read_list(self.root / name, rows) for split, name in (("train", TRAIN_LIST), ("dev", DEV_LIST))}
            rows.finish(len(chosen["train"]) + len(chosen["dev"]))
            source = f"{TRAIN_LIST} + {DEV_LIST}"
        else:
            chosen = self._draw(dev_root)
            source = f"seeded: {VIDEOS_PER_SPEAKER} videos per speaker, {DEV_VIDEOS} of them dev (seed {SEED})"
        if not any(chosen.values()):
            raise DatasetError(f"{self.name}: no speaker-ID clips under {dev_root}")
        test = {"/".join(p.relative_to(test_root).with_suffix("").parts): p for p in sorted(test_root.glob("*/*/*.mp4"))}
        if not test:
            raise DatasetError(f"{self.name}: no test clips under {test_root} (expected {{speaker}}/{{video}}/{{utt}}.mp4)")

        paths = {cid: dev_root / f"{cid}.mp4" for split in ("train", "dev") for cid in chosen[split]}
        durations = read_durations([*paths.values(), *test.values()], self.name, self.root)
        clips: list[Clip] = []
        seen: set[str] = set()
        for split, ids in (("train", chosen["train"]), ("dev", chosen["dev"]), ("test", test)):
            for cid in sorted(ids):
                path = paths[cid] if split != "test" else test[cid]
                if path not in durations.seconds:
                    continue
                if cid in seen:
                    rows.skip(cid, f"listed again for {split}; kept its first split")
                    continue
                seen.add(cid)
                clips.append(Clip(cid, path, split, durations.seconds[path], {"speaker": cid.split("/")[0]}))

        test_ids = [c.id for c in clips if c.split == "test"]
        trials, trial_source, trial_rows = self._trials(test_ids)
        speakers = tuple(sorted({c.labels["speaker"] for c in clips}))
        positives = sum(t for _, _, t in trials)
        log.info("%s: %d clips, %d trials (%d positive) from %s; speaker ID from %s",
                 self.name, len(clips), len(trials), positives, trial_source, source)
        return DatasetIndex(
            clips,
            {"speaker": LabelSpec("class", speakers)},
            trials=trials,
            extra={
                "skipped_rows": rows.count + trial_rows,
                "missing": [str(p) for p in durations.missing],
                "unreadable": {str(p): e for p, e in durations.unreadable.items()},
                "speaker_id_source": source,
                "trials_source": trial_source,
                "trials_positive": positives,
                "trials_negative": len(trials) - positives,
            },
        )

    def _read_list(self, path: Path, rows: RowLog) -> list[str]:
        """Clip ids of a reference list (`speaker,index,path` lines; a bare path per line also works)."""
        if not path.is_file():
            other = DEV_LIST if path.name == TRAIN_LIST else TRAIN_LIST
            raise DatasetError(f"{self.name}: found {other} but not {path}; give both speaker-ID lists or neither")
        ids = []
        for n, line in enumerate(read_text(path, self.name).splitlines(), 1):
            if not line.strip():
                continue
            fields = [f.strip() for f in line.split(",")]
            try:
                cid = clip_id(fields[-1])
            except ValueError as err:
                rows.skip(f"{path.name} line {n}", str(err))
                continue
            if len(fields) > 1 and fields[0] != cid.split("/")[0]:
                rows.skip(f"{path.name} line {n}", f"speaker {fields[0]!r} does not match the path {fields[-1]!r}")
                continue
            ids.append(cid)
        return list(dict.fromkeys(ids))

    def _draw(self, dev_root: Path) -> dict[str, list[str]]:
        """The seeded stand-in for the reference lists: per speaker, 5 videos, one of them dev."""
        chosen: dict[str, list[str]] = {"train": [], "dev": []}
        for speaker in sorted(d.name for d in dev_root.iterdir() if d.is_dir()):
            picked: list[list[str]] = []  # utterance ids of each picked video
            for video in seeded_order([f"{speaker}/{v.name}" for v in (dev_root / speaker).iterdir() if v.is_dir()], SEED):
                utts = sorted(f"{video}/{p.stem}" for p in (dev_root / video).glob("*.mp4"))
                if utts:
                    picked.append(utts)
                if len(picked) == VIDEOS_PER_SPEAKER:
                    break
            n_dev = DEV_VIDEOS if len(picked) > DEV_VIDEOS else 0
            for i, utts in enumerate(picked):
                chosen["dev" if i < n_dev else "train"].extend(utts)
        return chosen

    def _trials(self, test_ids: list[str]) -> tuple[list[tuple[str, str, int]], str, int]:
        """Trials from a list file in the root, or built by the reference's rule; and skipped lines."""
        for name in TRIAL_LISTS:
            path = self.root / name
            if path.is_file():
                trials, skipped = self._read_trials(path, set(test_ids))
                return trials, name, skipped
        return build_trials(test_ids, SEED), f"built from test/mp4 (seed {SEED})", 0

    def _read_trials(self, path: Path, test_ids: set[str]) -> tuple[list[tuple[str, str, int]], int]:
        rows = RowLog(self.name)
        trials, absent = [], 0
        for n, line in enumerate(read_text(path, self.name).splitlines(), 1):
            if not line.strip():
                continue
            fields = line.replace(",", " ").split()
            try:
                if len(fields) != 3 or fields[0] not in ("0", "1"):
                    raise ValueError("expected 'TARGET PATH_A PATH_B' with TARGET 1 (same speaker) or 0")
                a, b = clip_id(fields[1]), clip_id(fields[2])
            except ValueError as err:
                rows.skip(f"{path.name} line {n}", str(err))
                continue
            if a not in test_ids or b not in test_ids:
                absent += 1
                continue
            trials.append((a, b, int(fields[0])))
        rows.finish(len(trials) + absent)
        if absent:
            log.warning("%s: %d trials of %s left out: a clip of theirs is not a usable test clip",
                        self.name, absent, path.name)
        return trials, rows.count


def build_trials(test_ids: list[str], seed: int) -> list[tuple[str, str, int]]:
    """The reference's trials: one positive per pair of a speaker's videos, one negative per video."""
    tree: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for cid in sorted(test_ids):
        speaker, video, _ = cid.split("/")
        tree[speaker][video].append(cid)
    speakers = sorted(tree)
    trials: list[tuple[str, str, int]] = []
    for speaker in speakers:
        for v1, v2 in itertools.combinations(sorted(tree[speaker]), 2):
            pair = f"{speaker}/{v1}/{v2}"
            trials.append((pick(tree[speaker][v1], pair + "/a", seed), pick(tree[speaker][v2], pair + "/b", seed), 1))
    for speaker in speakers:
        others = [s for s in speakers if s != speaker]
        if not others:
            break
        for video in sorted(tree[speaker]):
            key = f"{speaker}/{video}"
            other = pick(others, key + "/speaker", seed)
            other_video = pick(sorted(tree[other]), key + "/video", seed)
            a = pick(tree[speaker][video], key + "/a", seed)
            trials.append((a, pick(tree[other][other_video], key + "/b", seed), 0))
    return trials
