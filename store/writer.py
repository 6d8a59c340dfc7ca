"""Write an extraction into a store, block by block, so that an interrupted run can resume.

A block is a run of consecutive clips that owns whole chunks of every array (its frame
region starts on a chunk boundary). A block is written in one go and its clips are marked
done only after their data is stored; resuming re-extracts every clip not marked done.

Shard K of N (Zarr only) owns a contiguous run of whole blocks, so N writers can fill one store
at once without sharing a chunk. Each holds a lock file beside the store instead of the store's
writer attribute, and the store's attributes are written only by whichever shard, holding the
finish lock, finds every clip extracted: it reduces the statistics and marks the store complete.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from avsuperb import __version__, schemas as S
from avsuperb.store.backend import Backend, StoreError, backend_kind, open_backend
from avsuperb.store.locks import holder_alive, live_writers, pid_alive
from avsuperb.store.table import ClipTable

log = logging.getLogger(__name__)

BLOCK_BUDGET_BYTES = 256 << 20  # memory one block of buffered features may take
MAX_BLOCK = 256
MIN_BLOCKS = 8  # a small store is still cut into this many blocks (of MIN_BLOCK clips at least), so that
MIN_BLOCK = 16  # the last block, written after the last forward pass, is a small part of the run
FRAME_CHUNK_BYTES = 4 << 20
FRAME_SLACK = 2  # frames reserved beyond ceil(duration * frame_rate)


@dataclass(frozen=True)
class TrackSpec:
    num_layers: int
    dim: int
    frame_rate: float  # output frames per second (0 when frames_per_clip is set)
    frames_per_clip: int = 0  # fixed output length per clip (0: it follows the duration)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def frame_capacity(durations: np.ndarray, spec: TrackSpec) -> np.ndarray:
    """Frame rows reserved per clip: the fixed length, or ceil(duration * rate) + FRAME_SLACK."""
    durations = np.asarray(durations, dtype=np.float64)
    if spec.frames_per_clip:
        return np.full(len(durations), spec.frames_per_clip, dtype=np.int64)
    return np.ceil(durations * spec.frame_rate).astype(np.int64) + FRAME_SLACK


def auto_block_size(table: ClipTable, tracks: dict[str, TrackSpec], frames: bool) -> int:
    """Clips per block: as many as BLOCK_BUDGET_BYTES of buffered features hold (MAX_BLOCK at most),
    but no more than a MIN_BLOCKS-th of the store (MIN_BLOCK at least)."""
    per_clip = 0.0
    for spec in tracks.values():
        per_clip += 2 * spec.num_layers * spec.dim * 4  # pooled + sumsq
        if frames:
            per_clip += float(frame_capacity(table.durations, spec).mean()) * spec.num_layers * spec.dim * 2
    small = max(MIN_BLOCK, math.ceil(len(table) / MIN_BLOCKS))
    return int(max(1, min(MAX_BLOCK, small, BLOCK_BUDGET_BYTES // max(per_clip, 1.0))))


def frame_chunk_rows(durations: np.ndarray, spec: TrackSpec, block_size: int) -> int:
    """Rows per chunk of a frame array: FRAME_CHUNK_BYTES' worth, or the rows of the largest block where
    that is fewer. Each block's frames start on a chunk boundary, so a chunk larger than a block would
    be mostly empty, and an uncompressed (HDF5) store keeps the zeros."""
    cap = frame_capacity(durations, spec)
    largest = max((int(cap[i : i + block_size].sum()) for i in range(0, len(cap), block_size)), default=1)
    return int(max(64, min(65536, FRAME_CHUNK_BYTES // (spec.num_layers * spec.dim * 2), largest)))


def frame_offsets(durations: np.ndarray, spec: TrackSpec, block_size: int) -> np.ndarray:
    """Reserved slot starts [N + 1]; each block's slots start on a chunk boundary."""
    cap = frame_capacity(durations, spec)
    chunk = frame_chunk_rows(durations, spec, block_size)
    offsets = np.zeros(len(cap) + 1, dtype=np.int64)
    pos = 0
    for i, c in enumerate(cap):
        if i % block_size == 0:
            pos = math.ceil(pos / chunk) * chunk
        offsets[i] = pos
        pos += int(c)
    offsets[-1] = pos
    return offsets


@dataclass(frozen=True)
class _Clip:
    """What the store keeps of one clip's features [T, L, D] on one track, derived when it is handed in
    (by the caller's thread, so that a block's write is only copies and I/O)."""

    pooled: np.ndarray  # [L, D] time mean
    l2: np.ndarray  # [L] sum over frames of the frame's L2 norm
    sumsq: np.ndarray  # [L, D] sum over frames of the squares
    length: int
    frames: np.ndarray | None  # [T, L, D] float16, when the store keeps frames

    @classmethod
    def of(cls, x: np.ndarray, frames: bool) -> _Clip:
        x32 = np.asarray(x, dtype=np.float32)
        x64 = x32.astype(np.float64)
        return cls(x64.mean(axis=0), np.linalg.norm(x64, axis=2).sum(axis=0), np.square(x64).sum(axis=0), len(x32),
                   x32.astype(np.float16) if frames else None)


class StoreWriter:
    """Buffers finished clips per block and writes each block when all its pending clips are in."""

    def __init__(self, backend: Backend, path: Path, table: ClipTable, shard: tuple[int, int] = (0, 1)) -> None:
        self.backend = backend
        self.path = path
        self.table = table
        self.shard = shard
        self.attrs: dict[str, Any] = backend.get_attr(S.ROOT_ATTR)
        self.tracks = {t: TrackSpec(**v) for t, v in self.attrs["tracks"].items()}
        self.frames = bool(self.attrs["frames"])
        self.block_size = int(self.attrs["block_size"])
        self.offsets = {t: backend.read(S.offsets_path(t)) for t in self.tracks} if self.frames else {}
        self.status = backend.read(S.CLIP_STATUS).astype(np.int8)
        self._buffer: dict[int, dict[int, tuple[str, Any]]] = {}
        self._expected: dict[int, set[int]] = {}
        self.written = 0

    # -- opening ----------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        path: Path,
        *,
        upstream: dict[str, Any],
        dataset: dict[str, Any],
        tracks: dict[str, TrackSpec],
        frames: bool,
        table: ClipTable,
        block_size: int | None = None,
        shard: tuple[int, int] = (0, 1),
    ) -> StoreWriter:
        """Create the store, or reopen it to resume if it was made by the same run description.

        `shard` (K, N): this writer extracts the K-th of N disjoint runs of blocks (0-based)."""
        path = Path(path)
        kind = backend_kind(path)
        k, n = shard
        if not 0 <= k < n:
            raise StoreError(f"shard {k}/{n}: K must lie in 0..{n - 1}")
        if n > 1 and kind != "zarr":
            raise StoreError(f"{path}: an HDF5 store takes a single writer; extract shards into a .zarr store")
        wanted = {
            "upstream": upstream,
            "dataset": dataset,
            "tracks": {t: asdict(s) for t, s in tracks.items()},
            "frames": frames,
            "labels": {name: col.spec() for name, col in table.labels.items()},
            "num_clips": len(table),
        }
        try:
            if not path.exists():
                cls._create(path, kind, wanted, table, block_size or auto_block_size(table, tracks, frames))
        except OSError as err:  # disk full, permission denied
            raise write_error(path, err) from err
        backend = open_backend(path, "a")
        try:
            attrs = backend.get_attr(S.ROOT_ATTR)
            if attrs is None:
                raise StoreError(f"{path} exists but is not an avsuperb store; choose another --out")
            _check_same(path, attrs, wanted)
            if list(backend.read(S.CLIP_ID)) != list(table.ids):
                raise StoreError(f"{path} holds another clip list than dataset {dataset['name']!r} gives now")
            me = f"{os.getpid()}@{socket.gethostname()}"
            if n == 1:
                shards = [h for h in live_writers(path, None) if h != me]
                if shards:
                    raise StoreError(f"{path} is being written by shard process {', '.join(shards)}; wait for it or stop it first")
                _take_writer_lock(backend, path)
                if kind == "zarr":
                    _remove_partial_files(path)
            else:
                holder = backend.get_attr(S.WRITER_ATTR)
                if holder and holder != me and holder_alive(str(holder)):
                    raise StoreError(f"{path} is being written by process {holder}; wait for it or stop it first")
                _lock_file(_shard_lock(path, shard), path, f"shard {k}/{n}", wait=False)
        except OSError as err:
            backend.close()
            raise write_error(path, err) from err
        except BaseException:
            backend.close()
            raise
        return cls(backend, path, table, shard)

    @staticmethod
    def _create(path: Path, kind: str, wanted: dict[str, Any], table: ClipTable, block_size: int) -> None:
        """Lay out every array in a temporary sibling, then move it into place in one rename."""
        for stale in path.parent.glob(f".{path.stem}.partial-*{path.suffix}"):
            pid = stale.name[len(path.stem) + 10 : -len(path.suffix)]
            if not pid.isdigit() or int(pid) == os.getpid() or not pid_alive(int(pid)):
                shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
        tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
        n = len(table)
        b = open_backend(tmp, "w")
        try:
            b.create(S.CLIP_ID, (n,), str, block_size)
            b.write(S.CLIP_ID, 0, np.asarray(table.ids, dtype=object))
            b.create(S.CLIP_SPLIT, (n,), str, block_size)
            b.write(S.CLIP_SPLIT, 0, np.asarray(table.splits, dtype=object))
            b.create(S.CLIP_DURATION, (n,), np.float64, block_size)
            b.write(S.CLIP_DURATION, 0, np.asarray(table.durations, dtype=np.float64))
            b.create(S.CLIP_STATUS, (n,), np.int8, block_size)
            b.create(S.CLIP_REASON, (n,), str, block_size)
            b.write(S.CLIP_REASON, 0, np.asarray([""] * n, dtype=object))
            for name, col in table.labels.items():
                dtype = str if col.kind == "text" else col.values.dtype
                b.create(S.label_path(name), col.values.shape, dtype, block_size)
                b.write(S.label_path(name), 0, col.values)
            if table.trials is not None:
                b.create(S.TRIALS, table.trials.shape, np.int64, max(1, len(table.trials)))
                b.write(S.TRIALS, 0, np.asarray(table.trials, dtype=np.int64))
            for track, spec in wanted["tracks"].items():
                L, D = spec["num_layers"], spec["dim"]
                b.create(S.pooled_path(track), (n, L, D), np.float32, block_size, compress=False)
                b.create(S.clip_stat_path(track, "l2"), (n, L), np.float64, block_size, compress=False)
                b.create(S.clip_stat_path(track, "sumsq"), (n, L, D), np.float32, block_size, compress=False)
                b.create(S.lengths_path(track), (n,), np.int64, block_size)
                if wanted["frames"]:
                    ts = TrackSpec(**spec)
                    offsets = frame_offsets(table.durations, ts, block_size)
                    b.create(S.offsets_path(track), (n + 1,), np.int64, n + 1)
                    b.write(S.offsets_path(track), 0, offsets)
                    b.create(S.frames_path(track), (int(offsets[-1]), L, D), np.float16, frame_chunk_rows(table.durations, ts, block_size))
            stamp = now()
            attrs = {
                "schema_version": S.STORE_SCHEMA_VERSION,
                "software_version": __version__,
                "created": stamp,
                "updated": stamp,
                "backend": kind,
                **wanted,
                "trials": table.trials is not None,
                "block_size": block_size,
                "complete": False,
            }
            S.validate("store", attrs)
            b.set_attr(S.ROOT_ATTR, attrs)  # last: a store without it is not a store
        finally:
            b.close()
        try:
            os.replace(tmp, path)
        except OSError:
            if not path.exists():
                raise
            shutil.rmtree(tmp) if tmp.is_dir() else tmp.unlink()  # another shard created it first
            return
        log.info("created %s store %s: %d clips, block size %d", kind, path, n, block_size)

    # -- progress -----------------------------------------------------------------------------
    def rows(self) -> range:
        """The clips this writer owns: all of them, or its shard's run of whole blocks."""
        k, n = self.shard
        blocks = math.ceil(len(self.table) / self.block_size)
        lo, hi = k * blocks // n, (k + 1) * blocks // n
        return range(min(lo * self.block_size, len(self.table)), min(hi * self.block_size, len(self.table)))

    def pending(self) -> list[int]:
        """Clips still to extract among this writer's: those not marked done (failed ones are retried)."""
        mine = self.rows()
        return [int(i) + mine.start for i in np.flatnonzero(self.status[mine.start : mine.stop] != S.STATUS_DONE)]

    def plan(self, rows: list[int]) -> None:
        """Declare the clips this run will hand in, so each block is written when its last one is."""
        for row in rows:
            self._expected.setdefault(row // self.block_size, set()).add(row)

    def put(self, row: int, features: dict[str, np.ndarray]) -> None:
        """Hand in one clip's features: per track an array [T, L, D]."""
        for track, spec in self.tracks.items():
            x = features[track]
            if x.ndim != 3 or x.shape[1:] != (spec.num_layers, spec.dim):
                raise ValueError(f"track {track}: got features {x.shape}, expected [T, {spec.num_layers}, {spec.dim}]")
            if x.shape[0] == 0:
                raise ValueError(f"track {track}: no frames")
            if self.frames:
                cap = int(self.offsets[track][row + 1] - self.offsets[track][row])
                if x.shape[0] > cap:
                    raise ValueError(f"track {track}: {x.shape[0]} frames exceed the {cap} reserved for a {self.table.durations[row]:.2f} s clip")
        self._add(row, ("done", {track: _Clip.of(features[track], self.frames) for track in self.tracks}))

    def fail(self, row: int, reason: str) -> None:
        self._add(row, ("failed", reason))

    def _add(self, row: int, entry: tuple[str, Any]) -> None:
        block = row // self.block_size
        self._buffer.setdefault(block, {})[row] = entry
        expected = self._expected.get(block)
        if expected is None or expected <= self._buffer[block].keys():
            self._flush_block(block)

    def flush(self) -> None:
        """Write every buffered clip now (on interruption, so that no finished clip is lost)."""
        for block in sorted(self._buffer):
            self._flush_block(block)

    def _flush_block(self, block: int) -> None:
        entries = self._buffer.get(block)
        if not entries:
            self._buffer.pop(block, None)
            return
        b = self.backend
        lo = block * self.block_size
        hi = min(lo + self.block_size, len(self.table))
        keep = [r for r in range(lo, hi) if r not in entries and self.status[r] == S.STATUS_DONE]

        def region(name: str, start: int, stop: int, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
            # Rows already done in this block are read back so the block is written whole.
            return b.read(name, slice(start, stop)) if keep else np.zeros((stop - start, *shape), dtype)

        for track, spec in self.tracks.items():
            L, D = spec.num_layers, spec.dim
            pooled = region(S.pooled_path(track), lo, hi, (L, D), np.float32)
            l2 = region(S.clip_stat_path(track, "l2"), lo, hi, (L,), np.float64)
            sumsq = region(S.clip_stat_path(track, "sumsq"), lo, hi, (L, D), np.float32)
            lengths = region(S.lengths_path(track), lo, hi, (), np.int64)
            if self.frames:
                off = self.offsets[track]
                f0, f1 = int(off[lo]), int(off[hi])
                frames = region(S.frames_path(track), f0, f1, (L, D), np.float16)
            for row, (state, payload) in entries.items():
                i = row - lo
                if state != "done":
                    pooled[i], l2[i], sumsq[i], lengths[i] = 0, 0, 0, 0
                    continue
                c: _Clip = payload[track]
                pooled[i], l2[i], sumsq[i], lengths[i] = c.pooled, c.l2, c.sumsq, c.length
                if self.frames:
                    s = int(off[row]) - f0
                    frames[s : s + c.length] = c.frames
            b.write(S.pooled_path(track), lo, pooled)
            b.write(S.clip_stat_path(track, "l2"), lo, l2)
            b.write(S.clip_stat_path(track, "sumsq"), lo, sumsq)
            b.write(S.lengths_path(track), lo, lengths)
            if self.frames:
                b.write(S.frames_path(track), f0, frames)
        stored = [str(r) for r in b.read(S.CLIP_REASON, slice(lo, hi))]
        reasons = np.asarray(stored, dtype=object)
        status = self.status[lo:hi].copy()
        for row, (state, payload) in entries.items():
            status[row - lo] = S.STATUS_DONE if state == "done" else S.STATUS_FAILED
            reasons[row - lo] = "" if state == "done" else str(payload)
        if list(reasons) != stored:  # only when changed: each rewrite of HDF5 variable-length strings
            b.write(S.CLIP_REASON, lo, reasons)  # churns its heap, and a run killed meanwhile left the file unreadable
        b.write(S.CLIP_STATUS, lo, status)  # last: the clips count as done from here on
        b.flush()  # HDF5 keeps writes in its cache until the file is closed: a killed run would lose them
        self.status[lo:hi] = status
        self.written += len(entries)
        del self._buffer[block]  # only now: an interrupted write is redone by flush()

    # -- closing ------------------------------------------------------------------------------
    def finalize(self) -> None:
        """Flush, and once no clip is pending, reduce train-split statistics and mark complete.

        A shard first takes the finish lock and re-reads every clip's status (the other shards
        write theirs), and writes the store's attributes only when it completes the store."""
        try:
            self._finalize()
        except OSError as err:
            raise write_error(self.path, err) from err

    def _finalize(self) -> None:
        self.flush()
        if self.shard[1] > 1:
            if np.any(self.status[self.rows().start : self.rows().stop] == S.STATUS_PENDING):
                return  # this shard is unfinished: the store cannot be complete yet
            lock = _lock_file(_finish_lock(self.path), self.path, "finishing", wait=True)
            try:
                self.status = self.backend.read(S.CLIP_STATUS).astype(np.int8)
                self.attrs = self.backend.get_attr(S.ROOT_ATTR)
                if not self.attrs["complete"] and not np.any(self.status == S.STATUS_PENDING):
                    self._complete()
            finally:
                lock.unlink(missing_ok=True)
            return
        if not np.any(self.status == S.STATUS_PENDING):
            self._complete()
        else:
            self.attrs["updated"] = now()
            self.backend.set_attr(S.ROOT_ATTR, self.attrs)

    def _complete(self) -> None:
        self._write_stats()
        self.attrs["updated"] = now()
        self.attrs["complete"] = True
        self.backend.set_attr(S.ROOT_ATTR, self.attrs)

    def _write_stats(self) -> None:
        rows = np.flatnonzero((np.asarray(self.table.splits) == "train") & (self.status == S.STATUS_DONE))
        b = self.backend
        for track, spec in self.tracks.items():
            L, D = spec.num_layers, spec.dim
            count = 0
            l2 = np.zeros(L)
            total = np.zeros((L, D))
            sumsq = np.zeros((L, D))
            for start in range(0, len(rows), self.block_size):
                part = rows[start : start + self.block_size]
                n = b.read(S.lengths_path(track), part).astype(np.float64)
                count += int(n.sum())
                l2 += b.read(S.clip_stat_path(track, "l2"), part).sum(axis=0)
                total += np.einsum("n,nld->ld", n, b.read(S.pooled_path(track), part).astype(np.float64))
                sumsq += b.read(S.clip_stat_path(track, "sumsq"), part).sum(axis=0, dtype=np.float64)
            stats = {
                "count": np.array([count], dtype=np.int64),
                "l2_sum": l2,
                "l2_mean": l2 / max(count, 1),
                "sum": total,
                "sumsq": sumsq,
            }
            for name, value in stats.items():
                p = S.stats_path(track, name)
                if not b.exists(p):
                    b.create(p, value.shape, value.dtype, max(1, value.shape[0]))
                b.write(p, 0, value)

    def close(self) -> None:
        """Release the writer lock. Failing to (the disk is full) is only logged: it must not hide the
        error being raised, and the next run takes over a lock whose process is gone."""
        try:
            if self.shard[1] == 1:
                self.backend.del_attr(S.WRITER_ATTR)
            else:
                _shard_lock(self.path, self.shard).unlink(missing_ok=True)
        except OSError as err:
            log.warning("could not release the writer lock of %s (%s); the next run takes it over", self.path, err.strerror or err)
        finally:
            self.backend.close()

    def summary(self) -> dict[str, int]:
        """Clip counts over the whole store (a shard reads the others' progress from it)."""
        status = self.status if self.shard[1] == 1 else self.backend.read(S.CLIP_STATUS)
        return {
            "done": int(np.sum(status == S.STATUS_DONE)),
            "failed": int(np.sum(status == S.STATUS_FAILED)),
            "pending": int(np.sum(status == S.STATUS_PENDING)),
        }


def write_error(path: Path, err: OSError) -> StoreError:
    """A write the system refused (disk full, permission denied) as one line saying how to go on."""
    if err.errno is None and type(err) is OSError:  # not the system's error: h5py reports a damaged file so
        return StoreError(f"cannot write {path}: {err}; re-run the same command to resume, and if it fails the same way "
                          "the store is damaged: delete it and extract again")
    return StoreError(f"cannot write {path}: {err.strerror or err}; the clips written before are kept: "
                      "fix it and re-run the same command to resume")


def _check_same(path: Path, attrs: dict[str, Any], wanted: dict[str, Any]) -> None:
    version = attrs.get("schema_version")
    if version != S.STORE_SCHEMA_VERSION:
        raise StoreError(f"{path} has store schema version {version}; this avsuperb writes version {S.STORE_SCHEMA_VERSION}")
    for key, value in wanted.items():
        have = attrs.get(key)
        if key == "dataset" and isinstance(have, dict):  # the same data may have moved
            have, value = {**have, "root": None}, {**value, "root": None}
        if have != value:
            have, want = _describe(key, have), _describe(key, value)
            raise StoreError(f"{path} was made with {key} {have}, this run asks for {want}; use another --out or delete the store")


def _describe(key: str, value: Any) -> str:
    if isinstance(value, dict) and "name" in value:
        return repr(value["name"]) + ("" if key != "upstream" else f" (config {value.get('config')}, checkpoint {value.get('checkpoint_sha256')})")
    return repr(value)


def _shard_lock(path: Path, shard: tuple[int, int]) -> Path:
    return path.with_name(f".{path.name}.shard-{shard[0]}-of-{shard[1]}.lock")


def _finish_lock(path: Path) -> Path:
    return path.with_name(f".{path.name}.finish.lock")


def _lock_file(lock: Path, path: Path, what: str, wait: bool, poll: float = 0.05) -> Path:
    """Create `lock` holding pid@host, taking over one whose process is gone (same host). With
    `wait`, wait while a live process holds it; otherwise that is a StoreError."""
    me = f"{os.getpid()}@{socket.gethostname()}"
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            holder = lock.read_text().strip() if lock.exists() else ""
            pid, _, host = holder.partition("@")
            if holder and (host != socket.gethostname() or (pid.isdigit() and pid_alive(int(pid)))):
                if not wait:
                    raise StoreError(f"{path} ({what}) is being written by process {holder}; wait for it or stop it first") from None
                time.sleep(poll)
                continue
            try:
                young = time.time() - lock.stat().st_mtime < 5
            except FileNotFoundError:
                continue  # released meanwhile
            if holder or not young:  # its process is gone, or a crash left it empty
                log.info("taking over the %s lock of %s from process %s, which is gone", what, path, holder or "?")
                lock.unlink(missing_ok=True)
            else:
                time.sleep(poll)  # being created this instant
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return lock


def _remove_partial_files(path: Path) -> None:
    """zarr writes each file as NAME.<uuid>.partial and renames it: a run killed in between leaves
    that file for good. Only the store's one writer may remove them (a shard's may be in flight)."""
    stale = [Path(top) / f for top, _, files in os.walk(path) for f in files if f.endswith(".partial")]
    for f in stale:
        f.unlink(missing_ok=True)
    if stale:
        log.info("removed %d temporary files a killed run left in %s", len(stale), path)


def _take_writer_lock(backend: Backend, path: Path) -> None:
    holder = backend.get_attr(S.WRITER_ATTR)
    me = f"{os.getpid()}@{socket.gethostname()}"
    if holder and holder != me:
        if holder_alive(str(holder)):
            raise StoreError(f"{path} is being written by process {holder}; wait for it or stop it first")
        log.info("taking over %s from process %s, which is gone", path, holder)
    backend.set_attr(S.WRITER_ATTR, me)
