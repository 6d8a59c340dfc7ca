"""End-to-end extraction wall time versus the upstream's forward passes alone on the same clips.

End to end: one `run_extraction` call (build the model, index the corpus, decode every clip,
run the upstream, write pooled + frame arrays and statistics to a Zarr store, finalise).
Forward only: the same clips decoded beforehand (not timed), then only the `upstream.extract`
calls (batch size 1) or `upstream.extract_batch` calls on the same length-bucketed batches
that `run_extraction` forms (batch size 8) are timed. The two sides alternate, repetition by
repetition, in one process; the median of the repetitions is reported.

With --cli, a third side times the `avsuperb-extract` command itself, run as a child process
(with OMP_NUM_THREADS set to --threads): the same run plus the command's start-up (Python,
importing torch and the package, about 2 s), a fixed cost that a real dataset's run amortises.

    python bench/extraction_overhead.py --small
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

log = logging.getLogger("bench.extraction_overhead")


def forward_only(upstream, audios: list[np.ndarray], batches: list[list[int]]) -> float:
    """Seconds spent in the upstream's extract calls over all clips."""
    start = time.perf_counter()
    for b in batches:
        if len(b) == 1:
            upstream.extract(["audio"], audios[b[0]], None)
        else:
            upstream.extract_batch(["audio"], [(audios[r], None) for r in b])
    return time.perf_counter() - start


def end_to_end(checkpoint: Path, root: Path, store: Path, batch_size: int, workers: int | None) -> float:
    from avsuperb.extract.run import ExtractOptions, run_extraction

    C.fresh(store)
    start = time.perf_counter()
    summary = run_extraction(ExtractOptions("hubert", "synthetic", store, root, checkpoint=checkpoint, progress=False,
                                            batch_size=batch_size, decode_workers=workers))
    elapsed = time.perf_counter() - start
    assert summary.failed == 0 and summary.pending == 0, summary.line()
    C.fresh(store)
    return elapsed


def end_to_end_cli(checkpoint: Path, root: Path, store: Path, batch_size: int, workers: int | None, threads: int) -> float:
    """Wall time of the `avsuperb-extract` command for the same run, start-up included."""
    exe = Path(sys.executable).with_name("avsuperb-extract")
    cmd = [str(exe), "--model", "hubert", "--dataset", "synthetic", "--root", str(root), "--out", str(store),
           "--checkpoint", str(checkpoint), "--batch-size", str(batch_size), "--no-progress"]
    cmd += [] if workers is None else ["--decode-workers", str(workers)]
    C.fresh(store)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    elapsed = time.perf_counter() - start
    C.fresh(store)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="48 clips, 2 repetitions (default: 120 clips, 3 repetitions)")
    p.add_argument("--clips", type=str, default=None, help="train/dev/test clips of the synthetic corpus, e.g. 80/20/20")
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--batch-sizes", type=str, default="1,8")
    p.add_argument("--decode-workers", type=int, default=None,
                   help="run_extraction's decode_workers (0: a decode thread; default: the command's default, a thread for audio)")
    p.add_argument("--cli", action="store_true", help="also time the avsuperb-extract command (start-up included)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    C.setup_logging(args.verbose)
    logging.getLogger("avsuperb").setLevel(logging.WARNING)  # one line per run_extraction otherwise
    torch.set_num_threads(args.threads)
    clips = args.clips or ("32/8/8" if args.small else "80/20/20")
    repeats = args.repeats or (2 if args.small else 3)
    sizes = [int(v) for v in args.batch_sizes.split(",")]
    n_train, n_dev, n_test = (int(v) for v in clips.split("/"))

    from avsuperb.extract import datasets, upstreams
    from avsuperb.extract.media import decode
    from avsuperb.extract.pipeline import BUCKET_BATCHES, bucketed

    root = C.corpus(n_train, n_dev, n_test)
    checkpoint = C.small_hubert_checkpoint()
    store = C.BENCH_ROOT / f"overhead-{n_train}-{n_dev}-{n_test}.zarr"
    upstream = upstreams.build("hubert", checkpoint, "cpu", {})
    dataset = datasets.build("synthetic", root)
    index = dataset.index()
    durations = index.table().durations
    log.info("decoding %d clips for the forward-only side (not timed)", len(index.clips))
    audios = [decode(c.path, sample_rate=16000, fps=None, start=c.start, end=c.start + c.duration,
                     fill_missing=dataset.fills_missing_streams).audio for c in index.clips]
    rows = list(range(len(index.clips)))
    upstream.extract(["audio"], audios[0], None)  # warm-up

    times: dict[tuple[int, str], list[float]] = {}
    for rep in range(repeats):
        for bs in sizes:
            batches = bucketed(rows, durations, bs, bs * BUCKET_BATCHES) if bs > 1 else [[r] for r in rows]
            f = forward_only(upstream, audios, batches)
            e = end_to_end(checkpoint, root, store, bs, args.decode_workers)
            times.setdefault((bs, "forward"), []).append(f)
            times.setdefault((bs, "e2e"), []).append(e)
            log.info("repeat %d, batch %d: forward only %.2f s, end to end %.2f s (%.2fx)", rep + 1, bs, f, e, e / f)
            if args.cli:
                c = end_to_end_cli(checkpoint, root, store, bs, args.decode_workers, args.threads)
                times.setdefault((bs, "cli"), []).append(c)
                log.info("repeat %d, batch %d: avsuperb-extract %.2f s (%.2fx)", rep + 1, bs, c, c / f)

    audio_s = float(np.sum(durations))
    C.print_machine()
    print(f"config: small HuBERT (5 x 256 at 50 Hz, torchaudio checkpoint), {len(rows)} synthetic clips "
          f"({audio_s:.0f} s of audio), Zarr store with frames, decode_workers {'default' if args.decode_workers is None else args.decode_workers}, "
          f"torch threads {args.threads}, median of {repeats} alternating repetitions")
    table = []
    for bs in sizes:
        f, e = statistics.median(times[(bs, "forward")]), statistics.median(times[(bs, "e2e")])
        ratios = [b / a for a, b in zip(times[(bs, "forward")], times[(bs, "e2e")])]
        row = [bs, f"{f:.2f}", f"{e:.2f}", f"{e / f:.2f}x", " ".join(f"{r:.2f}" for r in ratios),
               f"{len(rows) / e:.1f}", "met" if e / f <= 1.25 else "NOT met"]
        if args.cli:
            c = statistics.median(times[(bs, "cli")])
            row += [f"{c:.2f}", f"{c / f:.2f}x", "met" if c / f <= 1.25 else "NOT met"]
        table.append(row)
    head = ["batch", "forward only", "end to end", "ratio (median)", "ratio per repeat", "clips/s end to end", "target <= 1.25x"]
    head += ["avsuperb-extract", "its ratio", "target <= 1.25x"] if args.cli else []
    C.print_table("extraction wall time (s)", head, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
