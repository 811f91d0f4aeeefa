"""Relative-pose estimation from matches: OpenCV RANSAC, OpenCV USAC_MAGSAC, or pycolmap (LO-RANSAC).

``"ransac"`` follows the SuperGlue/LoFTR protocol: keypoints are normalized with their intrinsics,
the threshold (pixels) is divided by the mean focal length, ``cv2.findEssentialMat`` with RANSAC,
then ``cv2.recoverPose`` on every returned candidate, keeping the one with most inliers.
``"magsac"`` is fed pixel coordinates and ``K`` (OpenCV's MAGSAC is not scale invariant).
``"pycolmap"`` uses ``pycolmap.estimate_essential_matrix`` with the threshold in pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pycolmap

ESTIMATORS = ("ransac", "magsac", "pycolmap")
MIN_MATCHES = 5


@dataclass(frozen=True)
class RelativePose:
    """Estimated relative pose: ``X1 = R @ X0 + t`` with ``t`` of unit norm; ``inliers`` (N,) bool."""

    R: np.ndarray
    t: np.ndarray
    inliers: np.ndarray


def describe_estimator(method: str, threshold_px: float, confidence: float) -> str:
    """One line naming the estimator and its settings, printed next to every AUC."""
    if method == "ransac":
        return f"opencv-RANSAC {threshold_px:g}px/mean-focal (normalized coords), p={confidence:g}"
    if method == "magsac":
        return f"opencv-USAC_MAGSAC {threshold_px:g}px (pixel coords + K), p={confidence:g}"
    if method == "pycolmap":
        return f"pycolmap LO-RANSAC {threshold_px:g}px, p={confidence:g}"
    raise ValueError(f"unknown estimator {method!r}; choose one of {ESTIMATORS}")


def _normalize(kpts: np.ndarray, K: np.ndarray) -> np.ndarray:
    return (kpts - K[[0, 1], [2, 2]][None]) / K[[0, 1], [0, 1]][None]


def _best_candidate(
    E_stack: np.ndarray, x0: np.ndarray, x1: np.ndarray, mask: np.ndarray
) -> RelativePose | None:
    """recoverPose on each 3x3 candidate in ``E_stack`` (normalized points), most inliers wins."""
    best, best_n = None, -1
    for E in np.split(E_stack, len(E_stack) // 3):
        n, R, t, pose_mask = cv2.recoverPose(E, x0, x1, np.eye(3), 1e9, mask=mask.copy())
        if n > best_n:
            best_n = n
            best = RelativePose(R, t.ravel() / max(np.linalg.norm(t), 1e-12), pose_mask.ravel() > 0)
    return best


def estimate_relative_pose(
    kpts0: np.ndarray,
    kpts1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    method: str = "ransac",
    threshold_px: float = 0.5,
    confidence: float = 0.99999,
    max_iters: int = 1000,
) -> RelativePose | None:
    """Estimate the relative pose ``T_0to1`` (up to scale) from matched pixels.

    Args:
        kpts0, kpts1: ``(N, 2)`` matched pixel coordinates.
        K0, K1: ``(3, 3)`` intrinsics.
        method: one of :data:`ESTIMATORS`.
        threshold_px: inlier threshold in pixels.
        confidence: RANSAC confidence.
    Returns:
        The pose, or ``None`` when there are fewer than 5 matches or estimation fails.
    """
    if method not in ESTIMATORS:
        raise ValueError(f"unknown estimator {method!r}; choose one of {ESTIMATORS}")
    kpts0 = np.ascontiguousarray(kpts0, dtype=np.float64).reshape(-1, 2)
    kpts1 = np.ascontiguousarray(kpts1, dtype=np.float64).reshape(-1, 2)
    if len(kpts0) != len(kpts1):
        raise ValueError(f"kpts0 has {len(kpts0)} points, kpts1 {len(kpts1)}")
    finite = np.isfinite(kpts0).all(1) & np.isfinite(kpts1).all(1)
    if finite.sum() < MIN_MATCHES:
        return None
    K0, K1 = np.asarray(K0, np.float64), np.asarray(K1, np.float64)
    idx = np.flatnonzero(finite)
    p0, p1 = kpts0[idx], kpts1[idx]
    x0, x1 = _normalize(p0, K0), _normalize(p1, K1)

    if method == "pycolmap":
        pose = _estimate_pycolmap(p0, p1, K0, K1, threshold_px, confidence, max_iters)
    else:
        if method == "ransac":
            f_mean = np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]])
            E, mask = cv2.findEssentialMat(
                x0, x1, np.eye(3), method=cv2.RANSAC, prob=confidence,
                threshold=threshold_px / f_mean, maxIters=max_iters,
            )
        elif np.allclose(K0, K1):
            E, mask = cv2.findEssentialMat(
                p0, p1, K0, method=cv2.USAC_MAGSAC, prob=confidence,
                threshold=threshold_px, maxIters=max_iters,
            )
        else:
            E, mask = cv2.findEssentialMat(
                p0, p1, K0, None, K1, None, method=cv2.USAC_MAGSAC, prob=confidence,
                threshold=threshold_px,
            )
        if E is None or E.shape[0] < 3 or E.shape[1] != 3 or not np.isfinite(E).all():
            return None
        pose = _best_candidate(E, x0, x1, mask)
    if pose is None:
        return None
    inliers = np.zeros(len(kpts0), dtype=bool)
    inliers[idx] = pose.inliers
    return RelativePose(pose.R, pose.t, inliers)


def _estimate_pycolmap(
    p0: np.ndarray, p1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
    threshold_px: float, confidence: float, max_iters: int,
) -> RelativePose | None:
    def camera(K: np.ndarray) -> pycolmap.Camera:
        # COLMAP's pixel centre is at +0.5: shift the principal point and points alike.
        w, h = 2 * (K[0, 2] + 1), 2 * (K[1, 2] + 1)
        return pycolmap.Camera(model="PINHOLE", width=int(round(w)), height=int(round(h)),
                               params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])

    options = pycolmap.RANSACOptions()
    options.max_error = threshold_px
    options.confidence = confidence
    options.max_num_trials = max_iters
    options.random_seed = 0
    out = pycolmap.estimate_essential_matrix(p0 + 0.5, p1 + 0.5, camera(K0), camera(K1), options)
    if out is None:
        return None
    rig = out["cam2_from_cam1"]
    R = np.asarray(rig.rotation.matrix(), dtype=np.float64)
    t = np.asarray(rig.translation, dtype=np.float64)
    return RelativePose(R, t / max(np.linalg.norm(t), 1e-12), np.asarray(out["inlier_mask"], bool))
