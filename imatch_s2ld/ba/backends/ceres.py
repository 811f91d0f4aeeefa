"""Reference backend: Ceres through pycolmap's bundle adjuster (``create_default_ceres_bundle_adjuster``).

The problem becomes a ``pycolmap.Reconstruction``: one PINHOLE camera (with a trivial rig) per distinct
``K``, one image (with a trivial frame) per frame holding its observations as 2D points, one 3D point
per observed point with its track. COLMAP puts the centre of the top-left pixel at ``(0.5, 0.5)``, so
``cx``, ``cy`` and the observations are shifted by +0.5 on the way in (residuals are unchanged).

- Intrinsics are constant; frames in ``problem.fixed_frames`` and points in ``problem.fixed_points`` too.
- Gauge: :func:`imatch_s2ld.ba.backends.common.plan_gauge`, realised with COLMAP's own
  ``BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD`` (image ids are ordered so that COLMAP picks the planned
  anchor and scale frames).
- Robust kernel: COLMAP's ``LossFunctionType.HUBER`` / ``CAUCHY`` with ``loss_function_scale =
  robust_scale_px``: Ceres' ``HuberLoss(a)`` and ``CauchyLoss(a)`` take ``a`` in residual units (pixels)
  and act on squared norms exactly like :mod:`imatch_s2ld.ba.robust`, and Ceres' cost is
  ``0.5 * sum rho``, so Ceres' own final cost equals :func:`robust_cost` (kept in ``extra``).
- Weights: only 0 (observation left out) and 1: COLMAP's adjuster has one loss for all residuals.
  COLMAP also refuses tracks of one observation: such points keep their value (their residual still
  counts in the reported cost); ``extra["single_view_points"]`` counts them.
- Threads: Ceres' ``num_threads`` is left at pycolmap's default (-1: all cores), but COLMAP runs
  problems under ``min_num_residuals_for_cpu_multi_threading`` (50000) residuals on one thread; the
  thread count used is reported in ``extra["num_threads"]``.
- Ceres keeps no cost history here: ``cost_history`` is ``[initial, final]`` (:func:`robust_cost`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pycolmap
import torch
from torch import Tensor

from ...errors import InputError
from ..problem import BAResult, BundleProblem, poses_to_se3
from .common import Gauge, plan_gauge, robust_cost

__all__ = ["solve_ceres"]

_LOSS = {"none": "TRIVIAL", "huber": "HUBER", "cauchy": "CAUCHY"}
_OK_TERMINATIONS = ("CONVERGENCE", "USER_SUCCESS")


def _check_inputs(problem: BundleProblem) -> None:
    """Pinhole intrinsics without skew, weights 0 or 1 (InputError otherwise)."""
    K = problem.K
    bad = (K[:, 0, 1] != 0) | (K[:, 1, 0] != 0) | (K[:, 2, :2] != 0).any(-1) | (K[:, 2, 2] != 1)
    if bool(bad.any()):
        i = int(torch.nonzero(bad)[0])
        raise InputError(f"backend 'ceres' needs pinhole K = [[fx, 0, cx], [0, fy, cy], [0, 0, 1]] "
                         f"(no skew); frame {i} has K = {K[i].tolist()}")
    w = problem.obs_weight
    if bool(((w != 0) & (w != 1)).any()):
        raise InputError("backend 'ceres' does not support per-observation weights (only 0 or 1); "
                         "use backend 'schur' or 'pypose_dense'")


def _image_ids(gauge: Gauge) -> np.ndarray:
    """``(N,)`` COLMAP image id (= frame id) of each frame. Ids follow the order anchors (fixed frames),
    scale frame, the rest, so that COLMAP's TWO_CAMS_FROM_WORLD (first fixed image, then the first
    variable image with a baseline, by id) picks the frames of ``gauge``."""
    N = len(gauge.fixed)
    first = torch.nonzero(gauge.fixed).flatten().tolist()
    if gauge.scale_frame is not None:
        first.append(gauge.scale_frame)
    order = first + [i for i in range(N) if i not in set(first)]
    ids = np.empty(N, dtype=np.int64)
    ids[order] = np.arange(1, N + 1)
    return ids


def _add_cameras(rec: pycolmap.Reconstruction, K: Tensor) -> Tensor:
    """One PINHOLE camera (and trivial rig) per distinct K; returns ``(N,)`` camera ids (from 1)."""
    uniq, inverse = torch.unique(K.reshape(-1, 9), dim=0, return_inverse=True)
    for c, k in enumerate(uniq.tolist()):
        fx, cx, fy, cy = k[0], k[2] + 0.5, k[4], k[5] + 0.5
        width, height = max(1, math.ceil(2 * cx)), max(1, math.ceil(2 * cy))
        cam = pycolmap.Camera(model="PINHOLE", width=width, height=height, params=[fx, fy, cx, cy],
                              camera_id=c + 1)
        rec.add_camera_with_trivial_rig(cam)
    return inverse + 1


def _build(problem: BundleProblem, ids: np.ndarray) -> tuple[pycolmap.Reconstruction, dict[int, int]]:
    """Reconstruction with images (ids ``ids``) and 3D points; returns it and the COLMAP point id of
    each problem point seen by >= 2 weighted observations."""
    rec = pycolmap.Reconstruction()
    cam_ids = _add_cameras(rec, problem.K).tolist()
    used = problem.obs_weight > 0
    f = problem.obs_frame[used].cpu().numpy()
    pt = problem.obs_point[used].cpu().numpy()
    xy = problem.obs_xy[used].detach().cpu().double().numpy() + 0.5
    T = problem.pose_matrices().detach().cpu().double().numpy()
    sort = np.argsort(f, kind="stable")
    starts = np.searchsorted(f[sort], np.arange(problem.num_frames + 1))
    idx2d = np.empty(len(f), dtype=np.int64)  # point2D index of each observation in its image
    for i in range(problem.num_frames):
        obs = sort[starts[i]:starts[i + 1]]
        idx2d[obs] = np.arange(len(obs))
        image = pycolmap.Image(name=f"frame_{i:06d}", keypoints=xy[obs], camera_id=cam_ids[i],
                               image_id=int(ids[i]))
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(T[i, :3, :]))
    X = problem.points.detach().cpu().double().numpy()
    point_ids: dict[int, int] = {}
    by_point = np.argsort(pt, kind="stable")
    pstarts = np.searchsorted(pt[by_point], np.arange(problem.num_points + 1))
    for m in np.unique(pt).tolist():
        obs = by_point[pstarts[m]:pstarts[m + 1]]
        if len(obs) < 2:
            continue  # COLMAP refuses single-view tracks: the point keeps its value
        track = pycolmap.Track()
        track.add_elements([pycolmap.TrackElement(int(ids[f[o]]), int(idx2d[o])) for o in obs])
        point_ids[m] = rec.add_point3D(X[m], track)
    return rec, point_ids


def _config(problem: BundleProblem, gauge: Gauge, ids: np.ndarray, num_cameras: int,
            point_ids: dict[int, int]) -> pycolmap.BundleAdjustmentConfig:
    """Observed images, constant intrinsics / fixed frames / fixed points, and the scale gauge."""
    config = pycolmap.BundleAdjustmentConfig()
    for i in torch.nonzero(gauge.observed).flatten().tolist():
        image_id = int(ids[i])
        config.add_image(image_id)
        if bool(gauge.fixed[i]):
            config.set_constant_rig_from_world_pose(image_id)  # trivial frames: frame id == image id
    for c in range(1, num_cameras + 1):
        config.set_constant_cam_intrinsics(c)
    for m in torch.nonzero(problem.fixed_points).flatten().tolist():
        if m in point_ids:
            config.add_constant_point(point_ids[m])
    if gauge.scale_frame is not None:
        config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    return config


def _options(conf: dict[str, Any]) -> pycolmap.BundleAdjustmentOptions:
    opts = pycolmap.BundleAdjustmentOptions()
    opts.refine_focal_length = False
    opts.refine_principal_point = False
    opts.refine_extra_params = False
    opts.refine_sensor_from_rig = False
    opts.print_summary = False
    opts.ceres.loss_function_type = getattr(pycolmap.LossFunctionType, _LOSS[conf["robust_kernel"]])
    opts.ceres.loss_function_scale = float(conf["robust_scale_px"])
    solver = opts.ceres.solver_options
    solver.max_num_iterations = int(conf["max_iterations"])
    solver.function_tolerance = float(conf["function_tolerance"])
    solver.gradient_tolerance = float(conf["gradient_tolerance"])
    solver.parameter_tolerance = float(conf["parameter_tolerance"])
    return opts


def _read_back(problem: BundleProblem, rec: pycolmap.Reconstruction, ids: np.ndarray,
               point_ids: dict[int, int]) -> tuple[Tensor, Tensor]:
    """``(N, 4, 4)`` world-to-camera poses and ``(M, 3)`` points (unobserved ones unchanged)."""
    T = problem.pose_matrices().detach().cpu().double().clone()
    for i in range(problem.num_frames):
        T[i, :3, :] = torch.from_numpy(rec.frame(int(ids[i])).rig_from_world.matrix())
    X = problem.points.detach().cpu().double().clone()
    for m, pid in point_ids.items():
        X[m] = torch.from_numpy(np.asarray(rec.point3D(pid).xyz))
    return T.to(problem.device, problem.dtype), X.to(problem.device, problem.dtype)


def solve_ceres(problem: BundleProblem, conf: dict[str, Any]) -> BAResult:
    """Bundle-adjust with Ceres (pycolmap's bundle adjuster); see the module docstring for the mapping.

    Args:
        problem: the problem (not modified).
        conf: :func:`imatch_s2ld.ba.config.ba_conf` options (``max_iterations`` and the three
            tolerances go to Ceres unchanged: both use Ceres' definitions).
    Returns:
        The result; ``success`` when Ceres converged, or stopped at ``max_iterations`` with a finite cost
        not above the initial one. ``extra``: Ceres' own costs, message, threads, linear solver, gauge.
    Raises:
        InputError: skewed intrinsics, observation weights other than 0/1, or a bad scale_frame.
    """
    start = time.perf_counter()
    _check_inputs(problem)
    gauge = plan_gauge(problem, conf)
    ids = _image_ids(gauge)
    rec, point_ids = _build(problem, ids)
    config = _config(problem, gauge, ids, rec.num_cameras(), point_ids)
    summary = pycolmap.create_default_ceres_bundle_adjuster(_options(conf), config, rec).solve()
    cs = summary.ceres_summary
    T, X = _read_back(problem, rec, ids, point_ids)
    poses = poses_to_se3(T)
    history = [robust_cost(problem, problem.poses, problem.points, conf),
               robust_cost(problem, poses, X, conf)]
    termination = cs.termination_type.name
    success = termination in _OK_TERMINATIONS or (
        termination == "NO_CONVERGENCE" and math.isfinite(history[1]) and history[1] <= history[0])
    extra = {
        "ceres_initial_cost": cs.initial_cost, "ceres_final_cost": cs.final_cost, "termination": termination,
        "message": cs.message, "num_threads": cs.num_threads_used,
        "linear_solver": cs.linear_solver_type_used.name, "gauge": gauge.description,
    }
    if gauge.scale_frame is not None:
        extra["scale_frame"], extra["scale_dim"] = gauge.scale_frame, gauge.scale_dim
    used = problem.obs_weight > 0
    extra["single_view_points"] = int(len(torch.unique(problem.obs_point[used])) - len(point_ids))
    # Ceres counts its initial evaluation (iteration 0) as a successful step.
    iterations = max(cs.num_successful_steps + cs.num_unsuccessful_steps - 1, 0)
    reason = f"ceres {termination}: {cs.message}"
    return BAResult.from_solution(problem, poses, X, conf, history, iterations, success, reason, "ceres",
                                  time.perf_counter() - start, extra)
