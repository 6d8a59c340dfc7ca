"""One extraction run: dataset clips -> decode -> upstream -> store, resumable."""

from __future__ import annotations

import logging
import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

from avsuperb.extract import datasets, upstreams
from avsuperb.extract.media import MediaError, decode
from avsuperb.store.backend import backend_kind
from avsuperb.store.writer import StoreWriter, TrackSpec

log = logging.getLogger(__name__)


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


@dataclass
class Summary:
    store: Path
    total: int
    extracted: int  # this run
    done: int
    failed: int
    pending: int
    interrupted: bool = False

    def line(self) -> str:
        state = "interrupted" if self.interrupted else ("complete" if self.pending == 0 else "incomplete")
        return (
            f"{self.store}: {state}; {self.extracted} clips processed in this run, "
            f"{self.done}/{self.total} done, {self.failed} failed, {self.pending} pending"
        )


class Interrupted(Exception):
    pass


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_extraction(opts: ExtractOptions) -> Summary:
    backend_kind(opts.out)  # a bad --out fails before anything is built or written
    upstream = upstreams.build(opts.model, opts.checkpoint, opts.device)
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

    writer = StoreWriter.open(
        opts.out,
        upstream={"name": upstream.name, "config": upstream.config(), "checkpoint_sha256": upstream.checkpoint_sha256()},
        dataset={"name": dataset.name, "root": str(dataset.root), "manifest_sha256": index.fingerprint()},
        tracks={t: TrackSpec(offered[t].num_layers, offered[t].dim, offered[t].frame_rate) for t in tracks},
        frames=frames,
        table=index.table(),
        block_size=opts.block_size,
    )
    interrupted = False
    try:
        todo = writer.pending()
        writer.plan(todo)
        if len(todo) < len(index.clips):
            log.info("resuming: %d of %d clips already done", len(index.clips) - len(todo), len(index.clips))
        with _sigterm_as_interrupt():
            try:
                for row in tqdm(todo, desc=f"extract {upstream.name}", unit="clip", disable=not opts.progress):
                    clip = index.clips[row]
                    try:
                        media = decode(clip.path, sample_rate=sample_rate, fps=fps, start=clip.start, end=clip.start + clip.duration)
                        features = upstream.extract(tracks, media.audio, media.video)
                        writer.put(row, features)
                    except (MediaError, ValueError, RuntimeError) as err:
                        log.warning("clip %s failed: %s", clip.id, err)
                        writer.fail(row, str(err) or type(err).__name__)
            except (KeyboardInterrupt, Interrupted) as err:
                interrupted = True
                log.warning("interrupted (%s): writing what is finished", type(err).__name__ if isinstance(err, KeyboardInterrupt) else err)
        writer.finalize()
    finally:
        writer.close()
    s = writer.summary()
    return Summary(Path(opts.out), len(index.clips), writer.written, s["done"], s["failed"], s["pending"], interrupted)
