"""Keypoint head on the coarse map, top-k selection and position-adjusted descriptors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..conf import merge_conf
from .sampling import sample_features

#: Stride of the coarse map in input pixels.
COARSE_STRIDE = 8


@dataclass(frozen=True)
class Keypoints:
    """Selected keypoints of one image batch (N is static for a batch).

    kpts (B, N, 2) pixels (x, y); logits (B, N) detection logits; valid (B, N) bool;
    cells (B, N) long flat index of the coarse cell (row * w + col).
    """

    kpts: torch.Tensor
    logits: torch.Tensor
    valid: torch.Tensor
    cells: torch.Tensor


class KeypointHead(nn.Module):
    """Per coarse cell: a detection logit and a tanh-bounded sub-cell offset.

    The keypoint of cell (i, j) is at ``(8j + 3.5, 8i + 3.5) + 8 * max_offset * tanh(o)`` (pixel
    centres), so it may leave its cell by up to ``max_offset - 0.5`` cells.
    """

    default_conf: dict[str, Any] = {"max_keypoints": 1024, "max_offset": 0.75}

    def __init__(self, d_coarse: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        self.max_keypoints = int(conf["max_keypoints"])
        self.max_offset = float(conf["max_offset"])
        self.net = nn.Sequential(nn.Conv2d(d_coarse, d_coarse, 3, padding=1), nn.ReLU(inplace=True),
                                 nn.Conv2d(d_coarse, 3, 1))

    def forward(self, coarse: torch.Tensor, image_size: tuple[int, int],
                mask: torch.Tensor | None = None) -> Keypoints:
        """Args:
            coarse: (B, C, h, w) coarse features, h = H/8, w = W/8.
            image_size: (H, W) of the input image.
            mask: optional (B, h, w) bool, True for valid (not padded) cells.
        Returns:
            :class:`Keypoints` with N = min(max_keypoints, h * w).
        """
        b, _, h, w = coarse.shape
        out = self.net(coarse).float()
        logits = out[:, 0].reshape(b, h * w)
        offsets = torch.tanh(out[:, 1:]).reshape(b, 2, h * w).transpose(1, 2) * self.max_offset
        if mask is None:
            cell_valid = torch.ones(b, h * w, dtype=torch.bool, device=coarse.device)
        else:
            cell_valid = mask.reshape(b, h * w).to(torch.bool)
        rank = logits.detach().masked_fill(~cell_valid, torch.finfo(logits.dtype).min)
        n = min(self.max_keypoints, h * w)
        cells = rank.topk(n, dim=1, sorted=True).indices  # (B, N)
        cols = (cells % w).to(logits.dtype)
        rows = torch.div(cells, w, rounding_mode="floor").to(logits.dtype)
        centre = torch.stack([cols, rows], dim=-1) * COARSE_STRIDE + (COARSE_STRIDE - 1) / 2
        off = offsets.gather(1, cells[..., None].expand(-1, -1, 2))
        kpts = centre + off * COARSE_STRIDE
        hh, ww = image_size
        kpts = torch.stack([kpts[..., 0].clamp(0, ww - 1), kpts[..., 1].clamp(0, hh - 1)], dim=-1)
        return Keypoints(kpts=kpts, logits=logits.gather(1, cells), valid=cell_valid.gather(1, cells),
                         cells=cells)


class FourierPositionalEncoding(nn.Module):
    """Learned Fourier features of normalised keypoint positions: (B, N, 2) -> (B, N, dim)."""

    def __init__(self, dim: int, sigma: float = 1.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"positional encoding dim must be even, got {dim}")
        self.proj = nn.Linear(2, dim // 2, bias=False)
        nn.init.normal_(self.proj.weight, std=sigma * 2 * math.pi)
        self.mix = nn.Linear(dim, dim)

    def forward(self, kpts: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
        """kpts (B, N, 2) pixels -> (B, N, dim); positions normalised by the longer image side."""
        h, w = image_size
        size = kpts.new_tensor([w, h])
        norm = (kpts - size / 2) / max(h, w)
        x = self.proj(norm)
        return self.mix(torch.cat([x.cos(), x.sin()], dim=-1))


class KeypointDescriptor(nn.Module):
    """Coarse descriptors adjusted with the keypoint positions.

    ``desc = W [coarse(p); fine(p)] + PE(p)``: coarse and fine features sampled bilinearly at the
    (sub-cell) keypoint position ``p``, plus a learned positional encoding of ``p``.
    """

    def __init__(self, d_coarse: int, d_fine: int, d_model: int) -> None:
        super().__init__()
        self.proj = nn.Linear(d_coarse + d_fine, d_model)
        self.pos = FourierPositionalEncoding(d_model)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor, kpts: torch.Tensor,
                image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            coarse: (B, Cc, H/8, W/8); fine: (B, Cf, H/2, W/2); kpts: (B, N, 2) pixels.
        Returns:
            desc (B, N, d_model) and the positional encoding pe (B, N, d_model).
        """
        feats = torch.cat([sample_features(coarse, kpts, image_size),
                           sample_features(fine, kpts, image_size)], dim=-1)
        pe = self.pos(kpts, image_size)
        return self.proj(feats) + pe, pe
