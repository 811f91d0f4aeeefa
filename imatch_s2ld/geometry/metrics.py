"""Accuracy metrics: pose AUC (SuperGlue/LoFTR protocol) and mean matching accuracy."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np


def _as_errors(errors: Iterable[float | None]) -> np.ndarray:
    """Errors as float64 with failures (``None``, nan, inf) mapped to ``inf``."""
    arr = np.array([np.inf if e is None else float(e) for e in errors], dtype=np.float64)
    arr[~np.isfinite(arr)] = np.inf
    return arr


def pose_auc(errors: Iterable[float | None], thresholds: Sequence[float] = (5, 10, 20)) -> dict[str, float]:
    """Area under the cumulative pose-error curve up to each threshold, in percent.

    The SuperGlue/LoFTR protocol: sort the errors (degrees; failures count as infinite), the recall
    after the k-th error is k / n, the curve starts at (0, 0), is integrated with the trapezoid rule
    up to the threshold (the last recall is held flat until the threshold) and divided by it.

    Args:
        errors: per-pair errors in degrees; ``None``/nan/inf mark failures.
        thresholds: thresholds in degrees.
    Returns:
        ``{"auc@5": ..., "auc@10": ..., "auc@20": ...}`` (keys follow ``thresholds``), 0..100.
    """
    err = np.sort(_as_errors(errors))
    n = len(err)
    out = {}
    for t in thresholds:
        if n == 0:
            out[f"auc@{t:g}"] = 0.0
            continue
        below = err[err < t]
        xs = np.concatenate([[0.0], below, [t]])
        recall = np.arange(len(below) + 1, dtype=np.float64) / n
        ys = np.concatenate([recall, recall[-1:]])
        area = np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0)
        out[f"auc@{t:g}"] = float(100.0 * area / t)
    return out


def matching_accuracy(errors_px: np.ndarray, thresholds: Sequence[float] = tuple(range(1, 11))) -> np.ndarray:
    """Fraction of matches whose reprojection error is below each pixel threshold.

    Args:
        errors_px: ``(N,)`` match errors in pixels (nan/inf count as wrong).
        thresholds: pixel thresholds.
    Returns:
        ``(len(thresholds),)`` fractions in [0, 1]; zeros when there are no matches.
    """
    e = np.asarray(errors_px, dtype=np.float64).ravel()
    if e.size == 0:
        return np.zeros(len(thresholds))
    e = np.where(np.isfinite(e), e, np.inf)
    return np.array([(e < t).mean() for t in thresholds])


def mean_matching_accuracy(
    per_pair_errors: Iterable[np.ndarray], thresholds: Sequence[float] = tuple(range(1, 11))
) -> dict[str, float]:
    """MMA: per-pair matching accuracy averaged over pairs, as ``{"mma@1px": ...}`` (0..1)."""
    accs = [matching_accuracy(e, thresholds) for e in per_pair_errors]
    mean = np.mean(accs, axis=0) if accs else np.zeros(len(thresholds))
    return {f"mma@{t:g}px": float(m) for t, m in zip(thresholds, mean)}
