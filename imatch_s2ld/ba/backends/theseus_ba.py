"""Optional reference backend: Theseus (``theseus-ai``) Levenberg-Marquardt with a sparse Cholesky solver.

Install: ``pip install 'imatch-s2ld[theseus]'`` (needs ``libsuitesparse-dev`` and ``scikit-sparse`` for
``th.CholmodSparseSolver``; see docs/bundle_adjustment.md). Cholmod only takes a constant damping, so on
that path Theseus accepts every step and the best iterate is returned; without scikit-sparse (or off CPU)
the dense Cholesky solver runs true LM with step rejection (``extra["linear_solver"]`` says which).

- Variables: ``th.SE3`` per free observed frame, ``th.Point3`` per free observed point (optimisation
  variables); fixed frames and points are auxiliary variables. One analytic-Jacobian cost function
  (:class:`_Reprojection`) per observation with weight > 0, vectorised by Theseus.
- Gauge: :func:`imatch_s2ld.ba.backends.common.plan_gauge` (COLMAP's): the scale frame is a
  ``th.SO3`` plus a ``th.Vector(2)`` translation with its third coordinate auxiliary.
- Robust kernel: ``th.RobustCostFunction`` with ``th.HuberLoss`` (``huber``) or :class:`_CauchyLoss`
  (``cauchy``; Theseus ships none). Theseus' losses act on squared norms with a squared radius
  ``exp(log_loss_radius)``: ``radius = robust_scale_px^2`` gives :mod:`imatch_s2ld.ba.robust`'s ``rho``.
  A weight ``w`` enters as ``th.ScaleCostWeight(sqrt(w))`` (applied before the loss) with radius
  ``w * scale^2``, which gives exactly ``w * rho(|r|^2)`` for both kernels (they are homogeneous:
  ``rho_{c sqrt(w)}(w s) = w rho_c(s)``).
- Stopping: ``max_iterations`` and ``function_tolerance`` (Theseus' relative error change; it also
  stops after a rejected step, whose change is 0), and a cost (or cost change) below
  :data:`_ABS_COST_TOLERANCE`. Gradient and parameter tolerances have no Theseus counterpart.
- Theseus can differentiate through the solve (``backward_mode="implicit"``): ``extra["implicit_diff"]``
  is True, but :func:`solve_theseus` returns detached values; :mod:`imatch_s2ld.finetune.implicit`
  (``--ba-grad implicit``) builds this objective with autograd observations and differentiates it.
"""

from __future__ import annotations

import importlib.util
import math
import time
from typing import Any

import torch
from torch import Tensor

from ...errors import InputError
from ..problem import BAResult, BundleProblem, poses_to_se3
from ..robust import robust_rho
from .common import Gauge, plan_gauge, robust_cost

try:
    import theseus as th
except ImportError:
    th = None

__all__ = ["solve_theseus"]

# Theseus' absolute cost tolerance (px^2): stops a noise-free problem once its cost is negligible.
_ABS_COST_TOLERANCE = 1e-20


def _require_theseus() -> None:
    if th is None:
        raise InputError(
            "backend 'theseus' needs theseus-ai: pip install 'imatch-s2ld[theseus]' "
            "(see docs/bundle_adjustment.md)")


def _project(cam: Tensor, K: Tensor, xy: Tensor) -> tuple[Tensor, Tensor]:
    """Pinhole projection error and its Jacobian.

    Args:
        cam: ``(B, 3)`` camera-frame points; K: ``(B, 9)`` row-major intrinsics; xy: ``(B, 2)`` observed.
    Returns:
        error ``(B, 2)`` and ``d error / d cam`` ``(B, 2, 3)``.
    """
    Km = K.view(-1, 3, 3)
    q = (Km @ cam[..., None])[..., 0]
    z = q[:, 2:]
    err = q[:, :2] / z - xy
    J = (Km[:, :2, :] * z[..., None] - q[:, :2, None] * Km[:, 2:, :]) / (z * z)[..., None]
    return err, J


if th is not None:

    class _CauchyLoss(th.RobustLoss):
        """Cauchy on squared norms ``x``, squared radius ``r``: ``r log(1 + x / r)``; derivative
        ``1 / (1 + x / r)``."""

        @staticmethod
        def _evaluate_impl(x: Tensor, radius: Tensor) -> Tensor:
            return radius * torch.log1p(x / radius)

        @staticmethod
        def _linearize_impl(x: Tensor, radius: Tensor) -> Tensor:
            return 1.0 / (1.0 + x / radius)

    class _Reprojection(th.CostFunction):
        """Reprojection error ``(B, 2)`` of one observation.

        The pose is either ``th.SE3`` ``pose`` (optimised or auxiliary), or, for the scale frame, a
        ``th.SO3`` ``rotation`` plus ``th.Vector(2)`` ``t_free`` (optimised) and ``th.Vector(1)``
        ``t_fixed`` (auxiliary) at index ``scale_dim`` of the translation.
        """

        def __init__(self, pose: tuple, point: Any, xy: Any, K: Any, weight: Any, optim: dict[str, bool],
                     scale_dim: int | None = None, name: str | None = None) -> None:
            super().__init__(weight, name=name)
            self.scale_dim, self.flags = scale_dim, dict(optim)
            names = ("pose",) if scale_dim is None else ("rotation", "t_free", "t_fixed")
            for n, v in zip(names, pose):
                setattr(self, n, v)
            self.point, self.xy, self.K = point, xy, K
            self.register_optim_vars([n for n in (*names, "point") if optim.get(n, False)])
            # xy first: Theseus groups cost functions for vectorization by the concatenated types of their
            # optim + aux variables, so "SE3 | Point3, Point2, K" (fixed point) would join "SE3, Point3 |
            # Point2, K" (free point) and get its Jacobians; a leading Point2 marks where aux starts
            self.register_aux_vars(["xy", "K"] + [n for n in (*names, "point") if not optim.get(n, False)])

        def _pose_vars(self) -> tuple:
            return (self.pose,) if self.scale_dim is None else (self.rotation, self.t_free, self.t_fixed)

        def _camera(self, with_jacobians: bool) -> tuple[Tensor, list[Tensor]]:
            """Camera-frame point ``(B, 3)`` and, if asked, its Jacobians ``(B, 3, d)`` w.r.t. the
            optimised variables in registration order."""
            js: list[Tensor] | None = [] if with_jacobians else None
            if self.scale_dim is None:
                cam = self.pose.transform_from(self.point, js).tensor
            else:
                t = list(self.t_free.tensor.unbind(1))
                t.insert(self.scale_dim, self.t_fixed.tensor[:, 0])
                cam = self.rotation.rotate(self.point, js).tensor + torch.stack(t, 1)
            if js is None:
                return cam, []
            if self.scale_dim is None:
                by_name = {"pose": js[0], "point": js[1]}
            else:
                free = [d for d in range(3) if d != self.scale_dim]
                sel = torch.eye(3, dtype=cam.dtype, device=cam.device)[:, free].expand(cam.shape[0], 3, 2)
                by_name = {"rotation": js[0], "t_free": sel, "point": js[1]}
            return cam, [by_name[n] for n in self._optim_names()]

        def _optim_names(self) -> list[str]:
            names = ("pose",) if self.scale_dim is None else ("rotation", "t_free")
            return [n for n in (*names, "point") if self.flags.get(n, False)]

        def error(self) -> Tensor:
            cam, _ = self._camera(False)
            return _project(cam, self.K.tensor, self.xy.tensor)[0]

        def jacobians(self) -> tuple[list[Tensor], Tensor]:
            cam, jac = self._camera(True)
            err, J = _project(cam, self.K.tensor, self.xy.tensor)
            return [J @ j for j in jac], err

        def dim(self) -> int:
            return 2

        def _copy_impl(self, new_name: str | None = None) -> _Reprojection:
            pose = tuple(v.copy() for v in self._pose_vars())
            return _Reprojection(pose, self.point.copy(), self.xy.copy(), self.K.copy(), self.weight.copy(),
                                 self.flags, self.scale_dim, name=new_name)


def _pose_variables(problem: BundleProblem, gauge: Gauge) -> dict[int, tuple[tuple, dict[str, bool]]]:
    """Per observed frame: its Theseus variables (``(th.SE3,)`` or, for the scale frame,
    ``(th.SO3, th.Vector(2), th.Vector(1))``) and which of them are optimised."""
    T = problem.pose_matrices().detach()
    out = {}
    for i in torch.nonzero(gauge.observed).flatten().tolist():
        if i == gauge.scale_frame:
            d = int(gauge.scale_dim)
            keep = [k for k in range(3) if k != d]
            out[i] = ((th.SO3(tensor=T[i:i + 1, :3, :3].clone(), name=f"rotation_{i}"),
                       th.Vector(tensor=T[i:i + 1, keep, 3].clone(), name=f"t_free_{i}"),
                       th.Vector(tensor=T[i:i + 1, d:d + 1, 3].clone(), name=f"t_fixed_{i}")),
                      {"rotation": True, "t_free": True})
        else:
            out[i] = ((th.SE3(tensor=T[i:i + 1, :3, :].clone(), name=f"pose_{i}"),),
                      {"pose": not bool(gauge.fixed[i])})
    return out


def _objective(problem: BundleProblem, conf: dict[str, Any], gauge: Gauge) -> tuple[Any, dict, dict]:
    """The Theseus objective (one cost function per weighted observation), the pose variables (see
    :func:`_pose_variables`) and the ``th.Point3`` of each observed point."""
    used = torch.nonzero(problem.obs_weight > 0).flatten().tolist()
    poses = _pose_variables(problem, gauge)
    observed = torch.unique(problem.obs_point[used]).tolist()
    points = {m: th.Point3(tensor=problem.points[m:m + 1].detach().clone(), name=f"point_{m}")
              for m in observed}
    Ks = {i: th.Variable(problem.K[i:i + 1].reshape(1, 9).detach().clone(), name=f"K_{i}") for i in poses}
    loss_cls = {"huber": th.HuberLoss, "cauchy": _CauchyLoss}.get(conf["robust_kernel"])
    scale2 = float(conf["robust_scale_px"]) ** 2
    objective = th.Objective(dtype=problem.dtype)
    for o in used:
        i, m, w = int(problem.obs_frame[o]), int(problem.obs_point[o]), float(problem.obs_weight[o])
        variables, flags = poses[i]
        flags = {**flags, "point": not bool(problem.fixed_points[m])}
        if not any(flags.values()):
            continue  # constant residual (fixed frame and point): see _constant_cost
        xy = th.Point2(tensor=problem.obs_xy[o:o + 1].detach().clone(), name=f"xy_{o}")
        weight = th.ScaleCostWeight(torch.tensor(math.sqrt(w), dtype=problem.dtype), name=f"w_{o}")
        cost = _Reprojection(variables, points[m], xy, Ks[i], weight, flags,
                             gauge.scale_dim if i == gauge.scale_frame else None, name=f"reproj_{o}")
        if loss_cls is not None:
            radius = th.Variable(torch.tensor([[math.log(w * scale2)]], dtype=problem.dtype), name=f"r_{o}")
            cost = th.RobustCostFunction(cost, loss_cls, radius, name=f"robust_{o}")
        objective.add(cost)
    return objective, poses, points


def _linear_solver(device: torch.device) -> tuple[type, bool, str]:
    """The linear solver class, whether it allows adaptive (Marquardt) damping, and a description.

    ``th.CholmodSparseSolver`` (CPU, scikit-sparse installed) only takes a constant scalar damping, so
    Theseus then accepts every step (Gauss-Newton with damping ``initial_lambda``; the best iterate is
    returned); ``th.CholeskyDenseSolver`` runs true LM (step rejection, damping scaled by diag(J^T J)).
    """
    if device.type == "cpu" and importlib.util.find_spec("sksparse") is not None:
        return th.CholmodSparseSolver, False, "CholmodSparseSolver (constant damping, best iterate kept)"
    return th.CholeskyDenseSolver, True, "CholeskyDenseSolver (adaptive damping; no scikit-sparse or not CPU)"


def _read_back(problem: BundleProblem, gauge: Gauge, poses: dict, points: dict) -> tuple[Tensor, Tensor]:
    """``(N, 4, 4)`` poses and ``(M, 3)`` points from the Theseus variables (the others unchanged)."""
    T = problem.pose_matrices().detach().clone()
    for i, (variables, _) in poses.items():
        if i != gauge.scale_frame:
            T[i, :3, :] = variables[0].tensor[0]
            continue
        rot, free, fixed = (v.tensor[0] for v in variables)
        t = list(free.unbind())
        t.insert(int(gauge.scale_dim), fixed[0])
        T[i, :3, :3], T[i, :3, 3] = rot, torch.stack(t)
    X = problem.points.detach().clone()
    for m, v in points.items():
        X[m] = v.tensor[0]
    return T, X


def _constant_cost(problem: BundleProblem, conf: dict[str, Any], gauge: Gauge) -> float:
    """Cost of the weighted observations left out of the objective (fixed frame and fixed point)."""
    skip = (problem.obs_weight > 0) & gauge.fixed[problem.obs_frame] & problem.fixed_points[problem.obs_point]
    s = problem.residuals()[skip].square().sum(-1)
    rho = robust_rho(s, conf["robust_kernel"], float(conf["robust_scale_px"]))
    return float(0.5 * (problem.obs_weight[skip] * rho).sum())


def _accepted(err_history: Tensor, offset: float) -> list[float]:
    """Costs after accepted steps (rejected steps repeat the previous error), shifted by ``offset``."""
    errs = [float(e) for e in err_history.flatten() if math.isfinite(float(e))]
    out = errs[:1]
    for e in errs[1:]:
        if e < out[-1]:
            out.append(e)
    return [e + offset for e in out]


def solve_theseus(problem: BundleProblem, conf: dict[str, Any]) -> BAResult:
    """Bundle-adjust with Theseus' Levenberg-Marquardt; see the module docstring and :func:`_linear_solver`.

    Args:
        problem: the problem (not modified).
        conf: :func:`imatch_s2ld.ba.config.ba_conf` options.
    Returns:
        The result; ``cost_history`` from Theseus' error history (float32 precision, plus the constant
        cost of residuals without a free variable; first and last entries recomputed in the problem's
        dtype);
        ``extra``: linear solver, gauge, ``implicit_diff``.
    Raises:
        InputError: theseus-ai is not installed, or a bad scale_frame.
    """
    _require_theseus()
    start = time.perf_counter()
    gauge = plan_gauge(problem, conf)
    objective, poses, points = _objective(problem, conf, gauge)
    solver_cls, adaptive, solver_name = _linear_solver(problem.device)
    optimizer = th.LevenbergMarquardt(
        objective, linear_solver_cls=solver_cls, vectorize=True, abs_err_tolerance=_ABS_COST_TOLERANCE,
        rel_err_tolerance=float(conf["function_tolerance"]),
        max_iterations=max(int(conf["max_iterations"]), 1))
    layer = th.TheseusLayer(optimizer).to(problem.device)
    initial = robust_cost(problem, problem.poses, problem.points, conf)
    history, status, iterations = [initial], "MAX_ITERATIONS", 0
    with torch.no_grad():
        offset = _constant_cost(problem, conf, gauge)
        if int(conf["max_iterations"]) > 0:
            _, info = layer.forward(optimizer_kwargs={
                "track_err_history": True, "track_best_solution": True, "verbose": False,
                "damping": float(conf["initial_lambda"]), "adaptive_damping": adaptive,
                "ellipsoidal_damping": adaptive})
            objective.update({k: v.to(problem.device) for k, v in info.best_solution.items()})
            history, status = _accepted(info.err_history, offset), str(info.status[0].name)
            iterations = int(torch.isfinite(info.err_history[0]).sum()) - 1
    T, X = _read_back(problem, gauge, poses, points)
    if iterations > 0:  # Theseus keeps its error history in float32: the ends in the problem's dtype
        history[0], history[-1] = initial, robust_cost(problem, poses_to_se3(T), X, conf)
    extra = {"linear_solver": solver_name, "gauge": gauge.description, "implicit_diff": True,
             "theseus_status": status}
    if gauge.scale_frame is not None:
        extra["scale_frame"], extra["scale_dim"] = gauge.scale_frame, gauge.scale_dim
    success = status in ("CONVERGED", "MAX_ITERATIONS") and math.isfinite(history[-1])
    return BAResult.from_solution(problem, poses_to_se3(T), X, conf, history, iterations, success,
                                  f"theseus {status}", "theseus", time.perf_counter() - start, extra)
