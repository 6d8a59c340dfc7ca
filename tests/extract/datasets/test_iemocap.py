"""IEMOCAP adapter: EmoEvaluation time ranges into the dialog videos, 4 classes, session folds."""

import logging
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from _speech_media import SR, noise, tone, write_media  # noqa: E402

from avsuperb.extract import upstreams  # noqa: E402
from avsuperb.extract.datasets import DatasetError, build, iemocap  # noqa: E402
from avsuperb.extract.media import decode  # noqa: E402
from avsuperb.extract.run import ExtractOptions, run_extraction  # noqa: E402
from avsuperb.store.reader import StoreReader  # noqa: E402


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path, monkeypatch):
    """Media probes are cached under $AVSUPERB_CACHE: keep them in this test's folder."""
    monkeypatch.setenv("AVSUPERB_CACHE", str(tmp_path / "avsuperb-cache"))

HEADER = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"


def evaluation(rows: list[tuple[float, float, str, str]]) -> str:
    """An EmoEvaluation file: a header, then per turn its summary line and annotator lines."""
    out = [HEADER]
    for start, end, utt, label in rows:
        out.append(f"[{start:.4f} - {end:.4f}]\t{utt}\t{label}\t[2.5000, 2.5000, 2.5000]\n")
        out.append("C-E1:\tNeutral state;\t()\nA-E1:\tval 3; act 2; dom  2;\t()\n\n")
    return "".join(out)


SESSION1 = [(0.2, 1.0, "Ses01F_impro01_F000", "neu"), (1.1, 2.0, "Ses01F_impro01_M000", "exc"),
            (2.1, 2.9, "Ses01F_impro01_F001", "fru"), (3.0, 3.8, "Ses01F_impro01_M001", "ang")]
SESSION2 = [(0.5, 1.5, "Ses02M_script01_1_F000", "sad"), (1.6, 2.4, "Ses02M_script01_1_M000", "hap"),
            (2.5, 3.0, "Ses02M_script01_1_F001", "xxx")]


def write_tree(root: Path) -> Path:
    for session, dialog, rows, seed in (("Session1", "Ses01F_impro01", SESSION1, 1), ("Session2", "Ses02M_script01_1", SESSION2, 2)):
        base = root / session / "dialog"
        write_media(base / "avi" / "DivX" / f"{dialog}.avi", audio=noise(4.0, seed))
        (base / "EmoEvaluation").mkdir(parents=True)
        (base / "EmoEvaluation" / f"{dialog}.txt").write_text(evaluation(rows))
        (base / "EmoEvaluation" / f"._{dialog}.txt").write_bytes(b"\x00\x05\x16\x07 mac resource fork")
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return write_tree(tmp_path_factory.mktemp("iemocap"))


def test_clips_are_time_ranges_of_the_dialog_video_with_four_classes(tree):
    index = build("iemocap", tree).index()
    by_id = {c.id: c for c in index.clips}
    assert set(by_id) == {"Ses01F_impro01_F000", "Ses01F_impro01_M000", "Ses01F_impro01_M001",
                          "Ses02M_script01_1_F000", "Ses02M_script01_1_M000"}
    assert index.labels["emotion"].classes == ("neu", "hap", "ang", "sad")
    assert index.labels["session"].classes == tuple(f"Session{i}" for i in range(1, 6))
    c = by_id["Ses01F_impro01_M000"]
    assert c.labels == {"emotion": "hap", "session": "Session1"}  # exc merged into hap
    assert c.path == tree / "Session1" / "dialog" / "avi" / "DivX" / "Ses01F_impro01.avi"
    assert (c.start, c.duration) == (pytest.approx(1.1), pytest.approx(0.9))
    assert {c.split for c in index.clips if c.labels["session"] == "Session1"} == {"test"}
    assert {c.split for c in index.clips if c.labels["session"] == "Session2"} == {"train"}
    assert index.extra["dropped_labels"] == {"fru": 1, "xxx": 1}
    assert index.extra["skipped_rows"] == 0 and index.extra["missing"] == []


def test_malformed_lines_and_absent_videos(tmp_path, caplog):
    root = write_tree(tmp_path / "iemocap")
    labels = root / "Session2" / "dialog" / "EmoEvaluation"
    text = (labels / "Ses02M_script01_1.txt").read_text()
    text += "[abc - 1.0]\tSes02M_script01_1_M009\tneu\t[1, 2, 3]\n"  # not a number
    text += "[3.5000 - 3.2000]\tSes02M_script01_1_M010\tneu\t[2.5, 2.5, 2.5]\n"  # empty range
    text += "[3.5000 - 3.9000]\tSes02F_impro02_M010\tneu\t[2.5, 2.5, 2.5]\n"  # another dialog's utterance
    (labels / "Ses02M_script01_1.txt").write_text(text)
    (labels / "Ses02F_impro03.txt").write_text(evaluation([(0.1, 0.9, "Ses02F_impro03_F000", "ang")]))  # no video
    with caplog.at_level(logging.WARNING):
        index = build("iemocap", root).index()
    assert len(index.clips) == 5
    assert index.extra["skipped_rows"] == 3
    assert index.extra["missing"] == [str(root / "Session2" / "dialog" / "avi" / "DivX" / "Ses02F_impro03.avi")]
    assert index.extra["utterances_without_video"] == 1
    assert "Ses02M_script01_1.txt line" in caplog.text and "Session3" in caplog.text  # absent sessions are named


def test_every_line_malformed_is_an_error(tmp_path):
    labels = tmp_path / "Session1" / "dialog" / "EmoEvaluation"
    labels.mkdir(parents=True)
    (labels / "Ses01F_impro01.txt").write_text("[1 - 2] broken\n[x]\n")
    with pytest.raises(DatasetError, match="every one of the 2 metadata rows is malformed"):
        build("iemocap", tmp_path).index()


def test_wrong_root_names_the_expected_folder(tmp_path):
    with pytest.raises(DatasetError, match=str(tmp_path / "Session1" / "dialog" / "EmoEvaluation")):
        build("iemocap", tmp_path).index()
    (tmp_path / "Session1").mkdir()
    with pytest.raises(DatasetError, match=str(tmp_path / "Session1" / "dialog" / "EmoEvaluation")):
        build("iemocap", tmp_path).index()


@pytest.mark.parametrize("start, end", [(0.3, 1.1), (2.3, 3.85)])  # before and after decode's seek threshold
def test_time_range_decode_equals_the_segment_cut_separately(tmp_path, start, end):
    signal = noise(4.0, seed=7)
    dialog = write_media(tmp_path / "dialog.avi", audio=signal)
    part = decode(dialog, sample_rate=SR, fps=25, start=start, end=end)
    whole = decode(dialog, sample_rate=SR, fps=None)
    a, b = int(round(start * SR)), int(round(end * SR))
    assert len(part.audio) == b - a
    np.testing.assert_allclose(part.audio, whole.audio[a:b], atol=1e-6)  # the same samples, not shifted
    np.testing.assert_allclose(part.audio, signal[a:b], atol=1 / 32767)  # and the written ones (16-bit)
    segment = decode(write_media(tmp_path / "segment.avi", audio=signal[a:b]), sample_rate=SR, fps=None)
    np.testing.assert_allclose(part.audio, segment.audio[: b - a], atol=1e-6)
    assert len(part.video) == int(round((end - start) * 25))
    first = int(np.floor(start * 25 + 0.25))  # frame k is grey 4k; nearest earlier frame of the grid
    assert abs(int(part.video[0].mean()) - 4 * first) <= 3


def test_time_range_decode_with_resampling_matches_the_cut_of_the_whole(tmp_path):
    sr = 44100
    signal = tone(4.0, 300.0, sr) + 0.3 * tone(4.0, 1234.0, sr)
    dialog = write_media(tmp_path / "dialog.avi", audio=signal, sr=sr)
    part = decode(dialog, sample_rate=SR, fps=None, start=2.3, end=3.1)
    whole = decode(dialog, sample_rate=SR, fps=None)
    a, b = int(round(2.3 * SR)), int(round(3.1 * SR))
    assert len(part.audio) == b - a
    np.testing.assert_allclose(part.audio, whole.audio[a:b], atol=2e-3)


def test_extraction_with_fbank_decodes_each_utterance_range(tree, tmp_path):
    summary = run_extraction(ExtractOptions("fbank", "iemocap", tmp_path / "e.zarr", tree, progress=False))
    assert (summary.total, summary.done, summary.failed) == (5, 5, 0)
    with StoreReader(tmp_path / "e.zarr") as reader:
        table = reader.table()
        assert set(reader.label_names) == {"emotion", "session"}
        assert not reader.attrs["frames"]  # no transcripts: pooled only
        row = table.ids.index("Ses02M_script01_1_F000")
        assert table.durations[row] == pytest.approx(1.0)
        assert table.labels["emotion"].values[row] == iemocap.EMOTIONS.index("sad")
        pooled = reader.pooled("audio")
    # the stored clip is the fbank of exactly that range of the dialog's audio
    segment = noise(4.0, seed=2)[int(round(0.5 * SR)) : int(round(1.5 * SR))]
    expected = upstreams.build("fbank", None, "cpu").extract(["audio"], segment, None)["audio"].mean(axis=0)
    np.testing.assert_allclose(pooled[row], expected, rtol=1e-3, atol=1e-3)
    assert not np.allclose(pooled[row], pooled[table.ids.index("Ses02M_script01_1_M000")], atol=1e-3)
