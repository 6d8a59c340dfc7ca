"""RepLAI (Mittal et al., "Learning State-Aware Visual Representations from Audible Interactions",
NeurIPS 2022) from the authors' released checkpoints, preprocessed as the AV-SUPERB reference
toolkit does (roger-tseng/av-superb, upstream_models/replai/expert.py and replai/data/*), with one
512-d layer per modality and no fusion track (RepLAI's two encoders meet only in its losses).

Checkpoints: the training script's `{'model': state_dict, 'optimizer', 'sampler', 'epoch'}` with
the model under DistributedDataParallel, so the encoders' weights are `module.backbone.video.*`
and `module.backbone.audio.*` (the reference keeps exactly those); the contrastive/arrow-of-time
heads (`module.mlp.*`) are not used. `backbone.*` without `module.` loads as well.

Preprocessing:

- audio (16 kHz mono): torchaudio MelSpectrogram with a 32 ms window and 16 ms hop (n_fft 512,
  hop 256, periodic Hann, power 2, 80 HTK mel bands, no centring), log(max(·, 1e-10)); the
  1 + (S − 512) // 256 frames (62.5 per second) are resampled by nearest index to
  int(S / 16000 / 2 · 128) frames (64 per second, 128 per 2 s: the reference's
  UniformTemporalSubsample; the authors' training used the same transform to stretch the 124
  frames of its 2 s clips to 125); then (x + 7.03) / 4.66.
- video (decoded at 16 fps): short side resized to 128 with nearest-neighbour sampling (the
  reference's `Resize(128)` runs cv2 INTER_NEAREST: source index cvFloor(i · (1 / (dst / src))),
  emulated here in the same double arithmetic, which is not always floor(i · src / dst)), long side int(128 · long / short); centre crop 112 × 112
  at offset int(round((size − 112) / 2)) (Python rounding); ÷255; ImageNet mean/std.
  The reference asks for int(len(video) · 16) frames of a clip decoded at its native rate — a
  frame count times 16, where a duration in seconds times 16 was meant (its comment: "0.5 secs
  for video, resulting in 8 frames (16FPS)") — so it repeats every frame 16 times (**defect**).
  Here the clip is decoded at 16 fps and every frame is used once: RepLAI's training input rate.

Clip length: the whole clip goes through each encoder at once. The reference then max-pools
the encoder maps over space (frequency) and over K adaptive time bins, K = T // 8 for video and
N // 128 for audio — one bin per training-clip length (0.5 s of video, 2 s of audio) — which is
kept here, with K ≥ 1 (the reference returns nothing for clips under 0.5 s / 2 s). Frame rates:
video 16 fps / 8 = 2 Hz (R(2+1)D's temporal stride is 8, so the bins are exactly its output
steps when T is a multiple of 8); audio 64 mel frames/s / 128 = 0.5 Hz (the CNN's temporal
stride is 16, so each bin max-pools 8 of its output steps).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import torch
import torchaudio

from avsuperb.extract.upstreams.base import BatchedUpstream, TrackInfo, UpstreamError, register
from avsuperb.extract.upstreams.checkpoint import read_checkpoint
from avsuperb.extract.upstreams.replai_model import (
    AUDIO_TIME_STRIDE,
    AUDIO_WINDOW,
    OUT_DIM,
    VIDEO_TIME_STRIDE,
    VIDEO_WINDOW,
    RepLAIBackbone,
    pool_audio,
    pool_video,
)

log = logging.getLogger(__name__)

RELEASE_PAGE = "https://github.com/HimangiM/RepLAI#pre-trained-models"
EXPECTED = f"a RepLAI checkpoint (e.g. the EPIC-KITCHENS-100 or Ego4D 'RepLAI' model) from {RELEASE_PAGE}"
NAME = "replai"
TRACKS = ("audio", "video")

# audio
SAMPLE_RATE = 16000
MEL_WINDOW_MS = 32
MEL_STEP_MS = 16
N_FFT = SAMPLE_RATE * MEL_WINDOW_MS // 1000  # 512
HOP = SAMPLE_RATE * MEL_STEP_MS // 1000  # 256
NUM_MELS = 80
LOG_EPS = 1e-10
MEL_FRAMES_PER_WINDOW = AUDIO_WINDOW  # 128 mel frames per 2 s, the reference's resampling target
WINDOW_SECONDS = 2.0
MEL_MEAN = -7.03
MEL_STD = 4.66
# video
FPS = 16.0
SHORT_SIDE = 128
CROP = 112
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
# output frame rates: one vector per pooling bin
AUDIO_FRAME_RATE = MEL_FRAMES_PER_WINDOW / WINDOW_SECONDS / AUDIO_WINDOW  # 64 mel frames/s / 128 = 0.5 Hz
VIDEO_FRAME_RATE = FPS / VIDEO_WINDOW  # 16 fps / 8 = 2 Hz


# --------------------------------------------------------------------------- audio


class LogMel(torch.nn.Module):
    """Waveform [S] → float32 [N, 80]: the reference's normalised log-mel frames (see the module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=N_FFT, hop_length=HOP, n_mels=NUM_MELS, center=False
        )

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.ndim != 1:
            raise ValueError(f"audio must be a mono waveform [S], got shape {tuple(wave.shape)}")
        if wave.numel() < N_FFT:
            raise ValueError(f"audio of {wave.numel()} samples is shorter than one {MEL_WINDOW_MS} ms window ({N_FFT} samples)")
        spec = self.mel(wave.float()[None])[0].clamp(min=LOG_EPS).log().T  # [M, 80]
        index = resample_index(spec.shape[0], num_mel_frames(wave.numel())).to(spec.device)
        return (spec.index_select(0, index) - MEL_MEAN) / MEL_STD


def num_mel_frames(num_samples: int) -> int:
    """int(seconds / 2 · 128), in the reference's float arithmetic: 64 frames per second."""
    return int(num_samples / SAMPLE_RATE / WINDOW_SECONDS * MEL_FRAMES_PER_WINDOW)


def resample_index(have: int, want: int) -> torch.Tensor:
    """Nearest indices that stretch or thin `have` frames to `want` (float32 linspace, truncated)."""
    return torch.linspace(0, have - 1, want, dtype=torch.float32).clamp(0, have - 1).long()


# --------------------------------------------------------------------------- video


def resize_size(height: int, width: int, short: int = SHORT_SIDE) -> tuple[int, int]:
    """(H, W) after scaling the short side to `short`; the long side is int(short · long / short_in)."""
    if width < height:
        return int(short * height / width), short
    return short, int(short * width / height)


def nearest_index(src: int, dst: int) -> torch.Tensor:
    """cv2 INTER_NEAREST's source index for each of `dst` outputs: min(floor(i · (1 / (dst / src))), src − 1)."""
    inverse = 1.0 / (dst / src)
    return torch.tensor([min(math.floor(i * inverse), src - 1) for i in range(dst)], dtype=torch.long)


def crop_offset(size: int, crop: int = CROP) -> int:
    return int(round((size - crop) / 2.0))


def video_features(video: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] → float32 [3, T, 112, 112]: nearest resize (short side 128), centre crop, ImageNet normalisation."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3] RGB frames, got shape {tuple(video.shape)}")
    if video.shape[0] == 0:
        raise ValueError("clip has no video frames")
    h, w = int(video.shape[1]), int(video.shape[2])
    oh, ow = resize_size(h, w)
    top, left = crop_offset(oh), crop_offset(ow)
    rows = nearest_index(h, oh)[top : top + CROP].to(video.device)
    cols = nearest_index(w, ow)[left : left + CROP].to(video.device)
    x = video.index_select(1, rows).index_select(2, cols).float() / 255.0
    mean = torch.tensor(IMAGE_MEAN, device=x.device)
    std = torch.tensor(IMAGE_STD, device=x.device)
    return ((x - mean) / std).permute(3, 0, 1, 2).contiguous()


# --------------------------------------------------------------------------- checkpoint


BACKBONE_PREFIXES = ("module.backbone.", "backbone.", "")


def load_checkpoint(path: Path) -> RepLAIBackbone:
    """The two encoders with the checkpoint's weights, in eval mode on the CPU; UpstreamError with
    one line when the file is not a RepLAI checkpoint or does not match the architecture."""
    obj = read_checkpoint(path, NAME, expected=EXPECTED)
    state = obj.get("model") if isinstance(obj, dict) and isinstance(obj.get("model"), dict) else obj
    if not isinstance(state, dict):
        raise UpstreamError(f"{NAME}: {path} holds a {type(obj).__name__}, not a checkpoint with a 'model' state dict; expected {EXPECTED}")
    prefix = next(
        (p for p in BACKBONE_PREFIXES if f"{p}video.conv1.0.weight" in state or f"{p}audio.conv1.0.weight" in state), None
    )
    if prefix is None:
        first = ", ".join(map(str, list(state)[:3])) or "none"
        raise UpstreamError(
            f"{NAME}: {path} is not a RepLAI checkpoint: it has no module.backbone.video/audio weights "
            f"(first keys: {first}); expected {EXPECTED}"
        )
    weights = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix) and k[len(prefix) :].startswith(("video.", "audio."))}
    ignored = len(state) - len(weights)
    model = RepLAIBackbone()
    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(weights) - optional)
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(prefix + k for k in missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(prefix + k for k in unexpected[:3])})")
        raise UpstreamError(f"{NAME}: {path} does not match RepLAI's R(2+1)D-18 / 9-layer CNN encoders: keys {'; '.join(parts)}")
    for k, v in weights.items():
        if not isinstance(v, torch.Tensor):
            raise UpstreamError(f"{NAME}: {path}: {prefix}{k} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != tuple(expected[k].shape):
            raise UpstreamError(f"{NAME}: {path}: weight {prefix}{k} has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
    model.load_state_dict(weights, strict=False)
    log.debug("%s: %d backbone tensors loaded from %s, %d other entries (training heads) ignored", NAME, len(weights), path, ignored)
    return model.float().eval()


# --------------------------------------------------------------------------- the upstream


@register
class RepLAI(BatchedUpstream):
    """RepLAI's encoders: tracks audio (1 × 512 at 0.5 Hz) and video (1 × 512 at 2 Hz); no fusion."""

    name = NAME
    sample_rate = SAMPLE_RATE
    video_fps = FPS

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu") -> None:
        if checkpoint is None:
            raise UpstreamError(
                f"{NAME} needs --checkpoint PATH to a released RepLAI checkpoint (EPIC-KITCHENS-100 or Ego4D, "
                f"'RepLAI' row): download it from {RELEASE_PAGE} (Google Drive links), save it anywhere "
                "(e.g. ~/checkpoints/replai_ego4d.pth) and pass that path"
            )
        super().__init__(Path(checkpoint), device)
        self.model = load_checkpoint(self.checkpoint).to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.logmel = LogMel().to(self.device)
        log.info("%s: R(2+1)D-18 video and 9-layer spectrogram CNN audio encoders from %s", NAME, self.checkpoint)

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        return {"audio": TrackInfo(1, OUT_DIM, AUDIO_FRAME_RATE), "video": TrackInfo(1, OUT_DIM, VIDEO_FRAME_RATE)}

    def config(self) -> dict[str, Any]:
        return {
            "architecture": {
                "video": "AVID R(2+1)D-18: full 3x7x7 stem + max-pool, (2+1)D blocks with mid width = out width, BN after the residual sum",
                "audio": "AVID 9-layer spectrogram CNN (7x7 stem + 4 blocks of two 3x3 convs, 64-128-256-512)",
                "dim": OUT_DIM,
                "video_time_stride": VIDEO_TIME_STRIDE,
                "audio_time_stride": AUDIO_TIME_STRIDE,
            },
            "layers": "one per track: the encoder's last feature map, max-pooled over space/frequency and over adaptive time bins",
            "pooling": {
                "video_frames_per_bin": VIDEO_WINDOW,
                "audio_mel_frames_per_bin": AUDIO_WINDOW,
                "min_bins": 1,
                "kind": "adaptive max",
            },
            "fusion": None,
            "preprocessing": {
                "audio": {
                    "sample_rate": SAMPLE_RATE,
                    "window_ms": MEL_WINDOW_MS,
                    "hop_ms": MEL_STEP_MS,
                    "n_fft": N_FFT,
                    "hop_length": HOP,
                    "num_mels": NUM_MELS,
                    "mel_scale": "htk",
                    "center": False,
                    "log_eps": LOG_EPS,
                    "mel_frames_per_second": MEL_FRAMES_PER_WINDOW / WINDOW_SECONDS,
                    "resample": "nearest index, int(seconds / 2 * 128) frames",
                    "mean": MEL_MEAN,
                    "std": MEL_STD,
                },
                "video": {
                    "fps": FPS,
                    "short_side": SHORT_SIDE,
                    "resize": "nearest (cv2 INTER_NEAREST indices)",
                    "crop": CROP,
                    "crop_kind": "center",
                    "scale": 1 / 255,
                    "mean": list(IMAGE_MEAN),
                    "std": list(IMAGE_STD),
                    "frames": "every decoded frame once (the reference's x16 frame repetition is not reproduced)",
                },
            },
        }

    def _run(
        self, tracks: list[str], clips: list[tuple[torch.Tensor | None, torch.Tensor | None]]
    ) -> list[dict[str, list[torch.Tensor]]]:
        """Per clip and track, a one-element list with the [K, 512] features. Clips whose encoder
        inputs have the same length run as one batch, others separately: the convolutions would
        see any padding, so clips are never padded."""
        self.check_inputs(tracks, clips)
        out: list[dict[str, list[torch.Tensor]]] = [{} for _ in clips]
        for track in tracks:
            inputs: list[torch.Tensor] = []
            for audio, video in clips:
                inputs.append(self.logmel(audio)[None] if track == "audio" else video_features(video))
            groups: dict[int, list[int]] = {}
            for i, x in enumerate(inputs):
                groups.setdefault(int(x.shape[1]), []).append(i)
            for length, members in groups.items():
                batch = torch.stack([inputs[i] for i in members])
                if track == "audio":
                    feats = pool_audio(self.model.audio(batch), length)
                else:
                    feats = pool_video(self.model.video(batch), length)
                for j, i in enumerate(members):
                    out[i][track] = [feats[j]]
        return out
