"""The supervised loss of S2LD (owned by the model: :meth:`S2LD.loss`).

Terms (weights in ``S2LD.default_conf["loss"]``):

- ``coarse``: focal loss on the dual-softmax score matrix against the ground-truth pairs of the
  detected keypoints (:func:`imatch_s2ld.losses.supervision.keypoint_correspondences`: depth + pose
  warp with occlusion check, mutual nearest within ``gt_radius_px``). Known negatives are pairs where
  at least one of the two keypoints has a valid warp.
- ``fine``: per refinement level, L2 between the predicted location and the warp of the keypoint,
  in units of the level's window radius, weighted by the inverse predicted variance
  (:func:`imatch_s2ld.losses.matching.fine_loss`), on every match whose target lies inside the window;
  ``uncertainty``: Gaussian NLL that calibrates the predicted std.
- ``repeatability`` / ``localisation``: keypoint-head terms
  (:func:`imatch_s2ld.losses.matching.keypoint_loss`).
- ``triangulation``: the shared :class:`imatch_s2ld.losses.TriangulationRegularizer` on the final
  matches with the supervising pose and depth, weighted by the (detached) match confidence.

Logged (detached) metrics: ``coarse_precision`` (share of predicted matches whose keypoint j lies
within ``gt_radius_px`` of the warp of keypoint i), ``num_pred``, ``num_gt``, ``fine_err_px_l{k}``
(median error per level), ``tri_reproj_px`` (median reprojection error of the regularizer).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..conf import merge_conf
from ..errors import InputError
from ..losses.matching import fine_loss, focal_loss, keypoint_loss, uncertainty_nll
from ..losses.supervision import KeypointCorrespondences
from ..losses.triangulation import TriangulationRegularizer

if TYPE_CHECKING:
    from .s2ld import S2LDOutput

#: Batch keys the supervision needs (``MegaDepthPairDataset`` items, collated).
SUPERVISION_KEYS = ("depth0", "depth1", "K0", "K1", "T_0to1", "T_1to0")


@dataclass(frozen=True)
class LossOutput:
    """``total``: 0-d float32 tensor to backpropagate; ``terms``: detached 0-d tensors for logging
    (the weighted loss terms and the metrics listed in the module docstring)."""

    total: Tensor
    terms: dict[str, Tensor]


def supervision_from_batch(batch: Mapping[str, Any]) -> dict[str, Tensor]:
    """Pick the supervision tensors (depth0/1 (B, H, W), K0/1 (B, 3, 3), T_0to1/T_1to0 (B, 4, 4))."""
    missing = [k for k in SUPERVISION_KEYS if k not in batch]
    if missing:
        raise InputError(f"training batch lacks {', '.join(missing)} (needed for supervision)")
    return {k: batch[k] for k in SUPERVISION_KEYS}


class S2LDLoss(nn.Module):
    """Computes :class:`LossOutput` from an :class:`S2LDOutput` produced with ``supervision``."""

    default_conf: dict[str, Any] = {
        "gt_radius_px": 5.0,  # GT pair: mutual nearest keypoints within this distance after the warp
        "depth_tolerance": 0.2,  # occlusion check: relative depth difference
        "focal_alpha": 0.25,
        "focal_gamma": 2.0,
        "pos_weight": 1.0,
        "neg_weight": 1.0,
        "coarse_weight": 1.0,
        "fine_weight": 1.0,
        "uncertainty_weight": 0.05,
        "repeatability_weight": 0.5,
        "localisation_weight": 0.05,
        "triangulation_weight": 0.1,
        "triangulation": TriangulationRegularizer.default_conf,
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = conf = merge_conf(self.default_conf, conf)
        self.regularizer = TriangulationRegularizer(conf["triangulation"])

    def forward(self, pred: S2LDOutput, batch: Mapping[str, Any],
                window_radii: tuple[float, ...]) -> LossOutput:
        """Args:
            pred: output of ``S2LD.forward(..., supervision=...)`` (``pred.gt`` set).
            batch: the training batch (supervision keys, see :data:`SUPERVISION_KEYS`).
            window_radii: half-width in pixels of each refinement level's window.
        """
        gt = pred.gt
        if gt is None:
            raise InputError("S2LD.loss needs the output of forward(..., supervision=...)")
        c = self.conf
        terms: dict[str, Tensor] = {}

        # Coarse: focal loss on known pairs.
        kv0, kv1 = pred.kpts_valid0, pred.kpts_valid1
        known = (kv0[:, :, None] & kv1[:, None, :]) & (gt.valid0[:, :, None] | gt.valid1[:, None, :])
        terms["coarse"] = c["coarse_weight"] * focal_loss(
            pred.scores, gt.matrix, known, c["focal_alpha"], c["focal_gamma"], c["pos_weight"],
            c["neg_weight"])

        # Fine: every match (predicted + ground-truth) whose keypoint has a valid warp.
        b, i = pred.matches_b, pred.matches_i
        target, tvalid = gt.warped0[b, i], gt.valid0[b, i]
        fine_terms, unc_terms = [], []
        centre = pred.kpts1[b, pred.matches_j]
        for k, (level, radius) in enumerate(zip(pred.fine_levels, window_radii)):
            inside = tvalid & ((target - centre.detach()).abs().amax(dim=-1) <= radius)
            pred_n, std_n, target_n = level.expectation / radius, level.std / radius, target / radius
            fine_terms.append(fine_loss(pred_n, std_n, target_n, inside))
            unc_terms.append(uncertainty_nll(pred_n, std_n, target_n, inside))
            err = (level.expectation.detach() - target).norm(dim=-1)[inside]
            terms[f"fine_err_px_l{k}"] = err.median() if err.numel() else err.new_tensor(float("nan"))
            centre = level.expectation
        zero = pred.mkpts1.sum() * 0.0
        terms["fine"] = c["fine_weight"] * torch.stack([zero, *fine_terms]).sum()
        terms["uncertainty"] = c["uncertainty_weight"] * torch.stack([zero, *unc_terms]).sum()

        # Keypoint head.
        rep, loc = keypoint_loss(pred.kpts_logits0, pred.kpts_logits1, pred.kpts0, pred.kpts1, gt.matrix,
                                 gt.warped0, gt.warped1, gt.valid0, gt.valid1, kv0, kv1)
        terms["repeatability"] = c["repeatability_weight"] * rep
        terms["localisation"] = c["localisation_weight"] * loc

        # Triangulation regularizer on the final matches, per batch element.
        tri, reproj = self._triangulation(pred, batch)
        terms["triangulation"] = c["triangulation_weight"] * tri

        total = sum(terms[k] for k in ("coarse", "fine", "uncertainty", "repeatability", "localisation",
                                       "triangulation"))
        terms = {k: v.detach().float() for k, v in terms.items()}
        terms.update(self._metrics(pred, gt))
        terms["tri_reproj_px"] = reproj
        return LossOutput(total=total.float(), terms=terms)

    def _triangulation(self, pred: S2LDOutput, batch: Mapping[str, Any]) -> tuple[Tensor, Tensor]:
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
            return zero, zero.detach() + float("nan")
        w = torch.tensor(weights, device=zero.device)
        tri = (torch.stack(losses) * w).sum() / w.sum()
        return tri, torch.cat(reproj).median().detach().float()

    def _metrics(self, pred: S2LDOutput, gt: KeypointCorrespondences) -> dict[str, Tensor]:
        with torch.no_grad():
            own = ~pred.matches_extra
            b, i, j = pred.matches_b[own], pred.matches_i[own], pred.matches_j[own]
            dist = (gt.warped0[b, i] - pred.kpts1[b, j].float()).norm(dim=-1)
            known = gt.valid0[b, i]
            correct = (dist < self.conf["gt_radius_px"]) & known
            n_known = known.sum()
            precision = correct.sum().float() / n_known.clamp_min(1).float()
            return {
                "coarse_precision": torch.where(n_known > 0, precision, precision.new_tensor(float("nan"))),
                "num_pred": own.sum().float() / pred.kpts0.shape[0],
                "num_gt": gt.matrix.sum().float() / pred.kpts0.shape[0],
            }
