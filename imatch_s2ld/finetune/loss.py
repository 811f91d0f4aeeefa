"""The self-supervised fine-tuning loss of a window (iMatching with S2LD).

Given a window whose bundle adjustment succeeded (poses ``T*`` and landmarks ``p*``, treated as fixed at
the BA optimum), every pair ``(a, b)`` of the window is matched again **with** gradient:

- **Reprojection term.** For each match ``(i, j)`` whose two keypoints are inlier observations of the
  same BA track, the match is appended to the network's matches (``extra_matches``) so that S2LD refines
  it: its keypoint in frame ``a`` (detected position, with the keypoint head's sub-cell offset) and its
  local-dense prediction in frame ``b`` are pulled towards the projections ``pi(T*_a p*)`` and
  ``pi(T*_b p*)``. Residuals are divided by the image's longer side (image-size invariant) and pass
  through a Cauchy kernel of width ``reprojection_scale_px`` (robust to BA outliers), weighted by the
  BA observation weight. With ``ba_grad: implicit`` (``--ba-grad implicit``; needs
  ``reprojection_weight > 0`` and theseus-ai) both predictions are instead observations of their landmark
  in a Theseus re-solve of the window's BA (from ``T*``, ``p*``), compared with the landmark's re-solved
  projections and differentiated through the solution too (:mod:`imatch_s2ld.finetune.implicit`).
- **Matching term.** The matching probabilities (``scores``) get pseudo-labels from the BA
  geometry: track matches and predicted matches within ``epipolar_pos_px`` (Sampson distance with
  the BA relative pose) are positives, predicted matches beyond ``epipolar_neg_px`` negatives
  (focal loss, as in pretraining). This is what teaches the coarse matcher to drop matches the
  window's geometry rejects and to find the ones its tracks imply.
- **Triangulation term.** The network's own predicted matches of the pair go through the same
  :class:`imatch_s2ld.losses.TriangulationRegularizer` as pretraining, supervised by the BA relative
  pose ``T*_b T*_a^-1`` (no depth: the reprojection form is scale-free).
- **Track term** (``track_weight``). A keypoint of frame ``a`` predicted in two or more later frames is
  a track of the matcher's output; it is triangulated from all its observations with the BA poses
  (:meth:`TriangulationRegularizer.tracks`) and penalised for its reprojection error, which two views
  alone cannot see along the epipolar line.

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
from ..ba.tracks import PairMatches, build_tracks
from ..conf import merge_conf
from ..errors import InputError
from ..geometry.epipolar import sampson_distance
from ..geometry.triangulation import triangulate_tracks
from ..losses.matching import focal_loss
from ..losses.triangulation import TriangulationRegularizer
from ..models.s2ld import S2LD
from ..models.s2ld_loss import LossOutput
from .implicit import DEFAULT_CONF as IMPLICIT_BA_CONF
from .implicit import WindowObservations, check_ba_grad, reprojection_cost
from .window import WindowMatches, encode_frames, pair_matches, window_matches

__all__ = ["DEFAULT_CONF", "TERM_KEYS", "FinetuneLoss", "WindowTargets", "fundamental", "track_matches",
           "warp_points"]

REPROJECTION_POINTS = ("prediction", "keypoints")
#: the detached ``terms`` of :meth:`FinetuneLoss.__call__` (a skipped window reports them as NaN)
TERM_KEYS = ("reprojection", "matching", "triangulation", "track", "reproj_px", "num_targets", "num_pairs",
             "num_matches", "num_output_tracks", "pseudo_positives", "pseudo_negatives")
#: a pair's predictions for the track term: keypoint indices of frame a, per-level predictions, confidences
Observed = tuple[Tensor, list[Tensor], Tensor]

#: Defaults chosen by measurement (docs/finetuning.md): on short-baseline windows the
#: landmark depths (hence the reprojection targets of predictions) are noisier than S2LD's own
#: predictions, and the matching pseudo-labels shift the shared backbone away from the fine stage; the
#: depth-free epipolar (triangulation) term on every local-dense level is the one that improves the
#: matcher. The keypoint reprojection term trains the keypoint head, which the default
#: ``model.trainable`` holds fixed, so its default weight is 0.

DEFAULT_CONF: dict[str, Any] = {
    # 0.1 on the detected keypoints helped when the whole network trained (lr 1e-4); 1.0 collapsed it
    "reprojection_weight": 0.0,
    "reprojection_scale_px": 2.0,  # Cauchy width, pixels
    # which predictions the reprojection term pulls: "prediction" (the keypoint of frame a and its
    # local-dense match in b) or "keypoints" (the detected keypoints of S2LD's tracks; the local-dense
    # stage is left to the triangulation term). ba_grad implicit always uses "prediction".
    "reprojection_points": "keypoints",
    "matching_weight": 0.0,
    "epipolar_pos_px": 1.5,  # predicted match within this Sampson distance: positive
    "epipolar_neg_px": 6.0,  # beyond this: negative (in between: not labelled)
    "triangulation_weight": 1.0,
    # what the triangulation term moves: "both" (the detected keypoint of frame a and its local-dense
    # prediction in b) or "prediction" (the keypoint is held: it can otherwise slide off its repeatable
    # position along the epipolar geometry)
    "triangulation_grad": "both",
    # which local-dense levels the triangulation term supervises: "all" (every refinement level, as the
    # supervised fine loss does: level k+1 starts from level k's detached estimate, so a last-level-only
    # term never trains the wide first level) or "last" (the final prediction only)
    "triangulation_levels": "all",
    # leave out of the triangulation term the predicted matches farther than this from the BA epipolar
    # geometry (Sampson distance, pixels of the network input; None: keep all): a wrong coarse match
    # lies beyond the reach of the local-dense windows, and pulling it only bends the refinement
    "triangulation_gate_px": None,
    # weight of the multi-view form of the triangulation term: each keypoint of a frame with predicted
    # matches (kept by the gate) in two or more later frames of the window is triangulated from all of
    # them with the BA poses (TriangulationRegularizer.tracks, every supervised level): the pair term
    # only sees the error across the epipolar line, this one also along it (the BA error of the
    # matcher's output tracks with the poses held at T*)
    "track_weight": 0.0,
    "triangulation": dict(TriangulationRegularizer.default_conf),  # its config (noise model, kernel)
    # gradient of the reprojection term w.r.t. the BA solution: "fixed" (T*, p* constant, iMatching) or
    # "implicit" (re-solved with Theseus, differentiated implicitly: imatch_s2ld.finetune.implicit);
    # "implicit" needs reprojection_weight > 0 and theseus-ai
    "ba_grad": "fixed",
    "implicit_ba": IMPLICIT_BA_CONF,  # the re-solve's options (ba_grad implicit only)
}


@dataclass(frozen=True)
class WindowTargets:
    """Fixed targets of a window's S2LD keypoints (from its BA solution).

    Attributes:
        xy: ``(N, Kmax, 2)`` target pixel of keypoint ``k`` of window frame ``n`` (reprojection of its
            landmark with the BA pose); weight: ``(N, Kmax)`` its weight (0: no target).
        track: ``(N, Kmax)`` int64 landmark id of the keypoint (-1: none). Two keypoints of different
            frames with the same id correspond, whether or not that pair matched them (transitivity).
        depth: ``(N, Kmax)`` depth of the keypoint's landmark in frame ``n`` (0: none).
        T_cw: ``(N, 4, 4)`` BA world-to-camera pose of each window frame; registered: ``(N,)`` bool.
    """

    xy: Tensor
    weight: Tensor
    track: Tensor
    depth: Tensor
    T_cw: Tensor
    registered: Tensor

    @staticmethod
    def _poses(rec: WindowReconstruction, N: int) -> tuple[Tensor, Tensor]:
        if not rec.success or rec.ba is None:
            raise ValueError(f"window reconstruction failed: {rec.reason}")
        T = torch.eye(4).repeat(N, 1, 1)
        reg = torch.zeros(N, dtype=torch.bool)
        frames = torch.as_tensor(rec.init.frames, dtype=torch.long)
        T[frames] = rec.ba.poses.float().cpu()
        reg[frames] = True
        return T, reg

    @classmethod
    def from_reconstruction(cls, rec: WindowReconstruction, matches: WindowMatches,
                            num_keypoints: Any = None) -> WindowTargets:
        """The inlier observations of a successful :func:`imatch_s2ld.ba.reconstruct_window` of
        ``matches`` (raises ValueError on a failed reconstruction). ``num_keypoints``: ``(N,)`` keep only
        keypoints below this index per frame (the S2LD ones of a merged set); None: all."""
        N = matches.keypoints.num_frames
        T, reg = cls._poses(rec, N)
        counts = torch.as_tensor(matches.keypoints.counts if num_keypoints is None else num_keypoints)
        kmax = int(counts.max()) if len(counts) else 0
        frame_kpt, target, weight = rec.keypoint_targets()
        landmark = rec.init.problem.obs_point[rec.ba.inliers].cpu()
        mine = frame_kpt[:, 1].cpu() < counts[frame_kpt[:, 0].cpu()]
        frame_kpt, target, weight, landmark = frame_kpt[mine], target[mine], weight[mine], landmark[mine]
        xy = torch.zeros(N, kmax, 2, dtype=torch.float32)
        w = torch.zeros(N, kmax, dtype=torch.float32)
        track = torch.full((N, kmax), -1, dtype=torch.long)
        f, k = frame_kpt[:, 0].cpu(), frame_kpt[:, 1].cpu()
        xy[f, k] = target.float().cpu()
        w[f, k] = weight.float().cpu()
        track[f, k] = landmark
        depth = torch.zeros(N, kmax, dtype=torch.float32)
        X = rec.ba.points.detach().double().cpu()[landmark]
        Tf = T.double()[f]
        depth[f, k] = ((Tf[:, 2, :3] * X).sum(-1) + Tf[:, 2, 3]).float()
        return cls(*_drop_degenerate(xy, w, track, depth), T, reg)

    @classmethod
    def from_poses(cls, rec: WindowReconstruction, matches: WindowMatches, K: Tensor,
                   max_epipolar_px: float = 2.0, max_reprojection_px: float = 3.0) -> WindowTargets:
        """Targets for keypoints that are **not** in the BA (``--geometry-from sift``): ``matches``
        consistent with the BA poses (Sampson distance below ``max_epipolar_px``) form tracks, each
        triangulated with the fixed BA poses (DLT); observations reprojecting within
        ``max_reprojection_px`` get the reprojection as target (tracks keep >= 2 of them)."""
        T, reg = cls._poses(rec, matches.keypoints.num_frames)
        return cls.triangulated(T, reg, matches, K, max_epipolar_px, max_reprojection_px)

    @classmethod
    def triangulated(cls, T: Tensor, reg: Tensor, matches: WindowMatches, K: Tensor,
                     max_epipolar_px: float = 2.0, max_reprojection_px: float = 3.0) -> WindowTargets:
        """:meth:`from_poses` with the poses given: ``T`` ``(N, 4, 4)`` world-to-camera, ``reg`` ``(N,)``
        bool (frames with a pose)."""
        N = matches.keypoints.num_frames
        kmax = max((len(x) for x in matches.keypoints.xy), default=0)
        xy = torch.zeros(N, kmax, 2, dtype=torch.float32)
        w = torch.zeros(N, kmax, dtype=torch.float32)
        track = torch.full((N, kmax), -1, dtype=torch.long)
        depth = torch.zeros(N, kmax, dtype=torch.float32)
        T, reg = T.detach().float().cpu(), reg.cpu()
        Kd = K.detach().double().cpu().expand(N, 3, 3)
        Td = T.double()
        kp = [torch.as_tensor(x, dtype=torch.float64) for x in matches.keypoints.xy]
        kept = []
        for pm in matches.pairs:
            a, b = pm.i, pm.j
            if not (bool(reg[a]) and bool(reg[b])) or len(pm.matches) == 0:
                continue
            m = torch.as_tensor(pm.matches, dtype=torch.long)
            d = sampson_distance(kp[a][m[:, 0]], kp[b][m[:, 1]], fundamental(Td[b] @ torch.linalg.inv(Td[a]),
                                                                            Kd[a], Kd[b]), squared=False)
            keep = (d < max_epipolar_px).numpy()
            kept.append(PairMatches.create(a, b, pm.matches[keep], pm.confidence[keep]))
        tracks = build_tracks(matches.keypoints.counts, kept)
        if tracks.num_tracks == 0:
            return cls(xy, w, track, depth, T, reg)
        obs_t = torch.as_tensor(tracks.obs_track, dtype=torch.long)
        obs_f = torch.as_tensor(tracks.obs_frame, dtype=torch.long)
        obs_k = torch.as_tensor(tracks.obs_kpt, dtype=torch.long)
        pts = torch.zeros(N, tracks.num_tracks, 2, dtype=torch.float64)
        vis = torch.zeros(N, tracks.num_tracks, dtype=torch.float64)
        obs_xy = torch.stack([kp[int(f)][int(k)] for f, k in zip(obs_f, obs_k)])
        pts[obs_f, obs_t] = obs_xy
        vis[obs_f, obs_t] = 1.0
        X, valid = triangulate_tracks(pts, Kd, Td, vis)
        cam = (Td[obs_f, :3, :3] @ X[obs_t, :, None])[..., 0] + Td[obs_f, :3, 3]
        proj = (Kd[obs_f] @ cam[..., None])[..., 0]
        proj = proj[:, :2] / proj[:, 2:].clamp_min(1e-9)
        good = valid[obs_t] & (cam[:, 2] > 0) & ((proj - obs_xy).norm(dim=-1) < max_reprojection_px)
        count = torch.zeros(tracks.num_tracks, dtype=torch.long).index_add_(0, obs_t, good.long())
        good &= count[obs_t] >= 2
        f, k = obs_f[good], obs_k[good]
        xy[f, k] = proj[good].float()
        w[f, k] = 1.0
        track[f, k] = obs_t[good]
        depth[f, k] = cam[good, 2].float()
        return cls(*_drop_degenerate(xy, w, track, depth), T, reg)


def _drop_degenerate(xy: Tensor, w: Tensor, track: Tensor, depth: Tensor,
                     rel: float = 1e-3) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Remove targets whose landmark is at (or behind) the camera centre: depth <= rel * median depth."""
    has = w > 0
    if bool(has.any()):
        bad = has & (depth <= rel * float(depth[has].median()))
        w, track, depth = w.masked_fill(bad, 0.0), track.masked_fill(bad, -1), depth.masked_fill(bad, 0.0)
    return xy, w, track, depth


def fundamental(T_ab: Tensor, Ka: Tensor, Kb: Tensor) -> Tensor:
    """``(3, 3)`` fundamental matrix of ``T_ab`` (frame a to frame b): ``x_b^T F x_a = 0`` in pixels."""
    R, t = T_ab[:3, :3], T_ab[:3, 3]
    tx = torch.zeros(3, 3, dtype=T_ab.dtype, device=T_ab.device)
    tx[0, 1], tx[0, 2], tx[1, 0], tx[1, 2], tx[2, 0], tx[2, 1] = -t[2], t[1], t[2], -t[0], -t[1], t[0]
    return torch.linalg.inv(Kb).T @ (tx @ R) @ torch.linalg.inv(Ka)


def warp_points(xy: Tensor, depth: Tensor, Ka: Tensor, Kb: Tensor, T_ab: Tensor) -> Tensor:
    """``(M, 2)`` pixels of frame a at ``(M,)`` depths -> ``(M, 2)`` pixels of frame b."""
    ray = torch.cat([xy, torch.ones_like(xy[:, :1])], -1) @ torch.linalg.inv(Ka).T
    cam_b = (ray * depth[:, None]) @ T_ab[:3, :3].T + T_ab[:3, 3]
    uv = cam_b @ Kb.T
    return uv[:, :2] / uv[:, 2:].clamp_min(1e-9)


def _sampson_px(out: Any, T_ab: Tensor, Ka: Tensor, Kb: Tensor) -> Tensor:
    """``(M,)`` Sampson distance (pixels, no gradient) of a pair's matches to the geometry ``T_ab``."""
    F = fundamental(T_ab, Ka, Kb).detach().double()
    return sampson_distance(out.mkpts0.detach().double(), out.mkpts1.detach().double(), F, squared=False)


def track_matches(track_a: Tensor, track_b: Tensor) -> tuple[Tensor, Tensor]:
    """Keypoint pairs ``(i, j)`` of two frames sharing a landmark id (ids < 0: none)."""
    n = max(int(track_a.max()) if track_a.numel() else -1, int(track_b.max()) if track_b.numel() else -1) + 1
    if n == 0:
        empty = torch.zeros(0, dtype=torch.long, device=track_a.device)
        return empty, empty
    lookup = torch.full((n,), -1, dtype=torch.long, device=track_a.device)
    jb = torch.nonzero(track_b >= 0).flatten()
    lookup[track_b[jb]] = jb
    ia = torch.nonzero(track_a >= 0).flatten()
    j = lookup[track_a[ia]]
    return ia[j >= 0], j[j >= 0]


class FinetuneLoss:
    """Callable ``(model, images, K, matches, targets) -> LossOutput`` (see the module docstring)."""

    def __init__(self, conf: Mapping[str, Any] | None = None) -> None:
        self.conf = merge_conf(DEFAULT_CONF, conf)
        self.regularizer = TriangulationRegularizer(self.conf["triangulation"])
        check_ba_grad(self.conf)  # InputError: unknown ba_grad; implicit with weight 0 or without theseus
        for key, choices in (("triangulation_grad", ("both", "prediction")),
                             ("triangulation_levels", ("all", "last")),
                             ("reprojection_points", REPROJECTION_POINTS)):
            if self.conf[key] not in choices:
                raise InputError(f"model.loss.{key}: expected one of {', '.join(choices)}, "
                                 f"got {self.conf[key]!r}")
        for key in ("reprojection_weight", "matching_weight", "triangulation_weight", "track_weight"):
            if not float(self.conf[key]) >= 0:  # merge_conf has checked that it is a number
                raise InputError(f"model.loss.{key}: expected a number >= 0, got {self.conf[key]!r}")
        gate = self.conf["triangulation_gate_px"]
        if gate is not None and (isinstance(gate, bool) or not isinstance(gate, int | float) or gate <= 0):
            raise InputError("model.loss.triangulation_gate_px: expected a positive number of pixels or "
                             f"null, got {gate!r}")

    def __call__(self, model: S2LD, images: Tensor, K: Tensor, matches: WindowMatches,
                 targets: WindowTargets) -> LossOutput:
        """Args:
            model: the S2LD being fine-tuned (its mode is restored afterwards).
            images: ``(N, 1, H, W)`` window frames in [0, 1]; K: ``(N, 3, 3)`` or ``(3, 3)``.
            matches: the window's (no-gradient) matches; targets: its BA targets.
        Returns:
            ``total`` (0-d) and detached ``terms``: ``reprojection``, ``triangulation``, ``track``,
            ``matching``, ``reproj_px`` (mean target distance, pixels), ``num_targets``, ``num_pairs``,
            ``num_matches`` (predicted matches of the pairs, tracked ones excluded), ``num_output_tracks``
            (tracks of the track term), ``pseudo_positives``, ``pseudo_negatives``.
        """
        dev = images.device
        H, W = images.shape[-2:]
        long_side = float(max(H, W))
        scale = float(self.conf["reprojection_scale_px"])
        Kn = K.to(dev).float().expand(images.shape[0], 3, 3)
        xy_t, w_t, tr_t = targets.xy.to(dev), targets.weight.to(dev), targets.track.to(dev)
        d_t = targets.depth.to(dev)
        T = targets.T_cw.to(dev)
        was_training = model.training
        model.eval()
        rep_sum = images.new_zeros(())
        rep_w = images.new_zeros(())
        tri_terms, match_terms, px = [], [], []
        n_pos = n_neg = 0
        n_pairs = n_targets = n_pred = 0
        implicit = WindowObservations() if self.conf["ba_grad"] == "implicit" else None
        keypoint_mode = self.conf["reprojection_points"] == "keypoints" and implicit is None
        # keypoint targets from this pass's own tracks when the caller gave none (no tracking pass)
        own_tracks = keypoint_mode and not bool((targets.weight > 0).any())
        frame_kpts: dict[int, tuple[Tensor, Tensor]] = {}
        track_obs: dict[int, tuple[Tensor, dict[int, Observed]]] = {}
        pass_pairs: list[PairMatches] = []
        try:
            used = [(pm.i, pm.j) for pm in matches.pairs
                    if bool(targets.registered[pm.i]) and bool(targets.registered[pm.j])]
            encodings = encode_frames(model, images, used)  # each frame once (eval mode)
            for a, b in used:
                i, j = track_matches(tr_t[a], tr_t[b])  # every pair of the same landmark (transitive)
                wa, wb = w_t[a, i], w_t[b, j]
                extra = (torch.zeros_like(i), i, j) if len(i) else None
                out = model.match_encoded(encodings[a], encodings[b], extra_matches=extra)
                n_pairs += 1
                ex = out.matches_extra
                n_pred += int((~ex).sum())
                if keypoint_mode:  # each frame's keypoints (the same in every pair: eval mode)
                    frame_kpts.setdefault(a, (out.kpts0[0], out.kpts_logits0[0]))
                    frame_kpts.setdefault(b, (out.kpts1[0], out.kpts_logits1[0]))
                    if own_tracks:
                        pass_pairs.append(pair_matches(out, a, b))
                if bool(ex.any()) and implicit is not None:  # --ba-grad implicit: solved after the loop
                    w = torch.sqrt(wa * wb)
                    implicit.add_pair(a, b, tr_t[a, i], out.mkpts0[ex], out.mkpts1[ex], w)
                    rep_w = rep_w + w.sum()
                    n_targets += int(ex.sum())
                elif bool(ex.any()) and not keypoint_mode:
                    # keypoint of frame a -> landmark projection; its local-dense prediction in frame b
                    # -> the keypoint's own ray at the landmark's depth, seen from b (the exact
                    # correspondence of the keypoint where it is, given the BA geometry)
                    r0 = out.mkpts0[ex] - xy_t[a, i]
                    T_ab = T[b] @ torch.linalg.inv(T[a])
                    warped = warp_points(out.mkpts0[ex].detach(), d_t[a, i], Kn[a], Kn[b], T_ab)
                    r1 = out.mkpts1[ex] - warped
                    w = torch.sqrt(wa * wb)
                    cost = reprojection_cost(r0, scale, long_side) + reprojection_cost(r1, scale, long_side)
                    rep_sum = rep_sum + (w * cost).sum()
                    rep_w = rep_w + w.sum()
                    px.append(torch.cat([r0, r1]).detach().norm(dim=-1))
                    n_targets += int(ex.sum())
                T_ab = T[b] @ torch.linalg.inv(T[a])
                pred = self._gate(out, ~ex, T_ab, Kn[a], Kn[b])
                if bool(pred.any()):
                    tri_terms.append(self._triangulation(out, pred, Kn[a], Kn[b], T_ab, (int(W), int(H))))
                    if self.conf["track_weight"] > 0:
                        track_obs.setdefault(a, (out.kpts0[0], {}))[1][b] = self._observed(out, pred)
                if self.conf["matching_weight"] > 0:
                    term, p, n = self._matching(out, ex, T_ab, Kn[a], Kn[b])
                    match_terms.append(term)
                    n_pos, n_neg = n_pos + p, n_neg + n
        finally:
            model.train(was_training)
        if implicit is not None and len(implicit):  # the tracked predictions against their re-solved BA
            rep_sum, dist, _ = implicit.reprojection(targets, Kn, scale,
                                                     long_side, self.conf["implicit_ba"])
            px.append(dist)
        if keypoint_mode and frame_kpts:
            if own_tracks:
                own = window_matches(images.shape[0], frame_kpts, pass_pairs)
                targets = WindowTargets.triangulated(targets.T_cw, targets.registered, own, Kn)
            kp_sum, kp_w, dist = self._keypoint_reprojection(frame_kpts, targets, scale, long_side)
            rep_sum, rep_w = rep_sum + kp_sum, rep_w + kp_w
            n_targets += len(dist)
            px.append(dist)
        reprojection = rep_sum / rep_w.clamp_min(1e-12)  # ~ squared error in kernel widths
        triangulation = torch.stack(tri_terms).mean() if tri_terms else images.new_zeros(())
        matching = torch.stack(match_terms).mean() if match_terms else images.new_zeros(())
        track, n_tracks = self._tracks(track_obs, T, Kn, (int(W), int(H)))
        track = track if track is not None else images.new_zeros(())
        total = (self.conf["reprojection_weight"] * reprojection
                 + self.conf["matching_weight"] * matching
                 + self.conf["triangulation_weight"] * triangulation
                 + self.conf["track_weight"] * track)
        mean_px = torch.cat(px).mean() if px else images.new_full((), float("nan"))
        terms = {"reprojection": reprojection.detach(), "triangulation": triangulation.detach(),
                 "matching": matching.detach(), "track": track.detach(),
                 "num_output_tracks": rep_w.new_tensor(float(n_tracks)),
                 "pseudo_positives": rep_w.new_tensor(float(n_pos)),
                 "pseudo_negatives": rep_w.new_tensor(float(n_neg)),
                 "reproj_px": mean_px, "num_targets": rep_w.new_tensor(float(n_targets)),
                 "num_pairs": rep_w.new_tensor(float(n_pairs)),
                 "num_matches": rep_w.new_tensor(float(n_pred))}
        return LossOutput(total.float(), terms)

    def _gate(self, out: Any, pred: Tensor, T_ab: Tensor, Ka: Tensor, Kb: Tensor) -> Tensor:
        """``pred`` (``(M,)`` bool) without the matches beyond ``triangulation_gate_px`` (Sampson)."""
        gate = self.conf["triangulation_gate_px"]
        if gate is None or not bool(pred.any()):
            return pred
        return pred & (_sampson_px(out, T_ab, Ka, Kb) <= float(gate))

    def _triangulation(self, out: Any, pred: Tensor, Ka: Tensor, Kb: Tensor, T_ab: Tensor,
                       image_size: tuple[int, int]) -> Tensor:
        """The triangulation term of a pair's predicted matches (``pred``: ``(M,)`` bool), averaged over
        the supervised local-dense levels (``triangulation_levels``)."""
        k0 = out.mkpts0[pred]
        k0 = k0.detach() if self.conf["triangulation_grad"] == "prediction" else k0
        levels = out.fine_levels if self.conf["triangulation_levels"] == "all" else out.fine_levels[-1:]
        w, size = out.mconf[pred].detach(), image_size
        losses = [self.regularizer(k0, lv.expectation[pred], Ka, Kb, T_ab, weights=w, image_size=size).loss
                  for lv in levels]
        return torch.stack(losses).mean()

    def _observed(self, out: Any, pred: Tensor) -> Observed:
        """A pair's predicted matches for the track term: keypoint indices of frame a ``(M,)`` (each
        once), their predictions in frame b at the supervised levels (``[(M, 2)]``), confidences ``(M,)``."""
        idx = torch.nonzero(pred).flatten()
        i = out.matches_i[idx]
        first = torch.ones_like(i, dtype=torch.bool)
        if len(i) > 1:  # keep the first match of a keypoint (mutual matching gives one anyway)
            order = torch.argsort(i, stable=True)
            dup = torch.zeros_like(first)
            dup[order[1:]] = i[order[1:]] == i[order[:-1]]
            first = ~dup
        idx, i = idx[first], i[first]
        levels = out.fine_levels if self.conf["triangulation_levels"] == "all" else out.fine_levels[-1:]
        return i, [lv.expectation[idx] for lv in levels], out.mconf[idx].detach()

    def _tracks(self, track_obs: Mapping[int, tuple[Tensor, Mapping[int, Observed]]],
                T: Tensor, K: Tensor, image_size: tuple[int, int]) -> tuple[Tensor | None, int]:
        """The track term (``track_weight``): mean over frames ``a`` of the multi-view regularizer of
        ``a``'s keypoints seen in >= 2 other frames, averaged over the supervised levels. Returns the
        term (None when no track qualifies) and the number of tracks."""
        terms, n_tracks = [], 0
        for a, (kpts, partners) in sorted(track_obs.items()):
            if len(partners) < 2:
                continue
            n_kp = kpts.shape[0]
            frames = [a, *sorted(partners)]
            vis = torch.zeros(len(frames), n_kp, dtype=torch.bool, device=kpts.device)
            vis[0] = True
            conf_sum = kpts.new_zeros(n_kp)
            for v, b in enumerate(frames[1:], 1):
                i, _, c = partners[b]
                vis[v, i] = True
                conf_sum = conf_sum.index_add(0, i, c.to(conf_sum.dtype))
            n_vis = vis.sum(0)
            keep = n_vis >= 3
            if not bool(keep.any()):
                continue
            weight = (conf_sum / (n_vis - 1).clamp_min(1))[keep]
            fr = torch.as_tensor(frames, device=T.device)
            per_level = []
            for level in range(len(partners[frames[1]][1])):
                views = [kpts.detach() if self.conf["triangulation_grad"] == "prediction" else kpts]
                for b in frames[1:]:
                    i, lv, _ = partners[b]
                    views.append(kpts.new_zeros(n_kp, 2).index_put((i,), lv[level]))
                xy = torch.stack(views)[:, keep]
                per_level.append(self.regularizer.tracks(xy, vis[:, keep], K[fr], T[fr], weight,
                                                         image_size).loss)
            terms.append(torch.stack(per_level).mean())
            n_tracks += int(keep.sum())
        return (torch.stack(terms).mean() if terms else None), n_tracks

    @staticmethod
    def _keypoint_reprojection(frame_kpts: Mapping[int, tuple[Tensor, Tensor]], targets: WindowTargets,
                               scale: float, long_side: float) -> tuple[Tensor, Tensor, Tensor]:
        """``reprojection_points: keypoints``: every tracked detected keypoint (``frame_kpts``: frame ->
        keypoints, logits) against the projection of its landmark (``targets``). Returns the weighted
        cost sum, the weight sum and the ``(M,)`` distances (pixels)."""
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

    def _matching(self, out: Any, extra: Tensor, T_ab: Tensor, Ka: Tensor,
                  Kb: Tensor) -> tuple[Tensor, int, int]:
        """Focal loss on ``out.scores`` at the pair's matches, labelled by the BA geometry."""
        d = _sampson_px(out, T_ab, Ka, Kb)
        pos = extra | (d < float(self.conf["epipolar_pos_px"]))
        neg = ~extra & (d > float(self.conf["epipolar_neg_px"]))
        labelled = pos | neg
        target = torch.zeros_like(out.scores, dtype=torch.bool)
        valid = torch.zeros_like(target)
        b, i, j = out.matches_b[labelled], out.matches_i[labelled], out.matches_j[labelled]
        valid[b, i, j] = True
        target[b, i, j] = pos[labelled]
        return focal_loss(out.scores, target, valid), int(pos.sum()), int(neg.sum())
