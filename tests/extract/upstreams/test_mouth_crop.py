"""mouth_crop: finds the lips on a real face (skimage's astronaut), follows the face when it moves,
fills frames without a face, falls back to the centre crop without any, and plugs into av_hubert
as `video_crop="mouth"` (an optional extra: a clear error when facenet-pytorch is absent)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

from avsuperb.extract.upstreams import UpstreamError, av_hubert, build, mouth_crop

pytest.importorskip("skimage")
from skimage import data  # noqa: E402


def _load_av_hubert_tests() -> ModuleType:
    """The checkpoint helpers of test_av_hubert.py (tests are not a package)."""
    path = Path(__file__).with_name("test_av_hubert.py")
    spec = importlib.util.spec_from_file_location("_avsuperb_tests_test_av_hubert", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


AVH = _load_av_hubert_tests()
needs_facenet = pytest.mark.skipif(
    importlib.util.find_spec("facenet_pytorch") is None, reason=f"optional extra absent: {mouth_crop.INSTALL}"
)

# Measured once on astronaut() (512 × 512) by eye, on an enlarged PNG of the face: the mouth corners
# are near (203, 142) and (243, 142), the outer eye corners near (202, 102) and (247, 103).
MOUTH = np.array([223.0, 142.0])
EYE_MOUTH = 39.0  # eye midpoint to mouth centre, pixels
SHIFT = np.array([40, 24])  # x, y


@pytest.fixture(scope="module", autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)


def astronaut_clip(frames: int, shift_from: int | None = None, size: int = 512) -> torch.Tensor:
    """uint8 [T, size, size, 3]: the astronaut, moved by SHIFT · size/512 from frame `shift_from` on."""
    img = data.astronaut()
    if size != 512:
        img = torch.nn.functional.interpolate(
            torch.from_numpy(img).permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear", antialias=True
        )[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
    moved = np.roll(img, tuple((SHIFT * size // 512)[::-1]), axis=(0, 1))
    clip = [moved if shift_from is not None and t >= shift_from else img for t in range(frames)]
    return torch.from_numpy(np.stack(clip))


def gray(video: torch.Tensor) -> torch.Tensor:
    x = video.float()
    return (0.2989 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]) / 255.0


@needs_facenet
def test_crop_centre_lands_on_the_mouth_and_follows_a_shifted_face() -> None:
    cropper = mouth_crop.MouthCropper(config=mouth_crop.MouthCropConfig(detect_every=1, smooth_frames=1))
    video = astronaut_clip(6, shift_from=3)
    track = cropper.track(video)
    assert track is not None and (track.detected, track.searched) == (6, 6)
    np.testing.assert_allclose(track.center[:3], np.tile(MOUTH, (3, 1)), atol=5)
    np.testing.assert_allclose(track.center[3:], np.tile(MOUTH + SHIFT, (3, 1)), atol=5)
    np.testing.assert_allclose(track.side, 1.5 * EYE_MOUTH, rtol=0.15)  # the ROI scales with the face
    assert np.abs(track.angle).max() < 0.1  # an upright face
    assert cropper.fallbacks == 0

    rois = mouth_crop.mouth_rois(gray(video), track)
    assert rois.shape == (6, 96, 96)
    # the crop follows the face: before and after the move it shows the same mouth,
    # while the frame's own centre crop has changed
    same_mouth = (rois[0] - rois[5]).abs().mean()
    centre = av_hubert.center_crop(gray(video))
    assert same_mouth < 0.03 < (centre[0] - centre[5]).abs().mean()
    # the lips (bright teeth between dark lip lines) sit in the middle rows of the ROI
    row_contrast = rois[0, :, 24:72].std(dim=1)
    assert 30 <= int(row_contrast.argmax()) <= 66


@needs_facenet
def test_frames_without_a_face_are_interpolated_and_smoothing_is_centred() -> None:
    video = astronaut_clip(7, shift_from=4, size=256)
    video[2:5] = 128  # three blank frames between the two positions
    cropper = mouth_crop.MouthCropper(config=mouth_crop.MouthCropConfig(detect_every=1, smooth_frames=1))
    track = cropper.track(video)
    assert track is not None and (track.detected, track.searched) == (4, 7)
    a, b = track.center[1], track.center[5]
    np.testing.assert_allclose(b - a, SHIFT / 2, atol=3)
    for t in (2, 3, 4):  # linear between the last face before and the first after
        np.testing.assert_allclose(track.center[t], a + (t - 1) / 4 * (b - a), atol=1e-6)

    # every 3rd frame (and the last) searched; a centred window keeps a still face where it is
    still = mouth_crop.MouthCropper(config=mouth_crop.MouthCropConfig(detect_every=3, smooth_frames=12))
    track = still.track(astronaut_clip(8, size=256))
    assert track is not None and track.searched == 4  # frames 0, 3, 6, 7
    np.testing.assert_allclose(track.center, np.tile(MOUTH / 2, (8, 1)), atol=4)
    ramp = np.arange(10, dtype=np.float64)[:, None]
    np.testing.assert_allclose(mouth_crop._moving_average(ramp, 3)[1:-1], ramp[1:-1])  # no lag


@needs_facenet
def test_no_face_falls_back_to_the_centre_crop_and_is_counted(caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.integers(0, 256, size=(4, 120, 160, 3), dtype=np.uint8))
    blank = torch.full((3, 96, 96, 3), 90, dtype=torch.uint8)
    cropper = mouth_crop.MouthCropper()
    with caplog.at_level("DEBUG", logger=mouth_crop.__name__):
        assert cropper.track(noise) is None and cropper.track(blank) is None
    assert (cropper.clips, cropper.fallbacks) == (2, 2)
    assert "no face" in caplog.text
    torch.testing.assert_close(av_hubert.video_features(noise, cropper), av_hubert.video_features(noise))
    assert cropper.fallbacks == 3


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("avh_mouth") / "tiny_iter5.pt"
    AVH.write_checkpoint(path, AVH.TINY, seed=0)
    return path


@needs_facenet
def test_av_hubert_with_the_mouth_crop_extracts_every_track(tiny_ckpt: Path) -> None:
    model = build("av_hubert", tiny_ckpt, options={"video_crop": "mouth"})
    centre = av_hubert.AVHubert(tiny_ckpt)
    video = astronaut_clip(5, size=256).numpy()
    audio = (0.1 * np.random.default_rng(1).standard_normal(16000 * 5 // 25)).astype(np.float32)
    out = model.extract(["audio", "video", "fusion"], audio, video)
    layers, dim = AVH.TINY["encoder_layers"] + 1, AVH.TINY["encoder_embed_dim"]
    assert {t: x.shape for t, x in out.items()} == {t: (5, layers, dim) for t in ("audio", "video", "fusion")}
    assert all(np.isfinite(x).all() for x in out.values())
    ref = centre.extract(["audio", "video"], audio, video)
    np.testing.assert_array_equal(out["audio"], ref["audio"])  # the crop only changes the video input
    assert np.abs(out["video"] - ref["video"]).max() > 1e-3
    assert model.mouth_fallbacks == 0 and model.notes() == []
    model.extract(["video"], audio, np.full_like(video, 90))  # no face anywhere: centre crop, and the run is told
    assert model.mouth_fallbacks == 1 and "1 of 2 clips showed no face" in " ".join(model.notes())

    conf = model.config()
    assert conf["crop"] == "mouth"
    assert conf["mouth_crop"]["landmark_model"].startswith("facenet-pytorch MTCNN")
    assert conf["mouth_crop"]["landmark_model_version"] == "2.6.0" and conf["mouth_crop"]["roi"] == 96
    assert centre.config()["crop"] == "center" and "mouth_crop" not in centre.config()


def test_a_bad_video_crop_is_a_clear_error(tiny_ckpt: Path) -> None:
    with pytest.raises(UpstreamError, match=r"unknown video crop 'lips'; choose one of: center, mouth"):
        build("av_hubert", tiny_ckpt, options={"video_crop": "lips"})
    with pytest.raises(UpstreamError, match="model 'fbank' has no option video_crop"):
        build("fbank", options={"video_crop": "mouth"})


def test_without_facenet_pytorch_mouth_says_what_to_install(tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "facenet_pytorch", None)  # import facenet_pytorch now fails
    for make in (lambda: mouth_crop.MouthCropper(), lambda: av_hubert.AVHubert(tiny_ckpt, video_crop="mouth")):
        with pytest.raises(UpstreamError) as err:
            make()
        message = str(err.value)
        assert "\n" not in message and "pip install --no-deps facenet-pytorch==2.6.0" in message
        assert "--video-crop center needs nothing" in message
    assert av_hubert.AVHubert(tiny_ckpt, video_crop="center").config()["crop"] == "center"


def test_cli_passes_video_crop_only_when_given(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from avsuperb import cli
    from avsuperb.extract import run

    seen: list[dict] = []

    class Done(Exception):
        pass

    def fake_run(opts: run.ExtractOptions) -> None:
        seen.append(dict(opts.model_options))
        raise Done

    monkeypatch.setattr(run, "run_extraction", fake_run)
    base = ["--model", "av_hubert", "--dataset", "synthetic", "--out", str(tmp_path / "x.zarr")]
    for extra in ([], ["--video-crop", "mouth"], ["--video-crop", "center"]):
        result = CliRunner().invoke(cli.extract_cmd, base + extra)
        assert isinstance(result.exception, Done), result.output
    assert seen == [{}, {"video_crop": "mouth"}, {"video_crop": "center"}]
    result = CliRunner().invoke(cli.extract_cmd, base + ["--video-crop", "lips"])
    assert result.exit_code == 2 and "'lips' is not one of 'center', 'mouth'" in result.output
