"""Fixtures for the dataset adapter tests: tiny media files and a private probe cache."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import pytest


def _load(name: str):
    """A helper module next to this file (the tests run with --import-mode=importlib, no __init__.py)."""
    spec = importlib.util.spec_from_file_location(f"_avsuperb_tests_{name}", Path(__file__).with_name(f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def write_media() -> Callable[..., Path]:
    """write_media(path, seconds=0.5, *, audio=True, video=True, fps=25, sr=16000, size=32) -> path."""
    return _load("fake_media").write_media


@pytest.fixture
def probe_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Points $AVSUPERB_CACHE at a fresh folder, so probe results land there and nowhere else."""
    cache = tmp_path / "avsuperb-cache"
    monkeypatch.setenv("AVSUPERB_CACHE", str(cache))
    return cache
