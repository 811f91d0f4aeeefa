"""Co-visibility of two rendered views by warping ground-truth depth (MegaDepth-style overlap)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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

    A pixel is co-visible when it has depth, lands inside view 1 (pixel-centre convention:
    ``[-0.5, W - 0.5)``) in front of the camera, and view 1's depth at the nearest pixel agrees
    with the warped depth within ``rel_tol`` (relative), i.e. it is not occluded.

    Args:
        depth0, depth1: float32 (H0, W0), (H1, W1) depth maps (0 = none).
        K0, K1: (3, 3) intrinsics. T_0to1: (4, 4) camera-0 to camera-1 transform.
    """
    h0, w0 = depth0.shape
    h1, w1 = depth1.shape
    off = step // 2
    v, u = np.mgrid[off:h0:step, off:w0:step]
    z0 = depth0[v, u].astype(np.float64)
    has = z0 > 0
    u, v, z0 = u[has].astype(np.float64), v[has].astype(np.float64), z0[has]
    if len(z0) == 0:
        return Covisibility(0.0, np.zeros((0, 2)), np.zeros((0, 2)))
    X0 = (np.linalg.inv(K0) @ np.stack([u, v, np.ones_like(u)])) * z0
    X1 = T_0to1[:3, :3] @ X0 + T_0to1[:3, 3:4]
    z1 = X1[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        p1 = (K1 @ X1)[:2] / z1
    inside = (z1 > 0) & (p1[0] >= -0.5) & (p1[0] < w1 - 0.5) & (p1[1] >= -0.5) & (p1[1] < h1 - 0.5)
    ok = np.zeros_like(inside)
    ui = np.clip(np.rint(p1[0][inside]), 0, w1 - 1).astype(int)
    vi = np.clip(np.rint(p1[1][inside]), 0, h1 - 1).astype(int)
    d1 = depth1[vi, ui]
    ok[inside] = (d1 > 0) & (np.abs(d1 - z1[inside]) < rel_tol * z1[inside])
    kpts0 = np.stack([u[ok], v[ok]], axis=1)
    kpts1 = p1[:, ok].T
    return Covisibility(float(ok.sum()) / len(z0), kpts0, kpts1)


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
