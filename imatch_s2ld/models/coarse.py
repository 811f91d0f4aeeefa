"""Sparse (coarse) matching: a score matrix between keypoint descriptors, mutual nearest neighbours.

``coarse.mode``: ``dual_softmax`` (S2LD/LoFTR: softmax over rows times softmax over columns of a
similarity with temperature) or ``lightglue`` (LightGlue's assignment: the same double softmax plus
each keypoint's learned matchability, can start from LightGlue's weights).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..conf import merge_conf
from ..errors import InputError

COARSE_MODES = ("dual_softmax", "lightglue")


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

    default_conf: dict[str, Any] = {"mode": "dual_softmax", "temperature": 0.1, "threshold": 0.2}

    def __init__(self, d_model: int, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        if conf["mode"] != "dual_softmax":
            raise InputError(f"coarse.mode: CoarseMatcher is dual_softmax, got {conf['mode']!r}")
        self.temperature = float(conf["temperature"])
        self.threshold = float(conf["threshold"])
        self.proj = nn.Linear(d_model, d_model)

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, valid0: torch.Tensor,
                valid1: torch.Tensor, depth: int | None = None) -> CoarseMatches:
        """Args:
            desc0 (B, N0, d), desc1 (B, N1, d); valid0 (B, N0), valid1 (B, N1) bool; depth: the
            attention layers run (unused here).
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
        return mutual_matches(scores * pair.to(scores.dtype), pair, self.threshold)


def mutual_matches(scores: torch.Tensor, pair: torch.Tensor, threshold: float) -> CoarseMatches:
    """Mutual nearest neighbours of ``scores`` (B, N0, N1) above ``threshold`` among valid ``pair``s."""
    with torch.no_grad():
        keep = scores > threshold
        keep &= scores == scores.amax(dim=2, keepdim=True)
        keep &= scores == scores.amax(dim=1, keepdim=True)
        keep &= pair
        b, i, j = keep.nonzero(as_tuple=True)
    return CoarseMatches(scores=scores, b=b, i=i, j=j, conf=scores[b, i, j])


class AssignmentMatcher(nn.Module):
    """LightGlue's assignment (``coarse.mode=lightglue``): ``P = softmax_rows(S) softmax_cols(S)
    sigmoid(z0) sigmoid(z1)`` with ``S = <W d0, W d1> / sqrt(d)`` and per-keypoint matchability
    logits ``z``; its parameters are kornia's ``MatchAssignment`` (``assign.final_proj``,
    ``assign.matchability``), so LightGlue's weights load into it. Masked keypoints get no mass.
    With ``exits`` (adaptive depth, :class:`~.attention.LightGlueTransformer`), one head per earlier
    layer as well (``exits.i``), used when the attention stopped after layer i + 1."""

    default_conf = CoarseMatcher.default_conf

    def __init__(self, d_model: int, conf: dict[str, Any] | None = None, n_layers: int = 1,
                 exits: bool = False) -> None:
        super().__init__()
        from kornia.feature.lightglue import MatchAssignment

        self.conf = conf = merge_conf(self.default_conf, conf)
        self.threshold = float(conf["threshold"])
        self.n_layers = n_layers
        self.assign = MatchAssignment(d_model)
        self.exits = nn.ModuleList([MatchAssignment(d_model) for _ in range(n_layers - 1)] if exits else [])

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor, valid0: torch.Tensor,
                valid1: torch.Tensor, depth: int | None = None) -> CoarseMatches:
        """Args and returns as :meth:`CoarseMatcher.forward`; scores are LightGlue's assignment
        probabilities; ``depth``: the attention layers run (None: all)."""
        head = self.assign if depth is None or depth >= self.n_layers else self.exits[depth - 1]
        d = desc0.shape[-1]
        f0 = head.final_proj(desc0) / d**0.25
        f1 = head.final_proj(desc1) / d**0.25
        sim = torch.einsum("bnd,bmd->bnm", f0, f1).float()
        pair = valid0[:, :, None] & valid1[:, None, :]
        sim = sim.masked_fill(~pair, torch.finfo(sim.dtype).min)
        z0 = F.logsigmoid(head.matchability(desc0).float())  # (B, N0, 1)
        z1 = F.logsigmoid(head.matchability(desc1).float())
        log_p = sim.log_softmax(dim=2) + sim.log_softmax(dim=1) + z0 + z1.transpose(1, 2)
        scores = log_p.exp() * pair.to(log_p.dtype)
        return mutual_matches(scores, pair, self.threshold)


def build_coarse(d_model: int, conf: dict[str, Any] | None, n_layers: int = 1,
                 exits: bool = False) -> nn.Module:
    """The coarse matcher ``conf["mode"]`` (``n_layers``, ``exits``: the attention's, for lightglue).

    Raises:
        InputError: unknown mode.
    """
    conf = merge_conf(CoarseMatcher.default_conf, conf)
    if conf["mode"] not in COARSE_MODES:
        raise InputError(f"coarse.mode: expected one of {', '.join(COARSE_MODES)}, got {conf['mode']!r}")
    if conf["mode"] == "dual_softmax":
        return CoarseMatcher(d_model, conf)
    return AssignmentMatcher(d_model, conf, n_layers, exits)
