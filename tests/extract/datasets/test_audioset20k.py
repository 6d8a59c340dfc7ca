"""The AudioSet-20K adapter on a fake tree in the official layout: segment CSVs, MIDs, media namings."""

import logging
import shutil

import numpy as np
import pytest

from avsuperb import schemas as S
from avsuperb.extract.datasets import DatasetError, audioset20k, build
from avsuperb.extract.datasets._files import place_segment
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.store import open_backend

CLASSES = """index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/04rlf,"Music"
2,/m/0jbk,"Animal"
3,/m/07yv9,"Vehicle"
"""
HEADER = """# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=6, num_segs=6, num_unique_labels=4, num_positive_labels=8
# YTID, start_seconds, end_seconds, positive_labels
"""
TRAIN = HEADER + """aaaaaaaaaaa, 30.000, 40.000, "/m/09x0r,/m/04rlf"
bbbbbbbbbbb, 1.000, 2.000, "/m/0jbk"
ccccccccccc, 20.000, 30.000, "/m/07yv9"
ddddddddddd, soon, 10.000, "/m/09x0r"
eeeeeeeeeee, 0.000, 10.000, "/m/zzzzz"
"""
EVAL = HEADER + """fffffffffff, 10.000, 20.000, "/m/04rlf"
ggggggggggg, 0.000, 10.000, "/m/09x0r,/m/0jbk"
hhhhhhhhhhh, 0.000, 10.000, "/m/07yv9"
"""


@pytest.fixture
def root(tmp_path, write_media, probe_cache):
    root = tmp_path / "audioset"
    (root / "csv").mkdir(parents=True)
    (root / "csv" / "class_labels_indices.csv").write_text(CLASSES)
    (root / "balanced_train_segments.csv").write_text(TRAIN)
    (root / "eval_segments.csv").write_text(EVAL)
    write_media(root / "balanced_train" / "aaaaaaaaaaa.mp4", 0.5)  # already cut to its segment
    write_media(root / "balanced_train" / "bbbbbbbbbbb_1000_2000.mp4", 2.5)  # the full video: cut 1-2 s
    write_media(root / "data" / "eval" / "video_mp4_288p" / "fffffffffff.mp4", 0.5)  # the reference's folders
    write_media(root / "eval" / "ggggggggggg.mkv", 0.6)
    (root / "eval" / "hhhhhhhhhhh.mp4").write_bytes(b"")  # a failed download
    return root


def test_clips_splits_and_multi_hot_labels(root):
    index = build("audioset20k", root).index()
    by_id = {c.id: c for c in index.clips}
    assert sorted(by_id) == ["aaaaaaaaaaa", "bbbbbbbbbbb", "fffffffffff", "ggggggggggg", "hhhhhhhhhhh"]
    assert {c.id for c in index.clips if c.split == "train"} == {"aaaaaaaaaaa", "bbbbbbbbbbb"}
    assert {c.split for c in index.clips} == {"train", "test"}  # no dev: the prober carves one
    spec = index.labels["events"]
    assert (spec.kind, spec.classes, spec.carried_by) == ("multi", ("Speech", "Music", "Animal", "Vehicle"), "audio")
    table = index.table()
    events = dict(zip(table.ids, table.labels["events"].values.tolist()))
    assert events["aaaaaaaaaaa"] == [1, 1, 0, 0] and events["ggggggggggg"] == [1, 0, 1, 0]
    assert events["fffffffffff"] == [0, 1, 0, 0]
    # a cut clip is used whole; the segment is cut out of a full video
    assert (by_id["aaaaaaaaaaa"].start, by_id["aaaaaaaaaaa"].duration) == (0.0, pytest.approx(0.5, abs=0.03))
    assert (by_id["bbbbbbbbbbb"].start, by_id["bbbbbbbbbbb"].duration) == (1.0, 1.0)
    assert by_id["fffffffffff"].path == root / "data" / "eval" / "video_mp4_288p" / "fffffffffff.mp4"
    # missing and unreadable media are reported, not fatal; malformed and unknown-MID rows skipped
    assert index.extra["missing"] == ["ccccccccccc"]
    assert index.extra["unreadable"] == ["hhhhhhhhhhh"] and by_id["hhhhhhhhhhh"].duration == 10.0
    assert index.extra["skipped_rows"] == 2


def test_absent_media_and_bad_rows_are_logged(root, caplog):
    with caplog.at_level(logging.WARNING):
        build("audioset20k", root).index()
    text = caplog.text
    assert "1 of 6 listed clips have no media file" in text and "ccccccccccc" in text
    assert "line 7" in text and "/m/zzzzz" in text


def test_all_rows_malformed_is_an_error(root):
    (root / "eval_segments.csv").write_text(HEADER + "x, y\nz, 1, 2, \"/m/nope\"\n")
    with pytest.raises(DatasetError, match="every row of .*eval_segments.csv is malformed"):
        build("audioset20k", root).index()


def test_wrong_root_names_the_missing_file(tmp_path, root):
    with pytest.raises(DatasetError, match=r"balanced_train_segments\.csv not found.*expected"):
        build("audioset20k", tmp_path / "audioset" / "csv").index()
    (root / "csv" / "class_labels_indices.csv").unlink()
    with pytest.raises(DatasetError, match=r"class_labels_indices\.csv not found") as err:
        build("audioset20k", root).index()
    assert "\n" not in str(err.value)
    shutil.rmtree(root / "balanced_train")
    shutil.rmtree(root / "eval")
    shutil.rmtree(root / "data")
    (root / "csv" / "class_labels_indices.csv").write_text(CLASSES)
    with pytest.raises(DatasetError, match="no media file of any listed clip"):
        build("audioset20k", root).index()


def test_segment_placement():
    assert place_segment(10.0, 30.0, 40.0) == (0.0, 10.0)  # a downloaded cut
    assert place_segment(9.7, 30.0, 40.0) == (0.0, 9.7)  # a cut a little short
    assert place_segment(120.0, 30.0, 40.0) == (30.0, 10.0)  # the whole video
    assert place_segment(37.0, 30.0, 40.0) == (30.0, 7.0)  # a whole video ending inside the segment


def test_catalogue_attributes():
    cls = audioset20k.AudioSet20K
    assert cls.tasks == ("aec",) and "balanced_train" in cls.layout and "eval" in cls.description


def test_fbank_extraction_end_to_end(root, tmp_path):
    out = tmp_path / "as.zarr"
    summary = run_extraction(ExtractOptions("fbank", "audioset20k", out, root, progress=False))
    assert (summary.total, summary.done, summary.failed) == (5, 4, 1)  # hhhhhhhhhhh is an empty file
    b = open_backend(out, "r")
    ids = list(b.read(S.CLIP_ID))
    assert b.read(S.CLIP_STATUS)[ids.index("hhhhhhhhhhh")] == S.STATUS_FAILED
    pooled = b.read(S.pooled_path("audio"))
    assert np.abs(pooled[ids.index("bbbbbbbbbbb")]).sum() > 0
