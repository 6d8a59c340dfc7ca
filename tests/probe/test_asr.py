"""ASR task: the character vocabulary, greedy CTC decoding, the BiLSTM head's padding
invariance, streaming reads, and learning a toy store whose frames spell the transcripts."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from avsuperb import schemas as S
from avsuperb.probe import tasks
from avsuperb.probe.config import load_config
from avsuperb.probe.data import TaskData
from avsuperb.probe.run import open_for_task, run_probe
from avsuperb.probe.tasks.asr import (ALPHABET, BLANK, BiLSTM, CharVocab, CTCHead, FrameBatches, greedy_decode, lr_factor,
                                      pooling_factor)
from avsuperb.store.table import ClipTable, LabelColumn
from avsuperb.store.writer import StoreWriter, TrackSpec

HOLD = 3  # frames per character in the toy store
DIM = 32  # toy feature width: one-hot of the character index (28 symbols) in layer 0
LETTERS = "ACEHIKNOST'"  # the toy transcripts' letters (fewer classes: learnt in ~150 steps)


def test_registered() -> None:
    task = tasks.get("asr")
    assert task.label == "transcript" and task.label_kinds == ("text",) and task.frame_level
    assert task.metric("text") == tasks.Metric("cer", False)


def test_vocabulary_round_trip() -> None:
    vocab = CharVocab()
    assert len(vocab) == 29 and vocab.symbols[BLANK] == "<blank>"
    ids = vocab.encode("it's  a cat")
    assert ids == [9, 20, 27, 19, 28, 1, 28, 3, 1, 20]  # I T ' S | A | C A T
    assert BLANK not in ids and vocab.symbols[28] == "|"
    assert vocab.decode(ids) == "IT'S A CAT"
    assert vocab.decode(vocab.encode("A|B c")) == "A B C"  # "|" separates words too


def test_vocabulary_drops_and_counts_foreign_characters() -> None:
    vocab = CharVocab()
    assert vocab.normalise("Héllo, world 42!") == "HLLO|WORLD"
    assert vocab.dropped == {"É": 1, ",": 1, "4": 1, "2": 1, "!": 1}
    assert vocab.normalise(vocab.normalise("x - y")) == "X|Y"


def test_greedy_decoding_collapses_repeats_and_drops_blanks() -> None:
    vocab = CharVocab()
    h, i, a, sep = (ALPHABET.index(c) + 1 for c in "HIA|")
    paths = [
        [BLANK, h, h, BLANK, i, i, sep, sep, BLANK, a, BLANK, a, sep, BLANK],
        [a, a, h, BLANK, h, i, i, i, i, i, i, i, i, i],  # frames 6+ lie past its length
    ]
    logits = torch.full((2, 14, len(vocab)), -3.0)
    for b, path in enumerate(paths):
        logits[b, torch.arange(14), torch.tensor(path)] = 2.0
    assert greedy_decode(logits, torch.tensor([14, 6]), vocab) == ["HI AA", "AHHI"]


def test_lr_schedule_warms_up_then_decays_to_zero() -> None:
    assert [lr_factor(s, 4, 12) for s in (0, 1, 3, 4, 8, 12)] == [0.25, 0.5, 1.0, 1.0, 0.5, 0.0]
    assert lr_factor(0, 0, 10) == 1.0


def test_bilstm_matches_torch_bidirectional_lstm_on_packed_sequences() -> None:
    torch.manual_seed(0)
    ours = BiLSTM(5, 7)
    ref = nn.LSTM(5, 7, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name, p in ours.forward_lstm.named_parameters():
            getattr(ref, name).copy_(p)
        for name, p in ours.backward_lstm.named_parameters():
            getattr(ref, f"{name}_reverse").copy_(p)
    lengths = torch.tensor([9, 4, 6])
    x = torch.randn(3, 9, 5)
    expected, _ = pad_packed_sequence(ref(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))[0],
                                      batch_first=True, total_length=9)
    torch.testing.assert_close(ours(x, lengths), expected, atol=1e-5, rtol=1e-5)


def test_head_upsamples_and_padding_never_reaches_a_shorter_clip() -> None:
    torch.manual_seed(0)
    head = CTCHead(num_layers=2, dim=6, vocab_size=29, hidden=16, units=8, lstm_layers=2, dropout=0.2, upsample=3).eval()
    long, short = torch.randn(1, 10, 2, 6), torch.randn(1, 4, 2, 6)
    with torch.no_grad():
        alone, alone_len = head(short, torch.tensor([4]))
        batch = torch.randn(2, 10, 2, 6) * 50  # padding that would show if it leaked
        batch[0], batch[1, :4] = long[0], short[0]
        out, out_len = head(batch, torch.tensor([10, 4]))
    assert alone.shape == (1, 12, 29) and out.shape == (2, 30, 29)
    assert alone_len.tolist() == [12] and out_len.tolist() == [30, 12]
    torch.testing.assert_close(out[1, :12], alone[0], atol=1e-5, rtol=1e-5)


def toy_store(path: Path, n_train: int = 160, n_dev: int = 16, n_test: int = 16, seed: int = 0) -> list[str]:
    """Layer 0 spells each transcript (a one-hot of the character index held for HOLD frames,
    silence around it); layer 1 is noise. Transcripts are 1-2 words of 2-4 random letters."""
    rng = np.random.default_rng(seed)
    n = n_train + n_dev + n_test
    letters = np.array(list(LETTERS))
    texts = [" ".join("".join(rng.choice(letters, size=rng.integers(2, 5))) for _ in range(rng.integers(1, 3)))
             for _ in range(n)]
    frames = [HOLD * len(t) + 4 for t in texts]
    table = ClipTable(
        ids=[f"c{i:03d}" for i in range(n)],
        splits=["train"] * n_train + ["dev"] * n_dev + ["test"] * n_test,
        durations=np.array(frames) / 25.0,
        labels={"transcript": LabelColumn.encode("text", [t.lower() for t in texts])},
    )
    writer = StoreWriter.open(
        path,
        upstream={"name": "toy", "config": {}, "checkpoint_sha256": None},
        dataset={"name": "toyasr", "root": "/nowhere", "manifest_sha256": "0" * 64},
        tracks={"audio": TrackSpec(num_layers=2, dim=DIM, frame_rate=25.0)},
        frames=True,
        table=table,
        block_size=8,
    )
    writer.plan(list(range(n)))
    for row, text in enumerate(texts):
        x = np.zeros((frames[row], 2, DIM), dtype=np.float32)
        x[:, 1] = 0.5 * rng.standard_normal((frames[row], DIM))
        for j, c in enumerate(text.replace(" ", "|")):
            x[2 + HOLD * j : 2 + HOLD * (j + 1), 0, ALPHABET.index(c)] = 4.0
        writer.put(row, {"audio": x})
    writer.finalize()
    writer.close()
    return texts


def whole_clips(index: object, offsets: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """The clips a frame read covers; fails unless it reads exactly those clips' frames."""
    assert isinstance(index, (slice, np.ndarray)), index  # never the whole array
    index = np.arange(index.start, index.stop) if isinstance(index, slice) else np.asarray(index)
    rows = np.unique(np.searchsorted(offsets, index, side="right") - 1)
    np.testing.assert_array_equal(np.sort(index), np.concatenate([np.arange(offsets[r], offsets[r] + lengths[r]) for r in rows]))
    return rows


@pytest.mark.parametrize("suffix", [".zarr", ".h5"])
def test_batches_hold_each_clips_frames_zero_padded_within_a_bounded_cache(tmp_path: Path, suffix: str) -> None:
    store = tmp_path / f"toy{suffix}"
    toy_store(store, n_train=10, n_dev=3, n_test=3)
    with open_for_task(store, tasks.get("asr")) as reader:
        data = TaskData(reader, "audio", reader.table(["transcript"]), None, {}, False)  # type: ignore[arg-type]
        source = FrameBatches(data, cache_bytes=2000)
        for rows in (np.array([3, 0, 7]), np.array([7, 12, 3, 1])):
            x, lengths = source.load(rows)
            assert x.dtype == torch.float16 and x.shape[0] == len(rows) and x.shape[1] == int(lengths.max())
            for i, r in enumerate(rows):
                expected = reader.frames("audio", int(r))
                assert int(lengths[i]) == len(expected)
                np.testing.assert_array_equal(x[i, : len(expected)].numpy(), expected)
                assert not x[i, len(expected) :].any()
            assert 0 < source._cached <= 2000


def test_head_pools_frames_without_letting_padding_in() -> None:
    """downsample k: the connector's output averaged over each k valid frames (a last, partial group
    averages what it has); output lengths ceil(T / k) x upsample; padding never changes a clip."""
    torch.manual_seed(0)
    head = CTCHead(num_layers=2, dim=6, vocab_size=29, hidden=16, units=8, dropout=0.0, upsample=2, downsample=4).eval()
    short = torch.randn(1, 10, 2, 6)
    with torch.no_grad():
        h = head.projector(head.featurizer(short))
        groups = [h[0, i : i + 4].mean(0) for i in range(0, 10, 4)]  # 4 + 4 + 2 frames
        torch.testing.assert_close(head._pool(h, torch.ones(1, 10, dtype=torch.bool))[0], torch.stack(groups))
        alone, alone_len = head(short, torch.tensor([10]))
        batch = torch.randn(2, 17, 2, 6) * 50
        batch[1, :10] = short[0]
        out, out_len = head(batch, torch.tensor([17, 10]))
    assert alone_len.tolist() == [6] and out_len.tolist() == [10, 6] and out.shape == (2, 10, 29)
    torch.testing.assert_close(out[1, :6], alone[0], atol=1e-5, rtol=1e-5)
    assert pooling_factor(100.0, 25.0) == 4 and pooling_factor(25.0, 25.0) == 1 and pooling_factor(30.0, 25.0) == 1
    assert pooling_factor(100.0, 0.0) == 1 and pooling_factor(0.0, 25.0) == 1  # off, or a fixed-length track


def test_standardize_uses_the_train_moments_and_keeps_padding_zero() -> None:
    from avsuperb.probe.tasks.asr import frame_moments

    rng = np.random.default_rng(0)
    frames = rng.normal(3.0, 5.0, size=(500, 2, 6))
    stats = {"count": np.array([500]), "sum": frames.sum(0), "sumsq": np.square(frames).sum(0)}
    mean, std = frame_moments(stats, 2, 6)
    np.testing.assert_allclose(mean, frames.mean(0), atol=1e-9)
    np.testing.assert_allclose(std, frames.std(0), atol=1e-9)
    with pytest.raises(tasks.TaskError, match="train statistics"):
        frame_moments({}, 2, 6)

    torch.manual_seed(0)
    head = CTCHead(num_layers=2, dim=6, vocab_size=29, hidden=16, units=8, dropout=0.0, upsample=1).eval()
    plain = copy.deepcopy(head)
    head.shift.copy_(torch.from_numpy(mean).float())
    head.scale.copy_(torch.from_numpy(1 / std).float())
    x = torch.from_numpy(frames[:10]).float()[None]
    padded = torch.cat([x, torch.full((1, 5, 2, 6), 7.0)], dim=1)
    with torch.no_grad():
        out, _ = head(padded, torch.tensor([10]))
        ref, _ = plain((x - head.shift) * head.scale, torch.tensor([10]))
    torch.testing.assert_close(out[:, :10], ref, atol=1e-5, rtol=1e-5)


def test_learns_transcripts_from_frames_reading_only_batches(tmp_path: Path) -> None:
    store = tmp_path / "toy.zarr"
    toy_store(store)
    cfg = load_config("asr", None, ["lrs=1e-2,1e-5", "steps=200", "eval_every=50", "patience=3", "batch_size=16",
                                    "warmup_steps=0", "lstm_units=64", "dropout=0.0"])
    with open_for_task(store, tasks.get("asr")) as reader:
        offsets, lengths = reader.backend.read(S.offsets_path("audio")), reader.backend.read(S.lengths_path("audio"))
        reads: list[object] = []
        read = reader.backend.read

        def spy(name: str, rows: slice | np.ndarray | None = None) -> np.ndarray:
            reads.append((name, rows))
            return read(name, rows)

        reader.backend.read = spy  # type: ignore[method-assign]
        result = run_probe(store, "asr", "audio", cfg, tmp_path / "out", progress=False, reader=reader, device="cpu")

    frame_reads = [rows for name, rows in reads if name == S.frames_path("audio")]
    assert frame_reads and all(len(whole_clips(index, offsets, lengths)) <= 32 for index in frame_reads)
    assert result["metric"] == {"name": "cer", "higher_is_better": False}
    assert result["test_score"] < 30.0, result  # measured 7.4 (margin 22); chance (no output) is 100
    assert 0 <= result["wer"] <= 100 and result["dev_cer"] == pytest.approx(100 - result["dev_scores"]["0.01"])
    assert set(result["dev_scores"]) == {"0.01", "1e-05"} and result["chosen_lr"] == 0.01
    assert result["dev_scores"]["0.01"] > result["dev_scores"]["1e-05"]
    weights = result["layer_weights"]
    assert len(weights) == 2 and weights[0] > 0.6, weights  # the informative layer; measured 0.81 (margin 0.2)
    assert json.loads((tmp_path / "out" / "result.json").read_text())["task"] == "asr"


def test_runs_end_to_end_on_the_synthetic_fbank_store(fbank_zarr: Path, tmp_path: Path) -> None:
    """The synthetic demo config (fewer steps to keep this fast) on the small corpus's FBANK store."""
    cfg = load_config("asr", "synthetic", ["steps=10", "eval_every=10"])
    assert cfg.lstm_units == 64 and len(cfg.lrs) == 2 and cfg.pool_to_hz == 25
    result = run_probe(fbank_zarr, "asr", "audio", cfg, tmp_path, progress=False, device="cpu")
    assert result["task"] == "asr" and result["dataset"] == "synthetic"
    assert math.isfinite(result["test_score"]) and result["test_score"] >= 0
    assert result["splits"] == {"train": 24, "dev": 8, "test": 8, "dev_carved_from_train": False}
    assert result["layer_weights"] == [1.0]
    S.validate("result", json.loads((tmp_path / "result.json").read_text()))
