"""Co-visibility of two rendered views by warping ground-truth depth (MegaDepth-style overlap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..geometry.warp import warp_keypoints


@dataclass(frozen=True)
class Covisibility:
    """Warp of a pixel grid of view 0 into view 1.

    Attributes:
        fraction: co-visible share of view 0's grid pixels that have depth.
        kpts0: (M, 2) co-visible grid pixels of view 0 (x, y).
        kpts1: (M, 2) where they land in view 1.
    """

    fraction: float
    kpts0: np.ndarray
    kpts1: np.ndarray


def warp_grid(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T_0to1: np.ndarray,
    step: int = 8,
    rel_tol: float = 0.05,
) -> Covisibility:
    """Warp every ``step``-th pixel of view 0 into view 1 and test co-visibility.

    A pixel is co-visible when :func:`imatch_s2ld.geometry.warp_keypoints` (the LoFTR rule) accepts
    it: it has depth, lands inside view 1 in front of the camera, and view 1's depth at the nearest
    pixel agrees with the warped depth within ``rel_tol`` (relative), i.e. it is not occluded.

    Args:
        depth0, depth1: float32 (H0, W0), (H1, W1) depth maps (0 = none).
        K0, K1: (3, 3) intrinsics. T_0to1: (4, 4) camera-0 to camera-1 transform.
    """
    h0, w0 = depth0.shape
    off = step // 2
    v, u = np.mgrid[off:h0:step, off:w0:step]
    has = depth0[v, u] > 0
    grid = np.stack([u[has], v[has]], axis=1).astype(np.float64)
    if len(grid) == 0:
        return Covisibility(0.0, np.zeros((0, 2)), np.zeros((0, 2)))

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(x, dtype=np.float64))[None]

    valid, warped = warp_keypoints(t(grid), t(depth0), t(depth1), t(T_0to1), t(K0), t(K1), rel_tol)
    ok, kpts1 = valid[0].numpy(), warped[0].numpy()
    return Covisibility(float(ok.sum()) / len(grid), grid[ok], kpts1[ok])


def pair_overlap(
    depth0: np.ndarray,
    depth1: np.ndarray,
    K0: np.ndarray,
    K1: np.ndarray,
    T0: np.ndarray,
    T1: np.ndarray,
    step: int = 8,
) -> tuple[float, np.ndarray]:
    """MegaDepth-like overlap score and a central match of a pair of views.

    Returns:
        score: ``min`` of the co-visible fractions in both directions, in ``[0, 1]``.
        central: float64 (4,) ``x0, y0, x1, y1`` of the co-visible view-0 grid pixel nearest the
            centroid of the co-visible area, and its exact location in view 1 (NaN if none).
    """
    T_0to1 = T1 @ np.linalg.inv(T0)
    fwd = warp_grid(depth0, depth1, K0, K1, T_0to1, step)
    bwd = warp_grid(depth1, depth0, K1, K0, np.linalg.inv(T_0to1), step)
    score = min(fwd.fraction, bwd.fraction)
    if len(fwd.kpts0) == 0:
        return score, np.full(4, np.nan)
    k = int(np.argmin(np.linalg.norm(fwd.kpts0 - fwd.kpts0.mean(0), axis=1)))
    return score, np.concatenate([fwd.kpts0[k], fwd.kpts1[k]]).astype(np.float64)
