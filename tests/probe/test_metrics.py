"""Metrics agree with independent implementations (sklearn, scipy, a plain DP) and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import average_precision_score, roc_curve

from avsuperb.probe.metrics import accuracy, equal_error_rate, error_rates, mean_average_precision

# ---------------------------------------------------------------------------------------- accuracy


def test_accuracy_known_answer() -> None:
    assert accuracy(np.array([0, 1, 2, 3]), np.array([0, 1, 0, 3])) == pytest.approx(75.0)


# ---------------------------------------------------------------------------------------- mAP


def sklearn_map(y: np.ndarray, s: np.ndarray) -> float:
    """Mean of sklearn's per-class AP over classes with a positive, in percent."""
    aps = [average_precision_score(y[:, c], s[:, c]) for c in range(y.shape[1]) if y[:, c].any()]
    return float(np.mean(aps) * 100.0)


@pytest.mark.parametrize("seed", range(6))
def test_map_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, c = 150, 8
    y = (rng.random((n, c)) < rng.uniform(0.05, 0.5, size=c)).astype(int)
    y[:, 3] = 0  # a class with no positives: skipped
    y[rng.integers(n), 5] = 1  # at least one rare class
    decimals = 1 if seed % 2 == 0 else 2  # heavy ties, then lighter ones
    s = np.round(rng.normal(size=(n, c)) + 0.8 * y, decimals)
    got = mean_average_precision(y, s)
    assert got == pytest.approx(sklearn_map(y, s), abs=1e-9)
    # and it is not what counting the empty class as AP 0 would give
    aps = [average_precision_score(y[:, k], s[:, k]) for k in range(c) if y[:, k].any()]
    assert got != pytest.approx(np.sum(aps) / c * 100.0)


def test_map_float_labels_and_single_column() -> None:
    rng = np.random.default_rng(42)
    y = (rng.random((60, 3)) < 0.3).astype(np.float32)
    s = np.round(rng.random((60, 3)), 1)
    assert mean_average_precision(y, s) == pytest.approx(sklearn_map(y.astype(int), s), abs=1e-9)
    assert mean_average_precision(y[:, 0], s[:, 0]) == pytest.approx(
        average_precision_score(y[:, 0], s[:, 0]) * 100.0, abs=1e-9
    )


def test_map_known_answers() -> None:
    y = np.array([[1, 0], [1, 1], [0, 0], [0, 1]])
    perfect = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.3], [0.1, 0.6]])
    assert mean_average_precision(y, perfect) == pytest.approx(100.0)
    # Class 0, tie at 0.5 between a positive and a negative: thresholds 0.9 (P=1, R=1/2) and
    # 0.5 (P=2/3, R=1) -> AP = 1/2 + 1/2 * 2/3 = 5/6.
    # Class 1, positives ranked 2nd and 4th: AP = (1/2 + 2/4) / 2 = 1/2.
    # Class 2 has no positives and is skipped: mAP = (5/6 + 1/2) / 2 = 2/3.
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 0]])
    s = np.array([[0.9, 0.4, 0.3], [0.5, 0.3, 0.2], [0.5, 0.2, 0.1], [0.1, 0.1, 0.0]])
    assert mean_average_precision(y, s) == pytest.approx(200.0 / 3.0)


def test_map_errors() -> None:
    with pytest.raises(ValueError):
        mean_average_precision(np.zeros((4, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError):
        mean_average_precision(np.ones((4, 2)), np.ones((4, 3)))
    with pytest.raises(ValueError):
        mean_average_precision(np.full((4, 2), 2), np.ones((4, 2)))


# ---------------------------------------------------------------------------------------- EER


def reference_eer(targets: np.ndarray, scores: np.ndarray) -> float:
    """The common speaker-verification recipe: sklearn ROC, then brentq on FNR = FPR, in %."""
    fpr, tpr, _ = roc_curve(targets, scores, pos_label=1)
    return float(brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0) * 100.0)


@pytest.mark.parametrize("seed", range(8))
def test_eer_matches_roc_brentq(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_tar, n_non = int(rng.integers(20, 300)), int(rng.integers(20, 600))
    tar = rng.normal(1.0 + 0.3 * (seed % 2), 1.0, n_tar)
    non = rng.normal(0.0, 1.2, n_non)
    scores = np.r_[tar, non]
    if seed >= 4:
        scores = np.round(scores, 1)  # ties between targets and non-targets
    targets = np.r_[np.ones(n_tar, int), np.zeros(n_non, int)]
    perm = rng.permutation(scores.size)
    targets, scores = targets[perm], scores[perm]
    got = equal_error_rate(targets, scores)
    assert 0.0 < got < 100.0
    assert got == pytest.approx(reference_eer(targets, scores), abs=1e-6)


def test_eer_known_answers() -> None:
    targets = np.array([1, 1, 0, 0, 0])
    assert equal_error_rate(targets, np.array([5.0, 4.0, 3.0, 2.0, 1.0])) == pytest.approx(0.0)
    assert equal_error_rate(targets, np.array([1.0, 2.0, 3.0, 4.0, 5.0])) == pytest.approx(100.0)
    assert equal_error_rate(targets, np.full(5, 0.3)) == pytest.approx(50.0)
    # One target tied with one of two non-targets: the ROC jumps (0,0) -> (1/2, 1); on that
    # segment TPR = 2 FPR, so FNR = FPR at 1 - 2x = x, x = 1/3.
    assert equal_error_rate(np.array([1, 0, 0]), np.array([1.0, 1.0, 0.0])) == pytest.approx(
        100.0 / 3.0
    )


def test_eer_errors() -> None:
    with pytest.raises(ValueError):
        equal_error_rate(np.ones(4), np.arange(4.0))
    with pytest.raises(ValueError):
        equal_error_rate(np.zeros(4), np.arange(4.0))
    with pytest.raises(ValueError):
        equal_error_rate(np.array([0, 1]), np.arange(3.0))


# ---------------------------------------------------------------------------------------- CER / WER


def levenshtein(a: list[str] | str, b: list[str] | str) -> int:
    """Plain dynamic-programming edit distance (unit insert, delete, substitute)."""
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


VOCAB = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")


def perturb(rng: np.random.Generator, text: str) -> str:
    """`text` after a few random insertions, deletions and substitutions."""
    chars = list(text)
    for _ in range(int(rng.integers(0, 6))):
        op, pos = rng.integers(3), int(rng.integers(len(chars) + 1))
        letter = VOCAB[int(rng.integers(len(VOCAB)))]
        if op == 0:
            chars.insert(pos, letter)
        elif chars and pos < len(chars):
            if op == 1:
                del chars[pos]
            else:
                chars[pos] = letter
    return "".join(chars)


@pytest.mark.parametrize("seed", range(3))
def test_error_rates_match_dp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    refs, hyps = [], []
    for i in range(40):
        ref = "".join(rng.choice(VOCAB, size=int(rng.integers(1, 40))))
        hyp = perturb(rng, ref) if i % 4 else "".join(rng.choice(VOCAB, size=int(rng.integers(0, 30))))
        refs.append(ref)
        hyps.append(hyp)
    hyps[0] = ""
    char_err = sum(levenshtein(r, h) for r, h in zip(refs, hyps))
    chars = sum(len(r) for r in refs)
    words = [([w for w in r.split(" ") if w], [w for w in h.split(" ") if w]) for r, h in zip(refs, hyps)]
    word_err = sum(levenshtein(r, h) for r, h in words)
    n_words = sum(len(r) for r, _ in words)
    cer, wer = error_rates(refs, hyps)
    assert cer == pytest.approx(100.0 * char_err / chars)
    assert wer == pytest.approx(100.0 * word_err / n_words)


def test_error_rates_known_answers() -> None:
    assert error_rates(["THE CAT", "SAT"], ["THE CAT", "SAT"]) == (0.0, 0.0)
    assert error_rates(["THE CAT", "SAT"], ["", ""]) == pytest.approx((100.0, 100.0))
    # 4 inserted characters (" SAT") over 7; 1 inserted word over 2.
    assert error_rates(["THE CAT"], ["THE CAT SAT"]) == pytest.approx((400.0 / 7.0, 50.0))
    # 4 deleted characters over 11; 1 deleted word over 3.
    assert error_rates(["THE CAT SAT"], ["THE CAT"]) == pytest.approx((400.0 / 11.0, 100.0 / 3.0))
    # 1 substituted character over 7; 1 substituted word over 2.
    assert error_rates(["THE CAT"], ["THE BAT"]) == pytest.approx((100.0 / 7.0, 50.0))
    # Pooled over utterances, not averaged: (1 + 0) / (7 + 3) chars, (1 + 0) / (2 + 1) words.
    assert error_rates(["THE CAT", "DOG"], ["THE BAT", "DOG"]) == pytest.approx((10.0, 100.0 / 3.0))
    # Another separator; empty pieces are not words, but separators are characters.
    # ref words THE, CAT (2); hyp words THE, CAT, S: 1 insertion; chars: "|S" inserted = 2 / 8.
    assert error_rates(["THE||CAT"], ["THE||CAT|S"], word_separator="|") == pytest.approx((25.0, 50.0))


def test_error_rates_errors() -> None:
    with pytest.raises(ValueError):
        error_rates(["", ""], ["A", "B"])
    with pytest.raises(ValueError):
        error_rates(["A"], ["A", "B"])
