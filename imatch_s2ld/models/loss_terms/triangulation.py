"""Triangulation term: the shared :class:`~imatch_s2ld.losses.TriangulationRegularizer` on the final
matches of each pair with the supervising pose and depth, weighted by the (detached) match confidence.
Metric: ``tri_reproj_px``, the median reprojection error of the regularizer."""

from __future__ import annotations

import torch

from ...losses.triangulation import TriangulationRegularizer
from .base import SupervisedTerm

__all__ = ["TriangulationTerm"]


class TriangulationTerm(SupervisedTerm):
    name = "triangulation"
    outputs = ("triangulation",)
    default_conf = {"triangulation_weight": 0.1, "triangulation": TriangulationRegularizer.default_conf}

    def __init__(self, conf):
        super().__init__(conf)
        self.regularizer = TriangulationRegularizer(conf["triangulation"])

    def __call__(self, pred, batch, window_radii):
        losses, weights, reproj = [], [], []
        for bi in range(pred.kpts0.shape[0]):
            sel = pred.matches_b == bi
            if not sel.any():
                continue
            depth0, depth1 = batch["depth0"][bi], batch["depth1"][bi]
            out = self.regularizer(
                pred.mkpts0[sel], pred.mkpts1[sel], batch["K0"][bi], batch["K1"][bi], batch["T_0to1"][bi],
                weights=pred.mconf[sel].detach().float(), depth0=depth0, depth1=depth1,
                image_size=(depth0.shape[-1], depth0.shape[-2]))
            if out.num_valid:
                losses.append(out.loss)
                weights.append(float(out.num_valid))
                reproj.append(out.reproj_px[out.valid])
        zero = pred.mkpts1.sum() * 0.0
        if not losses:
            return {"triangulation": zero}, {"tri_reproj_px": zero.detach() + float("nan")}
        w = torch.tensor(weights, device=zero.device)
        tri = (torch.stack(losses) * w).sum() / w.sum()
        return {"triangulation": tri}, {"tri_reproj_px": torch.cat(reproj).median().detach().float()}
