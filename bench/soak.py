"""Fault soak: interrupt and break extraction at random moments, resume, and compare every array
with one uninterrupted run.

Faults, each tried --trials times on the synthetic corpus with the `fbank` model:
  sigkill          SIGKILL of avsuperb-extract at a random moment: during start-up, a random time after
                   its store appeared, or once a random number of clips are done
  sigkill-write    SIGKILL from inside a store write, at a random write call: between the arrays of a
                   block (backend write), before a chunk file is written, or after the chunk's temporary
                   file is written but before it is renamed into place
  sigkill-h5       SIGKILL of avsuperb-extract into an HDF5 store (same moments as sigkill)
  sigterm, sigint  the signal at a random moment: exit code, summary line, what the store holds; in half
                   of the trials the resume is itself killed inside a store write before the final resume
  enospc, eacces   OSError(ENOSPC / EACCES) from a random store write: once (backend write), or from a
                   random chunk / metadata file write on, every write after it failing too (a full disk)
  shards           --shard 1/2 and --shard 2/2 started at once on one store, every other trial with a
                   third process spinning a CPU
  probe            avsuperb-probe on a store that an extraction is writing (exit code 2 and a clear
                   line expected); and on a complete store while a re-run holds its writer lock

After each trial: every clip marked done must equal the reference, the final store must equal the
reference array by array (and in its attributes), and no lock, temporary store or orphaned decode
worker may be left. "clips lost" counts clips marked done whose data is wrong or gone, plus clips
not done after the final re-run; "mismatches" counts arrays (and attribute sets) that differ from
the reference after the final re-run.

The interrupted runs of sigkill, sigkill-h5, sigterm, sigint and probe are the installed console
script, started fresh. The other runs (resumes, in-process faults, shards) call the same CLI entry
point (avsuperb.cli.extract_main) in a process forked from this script, with the fault patched in:
the same code path without the 3-4 s interpreter and torch start-up of each run.

    python bench/soak.py                 # 10 trials per fault (6-10 minutes on 2 shared cores)
    python bench/soak.py --small         # 3 trials per fault on a smaller corpus (1.5 minutes)
    python bench/soak.py --faults enospc,eacces --trials 20
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import multiprocessing as mp
import os
import random
import re
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

log = logging.getLogger("bench.soak")

FAULTS = ("sigkill", "sigkill-write", "sigkill-h5", "sigterm", "sigint", "enospc", "eacces", "shards", "probe")
BLOCK_SIZE = 4
SLOW_WRITE = 0.25  # s the probed extraction's writer sleeps before each store write
TIMEOUT = 180  # a run that takes longer than this is counted as a hang and killed
VOLATILE_ATTRS = ("created", "updated", "backend")
SUMMARY = re.compile(r"(\d+) clips processed in this run, (\d+)/(\d+) done, (\d+) failed, (\d+) pending")
EXE = Path(sys.executable).with_name("avsuperb-extract")
PROBE = Path(sys.executable).with_name("avsuperb-probe")
FORK = mp.get_context("fork")


# ------------------------------------------------------------------------------ bookkeeping
@dataclass
class Tally:
    fault: str
    trials: int = 0
    outcomes: Counter = field(default_factory=Counter)
    lost: int = 0
    mismatches: int = 0
    notes: list[str] = field(default_factory=list)
    done_at: list[int] = field(default_factory=list)  # clips done in the store when each interruption landed

    def add(self, outcome: str, lost: int = 0, mismatches: int = 0, note: str | None = None) -> None:
        self.outcomes[outcome] += 1
        self.lost += lost
        self.mismatches += mismatches
        if note:
            self.notes.append(note)

    def row(self) -> list[object]:
        outcomes = ", ".join(f"{k} x{v}" for k, v in sorted(self.outcomes.items(), key=lambda kv: -kv[1]))
        return [self.fault, self.trials, outcomes, self.lost, self.mismatches]


@dataclass
class Soak:
    corpus: Path
    work: Path
    n: int  # clips
    ref_arrays: dict[str, np.ndarray]
    ref_attrs: dict[str, Any]
    ref_seconds: float  # wall time of one uninterrupted CLI run (default decode workers)
    startup: float  # of which seconds passed before its store appeared (interpreter, torch, model, dataset index)
    writes: int  # backend writes of one full run (store creation included)
    puts: int  # chunk and metadata files written by one full run
    rng: random.Random

    def args(self, store: Path, workers: int | None) -> list[str]:
        a = ["--model", "fbank", "--dataset", "synthetic", "--root", str(self.corpus), "--out", str(store),
             "--block-size", str(BLOCK_SIZE), "--no-progress"]
        return a + ([] if workers is None else ["--decode-workers", str(workers)])

    def store(self, name: str, suffix: str = ".zarr") -> Path:
        return C.fresh(self.work / f"{name}{suffix}")


# --------------------------------------------------------------------------- store checking
def as_comparable(a: np.ndarray) -> np.ndarray:
    return np.array([str(x) for x in a.ravel()], dtype=object).reshape(a.shape) if a.dtype.kind in "OTU" else np.asarray(a)


def array_names(path: Path) -> list[str]:
    if path.suffix == ".zarr":
        import zarr

        group = zarr.open_group(str(path), mode="r")
        with warnings.catch_warnings():  # a temporary file a kill left in the store is reported by `leftovers`
            warnings.simplefilter("ignore")
            return sorted(name for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array))
    import h5py

    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, node: names.append(name) if isinstance(node, h5py.Dataset) else None)
    return sorted(names)


def read_status(store: Path) -> np.ndarray | None:
    """clips/status of a store being written, or None while it cannot be read (not there yet)."""
    from avsuperb import schemas as S

    try:
        if store.suffix == ".zarr":
            import zarr

            return np.asarray(zarr.open_group(str(store), mode="r")[S.CLIP_STATUS][:])
        import h5py

        with h5py.File(store, "r", locking=False) as f:
            return np.asarray(f[S.CLIP_STATUS][:])
    except Exception:  # noqa: BLE001 - not there yet, or caught mid-creation
        return None


def check_done_clips(soak: Soak, store: Path) -> tuple[int, int, str]:
    """After an interruption: (clips marked done, of them not equal to the reference, problem).

    Every array must read; every per-clip array's row and the clip's frame slot are compared."""
    from avsuperb.store.reader import StoreReader

    if not store.exists():
        return 0, 0, ""
    try:
        reader = StoreReader(store)
    except Exception as err:  # noqa: BLE001 - reported as an outcome
        return 0, 0, f"unreadable: {err}"
    try:
        return _check_done(soak, reader)
    except Exception as err:  # noqa: BLE001 - an array that opens but cannot be read
        return 0, 0, f"unreadable: {err}"
    finally:
        reader.close()


def inspect_store(soak: Soak, tally: Tally, store: Path, after: str, where: str, run: Any = None) -> tuple[int, int]:
    """(clips done, clips lost) after a fault; an unreadable store and, given the killed `run`,
    decode workers that outlived it are tallied."""
    done, lost, problem = check_done_clips(soak, store)
    if problem:
        tally.add(f"store UNREADABLE after {after}", note=f"{where}: {problem}")
    if run is not None and run.orphans:
        tally.add("orphaned workers", note=f"{where}: {run.orphans} decode workers outlived the kill")
    return done, lost


def _check_done(soak: Soak, reader: Any) -> tuple[int, int, str]:
    from avsuperb import schemas as S

    b = reader.backend
    for name in soak.ref_arrays:  # every array reads (a damaged one raises)
        if b.exists(name):
            b.read(name)
    status = b.read(S.CLIP_STATUS)
    done = np.flatnonzero(status == S.STATUS_DONE)
    if not len(done):
        return 0, 0, ""
    bad = np.zeros(soak.n, dtype=bool)
    for name, want in soak.ref_arrays.items():
        if name == S.CLIP_STATUS or want.ndim == 0 or want.shape[0] != soak.n or name.endswith("/offsets"):
            continue
        diff = as_comparable(b.read(name, done)) != as_comparable(want[done])
        bad[done[diff.reshape(len(done), -1).any(axis=1)]] = True
    for name in soak.ref_arrays:
        if name.endswith("/frames"):
            track = name.split("/")[0]
            off, lengths = soak.ref_arrays[S.offsets_path(track)], soak.ref_arrays[S.lengths_path(track)]
            for row in done:
                a, z = int(off[row]), int(off[row]) + int(lengths[row])
                if not np.array_equal(b.read(name, slice(a, z)), soak.ref_arrays[name][a:z]):
                    bad[row] = True
    return len(done), int(bad.sum()), ""


def compare_final(soak: Soak, store: Path) -> tuple[int, int, list[str]]:
    """After the last run: (clips not done, arrays/attribute sets differing, problems)."""
    from avsuperb import schemas as S
    from avsuperb.store.backend import open_backend

    problems: list[str] = []
    if not store.exists():
        return soak.n, len(soak.ref_arrays), ["store missing"]
    names = array_names(store)
    if names != sorted(soak.ref_arrays):
        problems.append(f"arrays differ: extra {sorted(set(names) - set(soak.ref_arrays))}, missing {sorted(set(soak.ref_arrays) - set(names))}")
    try:
        b = open_backend(store, "r")
    except Exception as err:  # noqa: BLE001 - reported
        return soak.n, len(soak.ref_arrays), [f"store unreadable: {err}"]
    try:
        status = b.read(S.CLIP_STATUS)
        mismatches = 0
        for name, want in soak.ref_arrays.items():
            if not b.exists(name):
                mismatches += 1
                continue
            try:
                got = b.read(name)
            except Exception as err:  # noqa: BLE001 - a damaged array
                mismatches += 1
                problems.append(f"{name} unreadable: {err}")
                continue
            if got.shape != want.shape or not np.array_equal(as_comparable(got), as_comparable(want)):
                mismatches += 1
                problems.append(f"{name} differs")
        attrs = b.get_attr(S.ROOT_ATTR) or {}
        if stable(attrs) != stable(soak.ref_attrs):
            mismatches += 1
            problems.append("store attributes differ")
        if b.get_attr(S.WRITER_ATTR):
            problems.append("writer lock left in the store")
    finally:
        b.close()
    return int(np.sum(status != S.STATUS_DONE)), mismatches, problems


def stable(attrs: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attrs.items() if k not in VOLATILE_ATTRS}


def leftovers(store: Path) -> tuple[list[str], list[str]]:
    """(lock files and temporary stores left beside the store, Zarr's temporary chunk files left inside it)."""
    beside = [p.name for p in store.parent.glob(f".{store.name}.*.lock")]
    beside += [p.name for p in store.parent.glob(f".{store.stem}.partial-*{store.suffix}")]
    inside = [str(p.relative_to(store)) for p in store.rglob("*.partial")] if store.is_dir() else []
    return beside, inside


# -------------------------------------------------------------------------- running extract
@dataclass
class Run:
    rc: int | None  # None: hung (killed after TIMEOUT)
    err: str
    seconds: float
    orphans: int = 0  # processes of its group still alive after it ended (decode workers)

    @property
    def hung(self) -> bool:
        return self.rc is None


def _reap_group(pgid: int) -> int:
    """Kill what is left of a process group; returns how many processes were still alive."""
    alive = 0
    for pid in _group_pids(pgid):
        alive += 1
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return alive


def _group_pids(pgid: int) -> list[int]:
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                pids.append(int(d.name))
    return pids


def _orphans_after(pgid: int) -> int:
    """Processes of the group alive 1 s after its leader ended (decode workers that outlived it)."""
    deadline = time.monotonic() + 1.0
    while _group_pids(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _reap_group(pgid)


def start_cli(soak: Soak, store: Path, workers: int | None, exe: Path = EXE, args: list[str] | None = None) -> subprocess.Popen[str]:
    cmd = [str(exe), *(args if args is not None else soak.args(store, workers))]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish_cli(proc: subprocess.Popen[str], started: float) -> Run:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
        rc: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        _reap_group(proc.pid)
        out, err = proc.communicate()
        rc = None
    return Run(rc, out + err, time.monotonic() - started, _orphans_after(proc.pid))


def _child(argv: list[str], patch: tuple[Any, ...] | None, err_path: str, counts_path: str | None) -> None:
    """A forked run of the CLI entry point with a fault patched in; its exit code is the CLI's."""
    os.setsid()
    fd = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    logging.getLogger("avsuperb").setLevel(logging.NOTSET)
    counts = _install(patch) if patch else {}
    sys.argv = ["avsuperb-extract", *argv]
    from avsuperb.cli import extract_main

    try:
        extract_main()
    finally:
        sys.stderr.flush()
        if counts_path:
            Path(counts_path).write_text(json.dumps(counts))


def _install(patch: tuple[Any, ...]) -> dict[str, int]:
    """Patch the fault into this (child) process. Kinds:
    count                          count backend writes and file writes
    kill-write K                   SIGKILL itself at backend write K, before it
    kill-put K before|rename       SIGKILL itself at chunk/metadata file write K: before it, or after its
                                   temporary file is written and before the rename
    oserror-write K ERRNO          backend write K raises OSError(ERRNO), once
    oserror-put K ERRNO            file write K and every one after it raise OSError(ERRNO)
    slow-write SECONDS             sleep before every backend write (a store that is written for long)
    """
    import zarr.storage._local as local

    from avsuperb.store.backend import ZarrBackend

    counts = {"writes": 0, "puts": 0}
    kind, at = patch[0], (patch[1] if len(patch) > 1 and kind_counts(patch[0]) else -1)
    write, put = ZarrBackend.write, local._put

    def patched_write(self: ZarrBackend, name: str, start: int, data: np.ndarray) -> None:
        counts["writes"] += 1
        if kind == "slow-write":
            time.sleep(patch[1])
        if counts["writes"] == at:
            if kind == "kill-write":
                os.kill(os.getpid(), signal.SIGKILL)
            if kind == "oserror-write":
                raise OSError(patch[2], os.strerror(patch[2]))
        write(self, name, start, data)

    def patched_put(path: Path, value: Any, exclusive: bool = False) -> int:
        counts["puts"] += 1
        if kind == "kill-put" and counts["puts"] == at:
            if patch[2] == "rename":
                path.parent.mkdir(parents=True, exist_ok=True)
                path.with_suffix(f".{uuid.uuid4().hex}.partial").write_bytes(bytes(value.as_buffer_like()))
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "oserror-put" and counts["puts"] >= at:
            raise OSError(patch[2], os.strerror(patch[2]))
        return put(path, value, exclusive)

    ZarrBackend.write = patched_write  # type: ignore[method-assign]
    local._put = patched_put
    return counts


def kind_counts(kind: str) -> bool:
    return kind in ("kill-write", "kill-put", "oserror-write", "oserror-put")


def fork_run(soak: Soak, args: list[str], patch: tuple[Any, ...] | None = None, tag: str = "run") -> tuple[Run, dict[str, int]]:
    """Run the CLI entry point in a forked process; returns the run and (for `count`) its counters."""
    return finish_fork(*start_fork(soak, args, patch, tag))


def start_fork(soak: Soak, args: list[str], patch: tuple[Any, ...] | None, tag: str) -> tuple[Any, Path, Path | None, float]:
    err_path = soak.work / f"{tag}-{uuid.uuid4().hex[:8]}.log"
    counts_path = err_path.with_suffix(".json") if patch and patch[0] == "count" else None
    p = FORK.Process(target=_child, args=(args, patch, str(err_path), str(counts_path) if counts_path else None))
    p.start()
    return p, err_path, counts_path, time.monotonic()


def finish_fork(p: Any, err_path: Path, counts_path: Path | None, started: float) -> tuple[Run, dict[str, int]]:
    p.join(TIMEOUT)
    rc: int | None = p.exitcode
    if p.is_alive():
        _reap_group(p.pid)
        p.join()
        rc = None
    run = Run(rc, err_path.read_text(errors="replace") if err_path.exists() else "", time.monotonic() - started, _orphans_after(p.pid))
    err_path.unlink(missing_ok=True)
    counts = json.loads(counts_path.read_text()) if counts_path and counts_path.exists() else {}
    if counts_path:
        counts_path.unlink(missing_ok=True)
    return run, counts


def summary_of(err: str) -> tuple[str, tuple[int, ...]] | None:
    lines = [line for line in err.splitlines() if SUMMARY.search(line)]
    if len(lines) != 1:
        return None
    return lines[0], tuple(int(x) for x in SUMMARY.search(lines[0]).groups())  # type: ignore[union-attr]


def resume_and_compare(soak: Soak, tally: Tally, store: Path, workers: int | None, what: str) -> None:
    """The final re-run: must exit 0 with the store complete and equal to the reference."""
    run, _ = fork_run(soak, soak.args(store, workers), tag="resume")
    missing, mismatches, problems = compare_final(soak, store)
    left, partials = leftovers(store)
    if run.hung:
        tally.add(f"{what} HUNG", missing, mismatches, f"{what}: re-run hung")
    elif run.rc != 0 or "Traceback" in run.err:
        tally.add(f"{what} re-run FAILED rc={run.rc}", missing, mismatches, f"{what}: re-run rc={run.rc}: {run.err.strip()[-600:]}")
    else:
        tally.add(f"{what} resumed", missing, mismatches)
    if problems:
        tally.notes.append(f"{what}: {'; '.join(problems)}")
    if left:
        tally.add("LEFT a lock or temporary store", note=f"{what}: left {left}")
    if partials:
        tally.add("left a zarr *.partial file in the store", note=f"{what}: left {partials}")
    if run.orphans:
        tally.add("orphaned workers", note=f"{what}: {run.orphans} processes outlived the re-run")


def random_moment_kill(soak: Soak, proc: subprocess.Popen[str], store: Path, sig: int, delay_only: bool = False) -> str:
    """Send `sig` at a random moment: during start-up (1 in 5), a random time after the store appeared
    (2 in 5), or once a random number of clips are done (2 in 5; not for HDF5, whose status is not on
    disk before the file is closed). Returns how, or "" when the run ended first."""
    started = time.monotonic()
    r = soak.rng.random()
    if r < 0.2:
        delay = soak.rng.uniform(0.2, soak.startup)
        while proc.poll() is None and time.monotonic() - started < delay:
            time.sleep(0.01)
        how = f"start-up, after {delay:.1f} s"
    elif r < 0.6 or delay_only:
        while proc.poll() is None and not store.exists() and time.monotonic() - started < TIMEOUT:
            time.sleep(0.01)
        delay = soak.rng.uniform(0, soak.ref_seconds - soak.startup)
        appeared = time.monotonic()
        while proc.poll() is None and time.monotonic() - appeared < delay:
            time.sleep(0.01)
        how = f"{delay:.1f} s after the store appeared"
    else:
        target = soak.rng.randint(1, soak.n - 1)
        settle = soak.rng.uniform(0, 0.1)
        while proc.poll() is None and time.monotonic() - started < TIMEOUT:
            status = read_status(store)
            if status is not None and int(np.sum(status == 1)) >= target:
                time.sleep(settle)
                break
            time.sleep(0.01)
        how = f"at >= {target} done (+{settle:.2f} s)"
    if proc.poll() is None:
        os.kill(proc.pid, sig)
        return how
    return ""


# ---------------------------------------------------------------------------------- faults
def fault_sigkill(soak: Soak, trials: int, suffix: str = ".zarr", name: str = "sigkill") -> Tally:
    tally = Tally(name)
    for t in range(trials):
        tally.trials += 1
        workers = 2 if t % 2 == 0 else 0
        store = soak.store(f"{name}-{t}", suffix)
        proc = start_cli(soak, store, workers)
        how = random_moment_kill(soak, proc, store, signal.SIGKILL, delay_only=suffix != ".zarr")  # HDF5: status not visible before a flush
        run = finish_cli(proc, time.monotonic())
        if run.hung:
            tally.add("HUNG")
            continue
        done, lost = inspect_store(soak, tally, store, "the kill", f"trial {t} ({how})", run)
        tally.add("killed" if how else "finished before the kill", lost)
        tally.done_at.append(done)
        log.info("%s %d: %s, %d/%d done, %d lost", name, t, how or "finished first", done, soak.n, lost)
        resume_and_compare(soak, tally, store, workers, "then")
    return tally


def fault_sigkill_write(soak: Soak, trials: int) -> Tally:
    tally = Tally("sigkill-write")
    for t in range(trials):
        tally.trials += 1
        workers = 2 if t % 2 == 0 else 0
        store = soak.store(f"kill-write-{t}")
        level = ["write", "put-before", "put-rename"][t % 3]
        if level == "write":
            patch: tuple[Any, ...] = ("kill-write", soak.rng.randint(1, soak.writes))
        else:
            patch = ("kill-put", soak.rng.randint(1, soak.puts), level.split("-")[1])
        run, _ = fork_run(soak, soak.args(store, workers), patch, tag="killw")
        if run.hung:
            tally.add("HUNG")
            continue
        done, lost = inspect_store(soak, tally, store, "the kill", f"trial {t} {patch}", run)
        tally.add(f"killed at {level}" if run.rc == -signal.SIGKILL else f"rc={run.rc}", lost)
        tally.done_at.append(done)
        log.info("sigkill-write %d: %s rc=%s, %d/%d done, %d lost", t, patch, run.rc, done, soak.n, lost)
        resume_and_compare(soak, tally, store, workers, "then")
    return tally


def fault_signal(soak: Soak, trials: int, sig: signal.Signals) -> Tally:
    name = sig.name.lower()
    tally = Tally(name)
    for t in range(trials):
        tally.trials += 1
        workers = 2 if t % 2 == 0 else 0
        store = soak.store(f"{name}-{t}")
        proc = start_cli(soak, store, workers)
        how = random_moment_kill(soak, proc, store, sig)
        run = finish_cli(proc, time.monotonic())
        if run.hung:
            tally.add("HUNG", note=f"trial {t} ({how}) hung")
            continue
        summary = summary_of(run.err)
        status = read_status(store)
        in_store = 0 if status is None else int(np.sum(status == 1))
        done, lost = inspect_store(soak, tally, store, "the signal", f"trial {t} ({how})")
        if "Traceback" in run.err:
            outcome = f"TRACEBACK rc={run.rc}"
            tally.notes.append(f"trial {t} ({how}): {run.err.strip()[-600:]}")
        elif not how:
            outcome = "finished before the signal"
        elif run.rc == 130 and summary and "interrupted" in summary[0]:
            outcome = "rc 130 + summary 'interrupted'"
            if summary[1][1] != in_store:
                outcome += ", summary != store"
                tally.notes.append(f"trial {t}: summary says {summary[1][1]} done, the store holds {in_store}")
        elif run.rc == 130 and "interrupted" in run.err:
            outcome = "rc 130 'interrupted' before the store was opened"
        elif run.rc == -sig:  # the default action: the signal came outside the extraction's handler
            outcome = f"rc {run.rc} (signal {'while exiting' if in_store == soak.n else 'during start-up'}, no handler)"
        elif run.rc == 0 and summary and "complete;" in summary[0] and summary[1][1] == soak.n == in_store:
            outcome = "rc 0 + summary 'complete' (signal after the last clip)"
        else:
            outcome = f"rc {run.rc}"
            tally.notes.append(f"trial {t} ({how}): rc {run.rc}: {run.err.strip()[-400:]}")
        dropped = _dropped(soak, store)
        if dropped:
            tally.notes.append(f"trial {t} ({how}): {dropped} extracted clips were partly written but not marked done")
        if run.orphans:
            tally.add("orphaned workers", note=f"trial {t}: {run.orphans} decode workers outlived the run")
        tally.add(outcome, lost)
        tally.done_at.append(done)
        log.info("%s %d: %s -> %s, %d/%d done", name, t, how or "finished first", outcome, done, soak.n)
        if how and soak.rng.random() < 0.5 and status is not None and in_store < soak.n:
            # the resume itself is killed inside a store write (its blocks may hold clips done before)
            pending = soak.n - in_store
            k = soak.rng.randint(1, max(1, soak.puts * pending // soak.n))
            run2, _ = fork_run(soak, soak.args(store, workers), ("kill-put", k, soak.rng.choice(["before", "rename"])), tag="killr")
            _, lost2 = inspect_store(soak, tally, store, "the second kill", f"trial {t}")
            tally.add("resume killed in a write" if run2.rc == -signal.SIGKILL else "resume finished before its kill point", lost2)
        resume_and_compare(soak, tally, store, workers, "then")
    return tally


def _dropped(soak: Soak, store: Path) -> int:
    """Clips with features in the store but not marked done (extracted, then dropped)."""
    from avsuperb import schemas as S
    from avsuperb.store.backend import open_backend

    if not store.exists():
        return 0
    try:
        b = open_backend(store, "r")
    except Exception:  # noqa: BLE001
        return 0
    try:
        status = b.read(S.CLIP_STATUS)
        lengths = b.read(S.lengths_path("audio"))
        return int(np.sum((status != S.STATUS_DONE) & (lengths != 0)))
    finally:
        b.close()


def fault_oserror(soak: Soak, trials: int, code: int) -> Tally:
    name = errno.errorcode[code].lower()
    tally = Tally(name)
    for t in range(trials):
        tally.trials += 1
        workers = 2 if t % 2 == 0 else 0
        store = soak.store(f"{name}-{t}")
        if t % 2 == 0:
            patch: tuple[Any, ...] = ("oserror-write", soak.rng.randint(1, soak.writes), code)
            where = "a backend write, once"
        else:
            patch = ("oserror-put", soak.rng.randint(1, soak.puts), code)
            where = "file writes from then on"
        run, _ = fork_run(soak, soak.args(store, workers), patch, tag=name)
        if run.hung:
            tally.add("HUNG", note=f"trial {t} {patch} hung")
            continue
        lines = [line for line in run.err.splitlines() if "error:" in line]
        clear = (run.rc == 2 and "Traceback" not in run.err and lines and str(store) in lines[-1]
                 and os.strerror(code) in lines[-1] and "re-run" in lines[-1])
        if clear:
            outcome = "exit 2, clear line"
        elif run.rc == 0:
            outcome = "exit 0 (fault not reached)"
        else:
            outcome = f"UNCLEAR rc={run.rc}" + (" with traceback" if "Traceback" in run.err else "")
            tally.notes.append(f"trial {t} {patch} ({where}): rc={run.rc}: {run.err.strip()[-700:]}")
        done, lost = inspect_store(soak, tally, store, "the failure", f"trial {t} {patch}")
        tally.add(f"{outcome} ({where.split(',')[0].split(' from')[0]})", lost)
        tally.done_at.append(done)
        log.info("%s %d: %s -> rc %s, %d/%d done, %d lost", name, t, patch, run.rc, done, soak.n, lost)
        resume_and_compare(soak, tally, store, workers, "then")
    return tally


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    x = 0
    while time.monotonic() < end:
        x += 1


def fault_shards(soak: Soak, trials: int) -> Tally:
    tally = Tally("shards")
    for t in range(trials):
        tally.trials += 1
        store = soak.store(f"shards-{t}")
        load = FORK.Process(target=_spin, args=(TIMEOUT,)) if t % 2 == 1 else None
        if load:
            load.start()
        workers = 2 if t % 4 < 2 else 0
        procs = []
        for k in (1, 2):
            err_path = soak.work / f"shard-{t}-{k}.log"
            args = soak.args(store, workers) + ["--shard", f"{k}/2"]
            p = FORK.Process(target=_child, args=(args, None, str(err_path), None))
            procs.append((p, err_path))
        for p, _ in procs:
            p.start()
        rcs, errs = [], []
        for p, err_path in procs:
            p.join(TIMEOUT)
            if p.is_alive():
                _reap_group(p.pid)
                p.join()
                rcs.append(None)
            else:
                rcs.append(p.exitcode)
            errs.append(err_path.read_text(errors="replace"))
            err_path.unlink(missing_ok=True)
        if load:
            load.kill()
            load.join()
        missing, mismatches, problems = compare_final(soak, store)
        left = [f for part in leftovers(store) for f in part]
        completes = sum("complete;" in e for e in errs)
        if None in rcs:
            outcome = "HUNG"
        elif rcs == [0, 0] and completes >= 1 and not problems and not left:
            outcome = "both exit 0, store complete" + (" (CPU load)" if load else "")
        else:
            outcome = f"FAILED rc={rcs}"
            tally.notes.append(f"trial {t}: rc={rcs} completes={completes} problems={problems} left={left}\n" + "\n".join(e[-500:] for e in errs))
        tally.add(outcome, missing, mismatches)
        log.info("shards %d: rc=%s, %s", t, rcs, outcome)
    return tally


def fault_probe(soak: Soak, trials: int) -> Tally:
    """The probe on a store being written; then on a complete store while a re-run holds its lock."""
    tally = Tally("probe")
    probes = 0
    attempt = 0
    while probes < trials and attempt < 3 * trials:
        store = soak.store(f"probe-{attempt}")
        workers = 2 if attempt % 2 == 0 else 0
        attempt += 1
        # the writer sleeps SLOW_WRITE s before each store write, so that the store is being written for a while
        started = start_fork(soak, soak.args(store, workers), ("slow-write", SLOW_WRITE), "probed")
        proc = started[0]
        time.sleep(soak.rng.uniform(0, 1.5))
        while proc.is_alive() and probes < trials:
            out = soak.work / f"probe-result-{uuid.uuid4().hex[:8]}"
            r = subprocess.run([str(PROBE), "--cache", str(store), "--task", "er", "--out", str(out), "--set", "steps=5",
                                "--no-progress"], capture_output=True, text=True, timeout=TIMEOUT)
            if not proc.is_alive():
                C.fresh(out)
                break  # the extraction ended while the probe ran: the store may have been complete
            probes += 1
            tally.trials += 1
            msg = (r.stderr.strip().splitlines() or [""])[-1]
            if r.returncode == 2 and "Traceback" not in r.stderr and str(store) in msg and not out.exists():
                kind = "has not finished" if "has not finished" in msg else ("does not exist" if "does not exist" in msg else "other")
                tally.add(f"refused, exit 2 ('{kind}')")
                tally.notes.append(f"refused with: {msg}") if kind != "does not exist" and len(tally.notes) < 2 else None
            else:
                tally.add(f"ACCEPTED or unclear rc={r.returncode}", note=f"probe during extraction: rc={r.returncode}: {r.stderr.strip()[-400:]}")
            time.sleep(soak.rng.uniform(0, 1.0))
        run, _ = finish_fork(*started)
        missing, mismatches, problems = compare_final(soak, store)
        if run.rc != 0 or problems:
            tally.add(f"extraction under probing FAILED rc={run.rc}", missing, mismatches, f"{problems} {run.err[-300:]}")
        else:
            tally.lost += missing
            tally.mismatches += mismatches
    # a complete store with a live writer (a re-run of a finished extraction holds the lock)
    src = soak.work / "probe-0.zarr"
    for t in range(max(1, trials // 5)):
        tally.trials += 1
        ready, release = FORK.Event(), FORK.Event()
        holder = FORK.Process(target=_hold_writer, args=(soak, src, ready, release))
        holder.start()
        if not ready.wait(60):
            tally.add("writer-lock holder did not start")
            holder.kill()
            continue
        out = soak.work / f"probe-locked-{t}"
        r = subprocess.run([str(PROBE), "--cache", str(src), "--task", "er", "--out", str(out), "--set", "steps=5", "--no-progress"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        release.set()
        holder.join(60)
        if r.returncode == 0:
            tally.add("complete store, writer lock held: ACCEPTED (exit 0)")
        elif r.returncode == 2 and "Traceback" not in r.stderr:
            tally.add("complete store, writer lock held: refused, exit 2")
        else:
            tally.add(f"complete store, writer lock held: rc={r.returncode}", note=r.stderr[-400:])
        C.fresh(out)
    return tally


def _hold_writer(soak: Soak, store: Path, ready: Any, release: Any) -> None:
    """Reopen a complete store as its writer (what a re-run of the same command does) and hold it."""
    from avsuperb.extract import datasets
    from avsuperb.store.backend import open_backend
    from avsuperb import schemas as S
    from avsuperb.store.writer import StoreWriter, TrackSpec

    b = open_backend(store, "r")
    attrs = b.get_attr(S.ROOT_ATTR)
    b.close()
    index = datasets.build("synthetic", soak.corpus).index()
    w = StoreWriter.open(store, upstream=attrs["upstream"], dataset=attrs["dataset"],
                         tracks={t: TrackSpec(**v) for t, v in attrs["tracks"].items()}, frames=attrs["frames"],
                         table=index.table(), block_size=attrs["block_size"])
    ready.set()
    release.wait(120)
    w.close()


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="3 trials per fault on an 8/4/4-clip corpus (about 2 minutes)")
    p.add_argument("--trials", type=int, default=None, help="trials per fault (default 10; --small 3)")
    p.add_argument("--faults", type=str, default=",".join(FAULTS), help=f"comma-separated subset of: {', '.join(FAULTS)}")
    p.add_argument("--clips", type=str, default=None, help="train/dev/test clips of the synthetic corpus (default 24/8/8, the tests' small_corpus)")
    p.add_argument("--seed", type=int, default=0, help="seed of the trials' random moments and write calls")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        p.error(f"unknown fault(s) {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    C.setup_logging(args.verbose)
    logging.getLogger("avsuperb").setLevel(logging.WARNING)
    # started in the background (nohup ... &), this process ignores SIGINT, and so would every run it
    # starts: Python installs its KeyboardInterrupt handler only where SIGINT is not ignored
    signal.signal(signal.SIGINT, signal.default_int_handler)
    trials = args.trials or (3 if args.small else 10)
    clips = args.clips or ("8/4/4" if args.small else "24/8/8")
    n_train, n_dev, n_test = (int(v) for v in clips.split("/"))
    corpus = C.corpus(n_train, n_dev, n_test)
    work = C.fresh(C.BENCH_ROOT / "soak")
    work.mkdir(parents=True)
    import avsuperb.cli  # noqa: F401 - imported before forking, so forked runs start at once
    import avsuperb.extract.run  # noqa: F401

    t0 = time.monotonic()
    ref = work / "reference.zarr"
    log.info("reference: one uninterrupted run of avsuperb-extract")
    with C.timer() as t_ref:
        proc = start_cli(Soak(corpus, work, 0, {}, {}, 0, 0, 0, 0, random.Random()), ref, None)
        while proc.poll() is None and not ref.exists():
            time.sleep(0.01)
        startup = time.monotonic() - t0
        run = finish_cli(proc, time.monotonic())
    if run.rc != 0:
        print(run.err, file=sys.stderr)
        return 1
    from avsuperb import schemas as S
    from avsuperb.store.backend import open_backend

    names = array_names(ref)
    b = open_backend(ref, "r")
    ref_arrays = {name: b.read(name) for name in names}
    ref_attrs = b.get_attr(S.ROOT_ATTR)
    b.close()
    n = len(ref_arrays[S.CLIP_STATUS])
    soak = Soak(corpus, work, n, ref_arrays, ref_attrs, t_ref[0], startup, 0, 0, random.Random(args.seed))
    counted = work / "counted.zarr"
    run, counts = fork_run(soak, soak.args(counted, 0), ("count",), tag="count")
    missing, mismatches, problems = compare_final(soak, counted)
    if run.rc != 0 or missing or mismatches:
        log.error("the forked run does not equal the CLI run: rc %s, %s", run.rc, problems)
        return 1
    soak.writes, soak.puts = counts["writes"], counts["puts"]
    log.info("one full run: %.1f s (store created after %.1f s), %d backend writes, %d file writes", t_ref[0], startup, soak.writes, soak.puts)

    tallies = []
    for fault in faults:
        log.info("fault %s: %d trials", fault, trials)
        with C.timer() as t:
            if fault == "sigkill":
                tally = fault_sigkill(soak, trials)
            elif fault == "sigkill-h5":
                tally = fault_sigkill(soak, trials, ".h5", "sigkill-h5")
            elif fault == "sigkill-write":
                tally = fault_sigkill_write(soak, trials)
            elif fault in ("sigterm", "sigint"):
                tally = fault_signal(soak, trials, signal.Signals[fault.upper()])
            elif fault in ("enospc", "eacces"):
                tally = fault_oserror(soak, trials, getattr(errno, fault.upper()))
            elif fault == "shards":
                tally = fault_shards(soak, trials)
            else:
                tally = fault_probe(soak, trials)
        tally.notes.insert(0, f"{t[0]:.0f} s")
        tallies.append(tally)

    C.print_machine()
    print(f"config: synthetic corpus {clips} clips ({n}), model fbank, block size {BLOCK_SIZE}, "
          f"{trials} trials per fault, seed {args.seed}; one uninterrupted run {t_ref[0]:.1f} s (store created after {startup:.1f} s), "
          f"{soak.writes} backend writes, {soak.puts} file writes")
    C.print_table("faults (clips lost and mismatches must be 0)", ["fault", "trials", "outcomes", "clips lost", "mismatches"],
                  [t.row() for t in tallies])
    print("\nnotes:")
    for t in tallies:
        if t.done_at:
            print(f"  {t.fault}: clips done in the store after each interruption: {sorted(t.done_at)}")
        for note in t.notes:
            print(f"  {t.fault}: {note}")
    print(f"\ntotal {time.monotonic() - t0:.0f} s")
    bad = sum(t.lost + t.mismatches for t in tallies)
    if bad:
        print(f"stores kept for inspection under {work}")
    else:
        C.fresh(work)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
