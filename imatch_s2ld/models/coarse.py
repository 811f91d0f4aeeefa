"""Sparse (coarse) matching: dual-softmax between keypoint descriptors, mutual nearest neighbours."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..conf import merge_conf


@dataclass(frozen=True)
class CoarseMatches:
    """scores (B, N0, N1) dual-softmax probabilities (0 for invalid pairs); matches as
    b, i, j (M,) long and conf (M,) float."""

    scores: torch.Tensor
    b: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    conf: torch.Tensor


class CoarseMatcher(nn.Module):
    """Dual-softmax score matrix with temperature; mutual nearest neighbours above a threshold."""

    default_conf: dict[str, Any] = {"temperature": 0.1, "threshold": 0.2}

    def __init__(self, d_model: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        self.temperature = float(conf["temperature"])
        self.threshold = float(conf["threshold"])
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, valid0: torch.Tensor,
                valid1: torch.Tensor) -> CoarseMatches:
        """Args:
            desc0 (B, N0, d), desc1 (B, N1, d); valid0 (B, N0), valid1 (B, N1) bool.
        Returns:
            :class:`CoarseMatches`.
        """
        d = desc0.shape[-1]
        f0 = self.proj(desc0) / d**0.5
        f1 = self.proj(desc1) / d**0.5
        sim = torch.einsum("bnd,bmd->bnm", f0, f1) / self.temperature
        pair = valid0[:, :, None] & valid1[:, None, :]
        # large finite negative (not -inf): no NaN for rows without valid entries, also in bf16
        sim = sim.masked_fill(~pair, torch.finfo(sim.dtype).min)
        scores = sim.float().softmax(dim=1) * sim.float().softmax(dim=2)
        scores = scores * pair.to(scores.dtype)
        with torch.no_grad():
            keep = scores > self.threshold
            keep &= scores == scores.amax(dim=2, keepdim=True)
            keep &= scores == scores.amax(dim=1, keepdim=True)
            keep &= pair
            b, i, j = keep.nonzero(as_tuple=True)
        return CoarseMatches(scores=scores, b=b, i=i, j=j, conf=scores[b, i, j])
