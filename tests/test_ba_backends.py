"""Tests of the reference bundle-adjustment backends: ceres (pycolmap), pypose_dense and theseus (optional).

Small problems (the dense PyPose backend costs about 1 s per iteration at 200 points): the whole file
runs in well under 60 s on 2 cores. Theseus tests skip when theseus-ai is not installed.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys

import pytest
import torch

from imatch_s2ld.ba import BundleProblem, ba_conf, make_synthetic_problem, pose_errors, poses_to_se3, solve
from imatch_s2ld.ba.backends import pypose_dense
from imatch_s2ld.ba.backends.common import robust_cost
from imatch_s2ld.errors import InputError

try:
    import theseus  # noqa: F401

    HAS_THESEUS = True
except ImportError:
    HAS_THESEUS = False
needs_theseus = pytest.mark.skipif(not HAS_THESEUS, reason="theseus-ai not installed")
BACKENDS = ["ceres", "pypose_dense", pytest.param("theseus", marks=needs_theseus)]


def _with(problem: BundleProblem, **changes) -> BundleProblem:
    return dataclasses.replace(problem, **changes)


@pytest.fixture(scope="module")
def exact():
    return make_synthetic_problem(5, 200, noise_px=0.0, seed=0)


@pytest.fixture(scope="module")
def noisy_results():
    """One run per backend on a noisy problem with frames 0 and 2 fixed at the ground truth (no scale
    gauge needed)."""
    syn = make_synthetic_problem(5, 200, noise_px=0.5, seed=1)
    fixed = torch.zeros(5, dtype=torch.bool)
    fixed[[0, 2]] = True
    T = syn.problem.pose_matrices().clone()
    T[2] = syn.gt_poses[2]
    problem = _with(syn.problem, poses=poses_to_se3(T), fixed_frames=fixed)
    names = ["ceres", "pypose_dense"] + (["theseus"] if HAS_THESEUS else [])
    return problem, {b: solve(problem, {"backend": b}) for b in names}


@pytest.mark.parametrize("backend", BACKENDS)
def test_exact_recovery(exact, backend):
    """Noise-free observations: residuals vanish and the ground truth comes back up to the gauge, whose
    anchor frame and scale coordinate stay put."""
    res = solve(exact.problem, {"backend": backend})
    assert res.success, res.reason
    assert res.backend == backend
    assert res.rms_px < 1e-6
    assert bool(res.inliers.all())
    rot_deg, trans = pose_errors(res.poses, exact.gt_poses)
    assert rot_deg < 1e-6 and trans < 1e-6
    T0 = exact.problem.pose_matrices()
    torch.testing.assert_close(res.poses[0], T0[0], rtol=0, atol=1e-12)
    assert (res.extra["scale_frame"], res.extra["scale_dim"]) == (1, 0)
    assert abs(float(res.poses[1, 0, 3] - T0[1, 0, 3])) < 1e-12
    assert res.cost_history[0] > 1e3 and res.final_cost < 1e-9


def test_noisy_agreement(noisy_results):
    """Same optimum on a noisy problem: final RMS within 1 %, final costs within 1e-4 (relative)."""
    _, results = noisy_results
    ref = results["ceres"]
    assert 0.3 < ref.rms_px < 0.8
    for name, res in results.items():
        assert res.success, (name, res.reason)
        assert abs(res.rms_px - ref.rms_px) <= 0.01 * ref.rms_px, name
        assert abs(res.final_cost - ref.final_cost) <= 1e-4 * ref.final_cost, name
        assert res.final_cost < 0.01 * res.initial_cost


def test_fixed_frames_do_not_move(noisy_results):
    problem, results = noisy_results
    T0 = problem.pose_matrices()
    for name, res in results.items():
        torch.testing.assert_close(res.poses[[0, 2]], T0[[0, 2]], rtol=0, atol=1e-12, msg=name)
        assert float((res.poses[1] - T0[1]).abs().max()) > 1e-4, name
        assert "two fixed frames" in res.extra["gauge"] and "scale_frame" not in res.extra


def test_fixed_points_and_gauge_options():
    """Fixed points stay; no fixed frame: the first one is held; scale_frame picks the scale gauge's frame."""
    syn = make_synthetic_problem(4, 80, noise_px=0.5, seed=7)
    fixed_points = torch.zeros(syn.problem.num_points, dtype=torch.bool)
    fixed_points[:10] = True
    problem = _with(syn.problem, fixed_frames=torch.zeros(4, dtype=torch.bool), fixed_points=fixed_points)
    T0 = problem.pose_matrices()
    res = solve(problem, {"backend": "ceres", "scale_frame": 2})
    assert res.success, res.reason
    torch.testing.assert_close(res.points[:10], problem.points[:10], rtol=0, atol=0)
    assert float((res.points[10:] - problem.points[10:]).abs().max()) > 1e-4
    torch.testing.assert_close(res.poses[0], T0[0], rtol=0, atol=1e-12)
    assert "frame 0 held constant" in res.extra["gauge"] and res.extra["scale_frame"] == 2
    assert abs(float(res.poses[2, res.extra["scale_dim"], 3] - T0[2, res.extra["scale_dim"], 3])) < 1e-12
    with pytest.raises(InputError, match="scale_frame 0"):
        solve(syn.problem, {"backend": "ceres", "scale_frame": 0})  # frame 0 is fixed


@pytest.fixture(scope="module")
def outlier_problem():
    """10 % gross outliers; ``good``: true inliers on points with >= 3 inlier observations (a point
    seen twice with one outlier is ambiguous for any kernel); ``reference``: RMS over them after BA
    of the same observations without outliers."""
    kw = {"noise_px": 0.5, "seed": 2}
    syn = make_synthetic_problem(6, 300, outlier_fraction=0.1, **kw)
    clean = make_synthetic_problem(6, 300, outlier_fraction=0.0, **kw)
    p, inl = syn.problem, ~syn.outliers
    assert torch.equal(p.obs_xy[inl], clean.problem.obs_xy[inl])
    count = torch.zeros(p.num_points).index_add_(0, p.obs_point[inl], torch.ones(int(inl.sum())))
    good = inl & (count[p.obs_point] >= 3)
    ref = solve(clean.problem, {"backend": "ceres"})
    return syn, good, _rms(ref.residuals, good)


def _rms(residuals: torch.Tensor, mask: torch.Tensor) -> float:
    return float(residuals[mask].square().sum(-1).mean().sqrt())


def test_robust_kernels_ceres(outlier_problem):
    syn, good, reference = outlier_problem
    assert 0.4 < reference < 0.8
    rms = {k: _rms(solve(syn.problem, {"backend": "ceres", "robust_kernel": k}).residuals, good)
           for k in ("none", "huber", "cauchy")}
    assert rms["none"] > 5 * reference
    assert rms["cauchy"] < 1.1 * reference
    # Huber bounds but keeps the outliers' pull: far better than none, not at the noise level.
    assert rms["huber"] < 0.3 * rms["none"]


@needs_theseus
def test_robust_kernel_theseus(outlier_problem):
    syn, good, reference = outlier_problem
    res = solve(syn.problem, {"backend": "theseus", "robust_kernel": "cauchy"})
    assert _rms(res.residuals, good) < 1.1 * reference


@pytest.mark.parametrize("kernel", ["huber", "cauchy"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_reported_cost_is_robust_cost(backend, kernel):
    """The final reported cost is robust.py's cost at the solution (kernel scale and, for pypose_dense
    and theseus, weights mapped exactly); Ceres' own cost agrees too."""
    syn = make_synthetic_problem(4, 60, noise_px=0.5, outlier_fraction=0.1, seed=5)
    problem = syn.problem
    if backend != "ceres":
        g = torch.Generator().manual_seed(0)
        problem = _with(problem, obs_weight=0.5 + 1.5 * torch.rand(problem.num_observations, generator=g,
                                                                    dtype=problem.dtype))
    conf = ba_conf({"backend": backend, "robust_kernel": kernel, "robust_scale_px": 2.0, "max_iterations": 6})
    res = solve(problem, conf)
    assert res.success, res.reason
    cost = robust_cost(problem, res.poses_se3, res.points, conf)
    assert abs(res.final_cost - cost) <= 1e-6 * cost
    assert res.final_cost < res.initial_cost
    assert all(b <= a for a, b in zip(res.cost_history, res.cost_history[1:]))
    if backend == "ceres":
        assert abs(res.extra["ceres_final_cost"] - cost) <= 1e-9 * cost
        assert abs(res.extra["ceres_initial_cost"] - res.initial_cost) <= 1e-9 * res.initial_cost


@needs_theseus
def test_weighted_optimum_pypose_theseus():
    """With weights and a kernel, PyPose's and Theseus' optima coincide."""
    syn = make_synthetic_problem(4, 60, noise_px=0.5, outlier_fraction=0.1, seed=5)
    g = torch.Generator().manual_seed(1)
    w = 0.5 + 1.5 * torch.rand(syn.problem.num_observations, generator=g, dtype=syn.problem.dtype)
    problem = _with(syn.problem, obs_weight=w)
    conf = {"robust_kernel": "cauchy", "robust_scale_px": 2.0, "function_tolerance": 1e-12}
    a = solve(problem, {"backend": "pypose_dense", **conf})
    b = solve(problem, {"backend": "theseus", **conf})
    assert abs(a.final_cost - b.final_cost) <= 1e-6 * a.final_cost
    torch.testing.assert_close(a.points, b.points, rtol=0, atol=1e-4)


@needs_theseus
def test_theseus_fixed_points_match_ceres():
    """Fixed points with free poses (regression: Theseus grouped "pose | point aux" cost functions with
    "pose, point" ones for vectorization and gave them the point Jacobian too, an IndexError)."""
    syn = make_synthetic_problem(3, 20, noise_px=0.5, seed=0)
    fixed = torch.zeros(20, dtype=torch.bool)
    fixed[[2, 5]] = True
    problem = _with(syn.problem, fixed_points=fixed)
    a, b = solve(problem, {"backend": "ceres"}), solve(problem, {"backend": "theseus"})
    assert a.success and b.success, (a.reason, b.reason)
    assert abs(a.final_cost - b.final_cost) <= 1e-6 * a.final_cost
    torch.testing.assert_close(b.points[fixed], problem.points[fixed], rtol=0, atol=0)


def test_ceres_input_errors():
    syn = make_synthetic_problem(3, 40, noise_px=0.5, seed=3)
    w = torch.ones(syn.problem.num_observations, dtype=syn.problem.dtype)
    w[0] = 0.5
    with pytest.raises(InputError, match="per-observation weights"):
        solve(_with(syn.problem, obs_weight=w), {"backend": "ceres"})
    K = syn.problem.K.clone()
    K[1, 0, 1] = 0.3
    with pytest.raises(InputError, match="no skew"):
        solve(_with(syn.problem, K=K), {"backend": "ceres"})


def test_ceres_drops_zero_weights():
    """Weight-0 observations leave the problem (their tracks may shrink to one view: kept fixed)."""
    syn = make_synthetic_problem(4, 80, noise_px=0.5, seed=7)
    w = torch.ones(syn.problem.num_observations, dtype=syn.problem.dtype)
    w[::7] = 0
    res = solve(_with(syn.problem, obs_weight=w), {"backend": "ceres"})
    assert res.success, res.reason
    assert not bool(res.inliers[w == 0].any())
    assert res.extra["single_view_points"] >= 0 and res.rms_px < 1.0


def test_pypose_dense_size_guard(monkeypatch):
    syn = make_synthetic_problem(3, 40, noise_px=0.5, seed=3)
    monkeypatch.setattr(pypose_dense, "MAX_DENSE_BYTES", 1000)
    with pytest.raises(InputError, match="MAX_DENSE_BYTES"):
        solve(syn.problem, {"backend": "pypose_dense"})
    # (10, 2000) is far over the real limit: refused before any work.
    assert pypose_dense.dense_bytes(12000, 6000) > 4 * 1024**3


def test_theseus_missing_gives_input_error(monkeypatch):
    import imatch_s2ld.ba.backends.theseus_ba as theseus_ba

    syn = make_synthetic_problem(3, 40, noise_px=0.5, seed=3)
    monkeypatch.setitem(sys.modules, "theseus", None)  # `import theseus` now raises ImportError
    try:
        importlib.reload(theseus_ba)
        with pytest.raises(InputError, match=r"pip install 'imatch-s2ld\[theseus\]'"):
            solve(syn.problem, {"backend": "theseus"})
    finally:
        monkeypatch.undo()
        importlib.reload(theseus_ba)


@needs_theseus
def test_theseus_dense_solver_path(monkeypatch):
    """Without scikit-sparse Theseus runs true LM with its dense Cholesky solver."""
    import theseus as th

    import imatch_s2ld.ba.backends.theseus_ba as theseus_ba

    monkeypatch.setattr(theseus_ba, "_linear_solver", lambda device: (th.CholeskyDenseSolver, True, "dense"))
    syn = make_synthetic_problem(3, 40, noise_px=0.0, seed=3)
    res = solve(syn.problem, {"backend": "theseus"})
    assert res.success and res.rms_px < 1e-6 and res.extra["linear_solver"] == "dense"
