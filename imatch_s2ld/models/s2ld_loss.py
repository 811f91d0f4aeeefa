"""The supervised loss of S2LD (owned by the model: :meth:`S2LD.loss`).

Terms (weights in ``S2LD.default_conf["loss"]``), each one object in :mod:`.loss_terms` (one file per
term, registered in :data:`.loss_terms.TERMS`):

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

from torch import Tensor, nn

from ..conf import merge_conf
from ..errors import InputError
from .loss_terms import TERMS, SupervisedTerm

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
    """Computes :class:`LossOutput` from an :class:`S2LDOutput` produced with ``supervision``: the
    weighted sum of the terms' losses (:data:`.loss_terms.TERMS`, in order)."""

    #: options shared by the terms and the supervision, then each term's (weights included)
    default_conf: dict[str, Any] = {
        "gt_radius_px": 5.0,  # GT pair: mutual nearest keypoints within this distance after the warp
        "depth_tolerance": 0.2,  # occlusion check: relative depth difference
        **{k: v for term in TERMS.values() for k, v in term.default_conf.items()},
    }

    def __init__(self, conf: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.conf = merge_conf(self.default_conf, conf)
        self.terms: dict[str, SupervisedTerm] = {name: cls(self.conf) for name, cls in TERMS.items()}

    def forward(self, pred: S2LDOutput, batch: Mapping[str, Any],
                window_radii: tuple[float, ...]) -> LossOutput:
        """Args:
            pred: output of ``S2LD.forward(..., supervision=...)`` (``pred.gt`` set).
            batch: the training batch (supervision keys, see :data:`SUPERVISION_KEYS`).
            window_radii: half-width in pixels of each refinement level's window.
        Returns:
            ``total`` and ``terms``: each weighted loss and every term's metrics (detached).
        """
        if pred.gt is None:
            raise InputError("S2LD.loss needs the output of forward(..., supervision=...)")
        weighted: dict[str, Tensor] = {}
        metrics: dict[str, Tensor] = {}
        for term in self.terms.values():
            losses, m = term(pred, batch, window_radii)
            weighted.update({k: self.conf[f"{k}_weight"] * losses[k] for k in term.outputs})
            metrics.update(m)
        total = sum(weighted.values())
        terms = {k: v.detach().float() for k, v in weighted.items()}
        terms.update(metrics)
        return LossOutput(total=total.float(), terms=terms)
