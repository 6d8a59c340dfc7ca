"""The extraction loop: a clip that fails to decode is recorded and counted, the run goes on."""

import json
import shutil

import numpy as np

from avsuperb import schemas as S
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.store import open_backend


def test_broken_clip_is_recorded_and_the_run_goes_on(small_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(small_corpus, root)
    victim = sorted((root / "clips").glob("*.mp4"))[3]
    victim.write_bytes(victim.read_bytes()[:200])  # truncated
    out = tmp_path / "s.zarr"
    summary = run_extraction(ExtractOptions("fbank", "synthetic", out, root, block_size=8, progress=False))
    assert (summary.failed, summary.done, summary.pending) == (1, 39, 0)
    assert "1 failed" in summary.line() and "complete" in summary.line()
    b = open_backend(out, "r")
    ids = list(b.read(S.CLIP_ID))
    row = ids.index(victim.stem)
    assert b.read(S.CLIP_STATUS)[row] == S.STATUS_FAILED
    assert b.read(S.CLIP_REASON)[row]
    assert b.get_attr(S.ROOT_ATTR)["complete"]
    pooled = b.read(S.pooled_path("audio"))
    assert np.all(pooled[row] == 0) and np.all(np.abs(pooled[np.arange(len(ids)) != row]).sum(axis=(1, 2)) > 0)


def test_batched_extraction_writes_what_one_by_one_does_and_isolates_a_failing_clip(small_corpus, tmp_path):
    from avsuperb.extract import upstreams
    from avsuperb.extract.upstreams.fbank import Fbank

    calls: list[int] = []

    class Batching(Fbank):
        name = "fbank_batching_test"

        def extract_batch(self, tracks, items):
            calls.append(len(items))
            if any(is_poison(a) for a, _ in items):
                raise RuntimeError("poisoned batch")
            return super().extract_batch(tracks, items)

        def extract(self, tracks, audio, video):
            if is_poison(audio):
                raise RuntimeError("this clip breaks the model")
            return super().extract(tracks, audio, video)

    def is_poison(audio):
        return poison is not None and audio is not None and len(audio) == len(poison) and np.array_equal(audio, poison)

    one = tmp_path / "one.zarr"
    run_extraction(ExtractOptions("fbank", "synthetic", one, small_corpus, progress=False))
    b1 = open_backend(one, "r")
    ids = list(b1.read(S.CLIP_ID))
    poison = None  # first pass: nothing poisoned
    upstreams.register(Batching)
    try:
        many = tmp_path / "many.zarr"
        summary = run_extraction(ExtractOptions(Batching.name, "synthetic", many, small_corpus, progress=False, batch_size=6))
        assert summary.done == len(ids) and max(calls) == 6
        b6 = open_backend(many, "r")
        np.testing.assert_array_equal(b6.read(S.pooled_path("audio")), b1.read(S.pooled_path("audio")))

        from avsuperb.extract.media import decode

        victim = sorted((small_corpus / "clips").glob("*.mp4"))[2]
        clip = next(c for c in json.loads((small_corpus / "manifest.json").read_text())["clips"] if c["id"] == victim.stem)
        poison = decode(victim, sample_rate=16000, fps=None, end=float(clip["duration"])).audio
        bad = tmp_path / "bad.zarr"
        summary = run_extraction(ExtractOptions(Batching.name, "synthetic", bad, small_corpus, progress=False, batch_size=6))
        assert (summary.failed, summary.done) == (1, len(ids) - 1)
        bb = open_backend(bad, "r")
        row = list(bb.read(S.CLIP_ID)).index(victim.stem)
        assert bb.read(S.CLIP_STATUS)[row] == S.STATUS_FAILED
        assert "breaks the model" in str(bb.read(S.CLIP_REASON)[row])
    finally:
        upstreams.REGISTRY.pop(Batching.name, None)
