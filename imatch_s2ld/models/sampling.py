"""Bilinear sampling of feature maps at full-resolution pixel positions."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pixels_to_grid(pts: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Full-resolution pixels ``(x, y)`` (pixel centres, see :mod:`imatch_s2ld.conventions`) to
    ``grid_sample`` coordinates with ``align_corners=False``.

    This holds for any feature map of stride ``s`` whose cell ``j`` covers pixels ``s*j .. s*j+s-1``.
    """
    h, w = image_size
    scale = pts.new_tensor([2.0 / w, 2.0 / h])
    return (pts + 0.5) * scale - 1.0


def sample_features(feat: torch.Tensor, pts: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly sample ``feat`` at pixel positions (float32, outside the image gives zeros).

    Args:
        feat: (B, C, h, w) feature map of an image of size ``image_size = (H, W)``.
        pts: (B, N, 2) pixel positions (x, y) in the full-resolution image.
    Returns:
        (B, N, C) float32 features.
    """
    with torch.autocast(feat.device.type, enabled=False):
        grid = pixels_to_grid(pts.float(), image_size)[:, :, None]  # (B, N, 1, 2)
        out = F.grid_sample(feat.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[..., 0].transpose(1, 2)


def sample_windows(feat: torch.Tensor, centres: torch.Tensor, batch_index: torch.Tensor,
                   offsets: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Sample a window of points around each centre, each from its own batch element.

    Args:
        feat: (B, C, h, w) feature maps.
        centres: (M, 2) window centres in full-resolution pixels.
        batch_index: (M,) long, the batch element of each centre.
        offsets: (K, 2) pixel offsets of the window samples relative to the centre.
    Returns:
        (M, K, C) float32 features (M = 0 gives an empty tensor).
    """
    m, k, c = centres.shape[0], offsets.shape[0], feat.shape[1]
    out = torch.zeros(m, k, c, device=feat.device, dtype=torch.float32)
    for b in range(feat.shape[0]):
        idx = (batch_index == b).nonzero(as_tuple=False)[:, 0]
        if idx.numel() == 0:
            continue
        pts = (centres[idx, None, :] + offsets[None]).reshape(1, -1, 2)
        sampled = sample_features(feat[b:b + 1], pts, image_size).reshape(idx.numel(), k, c)
        out = out.index_copy(0, idx, sampled)
    return out
