"""Window initialisation from matches: synthetic recovery, outliers, degenerate inputs, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import imatch_s2ld.ba.initialize as init_mod
import imatch_s2ld.geometry.triangulation as tri_mod
from imatch_s2ld.ba.checks import check_problem
from imatch_s2ld.ba.config import ba_conf
from imatch_s2ld.ba.initialize import FAILURE_REASONS, InitResult, initialize_window, triangulate_tracks
from imatch_s2ld.ba.solve import solve
from imatch_s2ld.ba.synthetic import (
    SyntheticBA,
    make_synthetic_problem,
    pose_errors,
    window_from_observations,
)
from imatch_s2ld.ba.tracks import Keypoints, PairMatches, build_tracks
from imatch_s2ld.errors import InputError
from imatch_s2ld.geometry.estimate import RelativePose
from imatch_s2ld.geometry.triangulation import camera_centers

F64 = torch.float64


class Window:
    """Keypoints (shuffled per frame) and all pairwise matches of a set of observations, with the
    ground-truth point of every keypoint (-1 for added keypoints)."""

    def __init__(self, obs_frame: np.ndarray, obs_point: np.ndarray, obs_xy: np.ndarray, num_frames: int,
                 outlier_fraction: float = 0.0, seed: int = 0):
        w = window_from_observations(obs_frame, obs_point, obs_xy, num_frames, outlier_fraction, seed)
        self.xy, self.gt_point, self.pairs = w.xy, w.gt_point, w.pairs

    @classmethod
    def from_synthetic(cls, sb: SyntheticBA, **kw) -> Window:
        p = sb.problem
        return cls(p.obs_frame.numpy(), p.obs_point.numpy(), p.obs_xy.numpy(), p.num_frames, **kw)

    def run(self, K: np.ndarray, config: dict | None = None, **track_kw) -> InitResult:
        kp = Keypoints.create(self.xy)
        return initialize_window(kp, build_tracks(kp.counts, self.pairs, **track_kw), K, config)


@pytest.fixture(scope="module")
def synth() -> SyntheticBA:
    return make_synthetic_problem(6, 300, noise_px=0.5, max_track_length=6, seed=1)


def _K(sb: SyntheticBA) -> np.ndarray:
    return sb.problem.K[0].numpy()


def check_success(res: InitResult, win: Window, sb: SyntheticBA) -> None:
    """Success, gauge and scale, pose errors (degrees; centre error in GT baselines), reprojection,
    bookkeeping."""
    assert res.success, res.reason
    pr = res.problem
    assert pr is not None and res.frames.tolist() == list(range(sb.problem.num_frames))
    # Frame 0 is the gauge: identity pose, fixed; the initial pair's baseline is the unit.
    assert res.gauge_frame == 0 and res.initial_pair[0] == 0
    P = pr.pose_matrices()
    torch.testing.assert_close(P[0], torch.eye(4, dtype=F64), atol=1e-12, rtol=0)
    assert pr.fixed_frames.tolist() == [True] + [False] * (pr.num_frames - 1)
    C = camera_centers(P)
    assert abs(float((C[res.initial_pair[1]] - C[0]).norm()) - 1.0) < 1e-9
    # Poses close to the ground truth up to scale (an initialisation: errors accumulate along the window,
    # about 0.1-0.6 deg here), points reproject well.
    r_err, t_err = pose_errors(P, sb.gt_poses[res.frames])
    assert r_err < 1.0 and t_err < 0.05, (r_err, t_err)
    res_px = pr.residuals().norm(dim=-1)
    assert float(res_px.max()) <= 4.0 + 1e-9 and float(res_px.median()) < 1.0
    assert (pr.depths() > 0).all() and check_problem(pr, ba_conf()) is None
    assert pr.num_points >= 250
    # Bookkeeping: observations point at their keypoints, every point is one ground-truth point.
    f, k = res.obs_keypoint[:, 0], res.obs_keypoint[:, 1]
    xy = np.stack([win.xy[a][b] for a, b in zip(f, k)])
    np.testing.assert_array_equal(pr.obs_xy.numpy(), xy)
    gt = np.array([win.gt_point[a][b] for a, b in zip(f, k)])
    obs_point = pr.obs_point.numpy()
    for m in range(pr.num_points):
        assert len(set(gt[obs_point == m])) == 1
    assert len(res.point_track) == pr.num_points


def test_recovers_synthetic_window(synth: SyntheticBA):
    win = Window.from_synthetic(synth)
    res = win.run(_K(synth))
    check_success(res, win, synth)
    assert res.unregistered == {}
    # Weights are the match confidences (drawn in [0.5, 1]).
    w = res.problem.obs_weight
    assert float(w.min()) >= 0.5 and float(w.max()) <= 1.0


def test_outlier_matches_are_filtered(synth: SyntheticBA):
    win = Window.from_synthetic(synth, outlier_fraction=0.2, seed=3)
    res = win.run(_K(synth))
    check_success(res, win, synth)  # includes: every point's observations belong to one true point


def test_bundle_adjustment_refines_the_initialisation(synth: SyntheticBA):
    res = Window.from_synthetic(synth, outlier_fraction=0.2, seed=3).run(_K(synth))
    ba = solve(res.problem)
    assert ba.success, ba.reason
    r0, t0 = pose_errors(res.problem.pose_matrices(), synth.gt_poses[res.frames])
    r1, t1 = pose_errors(ba.poses, synth.gt_poses[res.frames])
    assert r1 < r0 and t1 < t0 and ba.rms_px < 0.7  # noise 0.5 px


@pytest.mark.parametrize("estimator", ["ransac", "magsac"])
def test_other_estimators(synth: SyntheticBA, estimator: str):
    win = Window.from_synthetic(synth)
    check_success(win.run(_K(synth), {"estimator": estimator}), win, synth)


def test_initial_pair_uses_triangulate_dlt(synth: SyntheticBA, monkeypatch):
    calls = []
    real = tri_mod.triangulate_dlt  # called by triangulate_tracks, which initialisation uses

    def counting(kpts, K, T_cw, weights=None, **kw):
        calls.append((kpts.shape[-3], None if weights is None else weights.detach().clone()))
        return real(kpts, K, T_cw, weights, **kw)

    monkeypatch.setattr(tri_mod, "triangulate_dlt", counting)
    res = Window.from_synthetic(synth).run(_K(synth))
    assert res.success
    assert calls and calls[0][0] == 2  # the first triangulation is the two-view initial pair
    w = calls[0][1]
    assert w is not None and float(w.min()) >= 0.5 and float(w.max()) <= 1.0  # confidences, same focal


def test_unregisterable_frame_is_left_out(synth: SyntheticBA):
    """An extra frame whose keypoints are random pixels matched to real tracks (seen in frame 0)."""
    p = synth.problem
    rng = np.random.default_rng(5)
    N = p.num_frames
    n_extra = 60
    f = np.concatenate([p.obs_frame.numpy(), np.full(n_extra, N)])
    pt = np.concatenate([p.obs_point.numpy(), rng.choice(np.flatnonzero(p.obs_frame.numpy() == 0), n_extra,
                                                         replace=False)])
    pt[-n_extra:] = p.obs_point.numpy()[pt[-n_extra:]]
    xy = np.concatenate([p.obs_xy.numpy(), rng.uniform(0, 480, (n_extra, 2))])
    win = Window(f, pt, xy, N + 1)
    res = win.run(_K(synth))
    assert res.success, res.reason
    assert res.frames.tolist() == list(range(N)) and list(res.unregistered) == [N]
    assert "PnP" in res.unregistered[N] or "correspondences" in res.unregistered[N]


def test_zero_confidence_observations_are_ignored(synth: SyntheticBA):
    win = Window.from_synthetic(synth)
    conf = [np.ones(len(x)) for x in win.xy]
    conf[5][:] = 0.0
    kp = Keypoints.create(win.xy, conf)
    res = initialize_window(kp, build_tracks(kp.counts, win.pairs), _K(synth))
    assert res.success and 5 not in res.frames and "correspondences" in res.unregistered[5]
    assert float(res.problem.obs_weight.min()) > 0


def test_reference_frame_fallback(synth: SyntheticBA):
    """Frame 0 matched to nothing: the initial pair's first frame becomes the gauge."""
    win = Window.from_synthetic(synth)
    win.pairs = [pm for pm in win.pairs if pm.i != 0]
    kp = Keypoints.create(win.xy)
    res = initialize_window(kp, build_tracks(kp.counts, win.pairs), _K(synth))
    assert res.success, res.reason
    assert 0 not in res.frames and 0 in res.unregistered
    g = res.gauge_frame
    assert g == res.initial_pair[0] and g != 0
    pos = int(np.flatnonzero(res.frames == g)[0])
    torch.testing.assert_close(res.problem.pose_matrices()[pos], torch.eye(4, dtype=F64), atol=1e-12, rtol=0)
    assert res.problem.fixed_frames.nonzero().flatten().tolist() == [pos]


# ------------------------------------------------------------------------------------ degenerate input
def check_failed(res: InitResult, start: str) -> None:
    assert not res.success and res.problem is None
    assert res.reason.startswith(start), res.reason
    assert any(res.reason.startswith(r) for r in FAILURE_REASONS)


def test_pure_rotation():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    X = np.stack([rng.uniform(-3, 3, 300), rng.uniform(-2, 2, 300), rng.uniform(4, 8, 300)], -1)
    f, p, xy = [], [], []
    for i in range(5):  # all cameras at the origin, rotated by a few degrees
        ang = rng.normal(0, 0.05, 3)
        th = float(np.linalg.norm(ang))
        kx = np.array([[0, -ang[2], ang[1]], [ang[2], 0, -ang[0]], [-ang[1], ang[0], 0]]) / th
        R = np.eye(3) + math.sin(th) * kx + (1 - math.cos(th)) * kx @ kx
        uv = X @ R.T @ K.T
        f.append(np.full(300, i))
        p.append(np.arange(300))
        xy.append(uv[:, :2] / uv[:, 2:] + rng.normal(0, 0.5, (300, 2)))
    win = Window(np.concatenate(f), np.concatenate(p), np.concatenate(xy), 5)
    check_failed(win.run(K), "pure rotation / insufficient parallax")


def test_too_few_tracks():
    sb = make_synthetic_problem(4, 12, max_track_length=4, seed=2)
    check_failed(Window.from_synthetic(sb).run(_K(sb)), "too few tracks")
    # Enough tracks overall but no pair shares enough of them.
    check_failed(Window.from_synthetic(sb).run(_K(sb), {"min_tracks": 12}), "too few tracks")


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_keypoints(synth: SyntheticBA, bad: float):
    win = Window.from_synthetic(synth)
    win.xy[2][7, 1] = bad
    check_failed(win.run(_K(synth)), "non-finite keypoints in frame 2")


def test_non_finite_intrinsics_and_confidences(synth: SyntheticBA):
    win = Window.from_synthetic(synth)
    K = np.repeat(_K(synth)[None], synth.problem.num_frames, 0)
    K[3, 0, 2] = np.nan
    check_failed(win.run(K), "non-finite intrinsics")
    conf = [np.ones(len(x)) for x in win.xy]
    conf[1][0] = np.nan
    kp = Keypoints.create(win.xy, conf)
    res = initialize_window(kp, build_tracks(kp.counts, win.pairs), _K(synth))
    check_failed(res, "non-finite or negative keypoint confidences in frame 1")


def test_points_behind_cameras(synth: SyntheticBA, monkeypatch):
    """A relative pose with the baseline reversed puts every triangulated point behind both cameras."""
    real = init_mod.estimate_relative_pose

    def reversed_baseline(*args, **kw):
        rel = real(*args, **kw)
        return None if rel is None else RelativePose(rel.R, -rel.t, rel.inliers)

    monkeypatch.setattr(init_mod, "estimate_relative_pose", reversed_baseline)
    check_failed(Window.from_synthetic(synth).run(_K(synth)), "too few points in front of both cameras")


def test_relative_pose_failed_on_random_matches():
    rng = np.random.default_rng(0)
    K = np.array([[500.0, 0, 319.5], [0, 500.0, 239.5], [0, 0, 1]])
    xy = [rng.uniform(0, 480, (300, 2)) for _ in range(4)]
    pairs = [PairMatches.create(i, j, np.stack([rng.permutation(300)[:200], rng.permutation(300)[:200]], 1))
             for i in range(4) for j in range(i + 1, 4)]
    kp = Keypoints.create(xy)
    check_failed(initialize_window(kp, build_tracks(kp.counts, pairs), K), "relative pose failed")


def test_strict_inputs(synth: SyntheticBA):
    win = Window.from_synthetic(synth)
    kp = Keypoints.create(win.xy)
    tr = build_tracks(kp.counts, win.pairs)
    with pytest.raises(InputError, match="unknown configuration key"):
        initialize_window(kp, tr, _K(synth), {"min_trcks": 3})
    with pytest.raises(InputError, match="estimator"):
        initialize_window(kp, tr, _K(synth), {"estimator": "lmeds"})
    with pytest.raises(InputError, match="K must be"):
        initialize_window(kp, tr, np.eye(4))
    with pytest.raises(InputError, match="keypoint counts"):
        initialize_window(Keypoints.create(win.xy[:-1]), tr, _K(synth))
    with pytest.raises(InputError, match="reference_frame"):
        initialize_window(kp, tr, _K(synth), {"reference_frame": 6})


# ------------------------------------------------------------------------------------ gradients
def test_triangulate_tracks_gradcheck():
    """The exported triangulation step is differentiable w.r.t. keypoints (and weights), float64."""
    K = torch.tensor([[[500.0, 0, 320], [0, 500, 240], [0, 0, 1]],
                      [[450.0, 0, 300], [0, 460, 250], [0, 0, 1]],
                      [[500.0, 0, 320], [0, 500, 240], [0, 0, 1]]], dtype=F64)
    T = torch.eye(4, dtype=F64).repeat(3, 1, 1)
    T[1, :3, 3] = torch.tensor([-1.0, 0.1, 0.0])
    T[2, :3, 3] = torch.tensor([-0.3, -0.8, 0.2])
    X = torch.tensor([[0.2, -0.3, 5.0], [-1.0, 0.5, 7.0]], dtype=F64)
    cam = X[None] @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]
    uv = cam @ K.transpose(-1, -2)
    kpts = (uv[..., :2] / uv[..., 2:] + torch.tensor([[0.3, -0.2]], dtype=F64)).requires_grad_(True)
    w = torch.tensor([[0.9, 0.5], [0.7, 1.0], [0.6, 0.8]], dtype=F64, requires_grad=True)

    Xt, valid = triangulate_tracks(kpts, K, T, w)
    assert valid.all() and (Xt - X).norm(dim=-1).max() < 0.05
    assert torch.autograd.gradcheck(lambda k, ww: triangulate_tracks(k, K, T, ww)[0], (kpts, w))
    # Shared (3, 3) intrinsics and a batch dimension broadcast.
    Xb, vb = triangulate_tracks(kpts.detach()[None].repeat(2, 1, 1, 1), K[0], T[None].repeat(2, 1, 1, 1))
    assert Xb.shape == (2, 2, 3) and vb.shape == (2, 2)
