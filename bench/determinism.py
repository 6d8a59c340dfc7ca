"""Does the same command give the same numbers whatever the threads, the load or the CPU?

Each stage is run as the user runs it (the `avsuperb-extract` / `avsuperb-probe` commands, or the
corpus renderer in a child process) under several conditions, and its output is compared bit for
bit with the first condition's:

* threads: OMP_NUM_THREADS / MKL_NUM_THREADS 1 and 2;
* load: 2 threads while another process keeps one core busy;
* another CPU of the same architecture, emulated: the SIMD paths this machine prefers switched
  off (numpy: NPY_DISABLE_CPU_FEATURES for the AVX-512 kernels; torch: ATEN_CPU_CAPABILITY=avx2,
  MKL_ENABLE_INSTRUCTIONS=AVX2, ONEDNN_MAX_CPU_ISA=AVX2), i.e. what an AVX2-only machine computes.

Outputs compared: the rendered corpus (every file's sha256), the FBANK and HoG stores (every
array), and the result.json of an utterance-level probe (er) and of ASR (timestamps aside).

    python bench/determinism.py              # small corpus (24/8/8 clips), a few minutes
    python bench/determinism.py --default    # the demo's corpus (200/60/60), ASR as the demo runs it
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

import _common as C

log = logging.getLogger("bench.determinism")

AVX2_ONLY = {
    "NPY_DISABLE_CPU_FEATURES": "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
}
CONDITIONS: dict[str, dict[str, str]] = {
    "1 thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
    "2 threads, other core busy": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", "BUSY": "1"},
    "AVX2-only CPU (emulated)": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2", **AVX2_ONLY},
}
RENDER = """
import sys
from pathlib import Path
from avsuperb.extract.datasets.synthetic_gen import SyntheticSpec, generate
generate(Path(sys.argv[1]), SyntheticSpec(n_train=int(sys.argv[2]), n_dev=int(sys.argv[3]), n_test=int(sys.argv[4])), progress=False)
"""


def run(cmd: list[str], condition: dict[str, str]) -> None:
    """Run `cmd` with the condition's environment (and a busy loop beside it if asked)."""
    env = {**os.environ, **{k: v for k, v in condition.items() if k != "BUSY"}}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition.get("BUSY") else None
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")


def tool(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def corpus_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    import zarr

    out: dict[str, np.ndarray] = {}
    group = zarr.open_group(str(path), mode="r")

    def visit(g: Any, prefix: str) -> None:
        for name, item in g.members():
            if isinstance(item, zarr.Group):
                visit(item, f"{prefix}{name}/")
            else:
                a = item[...]
                out[prefix + name] = np.array([str(x) for x in a.ravel()], dtype=object) if a.dtype.kind in "OTU" else a

    visit(group, "")
    return out


def differing(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Names whose values differ (or exist on one side only)."""
    names = sorted(set(a) | set(b))
    return [n for n in names if n not in a or n not in b or not np.array_equal(np.asarray(a[n]), np.asarray(b[n]))]


def result_of(path: Path) -> dict[str, Any]:
    r = json.loads(path.read_text())
    r.pop("created", None)
    return r


def compare(stage: str, outputs: dict[str, Any], same: Any, describe: Any) -> list[list[str]]:
    rows = []
    names = list(outputs)
    for name in names:
        diff = same(outputs[names[0]], outputs[name])
        rows.append([stage, name, "identical" if not diff else f"DIFFERS ({diff})", describe(outputs[name])])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--default", action="store_true", help="the demo's corpus size (200/60/60) instead of 24/8/8")
    ap.add_argument("--work", type=Path, default=C.BENCH_ROOT / "determinism")
    args = ap.parse_args()
    C.setup_logging()
    sizes = (200, 60, 60) if args.default else (24, 8, 8)
    shutil.rmtree(args.work, ignore_errors=True)
    args.work.mkdir(parents=True)
    rows: list[list[str]] = []

    corpora = {}
    for name, cond in CONDITIONS.items():
        root = args.work / f"corpus-{len(corpora)}" / "synthetic"
        log.info("rendering the corpus: %s", name)
        run([sys.executable, "-c", RENDER, str(root), *map(str, sizes)], cond)
        corpora[name] = corpus_digest(root)
    rows += compare("corpus", corpora, lambda a, b: len(differing(a, b)) and f"{len(differing(a, b))} files",
                    lambda d: f"{len(d)} files")
    root = args.work / "corpus-0" / "synthetic"

    stores: dict[str, dict[str, Path]] = {"fbank": {}, "hog": {}}
    for model in stores:
        for i, (name, cond) in enumerate(CONDITIONS.items()):
            out = args.work / f"{model}-{i}.zarr"
            log.info("extracting %s: %s", model, name)
            run([tool("avsuperb-extract"), "--model", model, "--dataset", "synthetic", "--root", str(root), "--out", str(out),
                 "--no-progress"], cond)
            stores[model][name] = out
        arrays = {name: store_arrays(p) for name, p in stores[model].items()}
        rows += compare(f"{model} store", arrays, lambda a, b: ", ".join(differing(a, b)[:3]), lambda d: f"{len(d)} arrays")

    for model, track, task in (("fbank", "audio", "er"), ("fbank", "audio", "asr"), ("hog", "video", "asr")):
        results = {}
        for i, (name, cond) in enumerate(CONDITIONS.items()):
            out = args.work / f"{model}-{task}-{i}"
            log.info("probing %s %s: %s", model, task, name)
            run([tool("avsuperb-probe"), "--cache", str(stores[model][next(iter(CONDITIONS))]), "--task", task,
                 "--track", track, "--out", str(out), "--no-progress"], cond)
            results[name] = result_of(out / "result.json")
        rows += compare(f"{model} {task} result", results,
                        lambda a, b: ", ".join(k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)),
                        lambda r: f"test {r['metric']['name']} {r['test_score']:.2f}")

    C.print_machine()
    C.print_table(f"Determinism on the {sizes[0]}/{sizes[1]}/{sizes[2]}-clip synthetic corpus",
                  ["output", "condition", "versus the first condition", "value"], rows)


if __name__ == "__main__":
    main()
