"""FBANK and HoG equal independent computations of the reference's features."""

import numpy as np
import pytest
import torch
import torchaudio
import torchvision.transforms.functional as TF
from skimage.feature import hog as skimage_hog

from avsuperb.extract import upstreams
from avsuperb.extract.upstreams import UpstreamError


def test_fbank_equals_kaldi_fbank_with_deltas():
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    model = upstreams.build("fbank")
    out = model.extract(["audio"], wave, None)["audio"]

    feats = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(wave)[None], sample_frequency=16000, num_mel_bins=80, frame_length=25.0, frame_shift=10.0
    )
    deltas = torchaudio.transforms.ComputeDeltas(win_length=5)
    d1 = deltas(feats.T[None])[0].T
    d2 = deltas(d1.T[None])[0].T
    expected = torch.cat([feats, d1, d2], dim=1).numpy()

    assert out.shape == (198, 1, 240)
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5, atol=1e-5)
    assert model.tracks["audio"].dim == 240 and model.tracks["audio"].frame_rate == 100


def test_fbank_rejects_too_short_audio():
    with pytest.raises(ValueError, match="shorter than one"):
        upstreams.build("fbank").extract(["audio"], np.zeros(100, np.float32), None)


def test_hog_equals_skimage_on_the_same_frames():
    rng = np.random.default_rng(1)
    video = rng.integers(0, 256, size=(6, 96, 120, 3), dtype=np.uint8)
    video[:, 30:60, 40:90] = [250, 10, 120]  # strong edges
    model = upstreams.build("hog")
    out = model.extract(["video"], None, video)["video"]

    frames = TF.resize(torch.from_numpy(video).permute(0, 3, 1, 2), [128, 64], antialias=False).numpy().astype(np.float64)
    gray = 0.2989 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]
    expected = np.stack(
        [skimage_hog(g, orientations=8, pixels_per_cell=(16, 16), cells_per_block=(1, 1), block_norm="L2-Hys") for g in gray]
    )
    assert out.shape == (6, 1, 256)
    # skimage accumulates cell histograms in single precision
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(out[0, 0], out[1, 0])


@pytest.mark.parametrize("name", ["fbank", "hog"])
def test_handcrafted_upstreams_take_no_checkpoint(name, tmp_path):
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"x")
    with pytest.raises(UpstreamError, match="no --checkpoint"):
        upstreams.build(name, ckpt)


def test_unknown_model_lists_choices():
    with pytest.raises(UpstreamError, match="fbank, hog"):
        upstreams.build("nope")


def test_build_passes_model_options_and_refuses_unknown_ones():
    from avsuperb.extract.upstreams import UpstreamError, build

    with pytest.raises(UpstreamError, match="model 'fbank' has no option video_crop; it takes none"):
        build("fbank", options={"video_crop": "mouth"})
    assert build("fbank", options={}).name == "fbank"
