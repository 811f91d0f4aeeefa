"""Coarse term: focal loss on the dual-softmax score matrix against the ground-truth pairs of the detected
keypoints (depth + pose warp with occlusion check, mutual nearest within ``gt_radius_px``). Known
negatives are pairs where at least one of the two keypoints has a valid warp. Metrics: ``coarse_precision``
(share of predicted matches whose keypoint j lies within ``gt_radius_px`` of the warp of keypoint i),
``num_pred``, ``num_gt`` (per pair)."""

from __future__ import annotations

import torch

from ...losses.matching import focal_loss
from .base import SupervisedTerm

__all__ = ["CoarseTerm"]


class CoarseTerm(SupervisedTerm):
    name = "coarse"
    outputs = ("coarse",)
    default_conf = {"focal_alpha": 0.25, "focal_gamma": 2.0, "pos_weight": 1.0, "neg_weight": 1.0,
                    "coarse_weight": 1.0}

    def __call__(self, pred, batch, window_radii):
        c, gt = self.conf, pred.gt
        kv0, kv1 = pred.kpts_valid0, pred.kpts_valid1
        known = (kv0[:, :, None] & kv1[:, None, :]) & (gt.valid0[:, :, None] | gt.valid1[:, None, :])
        loss = focal_loss(pred.scores, gt.matrix, known, c["focal_alpha"], c["focal_gamma"], c["pos_weight"],
                          c["neg_weight"])
        with torch.no_grad():
            own = ~pred.matches_extra
            b, i, j = pred.matches_b[own], pred.matches_i[own], pred.matches_j[own]
            dist = (gt.warped0[b, i] - pred.kpts1[b, j].float()).norm(dim=-1)
            valid = gt.valid0[b, i]
            correct = (dist < c["gt_radius_px"]) & valid
            n_known = valid.sum()
            precision = correct.sum().float() / n_known.clamp_min(1).float()
            metrics = {
                "coarse_precision": torch.where(n_known > 0, precision, precision.new_tensor(float("nan"))),
                "num_pred": own.sum().float() / pred.kpts0.shape[0],
                "num_gt": gt.matrix.sum().float() / pred.kpts0.shape[0],
            }
        return {"coarse": loss}, metrics
