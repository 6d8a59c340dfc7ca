"""The stages around the model: length buckets, decoding in worker processes, the background
store writer, and mixed precision."""

from __future__ import annotations

import numpy as np
import pytest

from avsuperb import schemas as S
from avsuperb.extract.pipeline import BackgroundWriter, bucketed
from avsuperb.extract.run import ExtractError, ExtractOptions, run_extraction
from avsuperb.store import StoreError, open_backend


def test_buckets_sort_each_window_by_duration_and_cover_every_row_once():
    durations = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 4.0, 8.0, 7.0, 6.0])
    batches = bucketed(list(range(9)), durations, batch_size=2, window=4)
    assert batches == [[1, 3], [2, 0], [5, 7], [6, 4], [8]]  # windows [0-3] and [4-7] sorted, then [8]
    assert sorted(r for b in batches for r in b) == list(range(9))


def arrays(path):
    b = open_backend(path, "r")
    return {name: b.read(name) for name in (S.CLIP_STATUS, S.pooled_path("audio"), S.lengths_path("audio"))}


def test_decode_workers_and_length_buckets_write_what_one_process_does(small_corpus, fbank_zarr, tmp_path):
    out = tmp_path / "workers.zarr"
    summary = run_extraction(ExtractOptions("fbank", "synthetic", out, small_corpus, block_size=4, progress=False,
                                            batch_size=5, decode_workers=2))
    assert summary.done == summary.total and summary.pending == 0
    want, got = arrays(fbank_zarr), arrays(out)
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_a_write_error_stops_the_run_with_it_and_nothing_half_written(small_corpus, tmp_path, monkeypatch):
    from avsuperb.store.writer import StoreWriter

    real = StoreWriter._flush_block
    calls = []

    def disk_full(self, block):
        calls.append(block)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return real(self, block)

    monkeypatch.setattr(StoreWriter, "_flush_block", disk_full)
    out = tmp_path / "full.zarr"
    with pytest.raises(StoreError, match=r"cannot write .*full.zarr: No space left on device; the clips written before are kept"):
        run_extraction(ExtractOptions("fbank", "synthetic", out, small_corpus, block_size=4, progress=False))
    status = open_backend(out, "r").read(S.CLIP_STATUS)
    assert list(np.flatnonzero(status == S.STATUS_DONE)) == [0, 1, 2, 3]  # the first block only
    monkeypatch.setattr(StoreWriter, "_flush_block", real)
    summary = run_extraction(ExtractOptions("fbank", "synthetic", out, small_corpus, block_size=4, progress=False))
    assert summary.done == summary.total  # resumable


def test_background_writer_hands_a_write_error_to_the_caller():
    class Broken:
        path = "store.zarr"

        def put(self, row, features):
            raise PermissionError("read-only file system")

        def fail(self, row, reason):
            raise AssertionError("not reached")

    class Clip:
        id = "c0"

    out = BackgroundWriter(Broken())  # type: ignore[arg-type]
    out.put(0, Clip(), {})  # type: ignore[arg-type]
    with pytest.raises(StoreError, match="read-only file system"):
        out.close()


def test_precision_is_recorded_and_checked(small_corpus, tmp_path):
    out = tmp_path / "bf16.zarr"
    run_extraction(ExtractOptions("fbank", "synthetic", out, small_corpus, progress=False, precision="bf16"))
    assert open_backend(out, "r").get_attr(S.ROOT_ATTR)["upstream"]["config"]["precision"] == "bf16"
    with pytest.raises(ExtractError, match="unknown precision 'fp8'; choose one of: fp32, fp16, bf16"):
        run_extraction(ExtractOptions("fbank", "synthetic", tmp_path / "x.zarr", small_corpus, precision="fp8"))
