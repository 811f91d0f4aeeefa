"""Fine (local-dense) term, on every match whose target (the warp of the keypoint) lies inside the level's
window, per refinement level (``fine``), chosen by ``fine_loss``:

- ``l2`` (default): L2 between the predicted location and the target, in units of the level's window
  radius, weighted by the inverse predicted variance;
- ``classification`` (S2DNet): cross-entropy of the window's softmax against the target spread bilinearly
  over its four nearest cells: the correspondence map is trained to peak at the right cell;
- ``both``: their sum (the paper's caution: cross-entropy punishes a near miss like a far one).

``uncertainty``: the Gaussian NLL that calibrates the predicted std. Metrics: ``fine_err_px_l{k}``, the
median error of level ``k`` in pixels."""

from __future__ import annotations

import torch

from ...errors import InputError
from ...losses.matching import bilinear_cell_targets, fine_loss, uncertainty_nll, window_classification_loss
from .base import SupervisedTerm

FINE_LOSSES = ("l2", "classification", "both")

__all__ = ["FineTerm"]


class FineTerm(SupervisedTerm):
    name = "fine"
    outputs = ("fine", "uncertainty")
    default_conf = {"fine_weight": 1.0, "uncertainty_weight": 0.05, "fine_loss": "l2"}

    def __init__(self, conf):
        super().__init__(conf)
        if conf["fine_loss"] not in FINE_LOSSES:
            raise InputError(f"model.loss.fine_loss: expected one of {', '.join(FINE_LOSSES)}, "
                             f"got {conf['fine_loss']!r}")

    def __call__(self, pred, batch, window_radii):
        gt = pred.gt
        b, i = pred.matches_b, pred.matches_i
        target, tvalid = gt.warped0[b, i], gt.valid0[b, i]
        fine_terms, unc_terms, metrics = [], [], {}
        zero = pred.mkpts1.sum() * 0.0
        centre = pred.kpts1[b, pred.matches_j]
        for k, (level, radius) in enumerate(zip(pred.fine_levels, window_radii)):
            inside = tvalid & ((target - centre.detach()).abs().amax(dim=-1) <= radius)
            pred_n, std_n, target_n = level.expectation / radius, level.std / radius, target / radius
            mode = self.conf["fine_loss"]
            level_loss = fine_loss(pred_n, std_n, target_n, inside) if mode != "classification" else zero
            if mode != "l2":
                if level.logits is None:
                    raise InputError("model.loss.fine_loss: the local-dense levels give no window logits")
                cells = (target - level.centre) / level.spacing + (level.size - 1) / 2
                dist = bilinear_cell_targets(cells, level.size)
                level_loss = level_loss + window_classification_loss(level.logits, dist, inside)
            fine_terms.append(level_loss)
            unc_terms.append(uncertainty_nll(pred_n, std_n, target_n, inside))
            err = (level.expectation.detach() - target).norm(dim=-1)[inside]
            metrics[f"fine_err_px_l{k}"] = err.median() if err.numel() else err.new_tensor(float("nan"))
            centre = level.expectation
        losses = {"fine": torch.stack([zero, *fine_terms]).sum(),
                  "uncertainty": torch.stack([zero, *unc_terms]).sum()}
        return losses, metrics
