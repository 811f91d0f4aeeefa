"""Pinhole camera: homogeneous coordinates, projection, unprojection, intrinsics scaling.

Pixel convention (see :mod:`imatch_s2ld.conventions`): integer pixel = pixel centre.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def _check_last(x: Tensor, size: int, name: str) -> None:
    if x.shape[-1] != size:
        raise ValueError(f"{name} must have last dimension {size}, got shape {tuple(x.shape)}")


def to_homogeneous(x: Tensor) -> Tensor:
    """Append a 1: ``(..., D) -> (..., D + 1)``."""
    return torch.cat([x, torch.ones_like(x[..., :1])], dim=-1)


def from_homogeneous(x: Tensor, eps: float = 1e-12) -> Tensor:
    """Divide by the last coordinate: ``(..., D + 1) -> (..., D)``. ``|w| < eps`` is clamped to eps."""
    w = x[..., -1:]
    w = torch.where(w.abs() < eps, torch.full_like(w, eps) * torch.where(w < 0, -1.0, 1.0), w)
    return x[..., :-1] / w


def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply rigid transforms.

    Args:
        T: ``(..., 4, 4)`` transforms.
        points: ``(..., N, 3)`` points.
    Returns:
        ``(..., N, 3)`` transformed points ``R @ p + t``.
    """
    _check_last(points, 3, "points")
    if T.shape[-2:] != (4, 4):
        raise ValueError(f"T must be (..., 4, 4), got {tuple(T.shape)}")
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def project(points: Tensor, K: Tensor) -> Tensor:
    """Project camera-frame points to pixels.

    Args:
        points: ``(..., N, 3)`` points in the camera frame (z forward).
        K: ``(..., 3, 3)`` intrinsics.
    Returns:
        ``(..., N, 2)`` pixel coordinates ``(x, y)``.
    """
    _check_last(points, 3, "points")
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (..., 3, 3), got {tuple(K.shape)}")
    return from_homogeneous(points @ K.transpose(-1, -2))


def unproject(kpts: Tensor, depth: Tensor, K: Tensor) -> Tensor:
    """Lift pixels with depth (camera z) to camera-frame points.

    Args:
        kpts: ``(..., N, 2)`` pixels ``(x, y)``.
        depth: ``(..., N)`` depth (z) of each pixel.
        K: ``(..., 3, 3)`` intrinsics.
    Returns:
        ``(..., N, 3)`` camera-frame points.
    """
    _check_last(kpts, 2, "kpts")
    if depth.shape != kpts.shape[:-1]:
        raise ValueError(f"depth shape {tuple(depth.shape)} must be kpts shape without the last dim")
    rays = to_homogeneous(kpts) @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * depth[..., None]


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics after resizing an image by ``(sx, sy)`` (new size / old size per axis).

    With the pixel-centre convention a pixel ``x`` maps to ``(x + 0.5) * sx - 0.5``, hence
    ``fx' = fx * sx`` and ``cx' = (cx + 0.5) * sx - 0.5`` (likewise in y).

    Args:
        K: ``(..., 3, 3)`` numpy array or tensor.
    Returns:
        Scaled intrinsics of the same type and shape.
    """
    if isinstance(K, Tensor):
        S = torch.tensor([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]],
                         dtype=K.dtype, device=K.device)
    else:
        K = np.asarray(K, dtype=np.float64)
        S = np.array([[sx, 0.0, 0.5 * sx - 0.5], [0.0, sy, 0.5 * sy - 0.5], [0.0, 0.0, 1.0]])
    return S @ K
