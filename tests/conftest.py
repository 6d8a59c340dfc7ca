"""Session-wide fixtures: one small synthetic corpus and one FBANK store extracted from it.

Both are built once per test session (rendering and extraction are the slow parts), and
tests that might change a store work on a copy of it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

SMALL_SPEC = {"n_train": 24, "n_dev": 8, "n_test": 8}
BLOCK_SIZE = 4  # clips per written block in the shared store (several blocks over 40 clips)


def script(name: str) -> Path:
    """A console script of this package, installed next to the interpreter running the tests."""
    path = Path(sys.executable).with_name(name)
    assert path.exists(), f"console script {name} not found next to {sys.executable}; pip install -e ."
    return path


@pytest.fixture(scope="session")
def cli_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Environment for CLI subprocesses: a private cache, so that nothing lands in ~/.cache."""
    env = dict(os.environ)
    env["AVSUPERB_CACHE"] = str(tmp_path_factory.mktemp("avsuperb-cache"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


@pytest.fixture(scope="session")
def run_cli(cli_env: dict[str, str]) -> Callable[..., subprocess.CompletedProcess[str]]:
    """run_cli("avsuperb-extract", *args, cwd=..., timeout=...) -> CompletedProcess (text, captured)."""

    def run(name: str, *args: object, cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(script(name)), *map(str, args)],
            cwd=cwd,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24/8/8-clip synthetic corpus root (holds manifest.json), rendered once per session."""
    from avsuperb.extract.datasets.synthetic_gen import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("corpus") / "synthetic"
    generate(root, SyntheticSpec(**SMALL_SPEC), progress=False)
    assert (root / "manifest.json").is_file()
    return root


@pytest.fixture(scope="session")
def default_corpus_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The default-size synthetic corpus (what the demo uses), rendered once per session."""
    from avsuperb.extract.datasets.synthetic_gen import SyntheticSpec, generate

    root = tmp_path_factory.mktemp("corpus-default") / "synthetic"
    generate(root, SyntheticSpec(), progress=False)
    return root


@pytest.fixture(scope="session")
def fbank_zarr(tmp_path_factory: pytest.TempPathFactory, small_corpus: Path, run_cli) -> Path:
    """A complete FBANK store of `small_corpus`, made by one uninterrupted run with --block-size 4.

    Shared by the session: never write to it; copy it first (see `copy_store`).
    """
    out = tmp_path_factory.mktemp("fbank") / "fbank.zarr"
    r = run_cli("avsuperb-extract", "--model", "fbank", "--dataset", "synthetic", "--root", small_corpus,
                "--out", out, "--block-size", BLOCK_SIZE, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert out.is_dir()
    return out


def copy_store(src: Path, dst_dir: Path) -> Path:
    """Copy a store (a .zarr directory or an .h5 file) into dst_dir; returns the copy's path."""
    dst = Path(dst_dir) / Path(src).name
    if Path(src).is_dir():
        shutil.copytree(src, dst)
    else:
        shutil.copy2(src, dst)
    return dst


@pytest.fixture
def store_copy(fbank_zarr: Path, tmp_path: Path) -> Path:
    """A private copy of the shared FBANK store, inside this test's tmp_path."""
    return copy_store(fbank_zarr, tmp_path)
