"""Tests for the synthetic audio-visual corpus generator."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import av
import numpy as np
import pytest

from avsuperb.extract.datasets import synthetic_gen
from avsuperb.extract.datasets.synthetic_gen import SYNTHETIC_VERSION, SyntheticSpec, generate

logger = logging.getLogger(__name__)

SMALL = SyntheticSpec(n_train=12, n_dev=4, n_test=4)


def decode(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Decode an mp4 into (mono float32 audio, luma frames uint8 [T, H, W]).

    The luma (Y) plane is the gray image; it avoids a slow per-frame RGB conversion."""
    with av.open(str(path)) as c:
        chunks = [f.to_ndarray() for f in c.decode(audio=0)]
    a = np.concatenate(chunks, axis=1)[0]
    scale = {np.dtype(np.int16): 2.0**15, np.dtype(np.int32): 2.0**31}.get(a.dtype, 1.0)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.pix_fmt == "yuv420p"
        frames = np.stack([f.to_ndarray()[: s.codec_context.height] for f in c.decode(s)])
    return a.astype(np.float32) / np.float32(scale), frames


def mouth_rows(frame: np.ndarray, size: int = 128) -> int:
    """Number of dark rows in the mouth column (centre of the frame)."""
    s = size / 128
    col = frame[int(66 * s):int(104 * s), size // 2 - 2:size // 2 + 2].astype(np.float32).mean(axis=1)
    return int((col < 80).sum())


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("syn") / "small", SMALL, progress=False).parent


def test_manifest_structure(small: Path) -> None:
    m = json.loads((small / "manifest.json").read_text())
    assert m["name"] == "synthetic" and m["version"] == SYNTHETIC_VERSION
    assert m["spec"] == json.loads(json.dumps(asdict(SMALL)))
    assert set(m["labels"]) == {"events", "action", "transcript", "speaker", "emotion"}
    assert len(m["labels"]["events"]["classes"]) == 6 and len(m["labels"]["action"]["classes"]) == 4
    assert m["labels"]["emotion"]["classes"] == ["neu", "hap", "ang", "sad"]
    assert len(m["clips"]) == 20
    assert [c["split"] for c in m["clips"]].count("test") == 4
    for c in m["clips"]:
        assert (small / c["path"]).is_file()
        lab = c["labels"]
        assert set(lab["events"]) <= set(m["labels"]["events"]["classes"])
        assert lab["action"] in m["labels"]["action"]["classes"]
        assert lab["emotion"] in m["labels"]["emotion"]["classes"]
        assert 2 <= len(lab["transcript"].split()) <= 3 and len(lab["transcript"]) <= 14
        assert set(lab["transcript"]) <= set(synthetic_gen.CHARS + " ")
        spk = int(lab["speaker"][3:])
        assert (spk >= synthetic_gen.N_TRAIN_SPEAKERS) == (c["split"] == "test")
        assert 1.4 <= c["duration"] <= 3.6


def test_determinism(small: Path, tmp_path: Path) -> None:
    other = generate(tmp_path / "again", SMALL, progress=False).parent
    m1, m2 = (json.loads((r / "manifest.json").read_text()) for r in (small, other))
    assert m1 == m2
    for cid in (m1["clips"][0]["path"], m1["clips"][-1]["path"]):
        a1, v1 = decode(small / cid)
        a2, v2 = decode(other / cid)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(v1, v2)


def test_lengths_and_av_sync(tmp_path: Path) -> None:
    # no events / thuds, so that the lead-in holds only background noise
    spec = SyntheticSpec(seed=3, n_train=8, n_dev=2, n_test=2, event_prob=0.0, thud_gain=0.0)
    root = generate(tmp_path / "sync", spec, progress=False).parent
    m = json.loads((root / "manifest.json").read_text())
    for c in m["clips"]:
        audio, frames = decode(root / c["path"])
        assert abs(len(audio) - c["duration"] * 16000) <= 4
        assert len(frames) == round(c["duration"] * 25)
        assert frames.shape[1:] == (128, 128)
        assert np.abs(audio).max() <= 1.0
        rows = np.array([mouth_rows(f) for f in frames])
        k0 = int(np.argmax(rows >= 4))  # first frame with an open mouth
        assert rows[k0] >= 4 and k0 >= 5, rows  # lead-in >= 0.2 s is closed
        assert (rows[:k0] <= 1).all(), rows
        spf = 640  # audio samples per video frame
        e = audio.astype(np.float64) ** 2
        first = e[k0 * spf:(k0 + 1) * spf].mean()  # audio during the first open-mouth frame
        lead = np.median(e[: (k0 - 1) * spf].reshape(-1, 160).mean(1))  # lead-in (10 ms windows)
        assert first > 8 * lead, (first, lead)
        # Frame k shows the char active at k/25, so the first token starts in ((k0-1)/25, k0/25]:
        # walking back from frame k0, the audio must fall to the lead-in level inside that interval.
        win = e[: (k0 + 1) * spf].reshape(-1, 80).mean(1)  # 5 ms windows
        quiet = np.nonzero(win[: k0 * spf // 80] < 0.1 * first)[0]
        onset = (quiet[-1] + 1) * 80 / 16000
        assert (k0 - 1) / 25 - 0.005 <= onset <= k0 / 25 + 0.01, (onset, k0)


def test_streams(small: Path) -> None:
    m = json.loads((small / "manifest.json").read_text())
    with av.open(str(small / m["clips"][0]["path"])) as c:
        a, v = c.streams.audio[0], c.streams.video[0]
        assert a.codec_context.name == "alac" and a.codec_context.sample_rate == 16000
        assert a.codec_context.channels == 1
        assert v.codec_context.name == synthetic_gen.video_codec().replace("libx264", "h264")
        assert (v.codec_context.width, v.codec_context.height) == (128, 128) and v.average_rate == 25
        first_audio = next(c.decode(a))
        assert first_audio.pts == 0
    with av.open(str(small / m["clips"][0]["path"])) as c:
        assert next(c.decode(video=0)).pts == 0


def test_mpeg4_fallback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synthetic_gen, "video_codec", lambda: "mpeg4")
    root = generate(tmp_path / "mp4v", SyntheticSpec(n_train=2, n_dev=1, n_test=1), progress=False).parent
    m = json.loads((root / "manifest.json").read_text())
    for c in m["clips"]:
        with av.open(str(root / c["path"])) as cont:
            assert cont.streams.video[0].codec_context.name == "mpeg4"
        audio, frames = decode(root / c["path"])
        assert abs(len(audio) - c["duration"] * 16000) <= 4 and len(frames) == round(c["duration"] * 25)
        assert max(mouth_rows(f) for f in frames) >= 5 and mouth_rows(frames[0]) <= 1


def test_atomic_and_idempotent(small: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    manifest = small / "manifest.json"
    before = manifest.stat().st_mtime_ns

    def boom(*args: object, **kwargs: object) -> float:
        raise AssertionError("re-rendered")

    monkeypatch.setattr(synthetic_gen, "_render", boom)
    assert generate(small, SMALL, progress=False) == manifest
    assert manifest.stat().st_mtime_ns == before


def test_failed_render_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> float:
        raise RuntimeError("fail")

    monkeypatch.setattr(synthetic_gen, "_render", boom)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "broken", SMALL, progress=False)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- learnability


def _mel_fb(sr: int = 16000, n_fft: int = 512, n_mels: int = 80) -> np.ndarray:
    def mel(f: np.ndarray) -> np.ndarray:
        return 2595 * np.log10(1 + f / 700)

    pts = 700 * (10 ** (np.linspace(0, mel(np.array(sr / 2)), n_mels + 2) / 2595) - 1)
    freqs = np.fft.rfftfreq(n_fft, 1 / sr)
    lo, c, hi = pts[:-2, None], pts[1:-1, None], pts[2:, None]
    return np.clip(np.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), 0, None)


def audio_feature(x: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """Time-mean of an 80-band log-mel spectrogram (25 ms / 10 ms)."""
    n = 1 + (len(x) - 400) // 160
    idx = np.arange(400)[None] + 160 * np.arange(n)[:, None]
    power = np.abs(np.fft.rfft(x[idx] * np.hanning(400), 512)) ** 2
    return np.log(power @ fb.T + 1e-8).mean(0)


def video_feature(frames: np.ndarray) -> np.ndarray:
    """Time-mean of per-frame HOG of the gray frame resized to 128x64 (every 2nd frame, for speed)."""
    from skimage.feature import hog
    from skimage.transform import resize

    gray = frames.astype(np.float32) / 255
    return np.mean([hog(resize(g, (128, 64)), orientations=8, pixels_per_cell=(16, 16), cells_per_block=(1, 1))
                    for g in gray[::2]], axis=0)


@pytest.fixture(scope="module")
def default_corpus(default_corpus_root: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    root = default_corpus_root
    m = json.loads((root / "manifest.json").read_text())
    fb = _mel_fb()
    feats_a, feats_v = [], []
    m["clips"] = [c for c in m["clips"] if c["split"] != "dev"]  # dev is not needed here
    for c in m["clips"]:
        audio, frames = decode(root / c["path"])
        feats_a.append(audio_feature(audio, fb))
        feats_v.append(video_feature(frames))
    return m, np.array(feats_a), np.array(feats_v)


def test_trials(default_corpus: tuple[dict, np.ndarray, np.ndarray]) -> None:
    m = default_corpus[0]
    spk = {c["id"]: c["labels"]["speaker"] for c in m["clips"] if c["split"] == "test"}
    assert set(spk.values()) == set(synthetic_gen.SPEAKERS[synthetic_gen.N_TRAIN_SPEAKERS :])
    trials = m["trials"]
    assert len({(a, b) for a, b, _ in trials}) == len(trials)
    ids = sorted(spk)
    same = sum(spk[a] == spk[b] for i, a in enumerate(ids) for b in ids[i + 1 :])
    assert sum(t[2] for t in trials) == min(same, 300) == len(trials) // 2 and len(trials) % 2 == 0
    for a, b, lab in trials:
        assert a in spk and b in spk and a != b
        assert lab == int(spk[a] == spk[b])


def test_learnability(default_corpus: tuple[dict, np.ndarray, np.ndarray]) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    m, fa, fv = default_corpus
    split = np.array([c["split"] for c in m["clips"]])
    tr, te = split == "train", split == "test"

    def clf() -> object:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000))

    def acc(x: np.ndarray, task: str) -> float:
        y = np.array([c["labels"][task] for c in m["clips"]])
        return float(clf().fit(x[tr], y[tr]).score(x[te], y[te]))

    classes = m["labels"]["events"]["classes"]
    ev = np.array([[e in c["labels"]["events"] for e in classes] for c in m["clips"]])
    aucs = [roc_auc_score(ev[te, j], clf().fit(fa[tr], ev[tr, j]).predict_proba(fa[te])[:, 1])
            for j in range(len(classes))]
    res = {"emotion/audio": acc(fa, "emotion"), "action/video": acc(fv, "action"),
           "action/audio": acc(fa, "action"), "emotion/video": acc(fv, "emotion"),
           "events/audio(mean AUC)": float(np.mean(aucs))}
    logger.warning("learnability: %s", res)
    assert res["emotion/audio"] >= 0.6
    assert res["events/audio(mean AUC)"] >= 0.8
    assert res["action/video"] >= 0.6
    assert res["action/audio"] <= 0.4
    assert res["emotion/video"] <= 0.4
