"""Initial bundle-adjustment problem for a window of frames, from keypoints and tracks.

:func:`initialize_window` runs, in order (every threshold is a key of :data:`DEFAULT_CONF`):

1. Checks: finite keypoints, keypoint confidences and intrinsics, at least ``min_tracks`` tracks.
2. Initial pair. Candidates are frame pairs sharing at least ``min_tracks`` tracks. All pairs that contain
   ``reference_frame`` (frame 0 by default) are tried first; only when none of them qualifies are the
   other pairs tried (most shared tracks first, at most ``max_pair_candidates``). A pair ``(a, b)``,
   ``a`` being the reference frame (or the smaller index), qualifies when

   - the essential matrix gives a relative pose (:func:`estimate_relative_pose`) with at least
     ``min_pair_inliers`` inliers; ``a`` gets the identity pose, ``b`` the pose ``[R | t]`` with
     ``|t| = 1``: **the initial pair's baseline is the unit of length**;
   - the median parallax of the inliers, i.e. the angle between the two viewing rays of a match once the
     rotation is compensated (the triangulation angle of the match), is at least ``min_parallax_deg``;
   - at least ``min_init_points`` inliers triangulate (:func:`triangulate_tracks`, the confidence-weighted
     DLT :func:`imatch_s2ld.geometry.triangulation.triangulate_dlt`) in front of both cameras,
   - and at least ``min_init_points`` of them pass the filters (below).

   Among qualifying pairs the one with the most filtered points wins (ties: lower frame indices). If no
   pair qualifies, the reason of the pair that got furthest is returned.
3. Registration: repeatedly, the unregistered frame with the most 2D-3D correspondences (its observations
   of triangulated tracks) is registered by PnP (pycolmap LO-RANSAC + refinement) if it has at least
   ``pnp_min_inliers`` inliers; its observations of existing points are kept when they reproject within
   ``max_reproj_px``; then every untriangulated track seen by >= 2 registered frames is triangulated and
   filtered. Frames that cannot be registered are left out and listed with the reason.
4. Gauge: when ``reference_frame`` is registered the world frame is moved onto it (rigidly, the scale is
   kept), so it has the identity pose and is the problem's fixed frame; otherwise the initial pair's
   first frame is.

Filters (each triangulation): views where the first DLT point is behind the camera or reprojects further
than ``max_reproj_px`` are dropped and the point is re-triangulated from the others (once); it is kept when
the DLT cheirality holds (positive depth in every kept view), every kept view reprojects within
``max_reproj_px``, >= 2 views are kept and its triangulation angle is ``>= min_angle_deg``.

Observation weights (DLT rows and ``BundleProblem.obs_weight``): the track observation confidence (mean of
its match confidences) times the keypoint confidence; observations of weight 0 are ignored everywhere.

Failures return ``InitResult(success=False, problem=None, reason=...)``, never NaN and never an exception
from inside the geometry; the reasons start with one of :data:`FAILURE_REASONS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycolmap
import torch
from torch import Tensor

from ..conf import merge_conf
from ..errors import InputError
from ..geometry.camera import transform_points
from ..geometry.estimate import ESTIMATORS, estimate_relative_pose
from ..geometry.triangulation import (
    camera_centers,
    reprojection_residuals,
    triangulate_tracks,
    triangulation_angle,
)
from .problem import BundleProblem
from .tracks import Keypoints, Tracks

__all__ = ["DEFAULT_CONF", "FAILURE_REASONS", "InitResult", "init_conf", "initialize_window",
           "triangulate_tracks"]

DEFAULT_CONF: dict[str, Any] = {
    "estimator": "pycolmap",  # relative pose: ransac | magsac | pycolmap (see estimate_relative_pose)
    "ransac_threshold_px": 1.0,  # essential-matrix inlier threshold
    "ransac_confidence": 0.99999,
    "ransac_max_iters": 10000,
    "min_tracks": 20,  # tracks (length >= 2) in the window, and shared by a candidate pair
    "min_pair_inliers": 20,  # essential-matrix inliers of the initial pair
    "min_parallax_deg": 1.5,  # median triangulation angle of the initial pair
    "min_init_points": 20,  # initial-pair points in front of both cameras and after the filters
    "max_reproj_px": 4.0,  # point filter: reprojection error in every kept view
    "min_angle_deg": 1.0,  # point filter: triangulation angle
    "pnp_threshold_px": 4.0,  # PnP RANSAC inlier threshold
    "pnp_min_inliers": 15,
    "pnp_max_iters": 10000,
    "reference_frame": 0,  # preferred gauge frame (identity pose, fixed)
    "max_pair_candidates": 20,  # pairs without the reference frame tried when none with it qualifies
    "seed": 0,  # RANSAC seed (pycolmap)
}

FAILURE_REASONS = (
    "non-finite keypoints", "non-finite or negative keypoint confidences", "non-finite intrinsics",
    "too few tracks", "relative pose failed", "pure rotation / insufficient parallax",
    "too few points in front of both cameras", "too few points pass the filters",
)

_POSITIVE = ("ransac_threshold_px", "ransac_confidence", "max_reproj_px", "pnp_threshold_px")
_COUNTS = ("ransac_max_iters", "min_tracks", "min_pair_inliers", "min_init_points", "pnp_min_inliers",
           "pnp_max_iters", "max_pair_candidates")


def init_conf(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """:data:`DEFAULT_CONF` merged strictly with ``config`` and validated.

    Raises:
        InputError: unknown key, unknown estimator, non-positive threshold or count.
    """
    conf = merge_conf(DEFAULT_CONF, config)
    if conf["estimator"] not in ESTIMATORS:
        raise InputError(f"unknown relative-pose estimator {conf['estimator']!r}; choose one of {ESTIMATORS}")
    for key in _POSITIVE:
        if not float(conf[key]) > 0:
            raise InputError(f"{key} must be positive, got {conf[key]}")
    for key in _COUNTS:
        if int(conf[key]) < 1:
            raise InputError(f"{key} must be >= 1, got {conf[key]}")
    for key in ("min_parallax_deg", "min_angle_deg"):
        if not 0 <= float(conf[key]) < 180:
            raise InputError(f"{key} must be in [0, 180), got {conf[key]}")
    return conf


@dataclass(frozen=True)
class InitResult:
    """Outcome of :func:`initialize_window`.

    Attributes:
        problem: the initial :class:`BundleProblem` over the registered frames (None on failure).
        success: False when no problem could be built; ``reason`` says why.
        reason: failure reason (starts with one of :data:`FAILURE_REASONS`), or a summary.
        frames: ``(R,)`` window index of each problem frame (the registered frames, ascending).
        unregistered: window frame -> why it was left out.
        gauge_frame: window frame with the identity pose, fixed in the problem (-1 on failure).
        initial_pair: the two window frames of the initial pair (None when none qualified).
        point_track: ``(M,)`` track id of each problem point.
        obs_keypoint: ``(O, 2)`` (window frame, keypoint index) of each problem observation.
        stats: counts and the initial-pair trials.
    """

    problem: BundleProblem | None
    success: bool
    reason: str
    frames: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    unregistered: dict[int, str] = field(default_factory=dict)
    gauge_frame: int = -1
    initial_pair: tuple[int, int] | None = None
    point_track: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    obs_keypoint: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.int64))
    stats: dict[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def failed(cls, reason: str, stats: dict[str, Any] | None = None) -> InitResult:
        return cls(problem=None, success=False, reason=reason, stats=dict(stats or {}))


@dataclass(frozen=True)
class _Window:
    """Per-observation data of the window (``O`` track observations, ``T`` tracks, ``N`` frames)."""

    tracks: Tracks
    xy: np.ndarray  # (O, 2)
    weight: np.ndarray  # (O,)
    obs_index: np.ndarray  # (T, N), -1 where not observed
    K: np.ndarray  # (N, 3, 3)
    conf: dict[str, Any]


@dataclass
class _Map:
    """Reconstruction state: registered poses, triangulated tracks, used observations."""

    poses: dict[int, np.ndarray]  # window frame -> (4, 4) world-to-camera
    points: np.ndarray  # (T, 3), meaningful where has_point
    has_point: np.ndarray  # (T,) bool
    obs_used: np.ndarray  # (O,) bool


@dataclass(frozen=True)
class _Triangulated:
    """Triangulation of ``n`` tracks in ``V`` views: final points and masks, first-pass diagnostics."""

    points: np.ndarray  # (n, 3)
    ok: np.ndarray  # (n,) passes every filter
    used: np.ndarray  # (n, V) kept observations
    in_front: np.ndarray  # (n,) first-pass DLT valid (cheirality)


def _torch(x: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))


def _triangulate(win: _Window, poses: dict[int, np.ndarray], frames: list[int],
                 track_ids: np.ndarray) -> _Triangulated:
    """DLT of ``track_ids`` from their views in ``frames``; outlier views dropped once, then filtered."""
    conf = win.conf
    idx = win.obs_index[track_ids][:, frames].T  # (V, n)
    seen = idx >= 0
    kpts = _torch(np.where(seen[..., None], win.xy[idx], 0.0))  # (V, n, 2)
    w = _torch(np.where(seen, win.weight[idx], 0.0))
    K, T = _torch(win.K[frames]), _torch(np.stack([poses[f] for f in frames]))
    X, valid = triangulate_tracks(kpts, K, T, w)
    err = reprojection_residuals(X, kpts, K, T).norm(dim=-1)  # (V, n)
    ahead = transform_points(T, X[None])[..., 2] > 0  # (V, n): one bad view does not condemn the point
    keep = (w > 0) & (err <= float(conf["max_reproj_px"])) & ahead
    X2, valid2 = triangulate_tracks(kpts, K, T, w * keep)
    used = keep & (reprojection_residuals(X2, kpts, K, T).norm(dim=-1) <= float(conf["max_reproj_px"]))
    angle = triangulation_angle(X2, camera_centers(T), weights=used.double())
    ok = valid2 & (used == keep).all(0) & (used.sum(0) >= 2) & (angle >= float(conf["min_angle_deg"]))
    return _Triangulated(X2.numpy(), ok.numpy(), (used & ok[None]).numpy().T, valid.numpy())


def _accept(win: _Window, state: _Map, frames: list[int], track_ids: np.ndarray, tri: _Triangulated) -> int:
    """Store the points of ``tri`` that passed the filters and mark their kept observations used."""
    sel = track_ids[tri.ok]
    state.points[sel] = tri.points[tri.ok]
    state.has_point[sel] = True
    idx = win.obs_index[track_ids][:, frames]  # (n, V)
    state.obs_used[idx[tri.used]] = True
    return len(sel)


# ---------------------------------------------------------------------------------------- initial pair
@dataclass(frozen=True)
class _PairTrial:
    """One candidate initial pair: how far it got (stage 0-4, 4 = qualifies), the quantity its last stage
    tested (inliers, parallax, points in front, filtered points; ranks failures and winners), its points."""

    pair: tuple[int, int]
    stage: int
    reason: str
    metric: float = 0.0
    pose: np.ndarray | None = None  # (4, 4) of the pair's second frame
    track_ids: np.ndarray | None = None
    tri: _Triangulated | None = None


def _parallax_deg(x0: np.ndarray, x1: np.ndarray, K0: np.ndarray, K1: np.ndarray,
                  R: np.ndarray) -> np.ndarray:
    """``(n,)`` angle (deg) between the viewing rays of matches ``x0 <-> x1``, rotation ``R`` compensated."""
    r0 = np.c_[x0, np.ones(len(x0))] @ np.linalg.inv(K0).T
    r1 = (np.c_[x1, np.ones(len(x1))] @ np.linalg.inv(K1).T) @ R  # R^T r1: camera-1 rays in camera 0
    cross = np.linalg.norm(np.cross(r0, r1), axis=1)
    return np.degrees(np.arctan2(cross, (r0 * r1).sum(1)))


def _try_pair(win: _Window, a: int, b: int) -> _PairTrial:
    """Relative pose, parallax, triangulation and filters of the candidate pair ``(a, b)``."""
    conf, pair = win.conf, (a, b)
    shared = np.flatnonzero((win.obs_index[:, a] >= 0) & (win.obs_index[:, b] >= 0))
    xa, xb = win.xy[win.obs_index[shared, a]], win.xy[win.obs_index[shared, b]]
    rel = estimate_relative_pose(xa, xb, win.K[a], win.K[b], conf["estimator"],
                                 float(conf["ransac_threshold_px"]), float(conf["ransac_confidence"]),
                                 int(conf["ransac_max_iters"]))
    n_in = 0 if rel is None else int(rel.inliers.sum())
    if rel is None or n_in < int(conf["min_pair_inliers"]):
        return _PairTrial(pair, 0, f"relative pose failed for every candidate pair (best: pair {pair} with "
                                   f"{n_in} essential-matrix inliers of {len(shared)} shared tracks, need "
                                   f"{int(conf['min_pair_inliers'])})", n_in)
    par = float(np.median(_parallax_deg(xa[rel.inliers], xb[rel.inliers], win.K[a], win.K[b], rel.R)))
    if not par >= float(conf["min_parallax_deg"]):
        return _PairTrial(pair, 1, f"pure rotation / insufficient parallax: median triangulation angle below "
                                   f"{conf['min_parallax_deg']} deg for every candidate pair with a relative "
                                   f"pose (best: pair {pair} with {par:.3g} deg)", par)
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rel.R, rel.t / np.linalg.norm(rel.t)
    ids = shared[rel.inliers]
    tri = _triangulate(win, {a: np.eye(4), b: pose}, [a, b], ids)
    need = int(conf["min_init_points"])
    n_front, n_ok = int(tri.in_front.sum()), int(tri.ok.sum())
    if n_front < need:
        return _PairTrial(pair, 2, f"too few points in front of both cameras (best: pair {pair} with "
                                   f"{n_front} of {len(ids)} inliers, need {need})", n_front)
    if n_ok < need:
        return _PairTrial(pair, 3, f"too few points pass the filters (best: pair {pair} with {n_ok} of "
                                   f"{n_front} within {conf['max_reproj_px']} px and angle >= "
                                   f"{conf['min_angle_deg']} deg, need {need})", n_ok)
    return _PairTrial(pair, 4, "ok", n_ok, pose, ids, tri)


def _candidate_pairs(win: _Window) -> tuple[list[tuple[int, int]], list[tuple[int, int]], str | None]:
    """Pairs with the reference frame, other pairs (most shared tracks first), or a failure reason."""
    conf = win.conf
    seen = (win.obs_index >= 0).astype(np.int64)
    shared = seen.T @ seen  # (N, N)
    N, need, ref = shared.shape[0], int(conf["min_tracks"]), int(conf["reference_frame"])
    iu, ju = np.triu_indices(N, 1)
    if len(iu) == 0 or shared[iu, ju].max() < need:
        best = 0 if len(iu) == 0 else int(shared[iu, ju].max())
        return [], [], f"too few tracks shared by any frame pair (most: {best}, need {need})"
    order = np.lexsort((ju, iu, -shared[iu, ju]))
    ok = [(int(i), int(j)) for i, j in zip(iu[order], ju[order]) if shared[i, j] >= need]
    with_ref = [(ref, j if i == ref else i) for i, j in ok if ref in (i, j)]
    others = [p for p in ok if ref not in p][: int(conf["max_pair_candidates"])]
    return with_ref, others, None


def _choose_pair(win: _Window) -> tuple[_PairTrial | None, str, list[dict[str, Any]]]:
    """The qualifying pair with most filtered points (reference-frame pairs first) or the failure reason."""
    with_ref, others, reason = _candidate_pairs(win)
    if reason is not None:
        return None, reason, []
    log: list[dict[str, Any]] = []
    best: _PairTrial | None = None
    for group in (with_ref, others):
        trials = [_try_pair(win, a, b) for a, b in group]
        log += [{"pair": t.pair, "stage": t.stage, "metric": t.metric, "reason": t.reason} for t in trials]
        good = [t for t in trials if t.stage == 4]
        if good:
            return max(good, key=lambda t: (t.metric, -t.pair[0], -t.pair[1])), "ok", log
        for t in trials:
            if best is None or (t.stage, t.metric) > (best.stage, best.metric):
                best = t
    return None, best.reason if best is not None else "relative pose failed: no candidate pair", log


# ---------------------------------------------------------------------------------------- registration
def _colmap_camera(K: np.ndarray) -> pycolmap.Camera:
    """PINHOLE camera; COLMAP puts the centre of the top-left pixel at (0.5, 0.5)."""
    w, h = max(int(round(2 * (K[0, 2] + 1))), 1), max(int(round(2 * (K[1, 2] + 1))), 1)
    return pycolmap.Camera(model="PINHOLE", width=w, height=h,
                           params=[K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])


def _pnp(win: _Window, state: _Map, f: int) -> tuple[np.ndarray | None, str]:
    """World-to-camera pose of frame ``f`` from its observations of triangulated tracks, or why not."""
    conf = win.conf
    need = max(int(conf["pnp_min_inliers"]), 4)
    ids = np.flatnonzero(state.has_point & (win.obs_index[:, f] >= 0))
    if len(ids) < need:
        return None, f"too few 2D-3D correspondences ({len(ids)}, need {need})"
    opts = pycolmap.AbsolutePoseEstimationOptions()
    opts.ransac.max_error = float(conf["pnp_threshold_px"])
    opts.ransac.max_num_trials = int(conf["pnp_max_iters"])
    opts.ransac.random_seed = int(conf["seed"])
    xy = win.xy[win.obs_index[ids, f]] + 0.5
    out = pycolmap.estimate_and_refine_absolute_pose(xy, state.points[ids], _colmap_camera(win.K[f]), opts)
    if out is None:
        return None, f"PnP RANSAC failed on {len(ids)} correspondences"
    if int(out["num_inliers"]) < need:
        return None, f"PnP RANSAC: {int(out['num_inliers'])} inliers of {len(ids)} (need {need})"
    T = np.eye(4)
    T[:3] = np.asarray(out["cam_from_world"].matrix(), dtype=np.float64)
    if not np.isfinite(T).all():
        return None, "PnP RANSAC returned a non-finite pose"
    return T, "ok"


def _add_frame(win: _Window, state: _Map, f: int, T: np.ndarray) -> None:
    """Register ``f``: keep its views of existing points that reproject well, triangulate new tracks."""
    state.poses[f] = T
    ids = np.flatnonzero(state.has_point & (win.obs_index[:, f] >= 0))
    cam = state.points[ids] @ T[:3, :3].T + T[:3, 3]
    z = cam[:, 2]
    uv = cam @ win.K[f].T
    obs = win.obs_index[ids, f]
    err = np.linalg.norm(uv[:, :2] / np.where(z > 0, z, 1.0)[:, None] - win.xy[obs], axis=1)
    state.obs_used[obs[(z > 0) & (err <= float(win.conf["max_reproj_px"]))]] = True
    _triangulate_new(win, state)


def _triangulate_new(win: _Window, state: _Map) -> int:
    """Triangulate the tracks without a point that >= 2 registered frames observe."""
    frames = sorted(state.poses)
    count = (win.obs_index[:, frames] >= 0).sum(1)
    ids = np.flatnonzero(~state.has_point & (count >= 2))
    if len(ids) == 0:
        return 0
    return _accept(win, state, frames, ids, _triangulate(win, state.poses, frames, ids))


def _register_all(win: _Window, state: _Map) -> dict[int, str]:
    """Register frames by PnP, best-connected first, until none more can be; the others with reasons."""
    failures: dict[int, str] = {}
    while True:
        pending = [f for f in range(win.K.shape[0]) if f not in state.poses]
        corr = [int((state.has_point & (win.obs_index[:, f] >= 0)).sum()) for f in pending]
        for _, f in sorted(zip(corr, pending), key=lambda p: (-p[0], p[1])):
            T, why = _pnp(win, state, f)
            if T is not None:
                _add_frame(win, state, f, T)
                failures.pop(f, None)
                break
            failures[f] = why
        else:
            return {f: failures[f] for f in pending}


# ---------------------------------------------------------------------------------------- problem
def _build_problem(win: _Window, state: _Map, gauge: int) -> tuple[BundleProblem, np.ndarray, np.ndarray]:
    """Problem over the registered frames (world frame moved onto ``gauge``); point tracks, obs keypoints."""
    A = state.poses[gauge]
    A_inv = np.linalg.inv(A)
    frames = sorted(state.poses)
    poses = np.stack([state.poses[f] @ A_inv for f in frames])
    poses[frames.index(gauge)] = np.eye(4)
    track_ids = np.flatnonzero(state.has_point)
    points = state.points[track_ids] @ A[:3, :3].T + A[:3, 3]
    tr = win.tracks
    point_of = np.full(tr.num_tracks, -1, dtype=np.int64)
    point_of[track_ids] = np.arange(len(track_ids))
    frame_pos = np.full(tr.num_frames, -1, dtype=np.int64)
    frame_pos[frames] = np.arange(len(frames))
    obs = np.flatnonzero(state.obs_used & (point_of[tr.obs_track] >= 0) & (frame_pos[tr.obs_frame] >= 0))
    problem = BundleProblem.from_arrays(
        win.K[frames], poses, points, frame_pos[tr.obs_frame[obs]], point_of[tr.obs_track[obs]], win.xy[obs],
        obs_weight=win.weight[obs], fixed_frames=(frames.index(gauge),),
    )
    return problem, track_ids, np.stack([tr.obs_frame[obs], tr.obs_kpt[obs]], axis=1)


# ---------------------------------------------------------------------------------------- entry point
def _intrinsics(K: Any, N: int) -> np.ndarray:
    """``(N, 3, 3)`` float64 from a shared ``(3, 3)`` or per-frame ``(N, 3, 3)``."""
    Kn = (K.detach().cpu().numpy() if isinstance(K, Tensor) else np.asarray(K)).astype(np.float64)
    if Kn.shape == (3, 3):
        Kn = np.broadcast_to(Kn, (N, 3, 3))
    if Kn.shape != (N, 3, 3):
        raise InputError(f"K must be (3, 3) or ({N}, 3, 3), got {Kn.shape}")
    return np.ascontiguousarray(Kn)


def _input_problem(keypoints: Keypoints, Kn: np.ndarray) -> str | None:
    """Why the inputs cannot be used (non-finite keypoints, confidences or intrinsics), or None."""
    for f, (xy, c) in enumerate(zip(keypoints.xy, keypoints.confidence)):
        if not np.isfinite(xy).all():
            return f"non-finite keypoints in frame {f}"
        if not (np.isfinite(c).all() and (c >= 0).all()):
            return f"non-finite or negative keypoint confidences in frame {f}"
    for f, k in enumerate(Kn):
        if not np.isfinite(k).all():
            return f"non-finite intrinsics of frame {f}"
        if not (k[0, 0] > 0 and k[1, 1] > 0):
            return f"non-finite intrinsics of frame {f}: focal lengths must be positive"
    return None


def _window(keypoints: Keypoints, tracks: Tracks, Kn: np.ndarray, conf: dict[str, Any]) -> _Window:
    xy = np.zeros((tracks.num_observations, 2))
    kconf = np.zeros(tracks.num_observations)
    for f in range(tracks.num_frames):
        sel = tracks.obs_frame == f
        xy[sel] = keypoints.xy[f][tracks.obs_kpt[sel]]
        kconf[sel] = keypoints.confidence[f][tracks.obs_kpt[sel]]
    weight = tracks.obs_conf * kconf
    obs_index = tracks.observation_index()
    obs_index[tracks.obs_track[weight <= 0], tracks.obs_frame[weight <= 0]] = -1  # weight 0: not observed
    return _Window(tracks, xy, weight, obs_index, Kn, conf)


def initialize_window(
    keypoints: Keypoints, tracks: Tracks, K: Any, config: Mapping[str, Any] | None = None
) -> InitResult:
    """Build the initial bundle-adjustment problem of a window (see the module docstring).

    Args:
        keypoints: the window's keypoints (``N`` frames).
        tracks: :func:`imatch_s2ld.ba.tracks.build_tracks` on the same keypoints.
        K: ``(3, 3)`` shared or ``(N, 3, 3)`` intrinsics (numpy or tensor).
        config: overrides of :data:`DEFAULT_CONF` (strict).
    Returns:
        :class:`InitResult`; degenerate input gives ``success=False`` and the reason.
    Raises:
        InputError: bad configuration, intrinsics shape, or tracks built for other keypoint counts.
    """
    conf = init_conf(config)
    N = keypoints.num_frames
    if tracks.num_frames != N or not np.array_equal(tracks.num_keypoints, keypoints.counts):
        raise InputError(f"tracks were built for keypoint counts {tracks.num_keypoints.tolist()}, "
                         f"keypoints have {keypoints.counts.tolist()}")
    if not 0 <= int(conf["reference_frame"]) < max(N, 1):
        raise InputError(f"reference_frame {conf['reference_frame']} outside [0, {N})")
    Kn = _intrinsics(K, N)
    reason = _input_problem(keypoints, Kn)
    if reason is not None:
        return InitResult.failed(reason)
    if N < 2 or tracks.num_tracks < int(conf["min_tracks"]):
        return InitResult.failed(f"too few tracks: {tracks.num_tracks} over {N} frames "
                                 f"(need {int(conf['min_tracks'])})")
    win = _window(keypoints, tracks, Kn, conf)
    trial, reason, log = _choose_pair(win)
    stats: dict[str, Any] = {"pair_trials": log}
    if trial is None:
        return InitResult.failed(reason, stats)
    a, b = trial.pair
    state = _Map({a: np.eye(4), b: trial.pose}, np.zeros((tracks.num_tracks, 3)),
                 np.zeros(tracks.num_tracks, dtype=bool), np.zeros(tracks.num_observations, dtype=bool))
    stats["initial_points"] = _accept(win, state, [a, b], trial.track_ids, trial.tri)
    _triangulate_new(win, state)  # shared tracks that were not essential-matrix inliers
    unregistered = _register_all(win, state)
    ref = int(conf["reference_frame"])
    gauge = ref if ref in state.poses else a
    problem, point_track, obs_kpt = _build_problem(win, state, gauge)
    stats.update(points=problem.num_points, observations=problem.num_observations)
    return InitResult(
        problem=problem, success=True,
        reason=f"ok: {len(state.poses)} of {N} frames registered, {problem.num_points} points",
        frames=np.array(sorted(state.poses), dtype=np.int64), unregistered=unregistered, gauge_frame=gauge,
        initial_pair=trial.pair, point_track=point_track, obs_keypoint=obs_kpt, stats=stats,
    )
