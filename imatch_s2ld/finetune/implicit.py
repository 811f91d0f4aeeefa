"""``--ba-grad implicit``: backpropagate the reprojection loss through the bundle-adjustment solution.

By default (``ba_grad: fixed``, iMatching) :class:`imatch_s2ld.finetune.loss.FinetuneLoss` treats the
window's BA solution ``(T*, p*)`` as constants. With ``ba_grad: implicit`` the window's tracked S2LD
predictions (observations ``obs_xy``, which carry autograd) are bundle-adjusted again (poses +
landmarks, from ``(T*, p*)``), and the solution is differentiated w.r.t. ``obs_xy`` by the implicit
function theorem (Theseus, ``backward_mode="implicit"``). The gradient of

    L(obs_xy) = loss(obs_xy, x*(obs_xy))

then holds the direct term ``dL/d obs_xy`` at the re-solved solution **and** the term through it,
``(d x*/d obs_xy)^T dL/dx``.

**When it matters.** If the loss *is* the BA objective (same kernel, scale and weights), ``dL/dx = 0``
at an exact optimum (envelope theorem), so the term through the solution vanishes and the fixed-optimum
gradient is already right; hence ``fixed`` is the default. The two differ when the loss weighs the
observations differently from the BA, or when the BA is not converged.

**How.** Phase 1 (no gradient): :func:`imatch_s2ld.ba.solve` from the initial solution, by default with
this package's Schur LM (``solver: schur``; ``theseus``: Theseus' LM, about 10x slower to converge on a
window). The S2LD tracks of short-baseline windows include landmarks with nearly parallel rays, whose
depth is unobservable: the BA moves them far away and their Hessian block vanishes; landmarks whose rays
span less than ``min_angle_deg`` at the phase-1 solution are therefore held fixed (no gradient through
them). Phase 2: one Gauss-Newton step with autograd on and the Hessian detached (Theseus' implicit mode):
``x = x* + delta(obs_xy)``, ``d delta = -H^-1 d(J^T r)``: the implicit-function-theorem derivative with
the Gauss-Newton (for a robust kernel: IRLS) Hessian ``H``. It is exact for a least-squares BA at zero
residual; residuals and the robust kernel's curvature make it approximate (a few percent with Cauchy
against finite differences, tests/test_finetune_implicit.py). The objective, its analytic-Jacobian cost
function and the gauge (COLMAP's: first fixed frame plus one translation coordinate of the scale frame)
are those of :mod:`imatch_s2ld.ba.backends.theseus_ba`; the observation pixels are its auxiliary
variables ``xy_<o>``, fed with the autograd tensors.

Theseus is imported on first use (``import theseus`` takes seconds); without it every entry point raises
a one-line :class:`imatch_s2ld.errors.InputError`.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..conf import merge_conf
from ..errors import InputError
from ..geometry.camera import project, transform_points

if TYPE_CHECKING:
    from .targets import WindowTargets

__all__ = [
    "BA_GRAD_MODES", "DEFAULT_CONF", "ImplicitBAError", "ImplicitSolution", "WindowObservations",
    "check_ba_grad", "implicit_reprojection_loss", "landmarks_from_targets", "reprojection_cost",
    "reprojection_residuals", "require_theseus", "solve_ba_implicit",
]


class ImplicitBAError(RuntimeError):
    """The re-solve of a window's BA failed (the fine-tuning step skips the window)."""


#: ``ba_grad`` values of the fine-tuning loss: ``fixed`` (iMatching, default), ``implicit`` (this module).
BA_GRAD_MODES = ("fixed", "implicit")
#: Phase-1 solvers of the re-solve (``implicit_ba.solver``).
PHASE1_SOLVERS = ("schur", "theseus")

#: Options of the differentiable BA (``model.loss.implicit_ba``).
DEFAULT_CONF: dict[str, Any] = {
    # phase-1 solver (no gradient; imatch_s2ld.ba.solve backend): "schur" (this package's LM: converged
    # in ~1.5 s on a 4-frame window where Theseus' LM was still moving after 100 iterations, 35 s) or
    # "theseus"
    "solver": "schur",
    "max_iterations": 100,  # phase-1 LM iterations (0: differentiate at the initial solution)
    "robust_kernel": "cauchy",  # none | huber | cauchy (the BA's kernel)
    "robust_scale_px": None,  # kernel width, px (None: the loss' own scale, reprojection_scale_px)
    "function_tolerance": 1e-10,  # relative cost change that stops phase 1
    # landmarks whose viewing rays (at the phase-1 solution) span less than this are held fixed: their
    # depth is unobservable (they drift far away) and the Gauss-Newton system would be singular
    "min_angle_deg": 0.1,
    # False: the re-solved solution is detached (only the direct term at it; a diagnostic for measuring
    # the term through the solution, benchmarks/bench_ba_grad.py)
    "through_solution": True,
}


def require_theseus() -> None:
    """Raise a one-line :class:`InputError` when theseus-ai cannot be imported."""
    from ..ba.backends import theseus_ba

    if theseus_ba.th is None:
        raise InputError("--ba-grad implicit needs theseus-ai: pip install 'imatch-s2ld[theseus]' "
                         "(with libsuitesparse-dev and scikit-sparse; see docs/bundle_adjustment.md)")


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
    if conf["solver"] not in PHASE1_SOLVERS:
        raise InputError(f"implicit_ba.solver: expected one of {', '.join(PHASE1_SOLVERS)}, "
                         f"got {conf['solver']!r}")
    scale = scale_px if conf["robust_scale_px"] is None else float(conf["robust_scale_px"])
    return ba_conf({"backend": conf["solver"], "robust_kernel": conf["robust_kernel"],
                    "robust_scale_px": scale,
                    "max_iterations": int(conf["max_iterations"]),
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
    cam = transform_points(T, Xp[:, None])  # (M, 1, 3)
    return obs_xy - project(cam, K.to(dtype)[obs_frame])[:, 0].to(obs_xy.dtype)


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
        targets: :class:`imatch_s2ld.finetune.targets.WindowTargets` (``xy``, ``depth``, ``track``:
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
def _degenerate_points(problem: Any, min_angle_deg: float) -> Tensor:
    """``(P,)`` bool: observed points of a :class:`imatch_s2ld.ba.BundleProblem` whose largest angle between
    viewing rays (weighted observations) is below ``min_angle_deg``, or that are not finite."""
    from ..geometry import camera_centers, triangulation_angle

    used = problem.obs_weight > 0
    vis = torch.zeros(problem.num_frames, problem.num_points, dtype=problem.dtype, device=problem.device)
    vis[problem.obs_frame[used], problem.obs_point[used]] = 1.0
    angle = triangulation_angle(problem.points, camera_centers(problem.pose_matrices()), vis)
    observed = vis.sum(0) > 0
    return observed & ~(angle >= min_angle_deg)  # NaN angles count as degenerate


@dataclass(frozen=True)
class ImplicitSolution:
    """A BA solution differentiable w.r.t. the observations (float64).

    Attributes:
        T_cw: ``(N, 4, 4)`` world-to-camera poses (frames without observations: the initial pose).
        X: ``(P, 3)`` landmarks (landmarks without observations: the initial value).
        iterations: LM iterations of phase 1; status: its solver and termination reason.
        cost_init, cost: robust BA cost ``0.5 sum w rho(|r|^2)`` (px^2) at the initial and the returned
            solution.
        time_s: wall time of the solve (forward only).
        extra: linear solver, gauge, ``num_observations`` (in the differentiated objective),
            ``num_points``, ``held_points`` (held fixed by ``min_angle_deg``).
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
        RuntimeError: the phase-1 solve failed (degenerate problem; its reason is in the message).
    """
    from ..ba.backends import theseus_ba as tb
    from ..ba.backends.common import plan_gauge, robust_cost
    from ..ba.problem import BundleProblem, poses_to_se3
    from ..ba.solve import solve

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
    cost_init = robust_cost(problem, problem.poses, problem.points, bconf)
    start_at, iterations, status = problem, 0, "phase 1 not run (max_iterations 0)"
    if int(bconf["max_iterations"]) > 0:  # phase 1, no gradient
        res = solve(problem, bconf)
        if not res.success:
            raise ImplicitBAError(f"implicit BA: phase-1 {bconf['backend']} solve failed ({res.reason})")
        start_at = replace(problem, poses=res.poses_se3, points=res.points.to(problem.dtype))
        iterations, status = res.iterations, res.reason
        if not status.startswith(bconf["backend"]):
            status = f"{bconf['backend']}: {status}"
    held = _degenerate_points(start_at, float(opts["min_angle_deg"]))
    start_at = replace(start_at, fixed_points=start_at.fixed_points | held)
    # phase 2: one Gauss-Newton step with autograd on (Hessian detached): the implicit derivative
    gauge = plan_gauge(start_at, bconf)
    objective, poses, points = tb._objective(start_at, bconf, gauge)
    solver_cls, _, solver_name = tb._linear_solver(problem.device)
    optimizer = tb.th.LevenbergMarquardt(objective, linear_solver_cls=solver_cls, vectorize=True,
                                         max_iterations=1)
    layer = tb.th.TheseusLayer(optimizer).to(problem.device)
    inputs = {name: xy[o:o + 1] for o in range(xy.shape[0])
              if objective.has_aux_var(name := f"xy_{o}")}
    with torch.set_grad_enabled(torch.is_grad_enabled() and bool(opts["through_solution"])):
        layer.forward(input_tensors=inputs, optimizer_kwargs={"backward_mode": "implicit", "verbose": False})
    T, Xs = tb._read_back(start_at, gauge, poses, points)
    cost = robust_cost(problem, poses_to_se3(T.detach()), Xs.detach(), bconf)
    extra = {"linear_solver": solver_name, "gauge": gauge.description, "num_observations": len(inputs),
             "num_points": len(points), "held_points": int(held.sum())}
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
        return the weighted cost sum ``sum_o w_o rho_o`` (:func:`reprojection_cost`; 0-d, the quantity
        the fixed term accumulates: divide by the matches' weight sum), the residual norms
        ``(2 L,)`` in pixels (detached) and the solution.

        Args:
            targets: the window's :class:`imatch_s2ld.finetune.targets.WindowTargets`.
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
        total = (w * reprojection_cost(r, scale_px, long_side)).sum()
        return total, r.detach().norm(dim=-1), sol
