"""The Kinetics-Sounds adapter on a fake Kinetics-400 tree: the reference's lists or K400's
annotations, split folders, replacement videos, and clips lacking a stream."""

import logging
import shutil

import numpy as np
import pytest

from avsuperb import schemas as S
from avsuperb.extract.datasets import DatasetError, build, kinetics_sounds
from avsuperb.extract.datasets.kinetics_sounds import KINETICS_SOUNDS_CLASSES
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.store import open_backend

A = "aaaaaaaaaaa_000010_000020"  # audio + video
B = "bbbbbbbbbbb_000000_000010"  # video only
C = "ccccccccccc_000005_000015"  # listed, not downloaded
D = "ddddddddddd_000001_000011"  # audio only
E = "eeeeeeeeeee_000002_000012"  # audio + video

LISTS = {  # the reference's {split}_data_path.csv: relative_path,class_index
    "train": f"train/{A}.mp4,0\ntrain/{B}.mp4,31\ntrain/{C}.mp4,16\ntrain/zzzzzzzzzzz_000000_000010.mp4,32\n",
    "val": f"val/{D}.mp4,7\n",
    "test": f"test/{E}.mp4,16\n",
}
HEADER = "label,youtube_id,time_start,time_end,split\n"
ANNOTATIONS = {  # Kinetics-400 annotation CSVs
    "train": HEADER + "blowing nose,aaaaaaaaaaa,10,20,train\ntickling,bbbbbbbbbbb,0,10,train\n"
    "abseiling,xxxxxxxxxxx,0,10,train\nplaying piano,ccccccccccc,5,15,train\n\"playing piano\",yyyyyyyyyyy,soon,15,train\n",
    "val": HEADER + "playing accordion,ddddddddddd,1,11,val\n",
    "test": HEADER + "playing piano,eeeeeeeeeee,2,12,test\n",
}


@pytest.fixture
def k400(tmp_path, write_media, probe_cache):
    root = tmp_path / "k400"
    write_media(root / "train" / f"{A}.mp4", 0.5)
    write_media(root / "train" / f"{B}.mp4", 0.5, audio=False)
    write_media(root / "val" / f"{D}.mp4", 0.5, video=False)
    write_media(root / "test" / f"{E}.mp4", 0.5)
    return root


def with_lists(root):
    for split, text in LISTS.items():
        (root / "kinetics_sounds").mkdir(exist_ok=True)
        (root / "kinetics_sounds" / f"{split}_data_path.csv").write_text(text)
    return root


def with_annotations(root):
    (root / "annotations").mkdir(exist_ok=True)
    for split, text in ANNOTATIONS.items():
        (root / "annotations" / f"{split}.csv").write_text(text)
    return root


def test_the_32_classes():
    assert len(set(KINETICS_SOUNDS_CLASSES)) == 32 and list(KINETICS_SOUNDS_CLASSES) == sorted(KINETICS_SOUNDS_CLASSES)
    assert {"playing bagpipes", "tapping pen", "stomping grapes", "strumming guitar"} <= set(KINETICS_SOUNDS_CLASSES)


def test_reference_lists(k400):
    index = build("kinetics_sounds", with_lists(k400)).index()
    by_id = {c.id: c for c in index.clips}
    assert sorted(by_id) == sorted([A, B, D, E])
    assert {i: c.split for i, c in by_id.items()} == {A: "train", B: "train", D: "dev", E: "test"}
    assert {i: c.labels["action"] for i, c in by_id.items()} == {
        A: "blowing nose", B: "tickling", D: "playing accordion", E: "playing piano",
    }
    spec = index.labels["action"]
    assert (spec.kind, spec.classes, spec.carried_by) == ("class", KINETICS_SOUNDS_CLASSES, "video")
    assert by_id[A].start == 0.0 and by_id[A].duration == pytest.approx(0.5, abs=0.03)  # cut clips are used whole
    # clips lacking a stream are kept and flagged for the decode step to fill
    assert index.extra["no_audio"] == [B] and index.extra["no_video"] == [D]
    assert index.extra["missing"] == [C] and index.extra["skipped_rows"] == 1
    assert index.extra["metadata"] == "reference"


def test_annotations_class_folders_and_replacements(k400, write_media, caplog):
    with_annotations(k400)
    (k400 / "train" / "blowing_nose").mkdir()
    shutil.move(k400 / "train" / f"{A}.mp4", k400 / "train" / "blowing_nose" / f"{A}.mp4")
    write_media(k400 / "replacement" / "replacement_for_corrupted_k400" / f"{E}.mp4", 0.7)
    with caplog.at_level(logging.WARNING):
        index = build("kinetics_sounds", k400).index()
    by_id = {c.id: c for c in index.clips}
    assert sorted(by_id) == sorted([A, B, D, E])  # abseiling is not a Kinetics-Sounds class
    assert by_id[A].path == k400 / "train" / "blowing_nose" / f"{A}.mp4"
    assert by_id[E].path.parent.name == "replacement_for_corrupted_k400"
    assert by_id[E].duration == pytest.approx(0.7, abs=0.03) and by_id[D].split == "dev"
    assert index.extra["metadata"] == "annotations" and index.extra["skipped_rows"] == 1
    assert "1 of 5 listed clips have no media file" in caplog.text and C in caplog.text


def test_wrong_root_names_the_missing_metadata(k400):
    with pytest.raises(DatasetError, match=r"annotations/train\.csv not found .*train_data_path\.csv") as err:
        build("kinetics_sounds", k400).index()
    assert "\n" not in str(err.value)
    (k400 / "kinetics_sounds").mkdir()
    (k400 / "kinetics_sounds" / "train_data_path.csv").write_text(LISTS["train"])
    with pytest.raises(DatasetError, match=r"val_data_path\.csv not found"):
        build("kinetics_sounds", k400).index()


def test_all_rows_malformed_is_an_error(k400):
    with_lists(k400)
    (k400 / "kinetics_sounds" / "val_data_path.csv").write_text("val/x.mp4,99\nval/y.mp4\n")
    with pytest.raises(DatasetError, match="every row of .*val_data_path.csv is malformed"):
        build("kinetics_sounds", k400).index()


def test_catalogue_attributes():
    cls = kinetics_sounds.KineticsSounds
    assert cls.tasks == ("ar",) and "_data_path.csv" in cls.layout and "no_audio" in cls.description


def test_fbank_extraction_end_to_end_fills_a_missing_audio_stream_with_silence(k400, tmp_path):
    root = with_lists(k400)
    out = tmp_path / "ks.zarr"
    summary = run_extraction(ExtractOptions("fbank", "kinetics_sounds", out, root, progress=False))
    assert (summary.total, summary.done, summary.failed) == (4, 4, 0)
    b = open_backend(out, "r")
    ids = list(b.read(S.CLIP_ID))
    assert sorted(ids) == sorted([A, B, D, E])
    assert b.get_attr(S.ROOT_ATTR)["dataset"]["filled_streams"] == {"audio": [B], "video": []}
    pooled = b.read(S.pooled_path("audio"))[:, 0]
    silent = pooled[ids.index(B)]
    assert np.all(np.isfinite(silent)) and np.ptp(silent[:80]) == 0  # one constant floor in every mel bin
    assert all(np.ptp(pooled[ids.index(c)][:80]) > 0 for c in (A, D, E))
