"""Tiny media files for the dataset adapter tests: a grey ramp of 32x32 frames and a 440 Hz tone."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

_AUDIO_CODEC = {".mp4": "aac", ".avi": "pcm_s16le", ".mkv": "pcm_s16le"}


def write_media(
    path: Path,
    seconds: float = 0.5,
    *,
    audio: bool = True,
    video: bool = True,
    fps: int = 25,
    sr: int = 16000,
    size: int = 32,
) -> Path:
    """Write an mp4 / avi / mkv with the streams asked for (mpeg4 video; aac or pcm audio)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        vs = as_ = None
        if video:
            vs = out.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = size, size, "yuv420p"
        if audio:
            as_ = out.add_stream(_AUDIO_CODEC.get(path.suffix, "aac"), rate=sr, layout="mono")
        if vs is not None:
            for k in range(int(round(seconds * fps))):
                img = np.full((size, size, 3), min(8 * k, 255), np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, fps)
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        if as_ is not None:
            n = int(seconds * sr)
            wave = (0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / sr)).astype(np.float32)
            fmt = "fltp" if as_.codec_context.name == "aac" else "s16"
            for start in range(0, n, 1024):
                chunk = wave[start : start + 1024]
                if fmt == "s16":
                    frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16)[None], format="s16", layout="mono")
                else:
                    frame = av.AudioFrame.from_ndarray(chunk[None], format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
                out.mux(as_.encode(frame))
            out.mux(as_.encode(None))
    return path
