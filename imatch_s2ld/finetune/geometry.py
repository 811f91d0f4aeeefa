"""Where a window's geometry (BA poses and landmarks) comes from: ``--geometry-from {matcher,sift,both}``.

- ``matcher``: the S2LD matches of the window (iMatching: the matcher supervises itself).
- ``sift``: classical SIFT tracks (OpenCV SIFT per frame, ratio test + mutual check per pair), for
  starting matchers too weak to initialise BA on a new domain.
- ``both``: the union: S2LD keypoints first, SIFT keypoints after them (indices offset per frame),
  pair matches concatenated. The two sets never share a keypoint, so their tracks stay separate but
  are solved in one BA (shared poses).

Whatever the source, the loss supervises the S2LD predictions only: keypoints ``< num_s2ld[f]`` of
frame ``f`` are S2LD's.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from ..ba.tracks import Keypoints, PairMatches
from ..matchers.opencv import ratio_mutual_match
from .window import WindowMatches

__all__ = ["GEOMETRY_SOURCES", "merge_window_matches", "sift_window_matches"]

GEOMETRY_SOURCES = ("matcher", "sift", "both")


def sift_window_matches(
    images: Sequence[np.ndarray],
    pairs: Sequence[tuple[int, int]],
    num_features: int = 2000,
    ratio: float = 0.8,
    contrast_threshold: float = 0.04,
) -> WindowMatches:
    """SIFT keypoints detected once per frame and matched per pair (so tracks can form).

    Args:
        images: per frame ``(H, W)`` uint8 grayscale.
        pairs: frame index pairs ``(a, b)``.
        num_features: SIFT features per frame; ratio: Lowe's ratio (plus a mutual check).
        contrast_threshold: OpenCV's SIFT ``contrastThreshold`` (0.04 = OpenCV's default; lower keeps
            the weak extrema of low-contrast frames: fog, night).
    Returns:
        :class:`WindowMatches`; keypoint confidence 1, match confidence ``1 - distance ratio``.
    """
    sift = cv2.SIFT_create(nfeatures=int(num_features), contrastThreshold=float(contrast_threshold))
    xy, desc = [], []
    for image in images:
        kp, d = sift.detectAndCompute(np.ascontiguousarray(image), None)
        xy.append(np.array([k.pt for k in kp], dtype=np.float64).reshape(-1, 2))
        desc.append(d)
    out = []
    for a, b in pairs:
        idx, r = ratio_mutual_match(desc[a], desc[b], cv2.NORM_L2, ratio, mutual=True)
        out.append(PairMatches.create(a, b, idx, 1.0 - r))
    return WindowMatches(Keypoints.create(xy), out)


def merge_window_matches(first: WindowMatches, second: WindowMatches) -> WindowMatches:
    """Union of two keypoint/match sets of the same frames: ``first``'s keypoints keep their indices,
    ``second``'s are appended after them (per frame). Pairs are concatenated per ``(i, j)``."""
    n = first.keypoints.num_frames
    if second.keypoints.num_frames != n:
        raise ValueError(f"cannot merge matches of {n} and {second.keypoints.num_frames} frames")
    offset = first.keypoints.counts
    kps = Keypoints.create(
        [np.concatenate([a, b]) for a, b in zip(first.keypoints.xy, second.keypoints.xy)],
        [np.concatenate([a, b]) for a, b in zip(first.keypoints.confidence, second.keypoints.confidence)],
    )
    merged: dict[tuple[int, int], list[tuple[np.ndarray, np.ndarray]]] = {}
    for pm in first.pairs:
        merged.setdefault((pm.i, pm.j), []).append((pm.matches, pm.confidence))
    for pm in second.pairs:
        shifted = pm.matches + np.array([offset[pm.i], offset[pm.j]], dtype=np.int64)
        merged.setdefault((pm.i, pm.j), []).append((shifted, pm.confidence))
    pairs = [
        PairMatches.create(
            i, j, np.concatenate([m for m, _ in parts]).reshape(-1, 2), np.concatenate([c for _, c in parts])
        )
        for (i, j), parts in merged.items()
    ]
    return WindowMatches(kps, pairs)
