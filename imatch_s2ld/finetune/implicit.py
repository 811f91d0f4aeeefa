"""``--ba-grad implicit``: backpropagate the reprojection loss through the bundle-adjustment solution.

By default (``ba_grad: fixed``, iMatching) :class:`imatch_s2ld.finetune.loss.FinetuneLoss` treats the
window's BA solution ``(T*, p*)`` as constants. With ``ba_grad: implicit`` the window's tracked S2LD
predictions (observations ``obs_xy``, which carry autograd) are bundle-adjusted again with Theseus
(poses + landmarks, from ``(T*, p*)``), and the solution is differentiated w.r.t. ``obs_xy`` by the
implicit function theorem (``backward_mode="implicit"``). The gradient of

    L(obs_xy) = loss(obs_xy, x*(obs_xy))

then holds the direct term ``dL/d obs_xy`` at the re-solved solution **and** the term through it,
``(d x*/d obs_xy)^T dL/dx``.

**When it matters.** If the loss *is* the BA objective (same kernel, scale and weights), ``dL/dx = 0``
at an exact optimum (envelope theorem), so the term through the solution vanishes and the fixed-optimum
gradient is already right; hence ``fixed`` is the default. The two differ when the loss weighs the
observations differently from the BA, or when the BA is not converged.

**How.** Phase 1 (no gradient): Levenberg-Marquardt from the initial solution (``max_iterations``, best
iterate kept). Phase 2: one Gauss-Newton step with autograd on, Hessian detached (Theseus' implicit
mode): ``x = x* + delta(obs_xy)`` with ``d delta = -H^-1 d(J^T r)``, the implicit-function-theorem
derivative with the Gauss-Newton (for a robust kernel: IRLS) Hessian ``H``. It is exact for a
least-squares BA with zero residuals; residuals and the robust kernel's curvature make it approximate.
The objective, the analytic-Jacobian cost function and the gauge (COLMAP's: first fixed frame plus one
translation coordinate of the scale frame) are those of :mod:`imatch_s2ld.ba.backends.theseus_ba`; the
observation pixels are its auxiliary variables ``xy_<o>``, fed with the autograd tensors.

Theseus is imported on first use (``import theseus`` takes seconds); without it every entry point raises
a one-line :class:`imatch_s2ld.errors.InputError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..conf import merge_conf
from ..errors import InputError

if TYPE_CHECKING:
    from .loss import WindowTargets

__all__ = [
    "BA_GRAD_MODES", "DEFAULT_CONF", "ImplicitSolution", "WindowObservations", "check_ba_grad",
    "implicit_reprojection_loss", "landmarks_from_targets", "reprojection_cost", "reprojection_residuals",
    "require_theseus", "solve_ba_implicit",
]

#: ``ba_grad`` values of the fine-tuning loss: ``fixed`` (iMatching, default), ``implicit`` (this module).
BA_GRAD_MODES = ("fixed", "implicit")

#: Options of the differentiable BA (``model.loss.implicit_ba``).
DEFAULT_CONF: dict[str, Any] = {
    "max_iterations": 5,  # LM iterations without gradient before the differentiated Gauss-Newton step
    "robust_kernel": "cauchy",  # none | huber | cauchy (the BA's kernel)
    "robust_scale_px": None,  # kernel width, px (None: the loss' own scale, reprojection_scale_px)
    "initial_lambda": 1e-4,
    "function_tolerance": 1e-10,  # relative cost change that stops phase 1
}


def require_theseus() -> None:
    """Raise a one-line :class:`InputError` when theseus-ai cannot be imported."""
    from ..ba.backends import theseus_ba

    if theseus_ba.th is None:
        raise InputError("--ba-grad implicit needs theseus-ai: pip install 'imatch-s2ld[theseus]' "
                         "(with libsuitesparse-dev and scikit-sparse; see README, 'Bundle adjustment')")


def check_ba_grad(conf: Mapping[str, Any]) -> None:
    """Validate the ``ba_grad`` keys of a :data:`imatch_s2ld.finetune.loss.DEFAULT_CONF`-like dict.

    Raises:
        InputError (one line): an unknown ``ba_grad``; ``implicit`` with ``reprojection_weight`` 0 (the
            term it differentiates would be unused: no silent no-op); ``implicit`` without theseus-ai;
            bad ``implicit_ba`` options.
    """
    mode = conf["ba_grad"]
    if mode not in BA_GRAD_MODES:
        raise InputError(f"--ba-grad: expected one of {', '.join(BA_GRAD_MODES)}, got {mode!r}")
    if mode == "fixed":
        return
    if not float(conf["reprojection_weight"]) > 0:
        raise InputError("--ba-grad implicit differentiates the reprojection term, whose weight "
                         f"model.loss.reprojection_weight is {conf['reprojection_weight']}: set it > 0")
    _ba_conf(merge_conf(DEFAULT_CONF, conf.get("implicit_ba")), float(conf["reprojection_scale_px"]))
    require_theseus()


def _ba_conf(conf: Mapping[str, Any], scale_px: float) -> dict[str, Any]:
    """:func:`imatch_s2ld.ba.config.ba_conf` options for the theseus objective (validated)."""
    from ..ba.config import ba_conf

    if int(conf["max_iterations"]) < 0:
        raise InputError(f"implicit_ba.max_iterations must be >= 0, got {conf['max_iterations']}")
    scale = scale_px if conf["robust_scale_px"] is None else float(conf["robust_scale_px"])
    return ba_conf({"backend": "theseus", "robust_kernel": conf["robust_kernel"], "robust_scale_px": scale,
                    "max_iterations": int(conf["max_iterations"]),
                    "initial_lambda": float(conf["initial_lambda"]),
                    "function_tolerance": float(conf["function_tolerance"])})


# ------------------------------------------------------------------------------- geometry
def _check_observations(obs_xy: Tensor, obs_frame: Tensor, obs_point: Tensor, K: Tensor, T_cw: Tensor,
                        X: Tensor, obs_weight: Tensor | None = None) -> Tensor:
    """Shape/index checks; returns ``(N, 3, 3)`` intrinsics."""
    if obs_xy.dim() != 2 or obs_xy.shape[-1] != 2:
        raise InputError(f"obs_xy must be (M, 2), got {tuple(obs_xy.shape)}")
    M = obs_xy.shape[0]
    if T_cw.dim() != 3 or tuple(T_cw.shape[-2:]) != (4, 4):
        raise InputError(f"T_cw must be (N, 4, 4) world-to-camera poses, got {tuple(T_cw.shape)}")
    if X.dim() != 2 or X.shape[-1] != 3:
        raise InputError(f"X must be (P, 3) landmarks, got {tuple(X.shape)}")
    N, P = T_cw.shape[0], X.shape[0]
    if tuple(K.shape) == (3, 3):
        K = K.expand(N, 3, 3)
    if tuple(K.shape) != (N, 3, 3):
        raise InputError(f"K must be (3, 3) or ({N}, 3, 3), got {tuple(K.shape)}")
    for name, idx, n in (("obs_frame", obs_frame, N), ("obs_point", obs_point, P)):
        if tuple(idx.shape) != (M,) or idx.is_floating_point() or idx.dtype == torch.bool:
            raise InputError(f"{name} must be ({M},) integer indices, got {tuple(idx.shape)} {idx.dtype}")
        if M and (int(idx.min()) < 0 or int(idx.max()) >= n):
            raise InputError(f"{name} has indices outside [0, {n})")
    if obs_weight is not None and tuple(obs_weight.shape) != (M,):
        raise InputError(f"obs_weight must be ({M},), got {tuple(obs_weight.shape)}")
    return K


def reprojection_residuals(obs_xy: Tensor, obs_frame: Tensor, obs_point: Tensor, K: Tensor, T_cw: Tensor,
                           X: Tensor) -> Tensor:
    """Pixel residuals ``obs_xy - pi(K_f, T_f X_p)``: ``(M, 2)``, differentiable in every input.

    Args:
        obs_xy: ``(M, 2)`` observed pixels; obs_frame, obs_point: ``(M,)`` indices; K: ``(3, 3)`` or
            ``(N, 3, 3)``; T_cw: ``(N, 4, 4)`` world-to-camera; X: ``(P, 3)`` world points.
    """
    K = _check_observations(obs_xy, obs_frame, obs_point, K, T_cw, X)
    dtype = torch.promote_types(T_cw.dtype, X.dtype)
    T, Xp = T_cw.to(dtype)[obs_frame], X.to(dtype)[obs_point]
    cam = (T[:, :3, :3] @ Xp[..., None])[..., 0] + T[:, :3, 3]
    q = (K.to(dtype)[obs_frame] @ cam[..., None])[..., 0]
    return obs_xy - (q[:, :2] / q[:, 2:]).to(obs_xy.dtype)


def reprojection_cost(residual_px: Tensor, scale_px: float, long_side: float = 1.0) -> Tensor:
    """Per-observation Cauchy cost ``(M,)`` in squared kernel widths, exactly as the fixed reprojection
    term of :class:`imatch_s2ld.finetune.loss.FinetuneLoss` computes it: ``c^2 log(1 + |r / L|^2 / c^2)
    / c^2`` with ``c = scale_px / L`` (``L``: the image's longer side; it cancels up to rounding).

    Args:
        residual_px: ``(M, 2)`` pixel residuals.
    """
    c = float(scale_px) / float(long_side)
    s = (residual_px / float(long_side)).square().sum(-1)
    return c * c * torch.log1p(s / (c * c)) / (c * c)


def landmarks_from_targets(targets: WindowTargets, K: Tensor) -> Tensor:
    """The landmarks ``(P, 3)`` of a window's targets (``P = max track id + 1``; ids without a target are 0):
    each target pixel back-projected at its depth with its frame's BA pose, averaged over the landmark's
    targets (they agree up to float32 rounding: the target is the landmark's projection).

    Args:
        targets: :class:`imatch_s2ld.finetune.loss.WindowTargets` (``xy``, ``depth``, ``track``:
            ``(N, Kmax)``).
        K: ``(3, 3)`` or ``(N, 3, 3)`` intrinsics.
    """
    has = (targets.track >= 0) & (targets.depth > 0)
    f, k = torch.nonzero(has, as_tuple=True)
    ids = targets.track[f, k]
    P = int(targets.track.max()) + 1 if targets.track.numel() else 0
    N = targets.T_cw.shape[0]
    Kd = K.detach().double().cpu().expand(N, 3, 3)[f]
    xy = targets.xy[f, k].double().cpu()
    ray = torch.linalg.solve(Kd, torch.cat([xy, torch.ones_like(xy[:, :1])], -1)[..., None])[..., 0]
    cam = ray * targets.depth[f, k].double().cpu()[:, None]
    T = targets.T_cw.double().cpu()[f]
    world = ((cam - T[:, :3, 3])[:, None, :] @ T[:, :3, :3])[:, 0]  # R^T (cam - t)
    X = torch.zeros(max(P, 0), 3, dtype=torch.float64).index_add_(0, ids.cpu(), world)
    count = torch.zeros(max(P, 0), dtype=torch.float64).index_add_(0, ids.cpu(), torch.ones_like(world[:, 0]))
    return X / count.clamp_min(1.0)[:, None]


# ------------------------------------------------------------------------------- the solve
@dataclass(frozen=True)
class ImplicitSolution:
    """A BA solution differentiable w.r.t. the observations (float64).

    Attributes:
        T_cw: ``(N, 4, 4)`` world-to-camera poses (frames without observations: the initial pose).
        X: ``(P, 3)`` landmarks (landmarks without observations: the initial value).
        iterations: LM iterations of phase 1; status: Theseus' status of phase 1.
        cost_init, cost: robust BA cost ``0.5 sum w rho(|r|^2)`` (px^2) before and after phase 1.
        time_s: wall time of the solve (forward only).
    """

    T_cw: Tensor
    X: Tensor
    iterations: int
    status: str
    cost_init: float
    cost: float
    time_s: float
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


def solve_ba_implicit(obs_xy: Tensor, obs_frame: Tensor, obs_point: Tensor, K: Tensor, T_cw: Tensor,
                      X: Tensor, obs_weight: Tensor | None = None, conf: Mapping[str, Any] | None = None,
                      scale_px: float = 2.0, fixed_frames: Any = (0,)) -> ImplicitSolution:
    """Re-solve a BA from ``(T_cw, X)`` and return a solution that backpropagates into ``obs_xy``.

    Args:
        obs_xy: ``(M, 2)`` observed pixels (any float dtype; may require grad).
        obs_frame, obs_point: ``(M,)`` frame / landmark index of each observation.
        K: ``(3, 3)`` or ``(N, 3, 3)`` intrinsics (constant).
        T_cw: ``(N, 4, 4)`` initial world-to-camera poses (e.g. ``WindowTargets.T_cw``; detached).
        X: ``(P, 3)`` initial landmarks (detached).
        obs_weight: ``(M,)`` non-negative BA weights (None: 1; weight 0 leaves an observation out).
        conf: :data:`DEFAULT_CONF` overrides; scale_px: the kernel width when ``robust_scale_px`` is None.
        fixed_frames: the gauge frame(s) (:func:`imatch_s2ld.ba.backends.common.plan_gauge` adds the scale).
    Returns:
        :class:`ImplicitSolution` (float64, on ``obs_xy``'s device).
    Raises:
        InputError: theseus-ai missing, bad shapes or indices, non-finite observations, bad options.
    """
    from ..ba.backends import theseus_ba as tb
    from ..ba.backends.common import plan_gauge, robust_cost
    from ..ba.problem import BundleProblem, poses_to_se3

    require_theseus()
    start = time.perf_counter()
    opts = merge_conf(DEFAULT_CONF, conf)
    bconf = _ba_conf(opts, scale_px)
    _check_observations(obs_xy, obs_frame, obs_point, K, T_cw, X, obs_weight)
    if not bool(torch.isfinite(obs_xy.detach()).all()):
        raise InputError("solve_ba_implicit: obs_xy holds non-finite pixels")
    xy = obs_xy.to(torch.float64)
    problem = BundleProblem.from_arrays(K, T_cw, X, obs_frame, obs_point, xy.detach(),
                                        None if obs_weight is None else obs_weight.detach(),
                                        fixed_frames=fixed_frames, device=obs_xy.device)
    gauge = plan_gauge(problem, bconf)
    objective, poses, points = tb._objective(problem, bconf, gauge)
    solver_cls, adaptive, solver_name = tb._linear_solver(problem.device)
    optimizer = tb.th.LevenbergMarquardt(
        objective, linear_solver_cls=solver_cls, vectorize=True, abs_err_tolerance=tb._ABS_COST_TOLERANCE,
        rel_err_tolerance=float(bconf["function_tolerance"]),
        max_iterations=max(int(bconf["max_iterations"]), 1))
    layer = tb.th.TheseusLayer(optimizer).to(problem.device)
    kwargs = {"damping": float(bconf["initial_lambda"]), "adaptive_damping": adaptive,
              "ellipsoidal_damping": adaptive, "verbose": False}
    cost_init = robust_cost(problem, problem.poses, problem.points, bconf)
    iterations, status = 0, "NOT_RUN"
    if int(bconf["max_iterations"]) > 0:  # phase 1: LM without gradient, best iterate kept
        with torch.no_grad():
            _, info = layer.forward(optimizer_kwargs={**kwargs, "track_best_solution": True,
                                                      "track_err_history": True})
        objective.update({k: v.to(problem.device) for k, v in info.best_solution.items()})
        status = str(info.status[0].name)
        iterations = int(torch.isfinite(info.err_history[0]).sum()) - 1
    T1, X1 = tb._read_back(problem, gauge, poses, points)
    cost = robust_cost(problem, poses_to_se3(T1), X1, bconf)
    # phase 2: one Gauss-Newton step with autograd on (Hessian detached): the implicit derivative
    inputs = {name: xy[o:o + 1] for o in range(xy.shape[0])
              if objective.has_aux_var(name := f"xy_{o}")}
    optimizer.params.max_iterations = 1
    layer.forward(input_tensors=inputs, optimizer_kwargs={**kwargs, "backward_mode": "implicit"})
    T, Xs = tb._read_back(problem, gauge, poses, points)
    extra = {"linear_solver": solver_name, "gauge": gauge.description,
             "num_observations": len(inputs), "num_points": len(points)}
    return ImplicitSolution(T, Xs, iterations, status, cost_init, cost, time.perf_counter() - start, extra)


def implicit_reprojection_loss(obs_xy: Tensor, obs_frame: Tensor, obs_point: Tensor, K: Tensor, T_cw: Tensor,
                               X: Tensor, weight: Tensor | None = None, scale_px: float = 2.0,
                               long_side: float = 1.0, conf: Mapping[str, Any] | None = None,
                               ba_weight: Tensor | None = None) -> tuple[Tensor, ImplicitSolution]:
    """Weighted mean Cauchy reprojection cost of ``obs_xy`` against the re-solved BA
    (:func:`solve_ba_implicit`): ``sum_o w_o rho_o / sum_o w_o`` (:func:`reprojection_cost`). Its
    gradient w.r.t. ``obs_xy`` holds the direct term and the term through the solution.

    Args:
        obs_xy, obs_frame, obs_point, K, T_cw, X: as :func:`solve_ba_implicit`.
        weight: ``(M,)`` loss weights (None: 1); ba_weight: ``(M,)`` BA weights (None: ``weight``).
        scale_px: Cauchy width (loss; also the BA's unless ``conf["robust_scale_px"]``); long_side: see
            :func:`reprojection_cost`.
    Returns:
        0-d loss (``obs_xy``'s dtype) and the solution.
    """
    w = torch.ones_like(obs_xy[:, 0]) if weight is None else weight.to(obs_xy.dtype)
    sol = solve_ba_implicit(obs_xy, obs_frame, obs_point, K, T_cw, X, w if ba_weight is None else ba_weight,
                            conf, scale_px)
    r = reprojection_residuals(obs_xy, obs_frame, obs_point, K.to(sol.T_cw.device), sol.T_cw, sol.X)
    cost = reprojection_cost(r, scale_px, long_side)
    return (w * cost).sum() / w.sum().clamp_min(1e-12), sol


# ------------------------------------------------------------------------------- the window
class WindowObservations:
    """The tracked S2LD predictions of a window, gathered pair by pair by ``FinetuneLoss`` (implicit mode).

    Each landmark match ``(i, j)`` of pair ``(a, b)`` gives two observations of its landmark: the keypoint
    prediction in frame ``a`` and the local-dense prediction in frame ``b`` (both carry autograd), with the
    match's weight ``sqrt(w_a w_b)``.
    """

    def __init__(self) -> None:
        self._xy: list[Tensor] = []
        self._frame: list[Tensor] = []
        self._point: list[Tensor] = []
        self._weight: list[Tensor] = []

    def __len__(self) -> int:
        return sum(len(x) for x in self._xy)

    def add_pair(self, a: int, b: int, landmark: Tensor, xy_a: Tensor, xy_b: Tensor, weight: Tensor) -> None:
        """Args: landmark: ``(L,)`` ids; xy_a, xy_b: ``(L, 2)`` pixels in frames a, b; weight: ``(L,)``."""
        L = landmark.shape[0]
        if tuple(xy_a.shape) != (L, 2) or tuple(xy_b.shape) != (L, 2) or tuple(weight.shape) != (L,):
            raise InputError(f"add_pair: expected ({L}, 2) pixels and ({L},) weights, got "
                             f"{tuple(xy_a.shape)}, {tuple(xy_b.shape)}, {tuple(weight.shape)}")
        self._xy += [xy_a, xy_b]
        self._frame += [torch.full_like(landmark, a), torch.full_like(landmark, b)]
        self._point += [landmark, landmark]
        self._weight += [weight, weight]

    def reprojection(self, targets: WindowTargets, K: Tensor, scale_px: float, long_side: float,
                     conf: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor, ImplicitSolution]:
        """Re-solve the window's BA on these observations (from the targets' poses and landmarks) and
        return the weighted Cauchy sum ``sum_o w_o c^2 log(1 + |r_o / L|^2 / c^2)`` (0-d, the quantity the
        fixed term accumulates: divide by the matches' weight sum and ``c^2``), the residual norms
        ``(2 L,)`` in pixels (detached) and the solution.

        Args:
            targets: the window's :class:`imatch_s2ld.finetune.loss.WindowTargets`.
            K: ``(3, 3)`` or ``(N, 3, 3)`` intrinsics.
        """
        if not self._xy:
            raise InputError("WindowObservations.reprojection: no observations")
        xy = torch.cat(self._xy)
        frame, point, w = torch.cat(self._frame).cpu(), torch.cat(self._point).cpu(), torch.cat(self._weight)
        X = landmarks_from_targets(targets, K)
        Kc = K.detach().double().cpu()
        sol = solve_ba_implicit(xy.cpu(), frame, point, Kc, targets.T_cw.double().cpu(), X, w.detach().cpu(),
                                conf, scale_px)
        r = reprojection_residuals(xy.double().cpu(), frame, point, Kc, sol.T_cw, sol.X)
        r = r.to(xy.device, xy.dtype)
        c = float(scale_px) / float(long_side)
        total = (w * reprojection_cost(r, scale_px, long_side)).sum() * (c * c)
        return total, r.detach().norm(dim=-1), sol
