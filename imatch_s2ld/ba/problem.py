"""Bundle-adjustment problem and result containers (inputs are never modified by a solver).

Conventions (:mod:`imatch_s2ld.conventions`): poses are world-to-camera, pixels ``(x, y)`` with the
centre of the top-left pixel at ``(0, 0)``. ``N`` frames, ``M`` points, ``O`` observations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pypose as pp
import torch
from torch import Tensor

from ..errors import InputError
from ..io import atomic_path, read_npz

__all__ = ["BAResult", "BundleProblem", "poses_to_se3"]


def _tensor(x: Any, name: str, dtype: torch.dtype | None, device: Any) -> Tensor:
    if isinstance(x, Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as err:
            raise InputError(f"{name}: cannot convert to an array ({err})") from None
    return t.to(device=device, dtype=dtype) if dtype is not None or device is not None else t


def poses_to_se3(poses: Tensor) -> pp.LieTensor:
    """``(N, 4, 4)`` world-to-camera matrices -> PyPose ``SE3`` ``(N, 7)`` (rotations re-orthonormalized)."""
    if poses.dim() != 3 or tuple(poses.shape[-2:]) != (4, 4):
        raise InputError(f"poses must be (N, 4, 4) world-to-camera matrices, got {tuple(poses.shape)}")
    R = poses[:, :3, :3]
    if poses.shape[0] and torch.isfinite(R).all():
        U, _, Vh = torch.linalg.svd(R)
        d = torch.sign(torch.linalg.det(U @ Vh))
        R = U @ torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1)) @ Vh
    M = poses.clone()
    M[:, :3, :3] = R
    return pp.mat2SE3(M, check=False)


@dataclass(frozen=True)
class BundleProblem:
    """A bundle-adjustment problem (pinhole cameras, fixed intrinsics).

    Attributes:
        K: ``(N, 3, 3)`` intrinsics per frame.
        poses: PyPose ``SE3`` LieTensor ``(N, 7)``, world-to-camera.
        points: ``(M, 3)`` world points.
        obs_frame: ``(O,)`` int64 frame index of each observation.
        obs_point: ``(O,)`` int64 point index of each observation.
        obs_xy: ``(O, 2)`` observed pixels.
        obs_weight: ``(O,)`` non-negative weights (residuals are scaled by ``sqrt(weight)``).
        fixed_frames: ``(N,)`` bool, poses held constant (gauge).
        fixed_points: ``(M,)`` bool, points held constant.
    """

    K: Tensor
    poses: pp.LieTensor
    points: Tensor
    obs_frame: Tensor
    obs_point: Tensor
    obs_xy: Tensor
    obs_weight: Tensor
    fixed_frames: Tensor
    fixed_points: Tensor
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_arrays(
        cls,
        K: Any,
        poses: Any,
        points: Any,
        obs_frame: Any,
        obs_point: Any,
        obs_xy: Any,
        obs_weight: Any | None = None,
        fixed_frames: Any = (0,),
        fixed_points: Any | None = None,
        dtype: torch.dtype = torch.float64,
        device: Any = None,
    ) -> BundleProblem:
        """Build a problem from numpy arrays or tensors (copied; float64 by default).

        Args:
            K: ``(3, 3)`` shared or ``(N, 3, 3)`` per-frame intrinsics.
            poses: ``(N, 4, 4)`` world-to-camera matrices or an ``SE3`` LieTensor ``(N, 7)``.
            points: ``(M, 3)``.
            obs_frame, obs_point: ``(O,)`` integer indices.
            obs_xy: ``(O, 2)`` pixels.
            obs_weight: ``(O,)`` or None (all 1).
            fixed_frames: frame indices (or an ``(N,)`` bool mask) whose pose is constant.
            fixed_points: point indices, an ``(M,)`` bool mask, or None.
        Raises:
            InputError: shapes disagree or an index is out of range (values are not checked here:
                non-finite numbers make :func:`imatch_s2ld.ba.solve` return a failed result).
        """
        if device is None and isinstance(points, Tensor):
            device = points.device
        if isinstance(poses, pp.LieTensor):
            poses = poses.matrix()
        P = _tensor(poses, "poses", dtype, device)
        if P.dim() != 3 or tuple(P.shape[-2:]) != (4, 4):
            raise InputError(f"poses must be (N, 4, 4), got {tuple(P.shape)}")
        N = P.shape[0]
        Kt = _tensor(K, "K", dtype, device)
        if tuple(Kt.shape) == (3, 3):
            Kt = Kt.expand(N, 3, 3)
        if tuple(Kt.shape) != (N, 3, 3):
            raise InputError(f"K must be (3, 3) or (N, 3, 3) with N = {N} poses, got {tuple(Kt.shape)}")
        X = _tensor(points, "points", dtype, device)
        if X.dim() != 2 or X.shape[-1] != 3:
            raise InputError(f"points must be (M, 3), got {tuple(X.shape)}")
        M = X.shape[0]
        f = _tensor(obs_frame, "obs_frame", None, device)
        p = _tensor(obs_point, "obs_point", None, device)
        xy = _tensor(obs_xy, "obs_xy", dtype, device)
        O = xy.shape[0] if xy.dim() == 2 else -1
        if xy.dim() != 2 or xy.shape[-1] != 2:
            raise InputError(f"obs_xy must be (O, 2), got {tuple(xy.shape)}")
        for name, idx, n in (("obs_frame", f, N), ("obs_point", p, M)):
            if idx.dim() != 1 or idx.shape[0] != O:
                raise InputError(f"{name} must be ({O},) like obs_xy, got {tuple(idx.shape)}")
            if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
                raise InputError(f"{name} must hold integer indices, got {idx.dtype}")
            if O and (int(idx.min()) < 0 or int(idx.max()) >= n):
                raise InputError(f"{name} has indices outside [0, {n}): "
                                 f"min {int(idx.min())}, max {int(idx.max())}")
        w = (torch.ones(O, dtype=dtype, device=device) if obs_weight is None
             else _tensor(obs_weight, "obs_weight", dtype, device))
        if tuple(w.shape) != (O,):
            raise InputError(f"obs_weight must be ({O},), got {tuple(w.shape)}")
        if O and bool((w < 0).any()):
            raise InputError("obs_weight must be non-negative")
        return cls(
            K=Kt.contiguous().clone(),
            poses=poses_to_se3(P),
            points=X.contiguous().clone(),
            obs_frame=f.long().contiguous().clone(),
            obs_point=p.long().contiguous().clone(),
            obs_xy=xy.contiguous().clone(),
            obs_weight=w.contiguous().clone(),
            fixed_frames=_mask(fixed_frames, N, "fixed_frames", device),
            fixed_points=_mask(fixed_points, M, "fixed_points", device),
        )

    # ------------------------------------------------------------------ views
    @property
    def num_frames(self) -> int:
        return int(self.K.shape[0])

    @property
    def num_points(self) -> int:
        return int(self.points.shape[0])

    @property
    def num_observations(self) -> int:
        return int(self.obs_xy.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        return self.points.dtype

    @property
    def device(self) -> torch.device:
        return self.points.device

    def pose_matrices(self) -> Tensor:
        """``(N, 4, 4)`` world-to-camera matrices."""
        return self.poses.matrix()

    def residuals(self, poses: pp.LieTensor | None = None, points: Tensor | None = None) -> Tensor:
        """Unweighted pixel residuals ``project(K, T X) - xy``: ``(O, 2)`` (at the problem's own
        parameters unless ``poses`` / ``points`` are given). Points at or behind a camera give
        non-finite or huge values: check :meth:`depths`."""
        cam = self.transform(poses, points)
        q = (self.K[self.obs_frame] @ cam[..., None])[..., 0]
        return q[:, :2] / q[:, 2:] - self.obs_xy

    def depths(self, poses: pp.LieTensor | None = None, points: Tensor | None = None) -> Tensor:
        """``(O,)`` depth of each observed point in its observing camera."""
        return self.transform(poses, points)[:, 2]

    def transform(self, poses: pp.LieTensor | None = None, points: Tensor | None = None) -> Tensor:
        """``(O, 3)`` observed points in the observing camera's frame."""
        T = self.poses if poses is None else poses
        X = self.points if points is None else points
        return T[self.obs_frame].Act(X[self.obs_point])

    def to(self, device: Any = None, dtype: torch.dtype | None = None) -> BundleProblem:
        """A copy on ``device`` with floating tensors in ``dtype``."""
        def mv(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return replace(
            self, K=mv(self.K), poses=pp.SE3(mv(self.poses.tensor())), points=mv(self.points),
            obs_frame=mv(self.obs_frame), obs_point=mv(self.obs_point), obs_xy=mv(self.obs_xy),
            obs_weight=mv(self.obs_weight), fixed_frames=mv(self.fixed_frames),
            fixed_points=mv(self.fixed_points),
        )

    # ------------------------------------------------------------------ files
    def save(self, path: str | os.PathLike) -> None:
        """Write an ``.npz`` file atomically (the :meth:`load` format)."""
        arrays = {
            "K": self.K, "poses": self.pose_matrices(), "points": self.points,
            "obs_frame": self.obs_frame, "obs_point": self.obs_point, "obs_xy": self.obs_xy,
            "obs_weight": self.obs_weight, "fixed_frames": self.fixed_frames,
            "fixed_points": self.fixed_points,
        }
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, **{k: v.detach().cpu().numpy() for k, v in arrays.items()})

    @classmethod
    def load(cls, path: str | os.PathLike, dtype: torch.dtype = torch.float64,
             device: Any = None) -> BundleProblem:
        """Read a problem written by :meth:`save`.

        Raises:
            InputError: missing file, not an npz archive, or a missing/ill-shaped array (file named).
        """
        need = ("K", "poses", "points", "obs_frame", "obs_point", "obs_xy")
        arrays = read_npz(path, "bundle-adjustment problem (.npz)", need)
        try:
            return cls.from_arrays(
                arrays["K"], arrays["poses"], arrays["points"], arrays["obs_frame"], arrays["obs_point"],
                arrays["obs_xy"], arrays.get("obs_weight"), arrays.get("fixed_frames", (0,)),
                arrays.get("fixed_points"), dtype=dtype, device=device,
            )
        except InputError as err:
            raise InputError(f"{path}: {err}") from None


def _mask(sel: Any, n: int, name: str, device: Any) -> Tensor:
    mask = torch.zeros(n, dtype=torch.bool, device=device)
    if sel is None:
        return mask
    t = _tensor(sel, name, None, device)
    if t.dtype == torch.bool:
        if tuple(t.shape) != (n,):
            raise InputError(f"{name} as a mask must be ({n},), got {tuple(t.shape)}")
        return t.clone()
    t = t.reshape(-1).long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        raise InputError(f"{name} has indices outside [0, {n}): {t.tolist()}")
    mask[t] = True
    return mask


@dataclass(frozen=True)
class BAResult:
    """Outcome of :func:`imatch_s2ld.ba.solve` (never NaN: a failed solve returns the initial values).

    Attributes:
        poses: ``(N, 4, 4)`` optimised world-to-camera matrices.
        poses_se3: the same as a PyPose ``SE3`` LieTensor ``(N, 7)``.
        points: ``(M, 3)`` optimised points.
        residuals: ``(O, 2)`` unweighted pixel residuals at the solution (0 where not finite).
        inliers: ``(O,)`` bool: finite, in front of the camera and within the inlier threshold.
        robust_weights: ``(O,)`` final IRLS weights of the robust kernel (1 without a kernel).
        rms_px: ``sqrt(mean ||r||^2)`` over inlier observations (pixels).
        cost_history: robust cost ``0.5 sum w rho(|r|^2)`` at the start and after each accepted step.
        iterations: LM iterations run (accepted and rejected steps).
        success: True when the solver converged or hit the iteration limit with a finite, not-worse cost.
        reason: termination reason (failure reason when ``success`` is False).
        backend: which solver produced it.
        time_s: wall time of the solve.
    """

    poses: Tensor
    poses_se3: pp.LieTensor
    points: Tensor
    residuals: Tensor
    inliers: Tensor
    robust_weights: Tensor
    rms_px: float
    cost_history: list[float]
    iterations: int
    success: bool
    reason: str
    backend: str = "schur"
    time_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def initial_cost(self) -> float:
        return self.cost_history[0] if self.cost_history else float("nan")

    @property
    def final_cost(self) -> float:
        return self.cost_history[-1] if self.cost_history else float("nan")

    @classmethod
    def from_solution(
        cls,
        problem: BundleProblem,
        poses: pp.LieTensor,
        points: Tensor,
        conf: dict[str, Any],
        cost_history: list[float],
        iterations: int,
        success: bool,
        reason: str,
        backend: str,
        time_s: float,
        extra: dict[str, Any] | None = None,
    ) -> BAResult:
        """Residuals, inlier mask, robust weights and RMS at ``(poses, points)``, computed the same way for
        every backend (``conf``: :func:`imatch_s2ld.ba.config.ba_conf` options)."""
        from .robust import robust_weight

        poses = pp.SE3(poses.tensor().detach().to(problem.dtype))
        points = points.detach().to(problem.dtype)
        if not (torch.isfinite(poses.tensor()).all() and torch.isfinite(points).all()):
            msg = f"{backend}: solver produced non-finite values ({reason})"
            return cls.failed(problem, msg, backend, time_s)
        cam = problem.transform(poses, points)
        z = cam[:, 2]
        ahead = z > 0
        q = (problem.K[problem.obs_frame] @ cam[..., None])[..., 0]
        res = q[:, :2] / torch.where(ahead, z, torch.ones_like(z))[:, None] - problem.obs_xy
        ok = ahead & torch.isfinite(res).all(-1) & (problem.obs_weight > 0)
        res = torch.where(ok[:, None], res, torch.zeros_like(res))
        s = res.square().sum(-1)
        inl = ok & (s <= float(conf["inlier_threshold_px"]) ** 2)
        wts = torch.where(ok, robust_weight(s, conf["robust_kernel"], conf["robust_scale_px"]),
                          torch.zeros_like(s))
        rms = float(torch.sqrt(s[inl].mean())) if bool(inl.any()) else float("nan")
        return cls(
            poses=poses.matrix(), poses_se3=poses, points=points, residuals=res, inliers=inl,
            robust_weights=wts, rms_px=rms, cost_history=[float(c) for c in cost_history],
            iterations=int(iterations), success=bool(success), reason=reason, backend=backend,
            time_s=float(time_s), extra=dict(extra or {}),
        )

    @classmethod
    def failed(cls, problem: BundleProblem, reason: str, backend: str = "schur",
               time_s: float = 0.0) -> BAResult:
        """A failed result carrying the problem's initial values (finite where they were finite)."""
        O = problem.num_observations
        zeros = torch.zeros(O, 2, dtype=problem.dtype, device=problem.device)
        return cls(
            poses=problem.pose_matrices().clone(), poses_se3=problem.poses.clone(),
            points=problem.points.clone(), residuals=zeros,
            inliers=torch.zeros(O, dtype=torch.bool, device=problem.device),
            robust_weights=torch.zeros(O, dtype=problem.dtype, device=problem.device),
            rms_px=float("nan"), cost_history=[], iterations=0, success=False, reason=reason,
            backend=backend, time_s=time_s,
        )
