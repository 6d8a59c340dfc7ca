"""The AV-HuBERT network (Shi et al., 2022) for inference, written so that its parameter names
are those of the released fairseq checkpoints (`base_lrs3_iter5.pt` and friends): their state
dicts load into it as they are.

Layout, as in the av_hubert repository (avhubert/hubert.py, avhubert/resnet.py) and fairseq's
wav2vec2 TransformerEncoder:

- `feature_extractor_video`: ResNet-18 with a 3-D convolutional stem (`resnet.frontend3D`,
  `resnet.trunk`) on [B, 1, T, 88, 88] frames, average-pooled per frame to 512, then `proj`.
- `feature_extractor_audio`: `proj`, a linear layer on stacked log filterbanks (104-d).
- fusion: concatenation [audio, video] (or a sum), `layer_norm`, then `post_extract_proj`.
- `encoder`: convolutional positional embedding (`pos_conv`, weight-normed, GELU) added to its
  input, then the transformer layers; `encoder.layer_norm` is applied before the layers when
  `layer_norm_first` is false and after them when it is true.

Everything here is eval-only: no dropout, no masking, BatchNorm on its running statistics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class AVHubertArch:
    """The config fields (fairseq names) that fix the network's shape and computation."""

    encoder_embed_dim: int = 768
    encoder_layers: int = 12
    encoder_ffn_embed_dim: int = 3072
    encoder_attention_heads: int = 12
    layer_norm_first: bool = False
    conv_pos: int = 128
    conv_pos_groups: int = 16
    audio_feat_dim: int = 104
    resnet_relu_type: str = "prelu"
    modality_fuse: str = "concat"
    activation_fn: str = "gelu"
    sub_encoder_layers: int = 0


# --------------------------------------------------------------------------- video front end


class BasicBlock(nn.Module):
    """ResNet basic block; PReLU (or ReLU) after the first conv and after the residual sum."""

    def __init__(self, inplanes: int, planes: int, stride: int, relu_type: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = _activation(relu_type, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = _activation(relu_type, planes)
        self.downsample: nn.Module | None = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.relu2(out + residual)


class ResNetTrunk(nn.Module):
    """ResNet-18 body (2-2-2-2 basic blocks, 64→512 channels) with global average pooling."""

    def __init__(self, relu_type: str) -> None:
        super().__init__()
        widths, inplanes = (64, 128, 256, 512), 64
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(inplanes, planes, stride, relu_type), BasicBlock(planes, planes, 1, relu_type)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes

    def forward(self, x: Tensor) -> Tensor:
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
        return x.mean(dim=(2, 3))


class ResEncoder(nn.Module):
    """3-D conv stem (5×7×7, temporal padding 2, no bias) + per-frame ResNet-18: [B, 1, T, H, W] → [B, T, 512]."""

    out_dim = 512

    def __init__(self, relu_type: str) -> None:
        super().__init__()
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, 64, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(64),
            _activation(relu_type, 64),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.trunk = ResNetTrunk(relu_type)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        x = self.frontend3D(x)  # [B, 64, T, H', W']
        t = x.shape[2]
        x = x.transpose(1, 2).reshape(b * t, x.shape[1], x.shape[3], x.shape[4])
        return self.trunk(x).view(b, t, -1)


def _activation(relu_type: str, channels: int) -> nn.Module:
    if relu_type == "prelu":
        return nn.PReLU(num_parameters=channels)
    if relu_type == "relu":
        return nn.ReLU()
    raise ValueError(f"resnet_relu_type {relu_type!r} is not one of prelu, relu")


class SubModel(nn.Module):
    """One modality's feature extractor: optional ResNet, then a linear projection to the model width."""

    def __init__(self, resnet: ResEncoder | None, input_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.resnet = resnet
        self.proj = nn.Linear(input_dim, embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        if self.resnet is not None:
            x = self.resnet(x)
        return self.proj(x)  # [B, T, D]


# --------------------------------------------------------------------------- transformer


class WeightNormConv1d(nn.Module):
    """Grouped Conv1d whose weight is stored as fairseq's weight_norm(dim=2) pair (weight_g, weight_v)."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__()
        self.kernel_size, self.groups = kernel_size, groups
        self.weight_g = nn.Parameter(torch.ones(1, 1, kernel_size))
        self.weight_v = nn.Parameter(torch.empty(channels, channels // groups, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        nn.init.normal_(self.weight_v, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_v * (self.weight_g / self.weight_v.norm(dim=(0, 1), keepdim=True))
        return F.conv1d(x, weight, self.bias, padding=self.kernel_size // 2, groups=self.groups)


class PositionalConv(nn.Sequential):
    """Convolutional positional embedding [B, T, D] → [B, T, D]; trims the extra frame an even kernel adds, then GELU."""

    def __init__(self, channels: int, kernel_size: int, groups: int) -> None:
        super().__init__(WeightNormConv1d(channels, kernel_size, groups))

    def forward(self, x: Tensor) -> Tensor:  # type: ignore[override]
        conv: WeightNormConv1d = self[0]  # type: ignore[assignment]
        y = conv(x.transpose(1, 2))
        if conv.kernel_size % 2 == 0:
            y = y[..., :-1]
        return F.gelu(y).transpose(1, 2)


class SelfAttention(nn.Module):
    """fairseq MultiheadAttention (separate q/k/v projections with bias) for self-attention."""

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"encoder_embed_dim {embed_dim} is not divisible by encoder_attention_heads {num_heads}")
        self.num_heads = num_heads
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        """x [B, T, D]; keep: bool [B, T], True at real (not padded) key positions."""
        b, t, d = x.shape
        h = self.num_heads

        def heads(y: Tensor) -> Tensor:
            return y.view(b, t, h, d // h).transpose(1, 2)

        mask = keep[:, None, None, :] if keep is not None else None
        y = F.scaled_dot_product_attention(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)), attn_mask=mask)
        return self.out_proj(y.transpose(1, 2).reshape(b, t, d))


class EncoderLayer(nn.Module):
    """wav2vec2/HuBERT transformer layer (fairseq TransformerSentenceEncoderLayer), pre- or post-LN."""

    def __init__(self, arch: AVHubertArch) -> None:
        super().__init__()
        d = arch.encoder_embed_dim
        self.layer_norm_first = arch.layer_norm_first
        self.self_attn = SelfAttention(d, arch.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, arch.encoder_ffn_embed_dim)
        self.fc2 = nn.Linear(arch.encoder_ffn_embed_dim, d)
        self.final_layer_norm = nn.LayerNorm(d)

    def forward(self, x: Tensor, keep: Tensor | None) -> Tensor:
        if self.layer_norm_first:
            x = x + self.self_attn(self.self_attn_layer_norm(x), keep)
            return x + self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
        x = self.self_attn_layer_norm(x + self.self_attn(x, keep))
        return self.final_layer_norm(x + self.fc2(F.gelu(self.fc1(x))))


class TransformerEncoder(nn.Module):
    """fairseq wav2vec2 TransformerEncoder returning hidden states in the Hugging Face convention.

    States: the transformer input (x + pos_conv(x), layer-normed when not `layer_norm_first`),
    then each layer's output; with `layer_norm_first` the last one is after the final
    `layer_norm` (what the model itself outputs). That is encoder_layers + 1 states.
    """

    def __init__(self, arch: AVHubertArch) -> None:
        super().__init__()
        d = arch.encoder_embed_dim
        self.layer_norm_first = arch.layer_norm_first
        self.pos_conv = PositionalConv(d, arch.conv_pos, arch.conv_pos_groups)
        self.layer_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(arch) for _ in range(arch.encoder_layers))

    def forward(self, x: Tensor, padding_mask: Tensor | None = None) -> list[Tensor]:
        """x [B, T, D]; padding_mask bool [B, T], True at padded positions (as fairseq)."""
        keep = None
        if padding_mask is not None:
            keep = ~padding_mask
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + self.pos_conv(x)
        if not self.layer_norm_first:
            x = self.layer_norm(x)
        states = [x]
        for layer in self.layers:
            x = layer(x, keep)
            states.append(x)
        if self.layer_norm_first:
            states[-1] = self.layer_norm(x)
        return states


# --------------------------------------------------------------------------- the model


class AVHubertModel(nn.Module):
    """AV-HuBERT encoder (fairseq `AVHubertModel` minus its pretraining heads)."""

    def __init__(self, arch: AVHubertArch) -> None:
        super().__init__()
        if arch.sub_encoder_layers:
            raise ValueError("sub_encoder_layers > 0 (per-modality transformers) is not supported")
        if arch.activation_fn != "gelu":
            raise ValueError(f"activation_fn {arch.activation_fn!r} is not supported (only gelu)")
        if arch.modality_fuse not in ("concat", "add"):
            raise ValueError(f"modality_fuse {arch.modality_fuse!r} is not one of concat, add")
        d = arch.encoder_embed_dim
        self.arch = arch
        self.feature_extractor_audio = SubModel(None, arch.audio_feat_dim, d)
        self.feature_extractor_video = SubModel(ResEncoder(arch.resnet_relu_type), ResEncoder.out_dim, d)
        fused = 2 * d if arch.modality_fuse == "concat" else d
        self.layer_norm = nn.LayerNorm(fused)
        self.post_extract_proj = nn.Linear(fused, d) if fused != d else None
        self.encoder = TransformerEncoder(arch)

    def forward(self, audio: Tensor | None, video: Tensor | None, padding_mask: Tensor | None = None) -> list[Tensor]:
        """Hidden states [B, T, D] per layer (encoder_layers + 1).

        audio: [B, T, audio_feat_dim] stacked log filterbanks; video: [B, 1, T, H, W] normalised
        frames; padding_mask: bool [B, T], True at padded frames. A modality given as None
        contributes zeros at its feature extractor's output (see `encode`).
        """
        feats_audio = self.feature_extractor_audio(audio) if audio is not None else None
        feats_video = self.feature_extractor_video(video) if video is not None else None
        return self.encode(feats_audio, feats_video, padding_mask)

    def encode(self, feats_audio: Tensor | None, feats_video: Tensor | None, padding_mask: Tensor | None = None) -> list[Tensor]:
        """Fuse the feature extractors' outputs [B, T, D] and run the transformer. A missing
        modality is zeros in place of its features, as av_hubert's `extract_finetune` does for a
        single-modality input and as its modality dropout (`0 * features`) trained it."""
        if feats_audio is None and feats_video is None:
            raise ValueError("AV-HuBERT needs at least one of audio and video")
        if feats_audio is None:
            assert feats_video is not None
            feats_audio = torch.zeros_like(feats_video)
        if feats_video is None:
            feats_video = torch.zeros_like(feats_audio)
        if self.arch.modality_fuse == "concat":
            x = torch.cat([feats_audio, feats_video], dim=-1)
        else:
            x = feats_audio + feats_video
        x = self.layer_norm(x)
        if self.post_extract_proj is not None:
            x = self.post_extract_proj(x)
        return self.encoder(x, padding_mask)
