"""The MAViL network (Huang et al., "MAViL: Masked Audio-Video Learners", NeurIPS 2023) for
inference, written so that its parameter names are those of the checkpoints the AV-SUPERB
reference loads: their `model` state dicts load into it as they are.

Layout, as the reference's `VisionTransformerMM` (roger-tseng/av-superb,
upstream_models/mavil/models_vitmm.py, on timm 0.3.2's VisionTransformer with global pooling,
so without the final `norm`) and its `PatchEmbed_new` / `PatchEmbed3D_new`
(upstream_models/mavil/util/patch_embed.py):

- audio: `patch_embed.proj` (Conv2d 1→D, 16×16 patches, stride 16) on a [B, 1, 1024, 128]
  (time × mel) fbank, tokens in time-major order (8 frequency patches per time step);
  `pos_embed` [1, 1 + N, D] whose first row belongs to `cls_token`; then `blocks`.
- video: `patch_embed_v.proj` (Conv3d 3→D, 2×16×16 tubelets, stride 2×16×16) on
  [B, 3, 8, 224, 224] frames; `cls_token_v`, `pos_embed_v`, `blocks_v`.
- fusion: the two encoders' outputs (CLS tokens included) concatenated along the sequence,
  then `blocks_av`; `fc_norm_av` (LayerNorm over the 2·D concatenated pools) exists in the
  fine-tuned model only, before its classifier `head_av`.

Blocks are timm's pre-norm ViT blocks (LayerNorm eps 1e-6, fused qkv with bias, GELU MLP).
Eval only: dropout and drop-path are identities.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class MavilArch:
    """What fixes the network's shape: the encoder width/depth, the fusion depth, input sizes and patch sizes."""

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_hidden: int = 3072
    depth_av: int = 2  # 2 fusion blocks in the pretrained model, 3 in the AudioSet-2M fine-tuned one
    fc_norm_av: bool = False  # the fine-tuned model's LayerNorm on the concatenated pools
    audio_size: tuple[int, int] = (1024, 128)  # fbank frames × mel bins
    audio_patch: tuple[int, int] = (16, 16)
    video_frames: int = 8
    video_size: int = 224
    video_patch: tuple[int, int, int] = (2, 16, 16)  # frames × height × width of a tubelet
    norm_eps: float = 1e-6

    @property
    def audio_grid(self) -> tuple[int, int]:
        """(time, frequency) patches."""
        return self.audio_size[0] // self.audio_patch[0], self.audio_size[1] // self.audio_patch[1]

    @property
    def video_grid(self) -> tuple[int, int, int]:
        """(time, height, width) tubelets."""
        t, h, w = self.video_patch
        return self.video_frames // t, self.video_size // h, self.video_size // w

    @property
    def num_audio_patches(self) -> int:
        t, f = self.audio_grid
        return t * f

    @property
    def num_video_patches(self) -> int:
        t, h, w = self.video_grid
        return t * h * w

    def check(self) -> None:
        """ValueError when the sizes do not fit together."""
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.audio_size[0] % self.audio_patch[0] or self.audio_size[1] % self.audio_patch[1]:
            raise ValueError(f"audio input {self.audio_size} is not a whole number of {self.audio_patch} patches")
        t, h, w = self.video_patch
        if self.video_frames % t or self.video_size % h or self.video_size % w:
            size = f"{self.video_frames}×{self.video_size}×{self.video_size}"
            raise ValueError(f"video input {size} is not a whole number of {self.video_patch} tubelets")
        if self.depth < 1 or self.depth_av < 1:
            raise ValueError(f"need at least one encoder and one fusion block, got depth {self.depth}, depth_av {self.depth_av}")


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided convolution (2-D or 3-D): [B, C, *S] → [B, N, D], row-major over S."""

    def __init__(self, in_chans: int, embed_dim: int, patch: tuple[int, ...]) -> None:
        super().__init__()
        conv = nn.Conv2d if len(patch) == 2 else nn.Conv3d
        self.proj = conv(in_chans, embed_dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """timm's multi-head self-attention: one qkv projection with bias, softmax(q·kᵀ/√d_head)·v, out projection."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)
        return self.proj(y.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block (timm `Block`): x + attn(norm1(x)), then + mlp(norm2(x))."""

    def __init__(self, arch: MavilArch) -> None:
        super().__init__()
        d = arch.embed_dim
        self.norm1 = nn.LayerNorm(d, eps=arch.norm_eps)
        self.attn = Attention(d, arch.num_heads)
        self.norm2 = nn.LayerNorm(d, eps=arch.norm_eps)
        self.mlp = Mlp(d, arch.mlp_hidden)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MavilModel(nn.Module):
    """MAViL's audio encoder, video encoder and fusion blocks, returning every hidden state."""

    def __init__(self, arch: MavilArch) -> None:
        super().__init__()
        arch.check()
        self.arch = arch
        d = arch.embed_dim
        frozen = {"requires_grad": False}  # fixed sin-cos tables in the released model, stored in the checkpoint
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, arch.num_audio_patches + 1, d), **frozen)
        self.patch_embed = PatchEmbed(1, d, arch.audio_patch)
        self.blocks = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.cls_token_v = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed_v = nn.Parameter(torch.zeros(1, arch.num_video_patches + 1, d), **frozen)
        self.patch_embed_v = PatchEmbed(3, d, arch.video_patch)
        self.blocks_v = nn.ModuleList(Block(arch) for _ in range(arch.depth))
        self.blocks_av = nn.ModuleList(Block(arch) for _ in range(arch.depth_av))
        self.fc_norm_av = nn.LayerNorm(2 * d, eps=arch.norm_eps) if arch.fc_norm_av else None

    @staticmethod
    def _encode(x: Tensor, cls: Tensor, pos: Tensor, blocks: nn.ModuleList) -> list[Tensor]:
        """Patches + positions, CLS (with its position) in front, then each block: depth + 1 states [B, 1 + N, D]."""
        x = x + pos[:, 1:]
        x = torch.cat([(cls + pos[:, :1]).expand(x.shape[0], -1, -1), x], dim=1)
        states = [x]
        for block in blocks:
            x = block(x)
            states.append(x)
        return states

    def encode_audio(self, fbank: Tensor) -> list[Tensor]:
        """fbank [B, 1, frames, mel bins], normalised → depth + 1 states [B, 1 + N_audio, D]."""
        return self._encode(self.patch_embed(fbank), self.cls_token, self.pos_embed, self.blocks)

    def encode_video(self, video: Tensor) -> list[Tensor]:
        """video [B, 3, frames, H, W], normalised → depth + 1 states [B, 1 + N_video, D]."""
        return self._encode(self.patch_embed_v(video), self.cls_token_v, self.pos_embed_v, self.blocks_v)

    def fuse(self, audio: Tensor, video: Tensor) -> list[Tensor]:
        """The encoders' last states (CLS tokens included) → depth_av + 1 states [B, 2 + N_audio + N_video, D]:
        the concatenation, then each fusion block's output."""
        x = torch.cat([audio, video], dim=1)
        states = [x]
        for block in self.blocks_av:
            x = block(x)
            states.append(x)
        return states
