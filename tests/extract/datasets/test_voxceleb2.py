"""VoxCeleb2 adapter: 5-video speaker-ID subset of dev, the reference's lists, test-split trials."""

import itertools
import logging
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _speech_media import write_media  # noqa: E402

from avsuperb.extract.datasets import DatasetError, build, voxceleb2  # noqa: E402
from avsuperb.extract.run import ExtractOptions, run_extraction  # noqa: E402
from avsuperb.store.reader import StoreReader  # noqa: E402


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path, monkeypatch):
    """Media probes are cached under $AVSUPERB_CACHE: keep them in this test's folder."""
    monkeypatch.setenv("AVSUPERB_CACHE", str(tmp_path / "avsuperb-cache"))

DEV = {"id00001": {f"vid{v}": 1 for v in range(7)}, "id00002": {"vidA": 2, "vidB": 1}, "id00003": {"solo": 2}}
TEST = {"id00010": {"tA": 2, "tB": 1, "tC": 1}, "id00011": {"tD": 1, "tE": 2}}


def write_tree(root: Path) -> Path:
    for split, speakers in (("dev", DEV), ("test", TEST)):
        for spk, videos in speakers.items():
            for video, n in videos.items():
                for u in range(1, n + 1):
                    write_media(root / split / "mp4" / spk / video / f"{u:05d}.mp4", seconds=0.4 + 0.1 * u)
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("vox2"))


def test_seeded_speaker_id_subset_follows_the_5_video_rule(tree):
    index = build("voxceleb2", tree).index()
    split_of = {c.id: c.split for c in index.clips}
    videos = {s: Counter() for s in ("train", "dev")}
    for cid, split in split_of.items():
        if split != "test":
            videos[split]["/".join(cid.split("/")[:2])] += 1
    per_speaker = lambda split: Counter(v.split("/")[0] for v in videos[split])  # noqa: E731
    assert per_speaker("train") == {"id00001": 4, "id00002": 1, "id00003": 1}  # 5 videos, one of them dev
    assert per_speaker("dev") == {"id00001": 1, "id00002": 1}  # a single-video speaker keeps it in train
    assert not set(videos["train"]) & set(videos["dev"])
    # every utterance of a chosen video is a clip
    assert sum(n for v, n in videos["train"].items() | videos["dev"].items() if v.startswith("id00002")) == 3
    assert index.labels["speaker"].classes == ("id00001", "id00002", "id00003", "id00010", "id00011")
    assert all(c.labels["speaker"] == c.id.split("/")[0] for c in index.clips)
    assert build("voxceleb2", tree).index().fingerprint() == index.fingerprint()  # deterministic


def test_trials_follow_the_reference_rule(tree):
    index = build("voxceleb2", tree).index()
    test = {c.id for c in index.clips if c.split == "test"}
    assert len(test) == 7  # every test clip is listed
    pos = [(a, b) for a, b, t in index.trials if t == 1]
    neg = [(a, b) for a, b, t in index.trials if t == 0]
    # one positive per pair of a speaker's videos: C(3, 2) + C(2, 2); one negative per video: 5
    assert len(pos) == 4 and len(neg) == 5
    assert index.extra["trials_positive"] == 4 and index.extra["trials_negative"] == 5
    video = lambda cid: cid.rsplit("/", 1)[0]  # noqa: E731
    assert all(a.split("/")[0] == b.split("/")[0] and video(a) != video(b) for a, b in pos)
    assert {frozenset((video(a), video(b))) for a, b in pos} == {
        frozenset(p) for spk, vids in TEST.items() for p in itertools.combinations([f"{spk}/{v}" for v in vids], 2)}
    assert all(a.split("/")[0] != b.split("/")[0] for a, b in neg)
    assert sorted(video(a) for a, _ in neg) == sorted(f"{s}/{v}" for s, vids in TEST.items() for v in vids)
    assert all(a in test and b in test for a, b, _ in index.trials)


def test_reference_lists_and_a_voxceleb_trial_file(tmp_path, caplog):
    root = write_tree(tmp_path / "vox2")
    (root / "train_5vid.lst").write_text(
        "id00001,0,dev/mp4/id00001/vid0/00001.mp4\n"
        "id00001,0,dev/mp4/id00001/vid1/00001.mp4\n"
        "id00002,1,/somewhere/else/VoxCeleb2/dev/mp4/id00002/vidA/00002.mp4\n"
        "id00009,2,dev/mp4/id00001/vid2/00001.mp4\n"  # speaker does not match the path: malformed
        "id00003,3,dev/mp4/id00003/gone/00001.mp4\n"  # listed, absent
    )
    (root / "valid_5vid.lst").write_text("id00001,0,dev/mp4/id00001/vid5/00001.mp4\nnot a path\n")
    (root / "trials.txt").write_text(
        "1 id00010/tA/00001.wav id00010/tB/00001.wav\n"
        "0 id00010/tC/00001.m4a id00011/tE/00002.m4a\n"
        "1 id00001/vid0/00001.wav id00001/vid1/00001.wav\n"  # not test clips: left out
        "2 id00010/tA/00001.wav id00010/tB/00001.wav\n"  # bad target: malformed
    )
    with caplog.at_level(logging.WARNING):
        index = build("voxceleb2", root).index()
    splits = {c.id: c.split for c in index.clips}
    assert sorted(k for k, v in splits.items() if v == "train") == [
        "id00001/vid0/00001", "id00001/vid1/00001", "id00002/vidA/00002"]
    assert [k for k, v in splits.items() if v == "dev"] == ["id00001/vid5/00001"]
    assert index.trials == [("id00010/tA/00001", "id00010/tB/00001", 1), ("id00010/tC/00001", "id00011/tE/00002", 0)]
    assert index.extra["skipped_rows"] == 3
    assert index.extra["missing"] == [str(root / "dev/mp4/id00003/gone/00001.mp4")]
    assert index.extra["trials_source"] == "trials.txt"
    assert "train_5vid.lst line 4" in caplog.text


def test_reference_trial_list_format_and_one_list_only(tmp_path):
    root = write_tree(tmp_path / "vox2")
    (root / "test.lst").write_text(f"1,{root}/test/mp4/id00010/tA/00002.mp4,{root}/test/mp4/id00010/tC/00001.mp4\n")
    assert build("voxceleb2", root).index().trials == [("id00010/tA/00002", "id00010/tC/00001", 1)]
    (root / "valid_5vid.lst").write_text("id00001,0,dev/mp4/id00001/vid5/00001.mp4\n")
    with pytest.raises(DatasetError, match="train_5vid.lst"):
        build("voxceleb2", root).index()


def test_wrong_root_names_the_missing_folder(tmp_path):
    (tmp_path / "dev" / "mp4").mkdir(parents=True)
    with pytest.raises(DatasetError, match=str(tmp_path / "test" / "mp4")):
        build("voxceleb2", tmp_path).index()


def test_trial_count_on_a_larger_synthetic_test_split():
    ids = [f"id{s:05d}/v{v}/{u:05d}" for s in range(4) for v in range(s + 2) for u in range(3)]
    trials = voxceleb2.build_trials(ids, seed=0)
    videos = [s + 2 for s in range(4)]
    assert sum(t for *_, t in trials) == sum(v * (v - 1) // 2 for v in videos)
    assert len(trials) - sum(t for *_, t in trials) == sum(videos)
    assert trials == voxceleb2.build_trials(list(reversed(ids)), seed=0)
    assert trials != voxceleb2.build_trials(ids, seed=1)


def test_extraction_with_fbank_keeps_the_trials(tree, tmp_path):
    summary = run_extraction(ExtractOptions("fbank", "voxceleb2", tmp_path / "v.zarr", tree, progress=False))
    index = build("voxceleb2", tree).index()
    assert (summary.total, summary.done, summary.failed) == (len(index.clips), len(index.clips), 0)
    with StoreReader(tmp_path / "v.zarr") as reader:
        table = reader.table()
        assert len(table.trials) == len(index.trials) == 9
        assert set(table.splits[r] for r in table.trials[:, :2].ravel()) == {"test"}
