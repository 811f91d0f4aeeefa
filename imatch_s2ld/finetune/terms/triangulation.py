"""Triangulation term: the network's own predicted matches of each pair through the
:class:`~imatch_s2ld.losses.TriangulationRegularizer` of pretraining, supervised by the BA relative pose
(no depth: the reprojection form is scale-free), on every supervised local-dense level."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ...errors import InputError
from ...losses.triangulation import TriangulationRegularizer
from .base import LossTerm, Pair, Window

__all__ = ["TriangulationTerm", "supervised_levels"]


def supervised_levels(conf: Any, out: Any) -> list[Any]:
    """The local-dense levels the triangulation and track terms supervise (``triangulation_levels``)."""
    return list(out.fine_levels) if conf["triangulation_levels"] == "all" else list(out.fine_levels[-1:])


class TriangulationTerm(LossTerm):
    name = "triangulation"
    always = True
    default_conf = {
        "triangulation_weight": 1.0,
        # what the term moves: "both" (the detected keypoint of frame a and its local-dense prediction in
        # b) or "prediction" (the keypoint is held: it can otherwise slide along the epipolar geometry)
        "triangulation_grad": "both",
        # which local-dense levels it supervises: "all" (each level starts from the previous level's
        # detached estimate, so a last-level-only term never trains the wide first level) or "last"
        "triangulation_levels": "all",
        # leave out of this term and the track term the predicted matches farther than this from the BA
        # epipolar geometry (Sampson distance, pixels of the network input; None: keep all)
        "triangulation_gate_px": None,
        "triangulation": dict(TriangulationRegularizer.default_conf),  # noise model and kernel
    }

    def check(self) -> None:
        super().check()
        self.choice("triangulation_grad", ("both", "prediction"))
        self.choice("triangulation_levels", ("all", "last"))
        gate = self.conf["triangulation_gate_px"]
        if gate is not None and (isinstance(gate, bool) or not isinstance(gate, int | float) or gate <= 0):
            raise InputError("model.loss.triangulation_gate_px: expected a positive number of pixels or "
                             f"null, got {gate!r}")
        self.regularizer = TriangulationRegularizer(self.conf["triangulation"])

    def start(self, window: Window) -> None:
        self._losses: list[Tensor] = []

    def add_pair(self, window: Window, pair: Pair) -> None:
        pred, out = pair.predicted, pair.out
        if not bool(pred.any()):
            return
        k0 = out.mkpts0[pred]
        k0 = k0.detach() if self.conf["triangulation_grad"] == "prediction" else k0
        w = out.mconf[pred].detach()
        losses = [self.regularizer(k0, lv.expectation[pred], pair.Ka, pair.Kb, pair.T_ab, weights=w,
                                   image_size=window.image_size).loss
                  for lv in supervised_levels(self.conf, out)]
        self._losses.append(torch.stack(losses).mean())

    def finish(self, window: Window) -> tuple[Tensor, dict[str, Tensor]]:
        loss = torch.stack(self._losses).mean() if self._losses else window.images.new_zeros(())
        return loss, {}
