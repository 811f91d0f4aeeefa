"""Classical OpenCV matchers: SIFT and ORB with brute-force ratio test and mutual check."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..data.images import to_grayscale
from ..errors import InputError
from .base import MatchOutput, as_float32_matches


def ratio_mutual_match(
    desc0: np.ndarray | None, desc1: np.ndarray | None, norm: int, ratio: float, mutual: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force matching 0->1 with Lowe's ratio test and an optional mutual check.

    Args:
        desc0: (N0, D) descriptors; desc1: (N1, D).
        norm: ``cv2.NORM_L2`` or ``cv2.NORM_HAMMING``.
    Returns:
        ``idx`` (M, 2) int indices ``(i0, i1)`` and ``ratio`` (M,) float (distance ratio, < ratio).
    """
    empty = np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32)
    if desc0 is None or desc1 is None or len(desc0) == 0 or len(desc1) < 2:
        return empty
    bf = cv2.BFMatcher(norm, crossCheck=False)
    knn = bf.knnMatch(desc0, desc1, k=2)
    pairs, ratios = [], []
    for cand in knn:
        if len(cand) < 2:
            continue
        m, n = cand
        if m.distance < ratio * n.distance:
            pairs.append((m.queryIdx, m.trainIdx))
            ratios.append(m.distance / max(n.distance, 1e-12))
    if not pairs:
        return empty
    idx, r = np.asarray(pairs, dtype=np.int64), np.asarray(ratios, dtype=np.float32)
    if mutual:
        back = np.full(len(desc1), -1, dtype=np.int64)
        for m in bf.match(desc1, desc0):
            back[m.queryIdx] = m.trainIdx
        keep = back[idx[:, 1]] == idx[:, 0]
        idx, r = idx[keep], r[keep]
    return idx, r


@dataclass
class OpenCVMatcher:
    """SIFT or ORB keypoints + brute-force ratio/mutual matching; confidence ``1 - ratio``."""

    name: str
    detector: cv2.Feature2D
    norm: int
    ratio: float
    mutual: bool
    grayscale: bool = True

    def match(self, image0: np.ndarray, image1: np.ndarray) -> MatchOutput:
        """Match two uint8 images (gray or RGB): (N, 2), (N, 2), (N,) float32."""
        kp0, desc0 = self.detector.detectAndCompute(to_grayscale(image0), None)
        kp1, desc1 = self.detector.detectAndCompute(to_grayscale(image1), None)
        idx, ratio = ratio_mutual_match(desc0, desc1, self.norm, self.ratio, self.mutual)
        if len(idx) == 0:
            return as_float32_matches([], [], [])
        pts0 = np.array([kp.pt for kp in kp0], dtype=np.float32)
        pts1 = np.array([kp.pt for kp in kp1], dtype=np.float32)
        return as_float32_matches(pts0[idx[:, 0]], pts1[idx[:, 1]], 1.0 - ratio)


def _no_arg(kind: str, arg: str | None) -> None:
    if arg is not None:
        raise InputError(f"--matcher: {kind!r} takes no ':' argument, got {kind}:{arg}")


def sift_matcher(
    arg: str | None = None, num_features: int = 4000, ratio: float = 0.8, mutual: bool = True
) -> OpenCVMatcher:
    """OpenCV SIFT (default parameters, ``num_features``), L2, ratio 0.8 (0->1) + mutual check."""
    _no_arg("sift", arg)
    return OpenCVMatcher("sift", cv2.SIFT_create(nfeatures=num_features), cv2.NORM_L2, ratio, mutual)


def orb_matcher(
    arg: str | None = None, num_features: int = 4000, ratio: float = 0.9, mutual: bool = True
) -> OpenCVMatcher:
    """OpenCV ORB (``num_features``), Hamming, ratio 0.9 (0->1) + mutual check."""
    _no_arg("orb", arg)
    return OpenCVMatcher("orb", cv2.ORB_create(nfeatures=num_features), cv2.NORM_HAMMING, ratio,
                         mutual)
