"""LRS3-TED adapter: trainval/test folders of talks, `Text:` transcripts, seeded dev hold-out."""

import json
import logging
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _speech_media import write_media  # noqa: E402

from avsuperb.extract.datasets import DatasetError, build, lrs3  # noqa: E402
from avsuperb.extract.run import ExtractOptions, run_extraction  # noqa: E402
from avsuperb.store.reader import StoreReader  # noqa: E402


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path, monkeypatch):
    """Media probes are cached under $AVSUPERB_CACHE: keep them in this test's folder."""
    monkeypatch.setenv("AVSUPERB_CACHE", str(tmp_path / "avsuperb-cache"))

TRAINVAL = {  # talk -> utterance -> (seconds, transcript line)
    "talkAAAAAAA": {"50001": (0.6, "Text:  THE CAT SAT"), "50002": (0.8, "Text:  it's a DOG, isn't it?"),
                    "50003": (0.5, "Text:  HELLO WORLD")},
    "talkBBBBBBB": {"50001": (0.7, "Text:  ONE TWO"), "50004": (0.9, "Text:  THREE FOUR FIVE")},
}
TEST = {"talkCCCCCCC": {"00001": (0.6, "Text:  GOOD MORNING"), "00002": (1.0, "Text:  SEE YOU")}}


def write_tree(root: Path) -> Path:
    for folder, talks in (("trainval", TRAINVAL), ("test", TEST)):
        for talk, utts in talks.items():
            for utt, (seconds, text) in utts.items():
                write_media(root / folder / talk / f"{utt}.mp4", seconds=seconds)
                (root / folder / talk / f"{utt}.txt").write_text(f"{text}\nConf:  3\n\nWORD START END ASDSCORE\nTHE 0.1 0.2 1.0\n")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("lrs3"))


def test_clips_splits_transcripts_and_durations(tree):
    index = build("lrs3", tree).index()
    assert len(index.clips) == 7
    by_id = {c.id: c for c in index.clips}
    assert set(by_id) == {f"trainval/{t}/{u}" for t, us in TRAINVAL.items() for u in us} | {
        f"test/{t}/{u}" for t, us in TEST.items() for u in us}
    assert by_id["trainval/talkAAAAAAA/50002"].labels["transcript"] == "IT'S A DOG ISN'T IT"
    assert by_id["test/talkCCCCCCC/00002"].labels == {"transcript": "SEE YOU", "speaker": "talkCCCCCCC"}
    assert index.labels["transcript"].kind == "text" and index.labels["speaker"].kind == "class"
    assert [c.split for c in index.clips].count("test") == 2
    assert [c.split for c in index.clips].count("dev") == 1  # ceil(10 % of 5) trainval utterances
    assert by_id["test/talkCCCCCCC/00002"].duration == pytest.approx(1.0, abs=0.05)
    assert by_id["trainval/talkAAAAAAA/50003"].duration == pytest.approx(0.5, abs=0.05)
    assert all(c.start == 0.0 and c.path.suffix == ".mp4" for c in index.clips)
    assert index.extra["skipped_rows"] == 0 and index.extra["missing"] == []
    assert build("lrs3", tree).has_transcripts(index)


def test_dev_hold_out_is_seeded_and_sized_like_the_reference():
    assert lrs3.dev_count(31982) == 1000 and lrs3.dev_count(200000) == 1000
    assert lrs3.dev_count(5000) == 500 and lrs3.dev_count(5) == 1 and lrs3.dev_count(1) == 0
    ids = [f"trainval/t{i // 10}/{i:05d}" for i in range(3000)]
    a = set(lrs3.seeded_order(ids, lrs3.SEED)[:300])
    b = set(lrs3.seeded_order(list(reversed(ids)), lrs3.SEED)[:300])
    assert a == b  # independent of listing order
    assert a != set(lrs3.seeded_order(ids, lrs3.SEED + 1)[:300])


def test_the_reference_dev_list_is_used_when_present(tmp_path):
    root = write_tree(tmp_path / "lrs3")
    dev = [{"path": "trainval/talkAAAAAAA/50001.mp4", "text": "THE|CAT|SAT|"},
           {"path": "trainval/talkBBBBBBB/50004.mp4", "text": "THREE|FOUR|FIVE|"},
           {"path": "trainval/nosuchtalk/50009.mp4", "text": "X|"}]
    (root / "val_set_metadata_clean.json").write_text(json.dumps(dev))
    index = build("lrs3", root).index()
    assert {c.id for c in index.clips if c.split == "dev"} == {"trainval/talkAAAAAAA/50001", "trainval/talkBBBBBBB/50004"}
    assert index.extra["dev_source"] == "val_set_metadata_clean.json"


def test_malformed_and_missing_utterances_are_skipped_and_counted(tmp_path, caplog):
    root = write_tree(tmp_path / "lrs3")
    talk = root / "trainval" / "talkAAAAAAA"
    (talk / "50002.txt").write_text("Conf:  3\nText:  LATE\n")  # first line is not Text:
    (talk / "50003.txt").write_text("Text:  123 ...\n")  # nothing of the vocabulary left
    (talk / "50009.txt").write_text("Text:  NO VIDEO\n")  # media absent
    write_media(talk / "50010.mp4", seconds=0.5)  # no transcript
    broken = root / "trainval" / "talkBBBBBBB" / "50001.mp4"
    broken.write_bytes(b"not a video" * 50)  # unreadable headers: left out, named
    with caplog.at_level(logging.WARNING):
        index = build("lrs3", root).index()
    assert len(index.clips) == 4
    assert list(index.extra["unreadable"]) == [str(broken)]
    assert index.extra["skipped_rows"] == 3
    assert index.extra["missing"] == [str(talk / "50009.mp4")]
    assert "50002.txt" in caplog.text and "absent" in caplog.text


def test_every_row_malformed_is_an_error(tmp_path):
    root = tmp_path / "lrs3"
    for folder in ("trainval", "test"):
        write_media(root / folder / "t" / "1.mp4", seconds=0.5)
        (root / folder / "t" / "1.txt").write_text("garbage\n")
    with pytest.raises(DatasetError, match="every one of the 2 metadata rows is malformed"):
        build("lrs3", root).index()


def test_wrong_root_names_the_missing_folder(tmp_path):
    (tmp_path / "trainval").mkdir()
    with pytest.raises(DatasetError, match=f"{tmp_path / 'test'}"):
        build("lrs3", tmp_path).index()


def test_extraction_with_fbank_stores_frames(tree, tmp_path):
    summary = run_extraction(ExtractOptions("fbank", "lrs3", tmp_path / "lrs3.zarr", tree, progress=False))
    assert (summary.total, summary.done, summary.failed) == (7, 7, 0)
    with StoreReader(tmp_path / "lrs3.zarr") as reader:
        assert reader.dataset == "lrs3" and reader.attrs["frames"]  # transcripts: frame-level on
        table = reader.table()
        row = table.ids.index("test/talkCCCCCCC/00002")
        assert table.labels["transcript"].values[row] == "SEE YOU" and table.splits[row] == "test"
        assert abs(len(reader.frames("audio", row)) - 100) <= 3  # 1 s at 100 Hz
