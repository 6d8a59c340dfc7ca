"""FBANK baseline: Kaldi log-mel filterbank with deltas, exactly as the reference toolkit."""

from __future__ import annotations

from typing import Any

import torch
import torchaudio

from avsuperb.extract.upstreams.base import TrackInfo, Upstream, UpstreamError, register

NUM_MEL_BINS = 80
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
DELTA_ORDER = 2
DELTA_WINDOW = 5


def fbank_features(wave: torch.Tensor, sample_rate: int = 16000) -> torch.Tensor:
    """[S] waveform in [-1, 1] -> [T, 240]: log fbank, Δ and ΔΔ (window 5), no CMVN."""
    if wave.numel() < int(sample_rate * FRAME_LENGTH_MS / 1000):
        raise ValueError(f"audio of {wave.numel()} samples is shorter than one {FRAME_LENGTH_MS:g} ms frame")
    feats = torchaudio.compliance.kaldi.fbank(
        wave.float().view(1, -1),
        sample_frequency=sample_rate,
        num_mel_bins=NUM_MEL_BINS,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        use_log_fbank=True,
        dither=0.0,
    )
    out = [feats]
    for _ in range(DELTA_ORDER):
        out.append(torchaudio.functional.compute_deltas(out[-1].T.unsqueeze(0), win_length=DELTA_WINDOW)[0].T)
    return torch.cat(out, dim=-1)


@register
class Fbank(Upstream):
    """Audio only, one layer of 240 dims at 100 Hz."""

    name = "fbank"
    sample_rate = 16000
    video_fps = None

    def __init__(self, checkpoint=None, device: str = "cpu") -> None:
        if checkpoint is not None:
            raise UpstreamError("fbank is a handcrafted feature and takes no --checkpoint")
        super().__init__(None, device)

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        return {"audio": TrackInfo(1, NUM_MEL_BINS * (1 + DELTA_ORDER), 1000.0 / FRAME_SHIFT_MS)}

    def config(self) -> dict[str, Any]:
        return {
            "num_mel_bins": NUM_MEL_BINS,
            "frame_length_ms": FRAME_LENGTH_MS,
            "frame_shift_ms": FRAME_SHIFT_MS,
            "delta_order": DELTA_ORDER,
            "delta_window": DELTA_WINDOW,
            "cmvn": False,
        }

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        assert audio is not None
        return [fbank_features(audio, self.sample_rate)]
