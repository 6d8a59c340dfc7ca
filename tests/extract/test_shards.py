"""Sharded extraction: N writers, each owning a run of whole blocks, fill one store that equals
the store of a single uninterrupted run (`fbank_zarr`, conftest)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsuperb.store import StoreError
from avsuperb.store.writer import StoreWriter

from avsuperb.store.table import ClipTable
from avsuperb.store.writer import TrackSpec

sys.path.insert(0, str(Path(__file__).parent))
from test_resume import TIMEOUT, assert_same_arrays, extract_cmd, stable, zarr_arrays, zarr_attrs  # noqa: E402


@pytest.fixture(scope="module")
def reference(fbank_zarr: Path) -> tuple[dict[str, np.ndarray], dict]:
    return zarr_arrays(fbank_zarr), zarr_attrs(fbank_zarr)


@pytest.mark.parametrize("n", [2, 3])
def test_shards_run_at_once_equal_one_run(small_corpus, reference, cli_env, tmp_path, n):
    store = tmp_path / "sharded.zarr"
    procs = [
        subprocess.Popen(extract_cmd(small_corpus, store) + ["--shard", f"{k}/{n}"], env=cli_env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for k in range(1, n + 1)
    ]
    errs = [p.communicate(timeout=TIMEOUT)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * n, "\n".join(errs)
    assert sum("complete;" in e for e in errs) >= 1, "\n".join(errs)  # the last shard to finish completes it
    want_arrays, want_attrs = reference
    assert_same_arrays(zarr_arrays(store), want_arrays)
    assert stable(zarr_attrs(store)) == stable(want_attrs)
    assert not list(tmp_path.glob(".sharded.zarr.*.lock")), "a shard left its lock behind"


def test_a_shard_resumed_alone_completes_the_store(small_corpus, reference, cli_env, tmp_path):
    store = tmp_path / "s.zarr"
    first = subprocess.run(extract_cmd(small_corpus, store) + ["--shard", "1/2"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert first.returncode == 0 and "(shard 1/2): incomplete;" in first.stderr, first.stderr
    assert not zarr_attrs(store)["avsuperb"]["complete"]
    second = subprocess.run(extract_cmd(small_corpus, store) + ["--shard", "2/2"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert second.returncode == 0 and "(shard 2/2): complete;" in second.stderr, second.stderr
    assert_same_arrays(zarr_arrays(store), reference[0])


@pytest.mark.parametrize("args, message", [
    (["--shard", "3/2"], "expected K/N with 1 <= K <= N"),
    (["--shard", "x"], "expected K/N with 1 <= K <= N"),
])
def test_bad_shard_arguments_exit_2(small_corpus, cli_env, tmp_path, args, message):
    r = subprocess.run(extract_cmd(small_corpus, tmp_path / "s.zarr") + args, env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_hdf5_takes_no_shards(small_corpus, cli_env, tmp_path):
    r = subprocess.run(extract_cmd(small_corpus, tmp_path / "s.h5") + ["--shard", "1/2"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 2 and "an HDF5 store takes a single writer" in r.stderr and "Traceback" not in r.stderr, r.stderr


def open_writer(path: Path, table: ClipTable, shard: tuple[int, int]) -> StoreWriter:
    return StoreWriter.open(
        path, upstream={"name": "toy", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "toyset", "root": "/data", "manifest_sha256": "0" * 64},
        tracks={"audio": TrackSpec(1, 2, 10.0)}, frames=True, table=table, block_size=4, shard=shard,
    )


def test_shards_own_disjoint_runs_of_whole_blocks(tmp_path):
    table = ClipTable(ids=[f"c{i}" for i in range(11)], splits=["train"] * 11, durations=np.ones(11), labels={})
    # block size 4: blocks [0-3] [4-7] [8-10]
    owned = []
    for k in range(3):
        w = open_writer(tmp_path / "s.zarr", table, shard=(k, 3))
        owned.append(list(w.rows()))
        assert w.pending() == owned[-1]
        w.close()
    assert owned == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]]
    w = open_writer(tmp_path / "s.zarr", table, shard=(0, 2))
    assert list(w.rows()) == [0, 1, 2, 3]  # 3 blocks in 2 shards: 1 and 2 blocks
    with pytest.raises(StoreError, match=r"shard 0/2\) is being written by process"):
        open_writer(tmp_path / "s.zarr", table, shard=(0, 2))
    w.close()


def test_a_local_dask_cluster_runs_the_shards_and_equals_one_run(small_corpus, reference, cli_env, tmp_path):
    store = tmp_path / "dask.zarr"
    r = subprocess.run(extract_cmd(small_corpus, store) + ["--workers", "2"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert "(shard 1/2)" in r.stderr and "(shard 2/2)" in r.stderr and "complete;" in r.stderr, r.stderr
    assert_same_arrays(zarr_arrays(store), reference[0])
    assert stable(zarr_attrs(store)) == stable(reference[1])


def test_cluster_options_are_checked_before_anything_starts(small_corpus, cli_env, tmp_path):
    base = extract_cmd(small_corpus, tmp_path / "s.zarr")
    both = subprocess.run(base + ["--workers", "2", "--shard", "1/2"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert both.returncode == 2 and "--shard picks one part" in both.stderr, both.stderr
    h5 = subprocess.run(extract_cmd(small_corpus, tmp_path / "s.h5") + ["--workers", "2"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert h5.returncode == 2 and "single writer" in h5.stderr and "Traceback" not in h5.stderr, h5.stderr
    gone = subprocess.run(base + ["--scheduler", "tcp://127.0.0.1:9"], env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert gone.returncode == 2 and "cannot reach the Dask scheduler at tcp://127.0.0.1:9" in gone.stderr, gone.stderr
