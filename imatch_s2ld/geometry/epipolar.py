"""Epipolar distances between matches under a known relative pose."""

from __future__ import annotations

from torch import Tensor

from .camera import to_homogeneous
from .pose import essential_from_pose


def _check_pairs(kpts0: Tensor, kpts1: Tensor) -> None:
    if kpts0.shape != kpts1.shape or kpts0.shape[-1] != 2:
        raise ValueError(
            f"kpts0/kpts1 must both be (..., N, 2), got {tuple(kpts0.shape)}, {tuple(kpts1.shape)}"
        )


def sampson_distance(kpts0: Tensor, kpts1: Tensor, F: Tensor, squared: bool = True) -> Tensor:
    """Sampson distance of matches to the epipolar geometry ``p1^T F p0 = 0``.

    Args:
        kpts0, kpts1: ``(..., N, 2)`` points (pixels with a fundamental matrix, normalized
            coordinates with an essential matrix).
        F: ``(..., 3, 3)``.
    Returns:
        ``(..., N)`` squared Sampson distance (units of the points squared), or its root.
    """
    _check_pairs(kpts0, kpts1)
    p0, p1 = to_homogeneous(kpts0), to_homogeneous(kpts1)
    Fp0 = p0 @ F.transpose(-1, -2)  # (..., N, 3) epipolar lines in image 1
    Ftp1 = p1 @ F  # (..., N, 3) epipolar lines in image 0
    num = (p1 * Fp0).sum(-1) ** 2
    den = Fp0[..., 0] ** 2 + Fp0[..., 1] ** 2 + Ftp1[..., 0] ** 2 + Ftp1[..., 1] ** 2
    d2 = num / den.clamp_min(1e-15)
    return d2 if squared else d2.sqrt()


def symmetric_epipolar_distance(
    kpts0: Tensor, kpts1: Tensor, T_0to1: Tensor, K0: Tensor, K1: Tensor, squared: bool = True
) -> Tensor:
    """Symmetric epipolar distance in normalized coordinates (the SuperGlue/LoFTR precision metric).

    ``d = (x1^T E x0)^2 * (1 / |(E x0)_xy|^2 + 1 / |(E^T x1)_xy|^2)`` with ``x = K^-1 p``; a
    match is correct when ``d < 5e-4`` (squared).

    Args:
        kpts0, kpts1: ``(..., N, 2)`` pixels.
        T_0to1: ``(..., 4, 4)``; K0, K1: ``(..., 3, 3)``.
    Returns:
        ``(..., N)`` distances (squared by default).
    """
    _check_pairs(kpts0, kpts1)
    x0 = (kpts0 - K0[..., None, :2, 2]) / K0[..., None, [0, 1], [0, 1]]
    x1 = (kpts1 - K1[..., None, :2, 2]) / K1[..., None, [0, 1], [0, 1]]
    x0h, x1h = to_homogeneous(x0), to_homogeneous(x1)
    E = essential_from_pose(T_0to1)
    Ex0 = x0h @ E.transpose(-1, -2)
    Etx1 = x1h @ E
    num = (x1h * Ex0).sum(-1) ** 2
    d2 = num * (
        1.0 / (Ex0[..., 0] ** 2 + Ex0[..., 1] ** 2).clamp_min(1e-15)
        + 1.0 / (Etx1[..., 0] ** 2 + Etx1[..., 1] ** 2).clamp_min(1e-15)
    )
    return d2 if squared else d2.sqrt()
