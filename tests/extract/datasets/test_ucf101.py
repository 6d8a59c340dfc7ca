"""The UCF101 adapter on a fake tree in the official layout: split 1, videos with audio only,
and the probe cache that decides which have audio, kept outside the dataset root."""

import json
import logging

import pytest

from avsuperb import schemas as S
from avsuperb.extract.datasets import DatasetError, _probe_cache, build, ucf101
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.store import open_backend

CLASS_IND = "1 ApplyEyeMakeup\r\n2 Archery\r\n3 HandstandPushups\r\n"  # the official files have CRLF
TRAIN = (
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\r\n"
    "Archery/v_Archery_g08_c01.avi 2\r\n"
    "HandstandPushups/v_HandStandPushups_g08_c01.avi 3\r\n"  # the official spelling quirk
    "ApplyEyeMakeup/v_ApplyEyeMakeup_g09_c01.avi 1\r\n"  # not on disk
    "Archery/v_Archery_g09_c01.avi 1\r\n"  # wrong class index
    "Bowling/v_Bowling_g08_c01.avi 4\r\n"  # unknown class
)
TEST = "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\r\nArchery/v_Archery_g01_c01.avi\r\n"
WITH_AUDIO = ["v_ApplyEyeMakeup_g08_c01", "v_HandStandPushups_g08_c01", "v_ApplyEyeMakeup_g01_c01"]


@pytest.fixture
def root(tmp_path, write_media, probe_cache):
    root = tmp_path / "ucf"
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text(CLASS_IND)
    (lists / "trainlist01.txt").write_text(TRAIN)
    (lists / "testlist01.txt").write_text(TEST)
    videos = root / "UCF-101"
    write_media(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g08_c01.avi", 0.5)
    write_media(videos / "ApplyEyeMakeup" / "v_ApplyEyeMakeup_g01_c01.avi", 0.6)
    write_media(videos / "Archery" / "v_Archery_g08_c01.avi", 0.5, audio=False)
    write_media(videos / "Archery" / "v_Archery_g09_c01.avi", 0.5, audio=False)
    write_media(videos / "Archery" / "v_Archery_g01_c01.avi", 0.5, audio=False)
    write_media(videos / "HandstandPushups" / "v_HandStandPushups_g08_c01.avi", 0.5)
    return root


def test_split_one_restricted_to_videos_with_audio(root):
    index = build("ucf101", root).index()
    by_id = {c.id: c for c in index.clips}
    assert sorted(by_id) == sorted(WITH_AUDIO)
    assert [by_id[i].split for i in WITH_AUDIO] == ["train", "train", "test"]
    assert by_id["v_HandStandPushups_g08_c01"].labels["action"] == "HandstandPushups"
    spec = index.labels["action"]
    assert (spec.kind, spec.classes, spec.carried_by) == ("class", ("ApplyEyeMakeup", "Archery", "HandstandPushups"), "video")
    table = index.table()
    assert dict(zip(table.ids, table.labels["action"].values.tolist()))["v_HandStandPushups_g08_c01"] == 2  # 1-based 3
    assert by_id["v_ApplyEyeMakeup_g01_c01"].start == 0.0
    assert by_id["v_ApplyEyeMakeup_g01_c01"].duration == pytest.approx(0.6, abs=0.05)
    assert index.extra["no_audio"] == ["v_Archery_g08_c01", "v_Archery_g01_c01"]
    assert index.extra["missing"] == ["v_ApplyEyeMakeup_g09_c01"]
    assert index.extra["skipped_rows"] == 2 and index.extra["unreadable"] == []


def test_bad_rows_and_absent_videos_are_logged(root, caplog):
    with caplog.at_level(logging.WARNING):
        build("ucf101", root).index()
    assert "unknown class 'Bowling'" in caplog.text and "class index 1 does not match Archery" in caplog.text
    assert "v_ApplyEyeMakeup_g09_c01" in caplog.text


def test_probe_cache_lives_outside_the_root_and_follows_file_changes(root, probe_cache, write_media, monkeypatch):
    before = build("ucf101", root).index()
    caches = list((probe_cache / "probe").glob("*.json"))
    assert len(caches) == 1 and not list(root.rglob("*.json"))
    doc = json.loads(caches[0].read_text())
    assert doc["root"] == str(root.resolve()) and len(doc["files"]) == 5  # the listed files on disk

    def no_probe(path):
        raise AssertionError(f"probed {path} again")

    monkeypatch.setattr(_probe_cache, "probe", no_probe)
    assert build("ucf101", root).index().fingerprint() == before.fingerprint()
    monkeypatch.undo()
    monkeypatch.setenv("AVSUPERB_CACHE", str(probe_cache))
    # a re-downloaded file (new size and mtime) is probed again: this one has audio now
    write_media(root / "UCF-101" / "Archery" / "v_Archery_g08_c01.avi", 0.7)
    after = build("ucf101", root).index()
    assert "v_Archery_g08_c01" in {c.id for c in after.clips}
    assert after.extra["no_audio"] == ["v_Archery_g01_c01"]


def test_wrong_root_names_the_missing_file(root, tmp_path):
    with pytest.raises(DatasetError, match=r"ucfTrainTestlist/classInd\.txt not found.*expected") as err:
        build("ucf101", root / "UCF-101").index()
    assert "\n" not in str(err.value)
    (root / "ucfTrainTestlist" / "testlist01.txt").unlink()
    with pytest.raises(DatasetError, match=r"testlist01\.txt not found"):
        build("ucf101", root).index()


def test_all_rows_malformed_is_an_error(root):
    (root / "ucfTrainTestlist" / "testlist01.txt").write_text("Bowling/v_Bowling_g01_c01.avi\nnonsense\n")
    with pytest.raises(DatasetError, match="every row of .*testlist01.txt is malformed"):
        build("ucf101", root).index()


def test_catalogue_attributes():
    cls = ucf101.UCF101
    assert cls.tasks == ("ar",) and "trainlist01.txt" in cls.layout and "audio" in cls.description


def test_fbank_extraction_end_to_end(root, tmp_path):
    out = tmp_path / "ucf.zarr"
    summary = run_extraction(ExtractOptions("fbank", "ucf101", out, root, progress=False))
    assert (summary.total, summary.done, summary.failed) == (3, 3, 0)
    b = open_backend(out, "r")
    assert sorted(b.read(S.CLIP_ID)) == sorted(WITH_AUDIO)
