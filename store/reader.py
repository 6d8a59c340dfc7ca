"""Read a store for probing: validated attributes, the clip table, pooled and frame arrays."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from avsuperb import schemas as S
from avsuperb.store.backend import StoreError, open_backend
from avsuperb.store.locks import live_writers
from avsuperb.store.table import ClipTable, LabelColumn


class StoreReader:
    """A read-only view of one store; refuses stores it cannot trust."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.backend = open_backend(self.path, "r")
        attrs = self.backend.get_attr(S.ROOT_ATTR)
        if attrs is None:
            self.close()
            raise StoreError(f"{self.path} is not an avsuperb store (no '{S.ROOT_ATTR}' attributes)")
        version = attrs.get("schema_version") if isinstance(attrs, dict) else None
        if isinstance(version, int) and version > S.STORE_SCHEMA_VERSION:
            self.close()
            raise StoreError(f"{self.path} has store schema version {version}, newer than this avsuperb reads ({S.STORE_SCHEMA_VERSION}); upgrade avsuperb")
        problem = S.validation_error("store", attrs)
        if problem:
            self.close()
            raise StoreError(f"{self.path} has invalid store attributes: {problem}")
        self.attrs: dict[str, Any] = attrs
        for name in self._required():
            if not self.backend.exists(name):
                self.close()
                raise StoreError(f"{self.path} is missing array {name!r}; the store is damaged, extract again")

    def _required(self) -> list[str]:
        names = [S.CLIP_ID, S.CLIP_SPLIT, S.CLIP_STATUS]
        names += [S.label_path(n) for n in self.attrs["labels"]]
        for t in self.attrs["tracks"]:
            names += [S.pooled_path(t), S.lengths_path(t)]
            if self.attrs["frames"]:
                names += [S.frames_path(t), S.offsets_path(t)]
        return names

    # -- description ----------------------------------------------------------------------------
    @property
    def upstream(self) -> dict[str, Any]:
        return self.attrs["upstream"]

    @property
    def dataset(self) -> str:
        return self.attrs["dataset"]["name"]

    @property
    def tracks(self) -> list[str]:
        return list(self.attrs["tracks"])

    @property
    def label_names(self) -> list[str]:
        return list(self.attrs["labels"])

    def status(self) -> np.ndarray:
        return self.backend.read(S.CLIP_STATUS)

    def table(self, labels: list[str] | None = None) -> ClipTable:
        names = self.label_names if labels is None else labels
        cols = {}
        for name in names:
            spec = self.attrs["labels"][name]
            cols[name] = LabelColumn(spec["kind"], self.backend.read(S.label_path(name)), tuple(spec.get("classes", ())), spec.get("carried_by"))
        trials = self.backend.read(S.TRIALS) if self.attrs.get("trials") else None
        return ClipTable(
            ids=[str(x) for x in self.backend.read(S.CLIP_ID)],
            splits=[str(x) for x in self.backend.read(S.CLIP_SPLIT)],
            durations=self.backend.read(S.CLIP_DURATION),
            labels=cols,
            trials=trials,
        )

    # -- features -------------------------------------------------------------------------------
    def _track(self, track: str) -> None:
        if track not in self.attrs["tracks"]:
            raise StoreError(f"{self.path} has no {track!r} track; it has: {', '.join(self.tracks)}")

    def pooled(self, track: str, rows: np.ndarray | None = None) -> np.ndarray:
        """[n, L, D] float32 per-layer time means."""
        self._track(track)
        return self.backend.read(S.pooled_path(track), rows)

    def frames(self, track: str, row: int) -> np.ndarray:
        """[T, L, D] float16 frame-level features of one clip."""
        self._track(track)
        if not self.attrs["frames"]:
            raise StoreError(f"{self.path} holds no frame-level features; extract with --frames")
        start = int(self.backend.read(S.offsets_path(track), slice(row, row + 1))[0])
        length = int(self.backend.read(S.lengths_path(track), slice(row, row + 1))[0])
        return self.backend.read(S.frames_path(track), slice(start, start + length))

    def stats(self, track: str) -> dict[str, np.ndarray]:
        """Train-split statistics (count, l2_sum, l2_mean, sum, sumsq); empty until extraction completes."""
        self._track(track)
        out = {}
        for name in ("count", "l2_sum", "l2_mean", "sum", "sumsq"):
            p = S.stats_path(track, name)
            if self.backend.exists(p):
                out[name] = self.backend.read(p)
        return out

    def writers(self) -> list[str]:
        """`pid@host` of the live processes writing this store now (none once extraction has ended)."""
        return live_writers(self.path, self.backend.get_attr(S.WRITER_ATTR))

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> StoreReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
