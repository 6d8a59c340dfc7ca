"""avbert: loads the authors' released checkpoint layout, preprocesses as the AV-SUPERB reference,
computes its ResNet blocks as torchvision and its shared ALBERT layers as Hugging Face do, and
assembles the audio / video / fusion tracks as the reference's `avbert` (time-interleaved) entry."""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import scipy.linalg
import torch
import torchaudio
from torchvision.models.resnet import Bottleneck

from avsuperb.extract.upstreams import UpstreamError, avbert, build
from avsuperb.extract.upstreams.avbert_model import (
    Albert,
    AudioResBlock,
    AVBertArch,
    AVBertModel,
    FactorLinear,
    Orthogonal,
    VideoResBlock,
)

torch.set_num_threads(1)

TINY = AVBertArch(
    video_width_per_group=2,
    audio_width_per_group=2,
    num_frames=4,
    head_crop_size=32,
    audio_frequency=16,
    audio_time=16,
    hidden_size=16,
    num_hidden_layers=3,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=6,
    orthogonal_size=4,
)
TINY_VIEWS = avbert.AVBertViews(num_views=2, num_crops=3, crop_size=32)


# --------------------------------------------------------------------------- the released layout


def released_shapes(arch: AVBertArch) -> dict[str, tuple[int, ...]]:
    """Every key and shape of the authors' AVBert state dict ("mid" fusion, transformer shared
    across layers and modalities), written down from av-superb upstream_models/avbert/avbert/models/:
    avbert.py, video_model_builder.py + stem_helper.py + resnet_helper.py, audio_model_builder.py +
    audio_stem_helper.py + audio_resnet_helper.py, encoding_helper.py, albert.py, bert.py,
    factor_linear.py and expRNN/parametrization.py (A parameter; base and _B buffers)."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{name}"] = (c,)
        out[f"{prefix}.num_batches_tracked"] = ()

    depth = {50: (3, 4, 6, 3)}
    w = arch.video_width_per_group
    out["visual_conv.s1.pathway0_stem.conv.weight"] = (w, 3, 5, 7, 7)
    bn("visual_conv.s1.pathway0_stem.bn", w)
    for i, blocks in enumerate(depth[arch.video_depth]):
        dim_in, dim_out, inner = w * (1 if i == 0 else 2 * 2**i), w * 4 * 2**i, w * 2**i
        kt = (1, 1, 3, 3)[i]
        for j in range(blocks):
            p = f"visual_conv.s{i + 2}.pathway0_res{j}"
            cin = dim_in if j == 0 else dim_out
            if j == 0:
                out[f"{p}.branch1.weight"] = (dim_out, cin, 1, 1, 1)
                bn(f"{p}.branch1_bn", dim_out)
            out[f"{p}.branch2.a.weight"] = (inner, cin, kt if j < arch.video_num_block_temp_kernel[i] else 1, 1, 1)
            bn(f"{p}.branch2.a_bn", inner)
            out[f"{p}.branch2.b.weight"] = (inner, inner, 1, 3, 3)
            bn(f"{p}.branch2.b_bn", inner)
            out[f"{p}.branch2.c.weight"] = (dim_out, inner, 1, 1, 1)
            bn(f"{p}.branch2.c_bn", dim_out)
    a = arch.audio_width_per_group
    out["audio_conv.s1.stem.conv1.weight"] = (a, 1, 9, 1)
    bn("audio_conv.s1.stem.bn1", a)
    out["audio_conv.s1.stem.conv2.weight"] = (a, a, 1, 9)
    bn("audio_conv.s1.stem.bn2", a)
    for i, blocks in enumerate(depth[arch.audio_depth]):
        dim_in, dim_out, inner = a * (1 if i == 0 else 2 * 2**i), a * 4 * 2**i, a * 2**i
        for j in range(blocks):
            p = f"audio_conv.s{i + 2}.res{j}"
            cin = dim_in if j == 0 else dim_out
            if j == 0:
                out[f"{p}.branch1.weight"] = (dim_out, cin, 1, 1)
                bn(f"{p}.branch1_bn", dim_out)
            out[f"{p}.branch2.a.weight"] = (inner, cin, 1, 1)
            bn(f"{p}.branch2.a_bn", inner)
            if i < 2:  # separable stages
                out[f"{p}.branch2.b1.weight"] = (inner, inner, 3, 1)
                bn(f"{p}.branch2.b1_bn", inner)
                out[f"{p}.branch2.b2.weight"] = (inner, inner, 1, 3)
                bn(f"{p}.branch2.b2_bn", inner)
            else:
                out[f"{p}.branch2.b.weight"] = (inner, inner, 3, 3)
                bn(f"{p}.branch2.b_bn", inner)
            out[f"{p}.branch2.c.weight"] = (dim_out, inner, 1, 1)
            bn(f"{p}.branch2.c_bn", dim_out)
    h, r, ffn, pos = arch.hidden_size, arch.orthogonal_size, arch.intermediate_size, arch.max_position_embeddings
    for m, cnn in (("visual", 32 * w), ("audio", 32 * a)):
        out[f"{m}_fc.weight"], out[f"{m}_fc.bias"] = (h, cnn), (h,)
        out[f"{m}_norm.weight"], out[f"{m}_norm.bias"] = (h,), (h,)
    out["summary_encoding.bos_embeddings.weight"] = (2, h)
    for e in ("single_visual_embeddings", "single_audio_embeddings", "multi_embeddings"):
        out[f"{e}.position_embeddings.weight"] = (pos, h)
        out[f"{e}.LayerNorm.weight"], out[f"{e}.LayerNorm.bias"] = (h,), (h,)
    out["multi_embeddings.token_type_embeddings.weight"] = (2, h)

    def factor(prefix: str, size_in: int, size_out: int) -> None:
        for g in range(3):  # visual, audio, multimodal
            out[f"{prefix}.ms{g}_linear.weight"] = (r, size_in)
            for name in ("A", "base", "_B"):
                out[f"{prefix}.orthogonal_ms{g}_linear.{name}"] = (r, r)
        out[f"{prefix}.s_linear.weight"], out[f"{prefix}.s_linear.bias"] = (size_out, r), (size_out,)

    for t in ("transformer", "single_visual_transformer", "single_audio_transformer", "multi_transformer"):
        p = f"{t}.encoder.albert_layer_groups.0.albert_layers.0"
        out[f"{p}.full_layer_layer_norm.weight"], out[f"{p}.full_layer_layer_norm.bias"] = (h,), (h,)
        for name in ("query", "key", "value", "dense"):
            factor(f"{p}.attention.factor_{name}", h, h)
        out[f"{p}.attention.LayerNorm.weight"], out[f"{p}.attention.LayerNorm.bias"] = (h,), (h,)
        factor(f"{p}.factor_ffn", h, ffn)
        factor(f"{p}.factor_ffn_output", ffn, h)
    return out


def released_state(arch: AVBertArch, seed: int = 0) -> OrderedDict[str, torch.Tensor]:
    """Random values in the released layout; the four copies of the shared transformer are equal
    (they are one module in the authors' model), orthogonal bases are orthogonal."""
    g = torch.Generator().manual_seed(seed)
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    shared: dict[str, torch.Tensor] = {}
    for key, shape in released_shapes(arch).items():
        short = key.split(".encoder.", 1)[1] if ".encoder." in key else None
        if short is not None and short in shared:
            state[key] = shared[short].clone()
            continue
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=g) + 0.5
        elif key.endswith(".base"):
            value = torch.linalg.qr(torch.randn(shape, generator=g))[0]
        elif key.endswith(("norm.weight", "LayerNorm.weight", "_bn.weight", ".bn.weight", "bn1.weight", "bn2.weight")):
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            value = 0.3 * torch.randn(shape, generator=g)
        state[key] = value
        if short is not None:
            shared[short] = value
    state["pretrain_head.projection.weight"] = torch.randn(3, 3, generator=g)  # skipped like the reference
    return state


def write_checkpoint(path: Path, state: dict, **extra: object) -> Path:
    """A training container: torch.save of {'epoch', 'state_dict', 'optimizer'}."""
    optimizer = {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0]}]}
    torch.save({"epoch": 100, "state_dict": state, "optimizer": optimizer, **extra}, path)
    return path


def fine_tuning_state(state: dict, arch: AVBertArch = TINY) -> OrderedDict[str, torch.Tensor]:
    """The released file's state dict: the fine-tuning wrapper's, AVBert's keys under `avbert.`
    and the heads beside them (tests/fixtures/avbert/checkpoint.json lists the real file's keys)."""
    out = OrderedDict((f"avbert.{k}", v) for k, v in state.items())
    h = arch.hidden_size
    out["concat_head.projection.weight"], out["concat_head.projection.bias"] = torch.ones(5, 4 * h), torch.zeros(5)
    out["concat_seq_head.fc1.weight"], out["concat_seq_head.ln.bias"] = torch.ones(h, 2 * h), torch.zeros(h)
    return out


def write_released(path: Path, state: dict) -> Path:
    """The released container exactly: {'state_dict': {'avbert.*', heads}, 'epoch'}."""
    torch.save({"state_dict": fine_tuning_state(state), "epoch": 10}, path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_released(tmp_path_factory.mktemp("avbert") / "checkpoint.pyth", released_state(TINY))


@pytest.fixture(scope="module")
def model(ckpt: Path) -> avbert.AVBert:
    return avbert.AVBert(ckpt, arch=TINY, views=TINY_VIEWS)


def clip(seconds: float = 1.2, height: int = 40, width: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(seconds * avbert.SAMPLE_RATE))).astype(np.float32)
    video = rng.integers(0, 256, (int(seconds * avbert.FPS), height, width, 3), dtype=np.uint8)
    return audio, video


# --------------------------------------------------------------------------- names and loading


def test_module_names_are_the_released_ones() -> None:
    """Our module's state dict is the released one minus what the reference loader skips (`_B`,
    heads): same names, same shapes, at the released size (built on the meta device) and tiny."""
    for arch in (AVBertArch(), TINY):
        with torch.device("meta"):
            ours = {k: tuple(v.shape) for k, v in AVBertModel(arch).state_dict().items()}
        released = {k: s for k, s in released_shapes(arch).items() if not k.endswith("._B")}
        assert ours == released
    full = released_shapes(AVBertArch())
    assert full["visual_fc.weight"] == (768, 2048) and full["audio_fc.weight"] == (768, 1024)
    assert full["single_visual_embeddings.position_embeddings.weight"] == (22, 768)


def test_released_checkpoint_loads_with_every_weight_in_place(model: avbert.AVBert, ckpt: Path) -> None:
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert any(k.startswith("concat_head.") for k in state)  # the released container, heads included
    loaded = model.model.state_dict()
    for key, value in loaded.items():
        assert torch.equal(value.cpu(), state["avbert." + key]), key
    layer = model.model.transformer.encoder.albert_layer_groups[0].albert_layers[0]
    assert isinstance(layer.attention.factor_query.orthogonal_ms1_linear, Orthogonal)
    assert model.model.multi_transformer.encoder.albert_layer_groups[0].albert_layers[0] is layer  # one shared module


def test_module_prefix_and_bare_state_dicts_load(tmp_path: Path) -> None:
    state = released_state(TINY, seed=1)
    prefixed = OrderedDict((f"module.{k}", v) for k, v in state.items())
    a = avbert.AVBert(write_checkpoint(tmp_path / "ddp.pyth", prefixed), arch=TINY, views=TINY_VIEWS)
    torch.save(state, tmp_path / "bare.pt")
    b = avbert.AVBert(tmp_path / "bare.pt", arch=TINY, views=TINY_VIEWS)
    for (k, x), (_, y) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(x, y), k


def test_released_prefix_is_stripped_and_other_keys_ignored(tmp_path: Path) -> None:
    """As the reference expert: keep `avbert.*` with the prefix stripped, ignore every other key
    (heads, and any key of the wrapper a module-only loader would refuse)."""
    state = released_state(TINY, seed=4)
    wrapped = fine_tuning_state(state)
    wrapped["classifier.weight"] = torch.zeros(3, 3)  # not `avbert.`, no "head" in it: still ignored
    wrapped["audio_conv.s1.stem.conv1.weight"] = torch.zeros(1)  # a module-like key outside `avbert.`
    released = avbert.AVBert(write_checkpoint(tmp_path / "r.pyth", wrapped), arch=TINY, views=TINY_VIEWS)
    torch.save(state, tmp_path / "bare.pt")
    bare = avbert.AVBert(tmp_path / "bare.pt", arch=TINY, views=TINY_VIEWS)
    assert released.model.state_dict().keys() == bare.model.state_dict().keys()
    for (k, x), (_, y) in zip(released.model.state_dict().items(), bare.model.state_dict().items()):
        assert torch.equal(x, y), k
    ddp = OrderedDict((f"module.{k}", v) for k, v in wrapped.items())  # the wrapper saved from DDP
    avbert.AVBert(write_checkpoint(tmp_path / "ddp.pyth", ddp), arch=TINY, views=TINY_VIEWS)


def test_transformer_under_one_name_only_is_enough(tmp_path: Path) -> None:
    state = released_state(TINY, seed=2)
    others = ("transformer.", "single_visual_transformer.", "single_audio_transformer.")
    only_multi = OrderedDict((k, v) for k, v in state.items() if not k.startswith(others))
    m = avbert.AVBert(write_checkpoint(tmp_path / "c.pyth", only_multi), arch=TINY, views=TINY_VIEWS)
    key = "transformer.encoder.albert_layer_groups.0.albert_layers.0.factor_ffn.s_linear.weight"
    assert torch.equal(m.model.state_dict()[key], state["multi_" + key])


# --------------------------------------------------------------------------- errors


def test_no_checkpoint_names_the_release() -> None:
    with pytest.raises(UpstreamError, match="sangho-vision/avbert") as err:
        build("avbert")  # registered by importing the module
    assert "\n" not in str(err.value) and "1T55DuJq0OYSdXVnDlOrgPSTwffVKsiFY" in str(err.value)


@pytest.mark.parametrize("kind", ["missing", "truncated", "garbage", "not_avbert", "no_state_dict"])
def test_bad_files_are_one_line_errors(tmp_path: Path, ckpt: Path, kind: str) -> None:
    path = tmp_path / "x.pyth"
    if kind == "truncated":
        path.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    elif kind == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 100)
    elif kind == "not_avbert":
        write_checkpoint(path, OrderedDict(weight=torch.zeros(2)))
    elif kind == "no_state_dict":
        torch.save({"epoch": 3, "model": {"a": 1}}, path)
    with pytest.raises(UpstreamError) as err:
        avbert.AVBert(path, arch=TINY, views=TINY_VIEWS)
    message = str(err.value)
    assert "\n" not in message and message.startswith("avbert")
    assert kind != "missing" or "does not exist" in message and "sangho-vision/avbert" in message


@pytest.mark.parametrize("layout", ["bare", "released"])
@pytest.mark.parametrize("change", ["drop", "extra", "shape"])
def test_key_mismatches_are_one_line_errors(tmp_path: Path, change: str, layout: str) -> None:
    """Keys or shapes that do not match the model are refused, also under the released `avbert.` prefix."""
    state = released_state(TINY, seed=3)
    if change == "drop":
        del state["audio_conv.s4.res2.branch2.b.weight"]
        expected = "missing"
    elif change == "extra":
        state["visual_conv.s6.pathway0_res0.branch2.a.weight"] = torch.zeros(1)
        expected = "unexpected"
    else:
        state["visual_fc.weight"] = torch.zeros(TINY.hidden_size, 7)
        expected = "shape"
    if layout == "released":
        state = fine_tuning_state(state)
    with pytest.raises(UpstreamError, match=expected) as err:
        avbert.AVBert(write_checkpoint(tmp_path / "c.pyth", state), arch=TINY, views=TINY_VIEWS)
    assert "\n" not in str(err.value) and str(err.value).startswith("avbert: ")


def test_too_many_windows_for_the_position_table(ckpt: Path) -> None:
    with pytest.raises(UpstreamError, match="positions"):
        avbert.AVBert(ckpt, arch=TINY, views=avbert.AVBertViews(num_views=6, crop_size=32))


# --------------------------------------------------------------------------- preprocessing


def test_window_constants_match_the_reference_config() -> None:
    arch, views = AVBertArch(), avbert.AVBertViews()
    assert avbert.window_frames(arch, views) == 64.0  # 32 frames at stride 2, at 30 fps
    assert avbert.window_samples(arch, views) == 94080  # int(44100 * 32 * 2 / 30), 2.13 s
    assert (views.num_views, views.num_crops, views.crop_size, views.mean, views.std) == (10, 3, 128, 0.45, 0.225)
    assert (arch.audio_frequency, arch.audio_time, avbert.SAMPLE_RATE, avbert.FPS) == (80, 128, 44100, 30.0)


def test_frame_sampling_spreads_windows_over_the_clip() -> None:
    arch, views = AVBertArch(), avbert.AVBertViews()
    index, delta, starts = avbert.frame_indices(300, arch, views)
    assert index.shape == (10, 32) and delta == 236.0
    assert index[0].tolist() == torch.linspace(0, 63, 32).long().tolist()
    assert index[0, 0] == 0 and index[-1, -1] == 299  # first window at the start, last at the end
    assert set(index[0].diff().tolist()) <= {2, 3}  # stride 2 (63 / 31 apart)
    assert starts == pytest.approx([236 * i / 9 for i in range(10)])
    short, delta, _ = avbert.frame_indices(20, arch, views)
    assert delta == 0 and (short == short[0]).all() and short.max() == 19  # one window, clamped


def test_audio_windows_follow_the_video_windows() -> None:
    size, s = 94080, 10 * avbert.SAMPLE_RATE
    _, delta, starts = avbert.frame_indices(300, AVBertArch(), avbert.AVBertViews())
    aligned = avbert.audio_starts(s, size, 10, (delta, starts))
    assert aligned[0] == 0 and aligned[-1] == s - size
    assert aligned == avbert.audio_starts(s, size, 10, None)  # same without the video stream
    assert avbert.audio_starts(s, size, 10, (0.0, [0.0] * 10)) == [0] * 10  # video shorter than a window
    assert avbert.audio_starts(50000, size, 10, None) == [0] * 10


def test_log_mel_is_torchaudio_with_the_reference_parameters() -> None:
    wave = torch.sin(torch.arange(94080) * 2 * math.pi * 1000 / 44100) * 0.5
    mel = avbert.log_mel(wave, 80, 128)
    spec = torchaudio.transforms.MelSpectrogram(
        44100, n_fft=1472, win_length=1472, hop_length=736, n_mels=80,
        center=True, pad_mode="reflect", power=2.0, mel_scale="htk",
    )  # fmt: skip
    assert mel.shape == (1, 80, 128)
    torch.testing.assert_close(mel, torch.log(1e-6 + spec(wave.view(1, -1))))
    short = avbert.log_mel(wave[:20000], 80, 128)  # n_fft 2 * (156 + 1), 128 frames, none left over
    assert short.shape == (1, 80, 128)
    tiny = avbert.log_mel(wave[:1000], 80, 128)  # n_fft 16, hop 8: 126 frames, then zeros
    assert (tiny[..., 126:] == 0).all() and (tiny[..., :126] != 0).any()


def test_audio_windows_pad_short_audio() -> None:
    arch, views = AVBertArch(), avbert.AVBertViews()
    out = avbert.audio_windows(torch.zeros(100), arch, views, None)
    assert out.shape == (10, 1, 80, 128)
    assert torch.allclose(out[:, :, :, :23], torch.tensor(math.log(1e-6)))  # 16,385 silent samples: 23 frames


def test_video_windows_scale_crop_and_normalise() -> None:
    arch = AVBertArch(num_frames=4)
    views = avbert.AVBertViews(num_views=2)
    t, h, w = 30, 192, 256
    video = torch.zeros(t, h, w, 3, dtype=torch.uint8)
    video[..., 0] = torch.arange(w, dtype=torch.uint8)  # red = source column
    video[..., 1] = 115
    video[..., 2] = torch.arange(t, dtype=torch.uint8)[:, None, None]  # blue = frame number
    clips, _, _ = avbert.video_windows(video, arch, views)
    assert clips.shape == (3, 2, 3, 4, 128, 128)
    raw = clips * 0.225 + 0.45  # undo the normalisation
    torch.testing.assert_close(clips[:, :, 1], torch.full_like(clips[:, :, 1], (115 / 255 - 0.45) / 0.225))
    # short side 192 → 128, long side floor(256 / 192 · 128) = 170; crops at x = 0, 21, 42
    scale = w / 170
    for c, x0 in enumerate((0, 21, 42)):
        cols = (raw[c, 0, 0, 0, 0] * 255).round()
        assert cols.tolist() == [math.floor((x0 + j) * scale) for j in range(128)]
    frames = (raw[0, :, 2, :, 0, 0] * 255).round()  # windows: linspace(0, 7, 4) and linspace(22, 29, 4)
    assert frames.tolist() == [[0, 2, 4, 7], [22, 24, 26, 29]]
    portrait = avbert.video_windows(video.transpose(1, 2), arch, views)[0]
    assert portrait.shape == (3, 2, 3, 4, 128, 128)
    assert not torch.equal(portrait[0], portrait[2])  # top and bottom crops differ


# --------------------------------------------------------------------------- components


def _bn_like(ours: torch.nn.BatchNorm2d | torch.nn.BatchNorm3d, theirs: torch.nn.BatchNorm2d) -> None:
    theirs.weight.data = ours.weight.data.clone()
    theirs.bias.data = ours.bias.data.clone()
    theirs.running_mean.data = ours.running_mean.data.clone()
    theirs.running_var.data = ours.running_var.data.clone()


def _randomise(module: torch.nn.Module) -> None:
    g = torch.Generator().manual_seed(7)
    for name, t in module.state_dict().items():
        if t.is_floating_point():
            value = torch.rand(t.shape, generator=g) + 0.5 if "running_var" in name else 0.3 * torch.randn(t.shape, generator=g)
            t.copy_(value)


def _torchvision_bottleneck(block: AudioResBlock | VideoResBlock, dim_in: int, planes: int, stride: int) -> Bottleneck:
    conv = torch.nn.Conv2d(dim_in, planes * 4, 1, stride=stride, bias=False)
    down = torch.nn.Sequential(conv, torch.nn.BatchNorm2d(planes * 4))
    ref = Bottleneck(dim_in, planes, stride=stride, downsample=down).eval()
    b = block.branch2
    for ours, theirs in ((b.a, ref.conv1), (b.b, ref.conv2), (b.c, ref.conv3), (block.branch1, down[0])):
        theirs.weight.data = ours.weight.data.reshape(theirs.weight.shape).clone()
    for ours, theirs in ((b.a_bn, ref.bn1), (b.b_bn, ref.bn2), (b.c_bn, ref.bn3), (block.branch1_bn, down[1])):
        _bn_like(ours, theirs)
    return ref


def test_audio_bottleneck_is_torchvision_bottleneck() -> None:
    block = AudioResBlock(32, 64, 16, stride=2, groups=1, dilation=1, separable=False, eps=1e-5).eval()
    _randomise(block)
    ref = _torchvision_bottleneck(block, 32, 16, 2)
    x = torch.randn(2, 32, 10, 16)
    torch.testing.assert_close(block(x), ref(x))


def test_video_bottleneck_without_temporal_kernel_is_torchvision_per_frame() -> None:
    block = VideoResBlock(32, 64, 16, kt=1, stride=2, groups=1, dilation=1, eps=1e-5).eval()
    _randomise(block)
    ref = _torchvision_bottleneck(block, 32, 16, 2)
    x = torch.randn(2, 32, 3, 12, 12)
    per_frame = ref(x.transpose(1, 2).flatten(0, 1)).view(2, 3, 64, 6, 6).transpose(1, 2)
    torch.testing.assert_close(block(x), per_frame)


def test_orthogonal_matrix_is_base_times_exponential_of_the_skew_part() -> None:
    orth = Orthogonal(6, "static")
    with torch.no_grad():
        orth.A.copy_(torch.randn(6, 6))
        orth.base.copy_(torch.linalg.qr(torch.randn(6, 6))[0])
    upper = np.triu(orth.A.detach().numpy().astype(np.float64), 1)
    expected = orth.base.numpy() @ scipy.linalg.expm(upper - upper.T)
    np.testing.assert_allclose(orth.matrix().numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(orth.matrix().T @ orth.matrix(), np.eye(6), atol=1e-5)
    with torch.no_grad():
        orth.A.zero_()  # the cache follows the weights
    torch.testing.assert_close(orth.matrix(), orth.base)


def test_shared_layers_are_hugging_face_albert() -> None:
    """Without the low-rank factorisation the authors' encoder is ALBERT's: same names, same
    post-LN layer, one layer group applied num_hidden_layers times."""
    from transformers import AlbertConfig
    from transformers.models.albert.modeling_albert import AlbertTransformer

    arch = AVBertArch(hidden_size=16, num_attention_heads=4, intermediate_size=32, num_hidden_layers=3, use_decomposition=False)
    ours = Albert(arch, groups=3).eval()
    _randomise(ours)
    x = torch.randn(2, 5, 16)
    states = ours(x, modality=1)
    assert len(states) == 4 and states[0] is x
    for layers in (1, 3):
        cfg = AlbertConfig(
            embedding_size=16, hidden_size=16, num_attention_heads=4, intermediate_size=32, num_hidden_layers=layers,
            hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        )  # fmt: skip
        cfg._attn_implementation = "eager"
        ref = AlbertTransformer(cfg).eval()
        missing, unexpected = ref.load_state_dict(ours.encoder.state_dict(), strict=False)
        assert unexpected == [] and set(missing) == {"embedding_hidden_mapping_in.weight", "embedding_hidden_mapping_in.bias"}
        with torch.no_grad():
            ref.embedding_hidden_mapping_in.weight.copy_(torch.eye(16))
            ref.embedding_hidden_mapping_in.bias.zero_()
        torch.testing.assert_close(states[layers], ref(x).last_hidden_state)


# --------------------------------------------------------------------------- tracks


def test_tracks_layers_and_frames(model: avbert.AVBert) -> None:
    info = {t: (i.num_layers, i.dim, i.frame_rate, i.frames_per_clip) for t, i in model.tracks.items()}
    assert info == {"audio": (4, 16, 0.0, 3), "video": (4, 16, 0.0, 9), "fusion": (4, 16, 0.0, 18)}
    audio, video = clip()
    out = model.extract(["audio", "video", "fusion"], audio, video)
    assert {t: x.shape for t, x in out.items()} == {"audio": (3, 4, 16), "video": (9, 4, 16), "fusion": (18, 4, 16)}
    assert all(np.isfinite(x).all() for x in out.values())
    full = AVBertArch()
    assert (full.num_states, full.hidden_size) == (7, 768)  # the released model: 7 × 768 per track


def test_needs_and_config(model: avbert.AVBert) -> None:
    assert model.needs(["audio"]) == (44100, None)
    assert model.needs(["video"]) == (None, 30.0)
    assert model.needs(["fusion"]) == (44100, 30.0)
    cfg = model.config()
    assert cfg["preprocessing"]["window_samples"] == 11760 and cfg["views"]["crop_combine"] == "time"
    assert cfg["architecture"]["orthogonal_size"] == 4 and cfg["frames_per_clip"] == {"audio": 3, "video": 9, "fusion": 18}


def test_tracks_are_the_reference_passes(model: avbert.AVBert) -> None:
    """audio = the audio-only pass; video = each crop's video-only pass, interleaved token-major;
    fusion = the multimodal pass on both passes' last states, per crop, interleaved the same way."""
    audio, video = clip(seed=1)
    out = model.extract(["audio", "video", "fusion"], audio, video)
    m, arch, views = model.model, TINY, TINY_VIEWS
    with torch.inference_mode():
        clips, delta, starts = avbert.video_windows(torch.from_numpy(video), arch, views)
        mels = avbert.audio_windows(torch.from_numpy(audio), arch, views, (delta, starts))
        a = m.encode_single(m.audio_tokens(mels[None]), "audio")
        for c in range(3):
            v = m.encode_single(m.visual_tokens(clips[c][None]), "visual")
            f = m.encode_multi(v[-1], a[-1])
            for layer in range(4):
                np.testing.assert_allclose(out["video"][c::3, layer], v[layer][0].numpy(), rtol=1e-5, atol=1e-5)
                np.testing.assert_allclose(out["fusion"][c::3, layer], f[layer][0].numpy(), rtol=1e-5, atol=1e-5)
    for layer in range(4):
        np.testing.assert_allclose(out["audio"][:, layer], a[layer][0].numpy(), rtol=1e-5, atol=1e-5)
    # layer 0 is the embeddings' output: LayerNorm(x + position [+ token type]), BOS of the modality first
    sd, ln = m.state_dict(), torch.nn.functional.layer_norm
    with torch.inference_mode():
        tokens = torch.cat([sd["summary_encoding.bos_embeddings.weight"][1:2], m.audio_tokens(mels[None])[0]])
        e = sd["single_audio_embeddings.position_embeddings.weight"][:3]
        w, b = sd["single_audio_embeddings.LayerNorm.weight"], sd["single_audio_embeddings.LayerNorm.bias"]
        audio0 = ln(tokens + e, (16,), w, b, 1e-12)
        np.testing.assert_allclose(out["audio"][:, 0], audio0.numpy(), rtol=1e-5, atol=1e-5)
        # modality-specific factors: audio pass uses group 1, the multimodal pass group 2
        np.testing.assert_allclose(out["audio"][:, 3], m.transformer(audio0[None], 1)[3][0].numpy(), rtol=1e-5, atol=1e-5)
        v = m.encode_single(m.visual_tokens(clips[0][None]), "visual")[-1][0]
        x = torch.cat([v, a[-1][0]])  # [visual BOS, visual tokens, audio BOS, audio tokens]
        x = x + sd["multi_embeddings.position_embeddings.weight"][[0, 1, 2, 0, 1, 2]]
        x = x + sd["multi_embeddings.token_type_embeddings.weight"][[0, 0, 0, 1, 1, 1]]
        w, b = sd["multi_embeddings.LayerNorm.weight"], sd["multi_embeddings.LayerNorm.bias"]
        fusion0 = ln(x, (16,), w, b, 1e-12)
        np.testing.assert_allclose(out["fusion"][0::3, 0], fusion0.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(out["fusion"][0::3, 3], m.transformer(fusion0[None], 2)[3][0].numpy(), rtol=1e-5, atol=1e-5)


def test_factor_linear_is_projection_normalisation_rotation_and_shared_map() -> None:
    layer = FactorLinear(3, 8, 4, 6, "static")
    _randomise(layer)
    x = torch.randn(5, 8)
    for m in range(3):
        w = getattr(layer, f"ms{m}_linear").weight.detach().numpy().astype(np.float64)
        orth = getattr(layer, f"orthogonal_ms{m}_linear")
        upper = np.triu(orth.A.detach().numpy().astype(np.float64), 1)
        rotation = orth.base.numpy() @ scipy.linalg.expm(upper - upper.T)
        y = x.numpy() @ w.T
        y = y / np.linalg.norm(y, axis=-1, keepdims=True)
        expected = y @ rotation @ layer.s_linear.weight.detach().numpy().T + layer.s_linear.bias.detach().numpy()
        np.testing.assert_allclose(layer(x, m).detach().numpy(), expected, rtol=1e-4, atol=1e-4)


def test_crop_mean_has_the_same_time_mean(ckpt: Path, model: avbert.AVBert) -> None:
    mean = avbert.AVBert(ckpt, arch=TINY, views=avbert.AVBertViews(num_views=2, crop_size=32, crop_combine="mean"))
    audio, video = clip(seed=2)
    interleaved = model.extract(["video", "fusion"], audio, video)
    averaged = mean.extract(["video", "fusion"], audio, video)
    assert averaged["video"].shape == (3, 4, 16) and averaged["fusion"].shape == (6, 4, 16)
    for t in ("video", "fusion"):
        np.testing.assert_allclose(averaged[t], interleaved[t].reshape(-1, 3, 4, 16).mean(1), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(averaged[t].mean(0), interleaved[t].mean(0), rtol=1e-5, atol=1e-5)


def test_batch_equals_one_by_one_and_tracks_are_independent(model: avbert.AVBert) -> None:
    a1, v1 = clip(1.2, seed=3)
    a2, v2 = clip(2.5, 36, 30, seed=4)  # longer clip, portrait frames
    together = model.extract_batch(["audio", "video", "fusion"], [(a1, v1), (a2, v2)])
    for (a, v), got in zip([(a1, v1), (a2, v2)], together):
        alone = model.extract(["audio", "video", "fusion"], a, v)
        for t in alone:
            np.testing.assert_allclose(got[t], alone[t], rtol=1e-5, atol=1e-5)
    only_video = model.extract(["video"], None, v1)
    np.testing.assert_allclose(only_video["video"], together[0]["video"], rtol=1e-5, atol=1e-5)
    only_audio = model.extract(["audio"], a2, None)  # windows spread over the audio alone: same starts here
    np.testing.assert_allclose(only_audio["audio"], together[1]["audio"], rtol=1e-5, atol=1e-5)
    silent = model.extract(["fusion"], np.zeros_like(a1), v1)["fusion"]
    assert not np.allclose(silent, together[0]["fusion"])  # fusion sees the audio


def test_forward_errors(model: avbert.AVBert) -> None:
    audio, video = clip()
    with pytest.raises(UpstreamError, match="avbert has no 'speech' track; it offers: audio, video, fusion"):
        model.forward("speech", torch.from_numpy(audio), torch.from_numpy(video))
    with pytest.raises(ValueError, match="needs the video stream"):
        model.forward("fusion", torch.from_numpy(audio), None)
    with pytest.raises(ValueError, match="no video frames"):
        model.forward("video", None, torch.zeros(0, 40, 48, 3, dtype=torch.uint8))
    layers = model.forward("video", None, torch.from_numpy(video))
    assert len(layers) == 4 and layers[0].shape == (9, 16)


def test_base_size_end_to_end(tmp_path: Path) -> None:
    """The released size on real input sizes (128² crops of 32 frames, 80 × 128 mels of 94,080
    samples), with 2 windows and 1 crop to stay cheap: 7 layers × 768 per track."""
    torch.manual_seed(0)
    path = tmp_path / "base.pyth"
    torch.save({"epoch": 1, "state_dict": AVBertModel(AVBertArch()).state_dict()}, path)
    base = avbert.AVBert(path, views=avbert.AVBertViews(num_views=2, num_crops=1))
    audio, video = clip(2.5, 120, 160, seed=5)
    out = base.extract(["audio", "video", "fusion"], audio, video)
    assert {t: x.shape for t, x in out.items()} == {"audio": (3, 7, 768), "video": (3, 7, 768), "fusion": (6, 7, 768)}
    assert all(np.isfinite(x).all() for x in out.values())
