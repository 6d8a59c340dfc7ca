"""Speech recognition (LRS3-TED): a BiLSTM-CTC head on frame-level features, greedy CTC
decoding, character error rate % (word error rate alongside).

Unlike the utterance tasks this head reads frames, so it is not trained from the pooled cache
nor vectorised over learning rates: one model is trained per rate, one rate after another,
with batches streamed from the store's frame arrays.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
import queue
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from avsuperb import schemas as S
from avsuperb.probe import metrics
from avsuperb.probe.config import TrainConfig
from avsuperb.probe.data import TaskData
from avsuperb.probe.heads import WeightedSum
from avsuperb.probe.tasks.base import Metric, Outcome, Task, TaskError, register

log = logging.getLogger(__name__)

BLANK = 0
SEPARATOR = "|"
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ'" + SEPARATOR  # token ids 1..28; 0 is the CTC blank
POOL_BATCHES = 8  # batches per shuffled pool that is length-sorted to limit padding
EVAL_BATCH_SCALE = 2  # evaluation batches hold this many times cfg.batch_size clips
PREFETCH = 4  # loaded batches waiting ahead of training


class CharVocab:
    """CTC blank at 0, then A-Z, apostrophe and the word separator "|" (a space in text)."""

    def __init__(self, alphabet: str = ALPHABET) -> None:
        self.symbols = ("<blank>",) + tuple(alphabet)
        self.index = {c: i + 1 for i, c in enumerate(alphabet)}
        self.dropped: Counter[str] = Counter()  # characters left out by `normalise`, over all calls

    def __len__(self) -> int:
        return len(self.symbols)

    def normalise(self, text: str) -> str:
        """Upper-case, drop characters outside the alphabet (counted), words joined by "|".

        Whitespace and "|" both separate words; the result is unchanged by normalising again."""
        kept: list[str] = []
        for c in text.upper().replace(SEPARATOR, " "):
            if c.isspace() or c in self.index:
                kept.append(c)
            else:
                self.dropped[c] += 1
        return SEPARATOR.join("".join(kept).split())

    def encode(self, text: str) -> list[int]:
        """Token ids of a transcript (normalised first)."""
        return [self.index[c] for c in self.normalise(text)]

    def decode(self, ids: list[int] | np.ndarray) -> str:
        """Token ids (no blanks expected; blanks are skipped) -> text with spaces."""
        chars = "".join(self.symbols[int(i)] for i in ids if int(i) != BLANK)
        return chars.replace(SEPARATOR, " ").strip()


def greedy_decode(logits: torch.Tensor, lengths: torch.Tensor, vocab: CharVocab) -> list[str]:
    """Best path: argmax per frame, collapse repeats, drop blanks. logits [B, T, V], lengths [B]."""
    best = logits.argmax(dim=-1).cpu().numpy()
    out = []
    for path, n in zip(best, lengths.tolist()):
        path = path[:n]
        keep = np.ones(len(path), dtype=bool)
        keep[1:] = path[1:] != path[:-1]
        out.append(vocab.decode(path[keep & (path != BLANK)]))
    return out


def reverse_within(lengths: torch.Tensor, total: int) -> torch.Tensor:
    """[B, total] time index that reverses each sequence within its length, padding in place.

    Applying it twice gives back the original order."""
    t = torch.arange(total, device=lengths.device).expand(len(lengths), total)
    last = (lengths - 1).unsqueeze(1)
    return torch.where(t <= last, last - t, t)


class BiLSTM(nn.Module):
    """One bidirectional LSTM layer on a zero-padded batch.

    The backward direction reads each sequence reversed within its own length, so neither
    direction's state at a valid frame ever sees padding (as with packed sequences, but on
    the fast unpacked kernels); outputs at padded frames are zero.
    """

    def __init__(self, input_size: int, units: int) -> None:
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, units, batch_first=True)
        self.backward_lstm = nn.LSTM(input_size, units, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x [B, T, in], lengths [B] (on x's device) -> [B, T, 2 units]."""
        index = reverse_within(lengths, x.shape[1]).unsqueeze(-1)
        fwd = self.forward_lstm(x)[0]
        bwd = self.backward_lstm(x.gather(1, index.expand(-1, -1, x.shape[-1])))[0]
        bwd = bwd.gather(1, index.expand(-1, -1, bwd.shape[-1]))
        valid = (torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(1)).unsqueeze(-1)
        return torch.cat([fwd, bwd], dim=-1) * valid


class CTCHead(nn.Module):
    """Weighted sum -> Linear(D, hidden) -> [mean of every `downsample` frames] -> xupsample
    nearest in time -> BiLSTMs (dropout after each) -> Linear(2 units, V). Padding never reaches
    a valid frame's LSTM state. `downsample` is not in the reference (1, off, there)."""

    def __init__(self, num_layers: int, dim: int, vocab_size: int, hidden: int = 256, units: int = 1024,
                 lstm_layers: int = 2, dropout: float = 0.2, upsample: int = 2, downsample: int = 1) -> None:
        super().__init__()
        self.downsample = downsample
        # per-layer, per-dimension input standardisation (identity unless `standardize` sets it)
        self.register_buffer("shift", torch.zeros(num_layers, dim))
        self.register_buffer("scale", torch.ones(num_layers, dim))
        self.featurizer = WeightedSum(num_layers)
        self.projector = nn.Linear(dim, hidden)
        self.upsample = upsample
        sizes = [hidden] + [2 * units] * (lstm_layers - 1)
        self.lstms = nn.ModuleList(BiLSTM(n, units) for n in sizes)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * units, vocab_size)

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        return -(-lengths // self.downsample) * self.upsample

    def _pool(self, h: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Mean of every `downsample` consecutive valid frames: h [B, T, H], valid [B, T] -> [B, ceil(T/k), H]."""
        k = self.downsample
        if k == 1:
            return h
        b, t, d = h.shape
        pad = -t % k
        w = nn.functional.pad(valid.to(h.dtype), (0, pad)).view(b, -1, k, 1)
        h = nn.functional.pad(h, (0, 0, 0, pad)).view(b, -1, k, d)
        return (h * w).sum(dim=2) / w.sum(dim=2).clamp(min=1.0)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, L, D] zero-padded, lengths [B] -> logits [B, upsample*ceil(T/downsample), V],
        output lengths [B] (CPU)."""
        x = (x - self.shift) * self.scale
        valid = torch.arange(x.shape[1], device=x.device) < lengths.to(x.device).unsqueeze(1)
        x = x * valid[:, :, None, None]  # padding stays zero
        h = self._pool(self.projector(self.featurizer(x)), valid)
        h = h.repeat_interleave(self.upsample, dim=1)
        out_lengths = self.output_lengths(lengths.cpu())
        on_device = out_lengths.to(h.device)
        for lstm in self.lstms:
            h = self.dropout(lstm(h, on_device))
        return self.classifier(h), out_lengths


def pooling_factor(frame_rate: float, pool_to_hz: float) -> int:
    """Frames averaged into one so that the head runs at about `pool_to_hz` (1: unchanged; also
    when either rate is 0, i.e. unknown or off)."""
    if frame_rate <= 0 or pool_to_hz <= 0:
        return 1
    return max(1, round(frame_rate / pool_to_hz))


def frame_moments(stats: dict[str, np.ndarray], num_layers: int, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer, per-dimension mean and standard deviation [L, D] of the train split's frames."""
    if not {"count", "sum", "sumsq"} <= stats.keys():
        raise TaskError("standardize needs the store's train statistics, and this store has none (extraction unfinished?)")
    count = np.maximum(np.asarray(stats["count"], np.float64).reshape(-1, 1), 1.0)
    mean = np.asarray(stats["sum"], np.float64).reshape(num_layers, dim) / count
    var = np.asarray(stats["sumsq"], np.float64).reshape(num_layers, dim) / count - mean**2
    return mean, np.sqrt(np.maximum(var, 1e-10))


class FrameBatches:
    """Padded batches of one track's frames, read from the store batch by batch.

    Only the offsets and lengths ([N] integers) are held, plus an LRU cache of recently read
    clips bounded by `cache_bytes`; a batch reads just its own clips' frames (one read of
    their frame rows), so memory does not grow with the store's size. Thread-safe: the
    prefetch threads of training and evaluation may share it.
    """

    def __init__(self, data: TaskData, cache_bytes: int) -> None:
        self.backend = data.reader.backend
        self.name = S.frames_path(data.track)
        self.offsets = np.asarray(self.backend.read(S.offsets_path(data.track)), dtype=np.int64)
        self.lengths = np.asarray(self.backend.read(S.lengths_path(data.track)), dtype=np.int64)
        self.pin = torch.device(data.device).type == "cuda"
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cached = 0
        self._lock = threading.Lock()

    def clips(self, rows: list[int]) -> list[np.ndarray]:
        """[T, L, D] float16 frames of each clip: cached ones from memory, the rest in one read."""
        with self._lock:
            found = {r: self._cache[r] for r in rows if r in self._cache}
            for r in found:
                self._cache.move_to_end(r)
        missing = sorted(set(rows) - found.keys())
        if missing:
            parts = self._read(missing)
            found.update(zip(missing, parts))
            with self._lock:
                for r, x in zip(missing, parts):
                    if r not in self._cache and x.nbytes <= self.cache_bytes:
                        self._cache[r] = x.copy()  # a copy: a view would pin the whole read
                        self._cached += x.nbytes
                while self._cached > self.cache_bytes:
                    self._cached -= self._cache.popitem(last=False)[1].nbytes
        return [found[r] for r in rows]

    def _read(self, rows: list[int]) -> list[np.ndarray]:
        """Frames of each row from the store. Zarr decodes whole compressed chunks on every
        read, so all rows are fetched in one indexed read (each chunk decoded once); other
        backends (HDF5, uncompressed) read a slice per clip, which is faster there."""
        if self.backend.kind != "zarr":
            return [self.backend.read(self.name, slice(self.offsets[r], self.offsets[r] + self.lengths[r])) for r in rows]
        spans = [np.arange(self.offsets[r], self.offsets[r] + self.lengths[r]) for r in rows]
        data = self.backend.read(self.name, np.concatenate(spans))
        return np.split(data, np.cumsum([len(s) for s in spans])[:-1])

    def load(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, T, L, D] float16, zero-padded (pinned for CUDA); lengths [B] int64; both on the CPU."""
        clips = self.clips([int(r) for r in rows])
        lengths = torch.tensor([len(c) for c in clips], dtype=torch.int64)
        x = torch.zeros((len(clips), int(lengths.max()), *clips[0].shape[1:]), dtype=torch.float16)
        for i, c in enumerate(clips):
            x[i, : len(c)] = torch.from_numpy(c)
        return (x.pin_memory() if self.pin else x), lengths

    def train_order(self, rows: np.ndarray, batch: int, gen: torch.Generator) -> Iterator[np.ndarray]:
        """Endless shuffled batches; each pool of POOL_BATCHES batches is length-sorted."""
        pool = batch * POOL_BATCHES
        while True:
            perm = rows[torch.randperm(len(rows), generator=gen).numpy()]
            for start in range(0, len(perm), pool):
                chunk = perm[start : start + pool]
                chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
                batches = [chunk[i : i + batch] for i in range(0, len(chunk), batch)]
                for j in torch.randperm(len(batches), generator=gen).tolist():
                    yield batches[j]

    def eval_order(self, rows: np.ndarray, batch: int) -> list[np.ndarray]:
        """Length-sorted batches covering every row once."""
        rows = rows[np.argsort(self.lengths[rows], kind="stable")]
        return [rows[i : i + batch] for i in range(0, len(rows), batch)]


_DONE = object()


class Prefetch:
    """Loads the next few batches in a background thread while the current one trains.

    Iterating yields (rows, loaded batch); at most `depth` loaded batches wait in memory.
    Use as a context manager so that the thread stops when the consumer stops early.
    """

    def __init__(self, batches: Iterable[np.ndarray], load: Callable[[np.ndarray], Any], depth: int = PREFETCH) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(batches, load), daemon=True, name="asr-prefetch")
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self, batches: Iterable[np.ndarray], load: Callable[[np.ndarray], Any]) -> None:
        try:
            for rows in batches:
                if not self._put((rows, load(rows))):
                    return
            self._put(_DONE)
        except BaseException as err:  # handed to the consumer, which raises it
            self._put(err)

    def __iter__(self) -> Iterator[tuple[np.ndarray, Any]]:
        while True:
            item = self._queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Prefetch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class RateRun:
    lr: float
    best_dev: float  # 100 - dev CER of the best state; -inf if no evaluation was finite
    best_step: int
    stopped_at: int


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warmup over `warmup` steps, then linear decay to 0 at `total` (step counts from 0)."""
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


@register
class SpeechRecognition(Task):
    """Character CTC on the transcripts; the rate is chosen on dev (100 - CER), test scored once."""

    name = "asr"
    label = "transcript"
    label_kinds = ("text",)
    description = "speech recognition (LRS3-TED): BiLSTM-CTC on frames, greedy decoding, CER %"
    frame_level = True

    def metric(self, label_kind: str) -> Metric:
        return Metric("cer", False)

    def train(self, data: TaskData, cfg: TrainConfig, progress: bool) -> Outcome:
        """Trains one model per rate in cfg.lrs, sequentially (the frame-level head is not
        vectorised). Outcome.dev_scores hold 100 - dev CER per rate (higher is better), keyed
        f"{lr:g}"; test_score is the test CER of the chosen rate's best state; extra carries
        its test WER and dev CER."""
        vocab = CharVocab()
        source = FrameBatches(data, cfg.frame_cache_mb << 20)
        normalised = {int(r): vocab.normalise(str(data.label.values[r])) for s in data.rows for r in data.rows[s]}
        if vocab.dropped:
            common = ", ".join(f"{c!r} x{n}" for c, n in vocab.dropped.most_common(8))
            log.warning("%d characters outside A-Z, apostrophe and space dropped from the transcripts (%s)",
                        sum(vocab.dropped.values()), common)
        for split in data.rows:
            rows = data.rows[split]
            empty = np.array([not normalised[int(r)] for r in rows], dtype=bool)
            if empty.any():
                log.warning("%d %s clips left out: no transcript characters remain", int(empty.sum()), split)
            if np.any(source.lengths[rows] == 0):
                log.warning("%d %s clips left out: no frames", int(np.sum(source.lengths[rows] == 0)), split)
            data.rows[split] = rows[~empty & (source.lengths[rows] > 0)]
            if len(data.rows[split]) == 0:
                raise TaskError(f"no {split} clips with frames and a usable transcript")
        refs = {r: t.replace(SEPARATOR, " ") for r, t in normalised.items()}
        targets = {r: vocab.encode(t) for r, t in normalised.items()}

        num_layers, dim = source.backend.shape(source.name)[1:]
        if cfg.standardize:
            mean, std = frame_moments(data.reader.stats(data.track), num_layers, dim)
        downsample = pooling_factor(data.reader.attrs["tracks"][data.track].get("frame_rate", 0.0), cfg.pool_to_hz)
        torch.manual_seed(cfg.seed)
        template = CTCHead(num_layers, dim, len(vocab), cfg.hidden, cfg.lstm_units, cfg.lstm_layers, cfg.dropout,
                           cfg.upsample, downsample)
        self._warn_infeasible(source, data.rows["train"], targets, template)
        if cfg.standardize:
            template.shift.copy_(torch.from_numpy(mean).float())
            template.scale.copy_(torch.from_numpy(1.0 / std).float())
        device = torch.device(data.device)
        runs: list[RateRun] = []
        chosen: RateRun | None = None
        chosen_state: dict[str, torch.Tensor] | None = None
        for lr in cfg.lrs:
            run, state = self._train_rate(template, lr, source, data, targets, refs, vocab, cfg, progress)
            runs.append(run)
            if state is not None and (chosen is None or _rank(run) > _rank(chosen)):
                chosen, chosen_state = run, state  # only the best state so far is kept
            log.info("asr/%s lr %g: best dev CER %.2f at step %d (stopped at %d)", data.track, lr, 100 - run.best_dev,
                     run.best_step, run.stopped_at)
        if chosen is None or chosen_state is None:
            return Outcome(float("nan"), {}, float(cfg.lrs[0]), 0, [], self.metric(data.label.kind))

        head = copy.deepcopy(template)
        head.load_state_dict(chosen_state)
        head.to(device)
        test_cer, test_wer = self._evaluate(head, source, data.rows["test"], refs, vocab, cfg)
        log.info("asr/%s test CER %.2f, WER %.2f (lr %g)", data.track, test_cer, test_wer, chosen.lr)
        return Outcome(
            test_score=float(test_cer),
            dev_scores={f"{r.lr:g}": r.best_dev for r in runs if math.isfinite(r.best_dev)},
            chosen_lr=chosen.lr,
            best_step=chosen.best_step,
            layer_weights=head.featurizer.weights().detach().cpu().tolist(),
            metric=self.metric(data.label.kind),
            extra={"wer": float(test_wer), "dev_cer": 100.0 - chosen.best_dev, "dev_score": chosen.best_dev},
        )

    @staticmethod
    def _warn_infeasible(source: FrameBatches, rows: np.ndarray, targets: dict[int, list[int]], head: CTCHead) -> None:
        """Log train clips too short for their transcript under CTC (their loss is zeroed)."""
        short = 0
        for r in rows:
            t = targets[int(r)]
            need = len(t) + sum(a == b for a, b in zip(t, t[1:]))
            short += int(head.output_lengths(torch.tensor(int(source.lengths[r]))) < need)
        if short:
            log.warning("%d of %d train clips have fewer output frames than CTC needs for their transcript; "
                        "they add nothing to training (raise upsample)", short, len(rows))

    def _train_rate(self, template: CTCHead, lr: float, source: FrameBatches, data: TaskData,
                    targets: dict[int, list[int]], refs: dict[int, str], vocab: CharVocab,
                    cfg: TrainConfig, progress: bool) -> tuple[RateRun, dict[str, torch.Tensor] | None]:
        """Train one rate; its run summary and best state (CPU copy; None if never finite)."""
        device = torch.device(data.device)
        torch.manual_seed(cfg.seed)  # same dropout masks for every rate
        head = copy.deepcopy(template).to(device)
        params = list(head.parameters())
        if cfg.optimizer == "adamw":
            opt: torch.optim.Optimizer = torch.optim.AdamW(params, lr=lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        else:
            opt = torch.optim.Adam(params, lr=lr, eps=cfg.adam_eps)
        warmup = min(cfg.warmup_steps, cfg.steps // 2)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, warmup, cfg.steps))
        ctc = nn.CTCLoss(blank=BLANK, reduction="mean", zero_infinity=True)

        gen = torch.Generator().manual_seed(cfg.seed)
        order = source.train_order(data.rows["train"], min(cfg.batch_size, len(data.rows["train"])), gen)
        best, best_step, stale, stopped_at, skipped = float("-inf"), 0, 0, cfg.steps, 0
        best_state: dict[str, torch.Tensor] | None = None
        bar = tqdm(total=cfg.steps, desc=f"asr/{data.track} lr {lr:g}", unit="step", disable=not progress, leave=False)
        with Prefetch(itertools.islice(order, cfg.steps), source.load) as batches:
            for step, (rows, (x, lengths)) in enumerate(batches, start=1):
                head.train()
                logits, out_lengths = head(x.to(device, non_blocking=True).float(), lengths)
                y = [targets[int(r)] for r in rows]
                flat = torch.tensor([c for t in y for c in t], dtype=torch.int64, device=device)
                y_lengths = torch.tensor([len(t) for t in y], dtype=torch.int64)
                log_probs = logits.log_softmax(dim=-1).transpose(0, 1)  # [T, B, V]
                loss = ctc(log_probs, flat, out_lengths, y_lengths)
                opt.zero_grad(set_to_none=True)
                if torch.isfinite(loss):
                    loss.backward()
                    norm = nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if torch.isfinite(norm):
                        opt.step()
                    else:
                        skipped += 1
                else:
                    skipped += 1
                sched.step()
                bar.update()
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    dev_cer, _ = self._evaluate(head, source, data.rows["dev"], refs, vocab, cfg)
                    score = 100.0 - dev_cer
                    if math.isfinite(score) and score > best:
                        best, best_step, stale = score, step, 0
                        best_state = {k: v.detach().to("cpu", copy=True) for k, v in head.state_dict().items()}
                    else:
                        stale += 1
                    log.debug("asr/%s lr %g step %d: loss %.3f, dev CER %.2f", data.track, lr, step, loss.item(), dev_cer)
                    bar.set_postfix(loss=f"{loss.item():.3f}", dev_cer=f"{dev_cer:.1f}")
                    if stale >= cfg.patience:
                        stopped_at = step
                        break
        bar.close()
        if skipped:
            log.warning("asr/%s lr %g: %d steps skipped with a non-finite loss or gradient", data.track, lr, skipped)
        return RateRun(lr, best, best_step, stopped_at), best_state

    @staticmethod
    @torch.no_grad()
    def _evaluate(head: CTCHead, source: FrameBatches, rows: np.ndarray, refs: dict[int, str],
                  vocab: CharVocab, cfg: TrainConfig) -> tuple[float, float]:
        """(CER %, WER %) of greedy decoding over `rows`; NaN if the head outputs non-finite values."""
        head.eval()
        hyps, references = [], []
        device = next(head.parameters()).device
        with Prefetch(source.eval_order(rows, cfg.batch_size * EVAL_BATCH_SCALE), source.load) as batches:
            for batch, (x, lengths) in batches:
                logits, out_lengths = head(x.to(device, non_blocking=True).float(), lengths)
                if not torch.isfinite(logits).all():
                    return float("nan"), float("nan")
                hyps += greedy_decode(logits, out_lengths, vocab)
                references += [refs[int(r)] for r in batch]
        return metrics.error_rates(references, hyps)


def _rank(run: RateRun) -> tuple[float, float]:
    """Higher is better: dev score, then (ties) the rate nearest 1e-3, as the pooled sweep does."""
    return (run.best_dev, -abs(math.log10(run.lr) + 3))
