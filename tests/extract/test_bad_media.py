"""Bad media in an extraction run, and --max-failures.

One run per model over a manifest of good clips and one of each kind of bad file: every clip ends
done (as README "Bad media" documents) or failed with a reason naming the problem, and the run goes
on. Then --max-failures: stopping at a count and at a fraction (not before MIN_CLIPS_FOR_FRACTION
clips), not stopping at the limit itself, counting per process with --shard, bad values refused,
and a re-run with a higher limit resuming to completion.
"""

from __future__ import annotations

import sys
import wave
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "datasets"))
from fake_media import write_media  # noqa: E402

from avsuperb import schemas as S  # noqa: E402
from avsuperb.extract.run import MIN_CLIPS_FOR_FRACTION, ExtractOptions, run_extraction  # noqa: E402
from avsuperb.store import open_backend  # noqa: E402

EXTRACT = "avsuperb-extract"


@pytest.fixture(autouse=True)
def private_probe_cache(tmp_path, monkeypatch):
    """Media probes are cached under $AVSUPERB_CACHE: keep them in this test's folder."""
    monkeypatch.setenv("AVSUPERB_CACHE", str(tmp_path / "avsuperb-cache"))


def clip_states(out: Path) -> dict[str, tuple[str, str]]:
    """{clip id: (status, reason)} of a store."""
    b = open_backend(out, "r")
    try:
        names = {S.STATUS_DONE: "done", S.STATUS_FAILED: "failed", S.STATUS_PENDING: "pending"}
        return {str(i): (names[int(s)], str(r)) for i, s, r in
                zip(b.read(S.CLIP_ID), b.read(S.CLIP_STATUS), b.read(S.CLIP_REASON))}
    finally:
        b.close()


def write_csv(path: Path, rows: list[tuple[str, str, str, str]]) -> Path:
    """A manifest of (id, path, start, duration) rows; an empty duration is read from the file's header."""
    path.write_text("id,path,start,duration\n" + "".join(",".join(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------- bad media
@pytest.fixture(scope="module")
def bad_media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("bad-media")
    write_media(d / "good.mkv", 1.0)  # PCM audio
    write_media(d / "good.avi", 1.0)
    (d / "empty.mp4").write_bytes(b"")
    whole = write_media(d / "whole.mkv", 4.0).read_bytes()
    (d / "cut.mkv").write_bytes(whole[: len(whole) // 2])  # header says 4 s, data stops at 2 s
    whole = write_media(d / "whole.mp4", 2.0).read_bytes()
    (d / "cut.mp4").write_bytes(whole[: len(whole) // 2])  # mp4's index is at the end: lost
    (d / "random.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    (d / "text.mp4").write_text("this is not a video\n" * 50)
    with wave.open(str(d / "wav.mp4"), "wb") as w:  # a WAV file named .mp4
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((3000 * np.sin(np.arange(16000) / 3)).astype(np.int16).tobytes())
    write_media(d / "no_audio.mkv", 1.0, audio=False)
    write_media(d / "no_video.mkv", 1.0, video=False)
    write_media(d / "short.mkv", 0.02)  # 20 ms: 320 samples, no whole video frame
    write_media(d / "long.mkv", 600.0, fps=1)  # 10 minutes, 32x32 at 1 fps, PCM
    return d


OPENS = "cannot open media: Invalid data found"
# id: (file, start, duration ("": from the header), fbank (audio) outcome, hog (video) outcome); outcome: "done" or
# a fragment of the failure reason
CASES = {
    "good_mkv": ("good.mkv", "", "", "done", "done"),
    "good_avi": ("good.avi", "", "", "done", "done"),
    "empty": ("empty.mp4", "", "1", "empty file (0 bytes)", "empty file (0 bytes)"),
    "truncated_mkv": ("cut.mkv", "", "", "truncated file: its data stops at 2.00 s, though its header declares 4.00 s",
                      "truncated file"),
    "truncated_mp4": ("cut.mp4", "", "1", OPENS, OPENS),
    "random_bytes": ("random.mp4", "", "1", OPENS, OPENS),
    "text_file": ("text.mp4", "", "1", OPENS, OPENS),
    "wav_named_mp4": ("wav.mp4", "", "", "done", "no video stream"),
    "no_audio": ("no_audio.mkv", "", "", "no audio stream", "done"),
    "no_video": ("no_video.mkv", "", "", "done", "no video stream"),
    "short": ("short.mkv", "", "", "audio of 320 samples is shorter than one 25 ms frame",
              "clip of 0.020 s is shorter than one video frame at 25 fps"),
    "long": ("long.mkv", "", "", "done", "done"),
}
UNREADABLE = ("unreadable_header", "random.mp4", "", "")  # no duration given, header unreadable: left out of the index


@pytest.mark.parametrize("model", ["fbank", "hog"])
def test_every_bad_file_is_done_or_failed_with_its_reason_and_the_run_goes_on(bad_media, tmp_path, model):
    rows = [(cid, str(bad_media / f), start, dur) for cid, (f, start, dur, _, _) in CASES.items()]
    if model == "hog":  # HoG on all 10 minutes takes half a minute: its last 2 s (a seek deep into the file) instead
        rows[list(CASES).index("long")] = ("long", str(bad_media / "long.mkv"), "598", "2")
    manifest = write_csv(tmp_path / "manifest.csv", rows + [(UNREADABLE[0], str(bad_media / UNREADABLE[1]), "", "")])
    out = tmp_path / f"{model}.zarr"
    # hog: decoded in a worker process, 3 clips per batch, so failures cross both paths
    opts = ExtractOptions(model, "manifest", out, manifest, progress=False, block_size=4,
                          decode_workers=1 if model == "hog" else 0, batch_size=3 if model == "hog" else 1)
    summary = run_extraction(opts)

    expected = {cid: case[3 if model == "fbank" else 4] for cid, case in CASES.items()}
    states = clip_states(out)
    assert set(states) == set(CASES)  # the unreadable-header row is left out at indexing, not stored
    for cid, want in expected.items():
        status, reason = states[cid]
        if want == "done":
            assert (status, reason) == ("done", ""), (cid, reason)
        else:
            assert status == "failed" and want in reason, (cid, status, reason)
            assert "Traceback" not in reason and "\n" not in reason
    n_done = sum(w == "done" for w in expected.values())
    assert (summary.total, summary.done, summary.failed, summary.pending) == (len(CASES), n_done, len(CASES) - n_done, 0)
    assert summary.extracted == len(CASES) and not summary.stopped and not summary.interrupted
    assert f"complete; {len(CASES)} clips processed in this run, {n_done}/{len(CASES)} done" in summary.line()

    b = open_backend(out, "r")
    ids = list(b.read(S.CLIP_ID))
    track = "audio" if model == "fbank" else "video"
    pooled = b.read(S.pooled_path(track))
    durations = b.read(S.CLIP_DURATION)
    assert b.get_attr(S.ROOT_ATTR)["complete"]
    b.close()
    for cid in ids:  # (HoG of the test media's flat grey frames is zero: only fbank's done clips are surely not)
        if model == "fbank" or expected[cid] != "done":
            assert (np.abs(pooled[ids.index(cid)]).sum() > 0) == (expected[cid] == "done"), cid
    assert durations[ids.index("long")] == pytest.approx(600.0 if model == "fbank" else 2.0, abs=0.05)


def test_header_probe_names_an_empty_file(bad_media):
    from avsuperb.extract.media import MediaError, probe

    with pytest.raises(MediaError, match=r"^empty file \(0 bytes\)$"):
        probe(bad_media / "empty.mp4")


# ----------------------------------------------------------------------------- --max-failures
N_CLIPS, BAD = 24, (3, 7, 11, 15, 19, 23)  # clip k is unreadable when k is in BAD


@pytest.fixture(scope="module")
def flaky_manifest(tmp_path_factory) -> Path:
    """24 clips of 0.3 s in store order, 6 of them (every 4th) random bytes."""
    d = tmp_path_factory.mktemp("flaky")
    write_media(d / "ok.mkv", 0.3, video=False)
    (d / "bad.mp4").write_bytes(np.random.default_rng(1).integers(0, 256, 3000, dtype=np.uint8).tobytes())
    return write_csv(d / "manifest.csv", [(f"c{k:02d}", "bad.mp4" if k in BAD else "ok.mkv", "", "0.3") for k in range(N_CLIPS)])


def flaky_run(manifest: Path, out: Path, max_failures, shard=(0, 1)):
    return run_extraction(ExtractOptions("fbank", "manifest", out, manifest, progress=False, block_size=4,
                                         max_failures=max_failures, shard=shard))


def test_cli_stops_at_a_count_and_a_rerun_with_a_higher_limit_resumes(flaky_manifest, run_cli, tmp_path):
    out = tmp_path / "s.zarr"
    r = run_cli(EXTRACT, "--model", "fbank", "--dataset", "manifest", "--root", flaky_manifest, "--out", out,
                "--block-size", 4, "--decode-workers", 0, "--no-progress", "--max-failures", 2, timeout=180)
    shown = f"rc={r.returncode}\n--- stderr\n{r.stderr}"
    assert r.returncode == 2, shown
    assert "Traceback" not in r.stderr, shown
    last = r.stderr.splitlines()[-1]
    assert last.startswith("avsuperb-extract: stopping: 3 of 12 clips failed in this run, over --max-failures 2 "
                           "(first reason: cannot open media: Invalid data found"), shown
    assert last.endswith("; fix the inputs or raise --max-failures, then re-run to resume"), shown
    assert sum("stopping:" in line for line in r.stderr.splitlines()) == 1, shown
    assert "stopped; 12 clips processed in this run, 9/24 done, 3 failed, 12 pending" in r.stderr, shown

    states = clip_states(out)  # the finished clips are flushed; the rest stay pending
    assert [states[f"c{k:02d}"][0] for k in range(N_CLIPS)] == (
        ["failed" if k in BAD else "done" for k in range(12)] + ["pending"] * 12)
    b = open_backend(out, "r")
    assert not b.get_attr(S.ROOT_ATTR)["complete"]
    b.close()

    summary = flaky_run(flaky_manifest, out, 10)  # failed clips are retried: 3 + 12 processed, 6 failed <= 10
    assert not summary.stopped and summary.extracted == 15
    assert (summary.done, summary.failed, summary.pending) == (18, 6, 0) and "complete" in summary.line()


def test_a_fraction_is_judged_only_from_the_minimum_number_of_clips_on(flaky_manifest, tmp_path):
    assert MIN_CLIPS_FOR_FRACTION == 20
    summary = flaky_run(flaky_manifest, tmp_path / "s.zarr", 0.1)  # 1 of 4 (25%) failed early on: no stop before 20
    assert summary.stopped.startswith("stopping: 5 of 20 clips failed in this run, over --max-failures 10% (first reason: ")
    assert (summary.done, summary.failed, summary.pending) == (15, 5, 4) and "stopped" in summary.line()


@pytest.mark.parametrize("limit", [6, 0.25])
def test_failures_at_the_limit_do_not_stop(flaky_manifest, tmp_path, limit):
    summary = flaky_run(flaky_manifest, tmp_path / "s.zarr", limit)  # 6 of 24: equal to, not over, either limit
    assert not summary.stopped and (summary.done, summary.failed, summary.pending) == (18, 6, 0)


def test_with_shards_the_count_is_per_process(flaky_manifest, tmp_path):
    out = tmp_path / "s.zarr"
    first = flaky_run(flaky_manifest, out, None, shard=(0, 2))  # clips 0-11: 3 failures, no limit
    assert not first.stopped and first.failed == 3
    second = flaky_run(flaky_manifest, out, 1, shard=(1, 2))  # clips 12-23: stops at its own 2nd failure (c19)
    assert second.stopped.startswith("stopping: 2 of 8 clips failed in this run, over --max-failures 1 ")
    assert (second.done, second.failed, second.pending) == (15, 5, 4)


@pytest.mark.parametrize("value, parsed", [("50", 50), ("0", 0), ("0.1", 0.1), ("10%", 0.1), ("100%", 1.0)])
def test_max_failures_values(value, parsed):
    from avsuperb.cli import extract_cmd

    ctx = extract_cmd.make_context(EXTRACT, ["--model", "fbank", "--dataset", "manifest", "--out", "x.zarr",
                                             "--max-failures", value])
    assert ctx.params["max_failures"] == pytest.approx(parsed) and type(ctx.params["max_failures"]) is type(parsed)


@pytest.mark.parametrize("value", ["abc", "-1", "150%"])
def test_bad_max_failures_is_a_usage_error(value, run_cli, tmp_path):
    r = run_cli(EXTRACT, "--model", "fbank", "--dataset", "manifest", "--root", tmp_path, "--out", tmp_path / "s.zarr",
                "--max-failures", value, cwd=tmp_path, timeout=120)
    lines = r.stderr.splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith("avsuperb-extract: error: Invalid value for '--max-failures': ") and repr(value) in lines[0]
    assert not (tmp_path / "s.zarr").exists()
