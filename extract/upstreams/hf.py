"""Hugging Face transformers models from a local directory: `--model hf --checkpoint DIR`.

DIR is what `save_pretrained` writes (config.json, model.safetensors or pytorch_model*.bin,
preprocessor_config.json); it is read with `local_files_only=True`, so nothing is downloaded. The
model's own feature extractor / image processor from DIR prepares the input (sampling rate,
normalisation, mel or fbank settings, image size), and every hidden state
(`output_hidden_states=True`: the embedding output, then each layer's output) is one layer of the
model's single track. What a "frame" is, per family:

- `wav2vec2`, `hubert`, `wavlm`, `data2vec-audio` (audio): one frame per conv-extractor step,
  sampling_rate / prod(conv_stride) = 50 Hz for the released models; the whole clip in one pass
  (relative positions: no window).
- `whisper` (audio, encoder only): the encoder runs on the log-mel features of fixed windows of
  chunk_length seconds (30 s); one frame per 2 mel hops, 50 Hz. A clip is cut into consecutive
  windows, each padded by the feature extractor as Whisper expects; each window's output is cropped
  to the frames that start inside the clip's samples, and the windows are concatenated.
- `audio-spectrogram-transformer` (audio): one frame per time patch, the mean over the frequency
  patches of that time step (the CLS and distillation tokens are dropped); time_stride fbank frames
  of 10 ms apart, 10 Hz for the released models. A clip is cut into consecutive windows of exactly
  the time patches the model's max_length holds (10.1 s for AudioSet's 1024 frames), each
  padded/normalised by the feature extractor, cropped to the patches that start inside the clip.
- `videomae` (video): frames decoded at `video_fps` (default 7.5 fps, VideoMAE's Kinetics
  sampling: every 4th frame at 30 fps), cut into consecutive windows of the model's num_frames; one
  frame per tubelet, the mean over the spatial patches of that tubelet (fps / tubelet_size Hz). The
  last window is filled by repeating its last frame and cropped back to the clip's tubelets.
- `timesformer` (video): as VideoMAE with a tubelet of one frame (fps Hz); the CLS token is dropped,
  the mean over the spatial patches of each frame.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avsuperb.extract.upstreams.base import TrackInfo, Upstream, UpstreamError, register
from avsuperb.extract.upstreams.checkpoint import one_line

log = logging.getLogger(__name__)

SPEECH_SSL = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")
SUPPORTED = (*SPEECH_SSL, "whisper", "audio-spectrogram-transformer", "videomae", "timesformer")
WEIGHT_SUFFIXES = (".safetensors", ".bin")
DEFAULT_VIDEO_FPS = 7.5
AST_SHIFT_MS, AST_WINDOW_MS = 10, 25  # the AST feature extractor's Kaldi fbank


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise UpstreamError("hf needs the transformers package: pip install avsuperb[hf]") from None
    return transformers


def weight_files(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def weights_sha256(files: list[Path]) -> str:
    """Over the weight files in name order: each name, then its bytes' sha256."""
    digest = hashlib.sha256()
    for path in files:
        inner = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                inner.update(block)
        digest.update(path.name.encode() + b"\0" + inner.hexdigest().encode())
    return digest.hexdigest()


class _Family(ABC):
    """How one model family turns a clip into its hidden states, and what a frame is."""

    track: str
    frame: str  # what one output frame is
    window: str  # how clips longer than the model's input are handled

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device) -> None:
        self.cfg, self.model, self.pre, self.device = cfg, model, pre, device

    @property
    @abstractmethod
    def frame_rate(self) -> float: ...

    @property
    def num_layers(self) -> int:
        return int(self.cfg.num_hidden_layers) + 1

    @property
    def dim(self) -> int:
        return int(self.cfg.hidden_size)

    def settings(self) -> dict[str, Any]:
        return {}

    @abstractmethod
    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One clip's input (audio [S] float or video [T, H, W, 3] uint8) -> one [T', D] per hidden state."""

    def hidden_states(self, **inputs: Any) -> tuple[torch.Tensor, ...]:
        out = self.model(**{k: v.to(self.device) for k, v in inputs.items()}, output_hidden_states=True)
        states = tuple(out.hidden_states)
        if len(states) != self.num_layers:
            raise UpstreamError(f"hf: the model returned {len(states)} hidden states; its config implies {self.num_layers}")
        return states


class _Audio(_Family):
    track = "audio"

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device) -> None:
        super().__init__(tf, root, cfg, model, pre, device)
        self.sample_rate = int(pre.sampling_rate)

    def _features(self, wave: np.ndarray) -> dict[str, torch.Tensor]:
        return dict(self.pre(wave, sampling_rate=self.sample_rate, return_tensors="pt"))


class _SpeechSSL(_Audio):
    frame = "one conv feature-extractor step"
    window = "the whole clip in one pass (no window)"

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device) -> None:
        super().__init__(tf, root, cfg, model, pre, device)
        self.hop = math.prod(int(s) for s in cfg.conv_stride)
        rf = 1
        for k, s in reversed(list(zip(cfg.conv_kernel, cfg.conv_stride))):
            rf = (rf - 1) * int(s) + int(k)
        self.receptive_field = rf

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def settings(self) -> dict[str, Any]:
        return {"conv_stride": [int(s) for s in self.cfg.conv_stride], "do_normalize": bool(getattr(self.pre, "do_normalize", False))}

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        if x.numel() < self.receptive_field:
            raise ValueError(f"audio of {x.numel()} samples is shorter than the model's {self.receptive_field}-sample receptive field")
        states = self.hidden_states(**self._features(x.cpu().numpy()))
        return [h[0] for h in states]


class _Whisper(_Audio):
    frame = "one encoder position (two log-mel hops)"

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device) -> None:
        super().__init__(tf, root, cfg, model, pre, device)
        self.hop = int(pre.hop_length) * int(model.conv2.stride[0])
        self.window_samples = int(pre.n_samples)
        self.positions = int(cfg.max_source_positions)
        if self.window_samples // self.hop != self.positions:
            raise UpstreamError(
                f"hf: {root} has a feature extractor with {self.window_samples}-sample windows ({self.window_samples // self.hop} "
                f"encoder positions) but a Whisper encoder of max_source_positions={self.positions}"
            )
        self.window = f"consecutive {self.window_samples / self.sample_rate:g} s windows, each cropped to the clip's samples"

    @property
    def num_layers(self) -> int:
        return int(self.cfg.encoder_layers) + 1

    @property
    def dim(self) -> int:
        return int(self.cfg.d_model)

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def settings(self) -> dict[str, Any]:
        return {"num_mel_bins": int(self.pre.feature_size), "hop_length": int(self.pre.hop_length), "window_samples": self.window_samples}

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        wave = x.cpu().numpy()
        if len(wave) == 0:
            raise ValueError("the clip has no audio samples")
        parts: list[list[torch.Tensor]] = []
        for start in range(0, len(wave), self.window_samples):
            chunk = wave[start : start + self.window_samples]
            n = min(self.positions, max(1, math.ceil(len(chunk) / self.hop)))
            states = self.hidden_states(input_features=self._features(chunk)["input_features"])
            parts.append([h[0, :n] for h in states])
        return [torch.cat(per_layer) for per_layer in zip(*parts)]


class _AST(_Audio):
    frame = "one time patch: the mean over its frequency patches (CLS and distillation tokens dropped)"

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device) -> None:
        super().__init__(tf, root, cfg, model, pre, device)
        for key in ("num_mel_bins", "max_length"):
            if int(getattr(pre, key)) != int(getattr(cfg, key)):
                raise UpstreamError(f"hf: {root}'s feature extractor has {key}={getattr(pre, key)} but the model {getattr(cfg, key)}")
        p = int(cfg.patch_size)
        self.f_dim = (int(cfg.num_mel_bins) - p) // int(cfg.frequency_stride) + 1
        self.t_dim = (int(cfg.max_length) - p) // int(cfg.time_stride) + 1
        self.shift = self.sample_rate * AST_SHIFT_MS // 1000
        self.min_samples = self.sample_rate * AST_WINDOW_MS // 1000
        self.hop = self.shift * int(cfg.time_stride)  # samples per output frame
        self.window_samples = self.t_dim * self.hop  # exactly the time patches one input holds
        self.window = f"consecutive {self.window_samples / self.sample_rate:g} s windows ({self.t_dim} time patches), each cropped to the clip's samples"

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop

    def settings(self) -> dict[str, Any]:
        return {
            "num_mel_bins": int(self.cfg.num_mel_bins), "max_length": int(self.cfg.max_length),
            "patches": [self.f_dim, self.t_dim], "time_stride": int(self.cfg.time_stride),
            "do_normalize": bool(getattr(self.pre, "do_normalize", False)),
            "mean": float(getattr(self.pre, "mean", 0.0)), "std": float(getattr(self.pre, "std", 1.0)),
        }

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        wave = x.cpu().numpy()
        if len(wave) < self.min_samples:
            raise ValueError(f"audio of {len(wave)} samples is shorter than one {AST_WINDOW_MS} ms fbank frame")
        parts: list[list[torch.Tensor]] = []
        for start in range(0, len(wave), self.window_samples):
            chunk = wave[start : start + self.window_samples]
            if len(chunk) < self.min_samples:  # a tail shorter than one fbank frame holds no patch start worth a frame
                break
            n = min(self.t_dim, math.ceil(len(chunk) / self.hop))
            states = self.hidden_states(input_values=self._features(chunk)["input_values"])
            parts.append([self.reduce(h)[:n] for h in states])
        return [torch.cat(per_layer) for per_layer in zip(*parts)]

    def reduce(self, h: torch.Tensor) -> torch.Tensor:
        """[1, 2 + F*T, D] -> [T, D]: patches are frequency-major (index f * T + t)."""
        return h[0, 2:].reshape(self.f_dim, self.t_dim, -1).mean(dim=0)


class _Video(_Family):
    track = "video"
    tubelet = 1
    special_tokens = 0

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device, fps: float) -> None:
        super().__init__(tf, root, cfg, model, pre, device)
        self.fps = float(fps)
        self.num_frames = int(cfg.num_frames)
        self.image_size = int(cfg.image_size)
        self.spatial = (self.image_size // int(cfg.patch_size)) ** 2
        self.window = (
            f"consecutive windows of {self.num_frames} frames ({self.num_frames / self.fps:g} s at {self.fps:g} fps); "
            "the last filled with its last frame, then cropped"
        )
        probe = self._pixels(np.zeros((self.num_frames, 2 * self.image_size, 2 * self.image_size, 3), np.uint8))
        want = (1, self.num_frames, int(cfg.num_channels), self.image_size, self.image_size)
        if tuple(probe.shape) != want:
            raise UpstreamError(f"hf: {root}'s image processor gives pixel values of shape {tuple(probe.shape)}; the model takes {want}")

    @property
    def frame_rate(self) -> float:
        return self.fps / self.tubelet

    def settings(self) -> dict[str, Any]:
        return {"video_fps": self.fps, "num_frames": self.num_frames, "image_size": self.image_size, "tubelet": self.tubelet}

    def _pixels(self, frames: np.ndarray) -> torch.Tensor:
        return self.pre(list(frames), return_tensors="pt")["pixel_values"]

    @abstractmethod
    def reduce(self, h: torch.Tensor) -> torch.Tensor:
        """One window's hidden state [1, tokens, D] -> [num_frames / tubelet, D]."""

    def layers(self, x: torch.Tensor) -> list[torch.Tensor]:
        video = x.cpu().numpy()
        if len(video) == 0:
            raise ValueError("the clip has no video frames")
        parts: list[list[torch.Tensor]] = []
        for start in range(0, len(video), self.num_frames):
            window = video[start : start + self.num_frames]
            n = math.ceil(len(window) / self.tubelet)
            if len(window) < self.num_frames:
                window = np.concatenate([window, np.repeat(window[-1:], self.num_frames - len(window), axis=0)])
            states = self.hidden_states(pixel_values=self._pixels(window))
            parts.append([self.reduce(h)[:n] for h in states])
        return [torch.cat(per_layer) for per_layer in zip(*parts)]


class _VideoMAE(_Video):
    frame = "one tubelet: the mean over its spatial patches"

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device, fps: float) -> None:
        self.tubelet = int(cfg.tubelet_size)
        super().__init__(tf, root, cfg, model, pre, device, fps)

    def reduce(self, h: torch.Tensor) -> torch.Tensor:
        return h[0].reshape(self.num_frames // self.tubelet, self.spatial, -1).mean(dim=1)  # time-major tokens


class _TimeSformer(_Video):
    frame = "one input frame: the mean over its spatial patches (CLS token dropped)"

    def __init__(self, tf: Any, root: Path, cfg: Any, model: Any, pre: Any, device: torch.device, fps: float) -> None:
        if cfg.attention_type not in ("divided_space_time", "joint_space_time"):
            raise UpstreamError(f"hf: TimeSformer attention_type {cfg.attention_type!r} is not supported (divided_space_time, joint_space_time)")
        super().__init__(tf, root, cfg, model, pre, device, fps)

    def reduce(self, h: torch.Tensor) -> torch.Tensor:
        return h[0, 1:].reshape(self.spatial, self.num_frames, -1).mean(dim=0)  # patch-major tokens (index p * T + t)


@register
class HuggingFace(Upstream):
    """A local Hugging Face transformers model directory: every hidden state as the layers of one track."""

    name = "hf"
    sample_rate = None
    video_fps = None

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu", video_fps: float | None = None) -> None:
        if checkpoint is None:
            raise UpstreamError(
                "hf needs --checkpoint DIR: a directory written by save_pretrained (config.json, weights, "
                f"preprocessor_config.json) of one of: {', '.join(SUPPORTED)}"
            )
        root = Path(checkpoint).expanduser()
        if root.is_file() and (root.parent / "config.json").is_file():
            root = root.parent
        cfg_file = root / "config.json"
        if not cfg_file.is_file():
            raise UpstreamError(f"hf: {root} is not a Hugging Face model directory (no config.json)")
        try:
            model_type = json.loads(cfg_file.read_text()).get("model_type")
        except (OSError, ValueError, AttributeError) as err:
            raise UpstreamError(f"hf: cannot read {cfg_file} ({one_line(err)})") from None
        if model_type not in SUPPORTED:
            raise UpstreamError(f"hf: {cfg_file} has model_type {model_type!r}; supported: {', '.join(SUPPORTED)}")
        weights = weight_files(root)
        if not weights:
            raise UpstreamError(f"hf: {root} holds no weights (*{' or *'.join(WEIGHT_SUFFIXES)})")
        if not (root / "preprocessor_config.json").is_file():
            raise UpstreamError(f"hf: {root} has no preprocessor_config.json; save the model's feature extractor or processor there too")
        tf = import_transformers()
        super().__init__(root.resolve(), device)
        self.root, self.model_type, self.weights = root.resolve(), str(model_type), weights
        video = model_type in ("videomae", "timesformer")
        try:
            cfg = tf.AutoConfig.from_pretrained(self.root, local_files_only=True)
            loader = tf.AutoProcessor if video else tf.AutoFeatureExtractor
            pre = loader.from_pretrained(self.root, local_files_only=True)
            model = tf.AutoModel.from_pretrained(self.root, config=cfg, local_files_only=True, dtype=torch.float32)
        except Exception as err:  # noqa: BLE001 - a broken directory is the user's to fix, in one line
            raise UpstreamError(f"hf: cannot load the {model_type} model in {self.root} ({one_line(err)})") from None
        pre = getattr(pre, "video_processor", None) or getattr(pre, "image_processor", None) or getattr(pre, "feature_extractor", None) or pre
        if model_type == "whisper":
            model = model.get_encoder()
        model = model.eval().requires_grad_(False).to(self.device)
        args = (tf, self.root, cfg, model, pre, self.device)
        if model_type in SPEECH_SSL:
            self.family: _Family = _SpeechSSL(*args)
        elif model_type == "whisper":
            self.family = _Whisper(*args)
        elif model_type == "audio-spectrogram-transformer":
            self.family = _AST(*args)
        else:
            fps = float(video_fps) if video_fps is not None else DEFAULT_VIDEO_FPS
            if not fps > 0:
                raise UpstreamError(f"hf: video_fps must be positive, not {video_fps}")
            self.family = (_VideoMAE if model_type == "videomae" else _TimeSformer)(*args, fps)
        if isinstance(self.family, _Audio):
            self.sample_rate = self.family.sample_rate  # type: ignore[misc]
        else:
            self.video_fps = self.family.fps  # type: ignore[misc,attr-defined]
        log.info(
            "hf: %s from %s, %s track, %d hidden states x %d at %g Hz",
            model_type, self.root, self.family.track, self.family.num_layers, self.family.dim, self.family.frame_rate,
        )

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        f = self.family
        return {f.track: TrackInfo(f.num_layers, f.dim, f.frame_rate)}

    def config(self) -> dict[str, Any]:
        f = self.family
        pre = self.root / "preprocessor_config.json"
        return {
            "model_type": self.model_type,
            "directory": str(self.root),
            "hidden_sizes": [f.dim] * f.num_layers,
            "layers": "hidden_states: the embedding output, then each layer's output",
            "frame": f.frame,
            "window": f.window,
            "preprocessor_sha256": hashlib.sha256(pre.read_bytes()).hexdigest(),
            **f.settings(),
        }

    def checkpoint_sha256(self) -> str | None:
        """Over the directory's weight files (sorted by name)."""
        return weights_sha256(self.weights)

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        if track != self.family.track:
            raise UpstreamError(f"hf: this {self.model_type} model offers only the {self.family.track!r} track, not {track!r}")
        x = audio if track == "audio" else video
        if x is None:
            raise ValueError(f"hf: the {track} track needs the {track} stream, and this clip has none")
        with torch.inference_mode():
            return self.family.layers(x)
