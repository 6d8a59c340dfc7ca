"""The stages around the model in an extraction run: length-bucketed batches, decoding ahead of the
model (in a thread or in worker processes), and the store written from a background thread."""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import queue
import signal
import sys
import threading
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from avsuperb.extract.datasets import Clip
from avsuperb.extract.media import Media, MediaError, decode
from avsuperb.store.writer import StoreWriter, write_error

log = logging.getLogger(__name__)

BUCKET_BATCHES = 8  # batches per window of pending clips that is sorted by duration
WRITE_QUEUE = 16  # finished clips waiting for the writer thread at most
PR_SET_PDEATHSIG = 1  # linux/prctl.h

T = TypeVar("T")


def bucketed(rows: Sequence[int], durations: np.ndarray, batch_size: int, window: int) -> list[list[int]]:
    """Batches of `rows`: each window of `window` consecutive rows (in store order, so that blocks
    fill in turn) is sorted by duration and cut into batches, so a batch pads little."""
    out: list[list[int]] = []
    for start in range(0, len(rows), window):
        part = sorted(rows[start : start + window], key=lambda r: (durations[r], r))
        out += [part[i : i + batch_size] for i in range(0, len(part), batch_size)]
    return out


@dataclass
class Decoded:
    row: int
    clip: Clip
    media: Media | None  # None when decoding failed
    error: str = ""


class _Batches(Dataset[list[Decoded]]):
    """Item i: the clips of batch i, decoded (in a DataLoader worker when there are workers)."""

    def __init__(self, batches: list[list[int]], clips: Sequence[Clip], sample_rate: int | None, fps: float | None, fill: bool) -> None:
        self.batches, self.clips = batches, clips
        self.sample_rate, self.fps, self.fill = sample_rate, fps, fill

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> list[Decoded]:
        out = []
        for row in self.batches[i]:
            clip = self.clips[row]
            try:
                media = decode(clip.path, sample_rate=self.sample_rate, fps=self.fps, start=clip.start,
                               end=clip.start + clip.duration, fill_missing=self.fill)
                out.append(Decoded(row, clip, media))
            except MediaError as err:
                out.append(Decoded(row, clip, None, str(err)))
        return out


def _as_is(item: Any) -> Any:
    return item


def _die_with_parent(_worker_id: int) -> None:
    """On Linux, a decode worker is killed when the extraction process dies (even by SIGKILL),
    instead of lingering blocked on a full result pipe that nobody reads any more."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):  # no libc prctl: the DataLoader's own parent watchdog remains
            pass


def decoded_batches(batches: list[list[int]], clips: Sequence[Clip], sample_rate: int | None, fps: float | None,
                    fill: bool, workers: int) -> Iterator[list[Decoded]]:
    """The batches decoded in order, ahead of the model: with `workers` > 0 by that many processes
    (two batches each), with 0 by one thread of this process (AHEAD batches).

    A thread costs nothing to hand over and overlaps fully with the model on audio (PyAV and torch
    release the GIL), but decoding video holds the GIL much of the time, so processes suit video."""
    source = _Batches(batches, clips, sample_rate, fps, fill)
    if workers > 0 and multiprocessing.current_process().daemon:  # e.g. a Dask worker: no child processes allowed
        log.info("decoding in a thread: a daemonic process (%s) cannot start decode workers",
                 multiprocessing.current_process().name)
        workers = 0
    if workers <= 0:
        yield from ahead(source[i] for i in range(len(source)))
        return
    loader = DataLoader(source, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_as_is,
                        worker_init_fn=_die_with_parent, prefetch_factor=2, persistent_workers=False, multiprocessing_context="fork"
                        if "fork" in torch.multiprocessing.get_all_start_methods() else None)
    yield from loader


AHEAD = 2  # items a decode thread keeps ready


def ahead(items: Iterator[T], depth: int = AHEAD) -> Iterator[T]:
    """`items`, produced by a background thread that runs up to `depth` items ahead of the consumer.
    An exception of the producer is raised in the consumer at that item; a consumer that stops
    early (break, an error, KeyboardInterrupt) stops the producer at its next item."""
    ready: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(entry: tuple[str, Any]) -> bool:
        """Queue `entry` once there is room; False if the consumer has stopped meanwhile."""
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not offer(("item", item)):
                    return
            offer(("end", None))
        except BaseException as err:  # handed to the consumer
            offer(("error", err))

    thread = threading.Thread(target=produce, name="decode-ahead", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = ready.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()


_STOP = object()


class BackgroundWriter:
    """Hands finished clips to the StoreWriter from a thread, so block writes overlap the model.

    At most WRITE_QUEUE clips wait. An error in the thread (a failed write) is raised in the
    caller at its next call or at `close` (an OSError as a StoreError saying how to resume);
    clips handed in after it are not written."""

    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=WRITE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def put(self, row: int, clip: Clip, features: dict[str, np.ndarray]) -> None:
        self._send((row, clip, features))

    def fail(self, row: int, clip: Clip, reason: str) -> None:
        log.warning("clip %s failed: %s", clip.id, reason)
        self._send((row, clip, reason))

    def _send(self, item: Any) -> None:
        self._raise()
        self._queue.put(item)

    def _raise(self) -> None:
        err = self._error
        if isinstance(err, OSError):  # disk full, permission denied: the user's to fix, then resume
            raise write_error(self.writer.path, err) from err
        if err is not None:
            raise err

    def _run(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is not None:
                continue  # drain: nothing more is written after a failure
            row, clip, payload = item
            try:
                if isinstance(payload, str):
                    self.writer.fail(row, payload)
                    continue
                try:
                    self.writer.put(row, payload)
                except ValueError as err:  # features of the wrong shape or length: this clip fails
                    log.warning("clip %s failed: %s", clip.id, err)
                    self.writer.fail(row, str(err))
            except BaseException as err:  # a write error: stop writing, report it to the caller
                self._error = err

    def close(self) -> None:
        """Wait until every clip handed in is with the StoreWriter; raise a write error if any."""
        self.stop()
        self._raise()

    def stop(self) -> None:
        """End the thread once it has handed in what it holds (a run that fails must not leave it idle)."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
