"""Loading the pooled cache of N clips: our store versus one file per clip (the reference's layout).

Ours: `StoreReader(path).pooled(track)`: one [N, L, D] float32 array, chunked by blocks of
clips (Zarr v3, stored raw). The reference's layout (REFERENCE.md, "What the reference caches"):
one torch `.pt` file of time-mean-pooled layers [L, D] per clip, read back one by one and
stacked; one `.npy` file per clip is timed too, as the cheapest one-file-per-clip layout. The features are random (pooled vectors
are read whole, so their content does not matter to the read path).

Two cache states are timed, each side in turn, repetition by repetition:
- warm: everything was just written and sits in the page cache (the usual case on re-runs);
- cold: before each read, that side's files are fsync'ed and dropped from the page cache with
  posix_fadvise(POSIX_FADV_DONTNEED) (no root needed; `fincore` confirms what stays cached).
  The host of a virtual machine may still cache the disk below us, so "cold" is cold-ish.

    python bench/pooled_read.py --small
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import _common as C

log = logging.getLogger("bench.pooled_read")
TRACK = "audio"


def write_store(path: Path, n: int, layers: int, dim: int, seed: int) -> np.ndarray:
    """A store of n clips whose pooled vectors are random; returns them."""
    from avsuperb.store.table import ClipTable, LabelColumn
    from avsuperb.store.writer import StoreWriter, TrackSpec

    rng = np.random.default_rng(seed)
    splits = np.where(np.arange(n) % 10 == 0, "test", np.where(np.arange(n) % 10 == 1, "dev", "train"))
    table = ClipTable(ids=[f"c{i:06d}" for i in range(n)], splits=list(splits), durations=np.full(n, 1.0),
                      labels={"emotion": LabelColumn("class", rng.integers(0, 4, n), ("neu", "hap", "ang", "sad"))})
    w = StoreWriter.open(path, upstream={"name": "bench", "config": {}, "checkpoint_sha256": None},
                         dataset={"name": "bench", "root": "/", "manifest_sha256": "0" * 64},
                         tracks={TRACK: TrackSpec(layers, dim, 50.0)}, frames=False, table=table)
    pooled = rng.standard_normal((n, layers, dim), dtype=np.float32)
    w.plan(list(range(n)))
    for i in range(n):
        w.put(i, {TRACK: pooled[i][None]})  # one frame: its mean is itself
    w.finalize()
    w.close()
    return pooled


def files_of(path: Path) -> list[Path]:
    path = Path(path)
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def drop_cache(path: Path) -> None:
    """fsync every file under `path` and ask the kernel to drop its cached pages."""
    for f in files_of(path):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def cached_fraction(path: Path) -> float | None:
    """Fraction of `path`'s bytes in the page cache, from util-linux fincore (None if unavailable)."""
    files = [str(f) for f in files_of(path)]
    try:
        resident, total = 0, 0
        for i in range(0, len(files), 2000):
            out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES,SIZE", *files[i:i + 2000]],
                                 capture_output=True, text=True, check=True).stdout
            for line in out.splitlines():
                res, size = line.split()
                resident, total = resident + min(int(res), int(size)), total + int(size)  # RES counts whole pages
        return resident / max(total, 1)
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def read_store(path: Path) -> np.ndarray:
    from avsuperb.store.reader import StoreReader

    with StoreReader(path) as r:
        return r.pooled(TRACK)


def read_npy(paths: list[Path]) -> np.ndarray:
    return np.stack([np.load(p) for p in paths])


def read_pt(paths: list[Path]) -> np.ndarray:
    return torch.stack([torch.load(p) for p in paths]).numpy()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="2,000 clips instead of 10,000")
    p.add_argument("--clips", type=int, default=None)
    p.add_argument("--layers", type=int, default=13)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--backend", choices=("zarr", "h5"), default="zarr", help="the store's backend")
    p.add_argument("--no-pt", action="store_true", help="skip the torch .pt per-clip layout")
    p.add_argument("--keep", action="store_true", help="keep the written files")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    C.setup_logging(args.verbose)
    torch.set_num_threads(1)
    n = args.clips or (2000 if args.small else 10000)
    base = C.BENCH_ROOT / f"pooled-{n}-{args.layers}x{args.dim}"
    store, npy_dir, pt_dir = base / f"store.{args.backend}", base / "npy", base / "pt"
    for d in (store, npy_dir, pt_dir):
        C.fresh(d)
    base.mkdir(parents=True, exist_ok=True)

    log.info("writing the store of %d clips x %d layers x %d", n, args.layers, args.dim)
    with C.timer() as t_ws:
        pooled = write_store(store, n, args.layers, args.dim, seed=0)
    log.info("writing %d .npy files%s", n, "" if args.no_pt else " and .pt files")
    npy_dir.mkdir()
    with C.timer() as t_wn:
        npy_paths = []
        for i in range(n):
            f = npy_dir / f"c{i:06d}.npy"
            np.save(f, pooled[i])
            npy_paths.append(f)
    pt_paths = []
    if not args.no_pt:
        pt_dir.mkdir()
        for i in range(n):
            f = pt_dir / f"c{i:06d}.pt"
            torch.save(torch.from_numpy(pooled[i]), f)
            pt_paths.append(f)

    # the store's cache state is that of the array read (a Zarr store also holds per-clip statistics)
    pooled_files = store / TRACK / "pooled" if args.backend == "zarr" else store
    sides = {"store (StoreReader.pooled)": (pooled_files, lambda: read_store(store)),
             "one .npy per clip": (npy_dir, lambda: read_npy(npy_paths))}
    if not args.no_pt:
        sides["one .pt per clip"] = (pt_dir, lambda: read_pt(pt_paths))
    for name, (_, read) in sides.items():  # correctness, and everything warm
        assert np.array_equal(read(), pooled), name

    times: dict[tuple[str, str], list[float]] = {}
    residency: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        for state in ("warm", "cold"):
            for name, (path, read) in sides.items():
                if state == "cold":
                    drop_cache(path)
                frac = cached_fraction(path)
                if frac is not None:
                    residency.setdefault((name, state), []).append(frac)
                start = time.perf_counter()
                read()
                times.setdefault((name, state), []).append(time.perf_counter() - start)
        log.info("repeat %d done", rep + 1)

    mb = pooled.nbytes / 2**20
    C.print_machine()
    print(f"config: {args.backend} store; {n} clips x {args.layers} layers x {args.dim} float32 = {mb:.0f} MiB of pooled features; "
          f"median of {args.repeats} repetitions, sides alternating; write times: store {t_ws[0]:.1f} s, .npy files {t_wn[0]:.1f} s")
    print(f"on disk: store {C.dir_bytes(store) / 2**20:.0f} MiB, .npy files {C.dir_bytes(npy_dir) / 2**20:.0f} MiB"
          + ("" if args.no_pt else f", .pt files {C.dir_bytes(pt_dir) / 2**20:.0f} MiB"))
    rows = []
    for state in ("warm", "cold"):
        ours = statistics.median(times[(next(iter(sides)), state)])
        for name in sides:
            t = statistics.median(times[(name, state)])
            res = residency.get((name, state))
            rows.append([state, name, f"{t:.3f}", f"{mb / t:.0f}", f"{t / ours:.1f}x",
                         "n/a" if res is None else f"{100 * statistics.median(res):.0f}%"])
    C.print_table("reading all pooled vectors", ["cache", "layout", "seconds", "MiB/s", "time / store's", "cached before read"], rows)
    for state in ("warm", "cold"):
        ours = statistics.median(times[(next(iter(sides)), state)])
        for name, target in (("one .pt per clip", " (the reference's layout; target >= 20x: {})"), ("one .npy per clip", "")):
            if (name, state) in times:
                ratio = statistics.median(times[(name, state)]) / ours
                print(f"{state}: store is {ratio:.1f}x faster than {name}" + target.format("met" if ratio >= 20 else "NOT met"))
    if not args.keep:
        C.fresh(base)
    return 0


if __name__ == "__main__":
    sys.exit(main())
