"""Local dense matching: progressive sub-pixel refinement of sparse matches in fine-feature windows."""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import nn

from ..conf import merge_conf
from ..errors import InputError
from .attention import AttentionLayer
from .gauss_newton import covariance_std, gauss_newton_refine
from .sampling import sample_windows


class FineLevel(NamedTuple):
    """One refinement level: ``expectation`` (M, 2) pixels of image 1 and ``std`` (M,) pixels; for the
    classification loss also the window's ``logits`` (M, size * size, row-major), its ``centre`` (M, 2)
    pixels of image 1, ``size`` (cells per side) and ``spacing`` (pixels per cell); a Gauss-Newton level
    has ``information`` (its start is ``centre``)."""

    expectation: torch.Tensor
    std: torch.Tensor
    logits: torch.Tensor | None = None
    centre: torch.Tensor | None = None
    size: int = 0
    spacing: float = 0.0
    information: torch.Tensor | None = None  # (M, 2, 2): a Gauss-Newton level's H (covariance H^-1)


def window_offsets(size: int, spacing: float, device: torch.device | None = None) -> torch.Tensor:
    """(size*size, 2) offsets (x, y) in pixels of a square window, row-major, centre in the middle."""
    r = (torch.arange(size, device=device, dtype=torch.float32) - (size - 1) / 2) * spacing
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=-1)


class RefinementLevel(nn.Module):
    """Windows around the match in both images, self+cross attention inside the windows, then the
    centre feature of window 0 is correlated with window 1 -> heatmap -> soft-argmax and std."""

    def __init__(self, d_fine: int, d_model: int, size: int, spacing: float, n_heads: int,
                 n_layers: int, temperature: float) -> None:
        super().__init__()
        if size % 2 == 0 or size < 3:
            raise InputError(f"fine window sizes must be odd and >= 3, got {size}")
        self.size, self.spacing, self.temperature = size, float(spacing), float(temperature)
        self.register_buffer("offsets", window_offsets(size, spacing), persistent=False)
        self.pos = nn.Parameter(torch.randn(size * size, d_fine) * 0.1)
        self.merge_coarse = nn.Linear(d_model, d_fine)
        self.self_layers = nn.ModuleList([AttentionLayer(d_fine, n_heads, "sdpa") for _ in range(n_layers)])
        self.cross_layers = nn.ModuleList([AttentionLayer(d_fine, n_heads, "sdpa") for _ in range(n_layers)])
        self.proj = nn.Linear(d_fine, d_fine)

    def forward(self, fine0: torch.Tensor, fine1: torch.Tensor, centre0: torch.Tensor, centre1: torch.Tensor,
                batch_index: torch.Tensor, desc0: torch.Tensor, desc1: torch.Tensor,
                size0: tuple[int, int], size1: tuple[int, int]) -> FineLevel:
        """Args:
            fine0, fine1: (B, Cf, H/2, W/2) fine maps; centre0, centre1: (M, 2) window centres in
            pixels of image 0 / 1; batch_index: (M,) long; desc0, desc1: (M, d_model) coarse
            descriptors of the matched keypoints; size0/size1: (H, W) of the images.
        Returns:
            :class:`FineLevel`: expectation (M, 2) pixels of image 1 and std (M,) pixels.
        """
        dtype = desc0.dtype
        w0 = sample_windows(fine0, centre0, batch_index, self.offsets, size0).to(dtype)  # (M, K, Cf)
        w1 = sample_windows(fine1, centre1, batch_index, self.offsets, size1).to(dtype)
        w0 = w0 + self.pos + self.merge_coarse(desc0)[:, None]
        w1 = w1 + self.pos + self.merge_coarse(desc1)[:, None]
        # Runs also for M = 0 (empty batch), so every parameter is in the graph (needed by DDP).
        for self_layer, cross_layer in zip(self.self_layers, self.cross_layers):
            w0, w1 = self_layer(w0, w0), self_layer(w1, w1)
            w0, w1 = cross_layer(w0, w1), cross_layer(w1, w0)
        f0 = self.proj(w0[:, w0.shape[1] // 2]).float()  # (M, Cf) centre of window 0
        f1 = self.proj(w1).float()  # (M, K, Cf)
        sim = torch.einsum("mc,mkc->mk", f0, f1) / (f0.shape[-1] ** 0.5 * self.temperature)
        heat = sim.softmax(dim=-1)
        mean = heat @ self.offsets  # (M, 2)
        var = heat @ self.offsets.square() - mean.square()
        std = var.sum(dim=-1).clamp(min=1e-10).sqrt()
        return FineLevel(expectation=centre1.float() + mean, std=std, logits=sim, centre=centre1.float(),
                         size=self.size, spacing=self.spacing)


class FineMatcher(nn.Module):
    """Progressive refinement: level 1 re-estimates the match from the coarse keypoint position on
    a wide window, later levels re-centre a narrower, denser window on the previous estimate.

    ``window_sizes`` / ``spacings`` (input pixels) per level; the defaults give +-6 px at 2 px
    spacing (every fine-map pixel) then +-2 px at 1 px spacing (half a fine pixel, bilinear).
    No levels (``window_sizes: []``) is the sparse-only ablation: matches stay at the keypoints.
    """

    default_conf: dict[str, Any] = {
        "window_sizes": [7, 5], "spacings": [2.0, 1.0], "n_heads": 4, "n_layers": 1, "temperature": 1.0,
        # GN-Net's feature-metric Gauss-Newton level after the windows (0 iterations: none): refines the
        # last estimate on the fine maps and gives its covariance as the uncertainty (gauss_newton.py);
        # in training it starts from the estimate plus Gaussian noise of start_noise_px
        "gauss_newton": {"iterations": 0, "step_px": 1.0, "normalize": True, "start_noise_px": 0.5},
    }

    def __init__(self, d_fine: int, d_model: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        sizes, spacings = list(conf["window_sizes"]), list(conf["spacings"])
        if len(sizes) != len(spacings):
            raise InputError("fine: window_sizes and spacings need the same length")
        self.levels = nn.ModuleList([
            RefinementLevel(d_fine, d_model, int(s), float(sp), int(conf["n_heads"]), int(conf["n_layers"]),
                            float(conf["temperature"]))
            for s, sp in zip(sizes, spacings)
        ])

    def forward(self, fine0: torch.Tensor, fine1: torch.Tensor, pts0: torch.Tensor, pts1: torch.Tensor,
                batch_index: torch.Tensor, desc0: torch.Tensor, desc1: torch.Tensor,
                size0: tuple[int, int], size1: tuple[int, int]) -> tuple[FineLevel, ...]:
        """Args:
            pts0: (M, 2) keypoint i in image 0; pts1: (M, 2) its coarse match j in image 1; others as
            :meth:`RefinementLevel.forward`.
        Returns:
            one :class:`FineLevel` per level (the last is the final estimate).
        """
        out = []
        centre1 = pts1
        for level in self.levels:
            res = level(fine0, fine1, pts0, centre1, batch_index, desc0, desc1, size0, size1)
            out.append(res)
            centre1 = res.expectation.detach()
        gn = self.conf["gauss_newton"]
        if int(gn["iterations"]) > 0 and pts0.shape[0] > 0:
            start = centre1.float()
            if self.training and float(gn["start_noise_px"]) > 0:
                start = start + torch.randn_like(start) * float(gn["start_noise_px"])
            step = gauss_newton_refine(fine0, fine1, pts0.float(), start, batch_index, size0, size1,
                                       int(gn["iterations"]), float(gn["step_px"]),
                                       normalize=bool(gn["normalize"]))
            out.append(FineLevel(step.mu, covariance_std(step.H), centre=start, information=step.H))
        return tuple(out)
