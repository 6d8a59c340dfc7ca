"""The AVBERT network (Lee et al., "Parameter Efficient Multimodal Transformers for Video
Representation Learning", ICLR 2021) for inference, with the module names of the authors' code,
so that the `state_dict` of their released checkpoint loads into it as it is.

Layout, as in the authors' code (copied into the AV-SUPERB reference toolkit,
roger-tseng/av-superb upstream_models/avbert/avbert/models/):

- `visual_conv`: a "slow"-pathway 3-D ResNet-50 (SlowFast codebase: `s1.pathway0_stem`, stages
  `s2`..`s5` of bottleneck `pathway0_res{i}` blocks, temporal kernels 1, 1, 3, 3, a 5×7×7 stem with
  stride 2 in time and space) on [N, 3, 32, 128, 128] clips, average-pooled to 2048.
- `audio_conv`: a 2-D ResNet-50 on [N, 1, 80, 128] log-mel spectrograms (`s1.stem` with separable
  9×1 / 1×9 convolutions, `s2`..`s5` of `res{i}` blocks, the 3×3 convolutions of `s2`, `s3`
  separable into 3×1 and 1×3), average-pooled to 1024.
- `visual_fc`/`visual_norm`, `audio_fc`/`audio_norm`: Linear to the model width, LayerNorm.
- `summary_encoding`: a learned BOS token per modality (visual 0, audio 1) prepended.
- `single_{visual,audio}_embeddings`, `multi_embeddings`: learned position embeddings (plus
  token types for the multimodal input), LayerNorm.
- `transformer`: one ALBERT-style encoder shared across its layers *and* across the visual,
  audio and multimodal passes (registered again as `single_visual_transformer`,
  `single_audio_transformer` and `multi_transformer`, as the authors' model does, so its weights
  appear under all four prefixes in a state dict). Each of its linear maps is low-rank and
  modality-specific (`FactorLinear`): a per-modality projection `ms{m}_linear` to 128 dims, L2
  normalisation, a per-modality orthogonal 128×128 matrix `orthogonal_ms{m}_linear` (stored as a
  skew-symmetric generator `A` and a `base`: B = base · expm(A − Aᵀ)), then a shared `s_linear`.
  Modality index 0 is visual, 1 audio, 2 multimodal.

Everything here is eval-only: no dropout, BatchNorm on its running statistics.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# Blocks per stage for a ResNet depth (the authors' _MODEL_STAGE_DEPTH).
STAGE_DEPTH = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
# Temporal kernel of the visual stem and of the bottlenecks' first conv in s2..s5 ("resnet" arch).
VIDEO_TEMPORAL_KERNELS = (5, 1, 1, 3, 3)
MODALITIES = ("visual", "audio")  # modality index 0, 1; the multimodal pass uses index 2
ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "swish": F.silu,
}


@dataclass(frozen=True)
class AVBertArch:
    """The config values (authors' names in comments) that fix the network's shape; the defaults
    are the released model's (av-superb upstream_models/avbert/avbert/config.py)."""

    # visual CNN: RESNET.*, DATA.INPUT_CHANNEL_NUM
    video_depth: int = 50
    video_width_per_group: int = 64
    video_num_groups: int = 1
    video_num_block_temp_kernel: tuple[int, ...] = (3, 4, 6, 3)
    video_spatial_strides: tuple[int, ...] = (1, 2, 2, 2)
    video_spatial_dilations: tuple[int, ...] = (1, 1, 1, 1)
    input_channels: int = 3
    # the visual head's pooling window: DATA.NUM_FRAMES // 2 frames × ceil(DATA.CROP_SIZE / 32)²
    num_frames: int = 32
    head_crop_size: int = 112
    # audio CNN: AUDIO_RESNET.*; its head pools ceil(DATA.AUDIO_FREQUENCY / 16) × ceil(DATA.AUDIO_TIME / 16)
    audio_depth: int = 50
    audio_width_per_group: int = 32
    audio_num_groups: int = 1
    audio_strides: tuple[int, ...] = (2, 2, 2, 2)
    audio_dilations: tuple[int, ...] = (1, 1, 1, 1)
    audio_frequency: int = 80
    audio_time: int = 128
    bn_eps: float = 1e-5  # MODEL.EPSILON
    # transformer: TRANSFORMER.*
    hidden_size: int = 768
    num_hidden_layers: int = 6
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 22
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12  # AlbertConfig default (the config sets none)
    use_decomposition: bool = True
    orthogonal_size: int = 128
    orthogonal_mode: str = "static"  # static / dtriv: B = base · expm(S); cayley: base · Cayley(S)

    def __post_init__(self) -> None:
        for name in ("video_depth", "audio_depth"):
            if getattr(self, name) not in STAGE_DEPTH:
                raise ValueError(f"{name} {getattr(self, name)} is not one of {sorted(STAGE_DEPTH)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of {self.num_attention_heads} heads")
        if self.num_hidden_layers % self.num_hidden_groups:
            raise ValueError(f"num_hidden_layers {self.num_hidden_layers} is not a multiple of {self.num_hidden_groups} groups")
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not one of {', '.join(ACTIVATIONS)}")
        if self.orthogonal_mode not in ("static", "dtriv", "cayley"):
            raise ValueError(f"orthogonal_mode {self.orthogonal_mode!r} is not one of static, dtriv, cayley")

    @property
    def video_dim(self) -> int:
        return self.video_width_per_group * 32  # bottleneck: 4 × 2³ × width

    @property
    def audio_dim(self) -> int:
        return self.audio_width_per_group * 32

    @property
    def num_states(self) -> int:
        """Hidden states per pass: the embeddings' output, then each layer's."""
        return self.num_hidden_layers + 1


# --------------------------------------------------------------------------- visual CNN (3-D)


class VideoStem(nn.Module):
    """ResNetBasicStem: Conv3d (no bias), BN, ReLU, MaxPool 1×3×3 stride 1×2×2."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        kt, width = VIDEO_TEMPORAL_KERNELS[0], arch.video_width_per_group
        self.conv = nn.Conv3d(arch.input_channels, width, (kt, 7, 7), stride=(2, 2, 2), padding=(kt // 2, 3, 3), bias=False)
        self.bn = nn.BatchNorm3d(width, eps=arch.bn_eps)
        self.pool_layer = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.pool_layer(F.relu(self.bn(self.conv(x))))


class VideoStemWrapper(nn.Module):
    """VideoModelStem: one stem per pathway; AVBERT has the single pathway 0."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        self.pathway0_stem = VideoStem(arch)

    def forward(self, x: Tensor) -> Tensor:
        return self.pathway0_stem(x)


class VideoBottleneck(nn.Module):
    """BottleneckTransform: Tx1x1 (a), 1x3x3 with the stride (b), 1x1x1 (c), each with BN."""

    def __init__(
        self, dim_in: int, dim_out: int, dim_inner: int, kt: int, stride: int, groups: int, dilation: int, eps: float
    ) -> None:
        super().__init__()
        self.a = nn.Conv3d(dim_in, dim_inner, (kt, 1, 1), padding=(kt // 2, 0, 0), bias=False)
        self.a_bn = nn.BatchNorm3d(dim_inner, eps=eps)
        self.b = nn.Conv3d(
            dim_inner, dim_inner, (1, 3, 3), stride=(1, stride, stride), padding=(0, dilation, dilation),
            groups=groups, dilation=(1, dilation, dilation), bias=False,
        )  # fmt: skip
        self.b_bn = nn.BatchNorm3d(dim_inner, eps=eps)
        self.c = nn.Conv3d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = nn.BatchNorm3d(dim_out, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.a_bn(self.a(x)))
        x = F.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class VideoResBlock(nn.Module):
    """ResBlock: projection shortcut (`branch1`) when the shape changes, ReLU after the sum."""

    def __init__(
        self, dim_in: int, dim_out: int, dim_inner: int, kt: int, stride: int, groups: int, dilation: int, eps: float
    ) -> None:
        super().__init__()
        self.branch1: nn.Module | None = None
        self.branch1_bn: nn.Module | None = None
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv3d(dim_in, dim_out, 1, stride=(1, stride, stride), bias=False)
            self.branch1_bn = nn.BatchNorm3d(dim_out, eps=eps)
        self.branch2 = VideoBottleneck(dim_in, dim_out, dim_inner, kt, stride, groups, dilation, eps)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))  # type: ignore[misc]
        return F.relu(shortcut + self.branch2(x))


class VideoResStage(nn.Module):
    """ResStage for pathway 0: blocks `pathway0_res{i}`; the first `num_block_temp_kernel` blocks
    use the stage's temporal kernel, the rest temporal kernel 1."""

    def __init__(
        self, dim_in: int, dim_out: int, dim_inner: int, kt: int, blocks: int, temp_blocks: int,
        stride: int, groups: int, dilation: int, eps: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_blocks = blocks
        for i in range(blocks):
            block = VideoResBlock(
                dim_in if i == 0 else dim_out, dim_out, dim_inner, kt if i < temp_blocks else 1,
                stride if i == 0 else 1, groups, dilation, eps,
            )  # fmt: skip
            self.add_module(f"pathway0_res{i}", block)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_blocks):
            x = getattr(self, f"pathway0_res{i}")(x)
        return x


class VideoResNet(nn.Module):
    """The visual ConvNet ("ResNet" of the authors' video_model_builder): [N, 3, T, H, W] → [N, 2048].

    Pooling head as the reference's ResNetPoolingHead in eval mode: AvgPool3d with window
    (num_frames // 2, ceil(head_crop_size / 32), same) and stride 1, then the mean of what is
    left (for the released 32 × 128 × 128 input the window covers the whole 16 × 4 × 4 map)."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        self.s1 = VideoStemWrapper(arch)
        width, groups, eps = arch.video_width_per_group, arch.video_num_groups, arch.bn_eps
        dim_in = width
        for i, blocks in enumerate(STAGE_DEPTH[arch.video_depth]):
            dim_out, dim_inner = width * 4 * 2**i, groups * width * 2**i
            stage = VideoResStage(
                dim_in, dim_out, dim_inner, VIDEO_TEMPORAL_KERNELS[i + 1], blocks, arch.video_num_block_temp_kernel[i],
                arch.video_spatial_strides[i], groups, arch.video_spatial_dilations[i], eps,
            )  # fmt: skip
            self.add_module(f"s{i + 2}", stage)
            dim_in = dim_out
        self.output_size = dim_in
        side = math.ceil(arch.head_crop_size / 32)
        self.pool_size = (arch.num_frames // 2, side, side)

    def feature_map(self, x: Tensor) -> Tensor:
        x = self.s2(self.s1(x))  # (the reference's pathway0_pool after s2 is a 1×1×1 max pool: identity)
        return self.s5(self.s4(self.s3(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool3d(self.feature_map(x), self.pool_size, stride=1)
        return x.mean(dim=(2, 3, 4))


# --------------------------------------------------------------------------- audio CNN (2-D)


class AudioStem(nn.Module):
    """ResNetBasicStem, separable: 9×1 conv, BN, ReLU, 1×9 conv, BN, ReLU (stride 1)."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        width = arch.audio_width_per_group
        self.conv1 = nn.Conv2d(1, width, (9, 1), padding=(4, 0), bias=False)
        self.bn1 = nn.BatchNorm2d(width, eps=arch.bn_eps)
        self.conv2 = nn.Conv2d(width, width, (1, 9), padding=(0, 4), bias=False)
        self.bn2 = nn.BatchNorm2d(width, eps=arch.bn_eps)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))


class AudioStemWrapper(nn.Module):
    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        self.stem = AudioStem(arch)

    def forward(self, x: Tensor) -> Tensor:
        return self.stem(x)


class AudioBottleneck(nn.Module):
    """BottleneckTransform (2-D): 1×1 (a), 3×3 with the stride (b) or its separable 3×1 (b1) and
    1×3 (b2) version, 1×1 (c), each with BN."""

    def __init__(
        self, dim_in: int, dim_out: int, dim_inner: int, stride: int, groups: int, dilation: int, separable: bool, eps: float
    ) -> None:
        super().__init__()
        self.separable = separable
        self.a = nn.Conv2d(dim_in, dim_inner, 1, bias=False)
        self.a_bn = nn.BatchNorm2d(dim_inner, eps=eps)
        if separable:
            self.b1 = nn.Conv2d(
                dim_inner, dim_inner, (3, 1), stride=(stride, 1), padding=(dilation, 0),
                groups=groups, dilation=(dilation, 1), bias=False,
            )  # fmt: skip
            self.b1_bn = nn.BatchNorm2d(dim_inner, eps=eps)
            self.b2 = nn.Conv2d(
                dim_inner, dim_inner, (1, 3), stride=(1, stride), padding=(0, dilation),
                groups=groups, dilation=(1, dilation), bias=False,
            )  # fmt: skip
            self.b2_bn = nn.BatchNorm2d(dim_inner, eps=eps)
        else:
            self.b = nn.Conv2d(
                dim_inner, dim_inner, 3, stride=stride, padding=dilation, groups=groups, dilation=dilation, bias=False
            )
            self.b_bn = nn.BatchNorm2d(dim_inner, eps=eps)
        self.c = nn.Conv2d(dim_inner, dim_out, 1, bias=False)
        self.c_bn = nn.BatchNorm2d(dim_out, eps=eps)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.a_bn(self.a(x)))
        if self.separable:
            x = F.relu(self.b1_bn(self.b1(x)))
            x = F.relu(self.b2_bn(self.b2(x)))
        else:
            x = F.relu(self.b_bn(self.b(x)))
        return self.c_bn(self.c(x))


class AudioResBlock(nn.Module):
    def __init__(
        self, dim_in: int, dim_out: int, dim_inner: int, stride: int, groups: int, dilation: int, separable: bool, eps: float
    ) -> None:
        super().__init__()
        self.branch1: nn.Module | None = None
        self.branch1_bn: nn.Module | None = None
        if dim_in != dim_out or stride != 1:
            self.branch1 = nn.Conv2d(dim_in, dim_out, 1, stride=stride, bias=False)
            self.branch1_bn = nn.BatchNorm2d(dim_out, eps=eps)
        self.branch2 = AudioBottleneck(dim_in, dim_out, dim_inner, stride, groups, dilation, separable, eps)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x if self.branch1 is None else self.branch1_bn(self.branch1(x))  # type: ignore[misc]
        return F.relu(shortcut + self.branch2(x))


class AudioResStage(nn.Module):
    def __init__(
        self, dim_in: int, dim_out: int, dim_inner: int, blocks: int, stride: int, groups: int,
        dilation: int, separable: bool, eps: float,
    ) -> None:  # fmt: skip
        super().__init__()
        self.num_blocks = blocks
        for i in range(blocks):
            block = AudioResBlock(
                dim_in if i == 0 else dim_out, dim_out, dim_inner, stride if i == 0 else 1, groups, dilation, separable, eps
            )
            self.add_module(f"res{i}", block)

    def forward(self, x: Tensor) -> Tensor:
        for i in range(self.num_blocks):
            x = getattr(self, f"res{i}")(x)
        return x


class AudioResNet(nn.Module):
    """The audio ConvNet ("AudioResNet"): [N, 1, F, T] → [N, 1024]; s2 and s3 separable.

    Pooling head as the reference's ResNetPoolingHead: AvgPool2d with window
    (ceil(audio_frequency / 16), ceil(audio_time / 16)) and stride 1, flattened (the released
    80 × 128 input leaves a 5 × 8 map, so that is the global mean)."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        self.s1 = AudioStemWrapper(arch)
        width, groups, eps = arch.audio_width_per_group, arch.audio_num_groups, arch.bn_eps
        dim_in = width
        for i, blocks in enumerate(STAGE_DEPTH[arch.audio_depth]):
            dim_out, dim_inner = width * 4 * 2**i, groups * width * 2**i
            stage = AudioResStage(
                dim_in, dim_out, dim_inner, blocks, arch.audio_strides[i], groups, arch.audio_dilations[i], i < 2, eps
            )
            self.add_module(f"s{i + 2}", stage)
            dim_in = dim_out
        self.output_size = dim_in
        self.pool_size = (math.ceil(arch.audio_frequency / 16), math.ceil(arch.audio_time / 16))

    def feature_map(self, x: Tensor) -> Tensor:
        return self.s5(self.s4(self.s3(self.s2(self.s1(x)))))

    def forward(self, x: Tensor) -> Tensor:
        x = F.avg_pool2d(self.feature_map(x), self.pool_size, stride=1)
        return x.reshape(x.shape[0], -1)


# --------------------------------------------------------------------------- transformer


class Orthogonal(nn.Module):
    """expRNN's Orthogonal parametrisation, static mode: B = base · φ(triu(A, 1) − triu(A, 1)ᵀ), with
    φ the matrix exponential (or the Cayley map); `forward` is x · B. `A` is a parameter and `base` a
    buffer, as in the checkpoint; B is computed once per weight version and cached."""

    def __init__(self, size: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.A = nn.Parameter(torch.zeros(size, size))
        self.register_buffer("base", torch.eye(size))
        self._cache: tuple[tuple[int, ...], Tensor] | None = None

    def matrix(self) -> Tensor:
        key = (self.A.data_ptr(), self.A._version, self.base.data_ptr(), self.base._version)
        if self._cache is None or self._cache[0] != key:
            upper = self.A.detach().triu(diagonal=1)
            skew = upper - upper.t()
            if self.mode == "cayley":
                eye = torch.eye(skew.shape[0], dtype=skew.dtype, device=skew.device)
                rotation = torch.linalg.solve(eye + skew, eye - skew)
            else:
                rotation = torch.linalg.matrix_exp(skew)
            self._cache = (key, self.base.detach() @ rotation)
        return self._cache[1]

    def forward(self, x: Tensor) -> Tensor:
        return x @ self.matrix()


class FactorLinear(nn.Module):
    """Low-rank, modality-specific linear map: s_linear(orthogonal_m(normalize(ms_m(x))))."""

    def __init__(self, groups: int, size_in: int, rank: int, size_out: int, mode: str) -> None:
        super().__init__()
        for m in range(groups):
            self.add_module(f"ms{m}_linear", nn.Linear(size_in, rank, bias=False))
        for m in range(groups):
            self.add_module(f"orthogonal_ms{m}_linear", Orthogonal(rank, mode))
        self.s_linear = nn.Linear(rank, size_out)

    def forward(self, x: Tensor, modality: int) -> Tensor:
        x = F.normalize(getattr(self, f"ms{modality}_linear")(x), dim=-1)
        return self.s_linear(getattr(self, f"orthogonal_ms{modality}_linear")(x))


def _linear(arch: AVBertArch, groups: int, size_in: int, size_out: int) -> nn.Module:
    if arch.use_decomposition:
        return FactorLinear(groups, size_in, arch.orthogonal_size, size_out, arch.orthogonal_mode)
    return nn.Linear(size_in, size_out)


def _apply(layer: nn.Module, x: Tensor, modality: int) -> Tensor:
    return layer(x, modality) if isinstance(layer, FactorLinear) else layer(x)


class AlbertAttention(nn.Module):
    """Self-attention with a post-LN residual: LayerNorm(x + dense(attention(q, k, v)))."""

    def __init__(self, arch: AVBertArch, groups: int) -> None:
        super().__init__()
        d = arch.hidden_size
        self.num_heads = arch.num_attention_heads
        prefix = "factor_" if arch.use_decomposition else ""
        for name in ("query", "key", "value", "dense"):
            self.add_module(prefix + name, _linear(arch, groups, d, d))
        self._names = tuple(prefix + n for n in ("query", "key", "value", "dense"))
        self.LayerNorm = nn.LayerNorm(d, eps=arch.layer_norm_eps)

    def forward(self, x: Tensor, modality: int) -> Tensor:
        b, t, d = x.shape
        h = self.num_heads
        q, k, v, dense = (getattr(self, n) for n in self._names)

        def heads(layer: nn.Module) -> Tensor:
            return _apply(layer, x, modality).view(b, t, h, d // h).transpose(1, 2)

        context = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))  # no mask: every token is real
        context = context.transpose(1, 2).reshape(b, t, d)
        return self.LayerNorm(x + _apply(dense, context, modality))


class AlbertLayer(nn.Module):
    """Attention, then full_layer_layer_norm(a + ffn_output(act(ffn(a))))."""

    def __init__(self, arch: AVBertArch, groups: int) -> None:
        super().__init__()
        self.full_layer_layer_norm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)
        self.attention = AlbertAttention(arch, groups)
        prefix = "factor_" if arch.use_decomposition else ""
        self.add_module(prefix + "ffn", _linear(arch, groups, arch.hidden_size, arch.intermediate_size))
        self.add_module(prefix + "ffn_output", _linear(arch, groups, arch.intermediate_size, arch.hidden_size))
        self._names = (prefix + "ffn", prefix + "ffn_output")
        self.activation = ACTIVATIONS[arch.hidden_act]

    def forward(self, x: Tensor, modality: int) -> Tensor:
        a = self.attention(x, modality)
        ffn, ffn_output = (getattr(self, n) for n in self._names)
        return self.full_layer_layer_norm(a + _apply(ffn_output, self.activation(_apply(ffn, a, modality)), modality))


class AlbertLayerGroup(nn.Module):
    def __init__(self, arch: AVBertArch, groups: int) -> None:
        super().__init__()
        self.albert_layers = nn.ModuleList(AlbertLayer(arch, groups) for _ in range(arch.inner_group_num))

    def forward(self, x: Tensor, modality: int) -> Tensor:
        for layer in self.albert_layers:
            x = layer(x, modality)
        return x


class AlbertTransformer(nn.Module):
    def __init__(self, arch: AVBertArch, groups: int) -> None:
        super().__init__()
        self.num_layers = arch.num_hidden_layers
        self.albert_layer_groups = nn.ModuleList(AlbertLayerGroup(arch, groups) for _ in range(arch.num_hidden_groups))

    def forward(self, x: Tensor, modality: int) -> list[Tensor]:
        """The input, then the output of each of the num_hidden_layers (shared) layer applications."""
        states = [x]
        per_group = self.num_layers // len(self.albert_layer_groups)
        for i in range(self.num_layers):
            x = self.albert_layer_groups[i // per_group](x, modality)
            states.append(x)
        return states


class Albert(nn.Module):
    """The shared encoder (the authors' `Albert` model: only its `encoder`)."""

    def __init__(self, arch: AVBertArch, groups: int) -> None:
        super().__init__()
        self.encoder = AlbertTransformer(arch, groups)

    def forward(self, x: Tensor, modality: int) -> list[Tensor]:
        return self.encoder(x, modality)


class Embeddings(nn.Module):
    """AlbertEmbeddings: LayerNorm(x + position embedding [+ token type embedding])."""

    def __init__(self, arch: AVBertArch, use_type_embeddings: bool) -> None:
        super().__init__()
        self.position_embeddings = nn.Embedding(arch.max_position_embeddings, arch.hidden_size)
        self.token_type_embeddings = nn.Embedding(arch.type_vocab_size, arch.hidden_size) if use_type_embeddings else None
        self.LayerNorm = nn.LayerNorm(arch.hidden_size, eps=arch.layer_norm_eps)

    def forward(self, x: Tensor, position_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        x = x + self.position_embeddings(position_ids)
        if self.token_type_embeddings is not None:
            assert token_type_ids is not None
            x = x + self.token_type_embeddings(token_type_ids)
        return self.LayerNorm(x)


class SummaryEncoding(nn.Module):
    """One learned BOS embedding per modality, prepended to the sequence (use_mean_pooling off)."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        self.bos_embeddings = nn.Embedding(len(MODALITIES), arch.hidden_size)

    def forward(self, x: Tensor, modality: int) -> Tensor:
        bos = self.bos_embeddings.weight[modality].expand(x.shape[0], 1, -1)
        return torch.cat([bos, x], dim=1)


# --------------------------------------------------------------------------- the model


# Names under which the authors' model registers the one shared transformer again.
TRANSFORMER_ALIASES = ("single_visual_transformer", "single_audio_transformer", "multi_transformer")


class AVBertModel(nn.Module):
    """AVBERT with mid fusion and a transformer shared across layers and modalities (the released
    configuration: MODEL.FUSION "mid", SHARING_ACROSS_LAYERS and SHARING_ACROSS_MODELS on)."""

    def __init__(self, arch: AVBertArch) -> None:
        super().__init__()
        self.arch = arch
        d = arch.hidden_size
        self.visual_conv = VideoResNet(arch)
        self.visual_fc = nn.Linear(self.visual_conv.output_size, d)
        self.visual_norm = nn.LayerNorm(d, eps=arch.layer_norm_eps)
        self.audio_conv = AudioResNet(arch)
        self.audio_fc = nn.Linear(self.audio_conv.output_size, d)
        self.audio_norm = nn.LayerNorm(d, eps=arch.layer_norm_eps)
        self.summary_encoding = SummaryEncoding(arch)
        self.single_visual_embeddings = Embeddings(arch, False)
        self.single_audio_embeddings = Embeddings(arch, False)
        self.multi_embeddings = Embeddings(arch, True)
        self.transformer = Albert(arch, groups=len(MODALITIES) + 1)
        for alias in TRANSFORMER_ALIASES:  # the same module again, as the authors' setattr does
            self.add_module(alias, self.transformer)

    def visual_tokens(self, clips: Tensor) -> Tensor:
        """[N, V, 3, T, H, W] normalised clips → [N, V, D] projected, normalised CNN features."""
        n, v = clips.shape[:2]
        pooled = self.visual_conv(clips.flatten(0, 1))
        return self.visual_norm(self.visual_fc(pooled)).view(n, v, -1)

    def audio_tokens(self, spectrograms: Tensor) -> Tensor:
        """[N, V, 1, F, T] log-mel windows → [N, V, D]."""
        n, v = spectrograms.shape[:2]
        pooled = self.audio_conv(spectrograms.flatten(0, 1))
        return self.audio_norm(self.audio_fc(pooled)).view(n, v, -1)

    def encode_single(self, tokens: Tensor, modality: str) -> list[Tensor]:
        """[N, V, D] tokens of one modality → hidden states [N, 1 + V, D] (BOS first), num_states of them."""
        index = MODALITIES.index(modality)
        x = self.summary_encoding(tokens, index)
        positions = torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1)
        embeddings: Embeddings = getattr(self, f"single_{modality}_embeddings")
        return self.transformer(embeddings(x, positions), index)

    def encode_multi(self, visual_last: Tensor, audio_last: Tensor) -> list[Tensor]:
        """Last single-modality states [N, 1 + V, D] each → multimodal hidden states [N, 2(1 + V), D]:
        visual tokens (type 0) then audio tokens (type 1), positions restarting at 0 for each."""
        n, t = visual_last.shape[:2]
        x = torch.cat([visual_last, audio_last], dim=1)
        positions = torch.arange(t, device=x.device).repeat(2).expand(n, -1)
        types = torch.cat([torch.zeros(t, dtype=torch.long), torch.ones(t, dtype=torch.long)]).to(x.device).expand(n, -1)
        return self.transformer(self.multi_embeddings(x, positions, types), len(MODALITIES))
