"""Ground truth for detected keypoints from depth and poses (the MegaDepth/LoFTR rule)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..geometry.warp import warp_keypoints


@dataclass(frozen=True)
class KeypointCorrespondences:
    """Ground-truth correspondences between two sets of detected keypoints.

    Attributes:
        matrix: ``(B, N0, N1)`` bool, true for mutual nearest pairs (keypoint j is the closest
            keypoint to the warp of i, and i the closest to the warp of j, both within the radius).
        warped0: ``(B, N0, 2)`` keypoints 0 warped into image 1 (pixels); valid0 ``(B, N0)``.
        warped1: ``(B, N1, 2)`` keypoints 1 warped into image 0; valid1 ``(B, N1)``.
        dist0: ``(B, N0)`` distance (pixels, image 1) from the warp of i to its nearest keypoint;
            ``inf`` where the warp is invalid.
    """

    matrix: Tensor
    warped0: Tensor
    valid0: Tensor
    warped1: Tensor
    valid1: Tensor
    dist0: Tensor


def keypoint_correspondences(
    kpts0: Tensor,
    kpts1: Tensor,
    depth0: Tensor,
    depth1: Tensor,
    T_0to1: Tensor,
    T_1to0: Tensor,
    K0: Tensor,
    K1: Tensor,
    radius_px: float = 4.0,
    kpts_valid0: Tensor | None = None,
    kpts_valid1: Tensor | None = None,
    depth_tolerance: float = 0.2,
) -> KeypointCorrespondences:
    """Warp both keypoint sets with depth and poses and match them by mutual nearest neighbour.

    Args:
        kpts0: ``(B, N0, 2)``, kpts1: ``(B, N1, 2)`` detected keypoints (pixels).
        depth0, depth1: ``(B, H, W)`` depth maps at the keypoints' resolution (0 = unknown).
        T_0to1, T_1to0: ``(B, 4, 4)``; K0, K1: ``(B, 3, 3)``.
        radius_px: maximum distance between a warped keypoint and its partner.
        kpts_valid0, kpts_valid1: ``(B, N)`` masks of real (not padded) keypoints.
    Returns:
        :class:`KeypointCorrespondences` (no gradient: it is a target).
    """
    with torch.no_grad():
        k0, k1 = kpts0.detach().float(), kpts1.detach().float()
        valid0, warped0 = warp_keypoints(k0, depth0.float(), depth1.float(), T_0to1.float(),
                                         K0.float(), K1.float(), depth_tolerance)
        valid1, warped1 = warp_keypoints(k1, depth1.float(), depth0.float(), T_1to0.float(),
                                         K1.float(), K0.float(), depth_tolerance)
        if kpts_valid0 is not None:
            valid0 = valid0 & kpts_valid0
        if kpts_valid1 is not None:
            valid1 = valid1 & kpts_valid1
        d01 = torch.cdist(warped0, k1)  # (B, N0, N1): warp of i vs keypoint j, in image 1
        d10 = torch.cdist(k0, warped1)  # (B, N0, N1): keypoint i vs warp of j, in image 0
        big = torch.finfo(d01.dtype).max
        both = valid0[:, :, None] & valid1[:, None, :]
        d01 = torch.where(both, d01, torch.full_like(d01, big))
        d10 = torch.where(both, d10, torch.full_like(d10, big))
        nn01 = d01.argmin(dim=2)  # (B, N0)
        nn10 = d10.argmin(dim=1)  # (B, N1)
        dist0 = d01.gather(2, nn01[..., None])[..., 0]
        mutual = nn10.gather(1, nn01) == torch.arange(k0.shape[1], device=k0.device)[None]
        close = (dist0 < radius_px) & (d10.gather(2, nn01[..., None])[..., 0] < radius_px)
        keep = mutual & close & valid0
        matrix = torch.zeros_like(both)
        matrix.scatter_(2, nn01[..., None], keep[..., None])
        dist0 = torch.where(valid0, dist0, torch.full_like(dist0, float("inf")))
    return KeypointCorrespondences(matrix, warped0, valid0, warped1, valid1, dist0)
