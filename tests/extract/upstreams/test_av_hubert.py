"""av_hubert: loads checkpoints in the released fairseq layout, preprocesses as the reference,
computes the wav2vec2/HuBERT transformer as torchaudio does, and batches without cross-talk."""

from __future__ import annotations

import collections
import enum
import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from torchaudio.models.wav2vec2.components import _get_encoder

from avsuperb.extract.upstreams import UpstreamError, av_hubert, build

TINY = {
    "encoder_layers": 2,
    "encoder_embed_dim": 32,
    "encoder_ffn_embed_dim": 64,
    "encoder_attention_heads": 4,
    "conv_pos": 8,
    "conv_pos_groups": 4,
    "layer_norm_first": True,
    "audio_feat_dim": 104,
    "final_dim": 16,
    "untie_final_proj": True,
}
BASE = {  # avhubert/conf/pretrain/base_lrs3_iter5.yaml on top of AVHubertConfig's defaults
    "encoder_layers": 12,
    "encoder_embed_dim": 768,
    "encoder_ffn_embed_dim": 3072,
    "encoder_attention_heads": 12,
    "conv_pos": 128,
    "conv_pos_groups": 16,
    "layer_norm_first": True,
    "audio_feat_dim": 104,
    "final_dim": 256,
    "untie_final_proj": True,
}
TASK = {"_name": "av_hubert_pretraining", "sample_rate": 25, "stack_order_audio": 4, "normalize": True, "image_crop_size": 88}
NUM_CLUSTERS = 7


# --------------------------------------------------------------------------- the released layout


def released_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    """Every weight name and shape of a pretrained fairseq AVHubertModel, written down from
    avhubert/hubert.py (AVHubertModel, SubModel), avhubert/resnet.py (ResEncoder, ResNet,
    BasicBlock with PReLU) and fairseq's wav2vec2 TransformerEncoder / TransformerSentenceEncoderLayer."""
    d, ffn, a = cfg["encoder_embed_dim"], cfg["encoder_ffn_embed_dim"], cfg["audio_feat_dim"]
    out: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            out[f"{prefix}.{name}"] = (c,)
        out[f"{prefix}.num_batches_tracked"] = ()

    v = "feature_extractor_video.resnet"
    out[f"{v}.frontend3D.0.weight"] = (64, 1, 5, 7, 7)
    bn(f"{v}.frontend3D.1", 64)
    out[f"{v}.frontend3D.2.weight"] = (64,)
    inplanes = 64
    for i, planes in enumerate((64, 128, 256, 512), start=1):
        for j in (0, 1):
            p = f"{v}.trunk.layer{i}.{j}"
            cin = inplanes if j == 0 else planes
            out[f"{p}.conv1.weight"] = (planes, cin, 3, 3)
            bn(f"{p}.bn1", planes)
            out[f"{p}.relu1.weight"] = (planes,)
            out[f"{p}.relu2.weight"] = (planes,)
            out[f"{p}.conv2.weight"] = (planes, planes, 3, 3)
            bn(f"{p}.bn2", planes)
            if j == 0 and i > 1:
                out[f"{p}.downsample.0.weight"] = (planes, cin, 1, 1)
                bn(f"{p}.downsample.1", planes)
        inplanes = planes
    out["feature_extractor_video.proj.weight"], out["feature_extractor_video.proj.bias"] = (d, 512), (d,)
    out["feature_extractor_audio.proj.weight"], out["feature_extractor_audio.proj.bias"] = (d, a), (d,)
    out["layer_norm.weight"], out["layer_norm.bias"] = (2 * d,), (2 * d,)
    out["post_extract_proj.weight"], out["post_extract_proj.bias"] = (d, 2 * d), (d,)
    k, g = cfg["conv_pos"], cfg["conv_pos_groups"]
    out["encoder.pos_conv.0.weight_g"] = (1, 1, k)
    out["encoder.pos_conv.0.weight_v"] = (d, d // g, k)
    out["encoder.pos_conv.0.bias"] = (d,)
    out["encoder.layer_norm.weight"], out["encoder.layer_norm.bias"] = (d,), (d,)
    for n in range(cfg["encoder_layers"]):
        p = f"encoder.layers.{n}"
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out[f"{p}.self_attn.{proj}.weight"], out[f"{p}.self_attn.{proj}.bias"] = (d, d), (d,)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            out[f"{p}.{ln}.weight"], out[f"{p}.{ln}.bias"] = (d,), (d,)
        out[f"{p}.fc1.weight"], out[f"{p}.fc1.bias"] = (ffn, d), (ffn,)
        out[f"{p}.fc2.weight"], out[f"{p}.fc2.bias"] = (d, ffn), (d,)
    return out


PRETRAINING_ONLY = {"mask_emb", "label_embs_concat", "final_proj.weight", "final_proj.bias"}


def pretraining_shapes(cfg: dict) -> dict[str, tuple[int, ...]]:
    f = cfg["final_dim"]
    return {
        "mask_emb": (cfg["audio_feat_dim"],),  # masking_type: input
        "label_embs_concat": (NUM_CLUSTERS, f),
        "final_proj.weight": (f, cfg["encoder_embed_dim"]),
        "final_proj.bias": (f,),
    }


def random_weights(shapes: dict[str, tuple[int, ...]], seed: int, shared: bool = False) -> dict[str, torch.Tensor]:
    """Random values of a sensible scale per kind of weight. shared=True makes every tensor a view
    of a few random buffers (a Base-size checkpoint that is small on disk)."""
    gen = torch.Generator().manual_seed(seed)
    pools: dict[str, torch.Tensor] = {}

    def draw(kind: str, shape: tuple[int, ...]) -> torch.Tensor:
        n = math.prod(shape)
        if not shared:
            return sample(kind, n).view(shape)
        if kind not in pools:
            pools[kind] = sample(kind, 5_000_000)
        start = int(torch.randint(0, pools[kind].numel() - n + 1, (1,), generator=gen))
        return pools[kind][start : start + n].view(shape)

    def sample(kind: str, n: int) -> torch.Tensor:
        if kind == "positive":
            return 0.5 + torch.rand(n, generator=gen)
        if kind == "bias":
            return 0.05 * torch.randn(n, generator=gen)
        return torch.randn(n, generator=gen) * (0.02 if shared else 1.0)  # scaled by fan-in below unless shared

    out = {}
    for name, shape in shapes.items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf == "num_batches_tracked":
            out[name] = torch.tensor(1000)
        elif leaf in ("running_var", "weight_g") or (leaf == "weight" and len(shape) == 1 and "relu" not in name):
            out[name] = draw("positive", shape)  # norm scales, variances, weight-norm gains
        elif leaf in ("bias", "running_mean") or name in ("mask_emb", "label_embs_concat"):
            out[name] = draw("bias", shape)
        elif "relu" in name or name.endswith("frontend3D.2.weight"):
            out[name] = torch.full(shape, 0.25)  # PReLU slopes
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            w = draw("weight", shape)
            out[name] = w if shared else w / math.sqrt(fan_in)
    return out


def write_checkpoint(
    path: Path,
    cfg: dict,
    *,
    seed: int = 0,
    finetuned: bool = False,
    omegaconf: bool = False,
    shared: bool = False,
    weights: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A checkpoint as fairseq writes it: {'cfg': {'model', 'task', ...}, 'model': state dict, ...}."""
    shapes = {**released_shapes(cfg), **pretraining_shapes(cfg)}
    weights = weights if weights is not None else random_weights(shapes, seed, shared)
    model_cfg = {"_name": "av_hubert", "modality_fuse": "concat", "resnet_relu_type": "prelu", "masking_type": "input", **cfg}
    if finetuned:  # AVHubertSeq2Seq: encoder under encoder.w2v_model., pretraining-only heads removed, a decoder
        state = {f"encoder.w2v_model.{k}": v for k, v in weights.items() if k not in ("final_proj.weight", "final_proj.bias")}
        state["decoder.embed_tokens.weight"] = torch.randn(11, 8)
        state["decoder.layers.0.self_attn.k_proj.weight"] = torch.randn(8, 8)
        state["decoder.layer_norm.weight"] = torch.ones(8)
        ckpt_cfg = {
            "model": {"_name": "av_hubert_seq2seq", "w2v_path": "base_lrs3_iter5.pt", "w2v_args": {"model": model_cfg, "task": TASK}},
            "task": {"_name": "av_hubert_pretraining", "normalize": True},
        }
    else:
        state = dict(weights)
        ckpt_cfg = {"model": model_cfg, "task": TASK}
    state = collections.OrderedDict(state)  # what nn.Module.state_dict() returns, with its metadata
    state._metadata = collections.OrderedDict({"": {"version": 1}})  # type: ignore[attr-defined]
    payload = {"args": None, "cfg": ckpt_cfg, "model": state, "optimizer_history": [], "extra_state": {"epoch": 3}}
    if omegaconf:
        with _FakeOmegaconf() as to_config:
            payload["cfg"] = to_config(ckpt_cfg)
            torch.save(payload, path)
    else:
        torch.save(payload, path)
    return weights


class _FakeOmegaconf:
    """Classes named like omegaconf's and fairseq's, pickled with the same kind of state, then
    made unimportable again: the loader must cope without those packages."""

    def __enter__(self):
        omegaconf = types.ModuleType("omegaconf")
        dictconfig = types.ModuleType("omegaconf.dictconfig")
        nodes = types.ModuleType("omegaconf.nodes")
        constants = types.ModuleType("fairseq.dataclass.constants")

        class Metadata:
            def __init__(self):
                self.ref_type, self.object_type, self.optional, self.key = object, dict, True, None

        class DictConfig:
            def __init__(self, content: dict, parent=None):
                self.__dict__["_metadata"] = Metadata()
                self.__dict__["_parent"] = parent
                self.__dict__["_content"] = {k: wrap(v, self) for k, v in content.items()}

            def __getstate__(self):
                return dict(self.__dict__)

        class AnyNode:
            def __init__(self, value, parent):
                self.__dict__.update({"_val": value, "_metadata": Metadata(), "_parent": parent})

            def __getstate__(self):
                return dict(self.__dict__)

        class ActivationChoices(enum.Enum):
            gelu = "gelu"
            relu = "relu"

        def wrap(value, parent):
            if isinstance(value, dict):
                return DictConfig(value, parent)
            if value == "gelu":
                return AnyNode(ActivationChoices.gelu, parent)
            return AnyNode(value, parent)

        for cls, mod in ((Metadata, dictconfig), (DictConfig, dictconfig), (AnyNode, nodes), (ActivationChoices, constants)):
            cls.__module__, cls.__qualname__ = mod.__name__, cls.__name__
            setattr(mod, cls.__name__, cls)
        parents = {name: types.ModuleType(name) for name in ("fairseq", "fairseq.dataclass")}
        self.modules = {
            "omegaconf": omegaconf, "omegaconf.dictconfig": dictconfig, "omegaconf.nodes": nodes,
            **parents, "fairseq.dataclass.constants": constants,
        }  # fmt: skip
        self.saved = {k: sys.modules.get(k) for k in self.modules}
        sys.modules.update(self.modules)
        return lambda cfg: DictConfig({**cfg, "model": {**cfg["model"], "activation_fn": "gelu"}})

    def __exit__(self, *exc):
        for k, mod in self.saved.items():
            if mod is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = mod


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny and the test machines are shared: one intra-op thread is several
    times faster than spinning several (restored afterwards)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("avh") / "tiny_iter5.pt"
    write_checkpoint(path, TINY, seed=0)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_ckpt: Path) -> av_hubert.AVHubert:
    return av_hubert.AVHubert(tiny_ckpt)


def clip(seconds: float, seed: int, size: int = 96) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    audio = (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32)
    video = rng.integers(0, 256, size=(int(round(25 * seconds)), size, size, 3), dtype=np.uint8)
    return audio, video


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("size", ["tiny", "base"])
def test_released_layout_loads_with_exactly_the_released_names(size, tmp_path):
    cfg = TINY if size == "tiny" else BASE
    path = tmp_path / f"{size}.pt"
    weights = write_checkpoint(path, cfg, seed=1, shared=size == "base")
    model = build("av_hubert", path)

    got = {k: tuple(v.shape) for k, v in model.model.state_dict().items()}
    assert got == released_shapes(cfg)
    for name in (
        "feature_extractor_video.resnet.frontend3D.0.weight",
        "feature_extractor_video.resnet.trunk.layer2.0.downsample.0.weight",
        "feature_extractor_video.resnet.trunk.layer1.0.relu1.weight",
        "feature_extractor_audio.proj.weight",
        "post_extract_proj.weight",
        "encoder.pos_conv.0.weight_g",
        "encoder.pos_conv.0.weight_v",
        "encoder.layers.0.self_attn.k_proj.weight",
        "encoder.layers.0.final_layer_norm.weight",
        "encoder.layer_norm.weight",
        "layer_norm.weight",
    ):
        assert name in got
    # the values are the checkpoint's, not a fresh initialisation
    for name in ("encoder.pos_conv.0.weight_v", "feature_extractor_video.resnet.frontend3D.1.running_var", "post_extract_proj.bias"):
        torch.testing.assert_close(model.model.state_dict()[name], weights[name].float())

    layers = cfg["encoder_layers"] + 1
    assert {t: (i.num_layers, i.dim, i.frame_rate) for t, i in model.tracks.items()} == {
        t: (layers, cfg["encoder_embed_dim"], 25.0) for t in ("audio", "video", "fusion")
    }
    conf = model.config()
    assert conf["finetuned"] is False and conf["crop"] == "center"
    assert conf["architecture"]["encoder_layers"] == cfg["encoder_layers"] and conf["architecture"]["layer_norm_first"] is True
    assert model.needs(["video"]) == (None, 25.0) and model.needs(["audio"]) == (16000, 25.0)

    if size == "base":  # the one Base-size forward: a 1 s clip
        audio, video = clip(1.0, seed=2, size=96)
        out = model.extract(["fusion"], audio, video)["fusion"]
        assert out.shape == (25, 13, 768) and np.isfinite(out).all()


def test_omegaconf_config_loads_without_omegaconf(tmp_path):
    path = tmp_path / "omega.pt"
    write_checkpoint(path, {**TINY, "layer_norm_first": False, "encoder_attention_heads": 2}, seed=0, omegaconf=True)
    model = av_hubert.AVHubert(path)
    arch = model.config()["architecture"]
    assert arch["layer_norm_first"] is False and arch["encoder_attention_heads"] == 2 and arch["activation_fn"] == "gelu"
    assert arch["encoder_layers"] == TINY["encoder_layers"]


def test_finetuned_checkpoint_loads_the_encoder_and_is_flagged(tmp_path, tiny_ckpt, tiny):
    weights = torch.load(tiny_ckpt, weights_only=False)["model"]
    path = tmp_path / "base_lrs3_433h.pt"
    write_checkpoint(path, TINY, finetuned=True, weights=weights)
    model = av_hubert.AVHubert(path)
    assert model.config()["finetuned"] is True and tiny.config()["finetuned"] is False
    audio, video = clip(0.2, seed=3)
    a, b = model.extract(["fusion"], audio, video)["fusion"], tiny.extract(["fusion"], audio, video)["fusion"]
    np.testing.assert_array_equal(a, b)


def test_no_checkpoint_says_where_to_get_one():
    with pytest.raises(UpstreamError, match=r"needs --checkpoint PATH.*base_lrs3_iter5\.pt.*facebookresearch\.github\.io/av_hubert") as err:
        build("av_hubert")
    assert "\n" not in str(err.value)


def test_bad_files_are_one_line_errors(tmp_path, tiny_ckpt):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(tiny_ckpt.read_bytes()[: tiny_ckpt.stat().st_size // 2])
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    hubert = tmp_path / "hubert_base_ls960.pt"
    torch.save(
        {
            "cfg": {"model": {"_name": "hubert"}},
            "model": {"feature_extractor.conv_layers.0.0.weight": torch.zeros(512, 1, 10), "encoder.layers.0.fc1.weight": torch.zeros(8, 8)},
        },
        hubert,
    )
    bare = tmp_path / "bare_state_dict.pt"
    torch.save({"encoder.layer_norm.weight": torch.ones(4)}, bare)
    expected = {
        truncated: "cannot read .* as a PyTorch checkpoint",
        noise: "cannot read .* as a PyTorch checkpoint",
        hubert: "not an AV-HuBERT checkpoint",
        bare: "not a fairseq checkpoint with a 'model' state dict",
        tmp_path / "absent.pt": "does not exist",
    }
    for path, message in expected.items():
        with pytest.raises(UpstreamError, match=message) as err:
            av_hubert.AVHubert(path)
        assert "\n" not in str(err.value) and "base_lrs3_iter5.pt" in str(err.value), str(err.value)
        assert str(err.value).startswith("av_hubert: "), str(err.value)


def test_missing_or_unexpected_weights_are_refused(tmp_path, tiny_ckpt):
    ckpt = torch.load(tiny_ckpt, weights_only=False)
    extra = dict(ckpt, model={**ckpt["model"], "encoder.layers.2.fc1.weight": torch.zeros(64, 32)})
    lacking = dict(ckpt, model={k: v for k, v in ckpt["model"].items() if k != "encoder.layers.1.fc2.bias"})
    reshaped = dict(ckpt, model={**ckpt["model"], "post_extract_proj.weight": torch.zeros(32, 32)})
    for name, payload, message in (
        ("extra", extra, r"1 unexpected \(e\.g\. encoder\.layers\.2\.fc1\.weight\)"),
        ("lacking", lacking, r"1 missing \(e\.g\. encoder\.layers\.1\.fc2\.bias\)"),
        ("reshaped", reshaped, r"post_extract_proj\.weight has shape \(32, 32\)"),
    ):
        path = tmp_path / f"{name}.pt"
        torch.save(payload, path)
        with pytest.raises(UpstreamError, match=message):
            av_hubert.AVHubert(path)


# --------------------------------------------------------------------------- preprocessing


def psf_logfbank(signal: np.ndarray, samplerate: int = 16000) -> np.ndarray:
    """python_speech_features.logfbank with its defaults, transcribed step by step from its
    documented algorithm (preemphasis, framesig, powspec, get_filterbanks, eps, log)."""
    nfilt, nfft, preemph = 26, 512, 0.97
    sig = np.append(signal[0], signal[1:] - preemph * signal[:-1]).astype(np.float64)
    frame_len = int(np.floor(0.025 * samplerate + 0.5))  # round_half_up
    frame_step = int(np.floor(0.01 * samplerate + 0.5))
    slen = len(sig)
    numframes = 1 if slen <= frame_len else 1 + int(math.ceil((1.0 * slen - frame_len) / frame_step))
    padsignal = np.concatenate((sig, np.zeros(int((numframes - 1) * frame_step + frame_len) - slen)))
    indices = np.tile(np.arange(frame_len), (numframes, 1)) + np.tile(np.arange(0, numframes * frame_step, frame_step), (frame_len, 1)).T
    frames = padsignal[indices] * np.ones(frame_len)
    pspec = 1.0 / nfft * np.square(np.absolute(np.fft.rfft(frames, nfft)))
    lowmel, highmel = 2595 * np.log10(1 + 0 / 700.0), 2595 * np.log10(1 + (samplerate / 2) / 700.0)
    melpoints = np.linspace(lowmel, highmel, nfilt + 2)
    bins = np.floor((nfft + 1) * (700 * (10 ** (melpoints / 2595.0) - 1)) / samplerate)
    fbank = np.zeros([nfilt, nfft // 2 + 1])
    for j in range(nfilt):
        for i in range(int(bins[j]), int(bins[j + 1])):
            fbank[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(int(bins[j + 1]), int(bins[j + 2])):
            fbank[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    feat = np.dot(pspec, fbank.T)
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    return np.log(feat)


@pytest.mark.parametrize("n", [250, 400, 401, 16000, 23456])
def test_filterbank_equals_python_speech_features(n):
    rng = np.random.default_rng(n)
    wave = (0.2 * rng.standard_normal(n)).astype(np.float32)
    wave[n // 3 : n // 3 + 800] = 0.0  # silence: zero energies become eps
    got = av_hubert.logfbank(wave)
    want = psf_logfbank(wave.astype(np.float64))
    assert got.shape == want.shape == (1 if n <= 400 else 1 + math.ceil((n - 400) / 160), 26)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_audio_features_stack_fit_and_normalise():
    wave = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    fbank = psf_logfbank(wave.astype(np.float64)).astype(np.float32)  # 99 frames
    stacked = np.concatenate([fbank, np.zeros((1, 26), np.float32)]).reshape(25, 104)
    want = torch.nn.functional.layer_norm(torch.from_numpy(stacked), (104,)).numpy()
    np.testing.assert_allclose(av_hubert.audio_features(wave, 25).numpy(), want, atol=1e-5)
    longer = av_hubert.audio_features(wave, 30).numpy()  # video longer than audio: zero frames
    np.testing.assert_allclose(longer[:25], want, atol=1e-5)
    assert np.all(longer[25:] == 0)
    assert av_hubert.audio_features(wave, 20).shape == (20, 104)  # video shorter: trimmed
    assert av_hubert.audio_features(wave, None).shape == (25, 104)


def test_video_preprocessing_is_the_reference_transform():
    rng = np.random.default_rng(0)
    for h, w in ((96, 96), (224, 180), (80, 100)):
        video = rng.integers(0, 256, size=(3, h, w, 3), dtype=np.uint8)
        x = video.astype(np.float32)
        gray = (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]) / 255.0
        if h < 88 or w < 88:  # av_hubert CenterCrop: zero padding around first
            ph, pw = max(88 - h, 0), max(88 - w, 0)
            gray = np.pad(gray, ((0, 0), (ph // 2, (ph + 1) // 2), (pw // 2, (pw + 1) // 2)))
        th, tw = gray.shape[1:]
        top, left = int(round(th - 88) / 2.0), int(round(tw - 88) / 2.0)
        want = (gray[:, top : top + 88, left : left + 88] - 0.421) / 0.165
        got = av_hubert.video_features(torch.from_numpy(video)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-5)


# --------------------------------------------------------------------------- the network


@pytest.mark.parametrize("layer_norm_first", [True, False])
def test_transformer_matches_torchaudio(layer_norm_first, tmp_path):
    path = tmp_path / "t.pt"
    write_checkpoint(path, {**TINY, "layer_norm_first": layer_norm_first}, seed=5)
    ours = av_hubert.AVHubert(path).model.encoder
    d = TINY["encoder_embed_dim"]
    theirs = _get_encoder(
        in_features=d, embed_dim=d, dropout_input=0.0, pos_conv_kernel=TINY["conv_pos"], pos_conv_groups=TINY["conv_pos_groups"],
        num_layers=TINY["encoder_layers"], num_heads=TINY["encoder_attention_heads"], attention_dropout=0.0,
        ff_interm_features=TINY["encoder_ffn_embed_dim"], ff_interm_dropout=0.0, dropout=0.0,
        layer_norm_first=layer_norm_first, layer_drop=0.0,
    ).transformer.eval()  # fmt: skip
    rename = {
        "pos_conv.0.weight_g": "pos_conv_embed.conv.parametrizations.weight.original0",
        "pos_conv.0.weight_v": "pos_conv_embed.conv.parametrizations.weight.original1",
        "pos_conv.0.bias": "pos_conv_embed.conv.bias",
        ".self_attn.": ".attention.",
        ".self_attn_layer_norm.": ".layer_norm.",
        ".fc1.": ".feed_forward.intermediate_dense.",
        ".fc2.": ".feed_forward.output_dense.",
    }
    mapped = {}
    for name, value in ours.state_dict().items():
        for a, b in rename.items():
            name = name.replace(a, b)
        mapped[name] = value
    theirs.load_state_dict(mapped, strict=True)

    x = torch.randn(2, 23, d, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        states = ours(x)
        want = [theirs._preprocess(x), *theirs.get_intermediate_outputs(x)[:-1], theirs(x)]
    assert len(states) == TINY["encoder_layers"] + 1
    for got, ref in zip(states, want, strict=True):
        torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    # post-LN: the last state is the last layer's raw output; pre-LN: after the final layer norm
    last_raw = theirs.get_intermediate_outputs(x)[-1]
    assert torch.allclose(states[-1], last_raw, atol=1e-5) == (not layer_norm_first)


def test_tracks_zero_the_other_modality(tiny):
    audio1, video1 = clip(0.4, seed=10)
    audio2, video2 = clip(0.4, seed=11)
    tracks = ["audio", "video", "fusion"]
    base = tiny.extract(tracks, audio1, video1)
    new_video = tiny.extract(tracks, audio1, video2)
    new_audio = tiny.extract(tracks, audio2, video1)
    assert base["fusion"].shape == (10, 3, 32)

    np.testing.assert_array_equal(base["audio"], new_video["audio"])  # audio track ignores video content
    np.testing.assert_array_equal(base["video"], new_audio["video"])  # video track ignores audio content
    for changed in (new_video, new_audio):
        assert not np.allclose(base["fusion"], changed["fusion"], atol=1e-3)
    assert not np.allclose(base["audio"], new_audio["audio"], atol=1e-3)
    assert not np.allclose(base["video"], new_video["video"], atol=1e-3)
    assert not np.allclose(base["audio"], base["fusion"], atol=1e-3)

    # zeroing happens at the feature extractor's output, not at its input (a black video is not "no video")
    model = tiny.model
    feats = av_hubert.audio_features(audio1, 10)[None]
    with torch.no_grad():
        no_video = model(feats, None)
        frames = torch.zeros(1, 1, 10, 88, 88)
        blank_input = model(feats, frames)
    np.testing.assert_allclose(base["audio"][:, -1], no_video[-1][0].numpy(), atol=1e-5)
    assert not torch.allclose(no_video[-1], blank_input[-1], atol=1e-3)
    # the audio track needs only the audio stream's length when no video is given
    assert tiny.extract(["audio"], audio1, None)["audio"].shape == (10, 3, 32)
    with pytest.raises(ValueError, match="needs the video stream"):
        tiny.extract(["fusion"], audio1, None)


def test_batched_equals_one_by_one(tiny):
    items = [clip(s, seed=20 + i, size=s_) for i, (s, s_) in enumerate(((0.2, 96), (0.44, 120), (0.32, 88)))]
    items[1] = (items[1][0][:5000], items[1][1])  # audio shorter than the video: zero-padded
    tracks = ["fusion", "audio", "video"]
    batched = tiny.extract_batch(tracks, items)
    for (audio, video), got in zip(items, batched, strict=True):
        alone = tiny.extract(tracks, audio, video)
        for t in tracks:
            assert got[t].shape == alone[t].shape == (len(video), 3, 32)
            np.testing.assert_allclose(got[t], alone[t], atol=1e-4, rtol=0)
