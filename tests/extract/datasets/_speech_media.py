"""Tiny media files for the corpus adapter tests: 32x32 video and 16 kHz lossless audio.

Imported by the test modules next to it after they put this folder on sys.path (the tests run
with --import-mode=importlib and no __init__.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

SR = 16000
FPS = 25
SIZE = 32


def tone(seconds: float, freq: float = 440.0, sr: int = SR) -> np.ndarray:
    """A sine at `freq` Hz, amplitude 0.5, as float32."""
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(round(seconds * sr))) / sr)).astype(np.float32)


def noise(seconds: float, seed: int = 0, sr: int = SR) -> np.ndarray:
    """Seeded white noise in [-0.5, 0.5]: any misalignment of a cut shows up as a large difference."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, int(round(seconds * sr))).astype(np.float32)


def write_media(path: Path, audio: np.ndarray | None = None, seconds: float | None = None, video: bool = True,
                sr: int = SR, fps: int = FPS) -> Path:
    """An .mp4 (mpeg4 + ALAC) or .avi (mpeg4 + PCM s16le) holding `audio` and a grey ramp video.

    Give `audio` (float32 mono in [-1, 1]) or `seconds` (then a 440 Hz tone)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if audio is None:
        audio = tone(seconds if seconds is not None else 1.0, sr=sr)
    seconds = len(audio) / sr
    codec = "pcm_s16le" if path.suffix == ".avi" else "alac"
    pcm = np.clip(np.round(audio * 32767), -32768, 32767).astype(np.int16)
    with av.open(str(path), "w") as out:
        vs = None
        if video:
            vs = out.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = SIZE, SIZE, "yuv420p"
        a = out.add_stream(codec, rate=sr, layout="mono")
        if vs is not None:
            for k in range(int(round(seconds * fps))):
                frame = av.VideoFrame.from_ndarray(np.full((SIZE, SIZE, 3), (4 * k) % 256, np.uint8), format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, fps)
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        for start in range(0, len(pcm), 4096):
            frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 4096], format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = sr, start, Fraction(1, sr)
            out.mux(a.encode(frame))
        out.mux(a.encode(None))
    return path
