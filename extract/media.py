"""Decode a clip's audio and video with PyAV, resampled to what an upstream asks for."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

log = logging.getLogger(__name__)

BLANK_SIZE = (224, 224)  # H, W of the black frames that stand in for a missing video stream
TRUNCATED_S = 0.5  # a stream whose data stops this much before its declared end is truncated


class MediaError(Exception):
    """A clip that cannot be decoded; the message is recorded as the clip's failure reason."""


@dataclass
class Media:
    audio: np.ndarray | None  # float32 [S], mono, at the requested sample rate
    video: np.ndarray | None  # uint8 [T, H, W, 3] RGB, at the requested frame rate
    sample_rate: int | None
    fps: float | None


@dataclass(frozen=True)
class MediaInfo:
    duration: float  # seconds, the longer of the two streams (container duration when streams do not say)
    has_audio: bool
    has_video: bool
    sample_rate: int | None
    fps: float | None


def probe(path: Path) -> MediaInfo:
    """Streams and duration of `path` from its headers (no decoding); MediaError when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"missing file {path}")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    try:
        with av.open(str(path)) as container:
            audio = container.streams.audio[0] if container.streams.audio else None
            video = container.streams.video[0] if container.streams.video else None
            spans = [
                float(s.duration * s.time_base)
                for s in (audio, video)
                if s is not None and s.duration is not None and s.time_base is not None
            ]
            if not spans and container.duration is not None:
                spans = [container.duration / av.time_base]
            if not spans:
                raise MediaError("media has no known duration")
            return MediaInfo(
                duration=max(spans),
                has_audio=audio is not None,
                has_video=video is not None,
                sample_rate=int(audio.sample_rate) if audio is not None else None,
                fps=float(video.average_rate) if video is not None and video.average_rate else None,
            )
    except av.FFmpegError as err:
        raise MediaError(f"cannot open media: {_why(err)}") from err


def _why(err: av.FFmpegError) -> str:
    """FFmpeg's message without its errno and path; for data it cannot parse, what that usually means."""
    text = err.strerror or str(err)
    if isinstance(err, av.InvalidDataError):
        text += " (not an audio/video file, or a damaged or cut-short one)"
    return text


def decode(
    path: Path,
    *,
    sample_rate: int | None,
    fps: float | None,
    start: float = 0.0,
    end: float | None = None,
    fill_missing: bool = False,
) -> Media:
    """Decode [start, end) seconds of `path`; pass sample_rate / fps None to skip a stream.

    Audio is downmixed to mono float32; video frames are picked by timestamp (nearest earlier
    frame) on the grid start + k / fps, the way frame-rate conversion by repetition/dropping does.
    With `fill_missing` (and a known `end`), a stream the file lacks is replaced by silence or by
    black BLANK_SIZE frames over the range, as the reference does for Kinetics-Sounds.
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(f"missing file {path}")
    if path.stat().st_size == 0:
        raise MediaError("empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise MediaError(f"cannot open media: {_why(err)}") from err
    try:
        with container:
            if fill_missing and end is not None:
                if sample_rate and not container.streams.audio:
                    media = _decode(container, None, fps, start, end)
                    media.audio, media.sample_rate = np.zeros(int(round((end - start) * sample_rate)), np.float32), sample_rate
                    return media
                if fps and not container.streams.video:
                    media = _decode(container, sample_rate, None, start, end)
                    n = int(round((end - start) * fps))
                    media.video, media.fps = np.zeros((n, *BLANK_SIZE, 3), np.uint8), fps
                    return media
            return _decode(container, sample_rate, fps, start, end)
    except av.FFmpegError as err:
        raise MediaError(f"decoding failed: {_why(err)}") from err


def _decode(container: av.container.InputContainer, sample_rate: int | None, fps: float | None, start: float, end: float | None) -> Media:
    astream = container.streams.audio[0] if sample_rate and container.streams.audio else None
    vstream = container.streams.video[0] if fps and container.streams.video else None
    if sample_rate and astream is None:
        raise MediaError("no audio stream")
    if fps and vstream is None:
        raise MediaError("no video stream")
    streams = [s for s in (astream, vstream) if s is not None]
    if start > 1.0:
        container.seek(int((start - 1.0) * av.time_base), any_frame=False, backward=True)

    resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate) if astream else None
    chunks: list[np.ndarray] = []
    audio_t0: float | None = None
    n_audio = 0
    frames: list[tuple[float, av.VideoFrame]] = []
    video_past_end = False
    stops = 0.0  # end time of the latest packet of any stream (all are demuxed, to detect truncation)
    for packet in container.demux():
        if packet.pts is not None and packet.time_base is not None:
            stops = max(stops, float((packet.pts + (packet.duration or 0)) * packet.time_base))
        if packet.stream not in streams:
            continue
        for frame in packet.decode():
            if isinstance(frame, av.AudioFrame) and resampler is not None:
                for out in resampler.resample(frame):
                    if audio_t0 is None:
                        audio_t0 = float(out.time) if out.time is not None else 0.0
                    chunks.append(out.to_ndarray().reshape(-1))
                    n_audio += chunks[-1].size
            elif isinstance(frame, av.VideoFrame):
                t = float(frame.time) if frame.time is not None else len(frames) / float(vstream.average_rate or 25)
                if end is not None and t >= end:
                    video_past_end = True
                    continue
                if t < start - 0.5:  # before the range (after a seek); the grid needs none of these
                    continue
                frames.append((t, frame))
        if end is not None:
            audio_past_end = astream is None or (
                audio_t0 is not None and audio_t0 + n_audio / sample_rate >= end + 0.1
            )
            if audio_past_end and (vstream is None or video_past_end):
                break
    if resampler is not None:
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray().reshape(-1))
            n_audio += chunks[-1].size
    _check_complete(container, stops, end)

    audio = None
    if astream is not None:
        wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        first = int(round(((audio_t0 or 0.0) - start) * sample_rate))
        if first > 0:  # stream starts late: pad the gap with silence
            wave = np.concatenate([np.zeros(first, np.float32), wave])
        else:
            wave = wave[-first:]
        if end is not None:
            wave = wave[: int(round((end - start) * sample_rate))]
        if wave.size == 0:
            raise MediaError("no audio samples in the requested time range")
        audio = wave.astype(np.float32, copy=False)

    video = None
    if vstream is not None:
        video = _regrid(frames, fps, start, end)
    return Media(audio, video, sample_rate if astream else None, fps if vstream else None)


def _check_complete(container: av.container.InputContainer, stops: float, end: float | None) -> None:
    """MediaError when the file's packets (of any stream) stop well before the end its header
    declares, within the requested range: the file was cut short, e.g. by an interrupted download.
    One stream ending before another (audio shorter than video) is not truncation."""
    if container.duration is None:
        return
    declared = ((container.start_time or 0) + container.duration) / av.time_base
    if stops < min(declared, end if end is not None else declared) - TRUNCATED_S:
        raise MediaError(f"truncated file: its data stops at {stops:.2f} s, though its header declares {declared:.2f} s")


def _regrid(frames: list[tuple[float, av.VideoFrame]], fps: float, start: float, end: float | None) -> np.ndarray:
    frames.sort(key=lambda tf: tf[0])
    times = np.array([t for t, _ in frames])
    if end is None:
        end = (times[-1] + 1.0 / fps) if len(times) else start
    n = int(round((end - start) * fps))
    if n <= 0:
        raise MediaError(f"clip of {end - start:.3f} s is shorter than one video frame at {fps:g} fps")
    if len(times) == 0 or times[-1] < start:
        raise MediaError("no video frames in the requested time range")
    grid = start + np.arange(n) / fps
    # nearest earlier frame, with a little tolerance for timestamp rounding
    idx = np.clip(np.searchsorted(times, grid + 0.25 / fps, side="right") - 1, 0, len(times) - 1)
    picked: dict[int, np.ndarray] = {}
    out = []
    for i in idx:
        if i not in picked:
            picked[i] = frames[i][1].to_ndarray(format="rgb24")
        out.append(picked[i])
    return np.stack(out)
