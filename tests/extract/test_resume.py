"""An interrupted extraction resumes to exactly the store one uninterrupted run makes.

The reference is `fbank_zarr` (conftest): the same command, run once to completion. Each test
starts avsuperb-extract in a subprocess, watches clips/status in the store it writes, signals
it once some but not all clips are done, re-runs the same command and compares every array.
The last tests drive StoreWriter in-process to interrupt it inside a block write, deterministically.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from avsuperb import schemas as S
from avsuperb.store.reader import StoreReader

BLOCK_SIZE = 4  # as the reference store in conftest
TIMEOUT = 300
VOLATILE_ATTRS = ("created", "updated")  # run timestamps: the only attributes that may differ


# ----------------------------------------------------------------------------------- helpers
def extract_cmd(corpus: Path, out: Path) -> list[str]:
    exe = Path(sys.executable).with_name("avsuperb-extract")
    return [str(exe), "--model", "fbank", "--dataset", "synthetic", "--root", str(corpus), "--out", str(out),
            "--block-size", str(BLOCK_SIZE), "--no-progress"]


def read_status(store: Path) -> np.ndarray | None:
    """clips/status of a Zarr store being written, or None while it cannot be read yet."""
    try:
        return np.asarray(zarr.open_group(str(store), mode="r")["clips/status"][:])
    except Exception:  # noqa: BLE001 - not there yet, or caught mid-creation
        return None


def n_done(status: np.ndarray) -> int:
    return int(np.sum(status == S.STATUS_DONE))


def zarr_arrays(store: Path) -> dict[str, np.ndarray]:
    """Every array in the Zarr group, walked recursively, by its path."""
    group = zarr.open_group(str(store), mode="r")
    return {name: np.asarray(node[...]) for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}


def zarr_attrs(store: Path) -> dict:
    return dict(zarr.open_group(str(store), mode="r").attrs)


def stable(attrs: dict) -> dict:
    root = dict(attrs[S.ROOT_ATTR])
    for key in VOLATILE_ATTRS:
        root.pop(key, None)
    return {**attrs, S.ROOT_ATTR: root}


def as_comparable(a: np.ndarray) -> np.ndarray:
    """String arrays (StringDType in Zarr, object in HDF5) as plain str objects; others unchanged."""
    return np.array([str(x) for x in a.ravel()], dtype=object).reshape(a.shape) if a.dtype.kind in "OTU" else a


def assert_same_arrays(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want), "the stores hold different arrays"
    assert any(n.startswith("clips/") for n in want) and any(n.startswith("audio/") for n in want)
    for name in sorted(want):
        g, w = got[name], want[name]
        assert g.shape == w.shape, f"{name}: shape {g.shape} != {w.shape}"
        if w.dtype.kind not in "OTU":
            assert g.dtype == w.dtype, f"{name}: dtype {g.dtype} != {w.dtype}"
        g, w = as_comparable(g), as_comparable(w)
        if not np.array_equal(g, w):
            where = np.argwhere(g != w) if g.shape else []
            pytest.fail(f"{name} differs at {len(where)} places, first {where[:5].tolist() if len(where) else '?'}")


def interrupt_mid_run(cmd: list[str], store: Path, sig: int, env: dict[str, str], settle: float = 0.0, attempts: int = 3):
    """Run `cmd`, send `sig` once the store has some but not all clips done (and `settle` seconds
    more, so that the next block is likely half extracted), and wait for the end.

    Returns (returncode, stdout, stderr, done_when_signalled). Retries with a fresh store when
    the timing missed (the run finished first, or the signal left no clip or every clip done).
    """
    log = []
    for attempt in range(attempts):
        if store.exists():
            shutil.rmtree(store)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen = None
        try:
            deadline = time.monotonic() + TIMEOUT
            while proc.poll() is None and time.monotonic() < deadline:
                status = read_status(store)
                if status is not None and 0 < n_done(status) < len(status):
                    if settle:
                        time.sleep(settle)
                        status = read_status(store)
                        if proc.poll() is not None or status is None or n_done(status) == len(status):
                            break
                    os.kill(proc.pid, sig)
                    seen = n_done(status)
                    break
                time.sleep(0.01)
            out, err = proc.communicate(timeout=TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        status = read_status(store)
        log.append(f"attempt {attempt + 1}: rc={proc.returncode} seen={seen} "
                   f"done_after={None if status is None else n_done(status)}\n{err}")
        if seen is not None and status is not None and 0 < n_done(status) < len(status):
            return proc.returncode, out, err, seen
    pytest.fail("could not interrupt the extraction mid-run:\n" + "\n".join(log))


SUMMARY = re.compile(r"(\d+) clips processed in this run, (\d+)/(\d+) done, (\d+) failed, (\d+) pending")


def summary_of(stderr: str) -> tuple[str, tuple[int, ...]]:
    lines = [line for line in stderr.splitlines() if SUMMARY.search(line)]
    assert len(lines) == 1, f"expected one summary line:\n{stderr}"
    return lines[0], tuple(int(x) for x in SUMMARY.search(lines[0]).groups())


def resume(corpus: Path, store: Path, env: dict[str, str], done_before: int, total: int) -> None:
    r = subprocess.run(extract_cmd(corpus, store), env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert f"resuming: {done_before} of {total} clips already done" in r.stderr, r.stderr
    line, (processed, done, tot, failed, pending) = summary_of(r.stderr)
    assert "complete" in line, line
    assert (processed, done, tot, failed, pending) == (total - done_before, total, total, 0, 0), line


# ------------------------------------------------------------------------------------- tests
@pytest.fixture(scope="module")
def reference(fbank_zarr: Path) -> tuple[dict[str, np.ndarray], dict]:
    arrays = zarr_arrays(fbank_zarr)
    assert np.all(arrays[S.CLIP_STATUS] == S.STATUS_DONE)
    return arrays, zarr_attrs(fbank_zarr)


def test_sigkill_then_resume_equals_uninterrupted(small_corpus, fbank_zarr, reference, cli_env, tmp_path):
    store = tmp_path / "A.zarr"
    rc, _, err, seen = interrupt_mid_run(extract_cmd(small_corpus, store), store, signal.SIGKILL, cli_env)
    assert rc == -signal.SIGKILL, err
    status = read_status(store)
    done, total = n_done(status), len(status)
    assert 0 < done < total and done >= seen
    assert done % BLOCK_SIZE == 0, "only whole blocks are written before a SIGKILL"
    assert zarr_attrs(store)[S.ROOT_ATTR]["complete"] is False

    resume(small_corpus, store, cli_env, done, total)

    want_arrays, want_attrs = reference
    assert_same_arrays(zarr_arrays(store), want_arrays)
    got_attrs = zarr_attrs(store)
    assert S.WRITER_ATTR not in got_attrs, "the resumed run did not release the writer lock"
    assert stable(got_attrs) == stable(want_attrs)


def test_sigterm_flushes_finished_clips_then_resume_equals_uninterrupted(small_corpus, fbank_zarr, reference, cli_env, tmp_path):
    store = tmp_path / "A.zarr"
    rc, _, err, seen = interrupt_mid_run(extract_cmd(small_corpus, store), store, signal.SIGTERM, cli_env, settle=0.25)
    assert rc > 0, f"SIGTERM should end the run by itself with a nonzero exit code, got {rc}\n{err}"
    assert "Traceback" not in err, err
    line, (processed, done, total, failed, pending) = summary_of(err)
    assert "interrupted" in line, line
    assert failed == 0 and done + pending == total

    status = read_status(store)
    assert n_done(status) == done, f"the summary says {done} done, the store holds {n_done(status)}"
    assert seen <= done < total
    assert processed == done, "a fresh store: every clip done was processed in this run"
    attrs = zarr_attrs(store)
    assert S.WRITER_ATTR not in attrs, "an interrupted run must still release the writer lock"
    assert attrs[S.ROOT_ATTR]["complete"] is False

    # every clip marked done holds exactly the reference features; the rest hold nothing yet
    rows = np.flatnonzero(status == S.STATUS_DONE)
    with StoreReader(store) as got, StoreReader(fbank_zarr) as want:
        np.testing.assert_array_equal(got.pooled("audio", rows), want.pooled("audio", rows))
        for row in rows:
            np.testing.assert_array_equal(got.frames("audio", int(row)), want.frames("audio", int(row)))
        # A pending clip with frames stored was extracted and then dropped: the signal landed while
        # its block was being written (see test_interrupt_while_writing_a_block_loses_no_clip).
        left = np.flatnonzero(status != S.STATUS_DONE)
        lost = left[got.backend.read(S.lengths_path("audio"), left) != 0]
        assert len(lost) == 0, f"clips {lost.tolist()} were extracted and partly written, but are not marked done"

    resume(small_corpus, store, cli_env, done, total)

    want_arrays, want_attrs = reference
    assert_same_arrays(zarr_arrays(store), want_arrays)
    assert stable(zarr_attrs(store)) == stable(want_attrs)


def test_hdf5_store_equals_zarr_store(small_corpus, fbank_zarr, reference, cli_env, tmp_path):
    """One uninterrupted run into .h5 holds the same arrays as the same run into .zarr."""
    store = tmp_path / "B.h5"
    r = subprocess.run(extract_cmd(small_corpus, store), env=cli_env, capture_output=True, text=True, timeout=TIMEOUT)
    assert r.returncode == 0, r.stderr
    want_arrays, _ = reference
    with StoreReader(store) as got, StoreReader(fbank_zarr) as want:
        assert got.attrs["backend"] == "hdf5" and want.attrs["backend"] == "zarr"
        ignore = (*VOLATILE_ATTRS, "backend")
        assert {k: v for k, v in got.attrs.items() if k not in ignore} == {k: v for k, v in want.attrs.items() if k not in ignore}
        assert got.tracks == want.tracks == ["audio"]
        assert np.all(got.status() == S.STATUS_DONE)
        np.testing.assert_array_equal(got.pooled("audio"), want.pooled("audio"))
        for row in range(len(got.status())):
            f = got.frames("audio", row)
            assert f.dtype == np.float16 and len(f) > 0
            np.testing.assert_array_equal(f, want.frames("audio", row))
        # and every array of the Zarr store, read through the HDF5 backend
        assert_same_arrays({name: got.backend.read(name) for name in want_arrays}, want_arrays)


# ---------------------------------------------------------------- interruption inside a write
def _tiny_writer(path: Path, block_size: int = 4):
    from avsuperb.store.table import ClipTable
    from avsuperb.store.writer import StoreWriter, TrackSpec

    n = 8
    table = ClipTable(ids=[f"clip{i}" for i in range(n)], splits=["train"] * 6 + ["test"] * 2, durations=np.full(n, 1.0))
    return StoreWriter.open(
        path,
        upstream={"name": "tiny", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "tiny", "root": str(path.parent), "manifest_sha256": "0" * 64},
        tracks={"audio": TrackSpec(num_layers=1, dim=4, frame_rate=100.0)},
        frames=True,
        table=table,
        block_size=block_size,
    )


def _features(row: int) -> dict[str, np.ndarray]:
    return {"audio": np.random.default_rng(row).standard_normal((5 + row, 1, 4)).astype(np.float32)}


@pytest.mark.parametrize("array", [S.pooled_path("audio"), S.lengths_path("audio"), S.frames_path("audio"), S.CLIP_STATUS])
def test_interrupt_while_writing_a_block_loses_no_clip(tmp_path, array):
    """Ctrl-C / SIGTERM (both raised as exceptions in the main thread) can land while a block is
    being written. run_extraction then calls finalize(), whose flush() is there "so that no
    finished clip is lost": the block's clips must end up done, as if nothing had happened."""
    rows = [0, 1, 2, 3]  # block 0; the put of row 3 writes it
    ref = _tiny_writer(tmp_path / "ref.zarr")
    ref.plan(ref.pending())
    for row in rows:
        ref.put(row, _features(row))
    ref.finalize()
    ref.close()

    w = _tiny_writer(tmp_path / "cut.zarr")
    w.plan(w.pending())
    write = w.backend.write

    def interrupted_write(name, start, data):
        if name == array:
            w.backend.write = write  # only once
            raise KeyboardInterrupt
        return write(name, start, data)

    w.backend.write = interrupted_write
    with pytest.raises(KeyboardInterrupt):
        for row in rows:
            w.put(row, _features(row))
    w.finalize()  # what run_extraction does after an interruption
    w.close()

    assert w.summary()["done"] == len(rows) and w.written == len(rows), (
        f"finished clips were lost: summary {w.summary()}, {w.written} written")
    assert_same_arrays(zarr_arrays(tmp_path / "cut.zarr"), zarr_arrays(tmp_path / "ref.zarr"))


def catches(pid: int, sig: int) -> bool:
    """Whether process `pid` has a handler installed for `sig` (Linux: SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(mask >> (sig - 1) & 1)


def test_sigterm_during_start_up_ends_like_ctrl_c(small_corpus, cli_env, tmp_path):
    """Before the extraction loop (imports, model build) SIGTERM ends the command with the
    'interrupted' line and exit code 130, not the default kill; the next run goes ahead."""
    import subprocess
    import time

    store = tmp_path / "early.zarr"
    proc = subprocess.Popen(extract_cmd(small_corpus, store), env=cli_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # SIGTERM as soon as the command's handler is installed, not after a fixed delay: on a busy
    # machine Python alone may take longer than any delay, and the default action would kill it.
    # Importing torch takes over a second after that, so the signal lands during start-up.
    deadline = time.monotonic() + 60
    while not catches(proc.pid, signal.SIGTERM) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (proc.returncode, err)
    assert err.strip().splitlines()[-1] == "avsuperb-extract: interrupted" and "Traceback" not in err, err
    done = subprocess.run(extract_cmd(small_corpus, store), env=cli_env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
