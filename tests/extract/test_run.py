"""The extraction loop: a clip that fails to decode is recorded and counted, the run goes on."""

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
