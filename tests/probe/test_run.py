"""probe.run on a toy multi-layer store: folds, determinism, layer contributions and analysis."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from avsuperb.probe.config import load_config
from avsuperb.probe.run import run_probe
from avsuperb.report.analyze import run_analyze
from avsuperb.store.reader import StoreReader
from avsuperb.store.table import ClipTable, LabelColumn
from avsuperb.store.writer import StoreWriter, TrackSpec

LAYERS, DIM = 4, 6


def toy_store(path: Path, n=120, sessions=3, scale=(1.0, 4.0, 1.0, 0.5)) -> Path:
    """Layer 1 carries the emotion class; layers differ in scale, so L2 norms differ."""
    rng = np.random.default_rng(0)
    emotion = rng.integers(0, 3, n)
    session = np.arange(n) % sessions
    splits = np.where(np.arange(n) % 5 == 0, "test", np.where(np.arange(n) % 5 == 1, "dev", "train"))
    table = ClipTable(
        ids=[f"u{i:03d}" for i in range(n)],
        splits=list(splits),
        durations=np.full(n, 1.0),
        labels={
            "emotion": LabelColumn("class", emotion, ("neu", "hap", "sad")),
            "session": LabelColumn("class", session, tuple(f"Session{s + 1}" for s in range(sessions))),
        },
    )
    w = StoreWriter.open(
        path, upstream={"name": "toy", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "toyset", "root": "/", "manifest_sha256": "0" * 64},
        tracks={"audio": TrackSpec(LAYERS, DIM, 10.0)}, frames=False, table=table, block_size=32,
    )
    w.plan(list(range(n)))
    for i in range(n):
        x = rng.standard_normal((8, LAYERS, DIM)).astype(np.float32) * np.asarray(scale, np.float32)[None, :, None]
        x[:, 1, emotion[i]] += 6.0
        w.put(i, {"audio": x})
    w.finalize()
    w.close()
    return path


def small_cfg(*extra):
    return load_config("er", None, ["steps=400", "eval_every=50", "patience=4", *extra])


def test_probe_learns_and_records_layer_contributions(tmp_path):
    store = toy_store(tmp_path / "toy.zarr")
    r = run_probe(store, "er", "audio", small_cfg(), tmp_path / "out", progress=False, device="cpu")
    assert r["test_score"] >= 90  # measured 100 (margin 10); chance 33
    assert r["dev_scores"][f"{r['chosen_lr']:g}"] == max(r["dev_scores"].values())
    weights = np.array(r["layer_weights"])
    assert np.argmax(weights) == 1 and abs(weights.sum() - 1) < 1e-6
    with StoreReader(store) as reader:
        l2 = reader.stats("audio")["l2_mean"]
    expected = weights * l2 / np.sum(weights * l2)
    np.testing.assert_allclose(r["layer_contributions"], expected, rtol=1e-6)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["test_score"] == r["test_score"]


def test_same_seed_same_result_file(tmp_path):
    store = toy_store(tmp_path / "toy.zarr")
    a = run_probe(store, "er", "audio", small_cfg("seed=3"), None, progress=False, device="cpu")
    b = run_probe(store, "er", "audio", small_cfg("seed=3"), None, progress=False, device="cpu")
    c = run_probe(store, "er", "audio", small_cfg("seed=4"), None, progress=False, device="cpu")
    for r in (a, b, c):
        r.pop("created")
    assert a == b
    assert a["layer_weights"] != c["layer_weights"]


def test_leave_one_session_out_folds(tmp_path):
    store = toy_store(tmp_path / "toy.zarr")
    r = run_probe(store, "er", "audio", small_cfg("folds_by='session'", "dev_fraction=0.2"), None, progress=False, device="cpu")
    folds = r["folds"]
    assert [f["fold"] for f in folds] == ["Session1", "Session2", "Session3"]
    assert r["test_score"] == pytest.approx(np.mean([f["test_score"] for f in folds]))
    assert sum(f["splits"]["test"] for f in folds) == 120  # every clip is tested exactly once
    assert all(f["splits"]["train"] + f["splits"]["dev"] == 80 for f in folds)
    assert all(f["test_score"] >= 85 for f in folds)  # measured 100, 97.5, 100 (margin 12)


def test_analyze_reproduces_recorded_contributions_and_draws(tmp_path):
    store = toy_store(tmp_path / "toy.zarr")
    run_probe(store, "er", "audio", small_cfg(), tmp_path / "res" / "er", progress=False, device="cpu")
    recorded = json.loads((tmp_path / "res" / "er" / "result.json").read_text())["layer_contributions"]
    js, png = run_analyze([tmp_path / "res"], tmp_path / "ana")
    items = json.loads(js.read_text())
    assert len(items) == 1
    np.testing.assert_allclose(items[0]["contributions"], recorded, rtol=1e-9)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 2000


def test_report_and_analyze_clis(tmp_path):
    store = toy_store(tmp_path / "toy.zarr")
    run_probe(store, "er", "audio", small_cfg(), tmp_path / "res" / "er", progress=False, device="cpu")
    bindir = Path(sys.executable).parent
    r = subprocess.run([bindir / "avsuperb-report", tmp_path / "res", "--out", tmp_path / "rep"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "toy" in (tmp_path / "rep" / "leaderboard.md").read_text()
    r = subprocess.run([bindir / "avsuperb-analyze", tmp_path / "nothing-here", "--out", tmp_path / "ana"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "nothing-here" in r.stderr
    assert not (tmp_path / "ana").exists()


def test_training_runs_on_the_configured_threads_whatever_the_caller_set(tmp_path, monkeypatch):
    """torch splits reductions (gradients, sums) by its thread count, so a run on another count
    rounds differently and, over training, ends elsewhere. The probe trains on cfg.threads
    (recorded in the result), not on what the machine or OMP_NUM_THREADS gave torch, and restores
    the caller's count afterwards. (bench/determinism.py shows the effect on whole runs.)"""
    import torch

    from avsuperb.probe import tasks

    store = toy_store(tmp_path / "toy.zarr")
    seen = []
    task = tasks.get("er")
    train = task.train
    monkeypatch.setattr(task, "train", lambda *a, **k: (seen.append(torch.get_num_threads()), train(*a, **k))[1])
    before = torch.get_num_threads()
    try:
        for caller, configured in ((2, 1), (1, 1), (1, 2)):
            torch.set_num_threads(caller)
            r = run_probe(store, "er", "audio", small_cfg(f"threads={configured}", "steps=50"), None, progress=False, device="cpu")
            assert seen[-1] == configured and r["config"]["threads"] == configured
            assert torch.get_num_threads() == caller
    finally:
        torch.set_num_threads(before)
