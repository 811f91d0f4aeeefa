"""Rigid poses, essential/fundamental matrices and pose errors.

Poses are world-to-camera ``T_cw`` (4x4); ``T_0to1 = T_1w @ inv(T_0w)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def invert_pose(T: Tensor) -> Tensor:
    """Invert rigid transforms ``(..., 4, 4) -> (..., 4, 4)`` using ``R^T`` (no general inverse)."""
    R, t = T[..., :3, :3], T[..., :3, 3:]
    Rt = R.transpose(-1, -2)
    top = torch.cat([Rt, -Rt @ t], dim=-1)
    bottom = torch.zeros_like(T[..., 3:, :])
    bottom[..., 3] = 1
    return torch.cat([top, bottom], dim=-2)


def relative_pose(T_0w: Tensor, T_1w: Tensor) -> Tensor:
    """``T_0to1`` (maps camera-0 to camera-1 coordinates) from world-to-camera poses ``(..., 4, 4)``."""
    return T_1w @ invert_pose(T_0w)


def skew(v: Tensor) -> Tensor:
    """Cross-product matrix ``[v]_x``: ``(..., 3) -> (..., 3, 3)``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def essential_from_pose(T_0to1: Tensor) -> Tensor:
    """Essential matrix ``E = [t]_x R`` with ``x1^T E x0 = 0`` for normalized points.

    Args:
        T_0to1: ``(..., 4, 4)``.
    Returns:
        ``(..., 3, 3)``.
    """
    return skew(T_0to1[..., :3, 3]) @ T_0to1[..., :3, :3]


def fundamental_from_essential(E: Tensor, K0: Tensor, K1: Tensor) -> Tensor:
    """``F = K1^-T E K0^-1`` with ``p1^T F p0 = 0`` in pixels: ``(..., 3, 3)`` each."""
    return torch.linalg.inv(K1).transpose(-1, -2) @ E @ torch.linalg.inv(K0)


def rotation_error_deg(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle of ``R_est^T R_gt`` in degrees."""
    cos = (np.trace(np.asarray(R_est).T @ np.asarray(R_gt)) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def translation_error_deg(t_est: np.ndarray, t_gt: np.ndarray, min_gt_norm: float = 0.0) -> float:
    """Angle between translation directions in degrees, up to sign: ``min(e, 180 - e)``.

    The essential matrix fixes the direction only up to sign, hence the fold. If ``|t_gt|`` is at
    most ``min_gt_norm`` (pure rotation) the direction is undefined and the error is 0.
    """
    t_est, t_gt = np.asarray(t_est, float).ravel(), np.asarray(t_gt, float).ravel()
    n_gt, n_est = np.linalg.norm(t_gt), np.linalg.norm(t_est)
    if n_gt <= min_gt_norm:
        return 0.0
    if n_est == 0:
        return float("inf")
    cos = np.clip(t_est @ t_gt / (n_est * n_gt), -1.0, 1.0)
    err = float(np.degrees(np.arccos(cos)))
    return min(err, 180.0 - err)


def pose_error(R_est: np.ndarray | None, t_est: np.ndarray | None, T_0to1: np.ndarray) -> tuple[float, float]:
    """Rotation and translation-direction errors (degrees) of an estimate against ``T_0to1`` (4x4).

    A missing estimate (``None``) is a failure: ``(inf, inf)``. The usual summary is ``max`` of both.
    """
    if R_est is None or t_est is None:
        return float("inf"), float("inf")
    T_0to1 = np.asarray(T_0to1, float)
    return rotation_error_deg(R_est, T_0to1[:3, :3]), translation_error_deg(t_est, T_0to1[:3, 3])
