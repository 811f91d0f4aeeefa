"""Gauss-Newton term (GN-Net): for a feature-metric Gauss-Newton level (``fine.gauss_newton.iterations``
> 0), the negative log-likelihood of the ground truth under the level's estimate and covariance,
``e1 + e2`` (:func:`~imatch_s2ld.models.gauss_newton.gauss_newton_loss`), on the matches whose ground truth
lies within ``gauss_newton_radius_px`` of the level's start. Zero without such a level. Metric:
``gn_err_px``, the median error of the level."""

from __future__ import annotations

from ..gauss_newton import GaussNewtonStep, gauss_newton_loss
from .base import SupervisedTerm

__all__ = ["GaussNewtonTerm"]


class GaussNewtonTerm(SupervisedTerm):
    name = "gauss_newton"
    outputs = ("gauss_newton",)
    default_conf = {"gauss_newton_weight": 0.1, "gauss_newton_radius_px": 3.0}

    def __call__(self, pred, batch, window_radii):
        zero = pred.mkpts1.sum() * 0.0
        gt = pred.gt
        b, i = pred.matches_b, pred.matches_i
        target, tvalid = gt.warped0[b, i], gt.valid0[b, i]
        radius = float(self.conf["gauss_newton_radius_px"])
        losses, metrics = [], {}
        for level in pred.fine_levels:
            if level.information is None:
                continue
            near = tvalid & ((target - level.centre).norm(dim=-1) <= radius)
            step = GaussNewtonStep(level.expectation, level.information)
            e1, e2 = gauss_newton_loss(step, target, near)
            losses.append(e1 + e2)
            err = (level.expectation.detach() - target).norm(dim=-1)[near]
            metrics["gn_err_px"] = err.median() if err.numel() else err.new_tensor(float("nan"))
        return {"gauss_newton": sum(losses, zero)}, metrics
