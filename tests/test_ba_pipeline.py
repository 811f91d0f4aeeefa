"""reconstruct_window: matches -> tracks -> initialisation -> BA, and the keypoint targets it gives."""

from __future__ import annotations

import numpy as np
import pytest

from imatch_s2ld.ba import make_synthetic_problem, pose_errors, reconstruct_window, synthetic_window
from imatch_s2ld.errors import InputError


@pytest.fixture(scope="module")
def syn():
    return make_synthetic_problem(7, 400, noise_px=0.5, max_track_length=6, seed=21)


def test_window_with_wrong_matches_is_reconstructed(syn):
    win = synthetic_window(syn, outlier_fraction=0.15, seed=1)
    rec = reconstruct_window(win.keypoints(), win.pairs, syn.problem.K[0].numpy())
    assert rec.success, rec.reason
    frames = rec.init.frames
    assert frames.tolist() == list(range(7))
    rot, trans = pose_errors(rec.ba.poses, syn.gt_poses[frames])
    rot0, _ = pose_errors(rec.init.problem.pose_matrices(), syn.gt_poses[frames])
    assert rot < 0.15 and trans < 0.02 and rot < rot0
    # Targets: the BA reprojection of each inlier observation, close to its noise-free projection.
    frame_kpt, target, weight = rec.keypoint_targets()
    assert frame_kpt.shape == target.shape == (len(weight), 2) and len(weight) > 1000
    gt_point = np.array([win.gt_point[f][k] for f, k in frame_kpt.tolist()])
    p = syn.problem
    lookup = {(int(f), int(q)): i for i, (f, q) in enumerate(zip(p.obs_frame, p.obs_point))}
    gt_xy = syn.gt_xy[[lookup[(f, q)] for (f, _), q in zip(frame_kpt.tolist(), gt_point)]]
    err = (target - gt_xy).norm(dim=-1)
    assert float(err.median()) < 0.5 and not target.requires_grad
    assert float(weight.min()) >= 0 and float(weight.max()) <= 1.0


def test_degenerate_window_fails_with_reason(syn):
    win = synthetic_window(syn)
    few = [type(pm).create(pm.i, pm.j, pm.matches[:3]) for pm in win.pairs]
    rec = reconstruct_window(win.keypoints(), few, syn.problem.K[0].numpy())
    assert not rec.success and rec.reason.startswith("init: too few tracks") and rec.ba is None
    frame_kpt, target, weight = rec.keypoint_targets()
    assert frame_kpt.shape == (0, 2) and target.shape == (0, 2) and weight.shape == (0,)


def test_pure_rotation_window_fails(syn):
    # Every frame seen from the first camera's centre: rotate the rays, no baseline.
    p = syn.problem
    K = p.K[0]
    R = syn.gt_poses[:, :3, :3]
    X = syn.gt_points[p.obs_point]
    C0 = -(syn.gt_poses[0, :3, :3].T @ syn.gt_poses[0, :3, 3])
    cam = (R[p.obs_frame] @ (X - C0)[..., None])[..., 0]
    ok = cam[:, 2] > 0.1
    xy = (K @ cam[..., None])[..., 0]
    xy = (xy[:, :2] / xy[:, 2:])[ok]
    from imatch_s2ld.ba import window_from_observations

    win = window_from_observations(p.obs_frame[ok].numpy(), p.obs_point[ok].numpy(), xy.numpy(), p.num_frames)
    rec = reconstruct_window(win.keypoints(), win.pairs, K.numpy())
    assert not rec.success and "pure rotation" in rec.reason


def test_section_overrides_are_accepted(syn):
    win = synthetic_window(syn)
    conf = {"init": {"min_tracks": 10}, "ba": {"max_iterations": 2, "robust_kernel": "huber"}}
    rec = reconstruct_window(win.keypoints(), win.pairs, syn.problem.K[0].numpy(), conf)
    assert rec.success and rec.ba.iterations <= 2


def test_config_is_strict(syn):
    win = synthetic_window(syn)
    with pytest.raises(InputError, match="unknown configuration key 'ba.robust'"):
        reconstruct_window(win.keypoints(), win.pairs, syn.problem.K[0].numpy(), {"ba": {"robust": "x"}})
    with pytest.raises(InputError, match="min_trakcs"):
        reconstruct_window(win.keypoints(), win.pairs, syn.problem.K[0].numpy(), {"init": {"min_trakcs": 3}})
