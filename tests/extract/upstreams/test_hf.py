"""`hf`: tiny random transformers models of every supported family, saved with their preprocessors,
give exactly the model's own hidden states (reduced to frames as documented), window by window."""

from __future__ import annotations

import hashlib
import math
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

from avsuperb.extract import upstreams
from avsuperb.extract.upstreams import UpstreamError

transformers = pytest.importorskip("transformers")

TOL = 1e-4
SR = 16000
SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
# a conv front end with the released models' 320-sample hop (50 Hz), small
CONV = dict(conv_dim=(16, 16, 16), conv_stride=(5, 8, 8), conv_kernel=(10, 8, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)


def _families() -> dict[str, Callable[[], tuple[Any, Any]]]:
    T = transformers
    video_pre = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    return {
        "wav2vec2": lambda: (T.Wav2Vec2Model(T.Wav2Vec2Config(**SMALL, **CONV)), T.Wav2Vec2FeatureExtractor(do_normalize=True)),
        "hubert": lambda: (T.HubertModel(T.HubertConfig(**SMALL, **CONV)), T.Wav2Vec2FeatureExtractor(do_normalize=False)),
        "wavlm": lambda: (T.WavLMModel(T.WavLMConfig(**SMALL, **CONV, num_buckets=16, max_bucket_distance=20)), T.Wav2Vec2FeatureExtractor()),
        "data2vec-audio": lambda: (
            T.Data2VecAudioModel(T.Data2VecAudioConfig(**SMALL, **{**CONV, "num_conv_pos_embeddings": 3}, conv_pos_kernel_size=5)),
            T.Wav2Vec2FeatureExtractor(do_normalize=True),
        ),
        "whisper": lambda: (  # 1 s windows: 50 encoder positions
            T.WhisperModel(T.WhisperConfig(
                d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                encoder_ffn_dim=37, decoder_ffn_dim=37, num_mel_bins=16, max_source_positions=50, max_target_positions=16,
                vocab_size=100, pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1,
            )),
            T.WhisperFeatureExtractor(feature_size=16, chunk_length=1),
        ),
        "audio-spectrogram-transformer": lambda: (  # 64 fbank frames: 2 x 5 patches, 0.5 s windows
            T.ASTModel(T.ASTConfig(**SMALL, num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=10, time_stride=10)),
            T.ASTFeatureExtractor(num_mel_bins=32, max_length=64),
        ),
        "videomae": lambda: (
            T.VideoMAEModel(T.VideoMAEConfig(**SMALL, image_size=32, patch_size=16, num_frames=4, tubelet_size=2)),
            T.VideoMAEImageProcessor(**video_pre),
        ),
        "timesformer": lambda: (
            T.TimesformerModel(T.TimesformerConfig(**SMALL, image_size=32, patch_size=16, num_frames=4)),
            T.VideoMAEImageProcessor(**video_pre),
        ),
    }


FAMILIES = list(_families())
VIDEO = ("videomae", "timesformer")
# family -> (frame rate, samples or video frames of one window; None: no window)
EXPECTED = {
    "wav2vec2": (50.0, None), "hubert": (50.0, None), "wavlm": (50.0, None), "data2vec-audio": (50.0, None),
    "whisper": (50.0, SR), "audio-spectrogram-transformer": (10.0, 8000), "videomae": (7.5 / 2, 4), "timesformer": (7.5, 4),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.manual_seed(0)
    out = {}
    for name, make in _families().items():
        model, pre = make()
        d = tmp_path_factory.mktemp(name.replace("-", "_"))
        model.save_pretrained(d)
        pre.save_pretrained(d)
        out[name] = d
    return out


def clip(family: str, windows: float = 0.7) -> np.ndarray:
    """Random input of `windows` times the family's window (audio families without one: 1 s)."""
    rng = np.random.default_rng(1)
    window = EXPECTED[family][1]
    if family in VIDEO:
        return rng.integers(0, 256, (round(windows * window), 40, 48, 3), dtype=np.uint8)
    return (0.1 * rng.standard_normal(round(windows * (window or SR)))).astype(np.float32)


def run(up: Any, family: str, x: np.ndarray) -> np.ndarray:
    track = "video" if family in VIDEO else "audio"
    return up.extract([track], None, x)[track] if family in VIDEO else up.extract([track], x, None)[track]


def direct(d: Path, family: str, x: np.ndarray) -> list[torch.Tensor]:
    """The model's own hidden states on its own preprocessing of one window, reduced to frames as
    hf.py documents (computed here independently of the upstream)."""
    T = transformers
    model = T.AutoModel.from_pretrained(d, local_files_only=True).eval()
    cfg = model.config
    with torch.inference_mode():
        if family in VIDEO:
            pre = T.AutoProcessor.from_pretrained(d, local_files_only=True)
            pixels = pre(list(x), return_tensors="pt")["pixel_values"]
            hs = model(pixel_values=pixels, output_hidden_states=True).hidden_states
            spatial = (cfg.image_size // cfg.patch_size) ** 2
            if family == "videomae":  # tokens: tubelet-major
                return [h[0].reshape(cfg.num_frames // cfg.tubelet_size, spatial, -1).mean(1) for h in hs]
            return [h[0, 1:].reshape(spatial, cfg.num_frames, -1).mean(0) for h in hs]  # CLS, then patch-major
        pre = T.AutoFeatureExtractor.from_pretrained(d, local_files_only=True)
        feats = pre(x, sampling_rate=SR, return_tensors="pt")
        if family == "whisper":
            hs = model.get_encoder()(feats["input_features"], output_hidden_states=True).hidden_states
            return [h[0, : math.ceil(len(x) / 320)] for h in hs]
        if family == "audio-spectrogram-transformer":
            hs = model(**feats, output_hidden_states=True).hidden_states
            return [h[0, 2:].reshape(2, 5, -1).mean(0)[: math.ceil(len(x) / 1600)] for h in hs]  # CLS + distillation dropped
        return [h[0] for h in model(**feats, output_hidden_states=True).hidden_states]


@pytest.mark.parametrize("family", FAMILIES)
def test_layers_are_the_models_hidden_states(family, model_dirs):
    d = model_dirs[family]
    up = upstreams.build("hf", d)
    track = "video" if family in VIDEO else "audio"
    info = up.tracks[track]
    assert list(up.tracks) == [track]
    assert (info.num_layers, info.dim, info.frame_rate) == (3, 32, EXPECTED[family][0])
    x = clip(family, 1.0 if family in VIDEO else 0.7)
    out = run(up, family, x)
    want = torch.stack(direct(d, family, x), dim=1).numpy()
    assert out.shape == want.shape and out.shape[1:] == (3, 32)
    np.testing.assert_allclose(out, want, rtol=TOL, atol=TOL)

    cfg = up.config()
    assert cfg["model_type"] == family and cfg["directory"] == str(d.resolve()) and cfg["hidden_sizes"] == [32, 32, 32]
    digest = hashlib.sha256()
    for w in sorted(d.glob("*.safetensors")):
        digest.update(w.name.encode() + b"\0" + hashlib.sha256(w.read_bytes()).hexdigest().encode())
    assert up.checkpoint_sha256() == digest.hexdigest()


@pytest.mark.parametrize("family", [f for f in FAMILIES if EXPECTED[f][1] is not None])
def test_long_clips_are_consecutive_windows_cropped_to_the_clip(family, model_dirs):
    up = upstreams.build("hf", model_dirs[family])
    rate, window = EXPECTED[family]
    x = clip(family, 2.6)
    out = run(up, family, x)
    per_window = len(run(up, family, x[:window]))
    tail = run(up, family, x[2 * window :])
    assert len(out) == 2 * per_window + len(tail)
    np.testing.assert_allclose(out[:per_window], run(up, family, x[:window]), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(out[per_window : 2 * per_window], run(up, family, x[window : 2 * window]), rtol=TOL, atol=TOL)
    np.testing.assert_allclose(out[2 * per_window :], tail, rtol=TOL, atol=TOL)
    seconds = len(x) / (up.video_fps if family in VIDEO else SR)
    assert abs(len(out) - seconds * rate) <= 1  # the declared frame rate holds across windows


def test_unknown_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UpstreamError, match="model_type 'bert'; supported: wav2vec2, hubert, wavlm, data2vec-audio, whisper, "
                                           "audio-spectrogram-transformer, videomae, timesformer"):
        upstreams.build("hf", tmp_path)


def test_without_transformers_hf_says_how_to_install_it(model_dirs, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(UpstreamError, match=r"pip install avsuperb\[hf\]"):
        upstreams.build("hf", model_dirs["hubert"])


def test_hf_needs_a_model_directory(tmp_path):
    with pytest.raises(UpstreamError, match="needs --checkpoint DIR"):
        upstreams.build("hf")
    with pytest.raises(UpstreamError, match="no config.json"):
        upstreams.build("hf", tmp_path)
