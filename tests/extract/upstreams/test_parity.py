"""Parity with the golden fixtures: per-layer outputs of the AV-SUPERB reference experts (the
authors' own model code, roger-tseng/av-superb @ 696e269) on fixed inputs and fixed, regenerable
weights, copied into tests/fixtures/<name>/ (see tests/fixtures/README.md).

Each fixture's inputs go through what extraction runs (`build`, then `extract_batch` with the
streams `needs` asks for), and every layer's sequence is compared with the reference's: exact
length, then relative L2 error < 1e-4 for the pooled vector (as the store writer pools it), the
first and last 8 frames and the sum over frames.

The AVBERT checkpoint is written once per session from checkpoint.json's value rule. AVBERT's
video and fusion tracks run the visual ResNet-50 over 10 windows × 3 crops per clip (about 30 s a
case on one CPU core), so they run only with AVSUPERB_SLOW_TESTS=1; its audio track runs always.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import torch

from avsuperb.extract.upstreams import Upstream, build
from avsuperb.store.writer import _Clip



@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The fixtures were made on one thread; one also keeps the tests cheap on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

log = logging.getLogger(__name__)

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
TOLERANCE = 1e-4  # relative L2 error per layer (the fixtures' README)
SLOW = os.environ.get("AVSUPERB_SLOW_TESTS", "") not in ("", "0")
slow = pytest.mark.skipif(not SLOW, reason="AVBERT's visual ResNet over 30 windows a clip: set AVSUPERB_SLOW_TESTS=1")


@lru_cache(maxsize=None)
def _writer() -> ModuleType:
    """tests/fixtures/checkpoints.py (loaded by path: the tests are not a package)."""
    spec = importlib.util.spec_from_file_location("parity_checkpoints", FIXTURES / "checkpoints.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@lru_cache(maxsize=None)
def fixture(name: str) -> tuple[Any, Any, dict[str, Any]]:
    """(inputs, expected, checkpoint spec) of one fixture."""
    folder = FIXTURES / name
    return np.load(folder / "inputs.npz"), np.load(folder / "expected.npz"), _writer().load_spec(folder / "checkpoint.json")


def cases(name: str) -> list[str]:
    return [str(c) for c in fixture(name)[1]["cases"]]


def rel(got: np.ndarray, expected: np.ndarray) -> float:
    expected = np.asarray(expected, np.float64)
    return float(np.linalg.norm(np.asarray(got, np.float64) - expected) / np.linalg.norm(expected))


def extract_case(upstream: Upstream, name: str, case: str, tracks: list[str]) -> dict[str, np.ndarray]:
    """The case's features per track [T, L, D], given only the streams extraction would decode."""
    inputs = fixture(name)[0]
    rate, fps = upstream.needs(tracks)
    audio = inputs[f"{case}/audio"] if rate is not None else None
    video = inputs[f"{case}/video"] if fps is not None else None
    if rate is not None:
        assert int(inputs[f"{case}/audio_rate"]) == rate
    if fps is not None:
        assert float(inputs[f"{case}/video_fps"]) == fps
    return upstream.extract_batch(tracks, [(audio, video)])[0]


def compare(name: str, case: str, track: str, frames: np.ndarray) -> float:
    """Assert one track of one case matches the reference; returns the largest relative error."""
    expected = fixture(name)[1]

    def e(key: str) -> np.ndarray:
        return expected[f"{case}/{track}/{key}"]

    layers = e("pooled").shape[0]
    assert frames.shape[1] == layers, f"{case}/{track}: {frames.shape[1]} layers, the reference has {layers}"
    assert (e("seq_len") == len(frames)).all(), f"{case}/{track}: {len(frames)} frames, the reference has {e('seq_len')}"
    pooled = _Clip.of(frames, frames=False).pooled  # the store's pooled vector
    k = e("first8").shape[1]
    errors: dict[str, float] = {}
    for layer in range(layers):
        seq = frames[:, layer]
        for what, got, want in (
            ("pooled", pooled[layer], e("pooled")[layer]),
            ("first8", seq[:k], e("first8")[layer]),
            ("last8", seq[-k:], e("last8")[layer]),
            ("sum", seq.astype(np.float64).sum(0), e("sum")[layer]),
        ):
            errors[f"layer {layer} {what}"] = rel(got, want)
    worst = max(errors, key=errors.__getitem__)
    log.info("%s %s/%s: max relative error %.3g (%s)", name, case, track, errors[worst], worst)
    assert errors[worst] < TOLERANCE, f"{name} {case}/{track}: {worst} relative error {errors[worst]:.3g}"
    return errors[worst]


# --------------------------------------------------------------------------- parameter-free baselines


@pytest.mark.parametrize("case", cases("fbank"))
def test_fbank_matches_the_reference(case: str) -> None:
    assert fixture("fbank")[2]["container"] is None  # no checkpoint
    out = extract_case(build("fbank"), "fbank", case, ["audio"])
    compare("fbank", case, "audio", out["audio"])


@pytest.mark.parametrize("case", cases("hog"))
def test_hog_matches_the_reference(case: str) -> None:
    assert fixture("hog")[2]["container"] is None
    out = extract_case(build("hog"), "hog", case, ["video"])
    compare("hog", case, "video", out["video"])


# --------------------------------------------------------------------------- AVBERT


@pytest.fixture(scope="session")
def avbert_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The fixture's checkpoint in the released container (188 MB), written once per session; (path, values sha256)."""
    path = tmp_path_factory.mktemp("parity") / "avbert.pyth"
    sha = _writer().write_checkpoint(fixture("avbert")[2], path)
    return path, sha


@pytest.fixture(scope="module")
def avbert_upstream(avbert_checkpoint: tuple[Path, str]) -> Upstream:
    return build("avbert", checkpoint=avbert_checkpoint[0])


def test_avbert_checkpoint_writer_reproduces_the_fixture_values(avbert_checkpoint: tuple[Path, str]) -> None:
    """Our writer gives the values the reference outputs were computed with, in the released layout."""
    path, sha = avbert_checkpoint
    spec = fixture("avbert")[2]
    assert sha == spec["values_sha256"]
    obj = torch.load(path, map_location="cpu", weights_only=True)
    assert list(obj) == list(spec["container"]) == ["epoch", "state_dict"]
    keys = list(obj["state_dict"])
    assert keys == [t[0] for t in spec["tensors"]]
    assert {k.split(".", 1)[0] for k in keys} == {"avbert", "concat_head", "concat_seq_head"}


@pytest.mark.parametrize("case", cases("avbert"))
def test_avbert_audio_track_matches_the_reference(avbert_upstream: Upstream, case: str) -> None:
    """The audio track alone, as `--tracks audio` extracts it (audio windows spread without the video)."""
    out = extract_case(avbert_upstream, "avbert", case, ["audio"])
    compare("avbert", case, "audio", out["audio"])


@slow
@pytest.mark.parametrize("case", cases("avbert"))
def test_avbert_all_tracks_match_the_reference(avbert_upstream: Upstream, case: str) -> None:
    """All three tracks together, as a default extraction runs them (audio windows aligned to the video's)."""
    tracks = [str(t) for t in fixture("avbert")[1]["tracks"]]
    out = extract_case(avbert_upstream, "avbert", case, tracks)
    for track in tracks:
        compare("avbert", case, track, out[track])
