"""Bilinear sampling of feature maps at full-resolution pixel positions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
    if isinstance(feat, PointwiseFeatureMap):
        return feat.sample(pts, image_size)
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


class PointwiseFeatureMap:
    """A full-resolution (B, C, H, W) feature map that is a pointwise function of coarser maps,
    evaluated only at the pixels that are read.

    The map is ``head(cat([up_s(level) for level, s in zip(levels, strides)]))``, where ``up_s``
    is ``F.interpolate(level, scale_factor=s, mode="bilinear", align_corners=False)`` and ``head``
    acts on each pixel alone (e.g. 1x1 convolutions). :func:`sample_features` and
    :func:`sample_windows` on it give the values they give on that dense map (to float rounding),
    computing ``head`` only at the integer pixels their bilinear samples read: the local-dense
    windows cover a small part of the image. Gradients reach ``head`` and ``levels``.

    Args:
        levels: (B, C_i, H / s_i, W / s_i) maps.
        strides: s_i (1: the level is read as it is).
        head: (P, sum C_i) -> (P, C).
        channels: C.
    """

    def __init__(self, levels: Sequence[torch.Tensor], strides: Sequence[int],
                 head: Callable[[torch.Tensor], torch.Tensor], channels: int) -> None:
        if len(levels) != len(strides) or not levels:
            raise ValueError("PointwiseFeatureMap: one stride per level, at least one level")
        h, w = levels[0].shape[-2] * strides[0], levels[0].shape[-1] * strides[0]
        for lv, s in zip(levels, strides):
            if lv.shape[0] != levels[0].shape[0] or (lv.shape[-2] * s, lv.shape[-1] * s) != (h, w):
                raise ValueError(f"PointwiseFeatureMap: level {tuple(lv.shape)} at stride {s} does not "
                                 f"cover {h}x{w}")
        self.levels, self.strides, self.head, self.channels = tuple(levels), tuple(strides), head, channels
        self.size = (h, w)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.levels[0].shape[0], self.channels, *self.size))

    @property
    def device(self) -> torch.device:
        return self.levels[0].device

    def __getitem__(self, index: slice) -> PointwiseFeatureMap:
        """Batch slicing (``fmap[b:b + 1]``)."""
        return PointwiseFeatureMap([lv[index] for lv in self.levels], self.strides, self.head, self.channels)

    def chunk(self, chunks: int) -> tuple[PointwiseFeatureMap, ...]:
        parts = zip(*(lv.chunk(chunks) for lv in self.levels))
        return tuple(PointwiseFeatureMap(list(p), self.strides, self.head, self.channels) for p in parts)

    def dense(self) -> torch.Tensor:
        """The whole map, (B, C, H, W) (for checks and pictures; sampling never builds it)."""
        b, c, h, w = self.shape
        inputs = torch.cat([lv if s == 1 else F.interpolate(lv, scale_factor=s, mode="bilinear",
                                                            align_corners=False)
                            for lv, s in zip(self.levels, self.strides)], dim=1)
        pixels = self.head(inputs.permute(0, 2, 3, 1).reshape(b * h * w, -1))
        return pixels.reshape(b, h, w, c).permute(0, 3, 1, 2)

    def at_pixels(self, b: int, pix: torch.Tensor) -> torch.Tensor:
        """The map at integer pixels (P, 2) (x, y) inside the image, of batch element ``b`` -> (P, C)."""
        h, w = self.size
        inputs = []
        for lv, s in zip(self.levels, self.strides):
            if s == 1:
                inputs.append(lv[b][:, pix[:, 1], pix[:, 0]].T)
                continue
            # F.interpolate (align_corners=False) reads level coordinates (q + 0.5) / s - 0.5,
            # clamped to the level: grid_sample at the pixel's grid position with border padding
            grid = pixels_to_grid(pix.to(lv.dtype), (h, w))[None, :, None]  # (1, P, 1, 2)
            inputs.append(F.grid_sample(lv[b:b + 1], grid, mode="bilinear", padding_mode="border",
                                        align_corners=False)[0, :, :, 0].T)
        return self.head(torch.cat(inputs, dim=1))

    def sample(self, pts: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """Bilinear samples at pixels (B, N, 2) (zero outside the image) -> (B, N, C) float32, as
        :func:`sample_features` on the dense map."""
        if tuple(image_size) != self.size:
            raise ValueError(f"PointwiseFeatureMap: image size {tuple(image_size)} != map size {self.size}")
        h, w = self.size
        pts = pts.float()
        base = pts.detach().floor()
        frac = pts - base
        base = base.long()
        out = []
        for b in range(pts.shape[0]):
            corners, weights = [], []
            for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
                q = base[b] + base.new_tensor([dx, dy])
                inside = (q[:, 0] >= 0) & (q[:, 0] < w) & (q[:, 1] >= 0) & (q[:, 1] < h)
                wx = frac[b, :, 0] if dx else 1 - frac[b, :, 0]
                wy = frac[b, :, 1] if dy else 1 - frac[b, :, 1]
                corners.append(q[:, 1].clamp(0, h - 1) * w + q[:, 0].clamp(0, w - 1))
                weights.append(wx * wy * inside)
            index = torch.stack(corners)  # (4, N) linear pixel index
            unique, inverse = torch.unique(index, return_inverse=True)
            values = self.at_pixels(b, torch.stack([unique % w, unique // w], dim=1)).float()  # (U, C)
            out.append((values[inverse] * torch.stack(weights)[..., None]).sum(dim=0))
        return torch.stack(out) if out else pts.new_zeros(0, pts.shape[1], self.channels)
