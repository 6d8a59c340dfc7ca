"""mavil: loads checkpoints in the layout the AV-SUPERB reference loads, preprocesses as the
reference, computes what the reference's expert computes (written here with timm's blocks), keeps
its frames within the store's per-clip reservation, and batches without cross-talk."""

from __future__ import annotations

import argparse
import json
import math
import warnings
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchaudio
from timm.models.vision_transformer import Block as TimmBlock
from timm.models.vision_transformer import PatchEmbed as TimmPatchEmbed
from torch import nn

from avsuperb.extract.upstreams import UpstreamError
from avsuperb.extract.upstreams import mavil
from avsuperb.extract.upstreams.mavil_model import Block, MavilArch, MavilModel, PatchEmbed

SR = 16000
TINY = {"embed_dim": 128, "depth": 2, "mlp_hidden": 256, "depth_av": 2}  # 128-d → 2 heads by the ViT rule
BASE = {"embed_dim": 768, "depth": 12, "mlp_hidden": 3072}
NUM_CLASSES = 527


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- the released layout


def released_shapes(cfg: dict, finetuned: bool) -> dict[str, tuple[int, ...]]:
    """Every weight name and shape of the reference's model, written down from
    upstream_models/mavil/models_vitmm.py (VisionTransformerMM: timm 0.3.2 VisionTransformer with
    global_pool, so no `norm` and no `head`; blocks_v; blocks_av; fc_norm_av + head_av when
    fine-tuned), util/patch_embed.py (PatchEmbed_new on 1024×128, PatchEmbed3D_new on 8×224×224)
    and expert.py (`pos_embed` rebuilt for 512 + 1 positions)."""
    d, h = cfg["embed_dim"], cfg["mlp_hidden"]
    out: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d),
        "pos_embed": (1, 64 * 8 + 1, d),
        "patch_embed.proj.weight": (d, 1, 16, 16),
        "patch_embed.proj.bias": (d,),
        "cls_token_v": (1, 1, d),
        "pos_embed_v": (1, 4 * 14 * 14 + 1, d),
        "patch_embed_v.proj.weight": (d, 3, 2, 16, 16),
        "patch_embed_v.proj.bias": (d,),
    }
    depth_av = cfg.get("depth_av", 3 if finetuned else 2)
    for prefix, n in (("blocks", cfg["depth"]), ("blocks_v", cfg["depth"]), ("blocks_av", depth_av)):
        for i in range(n):
            p = f"{prefix}.{i}"
            out |= {
                f"{p}.norm1.weight": (d,), f"{p}.norm1.bias": (d,),
                f"{p}.attn.qkv.weight": (3 * d, d), f"{p}.attn.qkv.bias": (3 * d,),
                f"{p}.attn.proj.weight": (d, d), f"{p}.attn.proj.bias": (d,),
                f"{p}.norm2.weight": (d,), f"{p}.norm2.bias": (d,),
                f"{p}.mlp.fc1.weight": (h, d), f"{p}.mlp.fc1.bias": (h,),
                f"{p}.mlp.fc2.weight": (d, h), f"{p}.mlp.fc2.bias": (d,),
            }  # fmt: skip
    if finetuned:
        out |= {"fc_norm_av.weight": (2 * d,), "fc_norm_av.bias": (2 * d,)}
        out |= {"head_av.weight": (NUM_CLASSES, 2 * d), "head_av.bias": (NUM_CLASSES,)}
    return out


def random_state(cfg: dict, finetuned: bool, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in released_shapes(cfg, finetuned).items():
        if "norm" in name and name.endswith("weight"):
            state[name] = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            state[name] = 0.05 * torch.randn(shape, generator=g)
    return state


def write_checkpoint(path: Path, state: dict, **extra) -> Path:
    """The container of MAE-style training code (util/misc.py save_model), which the reference reads as ckpt['model']."""
    torch.save(
        {
            "model": state,
            "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "weight_decay": 0.05}]},
            "epoch": 99,
            "scaler": {"scale": 65536.0, "growth_factor": 2.0},
            "args": argparse.Namespace(model="vitmm_base_patch16", depth_av=3, n_frm=8, nb_classes=NUM_CLASSES),
            **extra,
        },
        path,
    )
    return path


@pytest.fixture(scope="module")
def tiny_ckpts(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("mavil")
    return {
        "pretrained": write_checkpoint(root / "pretrained.pth", random_state(TINY | {"depth_av": 2}, False, 1)),
        "finetuned": write_checkpoint(root / "finetuned.pth", random_state(TINY | {"depth_av": 3}, True, 2)),
    }


@pytest.fixture(scope="module")
def finetuned(tiny_ckpts) -> mavil.Mavil:
    return mavil.Mavil(checkpoint=tiny_ckpts["finetuned"])


@pytest.mark.parametrize("variant", ["pretrained", "finetuned"])
def test_base_model_has_exactly_the_released_weights(variant):
    shapes = released_shapes(BASE, variant == "finetuned")
    arch = MavilArch(**BASE, num_heads=12, depth_av=3 if variant == "finetuned" else 2, fc_norm_av=variant == "finetuned")
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in MavilModel(arch).state_dict().items()}
    expected = {k: v for k, v in shapes.items() if not k.startswith("head_av.")}  # the classifier is not a feature
    assert ours == expected
    assert sum(math.prod(s) for k, s in expected.items() if k.startswith(("blocks_av",))) / 1e6 == pytest.approx(
        (3 if variant == "finetuned" else 2) * 7.09, abs=0.01
    )  # two fusion blocks: the paper's 187M fusion = 86M + 87M + 14M


@pytest.mark.parametrize("variant", ["pretrained", "finetuned"])
def test_released_format_loads_with_every_weight(tiny_ckpts, variant):
    model = mavil.Mavil(checkpoint=tiny_ckpts[variant])
    state = torch.load(tiny_ckpts[variant], weights_only=False)["model"]
    ours = model.model.state_dict()
    assert set(ours) == {k for k in state if not k.startswith("head_av.")}
    for k, v in ours.items():
        torch.testing.assert_close(v, state[k])
    depth_av = 3 if variant == "finetuned" else 2
    assert model.variant == variant and model.arch.num_heads == 2 and model.arch.depth_av == depth_av
    assert model.tracks == {
        "audio": mavil.TrackInfo(3, 128, 50.0),
        "video": mavil.TrackInfo(3, 128, 1.0),
        "fusion": mavil.TrackInfo(depth_av + 1, 256, 50.0),
    }
    config = model.config()
    assert json.loads(json.dumps(config)) == config  # compares equal after the store's JSON round trip
    assert config["variant"] == variant and config["preprocessing"]["audio"]["normalize"]["mean"] == -4.2677393


def test_needs_decodes_only_the_streams_the_tracks_use(finetuned):
    assert finetuned.needs(["audio"]) == (16000, None)
    assert finetuned.needs(["video"]) == (None, 2.0)
    assert finetuned.needs(["fusion"]) == (16000, 2.0)


# --------------------------------------------------------------------------- components against timm


def test_block_equals_timm_block():
    torch.manual_seed(0)
    arch = MavilArch(embed_dim=32, depth=1, num_heads=4, mlp_hidden=64, depth_av=1)
    ref = TimmBlock(32, 4, mlp_ratio=2.0, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
    for p in ref.parameters():
        nn.init.normal_(p, std=0.2)
    ours = Block(arch).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(3, 17, 32)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-5, atol=1e-5)


def test_patch_embeddings_equal_timm_and_tubelets():
    torch.manual_seed(0)
    ref = TimmPatchEmbed(img_size=(64, 32), patch_size=16, in_chans=1, embed_dim=24)
    ours = PatchEmbed(1, 24, (16, 16))
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 1, 64, 32)
    torch.testing.assert_close(ours(x), ref(x))  # time-major: token t·2 + f

    video = PatchEmbed(3, 24, (2, 16, 16))
    v = torch.randn(2, 3, 4, 32, 48)
    tubes = v.reshape(2, 3, 2, 2, 2, 16, 3, 16).permute(0, 2, 4, 6, 1, 3, 5, 7).reshape(2, 2 * 2 * 3, -1)
    expected = tubes @ video.proj.weight.reshape(24, -1).T + video.proj.bias
    torch.testing.assert_close(video(v), expected, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- the reference's computation


def reference_inputs(wave: torch.Tensor, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """expert.py's preprocess_audio (with the AudioSet statistics its AudioSet dataset passes) and
    preprocess_video (on frames already at 2 fps), with torchvision's video transforms."""
    from torchvision.transforms import Compose, Resize

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torchvision.transforms._transforms_video import NormalizeVideo, ToTensorVideo
    w = wave[None] - wave.mean()
    fbank = torchaudio.compliance.kaldi.fbank(
        w, htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
        frame_shift=10,
    )  # fmt: skip
    p = 1024 - fbank.shape[0]
    fbank = torch.nn.ZeroPad2d((0, 0, 0, p))(fbank) if p > 0 else fbank[:1024]
    fbank = (fbank - (-4.2677393)) / (4.5689974 * 2)
    if frames.shape[0] < 8:
        frames = frames.repeat(8 // frames.shape[0] + 1, 1, 1, 1)
    transform = Compose(
        [ToTensorVideo(), Resize((224, 224), antialias=False), NormalizeVideo((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]
    )
    return fbank[None], transform(frames[:8])


def reference_features(state: dict, fbank: torch.Tensor, video: torch.Tensor, heads: int) -> dict[str, list[torch.Tensor]]:
    """expert.py's forward for one clip, with timm's Block: the pooled audio, video and fusion
    features per layer, and the audio token sequences."""
    d = state["cls_token"].shape[-1]
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0]

    def blocks(prefix: str) -> list[nn.Module]:
        out = []
        for i in range(1 + max(int(k.split(".")[1]) for k in state if k.startswith(prefix + "."))):
            b = TimmBlock(d, heads, mlp_ratio=hidden / d, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6)).eval()
            b.load_state_dict({k[len(f"{prefix}.{i}.") :]: v for k, v in state.items() if k.startswith(f"{prefix}.{i}.")})
            out.append(b)
        return out

    def encode(x, cls, pos, stack):
        x = x + pos[:, 1:]
        x = torch.cat([cls + pos[:, :1], x], dim=1)
        seq, pooled = [], []
        for blk in stack:
            seq.append(x[:, 1:])
            pooled.append(x[:, 1:].mean(dim=1))
            x = blk(x)
        seq.append(x[:, 1:])
        pooled.append(x[:, 1:].mean(dim=1))
        return x, seq, pooled

    a = F.conv2d(fbank[None], state["patch_embed.proj.weight"], state["patch_embed.proj.bias"], stride=16)
    a = a.flatten(2).transpose(1, 2)
    x, audio_seq, audio_pooled = encode(a, state["cls_token"], state["pos_embed"], blocks("blocks"))
    v = F.conv3d(video[None], state["patch_embed_v.proj.weight"], state["patch_embed_v.proj.bias"], stride=(2, 16, 16))
    v, _, video_pooled = encode(v.flatten(2).transpose(1, 2), state["cls_token_v"], state["pos_embed_v"], blocks("blocks_v"))
    x_len = x.shape[1]
    xv = torch.cat([x, v], dim=1)
    fusion = []
    for blk in blocks("blocks_av"):
        fusion.append(torch.cat([xv[:, 1:x_len].mean(dim=1), xv[:, x_len + 1 :].mean(dim=1)], dim=1))
        xv = blk(xv)
    last = torch.cat([xv[:, 1:x_len].mean(dim=1), xv[:, x_len + 1 :].mean(dim=1)], dim=1)
    if "fc_norm_av.weight" in state:
        last = F.layer_norm(last, (2 * d,), state["fc_norm_av.weight"], state["fc_norm_av.bias"], eps=1e-6)
    fusion.append(last)
    return {"audio_seq": [s[0] for s in audio_seq], "audio": audio_pooled, "video": video_pooled, "fusion": fusion}


@pytest.mark.parametrize("variant", ["pretrained", "finetuned"])
def test_features_are_the_reference_experts(tiny_ckpts, variant):
    """A clip filling the whole window (10.5 s audio, 9 frames): every frame of the audio track is
    the reference's token, and each track's mean over frames is the reference's pooled feature."""
    model = mavil.Mavil(checkpoint=tiny_ckpts[variant])
    rng = np.random.default_rng(3)
    wave = (0.1 * rng.standard_normal(int(10.5 * SR))).astype(np.float32)
    frames = rng.integers(0, 256, size=(9, 40, 56, 3), dtype=np.uint8)
    ours = model.extract(["audio", "video", "fusion"], wave, frames)

    state = torch.load(tiny_ckpts[variant], weights_only=False)["model"]
    fbank, video = reference_inputs(torch.from_numpy(wave), torch.from_numpy(frames))
    with torch.no_grad():
        ref = reference_features(state, fbank, video, heads=2)

    depth_av = 3 if variant == "finetuned" else 2
    assert ours["audio"].shape == (512, 3, 128)
    assert ours["video"].shape == (4, 3, 128)
    assert ours["fusion"].shape == (512, depth_av + 1, 256)
    for layer in range(3):
        np.testing.assert_allclose(ours["audio"][:, layer], ref["audio_seq"][layer].numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours["video"][:, layer].mean(0), ref["video"][layer][0].numpy(), rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(ours["audio"][:, layer].mean(0), ref["audio"][layer][0].numpy(), rtol=1e-4, atol=1e-4)
    for layer in range(depth_av + 1):
        np.testing.assert_allclose(ours["fusion"][:, layer].mean(0), ref["fusion"][layer][0].numpy(), rtol=1e-4, atol=1e-4)
    # a fusion frame is [its audio token after the fusion blocks, the clip's video pool]: the video half is constant
    assert np.ptp(ours["fusion"][:, 0, 128:], axis=0).max() < 1e-5
    assert np.ptp(ours["fusion"][:, 0, :128], axis=0).max() > 1e-2


# --------------------------------------------------------------------------- preprocessing


def test_audio_fbank_is_the_references_normalised_kaldi_fbank():
    rng = np.random.default_rng(0)
    wave = torch.from_numpy((0.1 * rng.standard_normal(3 * SR) + 0.05).astype(np.float32))
    feats, n = mavil.audio_features(wave)
    raw = torchaudio.compliance.kaldi.fbank(
        (wave - wave.mean())[None], htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    )  # fmt: skip
    assert feats.shape == (1024, 128) and n == raw.shape[0] == 298
    torch.testing.assert_close(feats[:n], (raw - mavil.FBANK_MEAN) / (2 * mavil.FBANK_STD))
    torch.testing.assert_close(feats[n:], torch.full((1024 - n, 128), 4.2677393 / (2 * 4.5689974)))  # zero padding, normalised


def test_long_audio_is_cut_to_1024_frames():
    rng = np.random.default_rng(1)
    wave = torch.from_numpy((0.1 * rng.standard_normal(12 * SR)).astype(np.float32))
    feats, n = mavil.audio_features(wave)
    raw = torchaudio.compliance.kaldi.fbank(
        (wave - wave.mean())[None], htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    )  # fmt: skip
    assert n == 1024 and raw.shape[0] == 1198
    torch.testing.assert_close(feats, (raw[:1024] - mavil.FBANK_MEAN) / (2 * mavil.FBANK_STD))


def test_video_frames_are_sampled_repeated_resized_and_normalised():
    frames = torch.stack([torch.full((30, 50, 3), 10 * i, dtype=torch.uint8) for i in range(3)])
    x, n = mavil.video_features(frames)
    assert x.shape == (3, 8, 224, 224) and n == 3
    mean, std = torch.tensor(mavil.IMAGE_MEAN), torch.tensor(mavil.IMAGE_STD)
    order = [0, 1, 2, 0, 1, 2, 0, 1]  # repeated end to end, as the reference's video.repeat
    expected = torch.stack([((10 * i / 255.0) - mean) / std for i in order], dim=1)  # [3, 8]
    torch.testing.assert_close(x[:, :, 100, 37], expected)
    torch.testing.assert_close(x.amax(dim=(2, 3)), x.amin(dim=(2, 3)))  # constant frames stay constant

    rng = np.random.default_rng(2)
    long = torch.from_numpy(rng.integers(0, 256, size=(20, 300, 400, 3), dtype=np.uint8))  # downscaled: no antialias
    x, n = mavil.video_features(long)
    _, ref = reference_inputs(torch.zeros(SR), long)
    assert n == 8
    torch.testing.assert_close(x, ref, rtol=1e-5, atol=1e-5)  # the first 8 frames (4 s at 2 fps)


@pytest.mark.parametrize("seconds", [0.18, 0.5, 1.3, 2.0, 3.99, 6.2, 10.0, 12.0])
def test_frames_fit_the_stores_reservation(finetuned, seconds):
    """≤ ceil(duration × frame_rate) + 2 frames per clip (store/writer.py); audio keeps whole time patches."""
    rng = np.random.default_rng(4)
    wave = (0.1 * rng.standard_normal(int(seconds * SR))).astype(np.float32)
    n_video = int(round(seconds * 2.0))  # what decode gives at 2 fps
    frames = rng.integers(0, 256, size=(n_video, 8, 8, 3), dtype=np.uint8)
    tracks = ["audio", "fusion"] if n_video else ["audio"]
    out = finetuned.extract(tracks, wave, frames)
    n_frames = 1 + (len(wave) - 400) // 160
    assert all(out[t].shape[0] == 8 * (min(n_frames, 1024) // 16) for t in tracks)
    for track in tracks:
        assert out[track].shape[0] <= math.ceil(seconds * finetuned.tracks[track].frame_rate) + 2
    if n_video:
        video = finetuned.extract(["video"], None, frames)["video"]
        assert video.shape[0] == math.ceil(min(n_video, 8) / 2)
        assert video.shape[0] <= math.ceil(seconds * finetuned.tracks["video"].frame_rate) + 2


def test_short_clip_drops_padding_patches_and_repeated_tubelets(finetuned):
    rng = np.random.default_rng(5)
    wave = (0.1 * rng.standard_normal(int(2.5 * SR))).astype(np.float32)
    frames = rng.integers(0, 256, size=(5, 16, 16, 3), dtype=np.uint8)
    out = finetuned.extract(["audio", "video"], wave, frames)
    assert out["audio"].shape == (8 * (248 // 16), 3, 128)  # 248 fbank frames → 15 whole time patches
    assert out["video"].shape == (3, 3, 128)  # frames 0-4 → tubelets (0,1) (2,3) (4,0); (1,2) (3,4) are repeats

    with torch.no_grad():
        fbank, _ = mavil.audio_features(torch.from_numpy(wave))
        states = finetuned.model.encode_audio(fbank[None, None])
    np.testing.assert_allclose(out["audio"][:, 2], states[2][0, 1 : 1 + 120].numpy(), rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- batching


def test_batched_equals_one_by_one(finetuned):
    rng = np.random.default_rng(6)
    items = [
        ((0.1 * rng.standard_normal(int(s * SR))).astype(np.float32), rng.integers(0, 256, size=(t, 24, 32, 3), dtype=np.uint8))
        for s, t in ((1.1, 2), (10.4, 21), (4.0, 8))
    ]
    tracks = ["audio", "video", "fusion"]
    batched = finetuned.extract_batch(tracks, items)
    for (audio, video), got in zip(items, batched):
        alone = finetuned.extract(tracks, audio, video)
        for track in tracks:
            assert got[track].shape == alone[track].shape
            np.testing.assert_allclose(got[track], alone[track], rtol=1e-4, atol=1e-4)
    assert batched[0]["audio"].shape[0] != batched[1]["audio"].shape[0]


def test_forward_returns_one_tensor_per_layer(finetuned):
    rng = np.random.default_rng(7)
    audio = torch.from_numpy((0.1 * rng.standard_normal(3 * SR)).astype(np.float32))
    video = torch.from_numpy(rng.integers(0, 256, size=(6, 16, 16, 3), dtype=np.uint8))
    layers = finetuned.forward("fusion", audio, video)
    assert len(layers) == 4 and all(x.shape == (8 * (298 // 16), 256) for x in layers)


# --------------------------------------------------------------------------- errors


def test_missing_checkpoint_says_what_and_where():
    with pytest.raises(UpstreamError) as err:
        mavil.Mavil(checkpoint=None)
    message = str(err.value)
    assert "\n" not in message and "--checkpoint" in message
    assert mavil.RELEASE in message and "facebookresearch/MAViL" in message


def _raises_one_line(path: Path, *fragments: str) -> None:
    with pytest.raises(UpstreamError) as err:
        mavil.Mavil(checkpoint=path)
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_files_are_one_line_errors(tmp_path, tiny_ckpts):
    _raises_one_line(tmp_path / "nope.pth", "does not exist", "'model'")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 10)
    _raises_one_line(garbage, "cannot read")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(tiny_ckpts["finetuned"].read_bytes()[:5000])
    _raises_one_line(truncated, "cannot read")
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    _raises_one_line(listing, "holds a list", "'model' state dict")
    other = tmp_path / "other.pth"
    torch.save({"model": {"encoder.weight": torch.zeros(2, 2)}}, other)
    _raises_one_line(other, "is not a MAViL checkpoint", "cls_token")


def test_key_and_shape_mismatches_are_one_line_errors(tmp_path):
    state = random_state(TINY, True)
    del state["blocks_v.1.mlp.fc2.bias"]
    _raises_one_line(write_checkpoint(tmp_path / "missing.pth", state), "1 missing", "blocks_v.1.mlp.fc2.bias")

    state = random_state(TINY, True)
    state["blocks.0.attn.q_norm.weight"] = torch.ones(64)
    _raises_one_line(write_checkpoint(tmp_path / "unexpected.pth", state), "1 unexpected", "blocks.0.attn.q_norm.weight")

    state = random_state(TINY, True)
    state["blocks_av.0.mlp.fc1.weight"] = torch.zeros(128, 128)
    _raises_one_line(write_checkpoint(tmp_path / "shape.pth", state), "blocks_av.0.mlp.fc1.weight", "(128, 128)")

    state = random_state(TINY, True)
    state["pos_embed"] = torch.zeros(1, 257, 128)  # a 512-frame spectrogram's positions
    _raises_one_line(write_checkpoint(tmp_path / "pos.pth", state), "pos_embed", "(1, 513, 128)")

    state = {k: v for k, v in random_state(TINY, False).items() if not k.startswith("blocks_av.")}
    _raises_one_line(write_checkpoint(tmp_path / "nofusion.pth", state), "no fusion blocks")


def test_bare_state_dict_and_pretraining_extras_load(tmp_path):
    state = random_state(TINY, False) | {"mask_token": torch.zeros(1, 1, 128), "decoder_embed.weight": torch.zeros(64, 128)}
    path = tmp_path / "bare.pth"
    torch.save(state, path)
    assert mavil.Mavil(checkpoint=path).variant == "pretrained"


def test_bad_inputs_are_clear_errors(finetuned):
    frames = np.zeros((4, 16, 16, 3), np.uint8)
    wave = np.zeros(SR, np.float32)
    with pytest.raises(UpstreamError, match="mavil has no 'text' track; it offers: audio, video, fusion"):
        finetuned.extract(["text"], wave, frames)
    with pytest.raises(ValueError, match="needs the video stream"):
        finetuned.extract(["fusion"], wave, None)
    with pytest.raises(ValueError, match="needs the audio stream"):
        finetuned.extract(["audio"], None, frames)
    with pytest.raises(ValueError, match="shorter than one MAViL time patch"):
        finetuned.extract(["audio"], np.zeros(2799, np.float32), None)
    assert finetuned.extract(["audio"], np.zeros(2800, np.float32), None)["audio"].shape == (8, 3, 128)
    with pytest.raises(ValueError, match="no video frames"):
        finetuned.extract(["video"], None, np.zeros((0, 16, 16, 3), np.uint8))
