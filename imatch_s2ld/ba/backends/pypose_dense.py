"""Reference backend: PyPose's stock dense Levenberg-Marquardt (``pp.optim.LevenbergMarquardt``).

Small problems only: the full Jacobian ``(2 O, 7 F + 3 P)`` is built densely by autograd (``F`` free
frames, ``P`` free points; PyPose's SE3 Jacobians carry 7 columns per pose, the 7th is zero), one
vectorised backward pass over all ``2 O`` rows whose intermediates are ``(2 O, O, ...)``: memory and
time grow as ``O^2``. :data:`MAX_DENSE_BYTES` bounds the estimate (:func:`dense_bytes`).

Cost: ``0.5 * sum_o w_o * rho(|r_o|^2)`` (:mod:`imatch_s2ld.ba.robust`). PyPose minimises
``sum_o kernel(|r_o|^2)``; its ``Huber(delta)`` and ``Cauchy(delta)`` kernels equal ``rho`` with
``delta = robust_scale_px`` (both on squared norms, width in pixels), and observation weights multiply
the kernel (:class:`_WeightedKernel`), so PyPose's loss is exactly twice the reported cost.
"""

from __future__ import annotations

import time
from typing import Any

import pypose as pp
import torch
from torch import Tensor, nn

from ...errors import InputError
from ..problem import BAResult, BundleProblem
from .common import Gauge, plan_gauge, robust_cost

__all__ = ["MAX_DENSE_BYTES", "dense_bytes", "solve_pypose_dense"]

# Refuse problems whose dense Jacobian plus autograd working memory (dense_bytes) would exceed this.
MAX_DENSE_BYTES = 4 * 1024**3
# Autograd keeps about this many (2 O, O) float64 planes while building the Jacobian (measured with
# torch 2.13 / pypose 0.9.5: (5, 200) 0.39 GB, (5, 500) 2.0 GB, (8, 800) 8.7 GB peak).
_AUTOGRAD_PLANES = 32


# ---------------------------------------------------------------------------------------------- model
class _WeightedKernel(nn.Module):
    """``w_o * kernel(s_o)`` for squared norms ``s`` of shape ``(O,)`` or ``(O, 1)`` (``kernel`` None:
    identity), so that PyPose's FastTriggs corrector scales residuals by ``sqrt(w rho'(s))``."""

    def __init__(self, kernel: nn.Module | None, weight: Tensor) -> None:
        super().__init__()
        self.kernel = kernel
        self.register_buffer("weight", weight)

    def forward(self, s: Tensor) -> Tensor:
        rho = s if self.kernel is None else self.kernel(s)
        return self.weight.view(s.shape) * rho


class _BundleModel(nn.Module):
    """Reprojection residuals ``(O, 2)`` of the weighted observations, as a function of the free poses
    (``pp.Parameter`` SE3) and free points; the scale frame is a rotation (SO3) plus a translation with
    one constant coordinate."""

    def __init__(self, problem: BundleProblem, gauge: Gauge, free_points: Tensor, used: Tensor) -> None:
        super().__init__()
        N, M = problem.num_frames, problem.num_points
        sf = gauge.scale_frame
        free_frames = gauge.observed & ~gauge.fixed
        if sf is not None:
            free_frames[sf] = False
        self.register_buffer("free_frame_idx", torch.nonzero(free_frames).flatten())
        self.register_buffer("free_point_idx", torch.nonzero(free_points).flatten())
        poses = problem.poses.tensor()
        self.register_buffer("poses0", poses.clone())
        self.register_buffer("points0", problem.points.clone())
        self.poses = pp.Parameter(pp.SE3(poses[self.free_frame_idx].clone()))
        self.points = nn.Parameter(problem.points[self.free_point_idx].clone())
        self.scale_frame, self.scale_dim = sf, gauge.scale_dim
        if sf is not None:
            self.rotation = pp.Parameter(pp.SO3(poses[sf, 3:].clone()))
            keep = [d for d in range(3) if d != gauge.scale_dim]
            self.translation = nn.Parameter(poses[sf, keep].clone())
            self.register_buffer("t_fixed", poses[sf, gauge.scale_dim:gauge.scale_dim + 1].clone())
        # Index of each observation's pose / point in the concatenation [initial values, parameters];
        # observations of the scale frame go last (its residuals come from the SO3 + translation form).
        f = problem.obs_frame[used]
        in_scale = f == sf if sf is not None else torch.zeros_like(f, dtype=torch.bool)
        order = torch.cat([torch.nonzero(~in_scale).flatten(), torch.nonzero(in_scale).flatten()])
        point_index = _gather_index(M, self.free_point_idx)
        self.register_buffer("obs_point_index", point_index[problem.obs_point[used]])
        self.register_buffer("obs_pose", _gather_index(N, self.free_frame_idx)[f])
        self.register_buffer("other_obs", torch.nonzero(~in_scale).flatten())
        self.register_buffer("scale_obs", torch.nonzero(in_scale).flatten())
        self.register_buffer("obs_xy", problem.obs_xy[used][order])
        self.register_buffer("K", problem.K[f][order])
        self.register_buffer("obs_weight", problem.obs_weight[used][order])  # in residual order

    def all_poses(self) -> pp.LieTensor:
        """``(N, 7)`` SE3 at the current parameters (fixed frames at their initial values)."""
        T = self.poses0.clone()
        T[self.free_frame_idx] = self.poses.tensor()
        if self.scale_frame is not None:
            T[self.scale_frame, :3] = self._scale_translation()
            T[self.scale_frame, 3:] = self.rotation.tensor()
        return pp.SE3(T.detach())

    def all_points(self) -> Tensor:
        """``(M, 3)`` at the current parameters."""
        X = self.points0.clone()
        X[self.free_point_idx] = self.points
        return X.detach()

    def _scale_translation(self) -> Tensor:
        parts = list(self.translation.unbind())
        parts.insert(self.scale_dim, self.t_fixed[0])
        return torch.stack(parts)

    def forward(self, _: Tensor) -> Tensor:
        # index_select (not advanced indexing): its backward has a vmap batching rule, which keeps the
        # vectorised Jacobian from falling back to a loop over residual rows.
        X = torch.cat([self.points0, self.points]).index_select(0, self.obs_point_index)  # (O, 3)
        T = pp.SE3(torch.cat([self.poses0, self.poses.tensor()]).index_select(0, self.obs_pose))
        cam = T.Act(X)
        if self.scale_frame is not None:
            cam_s = self.rotation.Act(X.index_select(0, self.scale_obs)) + self._scale_translation()
            cam = torch.cat([cam.index_select(0, self.other_obs), cam_s])
        q = (self.K * cam[:, None, :]).sum(-1)  # K @ cam without a batched matmul
        return q[:, :2] / q[:, 2:] - self.obs_xy


def _gather_index(n: int, free_idx: Tensor) -> Tensor:
    """``(n,)`` position of each item in ``cat([all n initial values, free parameters])``."""
    idx = torch.arange(n, device=free_idx.device)
    idx[free_idx] = n + torch.arange(len(free_idx), device=free_idx.device)
    return idx


# ---------------------------------------------------------------------------------------------- solve
def _free_points(problem: BundleProblem, used: Tensor) -> Tensor:
    """``(M,)`` bool: not fixed and observed by a weighted observation."""
    observed = torch.zeros(problem.num_points, dtype=torch.bool, device=problem.device)
    observed[problem.obs_point[used]] = True
    return observed & ~problem.fixed_points


def dense_bytes(num_obs: int, cols: int) -> int:
    """Estimated peak bytes of one dense Jacobian evaluation: the ``(2 O, cols)`` Jacobian plus the
    ``(2 O, O)``-sized autograd intermediates (float64)."""
    return 2 * num_obs * (cols + _AUTOGRAD_PLANES * num_obs) * 8


def _check_size(num_obs: int, cols: int) -> None:
    need = dense_bytes(num_obs, cols)
    if need > MAX_DENSE_BYTES:
        raise InputError(
            f"backend 'pypose_dense' would need about {need / 1024**3:.1f} GiB for its dense "
            f"{2 * num_obs} x {cols} Jacobian, over MAX_DENSE_BYTES = {MAX_DENSE_BYTES / 1024**3:.0f} GiB "
            f"(imatch_s2ld.ba.backends.pypose_dense); use backend 'schur' or 'ceres'")


def _kernel(conf: dict[str, Any]) -> nn.Module | None:
    scale = float(conf["robust_scale_px"])
    return {"none": None, "huber": pp.optim.kernel.Huber(delta=scale),
            "cauchy": pp.optim.kernel.Cauchy(delta=scale)}[conf["robust_kernel"]]


def _flat(values: list[Tensor]) -> Tensor:
    """Parameter values as one plain vector (SE3/SO3 in their stored quaternion form)."""
    plain = [v.tensor() if isinstance(v, pp.LieTensor) else v for v in values]
    return torch.cat([v.detach().reshape(-1) for v in plain])


def _max_gradient(optimizer: pp.optim.LevenbergMarquardt, dummy: Tensor) -> float:
    """``max |d cost / d params|`` (Lie-algebra gradients for poses), ``cost = 0.5 * PyPose loss``."""
    params = [p for p in optimizer.model.parameters() if p.requires_grad]
    with torch.enable_grad():
        loss = 0.5 * optimizer.model.loss(dummy, None)
        grads = torch.autograd.grad(loss, params)
    return max(float(g.abs().max()) for g in grads)


def _iterate(optimizer: pp.optim.LevenbergMarquardt, model: _BundleModel, history: list[float],
             conf: dict[str, Any]) -> tuple[int, str]:
    """Run LM steps (appending accepted costs to ``history``) until a Ceres-style tolerance is met:
    relative cost decrease <= function_tolerance, ``max |gradient|`` <= gradient_tolerance, or
    ``|step| <= (|x| + parameter_tolerance) * parameter_tolerance``. Returns (iterations, reason)."""
    dummy = torch.zeros(1, dtype=model.points0.dtype, device=model.points0.device)
    ftol, gtol, ptol = (float(conf[k])
                        for k in ("function_tolerance", "gradient_tolerance", "parameter_tolerance"))
    iterations = 0
    for _ in range(int(conf["max_iterations"])):
        if _max_gradient(optimizer, dummy) <= gtol:
            return iterations, f"converged: max |gradient| <= gradient_tolerance {gtol:g}"
        before = [p.detach().clone() for p in model.parameters()]
        cost = 0.5 * float(optimizer.step(dummy))
        iterations += 1 + optimizer.reject_count
        if not cost <= history[-1]:  # PyPose keeps its last rejected step: undo it
            with torch.no_grad():
                for p, v in zip(model.parameters(), before):
                    p.copy_(v)
            return iterations, "converged: no decreasing step found"
        history.append(cost)
        if history[-2] - cost <= ftol * history[-2]:
            return iterations, f"converged: relative cost decrease <= function_tolerance {ftol:g}"
        x0, x1 = _flat(before), _flat(list(model.parameters()))
        if float((x1 - x0).norm()) <= (float(x0.norm()) + ptol) * ptol:
            return iterations, f"converged: relative step <= parameter_tolerance {ptol:g}"
    return iterations, f"max_iterations ({int(conf['max_iterations'])}) reached"


def solve_pypose_dense(problem: BundleProblem, conf: dict[str, Any]) -> BAResult:
    """Bundle-adjust with ``pp.optim.LevenbergMarquardt`` (dense Cholesky, trust-region damping).

    Free poses are ``pp.Parameter`` SE3, free points a plain parameter; fixed frames/points and
    observations with weight 0 stay out. Gauge: :func:`plan_gauge`. Stops as :func:`_iterate` says,
    or when PyPose finds no decreasing step (after its 16 rejections; that step is undone).

    Args:
        problem: the problem (its dtype is used; float64 recommended).
        conf: :func:`imatch_s2ld.ba.config.ba_conf` options.
    Raises:
        InputError: :func:`dense_bytes` over :data:`MAX_DENSE_BYTES`, or a bad scale_frame.
    """
    start = time.perf_counter()
    used = problem.obs_weight > 0
    gauge = plan_gauge(problem, conf)
    free_points = _free_points(problem, used)
    rows = 2 * int(used.sum())
    cols = 7 * int((gauge.observed & ~gauge.fixed).sum()) + 3 * int(free_points.sum())
    _check_size(rows // 2, cols)
    with torch.device(problem.device):
        model = _BundleModel(problem, gauge, free_points, used)
        kernel = _WeightedKernel(_kernel(conf), model.obs_weight)
        optimizer = pp.optim.LevenbergMarquardt(model, kernel=kernel, vectorize=True)
    history = [robust_cost(problem, model.all_poses(), model.all_points(), conf)]
    iterations, reason = _iterate(optimizer, model, history, conf)
    extra: dict[str, Any] = {"gauge": gauge.description, "jacobian_shape": (rows, cols)}
    if gauge.scale_frame is not None:
        extra["scale_frame"], extra["scale_dim"] = gauge.scale_frame, gauge.scale_dim
    return BAResult.from_solution(problem, model.all_poses(), model.all_points(), conf, history, iterations,
                                  True, reason, "pypose_dense", time.perf_counter() - start, extra)
