"""HuBERT: the three checkpoint forms load to the same network, which equals transformers' HubertModel."""

import argparse
import hashlib
import json
import sys
import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import HubertConfig, HubertModel

from avsuperb.extract import upstreams
from avsuperb.extract.upstreams import TrackInfo, UpstreamError, hubert

TOL = dict(rtol=1e-4, atol=1e-4)
CONV = ((32, 10, 5), (32, 3, 2), (32, 2, 2))  # hop 20 samples: 800 frames/s, receptive field 30 samples


def tiny_config(large: bool) -> HubertConfig:
    return HubertConfig(
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,  # what a config-less torchaudio state dict implies for 128 dims (one head per 64)
        intermediate_size=160,
        conv_dim=[c for c, _, _ in CONV],
        conv_kernel=[k for _, k, _ in CONV],
        conv_stride=[s for _, _, s in CONV],
        conv_bias=large,
        feat_extract_norm="layer" if large else "group",
        do_stable_layer_norm=large,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4,
    )


def random_hf_model(config: HubertConfig, seed: int) -> HubertModel:
    torch.manual_seed(seed)
    model = HubertModel(config).eval()
    with torch.no_grad():  # norms start as identities; perturb them so a swapped norm would show
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    return model


def hf_layers(model: HubertModel, wave: np.ndarray, normalize: bool = False) -> list[np.ndarray]:
    """What we expose: HF hidden_states, with the final layer norm on the last for pre-LN models."""
    x = torch.from_numpy(wave)[None]
    if normalize:
        x = F.layer_norm(x, x.shape[-1:])
    with torch.no_grad():
        out = model(x, output_hidden_states=True)
    layers = list(out.hidden_states)
    if model.config.do_stable_layer_norm:
        layers[-1] = out.last_hidden_state
    else:
        np.testing.assert_array_equal(layers[-1].numpy(), out.last_hidden_state.numpy())
    return [h[0].numpy() for h in layers]


def assert_layers_equal(ours: np.ndarray, expected: list[np.ndarray]) -> None:
    assert ours.shape == (expected[0].shape[0], len(expected), expected[0].shape[1])
    for i, h in enumerate(expected):
        np.testing.assert_allclose(ours[:, i], h, **TOL, err_msg=f"layer {i}")


def to_fairseq(sd: dict[str, torch.Tensor], large: bool, prefix: str = "") -> dict[str, torch.Tensor]:
    """HF names -> fairseq HubertModel names (written from fairseq's module tree)."""
    out = {}
    for k, v in sd.items():
        parts = k.split(".")
        if k.startswith("feature_extractor.conv_layers."):
            i, kind, p = parts[2], parts[3], parts[4]
            k = f"feature_extractor.conv_layers.{i}." + ("0" if kind == "conv" else "2.1" if large else "2") + f".{p}"
        elif k.startswith("feature_projection.layer_norm."):
            k = "layer_norm." + parts[-1]
        elif k.startswith("feature_projection.projection."):
            k = "post_extract_proj." + parts[-1]
        elif k.startswith("encoder.pos_conv_embed.conv."):
            k = "encoder.pos_conv.0." + {"original0": "weight_g", "original1": "weight_v"}.get(parts[-1], parts[-1])
        elif k.startswith("encoder.layers."):
            sub = ".".join(parts[3:])
            for a, b in (("attention.", "self_attn."), ("layer_norm.", "self_attn_layer_norm."),
                         ("feed_forward.intermediate_dense.", "fc1."), ("feed_forward.output_dense.", "fc2.")):
                if sub.startswith(a):
                    sub = b + sub[len(a):]
            k = f"encoder.layers.{parts[2]}.{sub}"
        elif k == "masked_spec_embed":
            k = "mask_emb"
        out[prefix + k] = v.clone()
    if not prefix:  # pre-training heads, unused for features
        out["label_embs_concat"] = torch.randn(504, 256)
        out["final_proj.weight"], out["final_proj.bias"] = torch.randn(256, 128), torch.randn(256)
    return out


def to_torchaudio(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """HF names -> torchaudio Wav2Vec2Model names, weight norm as weight_g/weight_v like the released bundles."""
    out = {}
    for k, v in sd.items():
        if k == "masked_spec_embed":
            continue
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        if k.startswith("feature_projection."):
            k = "encoder." + k
        elif k.startswith("encoder."):
            k = "encoder.transformer." + k[len("encoder."):]
        out[k] = v.clone()
    return out


def fairseq_model_cfg(large: bool) -> dict:
    conv = " + ".join(f"[({c},{k},{s})]" for c, k, s in CONV)
    return {
        "_name": "hubert", "label_rate": 50, "extractor_mode": "layer_norm" if large else "default",
        "encoder_layers": 2, "encoder_embed_dim": 128, "encoder_ffn_embed_dim": 160, "encoder_attention_heads": 2,
        "activation_fn": "gelu", "layer_norm_first": large, "conv_feature_layers": conv, "conv_bias": large,
        "conv_pos": 16, "conv_pos_groups": 4, "dropout": 0.1, "encoder_layerdrop": 0.05,
    }


class _Node:
    """Pickled like omegaconf containers and nodes: their state lives in `_content` / `_val`."""

    def __init__(self, **state):
        self.__dict__.update(state)


class _Dictionary:
    def __init__(self, symbols):
        self.symbols = symbols


def pickled_as(cls: type, module: str, monkeypatch) -> None:
    """Make `cls` pickle under `module`, a module that will not exist when the checkpoint is read."""
    parts = module.split(".")
    for i in range(1, len(parts) + 1):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
    setattr(sys.modules[module], cls.__name__, cls)
    cls.__module__, cls.__qualname__ = module, cls.__name__


def omegaconf_like(d):
    if isinstance(d, dict):
        return _Node(_content={k: omegaconf_like(v) for k, v in d.items()}, _metadata=None, _parent=None)
    return _Node(_val=d, _metadata=None)


@pytest.fixture(scope="module")
def base_tiny(tmp_path_factory):
    model = random_hf_model(tiny_config(large=False), seed=0)
    d = tmp_path_factory.mktemp("hf_base")
    model.save_pretrained(d)
    return model, d


@pytest.fixture(scope="module")
def large_tiny(tmp_path_factory):
    model = random_hf_model(tiny_config(large=True), seed=1)
    d = tmp_path_factory.mktemp("hf_large")
    model.save_pretrained(d)
    (d / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True, "sampling_rate": 16000}))
    return model, d


@pytest.fixture(scope="module")
def fairseq_file(base_tiny, tmp_path_factory):
    """A fairseq-style pre-trained checkpoint, with pickled objects of classes that cannot be imported."""
    model, _ = base_tiny
    mp = pytest.MonkeyPatch()
    try:
        pickled_as(_Dictionary, "fairseq_gone.data.dictionary", mp)
        path = tmp_path_factory.mktemp("fs") / "hubert_tiny.pt"
        torch.save(
            {
                "args": None,
                "cfg": {"model": fairseq_model_cfg(large=False), "task": {"_name": "hubert_pretraining", "normalize": False}},
                "model": to_fairseq(model.state_dict(), large=False),
                "task_state": {"dictionaries": [_Dictionary(["<s>", "<pad>", "0", "1"])]},
                "extra_state": {"epoch": 3},
            },
            path,
        )
    finally:
        mp.undo()
    return path


def frames(samples: int) -> int:
    for _, k, s in CONV:
        samples = (samples - k) // s + 1
    return samples


def wave(seconds: float, seed: int = 0) -> np.ndarray:
    return (0.3 * np.random.default_rng(seed).standard_normal(int(16000 * seconds))).astype(np.float32)


# --- equality with transformers --------------------------------------------------------------


def test_hf_directory_equals_transformers_hidden_states(base_tiny):
    model, d = base_tiny
    up = upstreams.build("hubert", d)
    w = wave(0.3)
    ours = up.extract(["audio"], w, None)["audio"]
    assert_layers_equal(ours, hf_layers(model, w))
    assert up.tracks == {"audio": TrackInfo(3, 128, 800.0)}
    cfg = up.config()
    assert (cfg["source"], cfg["finetuned"], cfg["num_layers"], cfg["embed_dim"], cfg["num_heads"]) == ("huggingface", False, 2, 128, 2)
    assert (cfg["extractor_mode"], cfg["layer_norm_first"], cfg["normalize_waveform"]) == ("group_norm", False, False)
    assert cfg["conv_layers"] == [list(c) for c in CONV]
    json.dumps(cfg)  # goes into the store's attributes


def test_building_leaves_torch_init_as_it_was(base_tiny, monkeypatch):
    """The model is built with nn.init's fillers skipped (its weights are the checkpoint's), and they
    are back afterwards, also when building fails."""
    before = {n: getattr(torch.nn.init, n) for n in ("normal_", "uniform_", "kaiming_uniform_", "zeros_")}
    _, d = base_tiny
    hubert.Hubert(d)
    assert {n: getattr(torch.nn.init, n) for n in before} == before

    def broken(arch):
        assert torch.nn.init.normal_ is not before["normal_"]  # skipped while the model is built
        raise MemoryError("out of memory")

    monkeypatch.setattr(hubert, "_empty_model", broken)
    with pytest.raises(MemoryError):
        hubert.Hubert(d)
    assert {n: getattr(torch.nn.init, n) for n in before} == before
    x = torch.nn.init.normal_(torch.zeros(1000))
    assert x.std() > 0.5  # a real filler


def test_hf_directory_sha256_is_the_weights_file(base_tiny):
    _, d = base_tiny
    up = hubert.Hubert(d)
    assert up.checkpoint_sha256() == hashlib.sha256((d / "model.safetensors").read_bytes()).hexdigest()
    assert hubert.Hubert(d / "model.safetensors").config() == up.config()  # the weights file itself also works


def test_pre_ln_large_arch_matches_transformers_with_final_layer_norm_on_the_last(large_tiny):
    model, d = large_tiny
    up = hubert.Hubert(d)
    cfg = up.config()
    assert (cfg["extractor_mode"], cfg["layer_norm_first"], cfg["conv_bias"], cfg["normalize_waveform"]) == ("layer_norm", True, True, True)
    w = wave(0.27, seed=3) * 5 + 0.1  # normalisation must matter
    ours = up.extract(["audio"], w, None)["audio"]
    assert_layers_equal(ours, hf_layers(model, w, normalize=True))
    # transformers 5 leaves hidden_states[-1] un-normed; we expose the normed output, as s3prl and fairseq do
    with torch.no_grad():
        raw_last = model(F.layer_norm(torch.from_numpy(w)[None], (len(w),)), output_hidden_states=True).hidden_states[-1]
    assert not np.allclose(ours[:, -1], raw_last[0].numpy(), atol=1e-2)


def test_base_size_random_hubert(tmp_path):
    torch.manual_seed(0)
    model = HubertModel(HubertConfig()).eval()  # facebook/hubert-base-ls960's architecture
    model.save_pretrained(tmp_path)
    up = hubert.Hubert(tmp_path)
    (tmp_path / "model.safetensors").unlink()  # 380 MB: do not leave it in pytest's kept temp dirs
    assert up.tracks == {"audio": TrackInfo(13, 768, 50.0)}
    w = wave(0.3, seed=4)
    ours = up.extract(["audio"], w, None)["audio"]
    assert ours.shape == (14, 13, 768)
    assert_layers_equal(ours, hf_layers(model, w))


# --- the other two released forms ------------------------------------------------------------


def test_fairseq_checkpoint_loads_to_the_same_outputs(base_tiny, fairseq_file):
    model, _ = base_tiny
    assert "fairseq_gone.data.dictionary" not in sys.modules
    up = hubert.Hubert(fairseq_file)
    assert (up.config()["source"], up.config()["finetuned"]) == ("fairseq", False)
    w = wave(0.31, seed=1)
    assert_layers_equal(up.extract(["audio"], w, None)["audio"], hf_layers(model, w))


def test_legacy_fairseq_args_namespace_and_normalize(large_tiny, tmp_path):
    model, _ = large_tiny
    args = argparse.Namespace(**fairseq_model_cfg(large=True), arch="hubert", normalize=True)
    path = tmp_path / "legacy.pt"  # and in torch's pre-1.6 (non-zip) file format
    torch.save({"args": args, "model": to_fairseq(model.state_dict(), large=True)}, path, _use_new_zipfile_serialization=False)
    up = hubert.Hubert(path)
    assert (up.config()["layer_norm_first"], up.config()["normalize_waveform"]) == (True, True)
    w = wave(0.29, seed=2) * 3
    assert_layers_equal(up.extract(["audio"], w, None)["audio"], hf_layers(model, w, normalize=True))


def test_finetuned_fairseq_checkpoint_is_flagged(base_tiny, tmp_path, monkeypatch):
    model, _ = base_tiny
    state = to_fairseq(model.state_dict(), large=False, prefix="w2v_encoder.w2v_model.")
    state["w2v_encoder.proj.weight"], state["w2v_encoder.proj.bias"] = torch.randn(32, 128), torch.randn(32)
    pretrain = {"model": fairseq_model_cfg(large=False), "task": {"normalize": False}}
    pickled_as(_Node, "omegaconf_gone.dictconfig", monkeypatch)
    cfg = {"model": {"_name": "hubert_ctc", "w2v_args": omegaconf_like(pretrain), "normalize": False}, "task": {"normalize": False}}
    path = tmp_path / "ft.pt"
    torch.save({"cfg": cfg, "model": state}, path)
    monkeypatch.undo()
    assert "omegaconf_gone.dictconfig" not in sys.modules
    up = hubert.Hubert(path)
    assert (up.config()["source"], up.config()["finetuned"], up.config()["num_layers"]) == ("fairseq", True, 2)
    w = wave(0.22, seed=5)
    assert_layers_equal(up.extract(["audio"], w, None)["audio"], hf_layers(model, w))


@pytest.mark.parametrize("which", ["base", "large"])
def test_torchaudio_state_dict_infers_the_architecture(which, base_tiny, large_tiny, tmp_path):
    model, _ = base_tiny if which == "base" else large_tiny
    path = tmp_path / "bundle.pth"
    torch.save(to_torchaudio(model.state_dict()), path)
    up = hubert.Hubert(path)
    cfg = up.config()
    large = which == "large"
    assert (cfg["source"], cfg["finetuned"], cfg["num_heads"], cfg["layer_norm_first"], cfg["normalize_waveform"]) == (
        "torchaudio", False, 2, large, large)
    w = wave(0.26, seed=6)
    assert_layers_equal(up.extract(["audio"], w, None)["audio"], hf_layers(model, w, normalize=large))


def test_torchaudio_parametrized_weight_norm_and_aux_head(base_tiny, tmp_path):
    model, _ = base_tiny
    sd = {("encoder." + k if k.startswith("feature_projection.") else k.replace("encoder.", "encoder.transformer.", 1)): v
          for k, v in model.state_dict().items() if k != "masked_spec_embed"}
    sd["aux.weight"], sd["aux.bias"] = torch.randn(29, 128), torch.randn(29)
    path = tmp_path / "asr.pth"
    torch.save(sd, path)
    up = hubert.Hubert(path)
    assert up.config()["finetuned"] is True
    w = wave(0.2, seed=7)
    assert_layers_equal(up.extract(["audio"], w, None)["audio"], hf_layers(model, w))


def test_hf_ctc_directory_with_pytorch_model_bin(base_tiny, tmp_path):
    model, d = base_tiny
    cfg = json.loads((d / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "architectures": ["HubertForCTC"]}))
    sd = {"hubert." + k: v.clone() for k, v in model.state_dict().items()}
    sd["lm_head.weight"], sd["lm_head.bias"] = torch.randn(32, 128), torch.randn(32)
    torch.save(sd, tmp_path / "pytorch_model.bin")
    up = hubert.Hubert(tmp_path)
    assert (up.config()["source"], up.config()["finetuned"]) == ("huggingface", True)
    assert up.checkpoint_sha256() == hashlib.sha256((tmp_path / "pytorch_model.bin").read_bytes()).hexdigest()
    w = wave(0.2, seed=8)
    assert_layers_equal(up.extract(["audio"], w, None)["audio"], hf_layers(model, w))


# --- batching --------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["base", "large"])
def test_batched_equals_one_by_one(which, base_tiny, large_tiny):
    _, d = base_tiny if which == "base" else large_tiny
    up = hubert.Hubert(d)
    clips = [wave(0.25, seed=10), wave(0.41, seed=11)[:6571] * 4, wave(0.33, seed=12)[:5203] + 0.2]
    batched = up.extract_batch(["audio"], [(c, None) for c in clips])
    for c, b in zip(clips, batched):
        single = up.extract(["audio"], c, None)["audio"]
        assert b["audio"].shape == single.shape == (frames(len(c)), 3, 128)
        np.testing.assert_allclose(b["audio"], single, **TOL)


def test_too_short_audio_and_unknown_track(base_tiny):
    up = hubert.Hubert(base_tiny[1])
    with pytest.raises(ValueError, match="shorter than hubert.s 30-sample"):
        up.extract(["audio"], np.zeros(29, np.float32), None)
    with pytest.raises(UpstreamError, match="only the 'audio' track"):
        up.extract(["video"], wave(0.1), None)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu(base_tiny):
    clips = [wave(0.25, seed=20), wave(0.4, seed=21)]
    cpu = hubert.Hubert(base_tiny[1]).extract_batch(["audio"], [(c, None) for c in clips])
    gpu = hubert.Hubert(base_tiny[1], device="cuda").extract_batch(["audio"], [(c, None) for c in clips])
    for a, b in zip(cpu, gpu):
        np.testing.assert_allclose(b["audio"], a["audio"], rtol=1e-2, atol=1e-2)  # cuDNN may convolve in TF32


# --- errors a user can cause -----------------------------------------------------------------


def one_line_error(path) -> str:
    with pytest.raises(UpstreamError) as info:
        upstreams.build("hubert", path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith("hubert")
    return msg


def test_no_checkpoint_names_the_accepted_forms():
    msg = one_line_error(None)
    assert "needs --checkpoint PATH" in msg
    assert "https://dl.fbaipublicfiles.com/hubert/hubert_base_ls960.pt" in msg and "facebook/hubert-base-ls960" in msg
    assert "hubert_fairseq_base_ls960.pth" in msg


def test_truncated_random_and_missing_files(fairseq_file, tmp_path):
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(fairseq_file.read_bytes()[: fairseq_file.stat().st_size // 2])
    assert "cannot read" in one_line_error(truncated) and "fairseq" in one_line_error(truncated)
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).bytes(5000))
    assert "cannot read" in one_line_error(noise)
    assert "does not exist" in one_line_error(tmp_path / "nope.pt")
    empty_dir = tmp_path / "emptydir"
    empty_dir.mkdir()
    assert "without config.json" in one_line_error(empty_dir)


def test_another_models_state_dict(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4)).state_dict(), path)
    assert "not a HuBERT checkpoint" in one_line_error(path)
    pickle_path = tmp_path / "list.pt"
    torch.save([1, 2, 3], pickle_path)
    assert "not a HuBERT state dict" in one_line_error(pickle_path)


def test_state_dict_with_missing_or_foreign_keys(base_tiny, tmp_path):
    sd = to_torchaudio(base_tiny[0].state_dict())
    del sd["encoder.transformer.layers.1.final_layer_norm.weight"]
    path = tmp_path / "missing.pth"
    torch.save(sd, path)
    msg = one_line_error(path)
    assert "missing encoder.transformer.layers.1.final_layer_norm.weight" in msg
    sd = to_fairseq(base_tiny[0].state_dict(), large=False)
    sd["encoder.pos_conv.1.0.weight"] = torch.zeros(3)  # a deeper positional conv: not HuBERT's
    torch.save({"cfg": {"model": fairseq_model_cfg(False), "task": {}}, "model": sd}, path)
    assert "does not have (encoder.pos_conv.1.0.weight)" in one_line_error(path)


def test_hf_directory_problems(base_tiny, tmp_path):
    _, d = base_tiny
    (tmp_path / "config.json").write_text((d / "config.json").read_text())
    assert "no model.safetensors or pytorch_model.bin" in one_line_error(tmp_path)
    (tmp_path / "model.safetensors").write_bytes((d / "model.safetensors").read_bytes()[:300])
    assert "cannot read" in one_line_error(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    assert "'bert' model" in one_line_error(tmp_path)
