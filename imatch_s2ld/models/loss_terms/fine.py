"""Fine (local-dense) term: per refinement level, L2 between the predicted location and the warp of the
keypoint, in units of the level's window radius, weighted by the inverse predicted variance, on every match
whose target lies inside the window (``fine``); and the Gaussian NLL that calibrates the predicted std
(``uncertainty``). Metrics: ``fine_err_px_l{k}``, the median error of level ``k`` in pixels."""

from __future__ import annotations

import torch

from ...losses.matching import fine_loss, uncertainty_nll
from .base import SupervisedTerm

__all__ = ["FineTerm"]


class FineTerm(SupervisedTerm):
    name = "fine"
    outputs = ("fine", "uncertainty")
    default_conf = {"fine_weight": 1.0, "uncertainty_weight": 0.05}

    def __call__(self, pred, batch, window_radii):
        gt = pred.gt
        b, i = pred.matches_b, pred.matches_i
        target, tvalid = gt.warped0[b, i], gt.valid0[b, i]
        fine_terms, unc_terms, metrics = [], [], {}
        centre = pred.kpts1[b, pred.matches_j]
        for k, (level, radius) in enumerate(zip(pred.fine_levels, window_radii)):
            inside = tvalid & ((target - centre.detach()).abs().amax(dim=-1) <= radius)
            pred_n, std_n, target_n = level.expectation / radius, level.std / radius, target / radius
            fine_terms.append(fine_loss(pred_n, std_n, target_n, inside))
            unc_terms.append(uncertainty_nll(pred_n, std_n, target_n, inside))
            err = (level.expectation.detach() - target).norm(dim=-1)[inside]
            metrics[f"fine_err_px_l{k}"] = err.median() if err.numel() else err.new_tensor(float("nan"))
            centre = level.expectation
        zero = pred.mkpts1.sum() * 0.0
        losses = {"fine": torch.stack([zero, *fine_terms]).sum(),
                  "uncertainty": torch.stack([zero, *unc_terms]).sum()}
        return losses, metrics
