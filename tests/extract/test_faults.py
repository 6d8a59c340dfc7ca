"""A store write that the system refuses (disk full, permission denied) ends the extraction with one
line naming the store and saying how to resume; the store stays readable, every clip it marks done
holds the reference features, and re-running the same command completes it to the store of one
uninterrupted run (`fbank_zarr`, conftest). The failures are simulated by patching the store's
writes to raise OSError. Also: an HDF5 store whose extraction was SIGKILLed still opens and
resumes, and the probe refuses a store that a live writer is still filling.

bench/soak.py tries the same faults at random write calls, many times over.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from avsuperb import schemas as S
from avsuperb.store.backend import ZarrBackend
from avsuperb.store.reader import StoreReader

sys.path.insert(0, str(Path(__file__).parent))
from test_resume import BLOCK_SIZE, assert_same_arrays, stable, zarr_arrays, zarr_attrs  # noqa: E402

FAIL_BLOCK = 1  # the second block's frames write fails: block 0 (BLOCK_SIZE clips) is done before it


@pytest.fixture(scope="module")
def reference(fbank_zarr: Path) -> tuple[dict[str, np.ndarray], dict]:
    return zarr_arrays(fbank_zarr), zarr_attrs(fbank_zarr)


def extract_in_process(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], corpus: Path, out: Path) -> tuple[int, str]:
    """avsuperb-extract's entry point in this process (so the patched writes apply): (exit code, stderr)."""
    from avsuperb.cli import extract_main

    args = ["--model", "fbank", "--dataset", "synthetic", "--root", corpus, "--out", out, "--block-size", BLOCK_SIZE,
            "--decode-workers", 0, "--no-progress"]
    monkeypatch.setattr(sys, "argv", ["avsuperb-extract", *map(str, args)])
    with pytest.raises(SystemExit) as ended:
        extract_main()
    return ended.value.code, capsys.readouterr().err


@pytest.fixture
def failing_writes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """Arm with failing_writes.update(code=ERRNO, at=NAME, nth=N, sticky=bool): the N-th backend write
    to array NAME raises OSError(ERRNO); with sticky, so does every file write after it (a full disk)."""
    import zarr.storage._local as local

    arm: dict = {"code": None, "at": None, "nth": 1, "sticky": False, "seen": 0, "failed": False}
    write, put = ZarrBackend.write, local._put

    def failing_write(self: ZarrBackend, name: str, start: int, data: np.ndarray) -> None:
        if arm["code"] is not None and (arm["at"] is None or name == arm["at"]):
            arm["seen"] += 1
            if arm["seen"] == arm["nth"]:
                arm["failed"] = True
                raise OSError(arm["code"], os.strerror(arm["code"]))
        write(self, name, start, data)

    def failing_put(path, value, exclusive=False):  # every chunk and metadata file of a Zarr store
        if arm["sticky"] and arm["failed"]:
            raise OSError(arm["code"], os.strerror(arm["code"]))
        return put(path, value, exclusive)

    monkeypatch.setattr(ZarrBackend, "write", failing_write)
    monkeypatch.setattr(local, "_put", failing_put)
    yield arm
    arm["code"] = None
    arm["sticky"] = False


def assert_one_clear_line(code: int, err: str, store: Path, errcode: int) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    lines = [line for line in err.splitlines() if "error:" in line]
    assert len(lines) == 1, err
    line = lines[0]
    assert line.startswith("avsuperb-extract: error: cannot write"), line
    assert str(store) in line and os.strerror(errcode) in line, line
    assert "re-run the same command to resume" in line, line
    return line


def assert_done_clips_equal_reference(store: Path, fbank_zarr: Path) -> np.ndarray:
    """The store opens as the probe opens it; its done clips hold the reference's features. Returns them."""
    with StoreReader(store) as got, StoreReader(fbank_zarr) as want:
        assert got.attrs["complete"] is False
        done = np.flatnonzero(got.status() == S.STATUS_DONE)
        np.testing.assert_array_equal(got.pooled("audio", done), want.pooled("audio", done))
        for row in done:
            np.testing.assert_array_equal(got.frames("audio", int(row)), want.frames("audio", int(row)))
        for name in (S.lengths_path("audio"), S.clip_stat_path("audio", "l2"), S.clip_stat_path("audio", "sumsq")):
            np.testing.assert_array_equal(got.backend.read(name, done), want.backend.read(name, done))
    return done


def rerun_equals_reference(monkeypatch, capsys, caplog, corpus: Path, store: Path, reference, done_before: int) -> None:
    """The same command again, nothing failing: it extracts only the clips not done and completes the store."""
    caplog.set_level(logging.INFO, logger="avsuperb")
    code, err = extract_in_process(monkeypatch, capsys, corpus, store)
    assert code == 0, err
    want_arrays, want_attrs = reference
    assert_same_arrays(zarr_arrays(store), want_arrays)
    attrs = zarr_attrs(store)
    assert stable(attrs) == stable(want_attrs)
    assert attrs[S.ROOT_ATTR]["complete"] is True
    assert S.WRITER_ATTR not in attrs, "the re-run did not release the writer lock"
    n = len(want_arrays[S.CLIP_STATUS])
    assert f"resuming: {done_before} of {n} clips already done" in caplog.text, caplog.text
    assert f"complete; {n - done_before} clips processed in this run, {n}/{n} done" in caplog.text, caplog.text
    assert not list(store.parent.glob(f".{store.stem}.partial-*")), "a temporary store was left behind"


# ------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("errcode", [errno.ENOSPC, errno.EACCES], ids=["ENOSPC", "EACCES"])
def test_write_failure_mid_run_is_one_line_and_the_same_command_resumes(
        small_corpus, fbank_zarr, reference, failing_writes, monkeypatch, capsys, caplog, tmp_path, errcode):
    store = tmp_path / "fail.zarr"
    failing_writes.update(code=errcode, at=S.frames_path("audio"), nth=FAIL_BLOCK + 1)
    code, err = extract_in_process(monkeypatch, capsys, small_corpus, store)
    assert failing_writes["failed"]
    assert_one_clear_line(code, err, store, errcode)

    done = assert_done_clips_equal_reference(store, fbank_zarr)
    assert done.tolist() == list(range(FAIL_BLOCK * BLOCK_SIZE)), "the blocks before the failure are done, no later clip"
    assert S.WRITER_ATTR not in zarr_attrs(store), "the failed run did not release the writer lock"

    failing_writes.update(code=None)
    rerun_equals_reference(monkeypatch, capsys, caplog, small_corpus, store, reference, len(done))


def test_disk_full_to_the_end_is_one_line_and_the_same_command_resumes(
        small_corpus, fbank_zarr, reference, failing_writes, monkeypatch, capsys, caplog, tmp_path):
    """Every write after the first failure fails too, releasing the writer lock included: that must
    not hide the message behind a traceback, and the next run takes the lock over."""
    store = tmp_path / "full.zarr"
    failing_writes.update(code=errno.ENOSPC, at=S.frames_path("audio"), nth=FAIL_BLOCK + 1, sticky=True)
    code, err = extract_in_process(monkeypatch, capsys, small_corpus, store)
    assert_one_clear_line(code, err, store, errno.ENOSPC)
    assert zarr_attrs(store).get(S.WRITER_ATTR), "the lock could not be released on a full disk"
    done = assert_done_clips_equal_reference(store, fbank_zarr)
    assert done.tolist() == list(range(FAIL_BLOCK * BLOCK_SIZE))

    failing_writes.update(code=None, sticky=False)
    rerun_equals_reference(monkeypatch, capsys, caplog, small_corpus, store, reference, len(done))


def test_write_failure_creating_the_store_is_one_line(small_corpus, failing_writes, monkeypatch, capsys, tmp_path):
    """The store's arrays are laid out in a temporary sibling first: when that fails, no store appears."""
    store = tmp_path / "never.zarr"
    failing_writes.update(code=errno.EACCES, at=None, nth=1)
    code, err = extract_in_process(monkeypatch, capsys, small_corpus, store)
    assert_one_clear_line(code, err, store, errno.EACCES)
    assert not store.exists()


KILLED_AT = """
import os, signal, sys
from pathlib import Path
from avsuperb.extract.run import ExtractOptions, run_extraction
from avsuperb.store.backend import H5Backend
corpus, out, array, nth, block = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
write, seen = H5Backend.write, []
def killing_write(self, name, start, data):
    if name == array:
        seen.append(start)
        if len(seen) == nth:
            os.kill(os.getpid(), signal.SIGKILL)
    write(self, name, start, data)
H5Backend.write = killing_write
run_extraction(ExtractOptions("fbank", "synthetic", out, Path(corpus), block_size=block, progress=False, decode_workers=0))
"""


def test_hdf5_store_killed_mid_run_resumes(small_corpus, reference, cli_env, tmp_path):
    """SIGKILL while the third block is written into an HDF5 store: the file must still open (rewriting
    the variable-length clips/reason each block left it unreadable), the two blocks before are done
    (each block is flushed to the file) and equal the reference, and the same run completes it."""
    from avsuperb.extract.run import ExtractOptions, run_extraction

    store = tmp_path / "killed.h5"
    # a fresh interpreter, not a fork: a fork of this process, which ran torch, can hang in OpenMP
    killed = subprocess.run([sys.executable, "-c", KILLED_AT, str(small_corpus), str(store), S.pooled_path("audio"), "3", str(BLOCK_SIZE)],
                            env=cli_env, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    laid_out = [name for name in reference[0] if "/stats/" not in name]  # stats appear when the store completes
    with StoreReader(store) as got:  # opens, and every array reads
        assert [got.backend.read(name).shape for name in laid_out] == [reference[0][name].shape for name in laid_out]
        done = np.flatnonzero(got.status() == S.STATUS_DONE)
        assert done.tolist() == list(range(2 * BLOCK_SIZE)), "the blocks written before the kill are kept"
        pooled = S.pooled_path("audio")
        np.testing.assert_array_equal(got.backend.read(pooled)[done], reference[0][pooled][done])

    summary = run_extraction(ExtractOptions("fbank", "synthetic", store, small_corpus, block_size=BLOCK_SIZE, progress=False, decode_workers=0))
    assert (summary.done, summary.pending, summary.extracted) == (summary.total, 0, summary.total - 2 * BLOCK_SIZE), summary.line()
    with StoreReader(store) as got:
        assert_same_arrays({name: got.backend.read(name) for name in reference[0]}, reference[0])


def test_probe_refuses_a_store_being_written(run_cli, tmp_path):
    """A writer (this process) holds the store, after its first block and after completing it (as a
    re-run would, rewriting the statistics): exit 2, one line naming the writing process; nothing written."""
    sys.path.insert(0, str(Path(__file__).parents[1]))
    from test_cli import EMOTIONS, _probe_refused
    from avsuperb.store.table import ClipTable, LabelColumn
    from avsuperb.store.writer import StoreWriter, TrackSpec

    n = len(EMOTIONS)
    table = ClipTable(ids=[f"clip{i}" for i in range(n)], splits=["train"] * 4 + ["dev"] * 2 + ["test"] * 2,
                      durations=np.full(n, 1.0), labels={"emotion": LabelColumn.encode("class", EMOTIONS, ("hap", "neu"))})
    writer = StoreWriter.open(tmp_path / "busy.zarr", upstream={"name": "tiny", "config": {}, "checkpoint_sha256": None},
                              dataset={"name": "tiny", "root": str(tmp_path), "manifest_sha256": "0" * 64},
                              tracks={"audio": TrackSpec(num_layers=1, dim=4, frame_rate=100.0)}, frames=False,
                              table=table, block_size=2)
    try:
        writer.plan(list(range(n)))
        for row in (0, 1):  # the first block is written; the writer goes on holding the store
            writer.put(row, {"audio": np.random.default_rng(row).standard_normal((3, 1, 4)).astype(np.float32)})
        assert zarr_attrs(tmp_path / "busy.zarr").get(S.WRITER_ATTR)
        holder = f"process {os.getpid()}@{socket.gethostname()}"
        message = _probe_refused(run_cli, tmp_path, "busy.zarr", "--task", "er", names=("busy.zarr",))
        assert "is being written by avsuperb-extract" in message and holder in message, message
        for row in range(2, n):
            writer.put(row, {"audio": np.random.default_rng(row).standard_normal((3, 1, 4)).astype(np.float32)})
        writer.finalize()
        assert zarr_attrs(tmp_path / "busy.zarr")[S.ROOT_ATTR]["complete"] and zarr_attrs(tmp_path / "busy.zarr").get(S.WRITER_ATTR)
        message = _probe_refused(run_cli, tmp_path, "busy.zarr", "--task", "er", names=("busy.zarr",))
        assert "is being written by avsuperb-extract" in message and holder in message, message
    finally:
        writer.close()
