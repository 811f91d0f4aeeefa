"""Reprojection residuals and their analytic Jacobians on SE3 (left perturbation, PyPose ``se3`` order).

A pose update is ``T <- Exp(delta) T`` with ``delta = (rho, phi)`` (translation first, as
``pp.se3``); to first order ``Exp(delta) p = p + rho + phi x p``. For a camera point
``p = R X + t`` and pixel ``uv = (K p)[:2] / p_z``:

- ``d uv / d p = (K[:2] - uv K[2]) / p_z``  (2x3, any upper-triangular K)
- ``d uv / d delta = d uv / d p @ [I, -[p]_x]``  (2x6)
- ``d uv / d X = d uv / d p @ R``  (2x3)
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["reprojection_jacobians"]


def reprojection_jacobians(
    K: Tensor, R: Tensor, t: Tensor, X: Tensor, xy: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Residuals ``uv - xy`` and Jacobians for ``O`` observations (one camera and point each).

    Args:
        K: ``(O, 3, 3)``; R: ``(O, 3, 3)``; t: ``(O, 3)`` world-to-camera; X: ``(O, 3)`` world points;
        xy: ``(O, 2)`` observed pixels.
    Returns:
        residuals ``(O, 2)``, J_pose ``(O, 2, 6)``, J_point ``(O, 2, 3)``, depth ``(O,)``. Rows with
        depth <= 0 are not meaningful (callers mask them).
    """
    p = (R @ X[..., None])[..., 0] + t  # (O, 3)
    z = p[:, 2]
    zs = z.where(z > 0, z.new_ones(()))
    q = (K @ p[..., None])[..., 0]
    uv = q[:, :2] / zs[:, None]
    J_p = (K[:, :2, :] - uv[..., None] * K[:, 2:3, :]) / zs[:, None, None]  # (O, 2, 3)
    # J_p @ -[p]_x written out: column k of -[p]_x is e_k x p.
    px, py, pz = p[:, 0, None], p[:, 1, None], p[:, 2, None]
    a, b, c = J_p[:, :, 0], J_p[:, :, 1], J_p[:, :, 2]  # (O, 2) each
    J_phi = torch.stack([c * py - b * pz, a * pz - c * px, b * px - a * py], dim=-1)
    J_pose = torch.cat([J_p, J_phi], dim=-1)
    return uv - xy, J_pose, J_p @ R, z
