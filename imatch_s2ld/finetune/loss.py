"""The self-supervised fine-tuning loss of a window (iMatching with S2LD).

Given a window whose bundle adjustment succeeded (poses ``T*`` and landmarks ``p*``, treated as fixed at
the BA optimum), every pair ``(a, b)`` of the window is matched again **with** gradient:

- **Reprojection term.** For each match ``(i, j)`` whose two keypoints are inlier observations of the
  same BA track, the match is appended to the network's matches (``extra_matches``) so that S2LD refines
  it: its keypoint in frame ``a`` (detected position, with the keypoint head's sub-cell offset) and its
  local-dense prediction in frame ``b`` are pulled towards the projections ``pi(T*_a p*)`` and
  ``pi(T*_b p*)``. Residuals are divided by the image's longer side (image-size invariant) and pass
  through a Cauchy kernel of width ``reprojection_scale_px`` (robust to BA outliers), weighted by the
  BA observation weight.
- **Triangulation term.** The network's own predicted matches of the pair go through the same
  :class:`imatch_s2ld.losses.TriangulationRegularizer` as pretraining, supervised by the BA relative
  pose ``T*_b T*_a^-1`` (no depth: the reprojection form is scale-free).

The network runs in eval mode (BatchNorm statistics frozen: a window is a tiny, correlated batch);
gradients still flow. In eval mode S2LD's keypoints of a frame do not depend on its partner, so the
keypoint indices of the (no-gradient) matching pass stay valid here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..ba.pipeline import WindowReconstruction
from ..conf import merge_conf
from ..losses.triangulation import TriangulationRegularizer
from ..models.s2ld import S2LD
from ..models.s2ld_loss import LossOutput
from .window import WindowMatches

__all__ = ["DEFAULT_CONF", "FinetuneLoss", "WindowTargets"]

DEFAULT_CONF: dict[str, Any] = {
    "reprojection_weight": 1.0,
    "reprojection_scale_px": 2.0,  # Cauchy width, pixels
    "triangulation_weight": 0.1,
    "triangulation": {"kernel": "cauchy"},  # TriangulationRegularizer overrides
}


@dataclass(frozen=True)
class WindowTargets:
    """Fixed BA targets of a window.

    Attributes:
        xy: ``(N, Kmax, 2)`` target pixel of keypoint ``k`` of window frame ``n`` (BA reprojection of
            its landmark); weight: ``(N, Kmax)`` its weight (0: no target).
        T_cw: ``(N, 4, 4)`` BA world-to-camera pose of each window frame; registered: ``(N,)`` bool.
    """

    xy: Tensor
    weight: Tensor
    T_cw: Tensor
    registered: Tensor

    @classmethod
    def from_reconstruction(cls, rec: WindowReconstruction, matches: WindowMatches) -> WindowTargets:
        """Targets of a successful :func:`imatch_s2ld.ba.reconstruct_window` (raises ValueError otherwise)."""
        if not rec.success or rec.ba is None:
            raise ValueError(f"window reconstruction failed: {rec.reason}")
        N = matches.keypoints.num_frames
        kmax = max((len(x) for x in matches.keypoints.xy), default=0)
        frame_kpt, target, weight = rec.keypoint_targets()
        xy = torch.zeros(N, kmax, 2, dtype=torch.float32)
        w = torch.zeros(N, kmax, dtype=torch.float32)
        f, k = frame_kpt[:, 0].cpu(), frame_kpt[:, 1].cpu()
        xy[f, k] = target.float().cpu()
        w[f, k] = weight.float().cpu()
        T = torch.eye(4).repeat(N, 1, 1)
        reg = torch.zeros(N, dtype=torch.bool)
        frames = torch.as_tensor(rec.init.frames, dtype=torch.long)
        T[frames] = rec.ba.poses.float().cpu()
        reg[frames] = True
        return cls(xy, w, T, reg)


def _cauchy(s: Tensor, c: float) -> Tensor:
    return c * c * torch.log1p(s / (c * c))


class FinetuneLoss:
    """Callable ``(model, images, K, matches, targets) -> LossOutput`` (see the module docstring)."""

    def __init__(self, conf: Mapping[str, Any] | None = None) -> None:
        self.conf = merge_conf(DEFAULT_CONF, conf)
        self.regularizer = TriangulationRegularizer(self.conf["triangulation"])

    def __call__(self, model: S2LD, images: Tensor, K: Tensor, matches: WindowMatches,
                 targets: WindowTargets) -> LossOutput:
        """Args:
            model: the S2LD being fine-tuned (its mode is restored afterwards).
            images: ``(N, 1, H, W)`` window frames in [0, 1]; K: ``(N, 3, 3)`` or ``(3, 3)``.
            matches: the window's (no-gradient) matches; targets: its BA targets.
        Returns:
            ``total`` (0-d) and detached ``terms``: ``reprojection``, ``triangulation``, ``reproj_px``
            (mean target distance, pixels), ``num_targets``, ``num_pairs``.
        """
        dev = images.device
        H, W = images.shape[-2:]
        long_side = float(max(H, W))
        c = float(self.conf["reprojection_scale_px"]) / long_side
        Kn = K.to(dev).float().expand(images.shape[0], 3, 3)
        xy_t, w_t = targets.xy.to(dev), targets.weight.to(dev)
        T = targets.T_cw.to(dev)
        was_training = model.training
        model.eval()
        rep_sum = images.new_zeros(())
        rep_w = images.new_zeros(())
        tri_terms, px = [], []
        n_pairs = n_targets = 0
        try:
            for pm in matches.pairs:
                a, b = pm.i, pm.j
                if not (bool(targets.registered[a]) and bool(targets.registered[b])):
                    continue
                m = torch.as_tensor(pm.matches, dtype=torch.long, device=dev).reshape(-1, 2)
                wa, wb = w_t[a, m[:, 0]], w_t[b, m[:, 1]]
                sel = (wa > 0) & (wb > 0)
                i, j = m[sel, 0], m[sel, 1]
                extra = (torch.zeros_like(i), i, j)
                out = model(images[a:a + 1], images[b:b + 1], extra_matches=extra)
                n_pairs += 1
                ex = out.matches_extra
                if bool(ex.any()):
                    r0 = (out.mkpts0[ex] - xy_t[a, i]) / long_side
                    r1 = (out.mkpts1[ex] - xy_t[b, j]) / long_side
                    w = torch.sqrt(wa[sel] * wb[sel])
                    cost = _cauchy(r0.square().sum(-1), c) + _cauchy(r1.square().sum(-1), c)
                    rep_sum = rep_sum + (w * cost).sum()
                    rep_w = rep_w + w.sum()
                    px.append(torch.cat([r0, r1]).detach().norm(dim=-1) * long_side)
                    n_targets += int(ex.sum())
                pred = ~ex
                if bool(pred.any()):
                    T_ab = T[b] @ torch.linalg.inv(T[a])
                    reg = self.regularizer(out.mkpts0[pred], out.mkpts1[pred], Kn[a], Kn[b], T_ab,
                                           weights=out.mconf[pred], image_size=(int(W), int(H)))
                    tri_terms.append(reg.loss)
        finally:
            model.train(was_training)
        reprojection = rep_sum / rep_w.clamp_min(1e-12) * (1.0 / (c * c))  # ~ squared error in kernel widths
        triangulation = torch.stack(tri_terms).mean() if tri_terms else images.new_zeros(())
        total = (self.conf["reprojection_weight"] * reprojection
                 + self.conf["triangulation_weight"] * triangulation)
        mean_px = torch.cat(px).mean() if px else images.new_full((), float("nan"))
        terms = {"reprojection": reprojection.detach(), "triangulation": triangulation.detach(),
                 "reproj_px": mean_px, "num_targets": rep_w.new_tensor(float(n_targets)),
                 "num_pairs": rep_w.new_tensor(float(n_pairs))}
        return LossOutput(total.float(), terms)
