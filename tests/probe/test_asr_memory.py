"""ASR probing streams its frames: its peak memory does not grow with the frame store's size.

Two stores that differ only in their number of training clips (4x) are probed the same way,
each in a fresh process; their peak RSS above the baseline must differ by far less than the
stores do. (The growth itself, a few hundred MB of allocator arenas, zarr's decode threads and
prefetched batches, is the same for both; bench/asr_memory.py measures it on larger stores.)"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from avsuperb.store.table import ClipTable, LabelColumn
from avsuperb.store.writer import StoreWriter, TrackSpec

FRAMES, LAYERS, DIM = 100, 2, 512  # 205 kB of float16 frames per clip
SMALL, LARGE = 300, 1200  # training clips (plus 100 dev and 100 test)
CACHE_MB = 8  # the probe's clip cache, shrunk from its default (256) so that it does not fill the budget

SCRIPT = r"""
import json, sys
from pathlib import Path
import torch
from avsuperb.probe.config import load_config
from avsuperb.probe.run import run_probe

def status(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field))

lstm = torch.nn.LSTM(8, 8, batch_first=True)  # warm up the kernels before the baseline
lstm(torch.zeros(2, 5, 8))[0].sum().backward()
cfg = load_config("asr", None, ["lrs=1e-3", "steps=8", "eval_every=8", "batch_size=8", "hidden=16",
                                "lstm_units=16", "warmup_steps=0", "upsample=1", f"frame_cache_mb={sys.argv[3]}"])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # peak RSS := current RSS
base = status("VmRSS")
run_probe(Path(sys.argv[1]), "asr", "audio", cfg, Path(sys.argv[2]), progress=False, device="cpu")
print(json.dumps({"base": base, "peak": status("VmHWM")}))
"""


def frame_store(path: Path, n_train: int) -> int:
    """A frame store of n_train + 200 clips of noise; returns its frame bytes."""
    rng = np.random.default_rng(0)
    splits = ["train"] * n_train + ["dev"] * 100 + ["test"] * 100
    CLIPS = len(splits)
    table = ClipTable(
        ids=[f"c{i:04d}" for i in range(CLIPS)], splits=splits, durations=np.full(CLIPS, FRAMES / 25.0),
        labels={"transcript": LabelColumn.encode("text", [f"WORD {i % 7}" for i in range(CLIPS)])},
    )
    writer = StoreWriter.open(
        path, upstream={"name": "toy", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "toyasr", "root": "/nowhere", "manifest_sha256": "0" * 64},
        tracks={"audio": TrackSpec(LAYERS, DIM, 25.0)}, frames=True, table=table, block_size=32,
    )
    writer.plan(list(range(CLIPS)))
    block = rng.standard_normal((FRAMES, LAYERS, DIM)).astype(np.float32)
    for row in range(CLIPS):
        writer.put(row, {"audio": np.roll(block, row, axis=0)})
    writer.finalize()
    writer.close()
    return CLIPS * FRAMES * LAYERS * DIM * 2


def peak_growth(store: Path, out: Path) -> int:
    r = subprocess.run([sys.executable, "-c", SCRIPT, str(store), str(out), str(CACHE_MB)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["peak"] - got["base"]


def test_asr_peak_memory_does_not_grow_with_the_frame_store(tmp_path):
    sizes, growth = {}, {}
    for n in (SMALL, LARGE):
        store = tmp_path / f"s{n}.zarr"
        sizes[n] = frame_store(store, n)
        growth[n] = peak_growth(store, tmp_path / f"out{n}")
        shutil.rmtree(store)
    extra = sizes[LARGE] - sizes[SMALL]
    mib = {n: f"{g / 2**20:.0f}" for n, g in growth.items()}
    assert growth[LARGE] - growth[SMALL] < extra / 4, f"peak growth {mib} MiB for stores of {sizes} bytes"
