"""Header probes of a dataset's media files, cached outside the dataset root.

Adapters need each file's duration and streams (UCF101 keeps only videos with audio; the
others need the clip's true length). Probing reads headers only, but a large corpus still
takes a while, so results are kept in `$AVSUPERB_CACHE/probe/` (else `~/.cache/avsuperb/probe/`),
one JSON file per dataset root, each entry keyed by the file's path relative to the root and
valid while the file's size and mtime are unchanged. The root itself may be read-only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Iterable

from avsuperb.extract.media import MediaError, MediaInfo, probe

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def cache_dir() -> Path:
    base = os.environ.get("AVSUPERB_CACHE")
    return (Path(base) if base else Path.home() / ".cache" / "avsuperb") / "probe"


class ProbeCache:
    """`info(path)` -> MediaInfo, or the reason (str) the file could not be probed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        key = hashlib.sha256(str(self.root).encode()).hexdigest()[:16]
        self.path = cache_dir() / f"{key}.json"
        self.entries: dict[str, dict] = {}
        self.changed = False
        self._load()

    def _load(self) -> None:
        try:
            doc = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable probe cache %s (%s)", self.path, err)
            return
        if isinstance(doc, dict) and doc.get("version") == CACHE_VERSION and doc.get("root") == str(self.root):
            self.entries = dict(doc.get("files", {}))

    def info(self, path: Path) -> MediaInfo | str:
        path = Path(path)
        try:
            st = path.stat()
        except OSError:
            return f"missing file {path}"
        resolved = path.resolve()
        # relative keys inside the root (the cache survives moving it); absolute ones elsewhere
        key = str(resolved.relative_to(self.root)) if resolved.is_relative_to(self.root) else str(resolved)
        entry = self.entries.get(key)
        if entry is not None and entry.get("size") == st.st_size and entry.get("mtime_ns") == st.st_mtime_ns:
            return MediaInfo(**entry["info"]) if "info" in entry else str(entry.get("error", "unreadable"))
        try:
            result: MediaInfo | str = probe(path)
            if result.duration <= 0:
                result = "media has no duration"
        except MediaError as err:
            result = str(err)
        record: dict = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        if isinstance(result, MediaInfo):
            record["info"] = asdict(result)
        else:
            record["error"] = result
        self.entries[key] = record
        self.changed = True
        return result

    def info_all(self, paths: Iterable[Path]) -> dict[Path, MediaInfo | str]:
        """Probe every path (cached ones for free), then write the cache back."""
        paths = list(paths)
        before = len(self.entries)
        out = {p: self.info(p) for p in paths}
        if len(self.entries) - before > 100:
            log.info("probed %d new media files (cached in %s)", len(self.entries) - before, self.path)
        self.save()
        return out

    def save(self) -> None:
        if not self.changed:
            return
        doc = {"version": CACHE_VERSION, "root": str(self.root), "files": self.entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump(doc, f)
                os.replace(tmp, self.path)  # atomic: concurrent shard runs never see half a file
            finally:
                Path(tmp).unlink(missing_ok=True)
            self.changed = False
        except OSError as err:
            log.warning("could not write the probe cache %s (%s); probing again next time", self.path, err)
