"""HoG baseline: per-frame histograms of oriented gradients, exactly as the reference toolkit
(scikit-image's `hog` with 8 orientations, 16x16 cells, 1x1 blocks, L2-Hys) on frames resized
to 128x64 and converted to grayscale; computed here vectorised over frames."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from avsuperb.extract.upstreams.base import TrackInfo, Upstream, UpstreamError, register

FRAME_SIZE = (128, 64)  # H x W
ORIENTATIONS = 8
CELL = 16
GRAY = (0.2989, 0.587, 0.114)
EPS = 1e-5
FRAMES_PER_PASS = 64


def preprocess(video: torch.Tensor) -> np.ndarray:
    """uint8 [T, H, W, 3] -> float64 grayscale [T, 128, 64] (bilinear resize without antialias)."""
    import torchvision.transforms.functional as TF  # here: importing torchvision takes a second, which every other model would pay

    x = TF.resize(video.permute(0, 3, 1, 2), list(FRAME_SIZE), antialias=False)
    x = x.cpu().numpy().astype(np.float64)
    return GRAY[0] * x[:, 0] + GRAY[1] * x[:, 1] + GRAY[2] * x[:, 2]


def hog_features(gray: np.ndarray) -> np.ndarray:
    """float [T, H, W] -> [T, (H/16)*(W/16)*8], the same numbers as skimage.feature.hog per frame."""
    out = [_hog(gray[i : i + FRAMES_PER_PASS]) for i in range(0, len(gray), FRAMES_PER_PASS)]
    return np.concatenate(out) if out else np.zeros((0, 0))


def _hog(img: np.ndarray) -> np.ndarray:
    t, h, w = img.shape
    g_row = np.zeros_like(img)
    g_col = np.zeros_like(img)
    g_row[:, 1:-1, :] = img[:, 2:, :] - img[:, :-2, :]
    g_col[:, :, 1:-1] = img[:, :, 2:] - img[:, :, :-2]
    magnitude = np.hypot(g_col, g_row)
    orientation = np.rad2deg(np.arctan2(g_row, g_col)) % 180
    edges = (180.0 / ORIENTATIONS) * np.arange(ORIENTATIONS + 1)
    bins = np.clip(np.searchsorted(edges, orientation, side="right") - 1, 0, ORIENTATIONS - 1)
    onehot = np.zeros((t, h, w, ORIENTATIONS))
    np.put_along_axis(onehot, bins[..., None], magnitude[..., None], axis=-1)
    ch, cw = h // CELL, w // CELL
    cells = onehot[:, : ch * CELL, : cw * CELL].reshape(t, ch, CELL, cw, CELL, ORIENTATIONS).sum(axis=(2, 4))
    cells /= CELL * CELL
    # L2-Hys over 1x1-cell blocks
    cells = cells / np.sqrt(np.sum(cells**2, axis=-1, keepdims=True) + EPS**2)
    cells = np.minimum(cells, 0.2)
    cells = cells / np.sqrt(np.sum(cells**2, axis=-1, keepdims=True) + EPS**2)
    return cells.reshape(t, -1)


@register
class Hog(Upstream):
    """Video only, one layer of 256 dims at 25 fps."""

    name = "hog"
    sample_rate = None
    video_fps = 25.0

    def __init__(self, checkpoint=None, device: str = "cpu") -> None:
        if checkpoint is not None:
            raise UpstreamError("hog is a handcrafted feature and takes no --checkpoint")
        super().__init__(None, device)

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        dim = (FRAME_SIZE[0] // CELL) * (FRAME_SIZE[1] // CELL) * ORIENTATIONS
        return {"video": TrackInfo(1, dim, self.video_fps)}

    def config(self) -> dict[str, Any]:
        return {
            "frame_size": list(FRAME_SIZE),
            "fps": self.video_fps,
            "orientations": ORIENTATIONS,
            "pixels_per_cell": CELL,
            "cells_per_block": 1,
            "block_norm": "L2-Hys",
            "gray": list(GRAY),
        }

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        assert video is not None
        return [torch.from_numpy(hog_features(preprocess(video)))]
