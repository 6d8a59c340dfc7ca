"""A complete upstream plug-in, used straight from this file (nothing in avsuperb is changed):

    avsuperb-extract --model examples/my_upstream.py:MyUpstream --dataset synthetic --out x.zarr
    avsuperb-probe --cache x.zarr --task er

Two layers of 40 dims at 100 Hz on the audio track: layer 0 is the 40-band log-mel spectrum
(25 ms Hann windows, 10 ms hop), layer 1 the first 20 MFCCs (orthonormal DCT of layer 0) and their
deltas. The probe's learned weight per layer then says which view the task prefers.

An upstream is a subclass of `avsuperb.extract.upstreams.Upstream` that declares what to decode
(`sample_rate` for audio, `video_fps` for video), which tracks it offers (`tracks`: per track a
`TrackInfo(num_layers, dim, frame_rate)`) and returns, from `forward`, one [T, dim] tensor per
layer. The factory after the ':' is called with `checkpoint=` and `device=`; `--checkpoint` is
passed through (here there are no weights, so the store records the sha256 of this file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torchaudio

from avsuperb.extract.upstreams import TrackInfo, Upstream, UpstreamError

SAMPLE_RATE = 16000
N_MELS = 40
N_MFCC = 20
WIN, HOP = 400, 160  # 25 ms, 10 ms at 16 kHz
DELTA_WINDOW = 5


class MyUpstream(Upstream):
    """Log-mel (layer 0) and MFCC + deltas (layer 1): 2 x 40 at 100 Hz, audio only."""

    name = "my_upstream"
    sample_rate = SAMPLE_RATE
    video_fps = None

    def __init__(self, checkpoint: Path | None = None, device: str = "cpu") -> None:
        if checkpoint is not None:
            raise UpstreamError("my_upstream computes fixed features and takes no --checkpoint")
        super().__init__(None, device)
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SAMPLE_RATE, n_fft=WIN, win_length=WIN, hop_length=HOP, n_mels=N_MELS, center=True
        ).to(self.device)
        self.dct = torchaudio.functional.create_dct(N_MFCC, N_MELS, norm="ortho").to(self.device)  # [N_MELS, N_MFCC]

    @property
    def tracks(self) -> dict[str, TrackInfo]:
        return {"audio": TrackInfo(num_layers=2, dim=N_MELS, frame_rate=SAMPLE_RATE / HOP)}

    def config(self) -> dict[str, Any]:
        return {"n_mels": N_MELS, "n_mfcc": N_MFCC, "win": WIN, "hop": HOP, "delta_window": DELTA_WINDOW}

    def forward(self, track: str, audio: torch.Tensor | None, video: torch.Tensor | None) -> list[torch.Tensor]:
        if track != "audio" or audio is None:
            raise ValueError(f"my_upstream offers the audio track only and needs audio (asked for {track!r})")
        if audio.numel() < WIN:
            raise ValueError(f"audio of {audio.numel()} samples is shorter than one {WIN}-sample window")
        log_mel = torch.log(self.mel(audio.float()) + 1e-6).T  # [T, N_MELS]
        mfcc = log_mel @ self.dct  # [T, N_MFCC]
        delta = torchaudio.functional.compute_deltas(mfcc.T.unsqueeze(0), win_length=DELTA_WINDOW)[0].T
        return [log_mel, torch.cat([mfcc, delta], dim=-1)]
