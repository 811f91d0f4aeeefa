"""Keypoints (a learned head on the coarse map, or the backbone's pretrained detector), top-k
selection and position-adjusted descriptors."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf
from ..errors import InputError
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

    default_conf: dict[str, Any] = {
        "source": "learned",  # learned (this head) | detector (the backbone's pretrained score)
        "max_keypoints": 1024,
        "max_offset": 0.75,  # learned
        "nms_radius": 2,  # detector: strict local maxima in (2r+1)^2 windows, r pixels from the border
        "detection_threshold": 0.2,  # detector: minimum score (ALIKED's default)
    }

    def __init__(self, d_coarse: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        if conf["source"] != "learned":
            raise InputError(f"keypoints.source: KeypointHead is the learned head, got {conf['source']!r}")
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


KEYPOINT_SOURCES = ("learned", "detector")


class DetectorKeypoints(nn.Module):
    """Keypoints from a pretrained detection score map (no parameters): strict local maxima
    (``nms_radius``), the ``max_keypoints`` best above ``detection_threshold``, refined to sub-pixel
    by a soft-argmax (temperature 0.1) over the (2r+1)^2 window, as ALIKED's detector does.

    N = the largest keypoint count in the batch (at most ``max_keypoints``, at least 1); images
    with fewer get padded, invalid entries (a single image has no padding).
    """

    default_conf = KeypointHead.default_conf

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        self.max_keypoints = int(conf["max_keypoints"])
        self.radius = int(conf["nms_radius"])
        self.threshold = float(conf["detection_threshold"])
        if self.max_keypoints < 1 or self.radius < 1:
            raise InputError("keypoints: max_keypoints and nms_radius must be >= 1")
        r = torch.arange(-self.radius, self.radius + 1, dtype=torch.float32)
        yy, xx = torch.meshgrid(r, r, indexing="ij")
        self.register_buffer("grid", torch.stack([xx.reshape(-1), yy.reshape(-1)], -1), persistent=False)

    def forward(self, score: torch.Tensor, image_size: tuple[int, int],
                mask: torch.Tensor | None = None) -> Keypoints:
        """Args:
            score: (B, 1, H, W) detection probability in (0, 1).
            image_size: (H, W).
            mask: optional (B, H/8, W/8) bool, True for valid coarse cells.
        Returns:
            :class:`Keypoints` (N <= max_keypoints; ``logits`` = logit of the score at the keypoint).
        """
        from kornia.geometry.subpix import nms2d

        b, _, h, w = score.shape
        r, k = self.radius, 2 * self.radius + 1
        s = score.detach().float()
        ok = nms2d(s, (k, k), mask_only=True)[:, 0]
        border = torch.zeros(h, w, dtype=torch.bool, device=s.device)
        border[r:h - r, r:w - r] = True
        ok &= border
        if mask is not None:
            ok &= mask.to(torch.bool).repeat_interleave(8, 1).repeat_interleave(8, 2)[:, :h, :w]
        ok &= s[:, 0] > self.threshold
        n = min(self.max_keypoints, h * w)
        cand = s[:, 0].masked_fill(~ok, -1.0).reshape(b, -1)
        top = cand.topk(n, dim=1)
        keep = max(int((top.values > 0).sum(dim=1).max()), 1)
        valid = top.values[:, :keep] > 0
        idx = top.indices[:, :keep]
        x0, y0 = idx % w, torch.div(idx, w, rounding_mode="floor")
        patches = F.unfold(score.float(), k, padding=r)  # (B, k*k, H*W)
        patch = patches.gather(2, idx[:, None].expand(-1, k * k, -1)).transpose(1, 2)  # (B, N, k*k)
        weight = ((patch - patch.amax(-1, keepdim=True).detach()) / 0.1).exp()
        offset = (weight @ self.grid) / weight.sum(-1, keepdim=True)
        kpts = torch.stack([x0, y0], -1).to(offset.dtype) + offset
        kpts = torch.where(valid[..., None], kpts, torch.zeros_like(kpts))
        value = sample_features(score, kpts, image_size)[..., 0].clamp(1e-6, 1 - 1e-6)
        cells = torch.div(kpts[..., 1].detach(), 8, rounding_mode="floor").long() * (w // 8) \
            + torch.div(kpts[..., 0].detach(), 8, rounding_mode="floor").long()
        return Keypoints(kpts=kpts, logits=torch.logit(value), valid=valid, cells=cells)


def build_keypoints(d_coarse: int, has_score: bool, conf: dict[str, Any] | None) -> nn.Module:
    """The keypoint stage ``conf["source"]``: :class:`KeypointHead` or :class:`DetectorKeypoints`.

    Raises:
        InputError: unknown source, or ``detector`` on a backbone without a detection score.
    """
    conf = merge_conf(KeypointHead.default_conf, conf)
    source = conf["source"]
    if source not in KEYPOINT_SOURCES:
        raise InputError(f"keypoints.source: expected one of {', '.join(KEYPOINT_SOURCES)}, got {source!r}")
    if source == "detector":
        if not has_score:
            raise InputError("keypoints.source=detector needs a backbone with a detection score "
                             "(e.g. aliked)")
        return DetectorKeypoints(conf)
    return KeypointHead(d_coarse, conf)


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


DESCRIPTOR_SOURCES = ("learned", "pretrained")


def sampled_features(coarse: torch.Tensor, fine: torch.Tensor, kpts: torch.Tensor,
                     image_size: tuple[int, int]) -> torch.Tensor:
    """The learned descriptor's input: coarse (B, Cc, H/8, W/8) and fine (B, Cf, H/2, W/2) maps
    sampled bilinearly at kpts (B, N, 2) pixels -> (B, N, Cc + Cf)."""
    return torch.cat([sample_features(coarse, kpts, image_size), sample_features(fine, kpts, image_size)], -1)


def normalized_positions(kpts: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Pixels (B, N, 2) -> positions centred on the image and divided by half its longer side
    (LightGlue's normalisation; about [-1, 1])."""
    h, w = image_size
    return (kpts - kpts.new_tensor([w / 2, h / 2])) / (max(h, w) / 2)


class KeypointDescriptor(nn.Module):
    """Keypoint descriptors adjusted with the keypoint positions.

    ``desc = W f(p) + PE(p)`` (``positional="additive"``: a learned Fourier encoding added, the S2LD
    transformer's input) or ``desc = W f(p)`` with rotary encodings of ``p`` for LightGlue-style
    attention (``positional="rotary"``). ``f(p)`` is the raw descriptor: the coarse and fine maps
    sampled at the (sub-cell) keypoint (``descriptor.source=learned``, see :func:`sampled_features`)
    or the backbone's pretrained descriptor (``pretrained``).
    """

    def __init__(self, d_in: int, d_model: int, positional: str = "additive", n_heads: int = 4) -> None:
        super().__init__()
        self.positional = positional
        self.proj = nn.Linear(d_in, d_model)
        if positional == "additive":
            self.pos = FourierPositionalEncoding(d_model)
        elif positional == "rotary":
            from kornia.feature.lightglue import LearnableFourierPositionalEncoding

            head = d_model // n_heads
            self.rotary = LearnableFourierPositionalEncoding(2, head, head)
        else:
            raise InputError(f"positional encoding {positional!r} is not additive or rotary")

    def forward(self, raw: torch.Tensor, kpts: torch.Tensor,
                image_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Args:
            raw: (B, N, d_in) raw descriptors; kpts: (B, N, 2) pixels; image_size: (H, W).
        Returns:
            desc (B, N, d_model) and the positional encoding: additive (B, N, d_model), or rotary
            (2, B, 1, N, d_model / n_heads) cos/sin.
        """
        desc = self.proj(raw)
        if self.positional == "additive":
            pe = self.pos(kpts, image_size)
            return desc + pe, pe
        return desc, self.rotary(normalized_positions(kpts.float(), image_size).to(desc.dtype))
