"""Bad input to avsuperb-extract and avsuperb-probe: exit code 2, one line on stderr, nothing written.

Every case runs the installed console script in a subprocess (the real entry point, exit code
and stderr), with its working directory inside the test's tmp_path; the whole directory is
hashed before and after, so "nothing written" covers the --out path, temporary siblings,
a default results/ directory and every byte of a store that was already there.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

EXTRACT = "avsuperb-extract"
PROBE = "avsuperb-probe"


# ----------------------------------------------------------------------------------- helpers
def tree_digest(root: Path) -> dict[str, str]:
    """Every path under root (relative) -> sha256 of its bytes ('dir' for directories)."""
    out: dict[str, str] = {}
    for p in sorted(Path(root).rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def has_word(text: str, word: str) -> bool:
    """`word` occurs in text not glued to other word characters (so 'er' is not found in 'error')."""
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text) is not None


def assert_refused(r, prog: str, names: tuple[str, ...] = (), choices: tuple[str, ...] = ()) -> str:
    """Exit 2, exactly one stderr line '<prog>: error: ...' naming `names` and listing `choices`."""
    shown = f"rc={r.returncode}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
    assert r.returncode == 2, shown
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout, shown
    lines = r.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one line on stderr\n{shown}"
    prefix = f"{prog}: error: "
    assert lines[0].startswith(prefix), shown
    message = lines[0][len(prefix) :]
    assert message.strip(), shown
    for name in names:
        assert name in message, f"message does not name {name!r}: {message}"
    for choice in choices:
        assert has_word(message, choice), f"message does not list the choice {choice!r}: {message}"
    assert r.stdout == "", shown
    return message


def make_tiny_store(path: Path, labels: dict[str, list[str]], done_rows: list[int] | None = None) -> Path:
    """A store written directly with StoreWriter: 8 clips (4 train, 2 dev, 2 test), one 4-dim audio
    layer, class labels as given; `done_rows` (default: all) get features, the rest stay pending."""
    from avsuperb.store.table import ClipTable, LabelColumn
    from avsuperb.store.writer import StoreWriter, TrackSpec

    splits = ["train"] * 4 + ["dev"] * 2 + ["test"] * 2
    n = len(splits)
    cols = {name: LabelColumn.encode("class", raw, tuple(sorted(set(raw)))) for name, raw in labels.items()}
    table = ClipTable(ids=[f"clip{i}" for i in range(n)], splits=splits, durations=np.full(n, 1.0), labels=cols)
    writer = StoreWriter.open(
        path,
        upstream={"name": "tiny", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "tiny", "root": str(path.parent), "manifest_sha256": "0" * 64},
        tracks={"audio": TrackSpec(num_layers=1, dim=4, frame_rate=100.0)},
        frames=False,
        table=table,
        block_size=2,
    )
    try:
        rows = list(range(n)) if done_rows is None else list(done_rows)
        writer.plan(rows)
        for row in rows:
            x = np.random.default_rng(row).standard_normal((3, 1, 4)).astype(np.float32)
            writer.put(row, {"audio": x})
        writer.finalize()
    finally:
        writer.close()
    return path


EMOTIONS = ["neu", "hap", "neu", "hap", "neu", "hap", "neu", "hap"]


# ----------------------------------------------------------------------------------- --help
def test_extract_help_lists_models_and_datasets(run_cli, tmp_path):
    r = run_cli(EXTRACT, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for name in ("fbank", "hog", "synthetic"):
        assert has_word(r.stdout, name), r.stdout
    assert tree_digest(tmp_path) == {}


def test_extract_lists_datasets_with_tasks_and_layouts_and_models(run_cli, tmp_path):
    from avsuperb.extract import datasets, upstreams

    r = run_cli(EXTRACT, "--list-datasets", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for name in datasets.available():
        assert f"{name}  [tasks: " in r.stdout
    assert "[tasks: er]" in r.stdout and "EmoEvaluation" in r.stdout and "trainlist01.txt" in r.stdout
    r = run_cli(EXTRACT, "--list-models", cwd=tmp_path)
    assert r.returncode == 0 and all(name in r.stdout for name in upstreams.available())


def test_probe_help_lists_tasks(run_cli, tmp_path):
    r = run_cli(PROBE, "--help", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    for name in ("er", "ar"):
        assert has_word(r.stdout, name), r.stdout
    assert tree_digest(tmp_path) == {}


# ------------------------------------------------------------------------- extract: bad input
# case id -> (arguments after --root/--out are filled in, names in the message, listed choices)
EXTRACT_CASES = {
    "unknown-model": (["--model", "nosuchmodel", "--dataset", "synthetic"], ("nosuchmodel",), ("fbank", "hog")),
    "unknown-dataset": (["--model", "fbank", "--dataset", "nosuchdata"], ("nosuchdata",), ("synthetic",)),
    "track-not-offered": (["--model", "fbank", "--dataset", "synthetic", "--track", "video"], ("video",), ("audio",)),
    "bad-suffix": (["--model", "fbank", "--dataset", "synthetic", "--out", "OUT.txt"], ("OUT.txt",), (".zarr", ".h5")),
    "missing-checkpoint": (["--model", "fbank", "--dataset", "synthetic", "--checkpoint", "no-such-weights.pt"],
                           ("--checkpoint", "no-such-weights.pt"), ()),
    "cuda-without-gpu": (["--model", "fbank", "--dataset", "synthetic", "--device", "cuda"], ("cuda",), ()),
    "block-size-zero": (["--model", "fbank", "--dataset", "synthetic", "--block-size", "0"], ("--block-size",), ()),
    "unknown-track-name": (["--model", "fbank", "--dataset", "synthetic", "--track", "smell"], ("smell",),
                           ("audio", "video", "fusion")),
}


@pytest.mark.parametrize("case", list(EXTRACT_CASES))
def test_extract_refuses_bad_input(case, run_cli, small_corpus, tmp_path):
    args, names, choices = EXTRACT_CASES[case]
    if case == "cuda-without-gpu" and any(Path(d).exists() for d in ("/dev/nvidiactl", "/dev/kfd", "/dev/dxg")):
        import torch  # only where a GPU may be present: importing torch here costs seconds

        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA; --device cuda is valid here")
    out = "OUT.zarr"
    if "--out" in args:
        out = args[args.index("--out") + 1]
    else:
        args = [*args, "--out", out]
    before = tree_digest(tmp_path)
    assert before == {}
    r = run_cli(EXTRACT, *args, "--root", small_corpus, "--no-progress", cwd=tmp_path)
    assert_refused(r, EXTRACT, names, choices)
    assert not (tmp_path / out).exists()
    assert tree_digest(tmp_path) == before, "a refused run left files behind"


def test_extract_refuses_to_append_another_upstream(run_cli, small_corpus, store_copy, tmp_path):
    """A store made with fbank; hog into the same --out is refused and leaves it byte-for-byte as it was."""
    before = tree_digest(tmp_path)
    r = run_cli(EXTRACT, "--model", "hog", "--dataset", "synthetic", "--root", small_corpus,
                "--out", store_copy.name, "--no-progress", cwd=tmp_path)
    message = assert_refused(r, EXTRACT, names=(store_copy.name,))
    assert "fbank" in message and "hog" in message, message
    assert tree_digest(tmp_path) == before, "the refused run changed the existing store"


def test_extract_refuses_to_append_another_upstream_hdf5(run_cli, small_corpus, tmp_path):
    """The same for an HDF5 store (opened for appending before the check)."""
    store = make_tiny_store(tmp_path / "tiny.h5", {"emotion": EMOTIONS})
    before = tree_digest(tmp_path)
    r = run_cli(EXTRACT, "--model", "fbank", "--dataset", "synthetic", "--root", small_corpus,
                "--out", store.name, "--no-progress", cwd=tmp_path)
    message = assert_refused(r, EXTRACT, names=(store.name,))
    assert "tiny" in message and "fbank" in message, message
    assert tree_digest(tmp_path) == before, "the refused run changed the existing store"


# --------------------------------------------------------------------------- probe: bad input
def _probe_refused(run_cli, tmp_path: Path, cache: str, *args: str, names=(), choices=()) -> str:
    """Run the probe in tmp_path with --out RESULT and check that it is refused and wrote nothing."""
    before = tree_digest(tmp_path)
    r = run_cli(PROBE, "--cache", cache, *args, "--out", "RESULT", "--set", "steps=5", "--no-progress", cwd=tmp_path)
    message = assert_refused(r, PROBE, names, choices)
    assert not (tmp_path / "RESULT").exists()
    assert not (tmp_path / "results").exists()
    assert tree_digest(tmp_path) == before, "a refused probe wrote or changed files"
    return message


def test_probe_unknown_task(run_cli, store_copy, tmp_path):
    _probe_refused(run_cli, tmp_path, store_copy.name, "--task", "nosuchtask", names=("nosuchtask",), choices=("er", "ar"))


def test_probe_missing_cache(run_cli, tmp_path):
    _probe_refused(run_cli, tmp_path, "absent.zarr", "--task", "er", names=("absent.zarr",))


def test_probe_cache_is_empty_directory(run_cli, tmp_path):
    (tmp_path / "empty.zarr").mkdir()
    _probe_refused(run_cli, tmp_path, "empty.zarr", "--task", "er", names=("empty.zarr",))


def test_probe_cache_is_directory_without_store_suffix(run_cli, store_copy, tmp_path):
    """A directory (here: a real store renamed) whose name says neither .zarr nor .h5."""
    plain = store_copy.rename(tmp_path / "features")
    _probe_refused(run_cli, tmp_path, plain.name, "--task", "er", names=("features",), choices=(".zarr", ".h5"))


def test_probe_cache_is_foreign_zarr_group(run_cli, tmp_path):
    """A valid Zarr v3 group that avsuperb did not write."""
    import zarr

    g = zarr.open_group(str(tmp_path / "foreign.zarr"), mode="w")
    g.create_array("x", shape=(3,), dtype="int64")
    _probe_refused(run_cli, tmp_path, "foreign.zarr", "--task", "er", names=("foreign.zarr",))


@pytest.mark.parametrize("name", ["plain.zarr", "plain.h5"])
def test_probe_cache_is_plain_file(run_cli, tmp_path, name):
    (tmp_path / name).write_text("not a store\n")
    _probe_refused(run_cli, tmp_path, name, "--task", "er", names=(name,))


def test_probe_track_not_in_store(run_cli, store_copy, tmp_path):
    _probe_refused(run_cli, tmp_path, store_copy.name, "--task", "er", "--track", "video", names=("video",), choices=("audio",))


def test_probe_store_lacks_task_label(run_cli, tmp_path):
    """A store whose clips carry only `emotion`: ar (which learns `action`) is refused naming it."""
    make_tiny_store(tmp_path / "emotion-only.zarr", {"emotion": EMOTIONS})
    message = _probe_refused(run_cli, tmp_path, "emotion-only.zarr", "--task", "ar", names=("action",))
    assert has_word(message, "ar") or "'ar'" in message, message


@pytest.mark.parametrize("suffix, done_rows", [(".zarr", [0, 1]), (".h5", [])], ids=["zarr-first-block-done", "hdf5-nothing-done"])
def test_probe_unfinished_store(run_cli, tmp_path, suffix, done_rows):
    """Extraction stopped early (after the first block, or before any): refused, saying it has not finished."""
    make_tiny_store(tmp_path / f"unfinished{suffix}", {"emotion": EMOTIONS}, done_rows=done_rows)
    message = _probe_refused(run_cli, tmp_path, f"unfinished{suffix}", "--task", "er", names=(f"unfinished{suffix}",))
    assert "finish" in message, message


@pytest.mark.parametrize(
    "assignment, names, choices",
    [
        ("nosuchkey=1", ("nosuchkey",), ("steps", "lrs", "batch_size")),
        ("steps=many", ("steps",), ()),
    ],
)
def test_probe_bad_set(run_cli, store_copy, tmp_path, assignment, names, choices):
    before = tree_digest(tmp_path)
    r = run_cli(PROBE, "--cache", store_copy.name, "--task", "er", "--set", assignment, "--out", "RESULT",
                "--no-progress", cwd=tmp_path)
    assert_refused(r, PROBE, names, choices)
    assert not (tmp_path / "RESULT").exists()
    assert tree_digest(tmp_path) == before


@pytest.mark.parametrize("existing", ["another-upstream", "not-a-result"])
def test_probe_keeps_a_result_that_is_not_its_own(existing, run_cli, store_copy, tmp_path):
    """--out holding another upstream's result (or a file that is no result): refused, the file kept."""
    out = tmp_path / "RESULT"
    out.mkdir()
    other = {"upstream": {"name": "hubert", "checkpoint_sha256": "ab" * 32}, "dataset": "synthetic", "task": "er", "track": "audio"}
    (out / "result.json").write_text(json.dumps(other) if existing == "another-upstream" else "my notes")
    before = tree_digest(tmp_path)
    r = run_cli(PROBE, "--cache", store_copy.name, "--task", "er", "--track", "audio", "--out", "RESULT", "--set", "steps=5",
                "--no-progress", cwd=tmp_path)
    assert_refused(r, PROBE, ("result.json", "hubert" if existing == "another-upstream" else "not an avsuperb result"), ())
    assert tree_digest(tmp_path) == before, "a refused probe wrote or changed files"
