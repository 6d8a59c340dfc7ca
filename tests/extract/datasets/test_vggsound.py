"""The VGGSound adapter on a fake tree in the official layout: vggsound.csv and <ytid>_<start:06d>.mp4."""

import logging

import pytest

from avsuperb import schemas as S
from avsuperb.extract.datasets import DatasetError, build, vggsound
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.store import open_backend

CSV = """aaaaaaaaaaa,30,dog barking,train
bbbbbbbbbbb,0,"cattle, bovinae cowbell",train
ccccccccccc,12,playing piano,test
ccccccccccc,40,dog barking,test
ddddddddddd,5,dog barking,test
eeeeeeeeeee,7,dog barking,validation
fffffffffff,abc,dog barking,train
"""


@pytest.fixture
def root(tmp_path, write_media, probe_cache):
    root = tmp_path / "vggsound"
    root.mkdir()
    (root / "vggsound.csv").write_text(CSV)
    write_media(root / "video" / "aaaaaaaaaaa_000030.mp4", 0.5)
    write_media(root / "video" / "bbbbbbbbbbb_000000.mp4", 0.6)
    write_media(root / "video" / "ccccccccccc_000012.mp4", 0.5)
    write_media(root / "video" / "ccccccccccc_40.mkv", 0.4)  # another naming, same video at another start
    return root


def test_clips_splits_and_sorted_classes(root):
    index = build("vggsound", root).index()
    by_id = {c.id: c for c in index.clips}
    assert sorted(by_id) == ["aaaaaaaaaaa_000030", "bbbbbbbbbbb_000000", "ccccccccccc_000012", "ccccccccccc_000040"]
    assert [by_id[i].split for i in sorted(by_id)] == ["train", "train", "test", "test"]
    spec = index.labels["events"]
    assert spec.kind == "class" and spec.carried_by == "audio"
    assert spec.classes == ("cattle, bovinae cowbell", "dog barking", "playing piano")
    assert by_id["bbbbbbbbbbb_000000"].labels["events"] == "cattle, bovinae cowbell"
    table = index.table()
    assert dict(zip(table.ids, table.labels["events"].values.tolist()))["ccccccccccc_000012"] == 2
    assert by_id["aaaaaaaaaaa_000030"].start == 0.0
    assert by_id["bbbbbbbbbbb_000000"].duration == pytest.approx(0.6, abs=0.03)
    assert index.extra["missing"] == ["ddddddddddd_000005"]
    assert index.extra["skipped_rows"] == 2 and index.extra["unreadable"] == []


def test_absent_media_and_bad_rows_are_logged(root, caplog):
    with caplog.at_level(logging.WARNING):
        build("vggsound", root).index()
    assert "1 of 5 listed clips have no media file" in caplog.text and "ddddddddddd_000005" in caplog.text
    assert "'validation' is neither train nor test" in caplog.text and "line 7" in caplog.text


def test_all_rows_malformed_and_wrong_root_are_errors(root, tmp_path):
    with pytest.raises(DatasetError, match=r"vggsound\.csv not found.*expected") as err:
        build("vggsound", root / "video").index()
    assert "\n" not in str(err.value)
    (root / "vggsound.csv").write_text("a;b;c\nx,1,y,dev\n")
    with pytest.raises(DatasetError, match="every row of .*vggsound.csv is malformed"):
        build("vggsound", root).index()


def test_catalogue_attributes():
    cls = vggsound.VGGSound
    assert cls.tasks == ("aec",) and "vggsound.csv" in cls.layout and cls.description


def test_fbank_extraction_end_to_end(root, tmp_path):
    out = tmp_path / "vgg.zarr"
    summary = run_extraction(ExtractOptions("fbank", "vggsound", out, root, progress=False))
    assert (summary.total, summary.done, summary.failed, summary.pending) == (4, 4, 0, 0)
    b = open_backend(out, "r")
    assert sorted(b.read(S.CLIP_ID)) == sorted(c.id for c in build("vggsound", root).index().clips)
