"""Store round trips on both backends, resume bookkeeping, and refusal of broken stores."""

import json

import numpy as np
import pytest
import zarr

from avsuperb import schemas as S
from avsuperb.store import StoreError, open_backend
from avsuperb.store.reader import StoreReader
from avsuperb.store.table import ClipTable, LabelColumn
from avsuperb.store.writer import StoreWriter, TrackSpec

TRACKS = {"audio": TrackSpec(3, 5, 100.0), "video": TrackSpec(2, 4, 25.0)}


def make_table(n=11):
    rng = np.random.default_rng(0)
    splits = ["train"] * 7 + ["dev"] * 2 + ["test"] * 2
    return ClipTable(
        ids=[f"c{i:03d}" for i in range(n)],
        splits=splits[:n],
        durations=rng.uniform(0.2, 0.5, n),
        labels={
            "emotion": LabelColumn.encode("class", [["neu", "hap"][i % 2] for i in range(n)], ("neu", "hap")),
            "events": LabelColumn.encode("multi", [["a"] if i % 3 else ["a", "b"] for i in range(n)], ("a", "b", "c")),
            "transcript": LabelColumn.encode("text", [f"WORD {i}" for i in range(n)]),
        },
        trials=np.array([[0, 1, 1], [2, 3, 0]]),
    )


def features(table, row):
    rng = np.random.default_rng(row)
    out = {}
    for track, spec in TRACKS.items():
        t = int(np.floor(table.durations[row] * spec.frame_rate))
        out[track] = rng.standard_normal((t, spec.num_layers, spec.dim)).astype(np.float32)
    return out


def open_writer(path, table, **kw):
    return StoreWriter.open(
        path,
        upstream={"name": "toy", "config": {"k": 1}, "checkpoint_sha256": None},
        dataset={"name": "toyset", "root": "/data", "manifest_sha256": "0" * 64},
        tracks=TRACKS,
        frames=True,
        table=table,
        block_size=kw.pop("block_size", 4),
        **kw,
    )


def write_all(path, table, rows=None):
    w = open_writer(path, table)
    rows = list(range(len(table))) if rows is None else rows
    w.plan(rows)
    for r in rows:
        w.put(r, features(table, r))
    w.finalize()
    w.close()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_round_trip(tmp_path, suffix):
    table = make_table()
    path = tmp_path / f"s{suffix}"
    write_all(path, table)
    with StoreReader(path) as r:
        assert r.attrs["complete"] and r.attrs["backend"] == ("zarr" if suffix == ".zarr" else "hdf5")
        back = r.table()
        assert back.ids == table.ids and back.splits == table.splits
        np.testing.assert_array_equal(back.labels["emotion"].values, table.labels["emotion"].values)
        np.testing.assert_array_equal(back.labels["events"].values, table.labels["events"].values)
        assert list(back.labels["transcript"].values) == list(table.labels["transcript"].values)
        np.testing.assert_array_equal(back.trials, table.trials)
        assert (r.status() == S.STATUS_DONE).all()
        train = [i for i, s in enumerate(table.splits) if s == "train"]
        for track, spec in TRACKS.items():
            pooled = r.pooled(track)
            assert pooled.shape == (len(table), spec.num_layers, spec.dim) and pooled.dtype == np.float32
            allx = []
            for row in range(len(table)):
                x = features(table, row)[track]
                np.testing.assert_allclose(pooled[row], x.mean(axis=0), rtol=1e-6, atol=1e-6)
                np.testing.assert_allclose(r.frames(track, row), x.astype(np.float16))
                if row in train:
                    allx.append(x.astype(np.float64))
            x = np.concatenate(allx)
            st = r.stats(track)
            assert st["count"][0] == len(x)
            np.testing.assert_allclose(st["l2_mean"], np.linalg.norm(x, axis=2).mean(axis=0), rtol=1e-6)
            np.testing.assert_allclose(st["sum"], x.sum(axis=0), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(st["sumsq"], (x**2).sum(axis=0), rtol=1e-6)


def test_frame_slots_of_each_block_start_on_a_chunk_boundary(tmp_path):
    from avsuperb.store.writer import frame_chunk_rows

    table = make_table()
    write_all(tmp_path / "s.zarr", table)
    b = open_backend(tmp_path / "s.zarr", "r")
    for track, spec in TRACKS.items():
        off = b.read(S.offsets_path(track))
        chunk = frame_chunk_rows(table.durations, spec, 4)
        assert all(off[i] % chunk == 0 for i in range(0, len(table), 4))
        assert (np.diff(off) >= 0).all()
        assert zarr.open_array(str(tmp_path / "s.zarr" / S.frames_path(track)), mode="r").chunks[0] == chunk


def test_frame_chunks_are_no_larger_than_the_largest_block():
    """A chunk spans the rows of the largest block when that is under FRAME_CHUNK_BYTES, so a block
    does not start a chunk that stays mostly empty; large blocks keep FRAME_CHUNK_BYTES chunks."""
    from avsuperb.store.writer import FRAME_CHUNK_BYTES, frame_capacity, frame_chunk_rows

    spec = TrackSpec(1, 240, 100.0)  # fbank-sized rows: 480 bytes, 8738 rows per 4 MiB
    durations = np.full(100, 2.0)  # 202 rows reserved per clip
    assert frame_chunk_rows(durations, spec, 16) == 16 * 202
    assert frame_chunk_rows(durations, spec, 256) == FRAME_CHUNK_BYTES // 480
    assert frame_capacity(durations, spec)[0] == 202


def test_partial_run_resumes_to_the_same_arrays(tmp_path):
    table = make_table()
    write_all(tmp_path / "full.zarr", table)
    part = tmp_path / "part.zarr"
    w = open_writer(part, table)
    w.plan(list(range(len(table))))
    for r in range(6):  # block 0 complete, block 1 half done and never flushed
        w.put(r, features(table, r))
    w.backend.close()  # as if killed: no flush, no finalize
    w = open_writer(part, table)
    assert w.pending() == list(range(4, len(table)))
    w.close()
    write_all(part, table, rows=list(range(4, len(table))))
    a, b = open_backend(tmp_path / "full.zarr", "r"), open_backend(part, "r")
    for name in [S.CLIP_STATUS, S.pooled_path("audio"), S.frames_path("video"), S.lengths_path("audio"), S.stats_path("audio", "sumsq")]:
        np.testing.assert_array_equal(a.read(name), b.read(name))


def test_failed_clips_are_recorded_and_retried(tmp_path):
    table = make_table()
    path = tmp_path / "s.zarr"
    w = open_writer(path, table)
    w.plan(list(range(len(table))))
    for r in range(len(table)):
        w.fail(r, "broken file") if r == 5 else w.put(r, features(table, r))
    w.finalize()
    assert w.summary() == {"done": 10, "failed": 1, "pending": 0}
    w.close()
    b = open_backend(path, "r")
    assert b.read(S.CLIP_REASON)[5] == "broken file" and b.read(S.CLIP_STATUS)[5] == S.STATUS_FAILED
    b.close()
    w = open_writer(path, table)
    assert w.pending() == [5]
    w.plan([5])
    w.put(5, features(table, 5))
    w.finalize()
    w.close()
    with StoreReader(path) as r:
        np.testing.assert_allclose(r.pooled("audio")[5], features(table, 5)["audio"].mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(r.pooled("audio")[4], features(table, 4)["audio"].mean(0), rtol=1e-5, atol=1e-6)


def test_store_of_another_run_is_refused(tmp_path):
    table = make_table()
    path = tmp_path / "s.zarr"
    write_all(path, table)
    with pytest.raises(StoreError, match="upstream 'toy'.*'other'"):
        StoreWriter.open(
            path, upstream={"name": "other", "config": {}, "checkpoint_sha256": None},
            dataset={"name": "toyset", "root": "/data", "manifest_sha256": "0" * 64},
            tracks=TRACKS, frames=True, table=table,
        )
    with pytest.raises(StoreError, match="dataset"):
        StoreWriter.open(
            path, upstream={"name": "toy", "config": {"k": 1}, "checkpoint_sha256": None},
            dataset={"name": "toyset", "root": "/data", "manifest_sha256": "1" * 64},
            tracks=TRACKS, frames=True, table=table,
        )


def test_too_many_frames_for_the_reserved_slot_is_an_error(tmp_path):
    table = make_table()
    w = open_writer(tmp_path / "s.zarr", table)
    x = features(table, 0)
    x["audio"] = np.zeros((1000, 3, 5), np.float32)
    with pytest.raises(ValueError, match="exceed"):
        w.put(0, x)
    w.close()


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_reader_refuses_broken_stores(tmp_path, suffix):
    table = make_table()
    path = tmp_path / f"s{suffix}"
    write_all(path, table)

    b = open_backend(path, "a")
    attrs = b.get_attr(S.ROOT_ATTR)
    b.set_attr(S.ROOT_ATTR, {**attrs, "schema_version": S.STORE_SCHEMA_VERSION + 1})
    b.close()
    with pytest.raises(StoreError, match="newer"):
        StoreReader(path)

    b = open_backend(path, "a")
    b.set_attr(S.ROOT_ATTR, {**attrs, "tracks": {"audio": {"num_layers": 0, "dim": 5, "frame_rate": 100.0}}})
    b.close()
    with pytest.raises(StoreError, match="invalid store attributes"):
        StoreReader(path)

    b = open_backend(path, "a")
    b.del_attr(S.ROOT_ATTR)
    b.close()
    with pytest.raises(StoreError, match="not an avsuperb store"):
        StoreReader(path)


def test_reader_refuses_a_store_missing_an_array(tmp_path):
    import shutil

    path = tmp_path / "s.zarr"
    write_all(path, make_table())
    shutil.rmtree(path / "audio" / "pooled")
    with pytest.raises(StoreError, match="missing array 'audio/pooled'"):
        StoreReader(path)


def test_schema_rejects_broken_attributes():
    assert S.validation_error("store", {"schema_version": 1}) is not None
    good = {
        "schema_version": 1, "software_version": "0", "created": "x", "updated": "x", "backend": "zarr",
        "upstream": {"name": "u", "config": {}, "checkpoint_sha256": None},
        "dataset": {"name": "d", "root": "/", "manifest_sha256": "a" * 64},
        "tracks": {"audio": {"num_layers": 1, "dim": 2, "frame_rate": 10}},
        "frames": False, "labels": {"e": {"kind": "class", "classes": ["a"]}}, "block_size": 4, "num_clips": 1, "complete": True,
    }
    assert S.validation_error("store", good) is None
    assert "kind" in S.validation_error("store", {**good, "labels": {"e": {"kind": "nope"}}})
    assert S.validation_error("store", {**good, "tracks": {"smell": good["tracks"]["audio"]}}) is not None
    assert S.validation_error("store", json.loads(json.dumps({**good, "upstream": {"name": "u", "config": {}, "checkpoint_sha256": "xyz"}}))) is not None


def test_a_fixed_length_track_reserves_exactly_that_many_frames_per_clip(tmp_path):
    from avsuperb.store.writer import frame_capacity

    fixed = TrackSpec(2, 4, 0.0, frames_per_clip=18)  # AVBERT: frames per clip, not per second
    np.testing.assert_array_equal(frame_capacity(np.array([0.2, 3.0, 10.0]), fixed), [18, 18, 18])
    np.testing.assert_array_equal(frame_capacity(np.array([0.2, 3.0]), TRACKS["video"]), [5 + 2, 75 + 2])
    table = make_table(4)  # 0.2-0.5 s clips: a rate-based slot could not hold 18 frames
    w = StoreWriter.open(
        tmp_path / "s.zarr", upstream={"name": "toy", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "toyset", "root": "/data", "manifest_sha256": "0" * 64},
        tracks={"fusion": fixed}, frames=True, table=table, block_size=2,
    )
    w.plan(range(4))
    x = [np.random.default_rng(r).standard_normal((18, 2, 4)).astype(np.float32) for r in range(4)]
    for r in range(4):
        w.put(r, {"fusion": x[r]})
    with pytest.raises(ValueError, match="19 frames exceed the 18 reserved"):
        w.put(0, {"fusion": np.zeros((19, 2, 4), np.float32)})
    w.finalize()
    w.close()
    with StoreReader(tmp_path / "s.zarr") as r:
        S.validate("store", r.attrs)
        assert r.attrs["tracks"]["fusion"]["frames_per_clip"] == 18
        for row in range(4):
            np.testing.assert_allclose(r.frames("fusion", row), x[row].astype(np.float16))


def test_raw_arrays_read_from_chunk_files_equal_what_zarr_reads(tmp_path):
    """Uncompressed Zarr arrays are read straight from their chunk files; unwritten chunks hold the fill value."""
    import zarr

    from avsuperb.store.backend import _read_raw

    b = open_backend(tmp_path / "s.zarr", "w")
    b.create("raw", (10, 3, 2), np.float32, 4, compress=False)
    b.create("packed", (10, 3, 2), np.float32, 4)
    data = np.arange(4 * 6, dtype=np.float32).reshape(4, 3, 2) + 1
    for name in ("raw", "packed"):
        b.write(name, 4, data)  # rows 4-7: chunk 1 only; chunks 0 and 2 never written
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert _read_raw(group["raw"], 0, 10) is not None and _read_raw(group["packed"], 0, 10) is None  # the fast path is taken
    for rows in (None, slice(0, 10), slice(3, 9), slice(5, 6), slice(8, 30), slice(6, 6)):
        want = group["raw"][...] if rows is None else group["raw"][rows]
        got = b.read("raw", rows)
        assert got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want), rows
        assert np.array_equal(got, b.read("packed", rows)), rows
    assert np.array_equal(b.read("raw", np.array([0, 5, 9])), group["raw"][...][[0, 5, 9]])


def test_large_raw_reads_split_across_threads_read_the_same(tmp_path, monkeypatch):
    """A raw read above PARALLEL_READ_BYTES is cut into pieces read by threads: same rows, fill value included."""
    from avsuperb.store import backend as B

    b = open_backend(tmp_path / "s.zarr", "w")
    b.create("raw", (50, 3, 2), np.float32, 8, compress=False)
    data = np.arange(30 * 6, dtype=np.float32).reshape(30, 3, 2) + 1
    b.write("raw", 8, data)  # chunks 1-4 (rows 8-37, the last one partly); 0, 5 and 6 never written
    want = [(rows, b.read("raw", rows)) for rows in (None, slice(3, 41), slice(9, 10))]
    monkeypatch.setattr(B, "PARALLEL_READ_BYTES", 1)
    monkeypatch.setattr(B, "READ_PIECE_BYTES", 3 * 24)  # 3 rows a piece: chunks split across pieces
    for rows, expected in want:
        got = b.read("raw", rows)
        assert np.array_equal(got, expected), rows
    assert np.array_equal(b.read("raw")[8:38], data) and not b.read("raw")[:8].any() and not b.read("raw")[38:].any()


def test_auto_block_size_cuts_a_small_store_into_several_blocks():
    from avsuperb.store.writer import MAX_BLOCK, MIN_BLOCK, MIN_BLOCKS, auto_block_size

    spec = {"audio": TrackSpec(2, 4, 50.0)}
    assert auto_block_size(make_table(11), spec, True) == MIN_BLOCK  # a tiny store: one block
    big = ClipTable(ids=[f"c{i}" for i in range(MIN_BLOCKS * 40)], splits=["train"] * (MIN_BLOCKS * 40),
                    durations=np.ones(MIN_BLOCKS * 40), labels={})
    assert auto_block_size(big, spec, True) == 40  # the last block is an eighth of the run
    huge = ClipTable(ids=[f"c{i}" for i in range(100_000)], splits=["train"] * 100_000, durations=np.ones(100_000), labels={})
    assert auto_block_size(huge, spec, True) == MAX_BLOCK


def test_a_single_writer_removes_what_killed_writes_left_and_never_meets_a_live_shard(tmp_path):
    """zarr's NAME.<uuid>.partial files of a killed run go when the store's one writer takes it over;
    a single writer and a shard writer never hold the same store at once (the other one alive)."""
    import socket
    import subprocess
    import sys

    table = make_table()
    path = tmp_path / "s.zarr"
    w = open_writer(path, table)
    w.close()
    leftover = path / "audio" / "pooled" / "c" / "0" / "0.4f2a.partial"
    leftover.parent.mkdir(parents=True, exist_ok=True)
    leftover.write_bytes(b"\0" * 64)
    open_writer(path, table).close()
    assert not leftover.exists()

    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder = f"{other.pid}@{socket.gethostname()}"
        shard_lock = tmp_path / ".s.zarr.shard-1-of-2.lock"
        shard_lock.write_text(holder)
        with pytest.raises(StoreError, match=f"being written by shard process {holder}"):
            open_writer(path, table)
        shard_lock.unlink()
        b = open_backend(path, "a")
        b.set_attr(S.WRITER_ATTR, holder)
        b.close()
        with pytest.raises(StoreError, match=f"being written by process {holder}"):
            open_writer(path, table, shard=(0, 2))
    finally:
        other.kill()
        other.wait()
    open_writer(path, table, shard=(0, 2)).close()  # its holder is gone: taken over
