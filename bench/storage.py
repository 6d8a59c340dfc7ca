"""Bytes on disk per stored frame value (float16 + the store's compression) versus raw float32.

Extracts the synthetic corpus with `fbank` (1 x 240 at 100 Hz) and with a small random HuBERT
(5 x 256 at 50 Hz) into a Zarr store and an HDF5 store with frames on, and divides the bytes of
the `TRACK/frames` array on disk by the number of valid frame values (sum of the clips' lengths
x layers x dims). The numerator includes everything the array costs: chunk metadata and the
reserved-but-unused rows (per-clip slack, block alignment). Real features, not random noise,
which does not compress.

    python bench/storage.py --small
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

import _common as C

log = logging.getLogger("bench.storage")
TRACK = "audio"


def frame_array_bytes(store: Path) -> tuple[int, int, tuple[int, ...]]:
    """(bytes of the frames array on disk, valid frame values, array shape)."""
    from avsuperb import schemas as S
    from avsuperb.store.backend import open_backend

    b = open_backend(store, "r")
    try:
        lengths = np.asarray(b.read(S.lengths_path(TRACK)), dtype=np.int64)
        shape = b.shape(S.frames_path(TRACK))
        if b.kind == "zarr":
            nbytes = C.file_bytes(store / TRACK / "frames")
        else:
            nbytes = int(b._file[S.frames_path(TRACK)].id.get_storage_size())  # noqa: SLF001 (bench-only peek)
    finally:
        b.close()
    return nbytes, int(lengths.sum()) * int(np.prod(shape[1:])), tuple(shape)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--small", action="store_true", help="48 clips instead of 120")
    p.add_argument("--clips", type=str, default=None, help="train/dev/test clips of the synthetic corpus")
    p.add_argument("--models", type=str, default="fbank,hubert")
    p.add_argument("--backends", type=str, default="zarr,h5")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args(argv)
    C.setup_logging(args.verbose)
    logging.getLogger("avsuperb").setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    clips = args.clips or ("32/8/8" if args.small else "80/20/20")
    n_train, n_dev, n_test = (int(v) for v in clips.split("/"))

    from avsuperb.extract.run import ExtractOptions, run_extraction

    root = C.corpus(n_train, n_dev, n_test)
    checkpoint = C.small_hubert_checkpoint()
    rows = []
    for model in args.models.split(","):
        for backend in args.backends.split(","):
            store = C.fresh(C.BENCH_ROOT / f"storage-{model}-{n_train}-{n_dev}-{n_test}.{backend}")
            log.info("extracting %s into %s", model, store)
            summary = run_extraction(ExtractOptions(model, "synthetic", store, root, checkpoint=checkpoint if model == "hubert" else None,
                                                    frames=True, progress=False))
            assert summary.failed == 0 and summary.pending == 0, summary.line()
            nbytes, values, shape = frame_array_bytes(store)
            per_value = nbytes / values
            rows.append([model, backend, f"{shape[1]} x {shape[2]}", f"{values:,}", f"{nbytes / 2**20:.2f}",
                         f"{values * 4 / 2**20:.2f}", f"{per_value:.3f}", f"{4 / per_value:.2f}x"])
            C.fresh(store)
    C.print_machine()
    print(f"config: synthetic corpus {n_train}/{n_dev}/{n_test} clips; frames arrays float16, Zarr v3 default codec "
          f"(zstd) or HDF5 as the store creates them; valid values only in the denominator")
    C.print_table("frame arrays on disk", ["model", "backend", "layers x dim", "valid values", "frames on disk (MiB)",
                                           "raw float32 (MiB)", "bytes / value", "float32 / stored"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
