"""The RepLAI encoders (Mittal et al., NeurIPS 2022) for inference: the AVID-family R(2+1)D-18
video network and 9-layer spectrogram CNN audio network, with parameter names such that the
`backbone.*` part of the authors' released checkpoints loads into `RepLAIBackbone` as it is.

Layout, as in the authors' repository (HimangiM/RepLAI, models/video/avid_video.py and
models/audio/avid_audio.py, both from facebookresearch/AVID-CMA):

- `video` (R2Plus1D, depth 18) on [B, 3, T, 112, 112]: `conv1` a full 3-D stem (3×7×7 conv,
  stride (1, 2, 2), BN, ReLU, 1×3×3 max-pool stride (1, 2, 2)), then `conv2x`…`conv5x`, two
  (2+1)-D blocks each, 64→512 channels, the first block of conv3x–conv5x with stride 2 in time
  and space. Each block: spatial 1×3×3 conv, BN, ReLU, temporal 3×1×1 conv, BN, ReLU, spatial
  conv, BN, ReLU, temporal conv; then the residual (a 1×1×1 conv `res_conv`, no BN, where the
  shape changes) is added and `out_bn` and ReLU come *after* the sum. Unlike torchvision's
  R(2+1)D the intermediate width is the block's output width (no parameter-matching "midplanes")
  and the stem is not factorised. Output [B, 512, ceil(T/8), 4, 4].
- `audio` (Conv2D) on [B, 1, N, 80] log-mel frames (time, mel): `conv1` (7×7 conv stride 2, BN,
  ReLU), then `block1`…`block4` (64, 128, 256, 512 channels; stride 2 in blocks 1–3), each two
  3×3 conv–BN–ReLU layers without a residual. 9 conv layers; output [B, 512, ceil(N/16), 5].

`pool_video`/`pool_audio` are the temporal pooling the AV-SUPERB reference applies to these maps
(roger-tseng/av-superb, upstream_models/replai/replai/models/*/avid_*.py): a max over space
(frequency) and over max(1, T // 8) video / max(1, N // 128) audio adaptive time bins, one bin per
training clip length (8 frames = 0.5 s of video, 128 mel frames = 2 s of audio).

Everything here is eval-only: BatchNorm on its running statistics.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

OUT_DIM = 512
VIDEO_WINDOW = 8  # input frames per output vector (the 0.5 s, 8-frame clips RepLAI trained on)
AUDIO_WINDOW = 128  # mel frames per output vector (2 s of audio at 64 frames/s)
VIDEO_TIME_STRIDE = 8  # conv3x, conv4x, conv5x each halve time
AUDIO_TIME_STRIDE = 16  # conv1 and block1–block3 each halve time and frequency


# --------------------------------------------------------------------------- video


class BasicR2P1DBlock(nn.Module):
    """(2+1)-D residual block: two spatial+temporal conv pairs, residual added before `out_bn`."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.spt_conv1 = nn.Conv3d(in_planes, out_planes, (1, 3, 3), stride=(1, stride, stride), padding=(0, 1, 1), bias=False)
        self.spt_bn1 = nn.BatchNorm3d(out_planes)
        self.tmp_conv1 = nn.Conv3d(out_planes, out_planes, (3, 1, 1), stride=(stride, 1, 1), padding=(1, 0, 0), bias=False)
        self.tmp_bn1 = nn.BatchNorm3d(out_planes)
        self.spt_conv2 = nn.Conv3d(out_planes, out_planes, (1, 3, 3), padding=(0, 1, 1), bias=False)
        self.spt_bn2 = nn.BatchNorm3d(out_planes)
        self.tmp_conv2 = nn.Conv3d(out_planes, out_planes, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.out_bn = nn.BatchNorm3d(out_planes)
        self.res_conv: nn.Conv3d | None = None
        if in_planes != out_planes or stride != 1:
            self.res_conv = nn.Conv3d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        y = self.tmp_conv1(F.relu(self.spt_bn1(self.spt_conv1(x))))
        y = F.relu(self.tmp_bn1(y))
        y = self.tmp_conv2(F.relu(self.spt_bn2(self.spt_conv2(y))))
        residual = x if self.res_conv is None else self.res_conv(x)
        return F.relu(self.out_bn(y + residual))


class R2Plus1D18(nn.Module):
    """AVID's R(2+1)D-18 without its pooling: [B, 3, T, H, W] → [B, 512, ceil(T/8), H/32, W/32]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv3d(3, 64, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.conv2x = nn.Sequential(BasicR2P1DBlock(64, 64), BasicR2P1DBlock(64, 64))
        self.conv3x = nn.Sequential(BasicR2P1DBlock(64, 128, 2), BasicR2P1DBlock(128, 128))
        self.conv4x = nn.Sequential(BasicR2P1DBlock(128, 256, 2), BasicR2P1DBlock(256, 256))
        self.conv5x = nn.Sequential(BasicR2P1DBlock(256, 512, 2), BasicR2P1DBlock(512, 512))

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for stage in (self.conv2x, self.conv3x, self.conv4x, self.conv5x):
            x = stage(x)
        return x


# --------------------------------------------------------------------------- audio


class Basic2DBlock(nn.Module):
    """Two 3×3 conv–BN–ReLU layers, the first one strided; no residual."""

    def __init__(self, in_planes: int, out_planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class SpecCNN9(nn.Module):
    """AVID's 9-layer spectrogram CNN without its pooling: [B, 1, N, 80] → [B, 512, ceil(N/16), 5]."""

    def __init__(self, channels: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(channels, 64, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True)
        )
        self.block1 = Basic2DBlock(64, 64, 2)
        self.block2 = Basic2DBlock(64, 128, 2)
        self.block3 = Basic2DBlock(128, 256, 2)
        self.block4 = Basic2DBlock(256, 512)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        for block in (self.block1, self.block2, self.block3, self.block4):
            x = block(x)
        return x


class RepLAIBackbone(nn.Module):
    """The authors' `backbone` ModuleDict: `video` and `audio` encoders (state dict keys `video.*`, `audio.*`)."""

    def __init__(self) -> None:
        super().__init__()
        self.video = R2Plus1D18()
        self.audio = SpecCNN9()


# --------------------------------------------------------------------------- pooling


def pool_video(features: Tensor, num_frames: int) -> Tensor:
    """[B, 512, T', h, w] → [B, K, 512]: max over space and over K = max(1, num_frames // 8) adaptive time bins."""
    bins = max(1, num_frames // VIDEO_WINDOW)
    return F.adaptive_max_pool3d(features, (bins, 1, 1)).flatten(2).transpose(1, 2)


def pool_audio(features: Tensor, num_mel_frames: int) -> Tensor:
    """[B, 512, N', f] → [B, K, 512]: max over frequency and over K = max(1, N // 128) adaptive time bins."""
    bins = max(1, num_mel_frames // AUDIO_WINDOW)
    return F.adaptive_max_pool2d(features, (bins, 1)).flatten(2).transpose(1, 2)
