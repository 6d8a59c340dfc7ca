"""Generic manifest adapter: CSV / JSON lines, `NAME:KIND` label columns, sidecars, row errors."""

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _speech_media import write_media  # noqa: E402

from avsuperb.extract.datasets import DatasetError, build, manifest  # noqa: E402
from avsuperb.extract.run import ExtractOptions, run_extraction  # noqa: E402
from avsuperb.store.reader import StoreReader  # noqa: E402


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path, monkeypatch):
    """Media probes are cached under $AVSUPERB_CACHE: keep them in this test's folder."""
    monkeypatch.setenv("AVSUPERB_CACHE", str(tmp_path / "avsuperb-cache"))

HEADER = "path,start,end,split,speaker:class,events:multi,transcript:text\n"
ROWS = [
    "media/a.mp4,,,train,ann,dog;bark,hello there\n",
    "media/b.mp4,0.2,0.9,train,bob,cat,\n",
    "media/b.mp4,1.0,1.8,dev,bob,,good night\n",
    "media/c.mp4,0.5,,test,ann,dog,\n",
    "{abs},,,test,cid,bark;cat,the end\n",
]


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    folder = tmp_path_factory.mktemp("manifest")
    write_media(folder / "media" / "a.mp4", seconds=1.0)
    write_media(folder / "media" / "b.mp4", seconds=2.0)
    write_media(folder / "media" / "c.mp4", seconds=1.2, video=False)
    write_media(folder / "elsewhere" / "d.mp4", seconds=0.8)
    return folder


def write_csv(folder: Path, rows=ROWS, header=HEADER, name="manifest.csv") -> Path:
    path = folder / name
    path.write_text(header + "".join(r.replace("{abs}", str(folder / "elsewhere" / "d.mp4")) for r in rows))
    return path


def test_csv_manifest_with_every_label_kind(media):
    write_csv(media)
    index = build("manifest", media).index()  # a folder holding manifest.csv
    by_id = {c.id: c for c in index.clips}
    assert list(by_id) == ["media/a", "media/b@0.2-0.9", "media/b@1-1.8", "media/c@0.5", "elsewhere/d"]  # absolute, but under the folder
    assert by_id["media/a"].duration == pytest.approx(1.0, abs=0.05)  # read from the header
    assert (by_id["media/b@1-1.8"].start, by_id["media/b@1-1.8"].duration) == (1.0, pytest.approx(0.8))
    assert by_id["media/c@0.5"].duration == pytest.approx(0.7, abs=0.05)  # start to the end of the file
    assert by_id["media/a"].labels == {"speaker": "ann", "events": ["dog", "bark"], "transcript": "hello there"}
    assert by_id["media/b@1-1.8"].labels == {"speaker": "bob", "events": [], "transcript": "good night"}
    assert by_id["media/b@0.2-0.9"].labels["transcript"] is None
    assert {k: (v.kind, v.classes) for k, v in index.labels.items()} == {
        "speaker": ("class", ("ann", "bob", "cid")), "events": ("multi", ("bark", "cat", "dog")), "transcript": ("text", ())}
    assert [c.split for c in index.clips] == ["train", "train", "dev", "test", "test"]
    assert index.trials is None and index.extra["skipped_rows"] == 0
    table = index.table()
    assert table.labels["events"].values.tolist()[0] == [1, 0, 1]


def test_jsonl_manifest_sidecar_classes_and_trials(media, tmp_path):
    folder = tmp_path / "j"
    folder.mkdir()
    rows = [
        {"id": "one", "path": str(media / "media" / "a.mp4"), "split": "test", "emotion:class": "sad", "events:multi": ["dog"]},
        {"id": "two", "path": str(media / "media" / "b.mp4"), "start": 0.5, "duration": 1.0, "split": "test", "emotion:class": "neu"},
        {"id": "three", "path": str(media / "media" / "b.mp4"), "split": "train", "emotion:class": "neu", "events:multi": "dog;cat"},
    ]
    (folder / "clips.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (folder / "labels.json").write_text(json.dumps({"emotion": ["neu", "hap", "ang", "sad"], "events": ["cat", "dog", "bird"]}))
    (folder / "trials.txt").write_text("# target a b\n1 one two\n0,one,two\n1 one three\nmaybe one two\n")
    index = build("manifest", folder / "clips.jsonl").index()  # a manifest file given directly
    assert [c.id for c in index.clips] == ["one", "two", "three"]
    assert index.labels["emotion"].classes == ("neu", "hap", "ang", "sad")  # the sidecar's order
    assert index.labels["events"].classes == ("cat", "dog", "bird")
    assert index.clips[1].start == 0.5 and index.clips[1].duration == 1.0
    assert index.clips[0].labels.get("events") == ["dog"] and index.clips[1].labels["events"] == []
    assert index.trials == [("one", "two", 1), ("one", "two", 0)]  # "three" is not a test clip: left out
    assert index.extra["skipped_rows"] == 1  # the 'maybe' line
    assert index.table().labels["emotion"].values.tolist() == [3, 0, 0]


def test_malformed_rows_are_skipped_naming_their_line(media, tmp_path, caplog):
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "labels.json").write_text(json.dumps({"speaker": ["ann", "bob"]}))
    bad = [
        f"{media}/media/a.mp4,x,,train,ann,,\n",  # line 2: start not a number
        f"{media}/media/a.mp4,0.5,0.2,train,ann,,\n",  # line 3: empty range
        f"{media}/media/a.mp4,,,holdout,ann,,\n",  # line 4: unknown split
        f"{media}/media/a.mp4,,,train,eve,,\n",  # line 5: not a declared class
        f"{media}/media/a.mp4,,,train,ann,,,extra\n",  # line 6: too many fields
        f"{media}/media/a.mp4,0.1,0.4,train\n",  # line 7: too few fields
        ",,,train,ann,,\n",  # line 8: no path
        f"{media}/media/b.mp4,0.1,0.4,train,bob,,\n",  # line 9: fine
        f"{media}/media/b.mp4,0.1,0.4,test,ann,,\n",  # line 10: duplicate id
        f"{media}/media/a.mp4,5.0,,train,ann,,\n",  # line 11: starts after the end of the file
        f"{folder}/gone.mp4,0,1,train,ann,,\n",  # line 12: absent media, not malformed
    ]
    write_csv(folder, bad)
    with caplog.at_level(logging.WARNING):
        index = build("manifest", folder).index()
    assert [c.id for c in index.clips] == [f"{media.as_posix()}/media/b@0.1-0.4"]
    assert index.extra["skipped_rows"] == 9
    assert index.extra["missing"] == [str(folder / "gone.mp4")]
    for line in (2, 3, 4, 5, 6, 7, 8, 10, 11):
        assert f"manifest.csv line {line}:" in caplog.text
    assert "not one of its classes" in caplog.text and "duplicate id" in caplog.text


def test_every_row_malformed_is_an_error(tmp_path):
    write_csv(tmp_path, ["a.mp4,x,,train,ann,,\n", "b.mp4,,,nowhere,ann,,\n"])
    with pytest.raises(DatasetError, match=r"every one of the 2 metadata rows is malformed \(manifest.csv line 2"):
        build("manifest", tmp_path).index()


@pytest.mark.parametrize(
    "header, message",
    [
        ("path,speaker\n", "column 'speaker' is neither"),
        ("path,speaker:label\n", "column 'speaker:label' is neither"),
        ("file,speaker:class\n", "no `path` column"),
        ("path,end,duration\n", "give `end` or `duration`, not both"),
    ],
)
def test_malformed_header_is_an_error(tmp_path, header, message):
    write_csv(tmp_path, ["a.mp4,1,2\n"], header=header)
    with pytest.raises(DatasetError, match=message):
        build("manifest", tmp_path).index()


def test_jsonl_rows_that_are_not_objects_are_skipped_and_unknown_keys_are_errors(media, tmp_path):
    good = json.dumps({"path": str(media / "media" / "a.mp4"), "split": "test"})
    (tmp_path / "manifest.jsonl").write_text(f"{good}\n{{broken\n[1, 2]\n\n")
    index = build("manifest", tmp_path).index()
    assert len(index.clips) == 1 and index.extra["skipped_rows"] == 2
    (tmp_path / "manifest.jsonl").write_text(good + "\n" + json.dumps({"path": "x.mp4", "mood": "sad"}) + "\n")
    with pytest.raises(DatasetError, match="manifest.jsonl line 2: column 'mood'"):
        build("manifest", tmp_path).index()


def test_wrong_root_names_the_expected_file(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "manifest.csv")):
        build("manifest", tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        build("manifest", tmp_path / "nope.csv")
    (tmp_path / "manifest.csv").write_text(HEADER)
    (tmp_path / "manifest.jsonl").write_text("")
    with pytest.raises(DatasetError, match="holds both"):
        build("manifest", tmp_path)
    with pytest.raises(DatasetError, match="lists no clips"):
        build("manifest", tmp_path / "manifest.csv").index()


def test_label_kind_suffix_parsing():
    assert manifest.label_columns(["path", "a:b:class", "x:text"], "here") == {"a:b": ("a:b:class", "class"), "x": ("x:text", "text")}


def test_extraction_with_fbank_on_a_manifest(media, tmp_path):
    path = write_csv(media, name="extract.csv")
    summary = run_extraction(ExtractOptions("fbank", "manifest", tmp_path / "m.zarr", path, progress=False))
    assert (summary.total, summary.done, summary.failed) == (5, 5, 0)
    with StoreReader(tmp_path / "m.zarr") as reader:
        assert reader.attrs["frames"]  # a text label: frame-level features stored
        table = reader.table()
        assert table.ids[1] == "media/b@0.2-0.9" and table.durations[1] == pytest.approx(0.7)
        assert abs(len(reader.frames("audio", 1)) - 70) <= 3
        assert table.labels["events"].values.shape == (5, 3)
