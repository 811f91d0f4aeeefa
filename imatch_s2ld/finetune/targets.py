"""A window's fixed targets from its bundle-adjustment solution (:class:`WindowTargets`), and the keypoint
pairs that share a landmark (:func:`track_matches`). Used by the loss terms (:mod:`.terms`) and by the
implicit re-solve (:mod:`.implicit`)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from ..ba.pipeline import WindowReconstruction
from ..ba.tracks import PairMatches, build_tracks
from ..geometry import essential_from_pose, fundamental_from_essential
from ..geometry.epipolar import sampson_distance
from ..geometry.triangulation import triangulate_tracks
from .window import WindowMatches

__all__ = ["WindowTargets", "fundamental", "sampson_px", "track_matches"]


def fundamental(T_ab: Tensor, Ka: Tensor, Kb: Tensor) -> Tensor:
    """``(..., 3, 3)`` fundamental matrix of ``T_ab`` (frame a to frame b): ``x_b^T F x_a = 0`` in pixels."""
    return fundamental_from_essential(essential_from_pose(T_ab), Ka, Kb)


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

    def to(self, device: torch.device | str) -> WindowTargets:
        """The same targets on ``device``."""
        return WindowTargets(*(getattr(self, f.name).to(device) for f in fields(self)))

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


def sampson_px(kpts_a: Tensor, kpts_b: Tensor, T_ab: Tensor, Ka: Tensor, Kb: Tensor) -> Tensor:
    """``(M,)`` Sampson distance in pixels (float64, no gradient) of matches ``(M, 2)`` in frames a and b to
    the geometry ``T_ab``."""
    F = fundamental(T_ab, Ka, Kb).detach().double()
    return sampson_distance(kpts_a.detach().double(), kpts_b.detach().double(), F, squared=False)
