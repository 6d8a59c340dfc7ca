"""The stages around the model: length buckets, decoding ahead (a thread or worker processes), the
background store writer, and mixed precision."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from avsuperb import schemas as S
from avsuperb.extract.pipeline import BackgroundWriter, ahead, bucketed
from avsuperb.extract.run import ExtractError, ExtractOptions, auto_decode_workers, run_extraction
from avsuperb.store import StoreError, open_backend


def test_buckets_sort_each_window_by_duration_and_cover_every_row_once():
    durations = np.array([5.0, 1.0, 3.0, 2.0, 9.0, 4.0, 8.0, 7.0, 6.0])
    batches = bucketed(list(range(9)), durations, batch_size=2, window=4)
    assert batches == [[1, 3], [2, 0], [5, 7], [6, 4], [8]]  # windows [0-3] and [4-7] sorted, then [8]
    assert sorted(r for b in batches for r in b) == list(range(9))


def arrays(path):
    b = open_backend(path, "r")
    return {name: b.read(name) for name in (S.CLIP_STATUS, S.pooled_path("audio"), S.lengths_path("audio"))}


def test_ahead_yields_in_order_and_raises_the_producers_error_at_its_item():
    assert list(ahead(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        yield 2
        raise KeyError("clip 3")

    got = []
    with pytest.raises(KeyError, match="clip 3"):
        for item in ahead(broken()):
            got.append(item)
    assert got == [1, 2]


def test_ahead_stops_its_thread_when_the_consumer_stops_early():
    produced = []

    def endless():
        while True:
            produced.append(len(produced))
            yield produced[-1]

    for item in (items := ahead(endless(), depth=2)):
        if item == 3:
            break
    items.close()  # what leaving the loop of a generator-owning frame does
    deadline = time.monotonic() + 5
    while any(t.name == "decode-ahead" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(t.name == "decode-ahead" for t in threading.enumerate())
    assert len(produced) <= 3 + 1 + 2 + 1  # consumed, then at most a full queue and one in hand


def test_audio_is_decoded_on_a_thread_and_video_in_processes_by_default():
    assert auto_decode_workers(None) == 0
    assert auto_decode_workers(25.0) >= 1


def test_decode_workers_and_length_buckets_write_what_one_process_does(small_corpus, fbank_zarr, tmp_path):
    """fbank_zarr was decoded on a thread (the default for audio), one clip per forward."""
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


def test_a_failed_run_leaves_no_thread_behind(small_corpus, tmp_path, monkeypatch):
    """An unexpected error in the loop ends the run with it; the decode and writer threads end too."""
    from avsuperb.extract.upstreams.fbank import Fbank

    calls = []

    def broken(self, tracks, audio, video):
        calls.append(1)
        if len(calls) == 5:
            raise TypeError("a bug in the model")
        return real(self, tracks, audio, video)

    real = Fbank.extract
    monkeypatch.setattr(Fbank, "extract", broken)
    before = {t.name for t in threading.enumerate()}
    with pytest.raises(TypeError, match="a bug in the model"):
        run_extraction(ExtractOptions("fbank", "synthetic", tmp_path / "x.zarr", small_corpus, block_size=4, progress=False))
    deadline = time.monotonic() + 5
    while {"store-writer", "decode-ahead"} & ({t.name for t in threading.enumerate()} - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not {"store-writer", "decode-ahead"} & {t.name for t in threading.enumerate()}
    status = open_backend(tmp_path / "x.zarr", "r").read(S.CLIP_STATUS)
    assert list(np.flatnonzero(status == S.STATUS_DONE)) == [0, 1, 2, 3]  # the first block, written before the error
