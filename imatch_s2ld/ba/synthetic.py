"""Synthetic bundle-adjustment problems with ground truth (tests and benchmarks).

Cameras move sideways along a gently curving trajectory, looking roughly along +z at points spread
over a slab 4-8 units deep; a point is observed by every frame that sees it inside the image. The
initial values are the ground truth perturbed by about ``rot_noise_deg`` degrees and
``trans_noise_frac`` times the inter-frame baseline (frame 0 is left exact: it is the gauge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..geometry.triangulation import camera_centers
from .problem import BundleProblem
from .tracks import Keypoints, PairMatches

__all__ = ["SyntheticBA", "SyntheticWindow", "make_synthetic_problem", "pose_errors", "synthetic_window",
           "window_from_observations"]


@dataclass(frozen=True)
class SyntheticBA:
    """``problem`` (perturbed initial values, noisy observations) and its ground truth.

    Attributes:
        gt_poses: ``(N, 4, 4)`` world-to-camera; gt_points: ``(M, 3)``.
        gt_xy: ``(O, 2)`` noise-free projections; outliers: ``(O,)`` bool, injected gross errors.
        baseline: distance between consecutive camera centres.
    """

    problem: BundleProblem
    gt_poses: Tensor
    gt_points: Tensor
    gt_xy: Tensor
    outliers: Tensor
    baseline: float


def _rot(axis_angle: np.ndarray) -> np.ndarray:
    th = np.linalg.norm(axis_angle)
    if th < 1e-15:
        return np.eye(3)
    k = axis_angle / th
    Kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(th) * Kx + (1 - math.cos(th)) * Kx @ Kx


def make_synthetic_problem(
    num_frames: int,
    num_points: int,
    noise_px: float = 0.5,
    rot_noise_deg: float = 2.0,
    trans_noise_frac: float = 0.05,
    point_noise_frac: float = 0.05,
    outlier_fraction: float = 0.0,
    max_track_length: int = 12,
    image_size: tuple[int, int] = (640, 480),
    focal: float = 500.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
) -> SyntheticBA:
    """Random problem with ``num_frames`` cameras and ``num_points`` points (each seen by 2 to
    ``max_track_length`` frames).

    Args:
        noise_px: std of the Gaussian pixel noise on observations.
        rot_noise_deg, trans_noise_frac: initial pose perturbation (per axis std such that the rotation
            angle is about ``rot_noise_deg``, translation norm about ``trans_noise_frac * baseline``).
        point_noise_frac: initial point perturbation norm, in baselines.
        outlier_fraction: share of observations moved by 20-60 px (gross outliers).
    """
    if num_frames < 2 or num_points < 1:
        raise ValueError(f"need >= 2 frames and >= 1 point, got {num_frames}, {num_points}")
    rng = np.random.default_rng(seed)
    W, H = image_size
    K = np.array([[focal, 0, (W - 1) / 2], [0, focal, (H - 1) / 2], [0, 0, 1.0]])
    # Baseline such that a point at mean depth stays in view for about max_track_length frames.
    depth_mid = 6.0
    view_width = (W - 40) / focal * depth_mid
    baseline = view_width / max(max_track_length - 1, 1) * 0.9
    N = num_frames
    T_gt = np.zeros((N, 4, 4))
    for i in range(N):
        c = np.array([i * baseline, 0.3 * math.sin(i * 0.3), 0.4 * math.sin(i * 0.17)])
        R = _rot(np.deg2rad(rng.normal(0, 3.0, 3)))  # camera looks along ~+z with a small wobble
        T_gt[i] = np.eye(4)
        T_gt[i, :3, :3] = R
        T_gt[i, :3, 3] = -R @ c
    # Points in a slab in front of the trajectory, kept when seen by >= 2 frames.
    x_lo, x_hi = -view_width / 2, (N - 1) * baseline + view_width / 2
    pts, vis = [], []
    while sum(len(p) for p in pts) < num_points:
        n = 2 * num_points
        P = np.stack([rng.uniform(x_lo, x_hi, n), rng.uniform(-2.0, 2.0, n), rng.uniform(4.0, 8.0, n)], -1)
        cam = np.einsum("nij,mj->nmi", T_gt[:, :3, :3], P) + T_gt[:, None, :3, 3]
        uv = np.einsum("ij,nmj->nmi", K, cam)
        uv = uv[..., :2] / uv[..., 2:]
        inside = (uv[..., 0] > 10) & (uv[..., 0] < W - 11) & (uv[..., 1] > 10) & (uv[..., 1] < H - 11)
        v = (cam[..., 2] > 0.5) & inside
        keep = v.sum(0) >= 2
        pts.append(P[keep])
        vis.append(v[:, keep])
    X_gt = np.concatenate(pts)[:num_points]
    V = np.concatenate(vis, axis=1)[:, :num_points]  # (N, M)
    # Cap the track length (a contiguous run of frames, as in video).
    for m in np.flatnonzero(V.sum(0) > max_track_length):
        f = np.flatnonzero(V[:, m])
        start = rng.integers(0, len(f) - max_track_length + 1)
        V[:, m] = False
        V[f[start:start + max_track_length], m] = True
    obs_f, obs_p = np.nonzero(V)
    order = np.lexsort((obs_f, obs_p))
    obs_f, obs_p = obs_f[order], obs_p[order]
    cam = np.einsum("oij,oj->oi", T_gt[obs_f, :3, :3], X_gt[obs_p]) + T_gt[obs_f, :3, 3]
    uv = (cam @ K.T)
    gt_xy = uv[:, :2] / uv[:, 2:]
    xy = gt_xy + rng.normal(0, noise_px, gt_xy.shape)
    outl = rng.random(len(xy)) < outlier_fraction
    ang = rng.uniform(0, 2 * np.pi, int(outl.sum()))
    xy[outl] += rng.uniform(20, 60, int(outl.sum()))[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
    # Perturbed initial values (frame 0 exact).
    T0 = T_gt.copy()
    s_rot = np.deg2rad(rot_noise_deg) / math.sqrt(3)
    s_tr = trans_noise_frac * baseline / math.sqrt(3)
    for i in range(1, N):
        dR = _rot(rng.normal(0, s_rot, 3))
        c = -T_gt[i, :3, :3].T @ T_gt[i, :3, 3] + rng.normal(0, s_tr, 3)
        T0[i, :3, :3] = dR @ T_gt[i, :3, :3]
        T0[i, :3, 3] = -T0[i, :3, :3] @ c
    X0 = X_gt + rng.normal(0, point_noise_frac * baseline / math.sqrt(3), X_gt.shape)
    problem = BundleProblem.from_arrays(K, T0, X0, obs_f, obs_p, xy, fixed_frames=(0,), dtype=dtype,
                                        device=device)
    t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    return SyntheticBA(problem, t(T_gt), t(X_gt), t(gt_xy), torch.as_tensor(outl, device=device), baseline)


def pose_errors(poses: Tensor, gt_poses: Tensor) -> tuple[float, float]:
    """Mean rotation error (degrees) and mean camera-centre error (in units of the GT's mean
    inter-frame baseline) after aligning the gauge: the estimate's frame 0 is mapped onto the ground
    truth's frame 0, then its centres are scaled about it (least squares).

    Args:
        poses, gt_poses: ``(N, 4, 4)`` world-to-camera.
    """
    P, G = poses.double().cpu(), gt_poses.double().cpu()
    P = P @ torch.linalg.inv(torch.linalg.inv(G[0]) @ P[0])  # frame 0 now equals G[0]
    C, Cg = camera_centers(P), camera_centers(G)
    A, B = C - C[:1], Cg - Cg[:1]
    s = float((A * B).sum() / A.square().sum().clamp_min(1e-300))
    base = float((Cg[1:] - Cg[:-1]).norm(dim=-1).mean()) if len(Cg) > 1 else 1.0
    t_err = float((s * A - B).norm(dim=-1).mean()) / max(base, 1e-300)
    cos = ((P[:, :3, :3].transpose(-1, -2) @ G[:, :3, :3]).diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2
    r_err = float(torch.rad2deg(torch.arccos(cos.clamp(-1, 1))).mean())
    return r_err, t_err


@dataclass
class SyntheticWindow:
    """What a matcher would give for a window: per-frame keypoints (shuffled), all pairwise matches
    (with confidences in [0.5, 1]; optional random wrong matches), and the ground-truth point of every
    keypoint (tests).

    Attributes:
        xy: per frame ``(K_i, 2)`` keypoints; gt_point: per frame ``(K_i,)`` point ids;
        pairs: :class:`PairMatches` for every frame pair ``i < j``.
    """

    xy: list[np.ndarray]
    gt_point: list[np.ndarray]
    pairs: list[PairMatches]

    def keypoints(self) -> Keypoints:
        return Keypoints.create(self.xy)


def window_from_observations(
    obs_frame: np.ndarray, obs_point: np.ndarray, obs_xy: np.ndarray, num_frames: int,
    outlier_fraction: float = 0.0, seed: int = 0,
) -> SyntheticWindow:
    """Keypoints and pairwise matches from ``(O,)`` frame / point ids and ``(O, 2)`` pixels;
    ``outlier_fraction`` of each pair's matches are added as random wrong matches."""
    rng = np.random.default_rng(seed)
    xy, gt_point, where = [], [], []
    for f in range(num_frames):
        sel = rng.permutation(np.flatnonzero(obs_frame == f))
        xy.append(obs_xy[sel])
        gt_point.append(obs_point[sel])
        where.append({int(p): k for k, p in enumerate(obs_point[sel])})
    pairs = []
    for i in range(num_frames):
        for j in range(i + 1, num_frames):
            common = sorted(set(where[i]) & set(where[j]))
            m = np.array([[where[i][p], where[j][p]] for p in common], dtype=np.int64).reshape(-1, 2)
            n = int(outlier_fraction * len(m))
            if n:
                wrong = np.stack([rng.integers(0, len(xy[i]), n), rng.integers(0, len(xy[j]), n)], 1)
                m = np.concatenate([m, wrong])
            pairs.append(PairMatches.create(i, j, m, rng.uniform(0.5, 1.0, len(m))))
    return SyntheticWindow(xy, gt_point, pairs)


def synthetic_window(syn: SyntheticBA, outlier_fraction: float = 0.0, seed: int = 0) -> SyntheticWindow:
    """:func:`window_from_observations` on a synthetic problem's (noisy) observations."""
    p = syn.problem
    return window_from_observations(p.obs_frame.cpu().numpy(), p.obs_point.cpu().numpy(),
                                    p.obs_xy.cpu().numpy(), p.num_frames, outlier_fraction, seed)

