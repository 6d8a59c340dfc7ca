"""One extraction run: dataset clips -> decode -> upstream -> store, resumable."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import torch
from tqdm import tqdm

from avsuperb.extract import datasets, upstreams
from avsuperb.extract.pipeline import BUCKET_BATCHES, BackgroundWriter, Decoded, bucketed, decoded_batches
from avsuperb.extract.upstreams.plugins import PluginUpstream
from avsuperb.store.backend import backend_kind
from avsuperb.store.writer import StoreWriter, TrackSpec

log = logging.getLogger(__name__)


MIN_CLIPS_FOR_FRACTION = 20  # a max_failures fraction is judged only once this many clips are processed in the run
VIDEO_DECODE_WORKERS = 2  # decode processes by default when video is decoded


def auto_decode_workers(fps: float | None) -> int:
    """Decoding ahead of the model, by default: audio alone on a thread (measured: it hides decoding
    entirely, where handing clips over from processes costs as much as decoding them), video in
    VIDEO_DECODE_WORKERS processes (decoding video holds the GIL much of the time)."""
    return VIDEO_DECODE_WORKERS if fps else 0


class ExtractError(Exception):
    """A run that cannot start as asked (e.g. a track the model does not offer)."""


@dataclass
class ExtractOptions:
    model: str
    dataset: str
    out: Path
    root: Path | None = None
    tracks: tuple[str, ...] = ()  # empty: every track the model offers
    checkpoint: Path | None = None
    device: str = "cpu"
    frames: bool | None = None  # None: on where the dataset has transcripts
    block_size: int | None = None
    progress: bool = True
    batch_size: int = 1  # clips per upstream forward (models that batch pad and mask)
    decode_workers: int | None = None  # processes decoding ahead of the model (0: one thread of this one; None: auto_decode_workers)
    precision: str = "fp32"  # fp32, or autocast to fp16 / bf16 (recorded in the store's upstream config)
    model_options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the model (e.g. video_crop)
    shard: tuple[int, int] = (0, 1)  # (K, N): extract the K-th (0-based) of N disjoint parts into the same store
    # stop once this run's failed clips exceed a count (int) or a fraction (float, 0-1) of the clips processed
    # in this run (judged from MIN_CLIPS_FOR_FRACTION on); None: no limit
    max_failures: int | float | None = None


@dataclass
class Summary:
    store: Path
    total: int
    extracted: int  # this run
    done: int
    failed: int
    pending: int
    interrupted: bool = False
    shard: tuple[int, int] = (0, 1)
    stopped: str = ""  # why the run stopped early: too many failures (max_failures); empty otherwise

    def line(self) -> str:
        state = "interrupted" if self.interrupted else ("stopped" if self.stopped and self.pending else
                                                        "complete" if self.pending == 0 else "incomplete")
        part = f" (shard {self.shard[0] + 1}/{self.shard[1]})" if self.shard[1] > 1 else ""
        return (
            f"{self.store}{part}: {state}; {self.extracted} clips processed in this run, "
            f"{self.done}/{self.total} done, {self.failed} failed, {self.pending} pending"
        )


class StopRequest:
    """SIGTERM and a first Ctrl-C only ask the loop to stop between clips, never inside a store
    write; a second Ctrl-C interrupts at once."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    def _handle(self, signum: int, frame: object) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        log.warning("%s received: stopping after the current clip (Ctrl-C again to stop at once)", self.signal)

    @contextmanager
    def installed(self) -> Iterator[StopRequest]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def _extract_batch(upstream: upstreams.Upstream, tracks: list[str], items: list[Decoded], out: BackgroundWriter,
                   precision: str) -> list[str]:
    """Run the decoded clips through the upstream together and hand each result to the writer;
    returns the reasons of the clips that failed.

    A clip that failed to decode is recorded as failed on its own; if the batched forward fails,
    the clips are retried one by one so that only the culprit is marked failed."""
    decoded = []
    failed: list[str] = []
    for d in items:
        if d.media is None:
            out.fail(d.row, d.clip, d.error)
            failed.append(d.error)
        else:
            decoded.append(d)
    if len(decoded) > 1:
        try:
            with _autocast(upstream.device, precision):
                features = upstream.extract_batch(tracks, [(d.media.audio, d.media.video) for d in decoded])  # type: ignore[union-attr]
        except (ValueError, RuntimeError) as err:
            log.debug("batch of %d failed (%s); retrying clip by clip", len(decoded), err)
        else:
            for d, feats in zip(decoded, features):
                out.put(d.row, d.clip, feats)
            return failed
    for d in decoded:
        assert d.media is not None
        try:
            with _autocast(upstream.device, precision):
                feats = upstream.extract(tracks, d.media.audio, d.media.video)
        except (ValueError, RuntimeError) as err:
            failed.append(str(err) or type(err).__name__)
            out.fail(d.row, d.clip, failed[-1])
        else:
            out.put(d.row, d.clip, feats)
    return failed


def _over_limit(limit: int | float, failed: int, processed: int) -> bool:
    """Whether this run's failures exceed max_failures: a count (int) or a fraction (float) of the processed clips."""
    if isinstance(limit, float):
        return processed >= MIN_CLIPS_FOR_FRACTION and failed > limit * processed
    return failed > limit


def _stop_message(limit: int | float, failed: int, processed: int, first: str) -> str:
    shown = f"{limit * 100:g}%" if isinstance(limit, float) else str(limit)
    first = " ".join(first.split())
    first = first if len(first) <= 160 else first[:157] + "..."
    return (f"stopping: {failed} of {processed} clips failed in this run, over --max-failures {shown} "
            f"(first reason: {first}); fix the inputs or raise --max-failures, then re-run to resume")


PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Mixed-precision autocast on the model's device, or nothing for fp32."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type=device.type, dtype=dtype)


def _config(upstream: upstreams.Upstream, precision: str) -> dict[str, Any]:
    """The upstream's config for the store; a reduced precision is part of it."""
    config = upstream.config()
    return config if precision == "fp32" else {**config, "precision": precision}


def run_extraction(opts: ExtractOptions) -> Summary:
    backend_kind(opts.out)  # a bad --out fails before anything is built or written
    if opts.precision not in PRECISIONS:
        raise ExtractError(f"unknown precision {opts.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    limit = opts.max_failures
    if limit is not None and not (isinstance(limit, int) and limit >= 0 or isinstance(limit, float) and 0.0 <= limit <= 1.0):
        raise ExtractError(f"max_failures {limit!r}: expected a count >= 0 (int) or a fraction from 0 to 1 (float)")
    upstream = upstreams.build(opts.model, opts.checkpoint, opts.device, opts.model_options)
    offered = upstream.tracks
    tracks = list(dict.fromkeys(opts.tracks)) or list(offered)
    missing = [t for t in tracks if t not in offered]
    if missing:
        raise ExtractError(f"model {opts.model!r} offers no {', '.join(missing)} track; it offers: {', '.join(offered)}")
    dataset = datasets.build(opts.dataset, opts.root)
    index = dataset.index()
    if not index.clips:
        raise ExtractError(f"dataset {opts.dataset!r} under {dataset.root} lists no clips")
    frames = dataset.has_transcripts(index) if opts.frames is None else opts.frames
    sample_rate, fps = upstream.needs(tracks)
    if isinstance(upstream, PluginUpstream):  # a plug-in's output is checked on one clip before anything is written
        upstream.check_on(tracks, index.clips, sample_rate, fps, dataset.fills_missing_streams)

    fill = dataset.fills_missing_streams
    dataset_attrs: dict[str, object] = {"name": dataset.name, "root": str(dataset.root), "manifest_sha256": index.fingerprint()}
    if fill:  # which clips get silence / black frames in place of a stream their file lacks
        dataset_attrs["filled_streams"] = {
            "audio": list(index.extra.get("no_audio", [])) if sample_rate else [],
            "video": list(index.extra.get("no_video", [])) if fps else [],
        }
    writer = StoreWriter.open(
        opts.out,
        upstream={"name": upstream.name, "config": _config(upstream, opts.precision), "checkpoint_sha256": upstream.checkpoint_sha256()},
        dataset=dataset_attrs,
        tracks={t: TrackSpec(offered[t].num_layers, offered[t].dim, offered[t].frame_rate, offered[t].frames_per_clip) for t in tracks},
        frames=frames,
        table=index.table(),
        block_size=opts.block_size,
        shard=opts.shard,
    )
    interrupted, stopped = False, ""
    out: BackgroundWriter | None = None
    try:
        todo = writer.pending()
        writer.plan(todo)
        mine = len(writer.rows())
        if len(todo) < mine:
            log.info("resuming: %d of %d clips already done", mine - len(todo), mine)
        size = max(1, opts.batch_size)
        batches = bucketed(todo, index.table().durations, size, size * BUCKET_BATCHES) if size > 1 else [[r] for r in todo]
        workers = auto_decode_workers(fps) if opts.decode_workers is None else opts.decode_workers
        out = BackgroundWriter(writer)
        n_failed, n_processed, first_reason = 0, 0, ""  # this run's, for max_failures
        with StopRequest().installed() as stop:
            try:
                with tqdm(total=len(todo), desc=f"extract {upstream.name}", unit="clip", disable=not opts.progress) as bar:
                    for items in decoded_batches(batches, index.clips, sample_rate, fps, fill, workers):
                        if stop:
                            break
                        reasons = _extract_batch(upstream, tracks, items, out, opts.precision)
                        first_reason = first_reason or next(iter(reasons), "")
                        n_failed, n_processed = n_failed + len(reasons), n_processed + len(items)
                        bar.update(len(items))
                        if limit is not None and _over_limit(limit, n_failed, n_processed):
                            stopped = _stop_message(limit, n_failed, n_processed, first_reason)
                            break
            except KeyboardInterrupt:
                stop.signal = stop.signal or "SIGINT"
            interrupted = bool(stop)
            if interrupted:
                log.warning("interrupted (%s): writing the clips that are finished", stop.signal)
            elif stopped:
                log.warning("too many failed clips: writing the clips that are finished")
            out.close()
            for note in upstream.notes():
                log.warning("%s", note)
            writer.finalize()  # with the handlers still installed: a signal must not cut a store write short
            s = writer.summary()
    finally:
        if out is not None:
            out.stop()  # a run that failed must not leave its writer thread idle
        writer.close()
    return Summary(Path(opts.out), len(index.clips), writer.written, s["done"], s["failed"], s["pending"], interrupted, opts.shard, stopped)
