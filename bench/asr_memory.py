"""Peak memory of ASR probing on a frame store several times larger than that memory.

Writes a frame store with StoreWriter (random float16 frames of HuBERT Base's shape, 13 x 768
at 50 Hz, and random transcripts), then runs `run_probe(task="asr")` in a child process with a
short config (few steps, one rate, a small BiLSTM) and reports the child's peak resident set
(VmHWM from /proc/self/status, read by the child itself at its end). getrusage(RUSAGE_CHILDREN)
is not used: Linux folds the forked copy of this (large) parent into a child's ru_maxrss before
the child execs. The memory "given" to the probe is the budget store size / 4; no hard limit is
imposed, because RLIMIT_AS counts torch's virtual reservations and fails spuriously. The same
probe on a store of half the size shows whether the peak grows with the store; the two stores
are written, probed and deleted one after the other, so the disk holds one at a time. A child
that only imports the probe stage gives the fixed part of the peak.

    python bench/asr_memory.py --small
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import _common as C

log = logging.getLogger("bench.asr_memory")
TRACK = "audio"
LAYERS, DIM, RATE = 13, 768, 50.0
WORDS = ("THE", "CAT", "DOG", "RED", "BLUE", "SUN", "RUN", "SIT", "BIG", "HOT", "COLD", "FISH", "BIRD", "TREE")
PROBE_SET = ["lrs=1e-3", "steps=40", "batch_size=8", "eval_every=40", "patience=10", "warmup_steps=5",
             "hidden=64", "lstm_units=64", "lstm_layers=1", "upsample=2"]


def write_frame_store(path: Path, n: int, frames_per_clip: int, seed: int) -> None:
    from avsuperb.store.table import ClipTable, LabelColumn
    from avsuperb.store.writer import StoreWriter, TrackSpec

    rng = np.random.default_rng(seed)
    splits = np.where(np.arange(n) % 10 == 0, "test", np.where(np.arange(n) % 10 == 1, "dev", "train"))
    texts = [" ".join(rng.choice(WORDS, size=3)) for _ in range(n)]
    duration = frames_per_clip / RATE
    table = ClipTable(ids=[f"u{i:06d}" for i in range(n)], splits=list(splits), durations=np.full(n, duration),
                      labels={"transcript": LabelColumn.encode("text", texts)})
    w = StoreWriter.open(path, upstream={"name": "bench", "config": {"frames": "random"}, "checkpoint_sha256": None},
                         dataset={"name": "bench", "root": "/", "manifest_sha256": "0" * 64},
                         tracks={TRACK: TrackSpec(LAYERS, DIM, RATE)}, frames=True, table=table)
    pool = [rng.standard_normal((frames_per_clip, LAYERS, DIM), dtype=np.float32) for _ in range(7)]
    w.plan(list(range(n)))
    for i in range(n):  # 7 random arrays in turn, rescaled per clip: random enough not to compress
        w.put(i, {TRACK: pool[i % len(pool)] * np.float32(1.0 + (i % 13) / 13)})
        if (i + 1) % 500 == 0:
            log.info("  %d / %d clips written", i + 1, n)
    w.finalize()
    w.close()


def vm_hwm_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def child(store: str | None) -> None:
    """Run in the subprocess: probe (or only import, for the baseline), then print the peak."""
    import torch

    torch.set_num_threads(1)
    from avsuperb.probe.config import load_config
    from avsuperb.probe.run import run_probe

    out: dict[str, object] = {}
    if store:
        start = time.perf_counter()
        result = run_probe(Path(store), "asr", TRACK, load_config("asr", None, PROBE_SET), None, progress=False, device="cpu")
        out.update(seconds=time.perf_counter() - start, test_cer=result["test_score"])
    out["vm_hwm"] = vm_hwm_bytes()
    print("RESULT " + json.dumps(out), flush=True)


def run_child(store: Path | None) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", str(store) if store else ""]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    out = json.loads(line[len("RESULT "):])
    return out


def gib(b: float) -> str:
    return f"{b / 2**30:.2f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="a 1 GiB store (and 0.5 GiB) instead of 8 GiB (and 4 GiB)")
    p.add_argument("--size-gib", type=float, default=None, help="frame bytes of the larger store")
    p.add_argument("--frames-per-clip", type=int, default=100, help="2 s clips at 50 Hz")
    p.add_argument("--repeats", type=int, default=2, help="probe runs per store (peak RSS varies from run to run)")
    p.add_argument("--keep", action="store_true", help="keep the stores")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.child is not None:
        child(args.child or None)
        return 0
    C.setup_logging(args.verbose)
    import torch

    torch.set_num_threads(1)  # as in the child
    size = (args.size_gib or (1.0 if args.small else 8.0)) * 2**30
    per_clip = args.frames_per_clip * LAYERS * DIM * 2
    n_full = int(size // per_clip)
    results = {"imports only": run_child(None)}
    sizes: dict[str, tuple[int, int, int]] = {}  # name -> (clips, store bytes, frames bytes)
    for name, n in (("half", n_full // 2), ("full", n_full)):
        path = C.fresh(C.BENCH_ROOT / f"asr-{name}.zarr")
        log.info("writing %s: %d clips x %d frames x %d x %d float16", path, n, args.frames_per_clip, LAYERS, DIM)
        write_frame_store(path, n, args.frames_per_clip, seed=0)
        sizes[name] = (n, C.dir_bytes(path), C.dir_bytes(path / TRACK / "frames"))
        log.info("probing %s store (%.2f GiB)", name, sizes[name][1] / 2**30)
        runs = [run_child(path) for _ in range(args.repeats)]
        results[name] = max(runs, key=lambda r: r["vm_hwm"])
        results[name]["all"] = [r["vm_hwm"] for r in runs]
        if not args.keep:
            C.fresh(path)

    C.print_machine()
    print(f"config: frames {LAYERS} x {DIM} float16 at {RATE:g} Hz, {args.frames_per_clip} frames per clip; "
          f"probe --set {' '.join(PROBE_SET)}; clips split train/dev/test 80/10/10; dev and test are read in full")
    rows = []
    for name, r in results.items():
        if name in sizes:
            n, disk, frames = sizes[name]
            rows.append([name, n, gib(disk), gib(frames), gib(disk / 4), gib(r["vm_hwm"]), " ".join(gib(v) for v in r["all"]),
                         f"{r['vm_hwm'] / (disk / 4):.2f}", f"{r['seconds']:.0f}", f"{r['test_cer']:.1f}"])
        else:
            rows.append([name, "-", "-", "-", "-", gib(r["vm_hwm"]), "-", "-", "-", "-"])
    C.print_table("peak RSS of the asr probe (GiB)", ["store", "clips", "store on disk", "of which frames", "budget (store / 4)",
                                                      "peak RSS (VmHWM, max)", "each run", "peak / budget", "probe s", "test CER %"], rows)
    full, half = results["full"]["vm_hwm"], results["half"]["vm_hwm"]
    print(f"\npeak RSS full / half store: {full / half:.2f} (store size ratio {sizes['full'][1] / sizes['half'][1]:.2f})")
    print(f"target: under 2 GB ({'met' if full < 2e9 else 'NOT met'}: {full / 1e9:.2f} GB), within the store/4 budget "
          f"({'met' if full < sizes['full'][1] / 4 else 'NOT met'}), independent of store size "
          f"({'met' if full / half < 1.1 else 'NOT met'}: full/half {full / half:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
