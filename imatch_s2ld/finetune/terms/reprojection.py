"""Reprojection term: S2LD's tracked predictions against the window's BA solution ``(T*, p*)``.

``reprojection_points``:

- ``keypoints`` (default): every detected keypoint of S2LD's tracks (built from this pass's own matches
  and triangulated with the BA poses when the targets carry none, so no extra pass) against its
  landmark's projection (detector repeatability);
- ``prediction`` (iMatching's term): for each tracked match, the keypoint of frame a against the
  projection of its landmark, and its local-dense prediction in frame b against the keypoint's own ray at
  the landmark's depth seen from b.

Residuals are divided by the image's longer side and pass through a Cauchy kernel of width
``reprojection_scale_px``, weighted by the BA observation weight. With ``ba_grad: implicit`` both
predictions are instead observations of their landmark in a Theseus re-solve of the window's BA,
differentiated through the solution too (:mod:`imatch_s2ld.finetune.implicit`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from ...ba.tracks import PairMatches
from ...geometry import project, transform_points, unproject
from ..implicit import DEFAULT_CONF as IMPLICIT_BA_CONF
from ..implicit import WindowObservations, check_ba_grad, reprojection_cost
from ..targets import WindowTargets
from ..window import pair_matches, window_matches
from .base import LossTerm, Pair, Window

__all__ = ["REPROJECTION_POINTS", "ReprojectionTerm"]

REPROJECTION_POINTS = ("prediction", "keypoints")


class ReprojectionTerm(LossTerm):
    name = "reprojection"
    always = True  # the distance to the targets is logged (reproj_px) even at weight 0
    metrics = ("reproj_px", "num_targets")
    default_conf = {
        # 0.1 on the detected keypoints helped when the whole network trained (lr 1e-4); 1.0 collapsed it
        "reprojection_weight": 0.0,
        "reprojection_scale_px": 2.0,  # Cauchy width, pixels
        "reprojection_points": "keypoints",  # or "prediction" (see the module docstring)
        # gradient w.r.t. the BA solution: "fixed" (T*, p* constant, iMatching) or "implicit" (re-solved
        # with Theseus, differentiated implicitly); "implicit" needs reprojection_weight > 0 and theseus-ai
        "ba_grad": "fixed",
        "implicit_ba": IMPLICIT_BA_CONF,  # the re-solve's options (ba_grad implicit only)
    }

    def check(self) -> None:
        super().check()
        check_ba_grad(self.conf)  # InputError: unknown ba_grad; implicit with weight 0 or without theseus
        self.choice("reprojection_points", REPROJECTION_POINTS)

    def needs_tracks(self) -> bool:
        return self.weight > 0 and (self.conf["reprojection_points"] == "prediction"
                                    or self.conf["ba_grad"] == "implicit")

    def start(self, window: Window) -> None:
        self._implicit = WindowObservations() if self.conf["ba_grad"] == "implicit" else None
        self._keypoint_mode = self.conf["reprojection_points"] == "keypoints" and self._implicit is None
        # keypoint targets from this pass's own tracks when the caller gave none (no tracking pass)
        self._own_tracks = self._keypoint_mode and not bool((window.targets.weight > 0).any())
        self._frame_kpts: dict[int, tuple[Tensor, Tensor]] = {}
        self._pass_pairs: list[PairMatches] = []
        self._sum = window.images.new_zeros(())
        self._weight = window.images.new_zeros(())
        self._px: list[Tensor] = []
        self._n = 0

    def add_pair(self, window: Window, pair: Pair) -> None:
        out, ex, a, b = pair.out, pair.tracked, pair.a, pair.b
        t = window.targets
        if self._keypoint_mode:  # each frame's keypoints (the same in every pair: eval mode)
            self._frame_kpts.setdefault(a, (out.kpts0[0], out.kpts_logits0[0]))
            self._frame_kpts.setdefault(b, (out.kpts1[0], out.kpts_logits1[0]))
            if self._own_tracks:
                self._pass_pairs.append(pair_matches(out, a, b))
            return
        if not bool(ex.any()):
            return
        w = torch.sqrt(t.weight[a, pair.i] * t.weight[b, pair.j])
        self._weight = self._weight + w.sum()
        self._n += int(ex.sum())
        if self._implicit is not None:  # solved in finish()
            self._implicit.add_pair(a, b, t.track[a, pair.i], out.mkpts0[ex], out.mkpts1[ex], w)
            return
        # keypoint of frame a -> landmark projection; its local-dense prediction in frame b -> the
        # keypoint's own ray at the landmark's depth, seen from b (the exact correspondence of the
        # keypoint where it is, given the BA geometry)
        scale = float(self.conf["reprojection_scale_px"])
        r0 = out.mkpts0[ex] - t.xy[a, pair.i]
        ray_depth = t.depth[a, pair.i]
        warped = project(transform_points(pair.T_ab, unproject(out.mkpts0[ex].detach(), ray_depth, pair.Ka)),
                         pair.Kb)
        r1 = out.mkpts1[ex] - warped
        cost = reprojection_cost(r0, scale, window.long_side) + reprojection_cost(r1, scale, window.long_side)
        self._sum = self._sum + (w * cost).sum()
        self._px.append(torch.cat([r0, r1]).detach().norm(dim=-1))

    def finish(self, window: Window) -> tuple[Tensor, dict[str, Tensor]]:
        scale = float(self.conf["reprojection_scale_px"])
        total, weight = self._sum, self._weight
        if self._implicit is not None and len(self._implicit):  # against the re-solved BA
            total, dist, _ = self._implicit.reprojection(window.targets, window.K, scale, window.long_side,
                                                         self.conf["implicit_ba"])
            self._px.append(dist)
        if self._keypoint_mode and self._frame_kpts:
            targets = window.targets
            if self._own_tracks:
                own = window_matches(window.images.shape[0], self._frame_kpts, self._pass_pairs)
                targets = WindowTargets.triangulated(targets.T_cw, targets.registered, own, window.K)
            kp_sum, kp_w, dist = keypoint_reprojection(self._frame_kpts, targets, scale, window.long_side)
            total, weight = total + kp_sum, weight + kp_w
            self._n += len(dist)
            self._px.append(dist)
        loss = total / weight.clamp_min(1e-12)  # ~ squared error in kernel widths
        new = window.images.new_tensor
        mean_px = torch.cat(self._px).mean() if self._px else window.images.new_full((), float("nan"))
        return loss, {"reproj_px": mean_px, "num_targets": new(float(self._n))}


def keypoint_reprojection(frame_kpts: Mapping[int, tuple[Tensor, Tensor]], targets: WindowTargets,
                          scale: float, long_side: float) -> tuple[Tensor, Tensor, Tensor]:
    """Every tracked detected keypoint (``frame_kpts``: frame -> keypoints ``(K, 2)``, logits) against the
    projection of its landmark (``targets``). Returns the weighted cost sum, the weight sum and the
    ``(M,)`` distances (pixels)."""
    like = next(iter(frame_kpts.values()))[0]
    total, weight, dist = like.new_zeros(()), like.new_zeros(()), []
    for f, (kp, _) in frame_kpts.items():
        w = targets.weight[f].to(kp.device)
        has = torch.nonzero(w[: len(kp)] > 0).flatten()
        if len(has) == 0:
            continue
        r = kp[has] - targets.xy[f].to(kp.device)[has]
        total = total + (w[has] * reprojection_cost(r, scale, long_side)).sum()
        weight = weight + w[has].sum()
        dist.append(r.detach().norm(dim=-1))
    return total, weight, torch.cat(dist) if dist else like.new_zeros(0)
