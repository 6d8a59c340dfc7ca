"""Task metrics, in percent."""

from __future__ import annotations

import editdistance
import numpy as np


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    y_true = np.asarray(y_true)
    if y_true.size == 0:
        raise ValueError("accuracy of an empty set")
    return float(np.mean(y_true == np.asarray(y_pred)) * 100.0)


def _binary(values: np.ndarray, name: str) -> np.ndarray:
    """`values` as a bool array; ValueError unless every entry is 0 or 1."""
    values = np.asarray(values)
    if not np.all((values == 0) | (values == 1)):
        raise ValueError(f"{name} must hold only 0 and 1")
    return values.astype(bool)


def _finite_scores(scores: np.ndarray) -> np.ndarray:
    """`scores` as float64; ValueError on NaN (ranks would be undefined)."""
    scores = np.asarray(scores, dtype=np.float64)
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    return scores


def mean_average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Macro mean of per-class average precision in percent (sklearn's step-wise AP).

    y_true [N, C] in {0, 1}, scores [N, C]. AP = sum_n (R_n - R_{n-1}) P_n over descending
    distinct score thresholds (equal scores form one threshold). Classes without a positive
    are skipped. A 1-D input is taken as a single class.
    """
    y = _binary(y_true, "y_true")
    s = _finite_scores(scores)
    if y.shape != s.shape:
        raise ValueError(f"shapes differ: y_true {y.shape}, scores {s.shape}")
    if y.ndim == 1:
        y, s = y[:, None], s[:, None]
    if y.ndim != 2:
        raise ValueError(f"expected [N, C] arrays, got {y.ndim}-D")
    n_pos = y.sum(axis=0)
    keep = n_pos > 0
    if not keep.any():
        raise ValueError("no class has a positive")
    y, s, n_pos = y[:, keep], s[:, keep], n_pos[keep]
    n = y.shape[0]

    order = np.argsort(-s, axis=0, kind="stable")
    s_sorted = np.take_along_axis(s, order, axis=0)
    y_sorted = np.take_along_axis(y, order, axis=0)
    tp = np.cumsum(y_sorted, axis=0)
    # Last row of each tie group closes a threshold; every row takes its group's end.
    rows = np.arange(n)[:, None]
    is_end = np.ones_like(y_sorted)
    is_end[:-1] = s_sorted[:-1] != s_sorted[1:]
    end = np.where(is_end, rows, n)
    end = np.minimum.accumulate(end[::-1], axis=0)[::-1]
    precision_at_end = np.take_along_axis(tp, end, axis=0) / (end + 1.0)
    # Each positive adds 1/n_pos of recall at its group's threshold.
    ap = (y_sorted * precision_at_end).sum(axis=0) / n_pos
    return float(ap.mean() * 100.0)


def equal_error_rate(targets: np.ndarray, scores: np.ndarray) -> float:
    """Verification EER in percent: where FPR = FNR on the ROC, interpolated linearly.

    targets [M] in {0, 1} (1 = same speaker), scores [M] (higher = more likely target). The ROC
    runs over all distinct thresholds from (0, 0) to (1, 1); the crossing is found on the
    segment between the two ROC points that bracket it.
    """
    t = _binary(targets, "targets").ravel()
    s = _finite_scores(scores).ravel()
    if t.shape != s.shape:
        raise ValueError(f"lengths differ: targets {t.shape}, scores {s.shape}")
    n_tar = int(t.sum())
    n_non = t.size - n_tar
    if n_tar == 0 or n_non == 0:
        raise ValueError("EER needs at least one target and one non-target trial")

    order = np.argsort(-s, kind="stable")
    s_sorted, t_sorted = s[order], t[order]
    ends = np.flatnonzero(np.r_[s_sorted[:-1] != s_sorted[1:], True])
    tp = np.cumsum(t_sorted)[ends]
    fp = ends + 1 - tp
    fpr = np.r_[0.0, fp / n_non]
    fnr = np.r_[1.0, 1.0 - tp / n_tar]
    # d = FNR - FPR falls monotonically from 1 at (0, 0) to -1 at (1, 1).
    d = fnr - fpr
    k = int(np.argmax(d <= 0.0))  # first ROC point at or past the crossing; k >= 1
    frac = d[k - 1] / (d[k - 1] - d[k])
    eer = fpr[k - 1] + frac * (fpr[k] - fpr[k - 1])
    return float(eer * 100.0)


def error_rates(
    references: list[str], hypotheses: list[str], word_separator: str = " "
) -> tuple[float, float]:
    """(CER %, WER %) pooled over the corpus, with editdistance.

    CER = sum of character edit distances / sum of reference characters (separators count);
    WER = sum of word edit distances / sum of reference words (split on the separator, empty
    pieces dropped).
    """
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    char_errors = char_total = word_errors = word_total = 0
    for ref, hyp in zip(references, hypotheses):
        char_errors += editdistance.eval(ref, hyp)
        char_total += len(ref)
        ref_words = [w for w in ref.split(word_separator) if w]
        hyp_words = [w for w in hyp.split(word_separator) if w]
        word_errors += editdistance.eval(ref_words, hyp_words)
        word_total += len(ref_words)
    if char_total == 0:
        raise ValueError("references hold no characters")
    if word_total == 0:
        raise ValueError("references hold no words")
    return char_errors / char_total * 100.0, word_errors / word_total * 100.0
