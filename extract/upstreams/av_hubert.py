"""AV-HuBERT (Base; Large by config) from a released fairseq checkpoint, preprocessed as the
AV-SUPERB reference toolkit does, with three tracks from its shared 12-layer transformer.

Preprocessing (reference toolkit roger-tseng/av-superb, upstream_models/vhubert/expert.py, which
reuses av_hubert's own hubert_dataset/utils code):

- audio: python_speech_features-style `logfbank` (26 mel filters, 25 ms window, 10 ms step,
  nfft 512, pre-emphasis 0.97, no window function, zeros replaced by eps before the log) on the
  16 kHz waveform; 4 consecutive frames stacked to 104-d at 25 Hz (the last group zero-padded);
  trimmed or zero-padded to the number of video frames; then `F.layer_norm` over the 104
  features of each frame, without affine parameters (av_hubert's `normalize: true`).
- video: grayscale 0.2989 R + 0.587 G + 0.114 B, ÷255, the centre 88×88 crop of the frame as
  decoded (no resizing, no face detection, as the reference; frames smaller than 88 are
  zero-padded around first, as av_hubert's CenterCrop does), then (x − 0.421) / 0.165. On the
  96×96 mouth ROIs AV-HuBERT was trained on this is its own test-time crop; on full frames it is
  the central 88×88 pixels, which is what the benchmark measured. With `video_crop="mouth"`
  (optional: facenet-pytorch's MTCNN, see mouth_crop.py) the 88×88 centre crop is taken from a
  96×96 mouth ROI found per frame instead, as on the authors' LRS3/VoxCeleb2 data; a clip with no
  face anywhere falls back to the centre crop of the frame.

Tracks (the paper: "we set features of the opposing modality to 0 and extract features from the
12-layer fusion Transformer"): `fusion` uses both streams; `audio` replaces the video feature
extractor's *output* by zeros, `video` the audio feature extractor's output — the reference
model code's path for a missing modality (`features_video = features_audio.new_zeros(...)`),
the same as av_hubert's `extract_finetune` and the modality dropout it was pretrained with. Each
track has encoder_layers + 1 layers (the transformer input after the positional convolution,
then every layer's output, the last one after the final layer norm when `layer_norm_first`, as
Hugging Face's hidden_states), at 25 Hz.

`needs`: the video stream is decoded for every track (the audio track's time axis is the video
frame count, as the reference trims/pads audio to the video); the audio stream only for the
audio and fusion tracks (the video track zeroes audio features, whatever the audio is).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from avsuperb.extract.upstreams.av_hubert_model import AVHubertArch, AVHubertModel
from avsuperb.extract.upstreams.base import BatchedUpstream, TrackInfo, UpstreamError, register
from avsuperb.extract.upstreams.checkpoint import plain, read_checkpoint
from avsuperb.extract.upstreams.mouth_crop import MouthCropper, mouth_rois

log = logging.getLogger(__name__)

RELEASE_PAGE = "https://facebookresearch.github.io/av_hubert/"
EXPECTED = f"a fairseq AV-HuBERT checkpoint such as base_lrs3_iter5.pt from {RELEASE_PAGE}"

# audio (python_speech_features logfbank defaults used by av_hubert)
SAMPLE_RATE = 16000
NUM_FILTERS = 26
WIN_SEC = 0.025
STEP_SEC = 0.01
NFFT = 512
PREEMPH = 0.97
STACK_ORDER = 4
# video
FPS = 25.0
GRAY = (0.2989, 0.587, 0.114)
CROP = 88
IMAGE_MEAN = 0.421
IMAGE_STD = 0.165

TRACKS = ("audio", "video", "fusion")
VIDEO_CROPS = ("center", "mouth")

# Weights a released checkpoint may hold that feature extraction does not use.
PRETRAINING_ONLY_KEYS = frozenset(
    {"mask_emb", "label_embs_concat", "final_proj.weight", "final_proj.bias", "target_glu.0.weight", "target_glu.0.bias"}
)
# Fine-tuned models: where the AV-HuBERT encoder sits, and the prefixes of the task heads around it.
FINETUNED_LAYOUTS = (
    ("encoder.w2v_model.", ("decoder.",)),  # AVHubertSeq2Seq (e.g. base_lrs3_433h.pt)
    ("w2v_encoder.w2v_model.", ("w2v_encoder.proj.",)),  # AVHubertCtc
)


# --------------------------------------------------------------------------- audio


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700 * (10 ** (mel / 2595.0) - 1)


@lru_cache(maxsize=4)
def mel_filterbank(nfilt: int = NUM_FILTERS, nfft: int = NFFT, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """[nfilt, nfft/2 + 1] triangular filters on FFT bins floor((nfft + 1) · f / sr), 0 Hz to sr/2."""
    mels = np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate / 2), nfilt + 2)
    edges = np.floor((nfft + 1) * _mel_to_hz(mels) / sample_rate)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    i = np.arange(nfft // 2 + 1, dtype=np.float64)[None, :]
    rising = (i >= lo) & (i < mid)
    falling = (i >= mid) & (i < hi)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        fb = np.where(rising, (i - lo) / (mid - lo), fb)
        fb = np.where(falling, (hi - i) / (hi - mid), fb)
    fb.setflags(write=False)
    return fb


def logfbank(signal: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """float64 [N, 26] log mel filterbank energies, the numbers python_speech_features' `logfbank`
    gives with its defaults: N = 1 + ceil((S − 400) / 160) frames (the last zero-padded)."""
    x = np.asarray(signal, dtype=np.float64).reshape(-1)
    if x.size == 0:
        raise ValueError("audio has no samples")
    x = np.concatenate([x[:1], x[1:] - PREEMPH * x[:-1]])
    frame_len, step = _round_half_up(WIN_SEC * sample_rate), _round_half_up(STEP_SEC * sample_rate)
    n = 1 if x.size <= frame_len else 1 + math.ceil((x.size - frame_len) / step)
    x = np.concatenate([x, np.zeros((n - 1) * step + frame_len - x.size)])
    frames = np.lib.stride_tricks.sliding_window_view(x, frame_len)[::step]
    power = 1.0 / NFFT * np.square(np.abs(np.fft.rfft(frames, NFFT)))
    energies = power @ mel_filterbank(NUM_FILTERS, NFFT, sample_rate).T
    energies = np.where(energies == 0, np.finfo(float).eps, energies)
    return np.log(energies)


def audio_features(audio: np.ndarray, num_frames: int | None, normalize: bool = True) -> torch.Tensor:
    """Waveform [S] → float32 [T, 104]: logfbank, stacked ×4, fitted to `num_frames`, layer-normed per frame."""
    fbank = logfbank(audio).astype(np.float32)
    groups = -(-len(fbank) // STACK_ORDER)
    stacked = np.zeros((groups * STACK_ORDER, NUM_FILTERS), np.float32)
    stacked[: len(fbank)] = fbank
    stacked = stacked.reshape(groups, STACK_ORDER * NUM_FILTERS)
    if num_frames is not None:
        fitted = np.zeros((num_frames, stacked.shape[1]), np.float32)
        fitted[: min(num_frames, groups)] = stacked[:num_frames]
        stacked = fitted
    feats = torch.from_numpy(stacked)
    return F.layer_norm(feats, feats.shape[1:]) if normalize else feats


# --------------------------------------------------------------------------- video


def center_crop(frames: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """[T, H, W] → [T, size, size]: the centre crop (offset floor((H − size) / 2)); smaller frames
    are zero-padded around first, (size − H) // 2 before and the rest after."""
    h, w = frames.shape[-2:]
    if h < size or w < size:
        ph, pw = max(size - h, 0), max(size - w, 0)
        frames = F.pad(frames, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        h, w = frames.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size]


def video_features(video: torch.Tensor, mouth: MouthCropper | None = None) -> torch.Tensor:
    """uint8 RGB [T, H, W, 3] → float32 [T, 88, 88]: grayscale, ÷255, centre crop, normalised.
    With `mouth`, the centre crop is taken from each frame's 96×96 mouth ROI (the frame's own
    centre when the clip has no face)."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3] RGB frames, got shape {tuple(video.shape)}")
    x = video.float()
    gray = (GRAY[0] * x[..., 0] + GRAY[1] * x[..., 1] + GRAY[2] * x[..., 2]) / 255.0
    track = mouth.track(video) if mouth is not None else None
    if track is not None:
        gray = mouth_rois(gray, track)
    return (center_crop(gray) - IMAGE_MEAN) / IMAGE_STD


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: AVHubertModel  # with the checkpoint's encoder weights, in eval mode, on the CPU
    finetuned: bool
    normalize: bool  # task.normalize: layer norm on the stacked filterbanks


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:5]))
        return f"a dict with keys {keys}" + (", ..." if len(obj) > 5 else "")
    return f"a {type(obj).__name__}"


def _arch_from_config(model_cfg: dict[str, Any], path: Path) -> AVHubertArch:
    """The architecture fields of a fairseq model config; absent ones keep AVHubertConfig's defaults."""
    defaults, values = AVHubertArch(), {}
    for f in fields(AVHubertArch):
        raw = model_cfg.get(f.name)
        if raw is None:
            continue
        default = getattr(defaults, f.name)
        if isinstance(default, bool) and not isinstance(raw, bool):
            raise UpstreamError(f"av_hubert: {path}: model config field {f.name}={raw!r} is not a boolean")
        try:
            values[f.name] = raw if isinstance(default, bool) else type(default)(raw)
        except (TypeError, ValueError) as err:
            raise UpstreamError(f"av_hubert: {path}: model config field {f.name}={raw!r} is not usable ({err})") from err
    return AVHubertArch(**values)


def load_checkpoint(path: Path) -> LoadedCheckpoint:
    """Read a fairseq AV-HuBERT checkpoint (pretrained or fine-tuned) and check it against the
    architecture its config describes; UpstreamError with one line when it is anything else."""
    path = Path(path)
    obj = read_checkpoint(path, "av_hubert", expected=EXPECTED)
    if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
        raise UpstreamError(
            f"av_hubert: {path} holds {_describe(obj)}, not a fairseq checkpoint with a 'model' state dict; expected {EXPECTED}"
        )
    state: dict[str, Any] = obj["model"]
    cfg = plain(obj.get("cfg"))
    if not cfg and obj.get("args") is not None:  # pre-hydra fairseq: one flat argparse Namespace
        flat = plain(obj["args"])
        cfg = {"model": flat, "task": flat}
    if not isinstance(cfg, dict):
        cfg = {}

    prefix, head_prefixes, finetuned = "", (), False
    for candidate, heads in FINETUNED_LAYOUTS:
        if any(k.startswith(candidate) for k in state):
            prefix, head_prefixes, finetuned = candidate, heads, True
            break
    encoder = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not any(k.startswith("feature_extractor_video.") for k in encoder):
        first = ", ".join(list(state)[:3])
        raise UpstreamError(
            f"av_hubert: {path} is not an AV-HuBERT checkpoint: it has no feature_extractor_video.* weights "
            f"(first keys: {first}); expected {EXPECTED}"
        )
    outside = [k for k in state if not k.startswith(prefix) and not k.startswith(head_prefixes)]

    if finetuned:
        w2v_args = (cfg.get("model") or {}).get("w2v_args") or {}
        model_cfg, task_cfg = w2v_args.get("model") or {}, w2v_args.get("task") or {}
    else:
        model_cfg, task_cfg = cfg.get("model") or {}, cfg.get("task") or {}
    if not model_cfg:
        log.warning("%s has no model config; assuming AV-HuBERT Base defaults", path)
    arch = _arch_from_config(model_cfg, path)
    stack = task_cfg.get("stack_order_audio", STACK_ORDER)
    if stack != STACK_ORDER or arch.audio_feat_dim != STACK_ORDER * NUM_FILTERS:
        raise UpstreamError(
            f"av_hubert: {path}: audio input is {arch.audio_feat_dim}-d with stack_order_audio {stack}; "
            f"only {NUM_FILTERS}-filter fbanks stacked ×{STACK_ORDER} are supported"
        )
    try:
        model = AVHubertModel(arch)
    except ValueError as err:
        raise UpstreamError(f"av_hubert: {path}: {err}") from err

    expected = model.state_dict()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(encoder) - optional)
    unexpected = sorted(set(encoder) - set(expected) - PRETRAINING_ONLY_KEYS) + outside
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise UpstreamError(f"av_hubert: {path} does not match the AV-HuBERT architecture its config describes: keys {'; '.join(parts)}")
    for k, ref in expected.items():
        if k in encoder and tuple(encoder[k].shape) != tuple(ref.shape):
            raise UpstreamError(
                f"av_hubert: {path}: weight {k} has shape {tuple(encoder[k].shape)}, the config implies {tuple(ref.shape)}"
            )
    model.load_state_dict({k: v for k, v in encoder.items() if k in expected}, strict=False)
    return LoadedCheckpoint(model.eval(), finetuned, bool(task_cfg.get("normalize", True)))


# --------------------------------------------------------------------------- the upstream


@register
class AVHubert(BatchedUpstream):
    """AV-HuBERT from a fairseq checkpoint: tracks audio, video and fusion, L+1 layers × D at 25 Hz."""

    name = "av_hubert"
    sample_rate = SAMPLE_RATE
    video_fps = FPS

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu", video_crop: str = "center") -> None:
        if video_crop not in VIDEO_CROPS:
            raise UpstreamError(f"av_hubert: unknown video crop {video_crop!r}; choose one of: {', '.join(VIDEO_CROPS)}")
        if checkpoint is None:
            raise UpstreamError(
                "av_hubert needs --checkpoint PATH to a released fairseq checkpoint, e.g. base_lrs3_iter5.pt "
                f"(AV-HuBERT Base, LRS3): download it from {RELEASE_PAGE} (accepting its license), save it "
                "anywhere (e.g. ~/checkpoints/base_lrs3_iter5.pt) and pass that path"
            )
        super().__init__(Path(checkpoint), device)
        self.video_crop = video_crop
        # the optional landmark model is checked before the (large) checkpoint is read
        self.mouth = MouthCropper(self.device) if video_crop == "mouth" else None
        loaded = load_checkpoint(self.checkpoint)
        self.arch, self.finetuned, self.normalize = loaded.model.arch, loaded.finetuned, loaded.normalize
        self.model = loaded.model.to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        log.info(
            "av_hubert: %d layers × %d from %s%s",
            self.arch.encoder_layers,
            self.arch.encoder_embed_dim,
            self.checkpoint,
            " (fine-tuned)" if self.finetuned else "",
        )

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        info = TrackInfo(self.arch.encoder_layers + 1, self.arch.encoder_embed_dim, FPS)
        return {t: info for t in TRACKS}

    @property
    def mouth_fallbacks(self) -> int:
        """Clips so far whose video had no face in any frame and got the centre crop (mouth crop only)."""
        return self.mouth.fallbacks if self.mouth is not None else 0

    def notes(self) -> list[str]:
        if self.mouth is None or not self.mouth.fallbacks:
            return []
        return [f"--video-crop mouth: {self.mouth.fallbacks} of {self.mouth.clips} clips showed no face in any searched "
                "frame and got the centre crop instead"]

    def config(self) -> dict[str, Any]:
        extra: dict[str, Any] = {"mouth_crop": self.mouth.describe()} if self.mouth is not None else {}
        return {
            "architecture": asdict(self.arch),
            "finetuned": self.finetuned,
            "crop": self.video_crop,
            **extra,
            "modality_zeroing": "feature_extractor_output",
            "layers": "transformer input after pos_conv, then each layer output (final layer norm on the last when layer_norm_first)",
            "preprocessing": {
                "audio": {
                    "sample_rate": SAMPLE_RATE,
                    "fbank": "python_speech_features.logfbank",
                    "num_filters": NUM_FILTERS,
                    "win_sec": WIN_SEC,
                    "step_sec": STEP_SEC,
                    "nfft": NFFT,
                    "preemph": PREEMPH,
                    "stack_order": STACK_ORDER,
                    "layer_norm": self.normalize,
                    "length": "trimmed or zero-padded to the video frame count",
                },
                "video": {
                    "fps": FPS,
                    "gray": list(GRAY),
                    "scale": 1 / 255,
                    "crop_size": CROP,
                    "mean": IMAGE_MEAN,
                    "std": IMAGE_STD,
                },
            },
        }

    def needs(self, tracks: list[str]) -> tuple[int | None, float | None]:
        wants_audio = any(t in ("audio", "fusion") for t in tracks)
        return (SAMPLE_RATE if wants_audio else None), FPS

    def _run(
        self, tracks: list[str], clips: list[tuple[torch.Tensor | None, torch.Tensor | None]]
    ) -> list[dict[str, list[torch.Tensor]]]:
        """Per clip and track, the list of [T_i, D] layer outputs. Each front end runs once for
        all tracks that use it; the other modality's features are zeros. Clips are padded: padded
        frames are zero in the normalised domain, zeroed again before the positional convolution
        and masked as attention keys, so a clip's features do not depend on its batch mates."""
        uses_audio, uses_video = self.check_inputs(tracks, clips)
        audio_in: list[torch.Tensor] = []
        video_in: list[torch.Tensor] = []
        lengths: list[int] = []
        for audio, video in clips:
            num_frames = int(video.shape[0]) if video is not None else None
            if num_frames == 0:
                raise ValueError("clip has no video frames")
            if uses_audio:
                assert audio is not None
                audio_in.append(audio_features(audio.detach().cpu().numpy(), num_frames, self.normalize))
            if uses_video:
                assert video is not None
                video_in.append(video_features(video, self.mouth))
            lengths.append(num_frames if num_frames is not None else len(audio_in[-1]))

        b, t_max = len(clips), max(lengths)
        feats_audio = feats_video = None
        if uses_audio:
            batch = torch.zeros(b, t_max, STACK_ORDER * NUM_FILTERS, device=self.device)
            for i, a in enumerate(audio_in):
                batch[i, : len(a)] = a.to(self.device)
            feats_audio = self.model.feature_extractor_audio(batch)
        if uses_video:
            batch = torch.zeros(b, 1, t_max, CROP, CROP, device=self.device)
            for i, v in enumerate(video_in):
                batch[i, 0, : len(v)] = v.to(self.device)
            feats_video = self.model.feature_extractor_video(batch)
        mask = None
        if min(lengths) < t_max:
            mask = torch.arange(t_max, device=self.device)[None, :] >= torch.tensor(lengths, device=self.device)[:, None]

        out: list[dict[str, list[torch.Tensor]]] = [{} for _ in clips]
        for track in tracks:
            states = self.model.encode(
                feats_audio if track in ("audio", "fusion") else None,
                feats_video if track in ("video", "fusion") else None,
                mask,
            )
            for i, t in enumerate(lengths):
                out[i][track] = [s[i, :t] for s in states]
        return out
