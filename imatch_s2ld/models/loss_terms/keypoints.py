"""Keypoint-head term: ``repeatability`` (BCE of the detection logits at ground-truth pairs) and
``localisation`` (the detections of both views pulled onto the same 3D points)."""

from __future__ import annotations

from ...losses.matching import keypoint_loss
from .base import SupervisedTerm

__all__ = ["KeypointTerm"]


class KeypointTerm(SupervisedTerm):
    name = "keypoints"
    outputs = ("repeatability", "localisation")
    default_conf = {"repeatability_weight": 0.5, "localisation_weight": 0.05}

    def __call__(self, pred, batch, window_radii):
        gt = pred.gt
        rep, loc = keypoint_loss(pred.kpts_logits0, pred.kpts_logits1, pred.kpts0, pred.kpts1, gt.matrix,
                                 gt.warped0, gt.warped1, gt.valid0, gt.valid1, pred.kpts_valid0,
                                 pred.kpts_valid1)
        return {"repeatability": rep, "localisation": loc}, {}
