"""What the speech-corpus and manifest adapters share: required paths, media durations from headers (through the
probe cache), and seeded choices that do not depend on the Python or numpy version."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence, TypeVar

from avsuperb.extract.datasets._files import is_file
from avsuperb.extract.datasets._probe_cache import ProbeCache
from avsuperb.extract.datasets.base import DatasetError

log = logging.getLogger(__name__)

T = TypeVar("T")
SHOWN = 10  # problems logged one by one before only a count is given


def require(path: Path, what: str, dataset: str) -> Path:
    """`path`, or a one-line DatasetError naming it when it is not there."""
    if not path.exists():
        raise DatasetError(f"{dataset}: expected {what} {path} is missing; is --root the {dataset} folder?")
    return path


@dataclass
class Durations:
    """Durations of media files from their headers; absent and unreadable files are listed apart."""

    seconds: dict[Path, float] = field(default_factory=dict)
    missing: list[Path] = field(default_factory=list)
    unreadable: dict[Path, str] = field(default_factory=dict)


def read_durations(paths: Iterable[Path], dataset: str, root: Path) -> Durations:
    """Duration of every path from its headers (cached per dataset root), logging what cannot be used."""
    unique = list(dict.fromkeys(paths))
    out = Durations()
    present = [p for p in unique if is_file(p)]
    out.missing = [p for p in unique if not is_file(p)]
    for path, info in (ProbeCache(root).info_all(present) if present else {}).items():
        if isinstance(info, str):
            out.unreadable[path] = info
        else:
            out.seconds[path] = info.duration
    report_missing(out.missing, dataset)
    for i, (path, error) in enumerate(out.unreadable.items()):
        if i < SHOWN:
            log.warning("%s: left out unreadable media %s (%s)", dataset, path, error)
    if len(out.unreadable) > SHOWN:
        log.warning("%s: %d unreadable media files left out in all", dataset, len(out.unreadable))
    return out


def report_missing(missing: Sequence[Path], dataset: str) -> None:
    for path in missing[:SHOWN]:
        log.warning("%s: listed media %s is absent; left out", dataset, path)
    if len(missing) > SHOWN:
        log.warning("%s: %d listed media files are absent in all; left out", dataset, len(missing))


def rank(key: str, seed: int) -> int:
    """A seeded pseudo-random number for `key`: the same on every platform and Python version."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:8], "big")


def pick(items: Sequence[T], key: str, seed: int) -> T:
    """A seeded choice from `items` (pass them in a fixed order), decided by `key`."""
    return items[rank(key, seed) % len(items)]


def seeded_order(keys: Iterable[str], seed: int) -> list[str]:
    """`keys` in a seeded shuffled order; a key's place does not depend on which others exist."""
    return sorted(keys, key=lambda k: (rank(k, seed), k))
