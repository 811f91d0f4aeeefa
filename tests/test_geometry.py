"""Geometry core: smoke, shapes, hand-computed values, known-answer cases, gradcheck."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import pose, rotation, two_view_scene
from imatch_s2ld.geometry import (
    essential_from_pose,
    estimate_relative_pose,
    fundamental_from_essential,
    invert_pose,
    matching_accuracy,
    mean_matching_accuracy,
    pose_auc,
    pose_error,
    project,
    relative_pose,
    rotation_error_deg,
    sampson_distance,
    scale_intrinsics,
    symmetric_epipolar_distance,
    translation_error_deg,
    unproject,
    warp_keypoints,
)

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"


def rot_z(deg: float) -> torch.Tensor:
    return torch.from_numpy(rotation("z", deg))


def rot_y(deg: float) -> torch.Tensor:
    return torch.from_numpy(rotation("y", deg))


def make_T(R: torch.Tensor, t) -> torch.Tensor:
    return torch.from_numpy(pose(R, t))


K = torch.tensor([[500.0, 0, 320], [0, 400.0, 240], [0, 0, 1]], dtype=torch.float64)


def test_project_known_values_and_shapes():
    pts = torch.tensor([[[1.0, 2.0, 4.0], [0.0, 0.0, 2.0]]], dtype=torch.float64)  # (1, 2, 3)
    uv = project(pts, K[None])
    assert uv.shape == (1, 2, 2)
    assert torch.allclose(uv[0, 0], torch.tensor([320 + 125.0, 240 + 200.0], dtype=torch.float64))
    assert torch.allclose(uv[0, 1], torch.tensor([320.0, 240.0], dtype=torch.float64))
    # Batch dims broadcast: (2, 3, N, 3) with (2, 3, 3, 3).
    assert project(torch.rand(2, 3, 5, 3) + 1, K.float().expand(2, 3, 3, 3)).shape == (2, 3, 5, 2)


def test_unproject_inverts_project():
    pts = torch.rand(3, 10, 3, dtype=torch.float64) + torch.tensor([0, 0, 1.0], dtype=torch.float64)
    uv = project(pts, K.expand(3, 3, 3))
    back = unproject(uv, pts[..., 2], K.expand(3, 3, 3))
    assert torch.allclose(back, pts, atol=1e-10)


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="last dimension 3"):
        project(torch.rand(4, 2), K)
    with pytest.raises(ValueError, match="depth shape"):
        unproject(torch.rand(4, 2), torch.rand(5), K)


def test_scale_intrinsics_maps_pixel_centres():
    K2 = scale_intrinsics(K.numpy(), 0.5, 0.25)
    # The centre of pixel 0 ((0.5, 0.5) in corner coordinates) maps to corner coordinates
    # (0.25, 0.125), i.e. pixel (-0.25, -0.375) in the centre convention.
    x = np.array([0.0, 0.0, 1.0])
    ray = np.linalg.inv(K.numpy()) @ x
    assert np.allclose((K2 @ ray)[:2], [-0.25, -0.375])
    assert np.allclose(K2[[0, 1], [0, 1]], [250.0, 100.0])
    Kt = scale_intrinsics(K, 2.0, 2.0)
    assert isinstance(Kt, torch.Tensor) and torch.allclose(Kt[0, 2], torch.tensor(640.5, dtype=torch.float64))


def test_relative_pose_and_inverse():
    T0 = make_T(rot_z(30) @ rot_y(10), [1.0, 2.0, 3.0])
    T1 = make_T(rot_y(-20), [0.5, -1.0, 2.0])
    assert torch.allclose(invert_pose(T0) @ T0, torch.eye(4, dtype=torch.float64), atol=1e-12)
    T01 = relative_pose(T0, T1)
    X = torch.tensor([[0.3, -0.2, 5.0]], dtype=torch.float64)
    X0 = X @ T0[:3, :3].T + T0[:3, 3]
    X1 = X @ T1[:3, :3].T + T1[:3, 3]
    assert torch.allclose(X0 @ T01[:3, :3].T + T01[:3, 3], X1, atol=1e-12)
    # Batched.
    assert relative_pose(T0.expand(4, 4, 4), T1.expand(4, 4, 4)).shape == (4, 4, 4)


def test_essential_matrix_epipolar_constraint_and_distances():
    T01 = make_T(rot_y(15), [1.0, 0.1, 0.2])
    X0 = torch.rand(20, 3, dtype=torch.float64) * 2 + torch.tensor([-1, -1, 4.0], dtype=torch.float64)
    X1 = X0 @ T01[:3, :3].T + T01[:3, 3]
    E = essential_from_pose(T01)
    x0, x1 = X0 / X0[:, 2:], X1 / X1[:, 2:]
    assert torch.allclose((x1 * (x0 @ E.T)).sum(-1), torch.zeros(20, dtype=torch.float64), atol=1e-12)
    p0, p1 = project(X0, K), project(X1, K)
    F = fundamental_from_essential(E, K, K)
    assert sampson_distance(p0, p1, F).abs().max() < 1e-18
    assert symmetric_epipolar_distance(p0, p1, T01, K, K).abs().max() < 1e-18
    # Hand-computed: shifting a point by d pixels perpendicular to a horizontal epipolar line.
    T_x = make_T(torch.eye(3, dtype=torch.float64), [1.0, 0.0, 0.0])  # pure x translation
    q0 = torch.tensor([[320.0, 240.0]], dtype=torch.float64)
    q1 = torch.tensor([[400.0, 243.0]], dtype=torch.float64)  # 3 px off the line y = 240
    Fx = fundamental_from_essential(essential_from_pose(T_x), K, K)
    # Sampson: the error is split between both images -> d^2 / 2.
    assert torch.allclose(sampson_distance(q0, q1, Fx), torch.tensor([4.5], dtype=torch.float64))
    # Symmetric (normalized): d_n = 3/400 in both images -> 2 * d_n^2.
    assert torch.allclose(symmetric_epipolar_distance(q0, q1, T_x, K, K),
                          torch.tensor([2 * (3 / 400) ** 2], dtype=torch.float64))


def test_pose_errors_hand_computed():
    T = make_T(rot_y(10), [1.0, 0.0, 0.0])
    assert rotation_error_deg(rot_y(13).numpy(), T[:3, :3].numpy()) == pytest.approx(3.0)
    assert translation_error_deg(np.array([1.0, 1.0, 0]), np.array([1.0, 0, 0])) == pytest.approx(45.0)
    # Sign ambiguity of the essential matrix: the opposite direction is a perfect estimate.
    assert translation_error_deg(np.array([-2.0, 0, 0]), np.array([1.0, 0, 0])) == pytest.approx(0.0)
    eR, et = pose_error(rot_y(12).numpy(), np.array([0.0, 0.0, 1.0]), T.numpy())
    assert eR == pytest.approx(2.0) and et == pytest.approx(90.0)
    assert pose_error(None, None, T.numpy()) == (math.inf, math.inf)


@pytest.mark.skipif(not (REFERENCE / "pose_auc_cases.json").exists(), reason="shared/reference absent")
def test_pose_auc_reference_cases():
    cases = json.loads((REFERENCE / "pose_auc_cases.json").read_text())["cases"]
    for case in cases:
        auc = pose_auc(case["errors_deg"])
        for t in (5, 10, 20):
            assert auc[f"auc@{t}"] == pytest.approx(case[f"auc@{t}"], abs=1e-9)


def test_pose_auc_hand_computed():
    # Two pairs, errors 0 and inf: recall 0.5 from the start -> 50% at every threshold.
    assert pose_auc([0.0, None]) == {"auc@5": 50.0, "auc@10": 50.0, "auc@20": 50.0}
    # One error of 5 deg: it does not count for AUC@5 (strictly below); at 10 the curve is the
    # trapezoid (0, 0) -> (5, 1) (area 2.5) then flat to 10 (area 5): 7.5 / 10.
    assert pose_auc([5.0], thresholds=(5, 10)) == {"auc@5": 0.0, "auc@10": 75.0}
    assert pose_auc([float("nan")]) == {"auc@5": 0.0, "auc@10": 0.0, "auc@20": 0.0}
    assert pose_auc([]) == {"auc@5": 0.0, "auc@10": 0.0, "auc@20": 0.0}


def test_matching_accuracy():
    acc = matching_accuracy(np.array([0.5, 1.5, 2.5, np.nan]), thresholds=(1, 2, 3))
    assert np.allclose(acc, [0.25, 0.5, 0.75])
    assert np.allclose(matching_accuracy(np.array([]), (1, 2)), [0, 0])
    mma = mean_matching_accuracy([np.array([0.5]), np.array([5.0])], thresholds=(1, 10))
    assert mma == {"mma@1px": 0.5, "mma@10px": 1.0}


def _plane_scene(H=48, W=64):
    """Two cameras looking at a fronto-parallel plane z = 5 in camera 0, with exact depth maps."""
    Ks = torch.tensor([[60.0, 0, (W - 1) / 2], [0, 60.0, (H - 1) / 2], [0, 0, 1]], dtype=torch.float64)
    T01 = make_T(rot_y(5), [0.3, 0.0, 0.0])
    depth0 = torch.full((1, H, W), 5.0, dtype=torch.float64)
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64),
                            indexing="ij")
    # Depth of the plane n.X = 5 (n = z of camera 0) seen from camera 1: X0 = inv(T01) X1.
    T10 = invert_pose(T01)
    rays1 = torch.stack([xs, ys, torch.ones_like(xs)], -1) @ torch.linalg.inv(Ks).T  # z = 1
    # Point on ray: X1 = s * ray; X0_z = (R10 X1 + t10)_z = 5 -> s = (5 - t10_z) / (R10 ray)_z.
    s = (5.0 - T10[2, 3]) / (rays1 @ T10[2, :3])
    depth1 = s[None]
    return Ks, T01, depth0, depth1


def test_warp_keypoints_plane_and_occlusion():
    Ks, T01, depth0, depth1 = _plane_scene()
    kpts0 = torch.tensor([[[10.0, 10.0], [32.0, 24.0], [63.0, 47.0]]], dtype=torch.float64)
    valid, w = warp_keypoints(kpts0, depth0, depth1, T01[None], Ks[None], Ks[None])
    assert valid.shape == (1, 3) and w.shape == (1, 3, 2)
    X0 = unproject(kpts0[0], torch.full((3,), 5.0, dtype=torch.float64), Ks)
    expected = project(X0 @ T01[:3, :3].T + T01[:3, 3], Ks)
    assert torch.allclose(w[0], expected, atol=1e-9)
    assert valid[0, :2].all()
    # Occlusion: an object closer than the plane in view 1 hides the warp of keypoint 1.
    x, y = w[0, 1].round().long().tolist()
    occluded = depth1.clone()
    occluded[0, y - 1 : y + 2, x - 1 : x + 2] = 2.0
    valid_occ, _ = warp_keypoints(kpts0, depth0, occluded, T01[None], Ks[None], Ks[None])
    assert not valid_occ[0, 1] and valid_occ[0, 0]
    # Missing depth in view 0 invalidates too.
    holes = depth0.clone()
    holes[0, 10, 10] = 0
    assert not warp_keypoints(kpts0, holes, depth1, T01[None], Ks[None], Ks[None])[0][0, 0]


def test_estimate_relative_pose_all_methods():
    rng = np.random.default_rng(0)
    T01 = make_T(rot_y(8) @ rot_z(3), [1.0, 0.2, 0.1]).numpy()
    Kn = K.numpy()
    _, p0, p1 = two_view_scene(T01, Kn, 200)
    p1[:20] += rng.uniform(-30, 30, size=(20, 2))  # 10% outliers
    for method in ("ransac", "magsac", "pycolmap"):
        est = estimate_relative_pose(p0, p1, Kn, Kn, method=method, threshold_px=1.0)
        assert est is not None, method
        eR, et = pose_error(est.R, est.t, T01)
        assert max(eR, et) < 0.5, (method, eR, et)
        assert est.inliers.shape == (200,) and est.inliers[20:].mean() > 0.9, method
    assert estimate_relative_pose(p0[:4], p1[:4], Kn, Kn) is None
    with pytest.raises(ValueError, match="unknown estimator"):
        estimate_relative_pose(p0, p1, Kn, Kn, method="lmeds")


def test_gradcheck_projection_epipolar_warp():
    torch.manual_seed(0)
    pts = (torch.rand(1, 4, 3, dtype=torch.float64) + torch.tensor([0, 0, 2.0], dtype=torch.float64))
    pts.requires_grad_(True)
    Kg = K[None].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(project, (pts, Kg))
    kp = (torch.rand(1, 4, 2, dtype=torch.float64) * 100).requires_grad_(True)
    d = (torch.rand(1, 4, dtype=torch.float64) + 1).requires_grad_(True)
    assert torch.autograd.gradcheck(unproject, (kp, d, K[None]))
    T01 = make_T(rot_y(10), [1.0, 0.1, 0.0])[None]
    k0 = (torch.rand(1, 4, 2, dtype=torch.float64) * 300).requires_grad_(True)
    k1 = (torch.rand(1, 4, 2, dtype=torch.float64) * 300).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: symmetric_epipolar_distance(a, b, T01, K[None], K[None]),
                                    (k0, k1))
    F = fundamental_from_essential(essential_from_pose(T01), K[None], K[None])
    assert torch.autograd.gradcheck(lambda a, b: sampson_distance(a, b, F), (k0, k1))
    Ks, T, depth0, depth1 = _plane_scene()
    kq = torch.tensor([[[10.0, 10.0], [32.0, 24.0]]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda k: warp_keypoints(k, depth0, depth1, T[None], Ks[None], Ks[None])[1], (kq,))
