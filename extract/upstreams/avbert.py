"""AVBERT (Lee et al., ICLR 2021) from the authors' released checkpoint, preprocessed as the
AV-SUPERB reference toolkit does (roger-tseng/av-superb, upstream_models/avbert/expert.py and
preprocess_function.py, with the defaults of its avbert/config.py), with three tracks.

Preprocessing of one clip (decoded here at 30 fps and 44.1 kHz mono):

- windows: `num_views` (10) windows of 32 frames × stride 2 = 64 frames (2.13 s) at 30 fps
  (DATA.NUM_FRAMES × DATA.SAMPLING_RATE at DATA.TARGET_FPS; the reference reads the video at its
  own rate and scales the span by fps / 30, which is the same 2.13 s). Window i starts at frame
  max(T − 64, 0) · i / (num_views − 1): the first at the start, the last at the end, evenly in
  between; a video shorter than 64 frames gives the same window num_views times.
- video: in each window the frames at `linspace(s, s + 63, 32)` (truncated, clamped to the last
  frame), ÷255, the short side scaled to 128 by nearest-neighbour interpolation (the long side to
  floor(long / short · 128)), then `num_crops` (3) crops of 128 × 128: left/top, centre,
  right/bottom along the long side (offset ceil((L − 128) / 2) for the centre), then
  (x − 0.45) / 0.225 per channel.
- audio: padded with zeros to at least 16,385 samples (the reference pads at the file's own rate
  before resampling to 44.1 kHz; here the audio is already at 44.1 kHz), windows of
  int(44100 · 64 / 30) = 94,080 samples starting at int(Δa · (s_i / Δv)) with Δa = max(S − 94080, 0),
  Δv and s_i the video windows' slack and starts (all 0 when Δv = 0); without the video stream
  (the audio track alone) the starts are int(Δa · i / (num_views − 1)), which is the same up to
  float rounding except for a video shorter than 2.13 s beside longer audio. Each window (shorter
  if the audio is) goes through torchaudio's MelSpectrogram(44100, n_fft = 2 · (⌊w / 128⌋ + 1),
  n_mels = 80) (hop n_fft / 2, Hann window, centred, reflect padding, HTK mel, power 2), then
  log(1e-6 + ·), then is trimmed or zero-padded to 128 frames: [num_views, 1, 80, 128].

Tracks (the reference's `avbert` = `avbert_time` entry point): every pass gives the embeddings'
output plus the 6 shared layers' outputs, 7 × 768, over BOS + one token per window:

- `audio`: the audio-only pass (single_audio_transformer) on the windows' spectrograms: 11 frames.
- `video`: the video-only pass (single_visual_transformer) for each spatial crop; the crops'
  sequences are interleaved along time (token-major, crop-minor), as the reference's
  feature_concat_axis "time": 3 × 11 = 33 frames. (`crop_combine="mean"` averages them instead;
  both give the same time-mean, the stored pooled vector.)
- `fusion`: the multimodal pass on the last visual and audio states of each crop (visual BOS +
  tokens, then audio BOS + tokens), interleaved across crops the same way: 3 × 22 = 66 frames.

The number of frames is fixed per clip, not per second (`TrackInfo.frames_per_clip`; its
frame_rate is 0), and the store reserves exactly that many frame rows per clip.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio

from avsuperb.extract.upstreams.avbert_model import TRANSFORMER_ALIASES, AVBertArch, AVBertModel
from avsuperb.extract.upstreams.base import BatchedUpstream, TrackInfo, UpstreamError, register
from avsuperb.extract.upstreams.checkpoint import read_checkpoint

log = logging.getLogger(__name__)

NAME = "avbert"
RELEASE_PAGE = "https://github.com/sangho-vision/avbert"
RELEASE_FILE = "https://drive.google.com/file/d/1T55DuJq0OYSdXVnDlOrgPSTwffVKsiFY"
EXPECTED = f"the authors' AVBERT checkpoint.pyth (a dict with 'state_dict') from {RELEASE_PAGE} ({RELEASE_FILE})"

SAMPLE_RATE = 44100  # DATA.TARGET_AUDIO_RATE
FPS = 30.0  # DATA.TARGET_FPS
TRACKS = ("audio", "video", "fusion")
# The released file is the fine-tuning wrapper's state dict: the backbone under `avbert.`, its
# heads beside it. The reference expert (expert.py) keeps the `avbert.*` keys, prefix stripped.
BACKBONE_PREFIX = "avbert."
# Checkpoint keys the reference's loader (utils/checkpoint.py load_finetune_checkpoint) skips:
# the cached orthogonal matrices `_B` (recomputed from A and base) and pretraining heads.
IGNORED_KEY_PARTS = ("_B", "head")
ALIAS_PREFIXES = tuple(f"{alias}." for alias in TRANSFORMER_ALIASES)


@dataclass(frozen=True)
class AVBertViews:
    """How a clip becomes model input (reference defaults: TEST.* and DATA.* of its config)."""

    num_views: int = 10  # TEST.NUM_ENSEMBLE_VIEWS: temporal windows = transformer tokens
    num_crops: int = 3  # TEST.NUM_SPATIAL_CROPS
    sampling_rate: int = 2  # DATA.SAMPLING_RATE: frame stride at 30 fps
    crop_size: int = 128  # DATA.TEST_CROP_SIZE, also the short side after scaling
    mean: float = 0.45
    std: float = 0.225
    min_samples: int = 16385  # the reference's zero padding of short audio
    crop_combine: str = "time"  # "time": interleave crops along time (reference); "mean": average them
    max_cnn_batch: int = 64  # windows per ConvNet call (memory bound only; results do not depend on it)

    def __post_init__(self) -> None:
        if self.num_views < 1 or self.num_crops < 1 or self.num_crops > 3:
            raise ValueError(f"num_views must be >= 1 and num_crops 1 to 3, got {self.num_views} and {self.num_crops}")
        if self.crop_combine not in ("time", "mean"):
            raise ValueError(f"crop_combine {self.crop_combine!r} is not one of time, mean")


# --------------------------------------------------------------------------- windows


def window_frames(arch: AVBertArch, views: AVBertViews) -> float:
    """Frames one window spans at 30 fps (64 for 32 frames at stride 2)."""
    return float(arch.num_frames * views.sampling_rate)


def window_samples(arch: AVBertArch, views: AVBertViews) -> int:
    """Audio samples of one window: int(44100 · 64 / 30) = 94,080."""
    return int(SAMPLE_RATE * arch.num_frames * views.sampling_rate / FPS)


def window_starts(delta: float, num_views: int) -> list[float]:
    """delta · i / (num_views − 1) for each window (one window: the middle, delta / 2)."""
    if num_views == 1:
        return [delta / 2]
    return [delta * i / (num_views - 1) for i in range(num_views)]


def frame_indices(num_video_frames: int, arch: AVBertArch, views: AVBertViews) -> tuple[torch.Tensor, float, list[float]]:
    """([num_views, num_frames] frame indices, the video slack Δv, the window starts)."""
    if num_video_frames < 1:
        raise ValueError("clip has no video frames")
    span = window_frames(arch, views)
    delta = max(num_video_frames - span, 0.0)
    starts = window_starts(delta, views.num_views)
    rows = [torch.linspace(s, s + span - 1, arch.num_frames) for s in starts]
    return torch.stack(rows).clamp(0, num_video_frames - 1).long(), delta, starts


def audio_starts(num_samples: int, size: int, num_views: int, video: tuple[float, list[float]] | None) -> list[int]:
    """Start sample of each audio window; `video` = (Δv, visual starts) aligns them as the reference does."""
    delta = max(num_samples - size, 0)
    if video is None:
        return [int(delta * f) for f in window_starts(1.0, num_views)]
    video_delta, starts = video
    return [int(delta * (s / video_delta)) if video_delta != 0 else 0 for s in starts]


# --------------------------------------------------------------------------- video


def short_side_scale(frames: torch.Tensor, size: int) -> torch.Tensor:
    """[N, C, H, W] → short side `size`, long side floor(long / short · size), nearest neighbour."""
    h, w = frames.shape[-2:]
    if (w <= h and w == size) or (h <= w and h == size):
        return frames
    if w < h:
        new_h, new_w = int(math.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(w / h * size))
    return F.interpolate(frames, size=(new_h, new_w), mode="nearest")


def uniform_crop(frames: torch.Tensor, size: int, index: int) -> torch.Tensor:
    """Crop `index` 0/1/2 of [..., H, W]: start/centre/end along the longer side (width if square)."""
    h, w = frames.shape[-2:]
    y, x = int(math.ceil((h - size) / 2)), int(math.ceil((w - size) / 2))
    if h > w:
        y = {0: 0, 1: y, 2: h - size}[index]
    else:
        x = {0: 0, 1: x, 2: w - size}[index]
    return frames[..., y : y + size, x : x + size]


def video_windows(video: torch.Tensor, arch: AVBertArch, views: AVBertViews) -> tuple[torch.Tensor, float, list[float]]:
    """uint8 RGB [T, H, W, 3] → ([num_crops, num_views, 3, num_frames, crop, crop] normalised
    float32 clips, Δv, window starts)."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3] RGB frames, got shape {tuple(video.shape)}")
    index, delta, starts = frame_indices(int(video.shape[0]), arch, views)
    frames = video[index.flatten().to(video.device)].float() / 255.0  # [V·F, H, W, 3]
    frames = short_side_scale(frames.permute(0, 3, 1, 2), views.crop_size)  # [V·F, 3, H', W']
    crops = []
    for c in range(views.num_crops):
        x = (uniform_crop(frames, views.crop_size, c) - views.mean) / views.std
        x = x.reshape(views.num_views, arch.num_frames, *x.shape[1:]).transpose(1, 2)  # [V, 3, F, S, S]
        crops.append(x)
    return torch.stack(crops), delta, starts


# --------------------------------------------------------------------------- audio


@lru_cache(maxsize=8)
def _mel_transform(n_fft: int, n_mels: int) -> torchaudio.transforms.MelSpectrogram:
    with warnings.catch_warnings():  # short windows get a small n_fft and empty mel filters, as in the reference
        warnings.filterwarnings("ignore", message="At least one mel filterbank has all zero values")
        return torchaudio.transforms.MelSpectrogram(SAMPLE_RATE, n_fft=n_fft, n_mels=n_mels)


def log_mel(window: torch.Tensor, n_mels: int, time: int) -> torch.Tensor:
    """[w] samples → [1, n_mels, time]: log(1e-6 + mel power), n_fft = 2(⌊w / time⌋ + 1), trimmed or zero-padded."""
    n_fft = 2 * (window.shape[-1] // time + 1)
    mel = torch.log(1e-6 + _mel_transform(n_fft, n_mels)(window.float().cpu().view(1, -1)))
    out = torch.zeros(1, n_mels, time)
    keep = min(time, mel.shape[-1])
    out[:, :, :keep] = mel[:, :, :keep]
    return out


def audio_windows(
    audio: torch.Tensor, arch: AVBertArch, views: AVBertViews, video: tuple[float, list[float]] | None
) -> torch.Tensor:
    """float mono [S] at 44.1 kHz → [num_views, 1, audio_frequency, audio_time] log-mel windows."""
    wave = audio.detach().float().cpu().reshape(-1)
    if wave.numel() < views.min_samples:
        wave = F.pad(wave, (0, views.min_samples - wave.numel()))
    size = window_samples(arch, views)
    starts = audio_starts(wave.numel(), size, views.num_views, video)
    return torch.stack([log_mel(wave[s : s + size], arch.audio_frequency, arch.audio_time) for s in starts])


# --------------------------------------------------------------------------- checkpoint


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:5]))
        return f"a dict with keys {keys}" + (", ..." if len(obj) > 5 else "")
    return f"a {type(obj).__name__}"


def _examples(keys: list[str]) -> str:
    return f"{len(keys)} (e.g. {', '.join(keys[:3])})"


def _canonical(state: dict[Any, Any]) -> OrderedDict[str, Any]:
    """Keys the reference loader skips dropped; the shared transformer's copies under its alias
    names folded into `transformer.*`, later aliases overwriting earlier ones (load_state_dict's
    module order in the authors' model: transformer, single_visual_, single_audio_, multi_)."""
    out: OrderedDict[str, Any] = OrderedDict()
    copies: dict[str, dict[str, Any]] = {}
    for key, value in state.items():
        key = str(key)
        if any(part in key for part in IGNORED_KEY_PARTS):
            continue
        alias = next((p for p in ALIAS_PREFIXES if key.startswith(p)), None)
        if alias is None:
            out[key] = value
        else:
            copies.setdefault(alias, {})[key[len(alias) :]] = value
    for alias in ALIAS_PREFIXES:
        for rest, value in copies.get(alias, {}).items():
            out["transformer." + rest] = value
    return out


def _backbone(state: dict[Any, Any]) -> dict[str, Any]:
    """The AVBert module's own keys: where any key starts with `avbert.` (the released fine-tuning
    wrapper's layout), those keys with the prefix stripped and every other key (the wrapper's
    heads) dropped, as the reference expert does; otherwise the state as it is."""
    keys = [str(k) for k in state]
    if not any(k.startswith(BACKBONE_PREFIX) for k in keys):
        return {str(k): v for k, v in state.items()}
    ignored = [k for k in keys if not k.startswith(BACKBONE_PREFIX)]
    if ignored:
        log.debug("%s: ignoring %d checkpoint keys outside %s* (e.g. %s)", NAME, len(ignored), BACKBONE_PREFIX, ignored[0])
    return {str(k)[len(BACKBONE_PREFIX) :]: v for k, v in state.items() if str(k).startswith(BACKBONE_PREFIX)}


def load_state(path: Path, arch: AVBertArch) -> AVBertModel:
    """The model built from `arch` with the checkpoint's weights, eval mode, CPU; UpstreamError
    (one line) for anything that is not an AVBERT checkpoint of that architecture.

    Accepted: the released container {'state_dict': {'avbert.<key>': ..., heads}, 'epoch': ...}
    (the `avbert.` prefix stripped, every other key ignored, as the reference expert does), or a
    state dict of the AVBert module itself, bare or in {'state_dict': ...}; keys optionally all
    under `module.`. As the reference loader, keys containing `_B` or `head` are skipped, and the
    shared transformer may appear under any of its four names (the last of transformer,
    single_visual_transformer, single_audio_transformer, multi_transformer present wins, as
    load_state_dict would have it). Any other missing or unexpected key, or a shape that differs
    from the architecture's, is refused."""
    obj = read_checkpoint(path, NAME, expected=EXPECTED)
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if state is None and isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    if not isinstance(state, dict) or not state:
        raise UpstreamError(
            f"{NAME}: {path} holds {_describe(obj)}, not an AVBERT checkpoint with a 'state_dict'; expected {EXPECTED}"
        )
    if all(str(k).startswith("module.") for k in state):  # saved from DistributedDataParallel
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    canonical = _canonical(_backbone(state))
    if not any(k.startswith("visual_conv.") for k in canonical) or not any(k.startswith("audio_conv.") for k in canonical):
        raise UpstreamError(
            f"{NAME}: {path} is not an AVBERT checkpoint: no visual_conv.* and audio_conv.* weights "
            f"(first keys: {', '.join(map(str, list(state)[:3]))}); expected {EXPECTED}"
        )

    try:
        model = AVBertModel(arch)
    except ValueError as err:
        raise UpstreamError(f"{NAME}: {err}") from None
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith(ALIAS_PREFIXES)}
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(canonical) - optional)
    unexpected = sorted(set(canonical) - set(expected))
    if missing or unexpected:
        parts = [f"{_examples(keys)} {what}" for keys, what in ((missing, "missing"), (unexpected, "unexpected")) if keys]
        raise UpstreamError(f"{NAME}: {path} does not match the AVBERT architecture: keys {'; '.join(parts)}")
    for key, ref in expected.items():
        if key not in canonical:
            continue
        value = canonical[key]
        if not isinstance(value, torch.Tensor):
            raise UpstreamError(f"{NAME}: {path}: {key} is {_describe(value)}, not a tensor")
        if tuple(value.shape) != tuple(ref.shape):
            raise UpstreamError(
                f"{NAME}: {path}: weight {key} has shape {tuple(value.shape)}, the architecture expects {tuple(ref.shape)}"
            )
    model.load_state_dict(canonical, strict=False)
    return model.eval()


# --------------------------------------------------------------------------- the upstream


@register
class AVBert(BatchedUpstream):
    """AVBERT: tracks audio, video and fusion, 7 layers × 768, a fixed number of frames per clip."""

    name = NAME
    sample_rate = SAMPLE_RATE
    video_fps = FPS

    def __init__(
        self,
        checkpoint: Path | None = None,
        device: str = "cpu",
        *,
        arch: AVBertArch | None = None,
        views: AVBertViews | None = None,
    ) -> None:
        if checkpoint is None:
            raise UpstreamError(
                f"{NAME} needs --checkpoint PATH to the authors' released checkpoint.pyth: download it from "
                f"{RELEASE_FILE} (the link in download_checkpoint.py of {RELEASE_PAGE}), save it anywhere "
                "(e.g. ~/checkpoints/avbert.pyth) and pass that path"
            )
        super().__init__(Path(checkpoint), device)
        self.arch = arch or AVBertArch()
        self.views = views or AVBertViews()
        if self.arch.max_position_embeddings < 1 + self.views.num_views:
            raise UpstreamError(
                f"{NAME}: {self.views.num_views} windows need {1 + self.views.num_views} positions, "
                f"the model has {self.arch.max_position_embeddings}"
            )
        self.model = load_state(self.checkpoint, self.arch).to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        log.info("%s: %d × %d per track from %s", NAME, self.arch.num_states, self.arch.hidden_size, self.checkpoint)

    # -- description --------------------------------------------------------------------------
    def frames_per_clip(self, track: str) -> int:
        tokens = 1 + self.views.num_views
        crops = self.views.num_crops if self.views.crop_combine == "time" else 1
        return {"audio": tokens, "video": crops * tokens, "fusion": 2 * crops * tokens}[track]

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        return {t: TrackInfo(self.arch.num_states, self.arch.hidden_size, 0.0, self.frames_per_clip(t)) for t in TRACKS}

    def config(self) -> dict[str, Any]:
        return {
            "architecture": asdict(self.arch),
            "views": {k: v for k, v in asdict(self.views).items() if k != "max_cnn_batch"},
            "frames_per_clip": {t: self.frames_per_clip(t) for t in TRACKS},
            "layers": "embeddings output (BOS + one token per window), then each of the shared transformer's layer outputs",
            "preprocessing": {
                "sample_rate": SAMPLE_RATE,
                "fps": FPS,
                "window_frames": window_frames(self.arch, self.views),
                "window_samples": window_samples(self.arch, self.views),
                "frames_per_window": self.arch.num_frames,
                "short_side": self.views.crop_size,
                "resize": "nearest",
                "crops": ["start", "centre", "end"][: self.views.num_crops],
                "mel": {
                    "n_mels": self.arch.audio_frequency,
                    "frames": self.arch.audio_time,
                    "n_fft": "2 * (w // frames + 1)",
                    "log_offset": 1e-6,
                },
                "audio_windows": "aligned to the video windows when the video stream is given, else evenly spread",
            },
        }


    # -- extraction ---------------------------------------------------------------------------

    def _cnn(self, fn: Any, x: torch.Tensor) -> torch.Tensor:
        """fn over [N, V, ...] in chunks of at most max_cnn_batch windows → [N, V, D]."""
        n, v = x.shape[:2]
        flat = x.flatten(0, 1)
        step = max(1, self.views.max_cnn_batch)
        out = torch.cat([fn(flat[i : i + step].unsqueeze(1)).squeeze(1) for i in range(0, len(flat), step)])
        return out.view(n, v, -1)

    def _run(
        self, tracks: list[str], clips: list[tuple[torch.Tensor | None, torch.Tensor | None]]
    ) -> list[dict[str, list[torch.Tensor]]]:
        """Per clip and track, the list of [T, D] layer outputs. Every clip's input has the same
        shape (fixed windows), so clips batch without padding or masks."""
        uses_audio, uses_video = self.check_inputs(tracks, clips)
        video_in: list[torch.Tensor] = []
        audio_in: list[torch.Tensor] = []
        for audio, video in clips:
            alignment = None
            if video is not None and (uses_video or uses_audio):
                if uses_video:
                    windows, delta, starts = video_windows(video.to(self.device), self.arch, self.views)
                    video_in.append(windows)
                else:
                    _, delta, starts = frame_indices(int(video.shape[0]), self.arch, self.views)
                alignment = (delta, starts)
            if uses_audio:
                assert audio is not None
                audio_in.append(audio_windows(audio, self.arch, self.views, alignment))

        m = self.model
        audio_states: list[torch.Tensor] | None = None
        if uses_audio:
            tokens = self._cnn(m.audio_tokens, torch.stack(audio_in).to(self.device))
            audio_states = m.encode_single(tokens, "audio")
        video_states: list[list[torch.Tensor]] = []  # per crop, per layer [N, 1 + V, D]
        fusion_states: list[list[torch.Tensor]] = []
        if uses_video:
            batch = torch.stack(video_in)  # [N, C, V, 3, F, S, S]
            for c in range(self.views.num_crops):
                states = m.encode_single(self._cnn(m.visual_tokens, batch[:, c]), "visual")
                video_states.append(states)
                if "fusion" in tracks:
                    assert audio_states is not None
                    fusion_states.append(m.encode_multi(states[-1], audio_states[-1]))

        per_track: dict[str, list[torch.Tensor]] = {}  # track → per layer [N, T', D]
        if "audio" in tracks:
            assert audio_states is not None
            per_track["audio"] = audio_states
        if "video" in tracks:
            per_track["video"] = self._combine(video_states)
        if "fusion" in tracks:
            per_track["fusion"] = self._combine(fusion_states)
        return [{t: [layer[i] for layer in layers] for t, layers in per_track.items()} for i in range(len(clips))]

    def _combine(self, per_crop: list[list[torch.Tensor]]) -> list[torch.Tensor]:
        """Crops' [N, T, D] states per layer → [N, C·T, D] interleaved (t0c0, t0c1, ...) or [N, T, D] averaged."""
        out = []
        for layer in zip(*per_crop):
            stacked = torch.stack(layer, dim=2)  # [N, T, C, D]
            out.append(stacked.flatten(1, 2) if self.views.crop_combine == "time" else stacked.mean(dim=2))
        return out
