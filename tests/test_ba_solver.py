"""The default BA backend (sparse Schur LM): Jacobians, recovery, gauge, robust kernels, degenerate input."""

from __future__ import annotations

import numpy as np
import pypose as pp
import pytest
import torch
from torch.autograd.functional import jacobian

from imatch_s2ld.ba import (
    BundleProblem,
    make_synthetic_problem,
    pose_errors,
    robust_rho,
    robust_weight,
    solve,
)
from imatch_s2ld.ba.jacobians import reprojection_jacobians
from imatch_s2ld.errors import InputError
from imatch_s2ld.geometry import camera_centers


def _inlier_rms(result, outliers):
    r = result.residuals[~outliers]
    return float(r.square().sum(-1).mean().sqrt())


# ---------------------------------------------------------------- Jacobians
@pytest.mark.parametrize("skew", [0.0, 0.7])
def test_jacobians_match_autograd_through_pypose(skew):
    torch.manual_seed(0)
    O = 6
    T = pp.randn_SE3(O, sigma=0.3, dtype=torch.float64)
    K = torch.tensor([[520.0, skew, 320.0], [0, 480.0, 241.0], [0, 0, 1]], dtype=torch.float64)
    K = K.expand(O, 3, 3)
    X = torch.randn(O, 3, dtype=torch.float64) + torch.tensor([0.0, 0.0, 6.0])
    xy = torch.randn(O, 2, dtype=torch.float64) * 50 + 300
    M = T.matrix()
    r, J_pose, J_point, z = reprojection_jacobians(K, M[:, :3, :3], M[:, :3, 3], X, xy)
    assert r.shape == (O, 2) and J_pose.shape == (O, 2, 6) and J_point.shape == (O, 2, 3)
    assert z.shape == (O,)

    def residual(delta, points):
        p = (pp.se3(delta).Exp() * T).Act(points)
        q = (K @ p[..., None])[..., 0]
        return q[:, :2] / q[:, 2:] - xy

    zero = torch.zeros(O, 6, dtype=torch.float64)
    Jd = jacobian(lambda d: residual(d, X), zero)
    JX = jacobian(lambda x: residual(zero, x), X)
    idx = torch.arange(O)
    torch.testing.assert_close(J_pose, Jd[idx, :, idx], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(J_point, JX[idx, :, idx], rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(r, residual(zero, X))
    # and against central finite differences on the first observation's pose
    eps = 1e-6
    for k in range(6):
        d = zero.clone()
        d[0, k] = eps
        fd = (residual(d, X)[0] - residual(-d, X)[0]) / (2 * eps)
        torch.testing.assert_close(J_pose[0, :, k], fd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["none", "huber", "cauchy"])
def test_robust_weight_is_derivative_of_rho(kernel):
    s = torch.linspace(0.01, 30.0, 50, dtype=torch.float64, requires_grad=True)
    rho = robust_rho(s, kernel, 2.0)
    (g,) = torch.autograd.grad(rho.sum(), s)
    torch.testing.assert_close(robust_weight(s.detach(), kernel, 2.0), g)
    assert torch.allclose(robust_rho(s.detach()[:3] * 0.1, kernel, 2.0), s.detach()[:3] * 0.1, rtol=0.05)


# ---------------------------------------------------------------- recovery
def test_exact_recovery_noise_free():
    syn = make_synthetic_problem(6, 300, noise_px=0.0, seed=1)
    res = solve(syn.problem, {"function_tolerance": 1e-14, "parameter_tolerance": 1e-14})
    assert res.success, res.reason
    assert res.rms_px < 1e-6
    rot, trans = pose_errors(res.poses, syn.gt_poses)
    assert rot < 1e-6 and trans < 1e-6
    assert res.cost_history[-1] < 1e-10 * res.cost_history[0]
    assert res.cost_history == sorted(res.cost_history, reverse=True)
    assert res.inliers.all() and res.backend == "schur" and res.iterations >= 1


def test_noisy_problem_reaches_noise_level_and_improves_poses():
    syn = make_synthetic_problem(8, 800, noise_px=0.5, seed=2)
    before = pose_errors(syn.problem.pose_matrices(), syn.gt_poses)
    res = solve(syn.problem)
    after = pose_errors(res.poses, syn.gt_poses)
    assert res.success and res.reason.startswith("converged")
    assert 0.4 < res.rms_px < 0.75  # 2-D noise of 0.5 px per axis: sqrt(2) * 0.5 minus the fit
    assert after[0] < 0.1 * before[0] and after[1] < 0.3 * before[1]


@pytest.mark.parametrize("kernel", ["none", "cauchy"])
def test_agrees_with_ceres_on_noisy_problem(kernel):
    # Same optimum as pycolmap's Ceres BA (their scale gauges differ: compare after alignment).
    syn = make_synthetic_problem(6, 400, noise_px=0.5, outlier_fraction=0.05 if kernel != "none" else 0.0,
                                 seed=20)
    conf = {"robust_kernel": kernel, "robust_scale_px": 1.0}
    ours = solve(syn.problem, conf)
    ceres = solve(syn.problem, {**conf, "backend": "ceres"})
    assert ours.success and ceres.success
    assert abs(ours.rms_px / ceres.rms_px - 1) < 1e-3
    assert abs(ours.final_cost / ceres.final_cost - 1) < 1e-4
    rot, trans = pose_errors(ours.poses, ceres.poses)
    assert rot < 1e-3 and trans < 1e-3


def test_input_problem_not_modified():
    syn = make_synthetic_problem(4, 150, seed=3)
    p = syn.problem
    poses, points = p.poses.tensor().clone(), p.points.clone()
    solve(p)
    assert torch.equal(p.poses.tensor(), poses) and torch.equal(p.points, points)


def test_chunked_schur_matches_single_chunk():
    syn = make_synthetic_problem(6, 400, seed=4)
    a = solve(syn.problem, {"chunk_elements": 1 << 24})
    b = solve(syn.problem, {"chunk_elements": 500})  # about one point per chunk
    torch.testing.assert_close(a.poses, b.poses, rtol=0, atol=1e-9)
    assert a.iterations == b.iterations


def test_float32_option():
    syn = make_synthetic_problem(5, 300, seed=5)
    res = solve(syn.problem, {"dtype": "float32"})
    ref = solve(syn.problem)
    assert res.success and abs(res.rms_px - ref.rms_px) < 1e-3 * ref.rms_px + 1e-4


def test_solves_on_each_device_like_on_the_cpu(device):
    syn = make_synthetic_problem(6, 500, seed=6)
    cpu = solve(syn.problem)
    res = solve(syn.problem.to(device=device))
    assert res.success and res.poses.device.type == device.type and res.points.device.type == device.type
    torch.testing.assert_close(res.poses.cpu(), cpu.poses, rtol=0, atol=1e-8)
    assert abs(res.rms_px - cpu.rms_px) < 1e-9


# ---------------------------------------------------------------- gauge
def test_gauge_fixed_pose_and_distance():
    syn = make_synthetic_problem(6, 400, seed=7)
    p = syn.problem
    res = solve(p)
    assert torch.equal(res.poses[0], p.pose_matrices()[0])
    C0, C = camera_centers(p.pose_matrices()), camera_centers(res.poses)
    torch.testing.assert_close((C[1] - C[0]).norm(), (C0[1] - C0[0]).norm(), rtol=1e-12, atol=0)


def test_gauge_prior_keeps_scale_approximately():
    syn = make_synthetic_problem(6, 400, seed=7)
    res = solve(syn.problem, {"scale_gauge": "prior"})
    C0, C = camera_centers(syn.problem.pose_matrices()), camera_centers(res.poses)
    assert res.success
    torch.testing.assert_close((C[1] - C[0]).norm(), (C0[1] - C0[0]).norm(), rtol=1e-3, atol=0)


def test_two_fixed_frames_do_not_move():
    syn = make_synthetic_problem(5, 300, seed=8)
    p = syn.problem
    q = BundleProblem.from_arrays(p.K, p.pose_matrices(), p.points, p.obs_frame, p.obs_point, p.obs_xy,
                                  fixed_frames=[0, 3])
    res = solve(q)
    assert torch.equal(res.poses[[0, 3]], q.pose_matrices()[[0, 3]])
    assert not torch.equal(res.poses[1], q.pose_matrices()[1])


def test_fixed_points_do_not_move():
    syn = make_synthetic_problem(5, 300, seed=9)
    p = syn.problem
    q = BundleProblem.from_arrays(p.K, p.pose_matrices(), p.points, p.obs_frame, p.obs_point, p.obs_xy,
                                  fixed_points=[0, 1, 2])
    res = solve(q)
    assert torch.equal(res.points[:3], q.points[:3]) and res.success


# ---------------------------------------------------------------- robust kernels
@pytest.mark.parametrize("kernel,max_rms", [("huber", 1.5), ("cauchy", 0.7)])
def test_robust_kernels_downweight_outliers(kernel, max_rms):
    # 10% of observations moved by 20-60 px. Huber bounds their influence (the points they hit stay a
    # little biased); Cauchy redescends, so the inliers come back to the noise level (0.5 px per axis).
    syn = make_synthetic_problem(8, 600, noise_px=0.5, outlier_fraction=0.1, seed=10)
    plain = solve(syn.problem)
    robust = solve(syn.problem, {"robust_kernel": kernel, "robust_scale_px": 1.0, "max_iterations": 30})
    assert robust.success
    assert _inlier_rms(robust, syn.outliers) < max_rms
    assert _inlier_rms(plain, syn.outliers) > 3.0 * _inlier_rms(robust, syn.outliers)
    w = robust.robust_weights
    assert float(w[syn.outliers].mean()) < 0.2 < float(w[~syn.outliers].mean())
    assert pose_errors(robust.poses, syn.gt_poses)[0] < 0.2 * pose_errors(plain.poses, syn.gt_poses)[0]
    # the reported inlier mask separates the injected outliers (>= 20 px) from the rest
    assert float((robust.inliers == ~syn.outliers).double().mean()) > 0.98


def test_zero_weight_observations_are_ignored():
    syn = make_synthetic_problem(6, 400, noise_px=0.0, outlier_fraction=0.1, seed=11)
    p = syn.problem
    w = (~syn.outliers).double()
    q = BundleProblem.from_arrays(p.K, p.pose_matrices(), p.points, p.obs_frame, p.obs_point, p.obs_xy,
                                  obs_weight=w)
    res = solve(q, {"function_tolerance": 1e-14, "parameter_tolerance": 1e-14})
    assert res.rms_px < 1e-6 and not res.inliers[syn.outliers].any()


# ---------------------------------------------------------------- degenerate input
def _rebuild(p: BundleProblem, **kw) -> BundleProblem:
    args = dict(K=p.K, poses=p.pose_matrices(), points=p.points, obs_frame=p.obs_frame, obs_point=p.obs_point,
                obs_xy=p.obs_xy)
    args.update(kw)
    return BundleProblem.from_arrays(**args)


def _assert_failed(res, p, fragment):
    assert not res.success and fragment in res.reason, res.reason
    assert torch.isfinite(res.poses).all() and torch.isfinite(res.points).all()
    assert torch.equal(res.poses, p.pose_matrices())


def test_nan_observation_fails_with_reason():
    p = make_synthetic_problem(4, 100, seed=12).problem
    xy = p.obs_xy.clone()
    xy[5, 0] = float("nan")
    xy[7, 1] = float("inf")
    q = _rebuild(p, obs_xy=xy)
    _assert_failed(solve(q), q, "non-finite values in obs_xy (2 of")


def test_too_few_tracks_fails():
    p = make_synthetic_problem(4, 100, seed=13).problem
    keep = p.obs_point < 3
    q = _rebuild(p, obs_frame=p.obs_frame[keep], obs_point=p.obs_point[keep], obs_xy=p.obs_xy[keep])
    _assert_failed(solve(q), q, "too few tracks")


def test_pure_rotation_fails():
    p = make_synthetic_problem(4, 100, seed=14).problem
    M = p.pose_matrices().clone()
    M[:, :3, 3] = 0.0  # every camera centre at the origin
    q = _rebuild(p, poses=M, points=p.points)
    _assert_failed(solve(q), q, "no baseline")


def test_points_behind_cameras_fail():
    p = make_synthetic_problem(4, 100, seed=15).problem
    q = _rebuild(p, points=p.points * torch.tensor([1.0, 1.0, -1.0], dtype=p.dtype))
    _assert_failed(solve(q), q, "points behind cameras")


def test_few_points_behind_are_dropped_not_fatal():
    syn = make_synthetic_problem(5, 300, noise_px=0.0, seed=16)
    p = syn.problem
    pts = p.points.clone()
    pts[:5, 2] *= -1
    res = solve(_rebuild(p, points=pts))
    assert res.success
    bad = p.obs_point < 5
    assert not res.inliers[bad].any() and res.inliers[~bad].all()


def test_bad_arguments_raise_one_line_errors():
    p = make_synthetic_problem(3, 50, seed=17).problem
    with pytest.raises(InputError, match="obs_point has indices outside"):
        _rebuild(p, obs_point=p.obs_point + 1000)
    with pytest.raises(InputError, match="K must be"):
        _rebuild(p, K=torch.eye(3)[None].expand(7, 3, 3))
    with pytest.raises(InputError, match="unknown configuration key 'max_iter'"):
        solve(p, {"max_iter": 3})
    with pytest.raises(InputError, match="unknown robust kernel"):
        solve(p, {"robust_kernel": "tukey"})


# ---------------------------------------------------------------- problem container
def test_from_arrays_numpy_shared_K_and_save_load(tmp_path):
    syn = make_synthetic_problem(3, 60, seed=18)
    p = syn.problem
    q = BundleProblem.from_arrays(p.K[0].numpy(), p.pose_matrices().numpy(), p.points.numpy(),
                                  p.obs_frame.numpy().astype(np.int32), p.obs_point.numpy(), p.obs_xy.numpy())
    assert q.K.shape == (3, 3, 3) and q.fixed_frames.tolist() == [True, False, False]
    q.save(tmp_path / "p.npz")
    r = BundleProblem.load(tmp_path / "p.npz")
    torch.testing.assert_close(r.pose_matrices(), q.pose_matrices())
    assert torch.equal(r.obs_point, q.obs_point)
    with pytest.raises(InputError, match="not found"):
        BundleProblem.load(tmp_path / "missing.npz")
    (tmp_path / "bad.npz").write_text("x")
    with pytest.raises(InputError, match="bad.npz"):
        BundleProblem.load(tmp_path / "bad.npz")
