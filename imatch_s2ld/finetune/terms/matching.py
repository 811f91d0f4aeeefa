"""Matching term: the match probabilities (``scores``) get pseudo-labels from the BA geometry. Tracked
matches and predicted matches within ``epipolar_pos_px`` (Sampson distance with the BA relative pose) are
positives, predicted matches beyond ``epipolar_neg_px`` negatives (focal loss, as in pretraining)."""

from __future__ import annotations

import torch
from torch import Tensor

from ...losses.matching import focal_loss
from ..targets import sampson_px
from .base import LossTerm, Pair, Window

__all__ = ["MatchingTerm"]


class MatchingTerm(LossTerm):
    name = "matching"
    metrics = ("pseudo_positives", "pseudo_negatives")
    default_conf = {
        "matching_weight": 0.0,
        "epipolar_pos_px": 1.5,  # predicted match within this Sampson distance: positive
        "epipolar_neg_px": 6.0,  # beyond this: negative (in between: not labelled)
    }

    def needs_tracks(self) -> bool:
        return self.active

    def start(self, window: Window) -> None:
        self._losses: list[Tensor] = []
        self._pos = self._neg = 0

    def add_pair(self, window: Window, pair: Pair) -> None:
        out, extra = pair.out, pair.tracked
        d = sampson_px(out.mkpts0, out.mkpts1, pair.T_ab, pair.Ka, pair.Kb)
        pos = extra | (d < float(self.conf["epipolar_pos_px"]))
        neg = ~extra & (d > float(self.conf["epipolar_neg_px"]))
        labelled = pos | neg
        target = torch.zeros_like(out.scores, dtype=torch.bool)
        valid = torch.zeros_like(target)
        b, i, j = out.matches_b[labelled], out.matches_i[labelled], out.matches_j[labelled]
        valid[b, i, j] = True
        target[b, i, j] = pos[labelled]
        self._losses.append(focal_loss(out.scores, target, valid))
        self._pos, self._neg = self._pos + int(pos.sum()), self._neg + int(neg.sum())

    def finish(self, window: Window) -> tuple[Tensor, dict[str, Tensor]]:
        new = window.images.new_tensor
        loss = torch.stack(self._losses).mean() if self._losses else window.images.new_zeros(())
        return loss, {"pseudo_positives": new(float(self._pos)), "pseudo_negatives": new(float(self._neg))}
