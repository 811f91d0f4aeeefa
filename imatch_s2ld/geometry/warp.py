"""Ground-truth correspondences by depth warping (the MegaDepth/LoFTR supervision rule)."""

from __future__ import annotations

import torch
from torch import Tensor

from .camera import project, transform_points, unproject


def sample_depth_nearest(depth: Tensor, kpts: Tensor) -> Tensor:
    """Depth at the nearest pixel of each keypoint; 0 outside the image.

    Args:
        depth: ``(B, H, W)``.
        kpts: ``(B, N, 2)`` pixels ``(x, y)`` (integer = pixel centre).
    Returns:
        ``(B, N)`` depths.
    """
    B, H, W = depth.shape
    ij = kpts.round().long()
    x, y = ij[..., 0], ij[..., 1]
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    flat = (y.clamp(0, H - 1) * W + x.clamp(0, W - 1))
    d = torch.gather(depth.reshape(B, H * W), 1, flat)
    return torch.where(inside, d, torch.zeros_like(d))


def warp_keypoints(
    kpts0: Tensor,
    depth0: Tensor,
    depth1: Tensor,
    T_0to1: Tensor,
    K0: Tensor,
    K1: Tensor,
    depth_tolerance: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """Warp keypoints of image 0 into image 1 and flag the ones with a valid correspondence.

    A keypoint is valid when depth0 at its nearest pixel is non-zero, its warp lies in front of
    camera 1 and inside image 1, and depth1 at the nearest pixel of the warp agrees with the
    warped depth to within ``depth_tolerance`` (relative): the occlusion check of LoFTR.

    Args:
        kpts0: ``(B, N, 2)`` pixels in image 0.
        depth0, depth1: ``(B, H0, W0)``, ``(B, H1, W1)`` depth maps (0 = unknown).
        T_0to1: ``(B, 4, 4)``; K0, K1: ``(B, 3, 3)``.
    Returns:
        valid: ``(B, N)`` bool; kpts0_in_1: ``(B, N, 2)`` warped pixels (meaningful where valid).
    """
    if kpts0.dim() != 3 or kpts0.shape[-1] != 2:
        raise ValueError(f"kpts0 must be (B, N, 2), got {tuple(kpts0.shape)}")
    if depth0.dim() != 3 or depth1.dim() != 3:
        raise ValueError("depth0 and depth1 must be (B, H, W)")
    d0 = sample_depth_nearest(depth0, kpts0)
    pts1 = transform_points(T_0to1, unproject(kpts0, d0, K0))
    z1 = pts1[..., 2]
    kpts0_in_1 = project(pts1, K1)
    H1, W1 = depth1.shape[-2:]
    x, y = kpts0_in_1[..., 0], kpts0_in_1[..., 1]
    inside = (x > -0.5) & (x < W1 - 0.5) & (y > -0.5) & (y < H1 - 0.5)
    d1 = sample_depth_nearest(depth1, kpts0_in_1)
    consistent = (d1 - z1).abs() < depth_tolerance * d1
    valid = (d0 > 0) & (z1 > 0) & inside & (d1 > 0) & consistent
    return valid, kpts0_in_1
