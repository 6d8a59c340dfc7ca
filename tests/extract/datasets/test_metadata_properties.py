"""Property tests of every metadata parser: arbitrary rows parse, or the index is a DatasetError.

Each example writes a tree in a dataset's official layout into a fresh temporary folder: valid
rows shuffled among malformed ones (a valid row with one field made invalid, a column dropped
or added, a name too long for the file system) and, in half of the examples, arbitrary lines
(any unicode, quotes, commas, NUL, huge or non-finite numbers, bytes that are not UTF-8), files
without a valid row, or empty files. Media files are copies of one tiny real clip, so header
probes see a real file. Indexing must return well-formed clips or raise a one-line DatasetError,
never anything else; without arbitrary lines every valid row survives. The @example cases are
crashes the search found once but rarely reaches, kept as regression checks.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import shutil
import string
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence
from unittest import mock

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).parent))
from _speech_media import write_media  # noqa: E402

from avsuperb.extract.datasets import DatasetError, DatasetIndex, build  # noqa: E402
from avsuperb.extract.datasets.kinetics_sounds import KINETICS_SOUNDS_CLASSES  # noqa: E402
from avsuperb.schemas import LABEL_KINDS, SPLITS  # noqa: E402

EXAMPLES = 100  # per format: about 1.5 s each here
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
MEDIA_SECONDS = 0.5

# field values that have broken parsers before, or could: numbers Python reads loosely or not at
# all, separators, quotes, path tricks, invisible and line-breaking characters, overlong names
LONG = "x" * 300  # longer than a file name may be
TRICKY = (
    "", " ", "\t", ",", ";", '"', "'", '"unclosed', "#", "|", "/", "\\", ".", "..", "~", "~nosuchuser/a.mp4",
    "nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-1", "-0", "0", "1", "1.5", "1_0", "0x10", "1e308", "4.9e-324",
    "0.0000001", "9" * 400, "²", "١٢", "Ⅻ", "\x00", "\ufeff", "\u2028", "\x85", "\x1c", "\r", "\n", "a\nb", "x\r\ny", LONG,
    "null", "true", "[]", "{}", "é", "日本", "🎵", "[0.0 - 1.0]", "Text:", "train", "test", "dev", "val", "/m/09x0r",
)  # fmt: skip
# whole lines: an unclosed quote before more text than a csv field may hold, a byte-order mark
# mid-file, bytes that are not UTF-8
LINES = (b'"' + b"x" * 140_000, b"\xef\xbb\xbfa,b", b"\xff\xfe\x00", b'"', b"\x00\x00", b"\r")
TOKEN = st.one_of(st.sampled_from(TRICKY), st.text(max_size=12))
SEPARATOR = st.sampled_from([",", ", ", " ", "\t", ";"])
ID = st.text(alphabet=string.ascii_letters + string.digits + "_-", min_size=6, max_size=11)


@dataclass
class Case:
    """One example: the tree's text files, where the media copies go, the clips that must survive
    (id -> allowed splits, labels) when `clean` (no arbitrary line anywhere), and anything else a
    test checks afterwards."""

    clean: bool
    files: dict[str, bytes] = field(default_factory=dict)
    media: list[str] = field(default_factory=list)
    expected: dict[str, tuple[set[str], dict[str, Any]]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def csv_line(fields: list[str]) -> str:
    buf = io.StringIO()
    csv.writer(buf).writerow(fields)
    return buf.getvalue()[: -len("\r\n")]


def space_line(fields: list[str]) -> str:
    return " ".join(fields)


@st.composite
def mutated(draw, fields: list[str], join: Callable[[list[str]], str]) -> bytes:
    """`fields` with some replaced by anything, dropped, or added; joined as the format does."""
    fields = list(fields)
    for _ in range(draw(st.integers(1, 3))):
        action = draw(st.sampled_from(("replace", "replace", "drop", "add")))
        i = draw(st.integers(0, max(len(fields) - 1, 0)))
        if action == "add" or not fields:
            fields.insert(i, draw(TOKEN))
        elif action == "drop":
            del fields[i]
        else:
            fields[i] = draw(TOKEN)
    return join(fields).encode()


def arbitrary(templates: list[list[str]], join: Callable[[list[str]], str]) -> st.SearchStrategy[bytes]:
    """Any line: unicode text, raw bytes, tricky tokens joined by a separator, or a valid row mutated."""
    joined = st.tuples(st.lists(TOKEN, max_size=6), SEPARATOR).map(lambda t: t[1].join(t[0]).encode())
    anything = st.one_of(st.text(max_size=40).map(str.encode), st.binary(max_size=40), joined, st.sampled_from(LINES))
    if not templates:
        return anything
    return st.one_of(anything, st.sampled_from(templates).flatmap(lambda t: mutated(t, join)))


@st.composite
def mixed(
    draw,
    clean: bool,
    valid: list[str],
    bad: st.SearchStrategy[str] | None,
    wild: st.SearchStrategy[bytes],
    head: Sequence[str] = (),
) -> bytes:
    """A metadata file: `head`, then the valid lines shuffled among malformed ones and (unless
    `clean`) arbitrary ones; sometimes, unless clean, an empty file, no valid line, or a header replaced."""
    if not clean and draw(st.booleans()):
        clean = True  # this file malformed rows only; another of the tree is not
    if not clean and draw(st.integers(0, 11)) == 0:
        return b""
    if not clean and draw(st.integers(0, 2)) == 0:
        valid = []  # every row malformed, or none at all
    lines = [line.encode() for line in valid]
    if bad is not None:
        lines += [line.encode() for line in draw(st.lists(bad, max_size=3))]
    if not clean:
        lines += draw(st.lists(wild, max_size=3))
    lines = draw(st.permutations(lines))
    top = [h.encode() for h in head]
    if top and not clean and draw(st.integers(0, 3)) == 0:
        top[0] = draw(wild)
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    return newline.join(top + list(lines)) + (newline if draw(st.booleans()) else b"")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """One tiny real clip per container the adapters look for (.mp4, .avi), with audio and video."""
    folder = tmp_path_factory.mktemp("media")
    return {ext: write_media(folder / f"clip{ext}", seconds=MEDIA_SECONDS) for ext in (".mp4", ".avi")}


@contextmanager
def tree(case: Case, media: dict[str, Path]) -> Iterator[Path]:
    """The case's files under a fresh root (media as copies of the tiny clip), with a private probe cache."""
    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(os.environ, {"AVSUPERB_CACHE": str(Path(tmp) / "cache")}):
        root = Path(tmp) / "root"
        for rel, data in case.files.items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        for rel in case.media:
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(media[path.suffix], path)
        yield root


def check_well_formed(index: DatasetIndex) -> None:
    ids = [c.id for c in index.clips]
    assert len(set(ids)) == len(ids), "clip ids repeat"
    for name, spec in index.labels.items():
        assert spec.kind in LABEL_KINDS and len(set(spec.classes)) == len(spec.classes), (name, spec)
    for c in index.clips:
        assert isinstance(c.id, str) and c.id.strip(), c
        assert c.split in SPLITS, c
        assert math.isfinite(c.start) and c.start >= 0, c
        assert math.isfinite(c.duration) and c.duration > 0, c
        assert set(c.labels) <= set(index.labels), c
        for name, value in c.labels.items():
            spec = index.labels[name]
            if spec.kind == "class":
                assert value is None or value in spec.classes, (c, name)
            elif spec.kind == "multi":
                assert isinstance(value, list) and len(set(value)) == len(value), (c, name)
                assert all(v in spec.classes for v in value), (c, name)
            else:
                assert value is None or isinstance(value, str), (c, name)
    if index.trials is not None:
        test = {c.id for c in index.clips if c.split == "test"}
        assert all(a in test and b in test and t in (0, 1) for a, b, t in index.trials), index.trials
    index.table()  # every label encodes against its classes


def check_case(dataset: str, case: Case, media: dict[str, Path]) -> DatasetIndex | None:
    """Index the case's tree: None for a DatasetError (one line); else the index, checked."""
    with tree(case, media) as root:
        try:
            index = build(dataset, root).index()
        except DatasetError as err:
            assert "\n" not in str(err) and "\r" not in str(err), f"a DatasetError of several lines: {err}"
            assert not (case.clean and case.expected), f"valid rows, yet: {err}"
            return None
    check_well_formed(index)
    if case.clean:
        by_id = {c.id: c for c in index.clips}
        for cid, (splits, labels) in case.expected.items():
            assert cid in by_id, f"valid row {cid!r} lost; clips: {sorted(by_id)}"
            assert by_id[cid].split in splits, by_id[cid]
            for name, value in labels.items():
                got = by_id[cid].labels[name]
                assert (sorted(got) if isinstance(value, list) else got) == value, (cid, name, got, value)
    return index


def one_of_lists(*options: list[str]) -> st.SearchStrategy[list[str]]:
    return st.sampled_from(list(options))


# --- AudioSet-20K: class_labels_indices.csv, balanced_train_segments.csv, eval_segments.csv ---

AS_CLASSES = [("/m/09x0r", "Speech"), ("/m/04rlf", "Music"), ("/m/0jbk", "Animal, wild"), ("/m/07yv9", 'Vehicle "car"')]
AS_COMMENTS = ["# Segments csv created Sun Mar  5 10:54:31 2017", "# YTID, start_seconds, end_seconds, positive_labels"]
BAD_START = ("soon", "", "nan", "-1", "inf", "-inf", "0x1", "²", "1,5")
BAD_END = ("nan", "inf", "-1", "", "abc", "1e999", "Infinity")


def audioset_bad_class(row: list[str]) -> st.SearchStrategy[list[str]]:
    i, mid, name = row
    return one_of_lists([i], [i, mid], ["x" + i, mid, name], ["", mid, name], ["1.5", mid, name], ["²", mid, name],
                        [i, "", name], [i, " ", name], [i, mid, " "])  # fmt: skip


def audioset_bad_segment(row: list[str]) -> st.SearchStrategy[list[str]]:
    ytid, start, end, labels = row
    return st.one_of(
        one_of_lists(row[:3], row + ["x"], ["", start, end, labels], [" ", start, end, labels], [ytid, end, start, labels],
                     [ytid, start, start, labels], [ytid, start, end, ""], [ytid, start, end, "/m/unknown"],
                     [ytid, start, end, labels + ",/m/unknown"], [ytid, start, end, "/m/un\nknown"]),  # fmt: skip
        st.sampled_from(BAD_START).map(lambda s: [ytid, s, end, labels]),
        st.sampled_from(BAD_END).map(lambda e: [ytid, start, e, labels]),
    )


@st.composite
def audioset_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    class_rows = [[str(i), mid, name] for i, (mid, name) in enumerate(AS_CLASSES)]
    ids = draw(st.lists(ID, min_size=2, max_size=6, unique=True))
    k = draw(st.integers(1, len(ids) - 1))
    segments = {}
    for split, file, folder, ytids in (("train", "balanced_train_segments.csv", "balanced_train", ids[:k]),
                                       ("test", "eval_segments.csv", "eval", ids[k:])):  # fmt: skip
        rows = []
        for ytid in ytids:
            s, n = draw(st.integers(0, 10**7)), draw(st.integers(1, 20000))
            mids = draw(st.lists(st.sampled_from([m for m, _ in AS_CLASSES]), min_size=1, max_size=3, unique=True))
            rows.append([ytid, f"{s / 1000:.3f}", f"{(s + n) / 1000:.3f}", ",".join(mids)])
            case.media.append(f"{folder}/{ytid}.mp4")
            names = dict(AS_CLASSES)
            case.expected[ytid] = ({split}, {"events": sorted(names[m] for m in mids)})
        segments[file] = rows
    templates = class_rows + [r for rows in segments.values() for r in rows]
    wild = arbitrary(templates, csv_line)
    bad_class = st.sampled_from(class_rows).flatmap(audioset_bad_class).map(csv_line)
    again = st.sampled_from(class_rows).map(lambda r: csv_line([str(len(class_rows)), *r[1:]]).encode())  # a class twice
    case.files["csv/class_labels_indices.csv"] = draw(
        mixed(case.clean, [csv_line(r) for r in class_rows], bad_class, st.one_of(wild, again), head=["index,mid,display_name"])
    )
    for file, rows in segments.items():
        bad = st.sampled_from(rows).flatmap(audioset_bad_segment).map(csv_line)
        case.files[file] = draw(mixed(case.clean, [csv_line(r) for r in rows], bad, wild, head=AS_COMMENTS))
    return case


@PROPERTY
@given(case=audioset_cases())
@example(  # every row malformed, the first one naming a label that holds a line break
    case=Case(
        clean=False,
        files={
            "csv/class_labels_indices.csv": b"index,mid,display_name\n0,/m/09x0r,Speech\n",
            "balanced_train_segments.csv": b'aaaaaaaaaaa, 0.0, 10.0, "/m/un\nknown"\n',
            "eval_segments.csv": b"bbbbbbbbbbb, 0.0, 10.0, /m/09x0r\n",
        },
        media=["eval/bbbbbbbbbbb.mp4"],
    )
)
@example(  # a class listed again under a new index: skipped, not a second "Speech"
    case=Case(
        clean=True,
        files={
            "class_labels_indices.csv": b"index,mid,display_name\n0,/m/09x0r,Speech\n1,/m/04rlf,Music\n2,/m/09x0r,Speech\n",
            "balanced_train_segments.csv": b"aaaaaaaaaaa, 0.0, 10.0, /m/09x0r\n",
            "eval_segments.csv": b'bbbbbbbbbbb, 0.0, 10.0, "/m/04rlf,/m/09x0r"\n',
        },
        media=["balanced_train/aaaaaaaaaaa.mp4", "eval/bbbbbbbbbbb.mp4"],
        expected={
            "aaaaaaaaaaa": ({"train"}, {"events": ["Speech"]}),
            "bbbbbbbbbbb": ({"test"}, {"events": ["Music", "Speech"]}),
        },
        extra={"classes": ("Speech", "Music")},
    )
)
def test_audioset_csvs(case, media):
    index = check_case("audioset20k", case, media)
    if index is not None and case.clean:
        assert index.labels["events"].classes == case.extra.get("classes", tuple(name for _, name in AS_CLASSES))


# --- VGGSound: vggsound.csv (ytid,start,label,train|test) ---

VGG_LABELS = ("dog barking", "playing piano", "rain, heavy", 'say "hi"', "日本語 label")


def vggsound_bad(row: list[str]) -> st.SearchStrategy[list[str]]:
    ytid, start, label, split = row
    return st.one_of(
        one_of_lists(row[:3], row + ["x"], ["", start, label, split], [ytid, start, " ", split]),
        st.sampled_from(("-1", "1.5", "nan", "inf", "soon", "", "1e999")).map(lambda s: [ytid, s, label, split]),
        st.sampled_from(("dev", "", "Train", "val", "test,train")).map(lambda s: [ytid, start, label, s]),
    )


@st.composite
def vggsound_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    rows = []
    for ytid in draw(st.lists(ID, min_size=1, max_size=5, unique=True)):
        start, label = draw(st.integers(0, 10**5)), draw(st.sampled_from(VGG_LABELS))
        split = draw(st.sampled_from(["train", "test"]))
        rows.append([ytid, str(start), label, split])
        case.media.append(f"video/{ytid}_{start:06d}.mp4")
        case.expected[f"{ytid}_{start:06d}"] = ({split}, {"events": label})
    valid = [csv_line(r) for r in rows]
    if draw(st.booleans()):  # listed at a start so large that start + 10 s is the same float; its file exists
        ytid = draw(ID.filter(lambda y: y not in {r[0] for r in rows}))
        valid.append(csv_line([ytid, str(10**18), VGG_LABELS[0], "train"]))
        case.media.append(f"video/{ytid}_{10**18:06d}.mp4")
    bad = st.sampled_from(rows).flatmap(vggsound_bad).map(csv_line)
    case.files["vggsound.csv"] = draw(mixed(case.clean, valid, bad, arbitrary(rows, csv_line)))
    return case


@PROPERTY
@given(case=vggsound_cases())
def test_vggsound_csv(case, media):
    check_case("vggsound", case, media)


# --- Kinetics-Sounds: the reference's {split}_data_path.csv, or K400's annotations/{split}.csv ---

K400_SPLITS = {"train": "train", "val": "dev", "test": "test"}


def kinetics_clips(draw) -> dict[str, list[tuple[str, int, int]]]:
    """K400 split -> 1 or 2 clips (ytid, start, end), every ytid different."""
    counts = {k400: draw(st.integers(1, 2)) for k400 in K400_SPLITS}
    ytids = iter(draw(st.lists(ID, min_size=sum(counts.values()), max_size=sum(counts.values()), unique=True)))
    out = {}
    for k400, n in counts.items():
        starts = [draw(st.integers(0, 10**5)) for _ in range(n)]
        out[k400] = [(next(ytids), t0, t0 + draw(st.integers(1, 10))) for t0 in starts]
    return out


def kinetics_bad_reference(row: list[str]) -> st.SearchStrategy[list[str]]:
    rel, index = row
    return one_of_lists([rel], [rel, index, "x"], [rel, "32"], [rel, "-1"], [rel, "1.0"], [rel, ""], [rel, "abc"],
                        ["", index], [" ", index], [rel, "²"], [rel[: -len(".mp4")] + LONG + ".mp4", index])  # fmt: skip


@st.composite
def kinetics_reference_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    files = {}
    for k400, clips in kinetics_clips(draw).items():
        rows = []
        for ytid, t0, t1 in clips:
            reversed_name = draw(st.integers(0, 4)) == 0  # a file named <ytid>_<end>_<start>: used whole
            cid = f"{ytid}_{t1:06d}_{t0:06d}" if reversed_name else f"{ytid}_{t0:06d}_{t1:06d}"
            index = draw(st.integers(0, len(KINETICS_SOUNDS_CLASSES) - 1))
            rows.append([f"{k400}/{cid}.mp4", str(index)])
            case.media.append(f"{k400}/{cid}.mp4")
            case.expected[cid] = ({K400_SPLITS[k400]}, {"action": KINETICS_SOUNDS_CLASSES[index]})
        files[k400] = rows
    templates = [r for rows in files.values() for r in rows]
    for k400, rows in files.items():
        bad = st.sampled_from(rows).flatmap(kinetics_bad_reference).map(csv_line)
        case.files[f"kinetics_sounds/{k400}_data_path.csv"] = draw(
            mixed(case.clean, [csv_line(r) for r in rows], bad, arbitrary(templates, csv_line))
        )
    return case


@PROPERTY
@given(case=kinetics_reference_cases())
def test_kinetics_reference_lists(case, media):
    index = check_case("kinetics_sounds", case, media)
    assert index is None or index.extra["metadata"] == "reference"


def kinetics_bad_annotation(row: list[str]) -> st.SearchStrategy[list[str]]:
    label, ytid, t0, t1, split = row
    return st.one_of(
        one_of_lists(row[:2], row[:3], [label, "", t0, t1, split], [label, " ", t0, t1, split], [label, ytid, t1, t0, split],
                     [label, ytid, t0, t0, split], [label, ytid + LONG, t0, t1, split]),  # fmt: skip
        st.sampled_from(("soon", "", "nan", "inf", "-inf", "1e999", "Infinity")).map(lambda t: [label, ytid, t, t1, split]),
        st.sampled_from(("nan", "inf", "-1", "")).map(lambda t: [label, ytid, t0, t, split]),
    )


@st.composite
def kinetics_annotation_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    header = "label,youtube_id,time_start,time_end,split"
    files = {}
    for k400, clips in kinetics_clips(draw).items():
        rows = []
        for ytid, t0, t1 in clips:
            cid = f"{ytid}_{t0:06d}_{t1:06d}"
            label = draw(st.sampled_from(KINETICS_SOUNDS_CLASSES))
            spelled = draw(st.sampled_from([label, label.replace(" ", "_"), label.upper(), f" {label} "]))
            rows.append([spelled, ytid, str(t0), str(t1), k400])
            case.media.append(f"{k400}/{cid}.mp4")
            case.expected[cid] = ({K400_SPLITS[k400]}, {"action": label})
        rows.append(["abseiling", draw(ID), "0", "10", k400])  # one of the other K400 classes: left out
        files[k400] = rows
    templates = [r for rows in files.values() for r in rows]
    for k400, rows in files.items():
        bad = st.sampled_from(rows[:-1]).flatmap(kinetics_bad_annotation).map(csv_line)
        case.files[f"annotations/{k400}.csv"] = draw(
            mixed(case.clean, [csv_line(r) for r in rows], bad, arbitrary(templates, csv_line), head=[header])
        )
    return case


@PROPERTY
@given(case=kinetics_annotation_cases())
def test_kinetics_annotation_csvs(case, media):
    index = check_case("kinetics_sounds", case, media)
    assert index is None or index.extra["metadata"] == "annotations"


# --- UCF101: ucfTrainTestlist/{classInd,trainlist01,testlist01}.txt ---

UCF_CLASSES = ("ApplyEyeMakeup", "Archery", "Basketball", "HandstandPushups")


@st.composite
def ucf101_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    class_rows = [[str(i), name] for i, name in enumerate(UCF_CLASSES, 1)]
    videos = draw(st.lists(st.tuples(st.sampled_from(UCF_CLASSES), st.integers(1, 25), st.integers(1, 7)),
                           min_size=2, max_size=6, unique_by=lambda v: v))  # fmt: skip
    k = draw(st.integers(1, len(videos) - 1))
    lists: dict[str, list[list[str]]] = {"trainlist01.txt": [], "testlist01.txt": []}
    for n, (cls, g, c) in enumerate(videos):
        rel = f"{cls}/v_{cls}_g{g:02d}_c{c:02d}.avi"
        train = n < k
        lists["trainlist01.txt" if train else "testlist01.txt"].append([rel, str(UCF_CLASSES.index(cls) + 1)] if train else [rel])
        case.media.append(f"UCF-101/{rel}")
        case.expected[Path(rel).stem] = ({"train" if train else "test"}, {"action": cls})
    templates = class_rows + [r for rows in lists.values() for r in rows]
    wild = arbitrary(templates, space_line)
    bad_class = st.sampled_from(class_rows).flatmap(
        lambda r: one_of_lists(["x", r[1]], [r[0]], [r[0], r[1], "extra"], ["²", r[1]], ["1.0", r[1]], ["-1", r[1]])
    ).map(space_line)
    again = st.sampled_from(UCF_CLASSES).map(lambda c: f"{len(UCF_CLASSES) + 1} {c}".encode())  # a class twice
    case.files["ucfTrainTestlist/classInd.txt"] = draw(
        mixed(case.clean, [space_line(r) for r in class_rows], bad_class, st.one_of(wild, again))
    )
    for name, rows in lists.items():
        bad = st.sampled_from(rows).flatmap(
            lambda r: one_of_lists([f"Unknown/{Path(r[0]).name}", *r[1:]], [Path(r[0]).name, "1"], [*r, "1", "extra"],
                                   [r[0], "99"], [r[0], "0"], [r[0], "²"],
                                   [str(Path(r[0]).with_name(LONG + ".avi")), *r[1:]])  # fmt: skip
        ).map(space_line)
        case.files[f"ucfTrainTestlist/{name}"] = draw(mixed(case.clean, [space_line(r) for r in rows], bad, wild))
    return case


@PROPERTY
@given(case=ucf101_cases())
@example(  # a class listed again under a new index: skipped, so the first index stays the class's
    case=Case(
        clean=True,
        files={
            "ucfTrainTestlist/classInd.txt": b"1 Archery\r\n2 Basketball\r\n3 Archery\r\n",
            "ucfTrainTestlist/trainlist01.txt": b"Archery/v_Archery_g01_c01.avi 1\r\n",
            "ucfTrainTestlist/testlist01.txt": b"Basketball/v_Basketball_g01_c01.avi\r\n",
        },
        media=["UCF-101/Archery/v_Archery_g01_c01.avi", "UCF-101/Basketball/v_Basketball_g01_c01.avi"],
        expected={
            "v_Archery_g01_c01": ({"train"}, {"action": "Archery"}),
            "v_Basketball_g01_c01": ({"test"}, {"action": "Basketball"}),
        },
        extra={"classes": ("Archery", "Basketball")},
    )
)
def test_ucf101_lists(case, media):
    index = check_case("ucf101", case, media)
    if index is not None and case.clean:
        assert index.labels["action"].classes == case.extra.get("classes", UCF_CLASSES)


# --- LRS3: {trainval,test}/{talk}/{utt}.txt transcripts, and the optional dev list ---

WORD = st.text(alphabet=string.ascii_letters + "'", min_size=1, max_size=8)
LRS3_BAD = (b"", b"\n", b"Txt:  HELLO\n", b"\nText:  HELLO\n", b"Text:\n", b"Text:  123 !! 456\n", b"Text:\xff\xfe 12\n",
            b"TEXT:  HELLO\n", "Text:  日本語\n".encode())  # fmt: skip


@st.composite
def lrs3_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    talks = draw(st.lists(ID, min_size=1, max_size=3, unique=True))
    valid_trainval = []
    utterances = draw(st.lists(st.tuples(st.sampled_from(["trainval", "test"]), st.sampled_from(talks), st.integers(1, 99)),
                               min_size=1, max_size=7, unique_by=lambda u: u))  # fmt: skip
    for folder, talk, n in utterances:
        stem = f"{folder}/{talk}/{n:05d}"
        kind = draw(st.sampled_from(["valid", "valid", "bad", "no media", "no transcript"] + ([] if case.clean else ["wild"])))
        if kind != "no transcript":
            if kind == "valid" or kind == "no media":
                words = draw(st.lists(WORD, min_size=1, max_size=5))
                text = f"Text:  {' '.join(words)}\nConf:  3\n\nWORD START END ASDSCORE\n".encode()
            else:
                text = draw(st.sampled_from(LRS3_BAD)) if kind == "bad" else draw(st.binary(max_size=60))
            case.files[f"{stem}.txt"] = text
        if kind != "no media":
            case.media.append(f"{stem}.mp4")
        if kind == "valid":
            labels = {"speaker": talk, "transcript": " ".join(w.upper() for w in words)}
            case.expected[stem] = ({"test"} if folder == "test" else {"train", "dev"}, labels)
            if folder == "trainval":
                valid_trainval.append(stem)
    for folder in ("trainval", "test"):  # both split folders exist, even when an example leaves one empty
        case.files[f"{folder}/.keep"] = b""
    dev = draw(st.sampled_from(["none", "txt", "json"] + ([] if case.clean else ["wild txt", "wild json"])))
    # entries that are no usable utterance are reported and left out, as absent ones are
    unusable = st.lists(st.sampled_from(["/", ".", " . ", "..", "~", "trainval/nosuch/00001", LONG, "a\x00b"]), max_size=2)
    if dev == "txt":
        chosen = draw(st.lists(st.sampled_from(valid_trainval), unique=True)) if valid_trainval else []
        case.files["lists/dev.txt"] = "".join(f"{s}\n" for s in draw(st.permutations(chosen + draw(unusable)))).encode()
    elif dev == "json":
        chosen = draw(st.lists(st.sampled_from(valid_trainval), unique=True)) if valid_trainval else []
        entries = [f"{s}.mp4" for s in chosen] + draw(unusable.map(lambda u: [e.strip() for e in u]))
        case.files["val_set_metadata_clean.json"] = json.dumps([{"path": s} for s in entries]).encode()
    if dev in ("txt", "json"):  # the list decides: listed utterances are dev, the other trainval ones train
        for stem in valid_trainval:
            case.expected[stem] = ({"dev"} if stem in chosen else {"train"}, case.expected[stem][1])
    elif dev == "wild txt":
        lines = draw(st.lists(st.one_of(TOKEN, st.sampled_from(valid_trainval or [""])), max_size=4))
        case.files["lists/dev.txt"] = "\n".join(lines).encode()
    elif dev == "wild json":
        value = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), TOKEN)
        keys = st.sampled_from(["path", "x"])
        doc = draw(st.recursive(value, lambda inner: st.one_of(st.lists(inner), st.dictionaries(keys, inner)), max_leaves=6))
        case.files["val_set_metadata_clean.json"] = json.dumps(doc).encode()
    return case


@PROPERTY
@given(case=lrs3_cases())
def test_lrs3_transcripts(case, media):
    check_case("lrs3", case, media)


# --- VoxCeleb2: train_5vid.lst + valid_5vid.lst, and trials.txt or test.lst ---

SPEAKERS = ("id00012", "id00015", "id00020")


@st.composite
def voxceleb2_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    dev = draw(st.lists(st.tuples(st.sampled_from(SPEAKERS), st.sampled_from(["vidA", "vid_B", "-x"]), st.integers(1, 3)),
                        min_size=2, max_size=4, unique_by=lambda u: u))  # fmt: skip
    test = draw(st.lists(st.tuples(st.sampled_from(["id09000", "id09001"]), st.sampled_from(["tA", "tB"]), st.integers(1, 2)),
                         min_size=1, max_size=4, unique_by=lambda u: u))  # fmt: skip
    k = draw(st.integers(1, len(dev) - 1))
    list_rows: dict[str, list[list[str]]] = {"train_5vid.lst": [], "valid_5vid.lst": []}
    for n, (spk, vid, utt) in enumerate(dev):
        cid = f"{spk}/{vid}/{utt:05d}"
        rel = f"dev/mp4/{cid}.mp4"
        split = "train" if n < k else "dev"
        list_rows["train_5vid.lst" if split == "train" else "valid_5vid.lst"].append(
            draw(one_of_lists([spk, str(n), rel], [rel], [spk, str(n), f"/abs/data/vox2/{rel}"]))
        )
        case.media.append(rel)
        case.expected[cid] = ({split}, {"speaker": spk})
    test_ids = []
    for spk, vid, utt in test:
        cid = f"{spk}/{vid}/{utt:05d}"
        case.media.append(f"test/mp4/{cid}.mp4")
        case.expected[cid] = ({"test"}, {"speaker": spk})
        test_ids.append(cid)
    join = lambda fields: ",".join(fields)  # noqa: E731
    templates = [r for rows in list_rows.values() for r in rows]
    for name, rows in list_rows.items():
        bad = st.sampled_from(rows).flatmap(
            lambda r: one_of_lists(["id99999", "0", r[-1]], [r[0], "0", ""], [r[0], "0", "dev/mp4"], [Path(r[-1]).name],
                                   [r[0], "0", r[-1].replace("/", "\\")],
                                   [*r[:-1], str(Path(r[-1]).with_name(LONG + ".mp4"))])  # fmt: skip
        ).map(join)
        case.files[name] = draw(mixed(case.clean, [join(r) for r in rows], bad, arbitrary(templates, join)))
    if not case.clean and draw(st.integers(0, 5)) == 0:
        del case.files[draw(st.sampled_from(sorted(list_rows)))]  # one list without the other: an error
    trials_name = draw(st.sampled_from(["trials.txt", "test.lst", None]))
    if trials_name is not None:
        sep = " " if trials_name == "trials.txt" else ","
        pairs = draw(st.lists(st.tuples(st.sampled_from(["0", "1"]), st.sampled_from(test_ids), st.sampled_from(test_ids)),
                              min_size=1, max_size=4))  # fmt: skip
        rows = [[t, f"{a}.wav", f"{b}.wav"] for t, a, b in pairs]
        bad = st.sampled_from(rows).flatmap(
            lambda r: one_of_lists(["2", *r[1:]], ["x", *r[1:]], r[:2], [*r, r[1]], [r[0], "a/b", r[2]], [r[0], r[1], ""])
        ).map(sep.join)
        case.files[trials_name] = draw(mixed(case.clean, [sep.join(r) for r in rows], bad, arbitrary(rows, sep.join)))
        case.extra["trials"] = {(a, b, int(t)) for t, a, b in pairs}
    return case


@PROPERTY
@given(case=voxceleb2_cases())
def test_voxceleb2_lists_and_trials(case, media):
    index = check_case("voxceleb2", case, media)
    if index is not None and case.clean and "trials" in case.extra:
        assert case.extra["trials"] <= set(index.trials)


# --- IEMOCAP: Session{n}/dialog/EmoEvaluation/{dialog}.txt ---

EMOTIONS = {"neu": "neu", "hap": "hap", "exc": "hap", "ang": "ang", "sad": "sad"}
TIMES = st.one_of(
    st.integers(0, 10**6).map(lambda t: f"{t / 10000:.4f}"),
    st.sampled_from(["0", "1.", "00.5", "0.0000001", "0.0000002", "9" * 400, "١٢", "-1", "1e3", "nan"]),
)


def emo_line(start: str, end: str, utt: str, label: str) -> str:
    return f"[{start} - {end}]\t{utt}\t{label}\t[2.5000, 3.0000, 2.0000]"


@st.composite
def iemocap_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()))
    sessions = draw(st.lists(st.integers(1, 5), min_size=1, max_size=3, unique=True))
    for s in sessions:
        session = f"Session{s}"
        for dialog in draw(st.lists(st.sampled_from([f"Ses0{s}F_impro01", f"Ses0{s}M_script02_1"]), min_size=1, unique=True)):
            rows, lines = [], []
            for n in draw(st.lists(st.integers(0, 30), min_size=1, max_size=4, unique=True)):
                utt = f"{dialog}_{draw(st.sampled_from('FM'))}{n:03d}"
                t0 = draw(st.integers(0, 10**6))
                start, end = f"{t0 / 10000:.4f}", f"{(t0 + draw(st.integers(1, 10**5))) / 10000:.4f}"
                raw = draw(st.sampled_from([*EMOTIONS, "fru", "xxx", "sur"]))
                lines.append(emo_line(start, end, utt, raw))
                rows.append([start, end, utt, raw])
                if raw in EMOTIONS:
                    split = "test" if session == "Session1" else "train"
                    case.expected[utt] = ({split}, {"emotion": EMOTIONS[raw], "session": session})
                    case.extra[utt] = (float(start), round(float(end) - float(start), 6))
                lines.append("C-E1:\tNeutral state;\t()\nA-E1:\tval 3; act 2; dom  2;\t()\n")
            bad = st.sampled_from(rows).flatmap(
                lambda r: one_of_lists(
                    emo_line("abc", r[1], r[2], r[3]), emo_line(r[1], r[0], r[2], r[3]), emo_line(r[0], r[0], r[2], r[3]),
                    emo_line(r[0], r[1], "Ses09X_other_F000", r[3]), f"[{r[0]} - {r[1]}]\t{r[2]}", f"[{r[0]} - {r[1]}]",
                    f"[{r[0]} {r[1]}]\t{r[2]}\t{r[3]}\t[1, 2, 3]", "[", emo_line("1e999", r[1], r[2], r[3]),
                    emo_line(r[0], "9" * 400, r[2], r[3]), emo_line("9" * 400, "9" * 401, r[2], r[3]),
                    emo_line("0.0000001", "0.0000002", r[2], r[3]),
                )  # fmt: skip
            )
            numbers = st.tuples(TIMES, TIMES, st.sampled_from([r[2] for r in rows] + [f"{dialog}_X{n}" for n in range(3)]),
                                st.sampled_from([*EMOTIONS, "fru", "", "[1]"]))  # fmt: skip
            wild = st.one_of(arbitrary([], space_line), TOKEN.map(lambda t: f"[{t}".encode()),
                             numbers.map(lambda r: emo_line(*r).encode()))  # fmt: skip
            head = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
            case.files[f"{session}/dialog/EmoEvaluation/{dialog}.txt"] = draw(mixed(case.clean, lines, bad, wild, head=head))
            case.files[f"{session}/dialog/avi/DivX/{dialog}.avi"] = b""  # never probed: an empty file stands in
    return case


@PROPERTY
@given(case=iemocap_cases())
def test_iemocap_emo_evaluation(case, media):
    index = check_case("iemocap", case, media)
    if index is not None and case.clean:
        by_id = {c.id: c for c in index.clips}
        for utt in case.expected:
            assert (by_id[utt].start, by_id[utt].duration) == pytest.approx(case.extra[utt])


# --- the generic manifest: manifest.csv or manifest.jsonl, labels.json, trials.txt ---

SPEAKER_NAMES = ("ann", "bob", "日本", "a,b", 'q"uote')
EVENT_NAMES = ("dog", "bark", "cat, big", "🎵")
MANIFEST_MEDIA = ("media/a.mp4", "media/b.mp4")
BAD_SECONDS = ("-1", "abc", "nan", "inf", "-inf", "1e999", "Infinity", "²")


@st.composite
def manifest_rows(draw) -> tuple[list[dict[str, Any]], str, list[str], dict[str, tuple[set[str], dict[str, Any]]]]:
    """Valid rows as {column: value}, the column of the range's end, the columns, and the expected clips."""
    end_column = draw(st.sampled_from(["end", "duration", None]))
    rows, expected = [], {}
    for cid in draw(st.lists(ID, min_size=1, max_size=5, unique=True)):
        start_ms = draw(st.integers(0, 400 if end_column is None else 10**6))
        row: dict[str, Any] = {"id": cid, "path": draw(st.sampled_from(MANIFEST_MEDIA)), "start": start_ms / 1000}
        if end_column is not None:
            length = draw(st.integers(1, 10**5)) / 1000
            row[end_column] = row["start"] + length if end_column == "end" else length
        split = draw(st.sampled_from(["train", "dev", "test", ""]))
        row["split"] = split
        row["speaker:class"] = draw(st.sampled_from(SPEAKER_NAMES + ("",)))
        row["events:multi"] = draw(st.lists(st.sampled_from(EVENT_NAMES), max_size=3, unique=True))
        row["transcript:text"] = draw(st.text(max_size=15))
        rows.append(row)
        labels = {"speaker": row["speaker:class"] or None, "events": sorted(row["events:multi"]),
                  "transcript": row["transcript:text"].strip() or None}  # fmt: skip
        expected[cid] = ({split or "train"}, labels)
    columns = ["id", "path", "start", *([end_column] if end_column else []), "split", "speaker:class", "events:multi",
               "transcript:text"]  # fmt: skip
    return rows, end_column or "", columns, expected


def manifest_bad(row: dict[str, Any], end_column: str, declared: bool) -> st.SearchStrategy[dict[str, Any]]:
    """`row` made malformed in one way (keeping its id: a malformed row must not shadow a good one)."""
    options = [{**row, "path": ""}, {**row, "path": " "}, {**row, "split": "val"}, {**row, "split": "TRAIN"},
               {**row, "path": "~nosuchuser/a.mp4"}, {**row, "id": row["id"] + ".long", "path": LONG + ".mp4"}]  # fmt: skip
    if end_column:
        options += [{**row, end_column: 0}, {**row, end_column: -1}, {**row, end_column: "nan"}]
    if declared:
        options += [{**row, "speaker:class": "zed"}, {**row, "events:multi": ["dog", "unheard"]}]
    seconds = st.sampled_from(BAD_SECONDS).map(lambda v: {**row, "start": v})
    return st.one_of(st.sampled_from(options), seconds)


def manifest_sidecars(draw, case: Case, expected: dict, rows: list[dict[str, Any]]) -> None:
    """labels.json and trials.txt next to the manifest, valid or (unless clean) arbitrary."""
    labels = draw(st.sampled_from(["none", "valid"] + ([] if case.clean else ["wild"])))
    if labels == "valid":
        case.files["labels.json"] = json.dumps({"speaker": list(SPEAKER_NAMES), "events": list(EVENT_NAMES)}).encode()
    elif labels == "wild":
        broken = (b"[]", b'{"speaker": ["a", "a"]}', b'{"nope": []}', b'{"speaker": [1]}', b'{"spea\\nker": []}')
        case.files["labels.json"] = draw(st.one_of(st.binary(max_size=30), st.sampled_from(broken)))
    case.extra["declared"] = labels == "valid"
    test_ids = [cid for cid, (splits, _) in expected.items() if splits == {"test"}]
    if test_ids and draw(st.booleans()):
        pairs = draw(st.lists(st.tuples(st.sampled_from("01"), st.sampled_from(test_ids), st.sampled_from(test_ids)),
                              min_size=1, max_size=3))  # fmt: skip
        trials = [list(p) for p in pairs]
        bad = st.sampled_from(trials).flatmap(
            lambda r: one_of_lists(["2", *r[1:]], r[:2], [*r, "x"], ["one", *r[1:]])
        ).map(space_line)
        head = ["# target id_a id_b"]
        valid = [space_line(t) for t in trials]
        case.files["trials.txt"] = draw(mixed(case.clean, valid, bad, arbitrary(trials, space_line), head))
        case.extra["trials"] = {(a, b, int(t)) for t, a, b in pairs}


def manifest_cell(value: Any) -> str:
    return ";".join(value) if isinstance(value, list) else str(value)


@st.composite
def manifest_csv_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()), media=list(MANIFEST_MEDIA))
    rows, end_column, columns, case.expected = draw(manifest_rows())
    manifest_sidecars(draw, case, case.expected, rows)
    as_fields = lambda row: [manifest_cell(row.get(c, "")) for c in columns]  # noqa: E731
    templates = [as_fields(r) for r in rows]
    bad = st.one_of(
        st.sampled_from(rows).flatmap(lambda r: manifest_bad(r, end_column, case.extra["declared"])).map(as_fields),
        st.sampled_from(templates).flatmap(lambda f: one_of_lists(f[:-1], f + ["x"], f[:2])),
    ).map(csv_line)
    valid = [csv_line(f) for f in templates]
    header = [csv_line(columns)]
    case.files["manifest.csv"] = draw(mixed(case.clean, valid, bad, arbitrary(templates, csv_line), head=header))
    return case


def check_manifest(case: Case, media: dict[str, Path]) -> None:
    index = check_case("manifest", case, media)
    if index is not None and case.clean and "trials" in case.extra:
        assert index.trials is not None and case.extra["trials"] <= set(index.trials)


ONE_ROW = {"manifest.csv": b"id,path,end,split,speaker:class\nx,media/a.mp4,0.3,test,ann\n"}


@PROPERTY
@given(case=manifest_csv_cases())
@example(case=Case(clean=False, files={**ONE_ROW, "trials.txt": b"1 x x\n\xff\xfe 1 x x\n"}, media=["media/a.mp4"]))
@example(case=Case(clean=False, files={**ONE_ROW, "labels.json": b'{"spea\\nker": []}'}, media=["media/a.mp4"]))
def test_manifest_csv(case, media):
    check_manifest(case, media)


JSON_VALUE = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400), st.floats(), TOKEN),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(TOKEN, inner, max_size=2)),
    max_leaves=5,
)
MANIFEST_KEYS = ("id", "path", "start", "end", "duration", "split", "speaker:class", "events:multi", "transcript:text")


@st.composite
def manifest_jsonl_cases(draw) -> Case:
    case = Case(clean=draw(st.booleans()), media=list(MANIFEST_MEDIA))
    rows, end_column, _, case.expected = draw(manifest_rows())
    manifest_sidecars(draw, case, case.expected, rows)
    for row in rows:  # JSON lines may give a multi label as a ;-separated string, numbers as strings
        if draw(st.booleans()):
            row["events:multi"] = ";".join(row["events:multi"])
        if draw(st.booleans()):
            row["start"] = str(row["start"])
    ascii_only = draw(st.booleans())
    dumps = lambda row: json.dumps(row, ensure_ascii=ascii_only)  # noqa: E731
    bad = st.one_of(
        st.sampled_from(rows).flatmap(lambda r: manifest_bad(r, end_column, case.extra["declared"])).map(dumps),
        st.sampled_from(rows).map(lambda r: {**r, "start": 10**400}).map(dumps),  # overflows a float
        st.sampled_from(rows).map(lambda r: {**r, "speaker:class": [r["speaker:class"]]}).map(dumps),
        st.sampled_from(['["a list"]', "42", '"text"', "null", "{not json", '{"id": "x", "path": '])
    )  # fmt: skip
    changed = st.tuples(st.sampled_from(rows), st.sampled_from(MANIFEST_KEYS), JSON_VALUE).map(
        lambda t: json.dumps({**t[0], t[1]: t[2]}).encode()
    )
    wild = st.one_of(arbitrary([], space_line), changed, JSON_VALUE.map(lambda v: json.dumps(v).encode()))
    case.files["manifest.jsonl"] = draw(mixed(case.clean, [dumps(r) for r in rows], bad, wild))
    return case


@PROPERTY
@given(case=manifest_jsonl_cases())
def test_manifest_jsonl(case, media):
    check_manifest(case, media)
