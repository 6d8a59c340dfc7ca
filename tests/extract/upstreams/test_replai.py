"""replai: loads checkpoints in the authors' released layout, preprocesses as the AV-SUPERB
reference, computes AVID's R(2+1)D-18 as torchvision's R(2+1)D-18 does once AVID's three
differences are put in, and batches without cross-talk."""

from __future__ import annotations

import collections
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.video import r2plus1d_18
from torchvision.models.video.resnet import BasicBlock, BasicStem, Conv2Plus1D, VideoResNet

from avsuperb.extract.upstreams import UpstreamError, replai
from avsuperb.extract.upstreams.replai_model import pool_audio, pool_video

VIDEO_STAGES = {"conv2x": (64, 64, 1), "conv3x": (64, 128, 2), "conv4x": (128, 256, 2), "conv5x": (256, 512, 2)}
AUDIO_BLOCKS = {"block1": (64, 64, 2), "block2": (64, 128, 2), "block3": (128, 256, 2), "block4": (256, 512, 1)}
HEADS = {"video_clr": 512, "audio_clr": 512, "video_aot": 512, "audio_aot": 512, "aot_diff": 128}
PREFIX = "module.backbone."


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the released layout


def released_shapes() -> dict[str, tuple[int, ...]]:
    """Every entry of a released checkpoint's 'model' state dict, written down from the authors'
    code (HimangiM/RepLAI): DistributedDataParallel's `module.` around the SSRL_audiopeak_aotv2
    criterion, whose `backbone` ModuleDict holds `video` (models/video/avid_video.py, R2Plus1D
    depth 18) and `audio` (models/audio/avid_audio.py, Conv2D), and whose `mlp` holds the heads."""
    out: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{name}"] = (c,)
        out[f"{prefix}.num_batches_tracked"] = ()

    v = f"{PREFIX}video"
    out[f"{v}.conv1.0.weight"] = (64, 3, 3, 7, 7)
    bn(f"{v}.conv1.1", 64)
    for stage, (cin, cout, stride) in VIDEO_STAGES.items():
        for j in (0, 1):
            p, inp = f"{v}.{stage}.{j}", cin if j == 0 else cout
            out[f"{p}.spt_conv1.weight"] = (cout, inp, 1, 3, 3)
            bn(f"{p}.spt_bn1", cout)
            out[f"{p}.tmp_conv1.weight"] = (cout, cout, 3, 1, 1)
            bn(f"{p}.tmp_bn1", cout)
            out[f"{p}.spt_conv2.weight"] = (cout, cout, 1, 3, 3)
            bn(f"{p}.spt_bn2", cout)
            out[f"{p}.tmp_conv2.weight"] = (cout, cout, 3, 1, 1)
            bn(f"{p}.out_bn", cout)
            if j == 0 and (cin != cout or stride != 1):
                out[f"{p}.res_conv.weight"] = (cout, cin, 1, 1, 1)
    a = f"{PREFIX}audio"
    out[f"{a}.conv1.0.weight"] = (64, 1, 7, 7)
    bn(f"{a}.conv1.1", 64)
    for block, (cin, cout, _) in AUDIO_BLOCKS.items():
        out[f"{a}.{block}.conv1.weight"] = (cout, cin, 3, 3)
        bn(f"{a}.{block}.bn1", cout)
        out[f"{a}.{block}.conv2.weight"] = (cout, cout, 3, 3)
        bn(f"{a}.{block}.bn2", cout)
    for head, inp in HEADS.items():
        out[f"module.mlp.{head}.0.weight"], out[f"module.mlp.{head}.0.bias"] = (512, inp), (512,)
        out[f"module.mlp.{head}.2.weight"], out[f"module.mlp.{head}.2.bias"] = (128, 512), (128,)
    return out


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = torch.tensor(5000)
        elif leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
            out[name] = 0.5 + torch.rand(shape, generator=gen)
        elif leaf in ("bias", "running_mean"):
            out[name] = 0.1 * torch.randn(shape, generator=gen)
        else:
            out[name] = torch.randn(shape, generator=gen) / math.sqrt(math.prod(shape[1:]))
    return out


def payload(state: dict[str, torch.Tensor]) -> dict:
    """What the authors' CheckpointManager saves: model, optimizer and sampler state dicts and the epoch."""
    return {
        "model": collections.OrderedDict(state),
        "optimizer": {"state": {}, "param_groups": [{"lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4, "params": [0, 1]}]},
        "sampler": {"num_batches_seen": 0, "epoch": 100},
        "epoch": 100,
    }


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    weights = random_weights(released_shapes(), seed=0)
    path = tmp_path_factory.mktemp("replai") / "replai_ego4d.pth"
    torch.save(payload(weights), path)
    return path, weights


@pytest.fixture(scope="module")
def model(released):
    return replai.RepLAI(released[0])


def clip(seconds: float, seed: int, size: tuple[int, int] = (120, 160)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32)
    video = rng.integers(0, 256, size=(round(seconds * 16), *size, 3), dtype=np.uint8)
    return audio, video


def test_released_checkpoint_loads_every_backbone_weight(released, model):
    path, weights = released
    got = model.model.state_dict()
    backbone = {k[len(PREFIX) :]: v for k, v in weights.items() if k.startswith(PREFIX)}
    assert set(got) == set(backbone)  # no missing or unexpected keys
    for name, value in backbone.items():
        assert torch.equal(got[name], value), name  # the checkpoint's values, not a fresh initialisation

    assert {t: (i.num_layers, i.dim, i.frame_rate) for t, i in model.tracks.items()} == {"audio": (1, 512, 0.5), "video": (1, 512, 2.0)}
    assert model.needs(["audio"]) == (16000, None) and model.needs(["video"]) == (None, 16.0)
    assert model.needs(["audio", "video"]) == (16000, 16.0)
    conf = model.config()
    audio, video = conf["preprocessing"]["audio"], conf["preprocessing"]["video"]
    assert (audio["n_fft"], audio["hop_length"], audio["num_mels"], audio["mean"], audio["std"]) == (512, 256, 80, -7.03, 4.66)
    assert (video["fps"], video["short_side"], video["crop"], video["mean"]) == (16.0, 128, 112, [0.485, 0.456, 0.406])
    assert conf["pooling"]["video_frames_per_bin"] == 8 and conf["pooling"]["audio_mel_frames_per_bin"] == 128
    assert conf["fusion"] is None


def test_backbone_without_ddp_prefix_loads_and_heads_are_ignored(released, monkeypatch):
    _, weights = released
    bare = {k.replace("module.", "", 1): v for k, v in weights.items()}  # saved without DistributedDataParallel
    monkeypatch.setattr(replai, "read_checkpoint", lambda path, model, expected="": payload(bare))
    loaded = replai.load_checkpoint("unused.pth")
    assert torch.equal(loaded.state_dict()["video.conv5x.1.out_bn.running_var"], weights[f"{PREFIX}video.conv5x.1.out_bn.running_var"])


# --------------------------------------------------------------------------- outputs


def test_forward_gives_one_512_layer_per_track(model):
    audio, video = clip(4.2, seed=1)  # 67,200 samples → 268 mel frames → 2 bins; 67 frames → 8 bins
    out = model.extract(["audio", "video"], audio, video)
    assert out["audio"].shape == (2, 1, 512) and out["video"].shape == (8, 1, 512)
    for x in out.values():
        assert np.isfinite(x).all() and (x >= 0).all()  # a max over ReLU outputs
        assert not np.allclose(x[0], x[1])
    short_audio, short_video = clip(0.5, seed=2)  # under one training clip: one vector, not none
    assert model.extract(["audio"], short_audio, None)["audio"].shape == (1, 1, 512)
    assert model.extract(["video"], None, short_video[:3])["video"].shape == (1, 1, 512)
    layers = model.forward("video", None, torch.from_numpy(video[:16]))
    assert len(layers) == 1 and layers[0].shape == (2, 512)


def test_features_are_the_pooled_encoder_maps(model):
    audio, video = clip(4.0, seed=3)
    video = video[:32]  # 256 mel frames, 32 video frames: whole bins
    out = model.extract(["audio", "video"], audio, video)
    with torch.no_grad():
        vmap = model.model.video(replai.video_features(torch.from_numpy(video))[None])
        amap = model.model.audio(model.logmel(torch.from_numpy(audio))[None, None])
    assert vmap.shape == (1, 512, 4, 4, 4) and amap.shape == (1, 512, 16, 5)
    # video: one bin per R(2+1)D output step (temporal stride 8), max over the 4×4 positions
    np.testing.assert_allclose(out["video"][:, 0], vmap[0].amax(dim=(2, 3)).T.numpy(), rtol=1e-5, atol=1e-6)
    # audio: 128 mel frames = 8 CNN output steps per bin, max over them and the 5 frequency rows
    want = amap[0].unflatten(1, (2, 8)).amax(dim=(2, 3)).T
    np.testing.assert_allclose(out["audio"][:, 0], want.numpy(), rtol=1e-5, atol=1e-6)


def test_ragged_bins_follow_adaptive_max_pooling():
    x = torch.arange(2 * 3 * 4 * 1 * 1, dtype=torch.float32).view(1, 2, 12, 1, 1).flip(2)
    # 12 frames → 1 bin; 20 frames → 2 bins over the same 12 steps: [0, 6) and [6, 12)
    assert pool_video(x, 12).shape == (1, 1, 2) and torch.equal(pool_video(x, 12)[0, 0], x[0, :, :, 0, 0].amax(1))
    two = pool_video(x, 20)[0]
    assert torch.equal(two[1], x[0, :, 6:, 0, 0].amax(1))
    a = torch.randn(1, 3, 22, 5)  # 339 mel frames → ceil(339 / 16) = 22 steps, 2 bins of 11
    got = pool_audio(a, 339)[0]
    assert torch.equal(got[0], a[0, :, :11].amax(dim=(1, 2))) and torch.equal(got[1], a[0, :, 11:].amax(dim=(1, 2)))
    assert pool_audio(a, 100).shape == (1, 1, 3)


# --------------------------------------------------------------------------- the networks


class _FullWidth(Conv2Plus1D):
    """torchvision's (2+1)D conv with AVID's intermediate width: the block's output width."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1, padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, out_planes, stride, padding)


def _avid_stem() -> nn.Module:
    """torchvision's full 3-D stem (3×7×7 conv, BN, ReLU) followed by AVID's 1×3×3 max-pool."""
    return nn.Sequential(BasicStem(), nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))


def _torchvision_key(ours: str) -> str:
    rename = {
        "spt_conv1": "conv1.0.0", "spt_bn1": "conv1.0.1", "tmp_conv1": "conv1.0.3", "tmp_bn1": "conv1.1",
        "spt_conv2": "conv2.0.0", "spt_bn2": "conv2.0.1", "tmp_conv2": "conv2.0.3", "out_bn": "relu.0",
        "res_conv": "downsample.0",
    }  # fmt: skip
    parts = ours.split(".")
    if parts[0] == "conv1":
        return ".".join(["stem.0", *parts[1:]])
    stage, block, module, leaf = parts[0], parts[1], parts[2], ".".join(parts[3:])
    return f"layer{int(stage[4]) - 1}.{block}.{rename[module]}.{leaf}"


def test_video_encoder_is_torchvision_r2plus1d_18_with_avids_differences(model):
    """AVID's R(2+1)D-18 differs from torchvision's in three places (avid_video.py: "full Conv3D
    stem, and does not adjust for the number of dimensions between the spatial and temporal
    convolution"; and its blocks apply BN after the residual sum): torchvision's VideoResNet with
    those three put in, and the same weights, must compute exactly our encoder."""
    tv = VideoResNet(block=BasicBlock, conv_makers=[_FullWidth] * 4, layers=[2, 2, 2, 2], stem=_avid_stem)
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        for block in layer:
            planes = block.conv2[1].num_features
            block.conv2[1] = nn.Identity()  # no BN before the sum ...
            if block.downsample is not None:
                block.downsample[1] = nn.Identity()  # ... nor on the projected residual ...
            block.relu = nn.Sequential(nn.BatchNorm3d(planes), nn.ReLU())  # ... but one after it
    ours = model.model.video.state_dict()
    result = tv.load_state_dict({_torchvision_key(k): v for k, v in ours.items()}, strict=False)
    assert result.unexpected_keys == [] and sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    tv.eval()

    x = torch.randn(1, 3, 8, 112, 112, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = tv.layer4(tv.layer3(tv.layer2(tv.layer1(tv.stem(x)))))
        got = model.model.video(x)
    assert got.shape == want.shape == (1, 512, 1, 4, 4)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)

    # and why torchvision's own r2plus1d_18 weights cannot be shared: its shapes differ
    stock = {k: tuple(v.shape) for k, v in r2plus1d_18().state_dict().items()}
    assert stock["stem.0.weight"] == (45, 3, 1, 7, 7) and tuple(ours["conv1.0.weight"].shape) == (64, 3, 3, 7, 7)
    assert stock["layer1.0.conv1.0.0.weight"] == (144, 64, 1, 3, 3)  # midplanes formula
    assert tuple(ours["conv2x.0.spt_conv1.weight"].shape) == (64, 64, 1, 3, 3)
    assert "layer2.0.downsample.1.running_var" in stock  # BN on torchvision's projected residual; none on AVID's
    assert {k.split(".")[2] for k in ours if k.startswith("conv3x.0.")} == {
        "spt_conv1", "spt_bn1", "tmp_conv1", "tmp_bn1", "spt_conv2", "spt_bn2", "tmp_conv2", "out_bn", "res_conv"
    }  # fmt: skip


def test_audio_encoder_is_the_9_layer_spectrogram_cnn(model):
    """conv1 (7×7 stride 2) then four blocks of two 3×3 conv–BN–ReLU layers, no residual, written
    out with torch.nn.functional on the module's own weights."""
    sd = model.model.audio.state_dict()

    def conv_bn_relu(x, conv, bn, stride, padding):
        x = F.conv2d(x, sd[f"{conv}.weight"], stride=stride, padding=padding)
        x = F.batch_norm(x, sd[f"{bn}.running_mean"], sd[f"{bn}.running_var"], sd[f"{bn}.weight"], sd[f"{bn}.bias"], eps=1e-5)
        return F.relu(x)

    x = torch.randn(2, 1, 200, 80, generator=torch.Generator().manual_seed(1))
    want = conv_bn_relu(x, "conv1.0", "conv1.1", 2, 3)
    for block, (_, _, stride) in AUDIO_BLOCKS.items():
        want = conv_bn_relu(want, f"{block}.conv1", f"{block}.bn1", stride, 1)
        want = conv_bn_relu(want, f"{block}.conv2", f"{block}.bn2", 1, 1)
    with torch.no_grad():
        got = model.model.audio(x)
    assert got.shape == (2, 512, 13, 5)  # ceil(200 / 16) time steps, 80 / 16 mel rows
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        assert model.model.audio(torch.zeros(1, 1, 1, 80)).shape == (1, 512, 1, 5)


# --------------------------------------------------------------------------- preprocessing


def _htk_mel_filters(n_freqs: int = 257, n_mels: int = 80, sample_rate: int = 16000) -> np.ndarray:
    """Triangular filters between HTK-mel-spaced edges from 0 Hz to Nyquist, unnormalised: [n_freqs, n_mels]."""
    hz_to_mel = lambda f: 2595.0 * np.log10(1.0 + f / 700.0)  # noqa: E731
    edges = 700.0 * (10 ** (np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2) / 2595.0) - 1.0)
    freqs = np.linspace(0, sample_rate / 2, n_freqs)[:, None]
    rising = (freqs - edges[None, :-2]) / (edges[1:-1] - edges[:-2])
    falling = (edges[None, 2:] - freqs) / (edges[2:] - edges[1:-1])
    return np.maximum(0.0, np.minimum(rising, falling))


def test_log_mel_equals_an_independent_computation():
    n = 3 * 16000 + 123
    wave = (0.1 * np.random.default_rng(4).standard_normal(n)).astype(np.float64)
    got = replai.LogMel()(torch.from_numpy(wave).float()).numpy()

    frames = np.lib.stride_tricks.sliding_window_view(wave, 512)[::256]  # 32 ms windows, 16 ms hop, no centring
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)  # periodic Hann
    power = np.abs(np.fft.rfft(frames * window, 512)) ** 2
    logmel = np.log(np.maximum(power @ _htk_mel_filters(), 1e-10))
    assert len(logmel) == 1 + (n - 512) // 256 == 186
    keep = torch.linspace(0, len(logmel) - 1, int(n / 16000 / 2.0 * 128)).long().numpy()  # 64 frames per second
    want = (logmel[keep] + 7.03) / 4.66
    assert got.shape == want.shape == (192, 80)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-4)


def test_mel_frames_are_stretched_to_64_per_second():
    wave = torch.from_numpy((0.1 * np.random.default_rng(5).standard_normal(32000)).astype(np.float32))
    feats = replai.LogMel()(wave)
    assert feats.shape == (128, 80)  # 124 frames of 2 s → 128, as the 2 s training clips
    assert int((feats[1:] == feats[:-1]).all(dim=1).sum()) == 4  # the 4 repeated frames
    assert replai.LogMel()(wave[:512]).shape == (2, 80)
    with pytest.raises(ValueError, match="shorter than one 32 ms window"):
        replai.LogMel()(wave[:511])


def _cv2_nearest(src: int, dst: int) -> list[int]:
    """cv2.resize INTER_NEAREST's source index: cvFloor(i · (1 / (dst / src))) in double precision."""
    inverse = 1.0 / (dst / src)
    return [min(math.floor(i * inverse), src - 1) for i in range(dst)]


def test_nearest_indices_are_opencvs():
    # read off cv2 4.14 (cv2.resize(..., interpolation=cv2.INTER_NEAREST) of an index ramp); the
    # exact rational floor(i · 120 / 170) would give 12, 24, 48, 60, 84
    assert replai.nearest_index(120, 170)[[17, 34, 68, 85, 119]].tolist() == [11, 23, 47, 59, 83]
    assert replai.nearest_index(90, 128)[:12].tolist() == [0, 0, 1, 2, 2, 3, 4, 4, 5, 6, 7, 7]
    assert replai.nearest_index(240, 128)[:10].tolist() == [0, 1, 3, 5, 7, 9, 11, 13, 15, 16]
    assert replai.nearest_index(320, 170)[[0, 1, 2, 84, 169]].tolist() == [0, 1, 3, 158, 318]
    assert replai.nearest_index(361, 128)[:6].tolist() == [0, 2, 5, 8, 11, 14]
    for src, dst in ((120, 170), (90, 128), (479, 169), (1080, 128)):
        assert replai.nearest_index(src, dst).tolist() == _cv2_nearest(src, dst)


@pytest.mark.parametrize(
    ("size", "resized", "offset"),
    [
        ((240, 320), (128, 170), (8, 29)),
        ((320, 240), (170, 128), (29, 8)),
        ((90, 120), (128, 170), (8, 29)),  # upscaled
        ((128, 171), (128, 171), (8, 30)),  # round(29.5) = 30
        ((361, 479), (128, 169), (8, 28)),  # round(28.5) = 28: Python rounds halves to even
    ],
)
def test_video_preprocessing_is_the_reference_transform(size, resized, offset):
    h, w = size
    assert replai.resize_size(h, w) == resized
    assert (replai.crop_offset(resized[0]), replai.crop_offset(resized[1])) == offset
    video = np.random.default_rng(h * w).integers(0, 256, size=(5, h, w, 3), dtype=np.uint8)
    rows = _cv2_nearest(h, resized[0])[offset[0] : offset[0] + 112]
    cols = _cv2_nearest(w, resized[1])[offset[1] : offset[1] + 112]
    crop = video[:, rows][:, :, cols].astype(np.float64) / 255.0
    want = ((crop - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])).transpose(3, 0, 1, 2)
    got = replai.video_features(torch.from_numpy(video)).numpy()
    assert got.shape == (3, 5, 112, 112)
    np.testing.assert_allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- errors


def test_no_checkpoint_says_where_to_get_one():
    with pytest.raises(UpstreamError, match=r"needs --checkpoint PATH.*github\.com/HimangiM/RepLAI") as err:
        replai.RepLAI()
    assert "\n" not in str(err.value)


def test_bad_files_are_one_line_errors(tmp_path):
    small = tmp_path / "small.pth"
    torch.save(payload({f"{PREFIX}video.conv1.0.weight": torch.zeros(64, 3, 3, 7, 7)}), small)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(small.read_bytes()[: small.stat().st_size // 2])
    noise = tmp_path / "noise.pth"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    hubert = tmp_path / "hubert_base_ls960.pt"
    torch.save({"cfg": {}, "model": {"feature_extractor.conv_layers.0.0.weight": torch.zeros(8, 1, 10)}}, hubert)
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], listed)
    expected = {
        truncated: "cannot read .* as a PyTorch checkpoint",
        noise: "cannot read .* as a PyTorch checkpoint",
        hubert: "not a RepLAI checkpoint: it has no module.backbone.video/audio weights",
        listed: "holds a list, not a checkpoint with a 'model' state dict",
        tmp_path / "absent.pth": "does not exist",
    }
    for path, message in expected.items():
        with pytest.raises(UpstreamError, match=message) as err:
            replai.RepLAI(path)
        text = str(err.value)
        assert "\n" not in text and text.startswith("replai") and "github.com/HimangiM/RepLAI" in text, text


def test_missing_unexpected_or_reshaped_weights_are_refused(released, monkeypatch):
    _, weights = released
    cases = {
        "missing": ({k: v for k, v in weights.items() if k != f"{PREFIX}video.conv5x.1.out_bn.running_var"},
                    r"1 missing \(e\.g\. module\.backbone\.video\.conv5x\.1\.out_bn\.running_var\)"),
        "unexpected": ({**weights, f"{PREFIX}video.conv2x.0.res_conv.weight": torch.zeros(64, 64, 1, 1, 1)},
                       r"1 unexpected \(e\.g\. module\.backbone\.video\.conv2x\.0\.res_conv\.weight\)"),
        "reshaped": ({**weights, f"{PREFIX}audio.block4.conv2.weight": torch.zeros(512, 512, 1, 1)},
                     r"module\.backbone\.audio\.block4\.conv2\.weight has shape \(512, 512, 1, 1\), expected \(512, 512, 3, 3\)"),
    }  # fmt: skip
    for name, (state, message) in cases.items():
        monkeypatch.setattr(replai, "read_checkpoint", lambda path, model, expected="", s=state: payload(s))
        with pytest.raises(UpstreamError, match=message) as err:
            replai.RepLAI(f"{name}.pth")
        assert "\n" not in str(err.value)


def test_fusion_track_is_refused_naming_the_tracks_offered(model):
    audio, video = clip(1.0, seed=6)
    assert "fusion" not in model.tracks
    with pytest.raises(UpstreamError, match=r"replai has no 'fusion' track; it offers: audio, video"):
        model.extract(["audio", "fusion"], audio, video)
    with pytest.raises(UpstreamError, match="no 'fusion' track"):
        model.forward("fusion", torch.from_numpy(audio), torch.from_numpy(video))
    with pytest.raises(ValueError, match="video track needs the video stream"):
        model.extract(["video"], audio, None)


# --------------------------------------------------------------------------- batching


def test_batched_equals_one_by_one_and_batches_equal_lengths(model):
    items = [clip(0.5, seed=10), clip(0.5, seed=11, size=(96, 200)), clip(0.75, seed=12), clip(0.5, seed=13)]
    batch_sizes: list[tuple[str, int]] = []
    hooks = [
        model.model.video.register_forward_hook(lambda m, i, o: batch_sizes.append(("video", i[0].shape[0]))),
        model.model.audio.register_forward_hook(lambda m, i, o: batch_sizes.append(("audio", i[0].shape[0]))),
    ]
    try:
        batched = model.extract_batch(["audio", "video"], items)
    finally:
        for hook in hooks:
            hook.remove()
    # three 0.5 s clips share one forward pass per encoder; the 0.75 s clip runs on its own
    assert sorted(batch_sizes) == [("audio", 1), ("audio", 3), ("video", 1), ("video", 3)]
    for (audio, video), got in zip(items, batched, strict=True):
        alone = model.extract(["audio", "video"], audio, video)
        for track in ("audio", "video"):
            assert got[track].shape == alone[track].shape
            np.testing.assert_allclose(got[track], alone[track], rtol=1e-4, atol=1e-5)
