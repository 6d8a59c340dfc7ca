"""The leaderboard reproduces the paper's Table 1 from result.json files and reports bad input clearly."""

from __future__ import annotations

import csv
import io
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from avsuperb import schemas
from avsuperb.report.leaderboard import (
    BENCHMARK,
    MISSING,
    ReportError,
    build,
    collect,
    format_score,
    to_csv,
    to_markdown,
    write,
)

DATASETS = ["audioset20k", "vggsound", "kinetics_sounds", "ucf101", "lrs3", "voxceleb2", "iemocap"]
TASKS = {"audioset20k": "aec", "vggsound": "aec", "kinetics_sounds": "ar", "ucf101": "ar",
         "lrs3": "asr", "voxceleb2": "asv", "iemocap": "er"}
METRICS = {"audioset20k": "map", "lrs3": "cer", "voxceleb2": "eer"}  # the rest: accuracy

# AV-SUPERB paper, Table 1: (track, upstream, printed overall, the 7 scores in column order).
PAPER = [
    ("audio", "FBANK", "36.88", [2.8, 7.76, 24.73, 19.91, 21.43, 27.16, 51.52]),
    ("audio", "HuBERT", "53.66", [14.3, 30.21, 51.46, 36.06, 2.96, 15.58, 62.14]),
    ("audio", "AV-HuBERT", "53.20", [12.6, 31.14, 49.02, 38.58, 3.01, 14.45, 58.54]),
    ("audio", "RepLAI", "39.70", [12.3, 27.01, 45.90, 33.85, 66.09, 32.58, 57.53]),
    ("audio", "AVBERT", "44.81", [20.5, 37.67, 55.28, 43.26, 80.23, 23.74, 60.94]),
    ("audio", "MAViL", "54.11", [21.6, 39.91, 57.28, 45.68, 24.43, 20.71, 59.46]),
    ("video", "HoG", "25.39", [1.5, 3.81, 18.70, 25.67, 71.46, 36.32, 35.83]),
    ("video", "AV-HuBERT", "33.48", [2.4, 5.90, 24.73, 37.55, 50.91, 11.90, 26.59]),
    ("video", "RepLAI", "36.40", [5.5, 13.5, 46.68, 56.69, 71.33, 36.95, 40.72]),
    ("video", "AVBERT", "47.69", [11.5, 28.73, 62.67, 77.42, 72.29, 20.00, 45.8]),
    ("video", "MAViL", "49.70", [18.0, 32.08, 74.01, 79.37, 74.03, 24.58, 43.03]),
    ("fusion", "AV-HuBERT", "53.42", [13.3, 32.69, 52.23, 41.46, 2.75, 9.46, 46.45]),
    ("fusion", "AVBERT", "54.85", [22.9, 44.54, 71.31, 71.76, 70.12, 18.31, 61.87]),
    ("fusion", "MAViL", "62.36", [26.7, 47.22, 79.51, 77.98, 30.18, 19.67, 54.94]),
]


def result(track: str, upstream: str, dataset: str, score: float, *, task: str | None = None,
           created: str = "2024-01-01T00:00:00+00:00") -> dict[str, Any]:
    """A result document as probe/run.py writes it (checked against the schema)."""
    metric = METRICS.get(dataset, "accuracy")
    doc = {
        "schema_version": schemas.RESULT_SCHEMA_VERSION,
        "software_version": "0.1.0",
        "created": created,
        "task": task or TASKS[dataset],
        "dataset": dataset,
        "upstream": {"name": upstream, "config": {}, "checkpoint_sha256": None},
        "track": track,
        "store": f"/stores/{upstream}/{dataset}.zarr",
        "metric": {"name": metric, "higher_is_better": metric not in ("cer", "eer")},
        "test_score": score,
        "dev_scores": {"0.001": score},
        "chosen_lr": 1e-3,
        "layer_weights": [0.5, 0.5],
        "config": {},
        "splits": {"train": 10, "dev": 2, "test": 2, "dev_carved_from_train": False},
    }
    assert schemas.validation_error("result", doc) is None
    return doc


def save(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "result.json"
    path.write_text(json.dumps(doc, indent=2))
    return path


def full_row(root: Path, track: str, upstream: str, scores: list[float]) -> None:
    for dataset, score in zip(DATASETS, scores, strict=True):
        save(root / f"{track}-{upstream}" / dataset, result(track, upstream, dataset, score))


def md_rows(markdown: str) -> dict[str, list[str]]:
    """Markdown body rows by their first cell (later rows with the same label win)."""
    out = {}
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_paper_table_1_overall_scores(tmp_path: Path) -> None:
    # One folder per paper row (numbered so the folder walk keeps the paper's order), one result each.
    for i, (track, upstream, _, scores) in enumerate(PAPER):
        for dataset, score in zip(DATASETS, scores, strict=True):
            save(tmp_path / "runs" / f"{i:02d}-{upstream}-{track}" / dataset, result(track, upstream, dataset, score))
    results = collect([tmp_path / "runs"])
    assert len(results) == 14 * 7
    lb = build(results)

    assert [c.dataset for c in lb.columns] == DATASETS
    assert [(r.track, r.upstream) for r in lb.rows] == [(t, u) for t, u, _, _ in PAPER]
    for row, (_, _, printed, _) in zip(lb.rows, PAPER, strict=True):
        assert row.overall is not None
        assert row.overall == pytest.approx(float(printed), abs=0.005), (row.track, row.upstream)
        assert format_score(row.overall) == printed, (row.track, row.upstream, row.overall)

    md = to_markdown(lb)
    lines = md.splitlines()
    assert lines[0] == ("| Upstream | Overall | AS-20K | VGGSound | Kinetics-Sounds | UCF101 | LRS3-TED "
                        "| VoxCeleb2 | IEMOCAP |")
    assert lines[2] == "|  | ↑ | mAP ↑ | Acc ↑ | Acc ↑ | Acc ↑ | CER ↓ | EER ↓ | Acc ↑ |"
    assert "| FBANK | 36.88 | 2.80 | 7.76 | 24.73 | 19.91 | 21.43 | 27.16 | 51.52 |" in lines
    assert "| MAViL | 62.36 | 26.70 | 47.22 | 79.51 | 77.98 | 30.18 | 19.67 | 54.94 |" in lines
    # Group labels in track order, each followed by its rows.
    labels = [line.split("|")[1].strip() for line in lines if line.startswith("| **")]
    assert labels == ["**Audio-only**", "**Video-only**", "**Audio-visual fusion**"]
    assert lines.index("| HoG | 25.39 | 1.50 | 3.81 | 18.70 | 25.67 | 71.46 | 36.32 | 35.83 |") == \
        lines.index("| **Video-only** |  |  |  |  |  |  |  |  |") + 1

    rows = csv_rows(to_csv(lb))
    assert [(r["track"], r["upstream"]) for r in rows] == [(t, u) for t, u, _, _ in PAPER]
    assert float(rows[0]["overall"]) == pytest.approx(36.88, abs=0.005)
    assert float(rows[0]["lrs3"]) == 21.43


def test_rounding_is_half_up_to_two_decimals() -> None:
    assert format_score(36.875714) == "36.88"  # rounded, not truncated
    assert format_score(49.69714) == "49.70"  # two decimals kept
    assert format_score(2.675) == "2.68"  # 2.675 is 2.67499999… in binary: still rounds up
    assert format_score(0.125) == "0.13"  # half up, not half to even
    assert format_score(None) == MISSING


def test_row_missing_a_dataset_has_no_overall(tmp_path: Path) -> None:
    full_row(tmp_path, "audio", "FBANK", PAPER[0][3])
    for dataset, score in zip(DATASETS, PAPER[1][3], strict=True):
        if dataset != "voxceleb2":
            save(tmp_path / "hubert" / dataset, result("audio", "HuBERT", dataset, score))
    lb = build(collect([tmp_path]))
    by_name = {r.upstream: r for r in lb.rows}
    assert by_name["HuBERT"].overall is None
    assert "voxceleb2" not in by_name["HuBERT"].cells
    assert by_name["FBANK"].overall == pytest.approx(36.88, abs=0.005)

    md = md_rows(to_markdown(lb))
    assert md["HuBERT"] == [MISSING, "14.30", "30.21", "51.46", "36.06", "2.96", MISSING, "62.14"]
    assert md["FBANK"][0] == "36.88"

    rows = {r["upstream"]: r for r in csv_rows(to_csv(lb))}
    assert rows["HuBERT"]["overall"] == ""
    assert rows["HuBERT"]["voxceleb2"] == ""
    assert rows["HuBERT"]["iemocap"] == "62.14"
    assert rows["FBANK"]["overall"] != ""


def test_newest_duplicate_wins_and_the_others_are_named(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # The newest (13:00 UTC) is neither first nor last, and by string the 12:00+02:00 one (10:00 UTC) would win.
    old = save(tmp_path / "a", result("video", "HoG", "ucf101", 10.0, created="2024-05-01T09:00:00+00:00"))
    new = save(tmp_path / "b", result("video", "HoG", "ucf101", 30.0, created="2024-05-01T11:00:00-02:00"))
    mid = save(tmp_path / "c", result("video", "HoG", "ucf101", 20.0, created="2024-05-01T12:00:00+02:00"))
    with caplog.at_level(logging.WARNING, logger="avsuperb.report.leaderboard"):
        lb = build(collect([tmp_path]))
    assert len(lb.rows) == 1
    assert lb.rows[0].cells == {"ucf101": 30.0}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(old) in warnings[0] and str(mid) in warnings[0] and str(new) in warnings[0]
    assert warnings[0].index(str(new)) < warnings[0].index("ignoring")
    # Same rule without files: the newest created wins whatever the input order.
    docs = [result("audio", "X", "lrs3", s, created=c) for s, c in
            [(5.0, "2024-01-02T00:00:00"), (7.0, "2024-01-03T00:00:00"), (6.0, "2024-01-01T00:00:00")]]
    assert build(docs).rows[0].cells == {"lrs3": 7.0}


def test_synthetic_results_are_extra_columns_outside_the_overall(tmp_path: Path) -> None:
    full_row(tmp_path, "audio", "FBANK", PAPER[0][3])
    save(tmp_path / "syn-er", result("audio", "FBANK", "synthetic", 99.0, task="er"))
    save(tmp_path / "syn-ar", result("audio", "FBANK", "synthetic", 1.0, task="ar"))
    lb = build(collect([tmp_path]))
    keys = [c.key for c in lb.columns]
    assert keys == [*DATASETS, "synthetic:ar:accuracy", "synthetic:er:accuracy"]
    assert not any(c.benchmark for c in lb.columns[7:])
    row = lb.rows[0]
    assert row.overall == pytest.approx(36.88, abs=0.005)
    assert format_score(row.overall) == "36.88"

    lines = to_markdown(lb).splitlines()
    assert lines[0].endswith("| IEMOCAP | synthetic | synthetic |")
    assert lines[2].endswith("| EER ↓ | Acc ↑ | AR, Acc ↑ | ER, Acc ↑ |")
    assert md_rows(to_markdown(lb))["FBANK"] == ["36.88", "2.80", "7.76", "24.73", "19.91", "21.43", "27.16",
                                                 "51.52", "1.00", "99.00"]
    csv_row = csv_rows(to_csv(lb))[0]
    assert csv_row["synthetic:er:accuracy"] == "99.0" and csv_row["synthetic:ar:accuracy"] == "1.0"


def test_write_creates_both_files_atomically(tmp_path: Path) -> None:
    full_row(tmp_path / "runs", "fusion", "MAViL", PAPER[-1][3])
    lb = build(collect([tmp_path / "runs"]))
    out = tmp_path / "report" / "nested"
    paths = write(lb, out)
    assert paths == [out / "leaderboard.md", out / "leaderboard.csv"]
    assert paths[0].read_text(encoding="utf-8") == to_markdown(lb)
    assert paths[1].read_text(encoding="utf-8") == to_csv(lb)
    assert sorted(p.name for p in out.iterdir()) == ["leaderboard.csv", "leaderboard.md"]  # no temp files left
    write(lb, out)  # overwriting works
    assert "| MAViL | 62.36 |" in paths[0].read_text(encoding="utf-8")


def test_missing_path_is_named(tmp_path: Path) -> None:
    full_row(tmp_path / "runs", "audio", "FBANK", PAPER[0][3])
    missing = tmp_path / "nowhere" / "result.json"
    with pytest.raises(ReportError) as err:
        collect([tmp_path / "runs", missing])
    assert str(missing) in str(err.value) and "\n" not in str(err.value)


def test_non_json_file_is_named(tmp_path: Path) -> None:
    full_row(tmp_path, "audio", "FBANK", PAPER[0][3])
    bad = tmp_path / "broken" / "result.json"
    bad.parent.mkdir()
    bad.write_text('{"task": "er", ')
    with pytest.raises(ReportError, match="not valid JSON") as err:
        collect([tmp_path])
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    # NaN is not JSON either (and would poison the overall score).
    nan = save(tmp_path / "nan", result("audio", "FBANK", "iemocap", 1.0))
    nan.write_text(nan.read_text().replace('"test_score": 1.0', '"test_score": NaN'))
    with pytest.raises(ReportError, match="NaN") as err:
        collect([nan])
    assert str(nan) in str(err.value)


def test_schema_failure_is_named(tmp_path: Path) -> None:
    doc = result("audio", "FBANK", "iemocap", 51.52)
    del doc["test_score"]
    bad = save(tmp_path / "bad", doc)
    good = save(tmp_path / "good", result("audio", "FBANK", "lrs3", 21.43))
    with pytest.raises(ReportError, match="test_score") as err:
        collect([good, bad])
    assert str(bad) in str(err.value) and "\n" not in str(err.value)
    doc = result("audio", "FBANK", "iemocap", 51.52)
    doc["track"] = "both"
    bad_track = save(tmp_path / "track", doc)
    with pytest.raises(ReportError, match="track") as err:
        collect([bad_track])
    assert str(bad_track) in str(err.value)


def test_nothing_found_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no results here")
    with pytest.raises(ReportError, match="no result.json found"):
        collect([tmp_path / "empty"])
    with pytest.raises(ReportError):
        collect([])


def test_benchmark_columns_follow_the_paper() -> None:
    assert [(c.dataset, c.title, c.unit) for c in BENCHMARK] == [
        ("audioset20k", "AS-20K", "mAP ↑"), ("vggsound", "VGGSound", "Acc ↑"),
        ("kinetics_sounds", "Kinetics-Sounds", "Acc ↑"), ("ucf101", "UCF101", "Acc ↑"),
        ("lrs3", "LRS3-TED", "CER ↓"), ("voxceleb2", "VoxCeleb2", "EER ↓"), ("iemocap", "IEMOCAP", "Acc ↑"),
    ]


def test_report_imports_neither_torch_nor_extract_code() -> None:
    code = (
        "import sys, avsuperb.report.leaderboard\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio', 'torchvision', 'av')"
        " or m.startswith('avsuperb.extract')]\n"
        "assert not bad, bad\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
