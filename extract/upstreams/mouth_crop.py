"""Mouth-centred crops for AV-HuBERT's video input (`--video-crop mouth`), from the five face
landmarks of facenet-pytorch's MTCNN, whose weights ship inside its wheel. Optional: only this
crop needs the package (`pip install --no-deps facenet-pytorch==2.6.0`).

What the authors do (facebookresearch/av_hubert, avhubert/preparation/align_mouth.py): 68 dlib
landmarks per frame, missing frames linearly interpolated (the ends repeat the nearest detection);
each frame warped by a similarity transform that maps the nose tip and eye corners, averaged over a
12-frame window, onto a mean face in a 256 × 256 frame; a 96 × 96 patch cut around the mean of the
mouth landmarks there; the model then takes its centre 88 × 88.

What this does, per clip:
- detection: MTCNN on a copy downscaled to at most `detect_side` pixels on the longer side, on
  every `detect_every`-th frame (and the last), in batches; the largest face with probability
  ≥ `min_prob` counts. Per detected frame: the mouth centre (midpoint of the two mouth corners),
  the eye–mouth distance (eye midpoint to mouth centre, a size that does not depend on the
  roll angle and little on yaw) and the roll angle of the eye line.
- frames not searched or without a face: linear interpolation between the neighbouring detections,
  the nearest one held before the first and after the last (as the authors' interpolation).
- smoothing: a centred moving average over `smooth_frames` frames (the authors' 12-frame window,
  centred so the crop does not lag) of the centre, the size and the angle.
- the crop: a square of side `roi_per_eye_mouth` × eye–mouth distance around the mouth centre,
  rotated by the roll angle (upright lips, as the similarity alignment gives), resampled to 96 × 96
  (bilinear; the frames are first downscaled with antialiasing when the ROI is larger than 96, so
  high-resolution faces do not alias; outside the frame is 0). AV-HuBERT then takes its centre
  88 × 88 exactly as it does on the authors' ROIs.
- the ROI size: in the authors' 256-pixel mean-face frame the 96-pixel patch is about 1.5 times
  the eye–mouth distance (an estimate: the mean-face file, 20words_mean_face.npy, is not
  reproduced here), so the lips take about half the patch's width with the nostrils near the top
  and the chin near the bottom.
- no face in any frame of a clip: `track` returns None and the caller uses the centre crop; such
  clips are counted in `fallbacks` and logged at debug level.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import logging
import sys
import types
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avsuperb.extract.upstreams.base import UpstreamError

log = logging.getLogger(__name__)

PACKAGE = "facenet_pytorch"
DISTRIBUTION = "facenet-pytorch"
LANDMARK_MODEL = "facenet-pytorch MTCNN (5 landmarks)"
INSTALL = "pip install --no-deps facenet-pytorch==2.6.0"
MISSING = (
    f"--video-crop mouth needs the optional face-landmark model facenet-pytorch: {INSTALL} "
    "(its weights ship in the wheel; --video-crop center needs nothing)"
)
ROI = 96  # the authors' mouth ROI side in pixels; AV-HuBERT takes its centre 88 × 88


@dataclass(frozen=True)
class MouthCropConfig:
    """What fixes the crop (recorded in the store's config)."""

    roi: int = ROI
    roi_per_eye_mouth: float = 1.5  # ROI side in units of the eye–mouth distance
    detect_side: int = 256  # longer side of the copy MTCNN searches (pixels; smaller frames are not upscaled)
    detect_every: int = 2  # run MTCNN on every k-th frame and the last; the others are interpolated
    smooth_frames: int = 12  # centred moving-average window over frames
    min_face_size: int = 20  # MTCNN's smallest face, in pixels of the downscaled copy
    min_prob: float = 0.9  # a detection below this probability counts as no face
    batch_frames: int = 32  # frames per MTCNN call

    def __post_init__(self) -> None:
        for name in ("roi", "detect_side", "detect_every", "smooth_frames", "min_face_size", "batch_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"mouth crop: {name} must be at least 1, got {getattr(self, name)}")
        if self.roi_per_eye_mouth <= 0 or not 0 <= self.min_prob <= 1:
            raise ValueError("mouth crop: roi_per_eye_mouth must be positive and min_prob within [0, 1]")


@dataclass(frozen=True)
class MouthTrack:
    """Per frame of a clip, in pixels of the frames as given: the ROI's centre, side and roll."""

    center: np.ndarray  # float64 [T, 2]: x, y
    side: np.ndarray  # float64 [T]: side of the square ROI
    angle: np.ndarray  # float64 [T]: roll of the eye line in radians (positive: clockwise on screen)
    detected: int  # frames searched where a face was found
    searched: int  # frames searched


def package_version() -> str | None:
    """The installed facenet-pytorch version, None when it is absent."""
    if importlib.util.find_spec(PACKAGE) is None:
        return None
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@lru_cache(maxsize=1)
def _mtcnn_module() -> types.ModuleType:
    """facenet_pytorch.models.mtcnn. The package's __init__ also imports its face-recognition
    model, which needs `requests` (absent with --no-deps) only to download recognition weights the
    detector does not use; without `requests` the detector module is imported on its own."""
    name = f"{PACKAGE}.models.mtcnn"
    if name in sys.modules or importlib.util.find_spec("requests") is not None:
        return importlib.import_module(name)
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None and spec.submodule_search_locations is not None
    shell = types.ModuleType(PACKAGE)
    shell.__path__ = list(spec.submodule_search_locations)
    shell.__spec__ = spec
    sys.modules[PACKAGE] = shell
    try:
        return importlib.import_module(name)
    finally:
        if sys.modules.get(PACKAGE) is shell:
            del sys.modules[PACKAGE]


@lru_cache(maxsize=4)
def _detector(device: str, min_face_size: int) -> Any:
    """One MTCNN per device and face size (its weights load from the wheel)."""
    mtcnn = _mtcnn_module().MTCNN(min_face_size=min_face_size, select_largest=True, device=torch.device(device))
    return mtcnn.eval()


def _downscale(frames: torch.Tensor, factor: float) -> torch.Tensor:
    """float [T, C, H, W] resized by `factor` with antialiasing (unchanged when factor ≥ 1)."""
    if factor >= 1:
        return frames
    h, w = frames.shape[-2:]
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    return F.interpolate(frames, size=size, mode="bilinear", align_corners=False, antialias=True)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average along axis 0 over `window` frames, the window cut at the ends."""
    if window <= 1 or len(x) <= 1:
        return x
    before, after = window // 2, (window - 1) // 2
    t = len(x)
    cum = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
    lo = np.clip(np.arange(t) - before, 0, t)
    hi = np.clip(np.arange(t) + after + 1, 0, t)
    count = (hi - lo).reshape((-1,) + (1,) * (x.ndim - 1))
    return (cum[hi] - cum[lo]) / count


class MouthCropper:
    """Finds the mouth in each frame of a clip and cuts the 96 × 96 ROI around it."""

    def __init__(self, device: str | torch.device = "cpu", config: MouthCropConfig | None = None) -> None:
        version = package_version()
        if version is None:
            raise UpstreamError(MISSING)
        self.config = config or MouthCropConfig()
        self.version = version
        self.device = torch.device(device)
        try:
            self.detector = _detector(str(self.device), self.config.min_face_size)
        except (ImportError, OSError, RuntimeError) as err:
            raise UpstreamError(f"facenet-pytorch {version} is installed but its MTCNN does not load ({err}); {INSTALL}") from err
        self.clips = 0  # clips tracked
        self.fallbacks = 0  # of those, clips without a face in any frame (centre crop used)

    def describe(self) -> dict[str, Any]:
        return {"landmark_model": LANDMARK_MODEL, "landmark_model_version": self.version, **asdict(self.config)}

    def _landmarks(self, video: torch.Tensor, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """MTCNN's landmarks [N, 5, 2] (pixels of the full frame) of the largest face in the frames
        `index` of uint8 [T, H, W, 3] `video`, and which of them have a face [N]."""
        cfg = self.config
        h, w = video.shape[1:3]
        factor = min(1.0, cfg.detect_side / max(h, w))
        points = np.zeros((len(index), 5, 2))
        found = np.zeros(len(index), bool)
        for start in range(0, len(index), cfg.batch_frames):
            chunk = torch.as_tensor(index[start : start + cfg.batch_frames], device=video.device)
            frames = video.index_select(0, chunk).permute(0, 3, 1, 2).float()
            small = _downscale(frames, factor)
            sy, sx = small.shape[-2] / h, small.shape[-1] / w
            images = small.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
            _, probs, marks = self.detector.detect(images, landmarks=True)
            for j in range(len(images)):
                if marks[j] is None or probs[j][0] is None or float(probs[j][0]) < cfg.min_prob:
                    continue
                p = np.asarray(marks[j][0], dtype=np.float64)  # the largest face comes first
                # pixel centres: x_full + 0.5 = (x_small + 0.5) / scale
                points[start + j, :, 0] = (p[:, 0] + 0.5) / sx - 0.5
                points[start + j, :, 1] = (p[:, 1] + 0.5) / sy - 0.5
                found[start + j] = True
        return points, found

    @torch.inference_mode()
    def track(self, video: torch.Tensor) -> MouthTrack | None:
        """The smoothed mouth ROI per frame of uint8 RGB [T, H, W, 3] `video`; None (counted in
        `fallbacks`) when no searched frame has a face."""
        cfg = self.config
        t = int(video.shape[0])
        self.clips += 1
        index = np.unique(np.r_[np.arange(0, t, cfg.detect_every), t - 1])
        points, found = self._landmarks(video, index)
        if not found.any():
            self.fallbacks += 1
            log.debug("no face in any of %d searched frames: centre crop (clip %d, %d so far)", len(index), self.clips, self.fallbacks)
            return None
        p = points[found]
        at = index[found].astype(np.float64)
        eyes, mouth = p[:, 0:2].mean(axis=1), p[:, 3:5].mean(axis=1)
        eye_line = p[:, 1] - p[:, 0]
        angle = np.arctan2(eye_line[:, 1], eye_line[:, 0])
        size = np.linalg.norm(mouth - eyes, axis=1)
        frames = np.arange(t, dtype=np.float64)
        series = np.stack([np.interp(frames, at, v) for v in (mouth[:, 0], mouth[:, 1], size, angle)], axis=1)
        series = _moving_average(series, cfg.smooth_frames)
        return MouthTrack(
            center=series[:, :2],
            side=np.maximum(series[:, 2] * cfg.roi_per_eye_mouth, 1.0),
            angle=series[:, 3],
            detected=int(found.sum()),
            searched=len(index),
        )


def mouth_rois(frames: torch.Tensor, track: MouthTrack, size: int = ROI) -> torch.Tensor:
    """float [T, H, W] frames → [T, size, size]: each frame's square ROI of `track`, rotated
    upright and resampled bilinearly (outside the frame reads 0)."""
    t, h, w = frames.shape
    if len(track.side) != t:
        raise ValueError(f"mouth track has {len(track.side)} frames, the clip {t}")
    x = frames[:, None].float()
    factor = min(1.0, size / float(np.median(track.side)))  # antialiased: about one source pixel per ROI pixel
    small = _downscale(x, factor)
    sy, sx = small.shape[-2] / h, small.shape[-1] / w
    hs, ws = small.shape[-2:]
    cx = (track.center[:, 0] + 0.5) * sx - 0.5
    cy = (track.center[:, 1] + 0.5) * sy - 0.5
    half_x, half_y = track.side * sx / 2, track.side * sy / 2
    cos, sin = np.cos(track.angle), np.sin(track.angle)
    # output (u, v) in [-1, 1] → source pixel (cx + half·(u cos − v sin), cy + half·(u sin + v cos)),
    # then to grid_sample's normalised coordinates (2x + 1) / W − 1 (align_corners=False)
    theta = np.zeros((t, 2, 3))
    theta[:, 0] = np.stack([2 * half_x * cos / ws, -2 * half_x * sin / ws, (2 * cx + 1) / ws - 1], axis=1)
    theta[:, 1] = np.stack([2 * half_y * sin / hs, 2 * half_y * cos / hs, (2 * cy + 1) / hs - 1], axis=1)
    grid = F.affine_grid(torch.as_tensor(theta, dtype=x.dtype, device=x.device), [t, 1, size, size], align_corners=False)
    return F.grid_sample(small, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]
