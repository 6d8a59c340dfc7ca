"""The upstream interface every model implements, and the registry that finds them by name."""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterable

import numpy as np
import torch


AUDIO_TRACKS = frozenset({"audio", "fusion"})  # tracks computed from the audio stream
VIDEO_TRACKS = frozenset({"video", "fusion"})  # tracks computed from the video stream


def streams_for(tracks: Iterable[str]) -> tuple[bool, bool]:
    """(uses audio, uses video) for these tracks."""
    tracks = set(tracks)
    return bool(tracks & AUDIO_TRACKS), bool(tracks & VIDEO_TRACKS)


class UpstreamError(Exception):
    """An upstream that cannot be built as asked (bad config, missing or wrong checkpoint)."""


@dataclass(frozen=True)
class TrackInfo:
    num_layers: int
    dim: int
    frame_rate: float  # output frames per second (0 when the output length is fixed per clip)
    frames_per_clip: int = 0  # a fixed number of output frames per clip, whatever its length (0: none)


class Upstream(ABC):
    """A frozen model that turns decoded media into per-layer feature sequences per track.

    Subclasses declare what to decode (`sample_rate`, `video_fps`; None = that stream is not
    used) and which tracks they offer; `forward` returns, for one track, a list with one
    [T, D] tensor per layer.
    """

    name: ClassVar[str]
    sample_rate: ClassVar[int | None] = None
    video_fps: ClassVar[float | None] = None

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu") -> None:
        self.checkpoint = checkpoint
        self.device = torch.device(device)

    @property
    @abstractmethod
    def tracks(self) -> dict[str, TrackInfo]: ...

    def config(self) -> dict[str, Any]:
        """What, besides the name and checkpoint, fixes this upstream's output (stored in the store)."""
        return {}

    def notes(self) -> list[str]:
        """What a run should be told at its end about how this upstream handled its clips."""
        return []

    def needs(self, tracks: list[str]) -> tuple[int | None, float | None]:
        """(sample_rate, fps) to decode for these tracks; None where a stream is not needed
        (by default: audio for the audio track, video for the video track, both for fusion)."""
        audio, video = streams_for(tracks)
        return (self.sample_rate if audio else None), (self.video_fps if video else None)

    @abstractmethod
    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        """audio: float32 [S] mono; video: uint8 [T, H, W, 3]. Returns one [T', D] tensor per layer."""

    @torch.inference_mode()
    def extract(self, tracks: list[str], audio: np.ndarray | None, video: np.ndarray | None) -> dict[str, np.ndarray]:
        """Features of one clip for each track, stacked to [T, L, D] float32."""
        a = torch.from_numpy(audio).to(self.device) if audio is not None else None
        v = torch.from_numpy(video).to(self.device) if video is not None else None
        out = {}
        for track in tracks:
            layers = self.forward(track, a, v)
            out[track] = torch.stack([x.float() for x in layers], dim=1).cpu().numpy()
        return out

    def extract_batch(
        self, tracks: list[str], items: list[tuple[np.ndarray | None, np.ndarray | None]]
    ) -> list[dict[str, np.ndarray]]:
        """`extract` for several clips at once, one dict per clip in order. Models that batch
        (padding plus masks, so a clip's features do not depend on its batch mates) override
        this; the default runs the clips one by one."""
        return [self.extract(tracks, audio, video) for audio, video in items]

    def checkpoint_sha256(self) -> str | None:
        if self.checkpoint is None:
            return None
        digest = hashlib.sha256()
        with open(self.checkpoint, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


class BatchedUpstream(Upstream):
    """An upstream whose batched path is the primary one: `_run` computes the requested tracks
    of several clips at once (inputs as tensors on the model's device), and `forward` /
    `extract` are batches of one clip."""

    @abstractmethod
    def _run(
        self, tracks: list[str], clips: list[tuple[torch.Tensor | None, torch.Tensor | None]]
    ) -> list[dict[str, list[torch.Tensor]]]:
        """Per clip, per track: one [T, D] tensor per layer."""

    def check_inputs(self, tracks: list[str], clips: list[tuple[Any, Any]]) -> tuple[bool, bool]:
        """(uses audio, uses video) for these tracks. UpstreamError for a track this model does
        not offer; ValueError for a clip without a stream that a requested track needs."""
        offered = list(self.tracks)
        unknown = [t for t in tracks if t not in offered]
        if unknown:
            raise UpstreamError(f"{self.name} has no {', '.join(map(repr, unknown))} track; it offers: {', '.join(offered)}")
        uses_audio, uses_video = streams_for(tracks)
        for audio, video in clips:
            for stream, x, kinds in (("audio", audio, AUDIO_TRACKS), ("video", video, VIDEO_TRACKS)):
                needing = [t for t in tracks if t in kinds]
                if needing and x is None:
                    raise ValueError(f"{self.name}'s {', '.join(needing)} track needs the {stream} stream")
        return uses_audio, uses_video

    @torch.inference_mode()
    def extract_batch(
        self, tracks: list[str], items: list[tuple[np.ndarray | None, np.ndarray | None]]
    ) -> list[dict[str, np.ndarray]]:
        clips = [
            tuple(torch.from_numpy(np.asarray(x)).to(self.device) if x is not None else None for x in item)
            for item in items
        ]
        return [
            {t: torch.stack(layers, dim=1).float().cpu().numpy() for t, layers in per_clip.items()}
            for per_clip in self._run(tracks, clips)  # type: ignore[arg-type]
        ]

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        with torch.inference_mode():
            return self._run([track], [(audio, video)])[0][track]

    @torch.inference_mode()
    def extract(self, tracks: list[str], audio: np.ndarray | None, video: np.ndarray | None) -> dict[str, np.ndarray]:
        return self.extract_batch(tracks, [(audio, video)])[0]


REGISTRY: dict[str, type[Upstream]] = {}


def register(cls: type[Upstream]) -> type[Upstream]:
    REGISTRY[cls.name] = cls
    return cls


def available() -> list[str]:
    """Built-in models in registration order, then installed plug-ins (entry points) by name."""
    from avsuperb.extract.upstreams.plugins import entry_point_names

    return list(REGISTRY) + [n for n in entry_point_names() if n not in REGISTRY]


def build(name: str, checkpoint: Path | None = None, device: str = "cpu", options: dict[str, Any] | None = None) -> Upstream:
    """The registered model `name`, or a plug-in (`module:factory`, `file.py:factory`, or an entry
    point looked up after the built-ins); `options` are extra keyword arguments of its constructor."""
    from avsuperb.extract.upstreams import plugins

    plugin = plugins.is_spec(name) or (name not in REGISTRY and name in plugins.entry_points())
    if name not in REGISTRY and not plugin:
        raise UpstreamError(f"unknown model {name!r}; choose one of: {', '.join(available())} (or a plug-in: {plugins.FORMS})")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UpstreamError(f"--device {device} asked for, but torch sees no CUDA device here; use --device cpu")
    if plugin:
        return plugins.build(name, checkpoint, device, options)
    cls = REGISTRY[name]
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "checkpoint", "device"}
    unknown = sorted(set(options or {}) - accepted)
    if unknown:
        takes = f"it takes: {', '.join(sorted(accepted))}" if accepted else "it takes none"
        raise UpstreamError(f"model {name!r} has no option {', '.join(unknown)}; {takes}")
    return cls(checkpoint=checkpoint, device=device, **(options or {}))


