"""Shared helpers of the benchmark scripts: the synthetic corpus, a small random HuBERT
checkpoint, the machine description, timing and the printed table.

Not part of the package: `python bench/NAME.py` puts bench/ on sys.path, so the scripts
import this module as `_common`.
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

log = logging.getLogger("bench")

BENCH_ROOT = Path(os.environ.get("AVSUPERB_BENCH_DIR", "/tmp/avsuperb-bench"))

# A HuBERT-shaped network, smaller than Base so that it runs in seconds on two CPU cores: the
# Base conv feature extractor's kernels and strides (hop 320 samples: 50 frames/s at 16 kHz)
# with 128 channels instead of 512, and a 4-layer post-LN transformer of width 256 (4 heads,
# FFN 1024) instead of 12 layers of 768. Outputs 5 layers (input + 4) x 256 at 50 Hz.
SMALL_HUBERT = {
    "conv": [(128, 10, 5)] + [(128, 3, 2)] * 4 + [(128, 2, 2)] * 2,
    "embed_dim": 256,
    "num_layers": 4,
    "num_heads": 4,  # what a config-less torchaudio state dict implies for 256 dims (one head per 64)
    "ffn_dim": 1024,
    "pos_conv_kernel": 128,
    "pos_conv_groups": 16,
}


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("numcodecs", "zarr", "asyncio", "fsspec", "h5py"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def machine() -> dict[str, str]:
    """CPU model, cores, RAM, Python and torch versions."""
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                ram = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                break
    except OSError:
        pass
    import torch

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count()),
        "ram": ram,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch threads": str(torch.get_num_threads()),
    }


def corpus(n_train: int, n_dev: int, n_test: int, seed: int = 0) -> Path:
    """The synthetic corpus of this size, rendered once under BENCH_ROOT and reused."""
    from avsuperb.extract.datasets.synthetic_gen import SyntheticSpec, generate

    root = BENCH_ROOT / f"synthetic-{n_train}-{n_dev}-{n_test}-s{seed}"
    if not (root / "manifest.json").is_file():
        if root.exists():
            shutil.rmtree(root)
        log.info("rendering the synthetic corpus (%d/%d/%d clips) into %s", n_train, n_dev, n_test, root)
        generate(root, SyntheticSpec(seed=seed, n_train=n_train, n_dev=n_dev, n_test=n_test), progress=False)
    return root


def small_hubert_checkpoint(path: Path | None = None, seed: int = 0) -> Path:
    """Write a randomly initialised small HuBERT as a torchaudio-format state dict (the form of
    torchaudio's hubert_fairseq_base_ls960.pth: torchaudio parameter names, weight norm as
    weight_g / weight_v, no config), which the `hubert` upstream loads and infers the
    architecture from."""
    import torch
    from torchaudio.models import wav2vec2_model

    path = path or BENCH_ROOT / f"small_hubert_s{seed}.pth"
    if path.is_file():
        return path
    c = SMALL_HUBERT
    torch.manual_seed(seed)
    model = wav2vec2_model(
        extractor_mode="group_norm",
        extractor_conv_layer_config=c["conv"],
        extractor_conv_bias=False,
        encoder_embed_dim=c["embed_dim"],
        encoder_projection_dropout=0.0,
        encoder_pos_conv_kernel=c["pos_conv_kernel"],
        encoder_pos_conv_groups=c["pos_conv_groups"],
        encoder_num_layers=c["num_layers"],
        encoder_num_heads=c["num_heads"],
        encoder_attention_dropout=0.0,
        encoder_ff_interm_features=c["ffn_dim"],
        encoder_ff_interm_dropout=0.0,
        encoder_dropout=0.0,
        encoder_layer_norm_first=False,
        encoder_layer_drop=0.0,
        aux_num_out=None,
    ).eval()
    with torch.no_grad():  # norms start as identities; perturb them so every parameter matters
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(0.3 * torch.randn_like(p))
    state = {}
    for k, v in model.state_dict().items():  # parametrized weight norm -> the released bundles' weight_g / weight_v
        k = k.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1", "weight_v")
        state[k] = v.clone()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def dir_bytes(path: Path) -> int:
    """Bytes on disk (allocated blocks) of a file or a directory tree."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def file_bytes(path: Path) -> int:
    """Apparent size (sum of file lengths) of a file or a directory tree."""
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@contextmanager
def timer() -> Iterator[list[float]]:
    """with timer() as t: ...; t[0] is the wall time in seconds."""
    out: list[float] = []
    start = time.perf_counter()
    try:
        yield out
    finally:
        out.append(time.perf_counter() - start)


def fresh(path: Path) -> Path:
    """Remove a previous run's output at `path`."""
    path = Path(path)
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
    return path


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """A plain Markdown table on stdout (the scripts' output; logging goes to stderr)."""
    cells = [[str(h) for h in header]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |")


def print_machine() -> None:
    m = machine()
    print("machine: " + "; ".join(f"{k} {v}" for k, v in m.items()))
