"""PyAV decoding: lengths, time ranges, frame-rate conversion and clear failures."""

from fractions import Fraction

import av
import numpy as np
import pytest

from avsuperb.extract.media import MediaError, decode


def write_clip(path, seconds=2.0, fps=25, sr=16000, audio=True, video=True):
    """Video frame k is uniformly grey with value 4k; audio is a 440 Hz tone."""
    with av.open(str(path), "w") as out:
        if video:
            vs = out.add_stream("mpeg4", rate=fps)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
            vs.options = {"qscale": "1"}
        if audio:
            a = out.add_stream("alac", rate=sr, layout="mono")
        if video:
            for k in range(int(round(seconds * fps))):
                img = np.full((48, 64, 3), min(4 * k, 255), np.uint8)
                frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                frame.pts = k
                frame.time_base = Fraction(1, fps)
                out.mux(vs.encode(frame))
            out.mux(vs.encode(None))
        if audio:
            n = int(seconds * sr)
            wave = (0.5 * np.sin(2 * np.pi * 440 * np.arange(n) / sr) * 32767).astype(np.int16)
            for start in range(0, n, 4096):
                chunk = wave[start : start + 4096]
                frame = av.AudioFrame.from_ndarray(chunk[None], format="s16p", layout="mono")
                frame.sample_rate, frame.pts = sr, start
                frame.time_base = Fraction(1, sr)
                out.mux(a.encode(frame))
            out.mux(a.encode(None))
    return path


def test_whole_clip_lengths(tmp_path):
    m = decode(write_clip(tmp_path / "c.mp4"), sample_rate=16000, fps=25, start=0.0, end=2.0)
    assert m.audio.dtype == np.float32 and abs(len(m.audio) - 32000) <= 1
    assert m.video.shape == (50, 48, 64, 3) and m.video.dtype == np.uint8
    assert np.abs(m.audio).max() == pytest.approx(0.5, abs=0.01)


def test_time_range_is_cut_from_both_streams(tmp_path):
    m = decode(write_clip(tmp_path / "c.mp4"), sample_rate=16000, fps=25, start=0.8, end=1.4)
    assert len(m.audio) == int(round(0.6 * 16000))
    assert len(m.video) == 15
    assert abs(int(m.video[0].mean()) - 4 * 20) <= 3  # frame 20 is at 0.8 s


def test_frame_rate_conversion_and_audio_resampling(tmp_path):
    m = decode(write_clip(tmp_path / "c.mp4", fps=30), sample_rate=8000, fps=25, start=0.0, end=2.0)
    assert len(m.video) == 50 and abs(len(m.audio) - 16000) <= 1
    grey = m.video[:, 0, 0, 0].astype(int)
    assert (np.diff(grey) >= -2).all()  # time runs forward


def test_only_requested_streams_are_decoded(tmp_path):
    m = decode(write_clip(tmp_path / "c.mp4"), sample_rate=16000, fps=None, start=0.0, end=2.0)
    assert m.video is None and m.audio is not None


@pytest.mark.parametrize(
    "make, sr, fps, message",
    [
        (lambda p: p, 16000, 25, "missing file"),
        (lambda p: (p.write_bytes(b""), p)[1], 16000, 25, "empty file"),
        (lambda p: (p.write_bytes(b"not a video at all" * 100), p)[1], 16000, 25, "cannot open media"),
        (lambda p: write_clip(p, audio=False), 16000, 25, "no audio stream"),
        (lambda p: write_clip(p, video=False), None, 25, "no video stream"),
    ],
)
def test_failures_are_media_errors(tmp_path, make, sr, fps, message):
    path = make(tmp_path / "bad.mp4")
    with pytest.raises(MediaError, match=message):
        decode(path, sample_rate=sr, fps=fps, start=0.0, end=1.0)


def test_probe_reads_streams_and_duration_without_decoding(small_corpus):
    from avsuperb.extract.media import MediaError, probe

    clip = next(iter(sorted(small_corpus.rglob("*.mp4"))))
    info = probe(clip)
    assert info.has_audio and info.has_video
    assert info.sample_rate == 16000 and info.fps == 25.0
    assert 0.5 < info.duration < 5.0
    with pytest.raises(MediaError, match="missing file"):
        probe(clip.with_name("nope.mp4"))


def test_fill_missing_gives_silence_or_black_frames_over_the_range(tmp_path):
    from avsuperb.extract.media import BLANK_SIZE

    mute = write_clip(tmp_path / "mute.mp4", seconds=1.0, audio=False)
    with pytest.raises(MediaError, match="no audio stream"):
        decode(mute, sample_rate=16000, fps=25, end=1.0)
    m = decode(mute, sample_rate=16000, fps=25, start=0.2, end=1.0, fill_missing=True)
    assert m.audio.shape == (12800,) and not m.audio.any() and m.sample_rate == 16000
    assert m.video.shape == (20, 48, 64, 3) and m.video.any()

    blind = tmp_path / "blind.m4a"
    write_clip(blind, seconds=1.0, video=False)
    m = decode(blind, sample_rate=16000, fps=25, end=0.8, fill_missing=True)
    assert m.video.shape == (20, *BLANK_SIZE, 3) and not m.video.any() and m.fps == 25
    assert m.audio.shape == (12800,) and m.audio.any()


def _encodable(codec):
    try:
        av.codec.Codec(codec, "w")
        return True
    except Exception:  # noqa: BLE001 - encoder missing in this build
        return False


@pytest.mark.parametrize(
    "codec, container, rate",
    [("aac", "mp4", 44100), ("aac", "mp4", 48000), ("libmp3lame", "mp3", 44100), ("pcm_s16le", "wav", 48000)],
)
def test_compressed_stereo_audio_at_dataset_rates_decodes_to_16k_mono(tmp_path, codec, container, rate):
    if not _encodable(codec):
        pytest.skip(f"{codec} encoder not in this PyAV build")
    path = tmp_path / f"a.{container}"
    seconds, n = 2.0, int(2.0 * rate)
    t = np.arange(n) / rate
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.4 * np.sin(2 * np.pi * 440 * t + 0.3)
    with av.open(str(path), "w") as out:
        s = out.add_stream(codec, rate=rate, layout="stereo")
        fmt = s.codec_context.codec.audio_formats[0].name
        pcm = np.stack([left, right]).astype(np.float32)
        size = s.codec_context.frame_size or 1024
        for start in range(0, n, size):
            chunk = pcm[:, start : start + size]
            if fmt == "s16":
                frame = av.AudioFrame.from_ndarray((chunk.T.reshape(1, -1) * 32767).astype(np.int16), format="s16", layout="stereo")
            elif fmt == "fltp":
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format="fltp", layout="stereo")
            else:
                frame = av.AudioFrame.from_ndarray((chunk * 32767).astype(np.int16), format="s16p", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = rate, start, Fraction(1, rate)
            out.mux(s.encode(frame))
        out.mux(s.encode(None))
    m = decode(path, sample_rate=16000, fps=None)
    assert m.audio.ndim == 1 and m.sample_rate == 16000
    assert abs(len(m.audio) - seconds * 16000) <= 0.05 * seconds * 16000  # codec priming / padding only
    spectrum = np.abs(np.fft.rfft(m.audio[4000:20000]))
    assert abs(np.argmax(spectrum) * 16000 / 16000 - 440) <= 2


def test_variable_frame_rate_video_is_regridded_by_timestamp(tmp_path):
    path = tmp_path / "vfr.mkv"
    times_ms = [0, 30, 100, 110, 250, 400, 420, 600, 900]  # irregular frame times
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=1000)
        vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        vs.codec_context.time_base = Fraction(1, 1000)
        vs.options = {"qscale": "1"}
        for k, ms in enumerate(times_ms):
            frame = av.VideoFrame.from_ndarray(np.full((32, 32, 3), 20 * k, np.uint8), format="rgb24")
            frame.pts, frame.time_base = ms, Fraction(1, 1000)
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))
    m = decode(path, sample_rate=None, fps=10, end=1.0)
    assert m.video.shape[0] == 10
    grid_ms = np.arange(10) * 100
    expected = [max(k for k, ms in enumerate(times_ms) if ms <= g + 25) for g in grid_ms]
    np.testing.assert_allclose(m.video[:, 16, 16, 0].astype(int), [20 * k for k in expected], atol=6)


def write_clip_streams(path, audio_s, video_s, fps=25, sr=16000):
    """An mkv whose audio and video streams last audio_s and video_s seconds, interleaved."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("mpeg4", rate=fps)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("alac", rate=sr, layout="mono")
        n_video, n_audio = int(round(video_s * fps)), int(round(audio_s * sr))
        a_at = 0
        for k in range(max(n_video, int(np.ceil(n_audio / sr * fps)))):
            if k < n_video:
                frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 100, np.uint8), format="rgb24")
                frame.pts, frame.time_base = k, Fraction(1, fps)
                out.mux(vs.encode(frame))
            while a_at < min(n_audio, (k + 1) * sr // fps):
                chunk = np.full((1, min(640, n_audio - a_at)), 1000, np.int16)
                frame = av.AudioFrame.from_ndarray(chunk, format="s16p", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = sr, a_at, Fraction(1, sr)
                out.mux(a.encode(frame))
                a_at += chunk.shape[1]
        out.mux(vs.encode(None))
        out.mux(a.encode(None))
    return path


@pytest.mark.parametrize("keep", [0.3, 0.6])
def test_truncated_file_is_a_media_error_naming_where_it_stops(tmp_path, keep):
    whole = write_clip_streams(tmp_path / "whole.mkv", 4.0, 4.0)
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: int(whole.stat().st_size * keep)])
    assert decode(whole, sample_rate=16000, fps=25).audio.size == 64000
    with pytest.raises(MediaError, match=r"truncated file: its data stops at [0-9.]+ s, though its header declares 4.00 s"):
        decode(cut, sample_rate=16000, fps=25)
    # a range that ends before the cut still decodes
    m = decode(cut, sample_rate=16000, fps=25, start=0.0, end=0.5)
    assert m.audio.size == 8000 and len(m.video) == 12


def test_audio_shorter_than_video_is_not_truncation(tmp_path):
    clip = write_clip_streams(tmp_path / "short_audio.mkv", 2.5, 4.0)
    m = decode(clip, sample_rate=16000, fps=25, start=0.0, end=4.0)
    assert m.audio.size == 40000 and len(m.video) == 100
