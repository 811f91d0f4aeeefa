"""Step 2: score cached matches: precision (epipolar), relative-pose error, AUC summary.

Per pair (SuperGlue/LoFTR protocol):
- ``precision``: fraction of matches with squared symmetric epipolar distance (normalized
  coordinates) below ``epipolar_threshold`` (5e-4); 0 for a pair without matches.
- pose: ``estimate_relative_pose`` then ``pose_error``; ``err_pose = max(err_R, err_t)`` in
  degrees (translation direction folded: ``min(e, 180 - e)``). Fewer than 5 matches or a failed
  estimation is a *failure* with infinite errors (never an exception).

Summary: ``auc@5/10/20`` of ``err_pose`` in percent, ``precision`` = mean per-pair precision
**in percent**, ``median_matches``, ``runtime_s_per_pair`` (mean ``match`` time), counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from ..data.sample import PairSample
from ..errors import InputError
from ..geometry.camera import scale_intrinsics
from ..geometry.epipolar import symmetric_epipolar_distance
from ..geometry.estimate import ESTIMATORS, MIN_MATCHES, estimate_relative_pose
from ..geometry.metrics import pose_auc
from ..geometry.pose import pose_error
from .export import load_prediction

POSE_ERROR_DEFINITION = (
    "max(rotation angle error, translation direction angle error min(e, 180-e)) in degrees; "
    "failures (<5 matches or estimation failure) = inf"
)


def default_threshold(estimator: str) -> float:
    """Default inlier threshold in pixels: 0.5 for ``ransac`` (SuperGlue/LoFTR), else 1.0."""
    if estimator not in ESTIMATORS:
        raise InputError(f"--estimator: unknown estimator {estimator!r}; choose one of {ESTIMATORS}")
    return 0.5 if estimator == "ransac" else 1.0


@dataclass(frozen=True)
class ScoreConfig:
    """Pose estimation and metric settings (``threshold_px=None``: :func:`default_threshold`)."""

    estimator: str = "ransac"
    threshold_px: float | None = None
    confidence: float = 0.99999
    #: RANSAC iterations cap. 1000 is OpenCV's default, which the SuperGlue/LoFTR evaluation code
    #: (and shared/reference) use; with few inliers (Herz-Jesus-P25) 10000 gives ~3 AUC more.
    max_iters: int = 1000
    epipolar_threshold: float = 5e-4
    auc_thresholds: tuple[float, ...] = (5.0, 10.0, 20.0)

    def check(self) -> None:
        """Raise :class:`InputError` (naming the CLI option) for invalid settings."""
        default_threshold(self.estimator)
        if not self.threshold > 0:
            raise InputError(f"--threshold must be positive, got {self.threshold}")
        if not 0 < self.confidence < 1:
            raise InputError(f"--confidence must be in (0, 1), got {self.confidence}")
        if self.max_iters <= 0:
            raise InputError(f"--max-iters must be positive, got {self.max_iters}")

    @property
    def threshold(self) -> float:
        """The effective inlier threshold in pixels."""
        if self.threshold_px is None:
            return default_threshold(self.estimator)
        return float(self.threshold_px)


def intrinsics_for_size(K: np.ndarray, ref_size: tuple[int, int] | None, size: tuple[int, int]):
    """Rescale K given for ``ref_size`` (W, H) to an image of ``size`` (W, H); (3, 3)."""
    if ref_size is None or tuple(ref_size) == tuple(size):
        return K
    return scale_intrinsics(K, size[0] / ref_size[0], size[1] / ref_size[1])


def epipolar_errors(kpts0, kpts1, T_0to1, K0, K1) -> np.ndarray:
    """(N,) squared symmetric epipolar distances (normalized coordinates) as float64 numpy."""
    if len(kpts0) == 0:
        return np.zeros(0)

    def t(x):
        return torch.as_tensor(np.asarray(x, dtype=np.float64))

    return symmetric_epipolar_distance(t(kpts0), t(kpts1), t(T_0to1), t(K0), t(K1)).numpy()


def score_pair(
    conf: ScoreConfig, sample: PairSample, kpts0: np.ndarray, kpts1: np.ndarray,
    K0: np.ndarray, K1: np.ndarray,
) -> dict[str, Any]:
    """Metrics of one pair; ``kpts*`` (N, 2) and ``K*`` (3, 3) in original-image pixels."""
    n = len(kpts0)
    d = epipolar_errors(kpts0, kpts1, sample.T_0to1, K0, K1)
    n_correct = int((d < conf.epipolar_threshold).sum())
    row: dict[str, Any] = {
        "n_matches": n, "n_correct": n_correct, "precision": n_correct / n if n else 0.0,
        "err_R": math.inf, "err_t": math.inf, "err_pose": math.inf, "n_inliers": 0,
        "failure": "",
    }
    if n < MIN_MATCHES:
        row["failure"] = f"too few matches ({n} < {MIN_MATCHES})"
        return row
    pose = estimate_relative_pose(
        kpts0, kpts1, K0, K1, conf.estimator, conf.threshold, conf.confidence, conf.max_iters
    )
    if pose is None:
        row["failure"] = "estimation failed"
        return row
    err_R, err_t = pose_error(pose.R, pose.t, sample.T_0to1)
    row.update(err_R=err_R, err_t=err_t, err_pose=max(err_R, err_t),
               n_inliers=int(pose.inliers.sum()))
    if not math.isfinite(row["err_pose"]):
        row["failure"] = "non-finite pose error"
    return row


def summarize(rows: list[dict[str, Any]], conf: ScoreConfig) -> dict[str, Any]:
    """Pooled metrics of per-pair rows (see module docstring)."""
    errors = [r["err_pose"] for r in rows]
    summary: dict[str, Any] = dict(pose_auc(errors, tuple(conf.auc_thresholds)))
    summary.update(
        precision=100.0 * float(np.mean([r["precision"] for r in rows])) if rows else 0.0,
        median_matches=float(np.median([r["n_matches"] for r in rows])) if rows else 0.0,
        runtime_s_per_pair=float(np.mean([r["time_s"] for r in rows])) if rows else 0.0,
        num_pairs=len(rows),
        num_failures=sum(1 for r in rows if r["failure"]),
    )
    return summary


def main(
    conf: ScoreConfig, pairs: list[PairSample], predictions: str | Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score every pair of ``pairs`` from the predictions file.

    Returns:
        Per-pair rows (names, counts, precision, errors in degrees, time, failure reason) and the
        summary dict (without ``protocol``).
    """
    conf.check()
    rows = []
    with h5py.File(predictions, "r") as f:
        for sample in pairs:
            pred = load_prediction(f, sample)
            K0 = intrinsics_for_size(sample.K0, sample.image_size0, pred.size0)
            K1 = intrinsics_for_size(sample.K1, sample.image_size1, pred.size1)
            row = {"scene": sample.scene, "name0": sample.name0, "name1": sample.name1}
            row.update(score_pair(conf, sample, pred.kpts0, pred.kpts1, K0, K1))
            row["time_s"] = pred.time_s
            rows.append(row)
    return rows, summarize(rows, conf)
