"""MAViL (ViT-B audio and video encoders plus fusion blocks) from a checkpoint in the layout the
AV-SUPERB reference loads, preprocessed as the reference does, with audio, video and fusion tracks.

Checkpoint: a torch file holding {"model": state dict} (MAE-style training checkpoints; the
reference does `torch.load(...)["model"]` and `load_state_dict(strict=True)`), with the names of
the reference's `VisionTransformerMM` (see mavil_model.py). The architecture is read from the
weights' shapes; the variant from what is there: the AudioSet-2M fine-tuned model (Table 2) has
3 fusion blocks, `fc_norm_av` and the classifier `head_av` (ignored); the self-supervised model
(Table 1) has 2: AV-SUPERB's Table 1 counts 187M parameters for MAViL's fusion track = 86M
(audio) + 87M (video) + two 7.1M ViT-B blocks (the pretrained checkpoint itself is unverified).
The authors have released no code or weights (github.com/facebookresearch/MAViL: "will be
available soon"); the reference's `mavil_base` downloads a Google Drive file (RELEASE below).

Preprocessing (roger-tseng/av-superb, upstream_models/mavil/expert.py):

- audio: waveform minus its mean; torchaudio's Kaldi fbank (htk_compat, Hanning window, no energy,
  no dither, 25 ms / 10 ms, 128 mel bins) at 16 kHz; zero-padded or cut to 1024 frames (10.24 s);
  then (x − (−4.2677393)) / (2 · 4.5689974), the AudioSet statistics the reference's AudioSet
  dataset passes for MAViL (its expert's fallback, per-clip statistics, is what its own comment
  says costs 6% mAP). The reference computes the fbank at the container's native sample rate
  (44.1/48 kHz, so mel bins up to 22-24 kHz instead of MAViL's 8 kHz): not reproduced, we decode
  at 16 kHz as MAViL (an AudioMAE derivative) was trained.
- video: decoded at 2 fps; the first 8 frames (4 s), or, for shorter clips, the frames repeated
  end to end until there are 8 (the reference's `video.repeat`); RGB ÷ 255; bilinear resize to
  224×224 without antialiasing (aspect ratio not kept; torchvision's tensor `Resize` of the
  reference's era); ImageNet mean/std.

Tracks and layers (the reference's `*_feats`; for a clip that fills both windows, the mean of our
frames is exactly the reference's pooled feature):

- `audio`, `video`: depth + 1 = 13 layers × 768: patch embedding + positions (CLS prepended), then
  each block's output, CLS dropped (no final norm: the model is global-pooled).
- `fusion`: depth_av + 1 layers × 1536 (3 pretrained, 4 fine-tuned): the concatenation of the two
  encoders' outputs, then each fusion block's output, each as [mean of audio tokens, mean of
  video tokens]; the fine-tuned model's last layer is `fc_norm_av` of that.

Frames (the store keeps ≤ ceil(duration × frame_rate) + 2 per clip; utterance tasks mean-pool):

- audio: patch tokens in the model's time-major order (8 frequency bands per 160 ms step), so
  frame_rate 50 is a token rate (6.25 time steps/s × 8), the sequence the reference's ASR
  head read (`audio_seq_feats`). Only time steps made wholly of the clip's frames are kept
  (floor(n_frames / 16)); those of the zero padding are dropped (the reference mean-pools all 512).
- video: one frame per tubelet time step (2 frames, 1 s), the mean over its 14×14 tokens:
  1 Hz, at most 4 (the first 4 s); for clips under 4 s only the steps that hold a decoded
  frame, not a repeat. The mean over the frames is the mean over those steps' tokens.
- fusion: on the audio frames: [audio token, mean of the kept video tokens] (so their mean is the
  reference's pooled fusion feature); for `fc_norm_av` every frame is normalised with the
  statistics of the clip's pooled vector, so the frames' mean is exactly fc_norm_av(pooled).
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio

from avsuperb.extract.upstreams.base import BatchedUpstream, TrackInfo, UpstreamError, register
from avsuperb.extract.upstreams.checkpoint import read_checkpoint
from avsuperb.extract.upstreams.mavil_model import MavilArch, MavilModel

log = logging.getLogger(__name__)

NAME = "mavil"
AUTHORS_REPO = "https://github.com/facebookresearch/MAViL"
RELEASE = "https://drive.google.com/uc?id=160pJQDQGlNwIb5xWlSc73A713I4uXCtg"  # the reference's hubconf `mavil_base`
EXPECTED = (
    "a MAViL ViT-B checkpoint: a torch file holding {'model': state dict} with VisionTransformerMM weight names "
    f"(the AV-SUPERB reference's mavil_base: {RELEASE})"
)

# audio
SAMPLE_RATE = 16000
NUM_MEL_BINS = 128
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
TARGET_FRAMES = 1024
FBANK_MEAN = -4.2677393  # AudioSet statistics (AudioMAE / the reference's AudioSet dataset)
FBANK_STD = 4.5689974
AUDIO_PATCH = (16, 16)
MIN_SAMPLES = int(SAMPLE_RATE * FRAME_LENGTH_MS / 1000) + (AUDIO_PATCH[0] - 1) * int(SAMPLE_RATE * FRAME_SHIFT_MS / 1000)
# video
FPS = 2.0
NUM_FRAMES = 8
IMAGE_SIZE = 224
TUBELET = (2, 16, 16)
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)

TRACKS = ("audio", "video", "fusion")
AUDIO_TOKEN_RATE = 1000.0 / (FRAME_SHIFT_MS * AUDIO_PATCH[0]) * (NUM_MEL_BINS // AUDIO_PATCH[1])  # 50 tokens/s
VIDEO_STEP_RATE = FPS / TUBELET[0]  # 1 tubelet step/s

# Weights a checkpoint may hold that the features do not use: the fine-tuned classifier, and
# the MAE decoders / mask tokens of a pretraining checkpoint.
IGNORED_PREFIXES = ("head_av.", "decoder", "mask_token")
_HEADS = {384: 6, 768: 12, 1024: 16, 1280: 16}  # ViT-S/B/L/H


# --------------------------------------------------------------------------- preprocessing


def audio_features(wave: torch.Tensor) -> tuple[torch.Tensor, int]:
    """16 kHz waveform [S] → (normalised fbank [1024, 128], fbank frames that come from the clip, ≤ 1024)."""
    wave = wave.detach().float().cpu().reshape(-1)
    if wave.numel() < MIN_SAMPLES:
        raise ValueError(
            f"audio of {wave.numel()} samples is shorter than one MAViL time patch "
            f"({MIN_SAMPLES} samples = {MIN_SAMPLES / SAMPLE_RATE:.3f} s at {SAMPLE_RATE} Hz)"
        )
    fbank = torchaudio.compliance.kaldi.fbank(
        (wave - wave.mean())[None],
        htk_compat=True,
        sample_frequency=SAMPLE_RATE,
        use_energy=False,
        window_type="hanning",
        num_mel_bins=NUM_MEL_BINS,
        dither=0.0,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
    )
    n = min(fbank.shape[0], TARGET_FRAMES)
    fitted = torch.zeros(TARGET_FRAMES, NUM_MEL_BINS)
    fitted[:n] = fbank[:n]
    return (fitted - FBANK_MEAN) / (2 * FBANK_STD), n


def video_features(video: torch.Tensor) -> tuple[torch.Tensor, int]:
    """uint8 RGB [T, H, W, 3] at 2 fps → (normalised [3, 8, 224, 224], frames that are not repeats, ≤ 8)."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video must be [T, H, W, 3] RGB frames, got shape {tuple(video.shape)}")
    t = int(video.shape[0])
    if t == 0:
        raise ValueError("clip has no video frames")
    if t < NUM_FRAMES:
        video = video.repeat(NUM_FRAMES // t + 1, 1, 1, 1)
    x = video[:NUM_FRAMES].permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", align_corners=False, antialias=False)
    mean = x.new_tensor(IMAGE_MEAN)[:, None, None]
    std = x.new_tensor(IMAGE_STD)[:, None, None]
    return ((x - mean) / std).transpose(0, 1), min(t, NUM_FRAMES)


# --------------------------------------------------------------------------- checkpoint


@dataclass(frozen=True)
class LoadedMavil:
    model: MavilModel  # with the checkpoint's weights, in eval mode, on the CPU
    variant: str  # "pretrained" or "finetuned"


def _count(state: dict[str, Any], prefix: str) -> int:
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.")
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def _shape(state: dict[str, Any], key: str) -> tuple[int, ...]:
    return tuple(state[key].shape)


def _describe(obj: Any) -> str:
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:5]))
        return f"a dict with keys {keys}" + (", ..." if len(obj) > 5 else "")
    return f"a {type(obj).__name__}"


def arch_from_state(state: dict[str, torch.Tensor], path: Path) -> MavilArch:
    """The architecture the weights' shapes imply, with the reference's input sizes; UpstreamError when they do not fit."""
    where = f"{NAME}: {path}"
    for key in ("cls_token", "patch_embed.proj.weight", "patch_embed_v.proj.weight", "blocks.0.mlp.fc1.weight"):
        if key not in state:
            first = ", ".join(list(state)[:3])
            raise UpstreamError(f"{where} is not a MAViL checkpoint: it has no {key} (first keys: {first}); expected {EXPECTED}")
    d = _shape(state, "cls_token")[-1]
    audio_w, video_w = _shape(state, "patch_embed.proj.weight"), _shape(state, "patch_embed_v.proj.weight")
    if len(audio_w) != 4 or audio_w[:2] != (d, 1) or len(video_w) != 5 or video_w[:2] != (d, 3):
        raise UpstreamError(
            f"{where}: patch embeddings of shapes {audio_w} and {video_w} are not MAViL's (Conv2d 1→{d}, Conv3d 3→{d})"
        )
    depth_av = _count(state, "blocks_av")
    if depth_av == 0:
        raise UpstreamError(f"{where} has no fusion blocks (blocks_av.*); only MAViL with audio-video fusion is supported")
    arch = MavilArch(
        embed_dim=d,
        depth=_count(state, "blocks"),
        num_heads=_HEADS.get(d) or (d // 64 if d % 64 == 0 else 1),
        mlp_hidden=_shape(state, "blocks.0.mlp.fc1.weight")[0],
        depth_av=depth_av,
        fc_norm_av="fc_norm_av.weight" in state,
        audio_size=(TARGET_FRAMES, NUM_MEL_BINS),
        audio_patch=(audio_w[2], audio_w[3]),
        video_frames=NUM_FRAMES,
        video_size=IMAGE_SIZE,
        video_patch=(video_w[2], video_w[3], video_w[4]),
    )
    if arch.audio_patch != AUDIO_PATCH or arch.video_patch != TUBELET:
        raise UpstreamError(
            f"{where}: patches {arch.audio_patch} (audio) and {arch.video_patch} (video) are not MAViL's {AUDIO_PATCH} and {TUBELET}"
        )
    for key, n, what in (
        ("pos_embed", arch.num_audio_patches, f"a {TARGET_FRAMES}×{NUM_MEL_BINS} fbank"),
        ("pos_embed_v", arch.num_video_patches, f"{NUM_FRAMES} frames of {IMAGE_SIZE}×{IMAGE_SIZE}"),
    ):
        if key in state and _shape(state, key) != (1, n + 1, d):
            raise UpstreamError(f"{where}: {key} has shape {_shape(state, key)}; MAViL on {what} needs (1, {n + 1}, {d})")
    return arch


def load_checkpoint(path: Path) -> LoadedMavil:
    """Read a MAViL checkpoint and check every weight against the architecture its shapes imply;
    UpstreamError with one line when it is anything else."""
    path = Path(path)
    obj = read_checkpoint(path, NAME, expected=EXPECTED)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        state = obj["model"]
    elif isinstance(obj, dict) and "cls_token" in obj:  # a bare state dict
        state = obj
    else:
        raise UpstreamError(
            f"{NAME}: {path} holds {_describe(obj)}, not a checkpoint with a 'model' state dict; expected {EXPECTED}"
        )
    bad = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise UpstreamError(f"{NAME}: {path}: {len(bad)} state dict entries are not tensors (e.g. {bad[0]}); expected {EXPECTED}")
    arch = arch_from_state(state, path)
    try:
        model = MavilModel(arch)
    except ValueError as err:
        raise UpstreamError(f"{NAME}: {path}: {err}") from None

    expected = model.state_dict()
    used = {k: v for k, v in state.items() if not k.startswith(IGNORED_PREFIXES)}
    missing, unexpected = sorted(set(expected) - set(used)), sorted(set(used) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        raise UpstreamError(f"{NAME}: {path} does not match the MAViL architecture its weights imply: keys {'; '.join(parts)}")
    for k, ref in expected.items():
        if tuple(used[k].shape) != tuple(ref.shape):
            have, want = tuple(used[k].shape), tuple(ref.shape)
            raise UpstreamError(f"{NAME}: {path}: weight {k} has shape {have}, the architecture implies {want}")
    model.load_state_dict({k: v.float() for k, v in used.items()}, strict=True)
    finetuned = arch.fc_norm_av or any(k.startswith("head_av.") for k in state)
    return LoadedMavil(model.eval(), "finetuned" if finetuned else "pretrained")


# --------------------------------------------------------------------------- the upstream


def _jsonable(obj: Any) -> Any:
    """Tuples → lists, so the config compares equal to its JSON round trip (the store's resume check)."""
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


@register
class Mavil(BatchedUpstream):
    """MAViL from a checkpoint: tracks audio and video (13 × 768) and fusion (3 or 4 × 1536)."""

    name = NAME
    sample_rate = SAMPLE_RATE
    video_fps = FPS

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu") -> None:
        if checkpoint is None:
            raise UpstreamError(
                f"{NAME} needs --checkpoint PATH to a MAViL ViT-B checkpoint ({{'model': state dict}}, VisionTransformerMM "
                f"names): the authors have released none ({AUTHORS_REPO}); the AV-SUPERB reference's mavil_base downloads "
                f"{RELEASE} (its AudioSet-2M fine-tuned variant is mavil_as_pt_ft_a+v.pth); save it anywhere and pass that path"
            )
        super().__init__(Path(checkpoint), device)
        loaded = load_checkpoint(self.checkpoint)
        self.arch, self.variant = loaded.model.arch, loaded.variant
        self.model = loaded.model.to(self.device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        a = self.arch
        log.info("%s: %s, %d + %d fusion blocks × %d from %s", NAME, self.variant, a.depth, a.depth_av, a.embed_dim, self.checkpoint)

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        d = self.arch.embed_dim
        return {
            "audio": TrackInfo(self.arch.depth + 1, d, AUDIO_TOKEN_RATE),
            "video": TrackInfo(self.arch.depth + 1, d, VIDEO_STEP_RATE),
            "fusion": TrackInfo(self.arch.depth_av + 1, 2 * d, AUDIO_TOKEN_RATE),
        }

    def config(self) -> dict[str, Any]:
        return _jsonable(
            {
                "architecture": asdict(self.arch),
                "variant": self.variant,
                "layers": {
                    "audio": "patch embedding + positions, then each block's output; CLS dropped; no final norm",
                    "video": "patch embedding + positions, then each block's output; CLS dropped; no final norm",
                    "fusion": "concatenated encoder outputs, then each fusion block's output, as [audio pool, video pool]"
                    + ("; fc_norm_av on the last" if self.arch.fc_norm_av else ""),
                },
                "frames": {
                    "audio": "patch tokens, time-major (8 frequency bands per 160 ms), whole time patches of the clip only",
                    "video": "per tubelet time step (1 s), mean over its spatial tokens; steps with a decoded frame only",
                    "fusion": "per audio token: [audio token, mean of the kept video tokens]; "
                    "fc_norm_av with the pooled vector's statistics",
                },
                "preprocessing": {
                    "audio": {
                        "sample_rate": SAMPLE_RATE,
                        "fbank": "torchaudio.compliance.kaldi.fbank, htk_compat, hanning, no energy, no dither",
                        "remove_mean": True,
                        "num_mel_bins": NUM_MEL_BINS,
                        "frame_length_ms": FRAME_LENGTH_MS,
                        "frame_shift_ms": FRAME_SHIFT_MS,
                        "target_frames": TARGET_FRAMES,
                        "fit": "zero-pad or cut the fbank",
                        "normalize": {"mean": FBANK_MEAN, "std": FBANK_STD, "formula": "(x - mean) / (2 * std)"},
                    },
                    "video": {
                        "fps": FPS,
                        "num_frames": NUM_FRAMES,
                        "short_clips": "frames repeated end to end",
                        "size": IMAGE_SIZE,
                        "resize": "bilinear, no antialias, aspect not kept",
                        "mean": IMAGE_MEAN,
                        "std": IMAGE_STD,
                    },
                },
            }
        )

    def _run(
        self, tracks: list[str], clips: list[tuple[torch.Tensor | None, torch.Tensor | None]]
    ) -> list[dict[str, list[torch.Tensor]]]:
        """Per clip and track, the list of [T_i, D] layer outputs; each encoder runs once for all
        tracks. Every input is padded or cut to the model's window, as the reference does for each
        clip alone, so clips batch without masks and do not depend on their batch mates."""
        uses_audio, uses_video = self.check_inputs(tracks, clips)
        fbanks, frames, audio_tokens, video_steps = [], [], [], []
        bands = NUM_MEL_BINS // AUDIO_PATCH[1]
        for audio, video in clips:
            if uses_audio:
                assert audio is not None
                fbank, n = audio_features(audio)
                fbanks.append(fbank)
                audio_tokens.append((n // AUDIO_PATCH[0]) * bands)
            if uses_video:
                assert video is not None
                x, n = video_features(video)
                frames.append(x)
                video_steps.append(math.ceil(n / TUBELET[0]))

        model, arch = self.model, self.arch
        audio_states = video_states = None
        if uses_audio:
            audio_states = model.encode_audio(torch.stack(fbanks)[:, None].to(self.device))
        if uses_video:
            video_states = model.encode_video(torch.stack(frames).to(self.device))
        grid_t, grid_h, grid_w = arch.video_grid

        def video_steps_of(tokens: torch.Tensor, steps: int) -> torch.Tensor:  # [N_video, D] → [steps, D]
            return tokens.reshape(grid_t, grid_h * grid_w, -1)[:steps].mean(dim=1)

        out: list[dict[str, list[torch.Tensor]]] = [{} for _ in clips]
        for i in range(len(clips)):
            if "audio" in tracks:
                assert audio_states is not None
                out[i]["audio"] = [s[i, 1 : 1 + audio_tokens[i]] for s in audio_states]
            if "video" in tracks:
                assert video_states is not None
                out[i]["video"] = [video_steps_of(s[i, 1:], video_steps[i]) for s in video_states]
        if "fusion" in tracks:
            assert audio_states is not None and video_states is not None
            fused = model.fuse(audio_states[-1], video_states[-1])
            n_audio = arch.num_audio_patches
            for i in range(len(clips)):
                layers = []
                for s in fused:
                    a = s[i, 1 : 1 + audio_tokens[i]]
                    v = video_steps_of(s[i, n_audio + 2 :], video_steps[i]).mean(dim=0)
                    layers.append(torch.cat([a, v.expand(len(a), -1)], dim=1))
                if model.fc_norm_av is not None:
                    layers[-1] = _normalize_like_pooled(layers[-1], model.fc_norm_av)
                out[i]["fusion"] = layers
        return out


def _normalize_like_pooled(frames: torch.Tensor, norm: torch.nn.LayerNorm) -> torch.Tensor:
    """`norm` applied to every frame with the mean and variance of the frames' mean vector, so
    that the mean of the result is exactly norm(mean of frames) (the reference's pooled feature)."""
    pooled = frames.mean(dim=0)
    mean, var = pooled.mean(), pooled.var(unbiased=False)
    return (frames - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
