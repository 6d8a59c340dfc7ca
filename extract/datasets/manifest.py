"""Any corpus described by a manifest: a CSV or JSON-lines file, one clip per row.

Columns (CSV header, or JSON keys):
- `path` (required): the media file, relative to the manifest's folder or absolute;
- `id`: the clip id (default: the path relative to the manifest's folder without its
  extension, plus `@START-END` when the row gives a time range);
- `start`, and `end` or `duration` (seconds): the range to decode; without them, the whole
  file from `start` (its duration read from the media header);
- `split`: train, dev or test (default train);
- labels: one column per label, named `NAME:KIND` with KIND class, multi or text, e.g.
  `speaker:class`, `events:multi`, `transcript:text`. A multi cell holds class names separated
  by `;` (in JSON lines, a list also works); an empty cell is an unlabelled clip.
Next to the manifest, optionally:
- `labels.json`: `{"NAME": ["class", ...]}` fixes a label's classes and their order (default:
  the sorted values seen); a value outside them makes its row malformed;
- `trials.txt`: verification trials, lines `TARGET ID_A ID_B` (TARGET 1 same, 0 different;
  spaces or commas), between test clips.
A malformed header is an error; a malformed row is skipped with a warning naming its line.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator

from avsuperb.extract.datasets._files import RowLog, is_file, read_text
from avsuperb.extract.datasets._scan import read_durations, report_missing
from avsuperb.extract.datasets.base import Clip, Dataset, DatasetError, DatasetIndex, LabelSpec, register
from avsuperb.schemas import LABEL_KINDS, SPLITS

log = logging.getLogger(__name__)

NAMES = ("manifest.csv", "manifest.jsonl")
KNOWN = ("id", "path", "start", "end", "duration", "split")
CLASSES_FILE = "labels.json"
TRIALS_FILE = "trials.txt"
MULTI_SEPARATOR = ";"
ERROR, EXTRA = "\0error", "\0extra"  # keys of a row that could not be read as columns


@dataclass
class Row:
    where: str
    id: str
    path: Path
    split: str
    start: float
    duration: float | None
    labels: dict[str, Any]


def label_columns(columns: list[str], where: str) -> dict[str, tuple[str, str]]:
    """{label name: (column, kind)} of a header; DatasetError for a column that is neither known nor `NAME:KIND`."""
    out: dict[str, tuple[str, str]] = {}
    for column in columns:
        if column in KNOWN:
            continue
        name, sep, kind = column.rpartition(":")
        if not sep or not name or kind not in LABEL_KINDS:
            raise DatasetError(
                f"{where}: column {column!r} is neither one of {', '.join(KNOWN)} nor a label "
                f"'NAME:KIND' with KIND {', '.join(LABEL_KINDS)}"
            )
        if name in out and out[name][1] != kind:
            raise DatasetError(f"{where}: label {name!r} is declared twice, as {out[name][1]} and {kind}")
        out[name] = (column, kind)
    if "end" in columns and "duration" in columns:
        raise DatasetError(f"{where}: give `end` or `duration`, not both")
    return out


@register
class Manifest(Dataset):
    name = "manifest"
    description = (
        "any corpus listed in a CSV or JSON-lines manifest (paths, time ranges, splits, labels of any kind, trials)"
    )
    tasks: ClassVar[tuple[str, ...]] = ("aec", "ar", "asr", "asv", "er")
    layout: ClassVar[str] = (
        "ROOT = a .csv / .jsonl file, or a folder holding manifest.csv or manifest.jsonl\n"
        "columns: path[, id, start, end | duration, split, NAME:class | NAME:multi | NAME:text ...]\n"
        "next to it (optional): labels.json ({NAME: [classes]}), trials.txt (TARGET ID_A ID_B)"
    )

    def resolve_root(self, root: Path | None) -> Path:
        if root is None:
            raise DatasetError(f"dataset {self.name!r} needs --root: a manifest file, or the folder holding {NAMES[0]}")
        root = Path(root).expanduser()
        if root.is_dir():
            found = [root / n for n in NAMES if (root / n).is_file()]
            if not found:
                raise DatasetError(f"{self.name}: expected file {root / NAMES[0]} (or {NAMES[1]}) is missing")
            if len(found) > 1:
                raise DatasetError(f"{self.name}: {root} holds both {NAMES[0]} and {NAMES[1]}; keep one")
            return found[0]
        if not root.is_file():
            raise DatasetError(f"{self.name}: manifest {root} does not exist")
        if root.suffix not in (".csv", ".jsonl"):
            raise DatasetError(f"{self.name}: manifest {root} is neither .csv nor .jsonl")
        return root

    @property
    def folder(self) -> Path:
        return self.root.parent

    def index(self) -> DatasetIndex:
        rows = RowLog(self.name)
        declared = self._declared_classes()
        records = self._records()
        labels: dict[str, tuple[str, str]] = {}
        parsed: list[Row] = []
        first_line: dict[str, str] = {}
        n_records = 0
        for where, record in records:
            n_records += 1
            for name, spec in label_columns([k for k in record if k != ERROR], where).items():
                if labels.setdefault(name, spec) != spec:
                    raise DatasetError(f"{where}: label {name!r} is declared as {spec[1]} here and {labels[name][1]} before")
            try:
                row = self._row(where, record, labels, declared)
            except (ValueError, TypeError) as err:
                rows.skip(where, str(err))
                continue
            if row.id in first_line:
                rows.skip(where, f"duplicate id {row.id!r} (first at {first_line[row.id]})")
                continue
            first_line[row.id] = where
            parsed.append(row)
        if n_records == 0:
            raise DatasetError(f"{self.name}: manifest {self.root} lists no clips")
        unknown = sorted(set(declared) - set(labels))
        if unknown:
            raise DatasetError(
                f"{self.folder / CLASSES_FILE}: labels {', '.join(map(repr, unknown))} are not columns of {self.root.name}"
            )

        durations = read_durations([r.path for r in parsed if r.duration is None], self.name, self.folder)
        absent: list[Path] = []
        clips = []
        for r in parsed:
            duration = r.duration
            if duration is None:
                if r.path not in durations.seconds:
                    continue
                duration = durations.seconds[r.path] - r.start
                if duration <= 0:
                    length = durations.seconds[r.path]
                    rows.skip(r.where, f"start {r.start:g} s is past the end of {r.path.name} ({length:g} s)")
                    continue
            elif not is_file(r.path):
                absent.append(r.path)
                continue
            clips.append(Clip(r.id, r.path, r.split, duration, r.labels, start=r.start))
        report_missing(absent, self.name)
        missing = list(dict.fromkeys(durations.missing + absent))
        rows.finish(len(clips) + len(missing) + len(durations.unreadable))

        specs = {
            name: LabelSpec(kind, () if kind == "text" else self._classes(name, kind, clips, declared))
            for name, (_, kind) in labels.items()
        }
        trials, trial_rows = self._trials(clips)
        return DatasetIndex(
            clips,
            specs,
            trials=trials,
            extra={
                "skipped_rows": rows.count + trial_rows,
                "missing": [str(p) for p in missing],
                "unreadable": {str(p): e for p, e in durations.unreadable.items()},
            },
        )

    def _records(self) -> Iterator[tuple[str, dict[str, Any]]]:
        """(where, {column: value}) per row; `where` names the line."""
        name = self.root.name
        try:
            with open(self.root, encoding="utf-8-sig", newline="") as f:
                if self.root.suffix == ".csv":
                    reader = csv.DictReader(f, restkey=EXTRA)
                    if not reader.fieldnames or "path" not in reader.fieldnames:
                        raise DatasetError(f"{self.root}: the header has no `path` column (header: {reader.fieldnames})")
                    label_columns(list(reader.fieldnames), f"{name} header")
                    width = len(reader.fieldnames)
                    for record in reader:
                        if EXTRA in record:
                            record = {ERROR: f"{width + len(record[EXTRA])} fields, more than the header's {width}"}
                        elif any(v is None for v in record.values()):
                            given = sum(v is not None for v in record.values())
                            record = {ERROR: f"{given} fields, fewer than the header's {width}"}
                        yield f"{name} line {reader.line_num}", record
                else:
                    for n, line in enumerate(f, 1):
                        if not line.strip():
                            continue
                        try:
                            record = json.loads(line)
                        except ValueError as err:
                            record = {ERROR: f"not JSON ({err})"}
                        if not isinstance(record, dict):
                            record = {ERROR: "not a JSON object"}
                        yield f"{name} line {n}", record
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise DatasetError(f"{self.root} cannot be read ({type(err).__name__}: {err})") from err

    def _row(
        self, where: str, record: dict[str, Any], labels: dict[str, tuple[str, str]], declared: dict[str, tuple[str, ...]]
    ) -> Row:
        """One manifest row as a Row; ValueError saying what is wrong with it."""
        if ERROR in record:
            raise ValueError(record[ERROR])
        raw_path = str(record.get("path") or "").strip()
        if not raw_path:
            raise ValueError("no path")
        try:
            path = Path(raw_path).expanduser()
        except RuntimeError:  # ~user of a user this machine does not know
            raise ValueError(f"path {raw_path!r} starts with ~ of an unknown user") from None
        path = path if path.is_absolute() else self.folder / path
        start = _seconds(record, "start", 0.0)
        if start < 0:
            raise ValueError(f"negative start {start:g}")
        end = _seconds(record, "end", None)
        duration = _seconds(record, "duration", None)
        if end is not None:
            duration = end - start
        if duration is not None and duration <= 0:
            raise ValueError(f"empty time range (start {start:g}, duration {duration:g})")
        split = str(record.get("split") or "").strip() or "train"
        if split not in SPLITS:
            raise ValueError(f"split {split!r} is not one of {', '.join(SPLITS)}")
        end = None if duration is None else start + duration
        clip_id = str(record.get("id") or "").strip() or self._default_id(path, start, end)
        values = {}
        for name, (column, kind) in labels.items():
            values[name] = _label(record.get(column), kind, name, declared.get(name))
        return Row(where, clip_id, path, split, start, duration, values)

    def _default_id(self, path: Path, start: float, end: float | None) -> str:
        try:
            base = path.relative_to(self.folder).with_suffix("").as_posix()
        except ValueError:
            base = path.with_suffix("").as_posix()
        if end is not None:
            return f"{base}@{start:g}-{end:g}"
        return f"{base}@{start:g}" if start > 0 else base

    def _declared_classes(self) -> dict[str, tuple[str, ...]]:
        path = self.folder / CLASSES_FILE
        if not path.is_file():
            return {}
        try:
            doc = json.loads(path.read_text())
            lists = isinstance(doc, dict) and all(isinstance(v, list) and all(isinstance(c, str) for c in v) for v in doc.values())
            if not lists:
                raise ValueError('expected {"NAME": ["class", ...], ...}')
        except (OSError, ValueError) as err:
            raise DatasetError(f"{path} is not a class list ({type(err).__name__}: {err})") from err
        for name, classes in doc.items():
            if len(set(classes)) != len(classes):
                raise DatasetError(f"{path}: label {name!r} lists a class twice")
        return {name: tuple(classes) for name, classes in doc.items()}

    def _classes(self, name: str, kind: str, clips: list[Clip], declared: dict[str, tuple[str, ...]]) -> tuple[str, ...]:
        if name in declared:
            return declared[name]
        seen: set[str] = set()
        for clip in clips:
            value = clip.labels.get(name)
            if value is not None:
                seen.update(value if kind == "multi" else [value])
        return tuple(sorted(seen))

    def _trials(self, clips: list[Clip]) -> tuple[list[tuple[str, str, int]] | None, int]:
        path = self.folder / TRIALS_FILE
        if not path.is_file():
            return None, 0
        test = {c.id for c in clips if c.split == "test"}
        rows = RowLog(self.name)
        trials, absent = [], 0
        for n, line in enumerate(read_text(path, self.name).splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.replace(",", " ").split()
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                rows.skip(f"{TRIALS_FILE} line {n}", "expected 'TARGET ID_A ID_B' with TARGET 1 (same) or 0 (different)")
                continue
            if fields[1] not in test or fields[2] not in test:
                absent += 1
                continue
            trials.append((fields[1], fields[2], int(fields[0])))
        rows.finish(len(trials) + absent)
        if absent:
            log.warning("%s: %d trials left out: a clip of theirs is not a listed test clip", self.name, absent)
        return trials, rows.count


def _seconds(record: dict[str, Any], key: str, default: float | None) -> float | None:
    value = record.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return default
    try:
        out = float(value)
    except (TypeError, ValueError, OverflowError):  # overflow: an integer too large for a float
        raise ValueError(f"{key} {value!r} is not a number of seconds") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ValueError(f"{key} {value!r} is not a finite number of seconds")
    return out


def _label(value: Any, kind: str, name: str, classes: tuple[str, ...] | None) -> Any:
    """A cell as the clip's label: a class name, a list of class names, or text; None when empty."""
    if kind == "multi":
        if value is None:
            items: list[str] = []
        elif isinstance(value, list):
            items = [str(v).strip() for v in value]
        else:
            items = [v.strip() for v in str(value).split(MULTI_SEPARATOR)]
        items = list(dict.fromkeys(v for v in items if v))
        bad = [v for v in items if classes is not None and v not in classes]
        if bad:
            raise ValueError(f"{name}: {bad[0]!r} is not one of its classes in {CLASSES_FILE}")
        return items
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, (list, dict)):
        raise ValueError(f"{name}: a {kind} label holds one value, not {type(value).__name__}")
    text = str(value).strip()
    if kind == "class" and classes is not None and text not in classes:
        raise ValueError(f"{name}: {text!r} is not one of its classes in {CLASSES_FILE}")
    return text
