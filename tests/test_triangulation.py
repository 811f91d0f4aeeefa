"""Triangulation (weighted DLT) and its regularizer: known answers, degenerate cases, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import pose, rotation
from imatch_s2ld.errors import InputError
from imatch_s2ld.geometry.camera import project, transform_points
from imatch_s2ld.geometry.pose import relative_pose
from imatch_s2ld.geometry.triangulation import (
    camera_centers,
    reprojection_residuals,
    triangulate_dlt,
    triangulate_pair,
    triangulation_angle,
)
from imatch_s2ld.losses import RegularizerOutput, TriangulationRegularizer

F64 = torch.float64


def intrinsics(f: float = 500.0, cx: float = 319.5, cy: float = 239.5) -> torch.Tensor:
    return torch.tensor([[f, 0.0, cx], [0.0, f, cy], [0.0, 0.0, 1.0]], dtype=F64)


def look_at(center, target=(0.0, 0.0, 5.0)) -> torch.Tensor:
    """World-to-camera pose of a camera at ``center`` looking at ``target`` (y down)."""
    C, tgt = torch.tensor(center, dtype=F64), torch.tensor(target, dtype=F64)
    z = (tgt - C) / (tgt - C).norm()
    x = torch.linalg.cross(torch.tensor([0.0, 1.0, 0.0], dtype=F64), z)
    x = x / x.norm()
    y = torch.linalg.cross(z, x)
    R = torch.stack([x, y, z])
    T = torch.eye(4, dtype=F64)
    T[:3, :3], T[:3, 3] = R, -R @ C
    return T


def scene(V: int, N: int, seed: int = 0):
    """V cameras on an arc around points near (0, 0, 5); returns kpts (V, N, 2), K, T, X (N, 3)."""
    g = torch.Generator().manual_seed(seed)
    X = torch.tensor([0.0, 0.0, 5.0], dtype=F64) + (torch.rand(N, 3, generator=g, dtype=F64) - 0.5) * 2
    T = torch.stack([look_at((2.0 * math.sin(a), 0.3 * i, 5 - 5 * math.cos(a)))
                     for i, a in enumerate(torch.linspace(-0.4, 0.4, V).tolist())])
    K = intrinsics().expand(V, 3, 3)
    kpts = project(transform_points(T, X[None]), K)
    return kpts, K, T, X


# ----------------------------------------------------------------------------------------- triangulate_dlt


@pytest.mark.parametrize("V", [2, 3, 5])
def test_dlt_exact_recovery(V):
    kpts, K, T, X = scene(V, 20)
    P, valid = triangulate_dlt(kpts, K, T)
    assert P.shape == (20, 3) and valid.shape == (20,) and valid.dtype == torch.bool
    assert valid.all()
    torch.testing.assert_close(P, X, atol=1e-8, rtol=0)


def test_dlt_batched_shapes_and_dtype():
    kpts, K, T, X = scene(3, 7)
    kb = torch.stack([kpts, kpts + 0.0]).expand(4, 2, 3, 7, 2)  # (4, 2, V, N, 2)
    P, valid = triangulate_dlt(kb, K, T)  # K, T broadcast
    assert P.shape == (4, 2, 7, 3) and valid.shape == (4, 2, 7)
    torch.testing.assert_close(P, X.expand(4, 2, 7, 3), atol=1e-8, rtol=0)
    P32, _ = triangulate_dlt(kpts.float(), K.float(), T.float())
    assert P32.dtype == torch.float32
    Ph, vh = triangulate_dlt(kpts.half(), K, T)
    assert Ph.dtype == torch.float32 and torch.isfinite(Ph).all() and vh.all()
    with pytest.raises(ValueError):
        triangulate_dlt(kpts[:1], K[:1], T[:1])  # one view
    with pytest.raises(ValueError):
        triangulate_dlt(kpts, K, T, weights=torch.ones(3, 6))


def test_dlt_known_answer_two_cameras_1m_apart():
    # Cameras at x=0 and x=1 (identity rotation), f=500, c=(320, 240); point (0.5, 0, 5) projects to
    # x = 500 * (+-0.5) / 5 + 320 = 370 and 270: a disparity of 100 px = f * b / z.
    K = torch.tensor([[500.0, 0, 320], [0, 500, 240], [0, 0, 1]], dtype=F64).expand(2, 3, 3)
    T = torch.eye(4, dtype=F64).repeat(2, 1, 1)
    T[1, 0, 3] = -1.0  # centre at x = 1
    kpts = torch.tensor([[[370.0, 240.0]], [[270.0, 240.0]]], dtype=F64)
    P, valid = triangulate_dlt(kpts, K, T)
    torch.testing.assert_close(P, torch.tensor([[0.5, 0.0, 5.0]], dtype=F64), atol=1e-12, rtol=0)
    assert valid.all()
    torch.testing.assert_close(camera_centers(T), torch.tensor([[0.0, 0, 0], [1.0, 0, 0]], dtype=F64))
    # Angle between the rays: 2 * atan(0.5 / 5).
    ang = triangulation_angle(P, camera_centers(T))
    torch.testing.assert_close(ang, torch.tensor([2 * math.degrees(math.atan(0.1))], dtype=F64))
    # Same pair through triangulate_pair, with a pose of arbitrary scale (gauge): the point scales with it.
    P01, v01 = triangulate_pair(kpts[0], kpts[1], K[0], K[1], T[1])
    torch.testing.assert_close(P01, P, atol=1e-12, rtol=0)
    Ts = T[1].clone()
    Ts[:3, 3] *= 7.0
    P7, v7 = triangulate_pair(kpts[0], kpts[1], K[0], K[1], Ts)
    torch.testing.assert_close(P7, 7.0 * P, atol=1e-10, rtol=0)
    assert v01.all() and v7.all()


def test_dlt_zero_weight_outlier_view_is_ignored():
    kpts, K, T, X = scene(4, 10)
    bad = kpts.clone()
    bad[2] += 40.0  # gross outliers in view 2
    w = torch.ones(4, 10, dtype=F64)
    P_bad, _ = triangulate_dlt(bad, K, T, w)
    assert (P_bad - X).norm(dim=-1).max() > 1e-2
    w[2] = 0.0
    P, valid = triangulate_dlt(bad, K, T, w)
    assert valid.all()
    torch.testing.assert_close(P, X, atol=1e-8, rtol=0)


def test_reprojection_residuals_and_angle():
    kpts, K, T, X = scene(3, 5)
    r = reprojection_residuals(X, kpts, K, T)
    assert r.shape == (3, 5, 2)
    assert r.abs().max() < 1e-9
    r2 = reprojection_residuals(X, kpts + torch.tensor([3.0, -4.0], dtype=F64), K, T)
    torch.testing.assert_close(r2.norm(dim=-1), torch.full((3, 5), 5.0, dtype=F64))
    ang = triangulation_angle(X, camera_centers(T))
    w01 = torch.tensor([[1.0], [1.0], [0.0]]).expand(3, 5)
    ang01 = triangulation_angle(X, camera_centers(T), weights=w01)
    assert ang.shape == (5,) and (ang >= ang01).all() and (ang01 > 0).all()


def test_dlt_degenerate_cases_invalid_finite_with_finite_gradients():
    kpts, K, T, _ = scene(2, 3)
    k = kpts.clone().requires_grad_(True)
    w = torch.ones(2, 3, dtype=F64)
    w[:, 0] = 0.0  # point 0: all weights 0
    w[1, 1] = 0.0  # point 1: a single view
    P, valid = triangulate_dlt(k, K, T, w.requires_grad_(True))
    assert valid.tolist() == [False, False, True]
    assert torch.isfinite(P).all()
    P.sum().backward()
    assert torch.isfinite(k.grad).all() and torch.isfinite(w.grad).all()

    # Identical camera centres (pure rotation) and coincident rays.
    T_same = torch.stack([look_at((0.0, 0, 0), (0, 0, 5)), look_at((0.0, 0, 0), (0.3, 0, 5))])
    X = torch.tensor([[0.1, 0.2, 4.0], [-0.3, 0.1, 6.0]], dtype=F64)
    kp = project(transform_points(T_same, X[None]), K).requires_grad_(True)
    P, valid = triangulate_dlt(kp, K, T_same)
    assert not valid.any() and torch.isfinite(P).all()
    P.sum().backward()
    assert torch.isfinite(kp.grad).all()

    # Parallel rays from distinct centres: point at infinity.
    Tp = torch.eye(4, dtype=F64).repeat(2, 1, 1)
    Tp[1, 0, 3] = -1.0
    kp = torch.tensor([[[350.0, 260.0]], [[350.0, 260.0]]], dtype=F64, requires_grad=True)
    P, valid = triangulate_dlt(kp, K, Tp)
    assert not valid.any() and torch.isfinite(P).all()
    P.sum().backward()
    assert torch.isfinite(kp.grad).all()

    # Behind the cameras (cheirality): the DLT point is finite but has negative depth.
    Xb = torch.tensor([[0.2, 0.1, -4.0]], dtype=F64)
    cam = transform_points(Tp, Xb[None])  # (2, 1, 3), z < 0
    kb = ((cam / cam[..., 2:]) @ K[0].T)[..., :2]  # the projections of the mirrored point
    Pb, vb = triangulate_dlt(kb, K, Tp)
    torch.testing.assert_close(Pb, Xb, atol=1e-9, rtol=0)
    assert not vb.any()


def test_dlt_gradcheck():
    kpts, K, T, _ = scene(3, 2)
    kpts = kpts + torch.tensor([[0.5, -0.3], [0.1, 0.2]], dtype=F64)  # noisy: a generic least squares
    w = torch.tensor([[1.0, 0.8], [0.7, 1.2], [0.9, 0.5]], dtype=F64)
    k = kpts.clone().requires_grad_(True)
    wr = w.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: triangulate_dlt(a, K, T, b)[0], (k, wr), eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------------ regularizer


def pair_scene(M: int = 32, seed: int = 0, H: int = 480, W: int = 640):
    """Two views, exact matches and depth maps holding each match's depth in a 5x5 patch around its
    nearest pixel (0 = unknown elsewhere)."""
    g = torch.Generator().manual_seed(seed)
    T0, T1 = look_at((-0.6, 0.0, 0.0)), look_at((0.6, 0.1, 0.2))
    X = torch.tensor([0.0, 0.0, 5.0], dtype=F64) + (torch.rand(M, 3, generator=g, dtype=F64) - 0.5) * 2
    K = intrinsics()
    k0 = project(transform_points(T0, X), K)
    k1 = project(transform_points(T1, X), K)
    d0, d1 = torch.zeros(1, H, W, dtype=F64), torch.zeros(1, H, W, dtype=F64)
    for d, k, T in ((d0, k0, T0), (d1, k1, T1)):
        ij = k.round().long()
        z = transform_points(T, X)[:, 2]
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                d[0, (ij[:, 1] + dy).clamp(0, H - 1), (ij[:, 0] + dx).clamp(0, W - 1)] = z
    return k0[None], k1[None], K[None], relative_pose(T0, T1)[None], d0, d1


def test_regularizer_conf_strict():
    reg = TriangulationRegularizer({"kernel": "geman_mcclure"}, pixel_noise=2.0)
    assert reg.conf["kernel"] == "geman_mcclure" and reg.conf["pixel_noise"] == 2.0
    with pytest.raises(InputError, match="pixel_nosie"):
        TriangulationRegularizer({"pixel_nosie": 1.0})
    with pytest.raises(InputError, match="huber"):
        TriangulationRegularizer(kernel="huber")


def test_regularizer_zero_on_perfect_matches_and_shapes():
    k0, k1, K, T, d0, d1 = pair_scene()
    out = TriangulationRegularizer()(k0, k1, K, K, T, depth0=d0, depth1=d1, image_size=(640, 480))
    assert isinstance(out, RegularizerOutput)
    assert out.per_match.shape == out.reproj_px.shape == out.depth_rel.shape == out.valid.shape == (1, 32)
    assert out.num_valid == 32 and out.loss.dim() == 0
    assert out.loss.item() < 1e-12 and out.reproj_px.max() < 1e-8 and out.depth_rel.max() < 1e-8
    # Unbatched input gives unbatched fields; no depth -> depth_rel NaN.
    out_u = TriangulationRegularizer()(k0[0], k1[0], K[0], K[0], T[0])
    assert out_u.per_match.shape == (32,) and torch.isnan(out_u.depth_rel).all()
    assert out_u.loss.item() < 1e-12


def test_regularizer_monotonic_and_robust():
    k0, k1, K, T, d0, d1 = pair_scene(M=16)
    reg = TriangulationRegularizer()
    costs = []
    for e in [0.0, 1.0, 2.0, 4.0, 8.0, 16.0]:
        k1e = k1.clone()
        k1e[0, 0, 1] += e  # mostly across the (near-horizontal) epipolar line
        costs.append(reg(k0, k1e, K, K, T, depth0=d0, depth1=d1).per_match[0, 0].item())
    assert all(b > a for a, b in zip(costs, costs[1:]))
    # One gross outlier among noisy inliers: it dominates the L2 mean but not the robust ones.
    k0, k1, K, T, _, _ = pair_scene(M=64)
    k1n = k1 + 3.0 * torch.randn(k1.shape, generator=torch.Generator().manual_seed(1), dtype=F64)
    k1n_o = k1n.clone()
    k1n_o[0, 0, 1] += 200.0
    share, ratio = {}, {}
    for kern in ("l2", "cauchy", "geman_mcclure"):
        r = TriangulationRegularizer(kernel=kern)
        clean, out = r(k0, k1n, K, K, T), r(k0, k1n_o, K, K, T)
        assert out.valid[0, 0]
        share[kern] = (out.per_match[0, 0] / out.per_match.sum()).item()
        ratio[kern] = (out.loss / clean.loss).item()
    assert share["l2"] > 0.95 and ratio["l2"] > 30
    assert share["cauchy"] < 0.7 and ratio["cauchy"] < 3
    assert share["geman_mcclure"] < 0.4 and ratio["geman_mcclure"] < 2
    # Saturation: doubling a gross error barely changes the Geman-McClure cost; the Cauchy cost grows only
    # logarithmically (by at most log 4), the L2 cost by a factor 4.
    c = {}
    for kern in ("geman_mcclure", "cauchy", "l2"):
        r = TriangulationRegularizer(kernel=kern)
        c[kern] = []
        for e in (100.0, 200.0):
            k1e = k1.clone()
            k1e[0, 0, 1] += e
            c[kern].append(r(k0, k1e, K, K, T).per_match[0, 0].item())
        assert c[kern][0] < c[kern][1]
    assert c["geman_mcclure"][1] < 1.05 * c["geman_mcclure"][0]
    assert c["cauchy"][1] - c["cauchy"][0] < math.log(4.0) + 1e-3
    assert c["l2"][1] > 3.5 * c["l2"][0]


def test_regularizer_noisy_poses_separate_correct_from_wrong():
    k0, k1, K, T, _, _ = pair_scene(M=64)
    turn = torch.from_numpy(pose(rotation("y", -1.0)))  # about 1 degree of rotation error on each side
    T_noisy = turn @ T[0] @ torch.from_numpy(pose(rotation("x", 0.5)))
    reg = TriangulationRegularizer(pose_noise_deg=1.0)
    wrong = k1.clone()
    g = torch.Generator().manual_seed(3)
    wrong = wrong + (torch.rand(wrong.shape, generator=g, dtype=F64) - 0.5) * 120.0
    good, bad = reg(k0, k1, K, K, T_noisy[None]), reg(k0, wrong, K, K, T_noisy[None])
    assert good.num_valid > 50
    assert good.loss < 0.2 * bad.loss


def test_regularizer_gradient_step_reduces_error():
    k0, k1, K, T, d0, d1 = pair_scene(M=8)
    reg = TriangulationRegularizer(kernel="cauchy")
    for delta, depth in (((0.0, 6.0), False), ((6.0, 0.0), True)):  # across / along the epipolar line
        k1p = k1.clone()
        k1p[0, 3] += torch.tensor(delta, dtype=F64)
        k1p.requires_grad_(True)
        kw = {"depth0": d0, "depth1": d1} if depth else {}
        out = reg(k0, k1p, K, K, T, **kw)
        out.loss.backward()
        g = k1p.grad[0, 3]
        assert g.norm() > 0 and torch.isfinite(k1p.grad).all()
        err_before = (k1p[0, 3] - k1[0, 3]).norm()
        step = 2.0 * g / g.norm()  # a small normalised step along the negative gradient
        err_after = (k1p[0, 3].detach() - step - k1[0, 3]).norm()
        assert err_after < err_before
        assert k1p.grad[0, :3].abs().max() < 1e-9  # other (perfect) matches get no gradient


def test_regularizer_no_valid_match_and_low_precision():
    k0, k1, K, T, d0, d1 = pair_scene(M=8)
    k1g = k1.clone().requires_grad_(True)
    out = TriangulationRegularizer()(k0, k1g, K, K, T, valid=torch.zeros(1, 8, dtype=torch.bool))
    assert out.num_valid == 0 and out.loss.item() == 0.0
    out.loss.backward()
    assert torch.isfinite(k1g.grad).all()
    # Pure rotation: every match has a zero triangulation angle -> masked out, no NaN.
    T_rot = torch.eye(4, dtype=F64)[None]
    out = TriangulationRegularizer()(k0, k1, K, K, T_rot)
    assert out.num_valid == 0 and out.loss.item() == 0.0
    for dt in (torch.float16, torch.bfloat16):
        kk = k1.to(dt).requires_grad_(True)
        out = TriangulationRegularizer()(k0.to(dt), kk, K.to(dt), K.to(dt), T.to(dt), weights=torch.ones(1, 8,
                                         dtype=dt), depth0=d0.to(dt), depth1=d1.to(dt))
        assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)
        assert out.num_valid > 0 and out.loss < 1.0
        out.loss.backward()
        assert torch.isfinite(kk.grad).all()


def test_regularizer_gradcheck():
    k0, k1, K, T, d0, d1 = pair_scene(M=3)
    g = torch.Generator().manual_seed(5)
    k0 = (k0 + torch.randn(k0.shape, generator=g, dtype=F64)).requires_grad_(True)
    k1 = (k1 + torch.randn(k1.shape, generator=g, dtype=F64)).requires_grad_(True)
    # The noise scales are constants of the graph (the depth scale uses the detached triangulation
    # angle), so the depth term is checked with a negligible angle-dependent part.
    reg = TriangulationRegularizer()
    assert torch.autograd.gradcheck(lambda a, b: reg(a, b, K, K, T).loss, (k0, k1), eps=1e-6, atol=1e-6)
    reg_d = TriangulationRegularizer(pixel_noise=1e-6, pose_noise_deg=0.0)
    assert torch.autograd.gradcheck(lambda a, b: reg_d(a, b, K, K, T, depth0=d0, depth1=d1).loss, (k0, k1),
                                    eps=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------ multi-view (track) form


def test_tracks_zero_on_exact_tracks_and_shapes():
    kpts, K, T, _ = scene(4, 12)
    vis = torch.ones(4, 12, dtype=torch.bool)
    vis[3, :4] = False  # four tracks seen in three views only
    out = TriangulationRegularizer().tracks(kpts, vis, K, T, image_size=(640, 480))
    assert out.per_match.shape == out.reproj_px.shape == out.valid.shape == (12,)
    assert out.num_valid == 12 and out.loss.item() < 1e-12 and out.reproj_px.max() < 1e-8
    assert torch.isnan(out.depth_rel).all()
    vis[1:, 0] = False  # one view: invalid
    assert not TriangulationRegularizer().tracks(kpts, vis, K, T).valid[0]


def test_tracks_see_the_error_along_the_epipolar_line_the_pair_term_cannot():
    """Move a track's observation in view 2 along the epipolar line of views 0-2: the two-view term of
    (0, 2) stays zero, the three-view track cost is positive, and matches the known mean reprojection
    error of the moved observation's least-squares point (checked by its size, not zero)."""
    kpts, K, T, X = scene(3, 1)
    # the same 3D ray of view 0 at another depth projects onto the epipolar line in view 2
    ray_pt = X[0] + 0.4 * (X[0] - camera_centers(T)[0]) / (X[0] - camera_centers(T)[0]).norm()
    moved = kpts.clone()
    moved[2, 0] = project(transform_points(T[2:3], ray_pt[None, None]), K[2:3])[0, 0]
    shift = (moved[2, 0] - kpts[2, 0]).norm()
    assert shift > 5.0
    reg = TriangulationRegularizer(pose_noise_deg=0.0)
    pair = reg(moved[0], moved[2], K[0], K[2], T[2] @ torch.linalg.inv(T[0]))
    assert pair.reproj_px.max() < 1e-6
    track = reg.tracks(moved, torch.ones(3, 1, dtype=torch.bool), K, T)
    assert track.valid.all() and track.reproj_px[0] > 0.1 * shift and track.loss > 0.1


def test_tracks_weights_and_robustness():
    kpts, K, T, _ = scene(3, 8)
    noisy = kpts.clone()
    noisy[2, 0] += torch.tensor([40.0, -30.0], dtype=F64)  # a gross outlier in one track
    noisy[2, 1] += torch.tensor([1.0, 0.5], dtype=F64)  # a small error
    vis = torch.ones(3, 8, dtype=torch.bool)
    reg = TriangulationRegularizer(pose_noise_deg=0.0)
    out = reg.tracks(noisy, vis, K, T)
    c = out.per_match
    assert c[0] > c[1] > 0 and c[2:].max() < 1e-12
    assert c[0] < 10 * c[1] * 40  # Cauchy: the outlier grows far slower than its squared error
    w = torch.ones(8, dtype=F64)
    w[0] = 0.0
    assert reg.tracks(noisy, vis, K, T, weights=w).loss < out.loss
    with pytest.raises(ValueError, match="kpts must be"):
        reg.tracks(noisy[0], vis, K, T)


def test_tracks_gradcheck_and_gradient_step():
    kpts, K, T, _ = scene(3, 3)
    g = torch.Generator().manual_seed(2)
    k = (kpts + torch.randn(kpts.shape, generator=g, dtype=F64)).requires_grad_(True)
    vis = torch.ones(3, 3, dtype=torch.bool)
    vis[2, 0] = False
    reg = TriangulationRegularizer()
    assert torch.autograd.gradcheck(lambda x: reg.tracks(x, vis, K, T).loss, (k,), eps=1e-6, atol=1e-6)
    out = reg.tracks(k, vis, K, T)
    out.loss.backward()
    assert k.grad[2, 0].abs().max() == 0  # an unseen view gets no gradient
    stepped = reg.tracks((k - 50.0 * k.grad).detach(), vis, K, T)
    assert stepped.loss < out.loss
