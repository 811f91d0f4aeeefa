"""Supervision from depth and the matching losses: known answers, empty cases, gradients, dtypes."""

from __future__ import annotations

import math

import pytest
import torch

from imatch_s2ld.geometry import invert_pose, project, transform_points, unproject
from imatch_s2ld.losses.matching import (
    bilinear_cell_targets,
    fine_loss,
    focal_loss,
    keypoint_loss,
    uncertainty_nll,
    window_classification_loss,
)
from imatch_s2ld.losses.supervision import keypoint_correspondences

H, W = 48, 64


def plane_pair():
    """A fronto-parallel plane at z = 4 seen by camera 0 and by camera 1 shifted 0.2 along x."""
    K = torch.tensor([[50.0, 0, 31.5], [0, 50.0, 23.5], [0, 0, 1]])
    T01 = torch.eye(4)
    T01[0, 3] = -0.2  # camera 1 is 0.2 to the right: X1 = X0 - (0.2, 0, 0)
    depth = torch.full((1, H, W), 4.0)
    return K[None], T01[None], invert_pose(T01)[None], depth, depth.clone()


def test_keypoint_correspondences_mutual_nearest():
    K, T01, T10, d0, d1 = plane_pair()
    kpts0 = torch.tensor([[[10.0, 10.0], [30.0, 20.0], [50.0, 40.0]]])
    # Image 1 sees the plane shifted by f * 0.2 / 4 = 2.5 px to the left.
    kpts1 = torch.tensor([[[7.5, 10.0], [27.0, 20.5], [5.0, 40.0], [40.0, 5.0]]])
    gt = keypoint_correspondences(kpts0, kpts1, d0, d1, T01, T10, K, K, radius_px=2.0)
    assert gt.matrix.shape == (1, 3, 4) and gt.matrix.dtype == torch.bool
    assert torch.allclose(gt.warped0[0, 0], torch.tensor([7.5, 10.0]), atol=1e-4)
    expected = torch.zeros(1, 3, 4, dtype=torch.bool)
    expected[0, 0, 0] = True  # exact
    expected[0, 1, 1] = True  # 0.5 px off, within the radius
    assert torch.equal(gt.matrix, expected)  # keypoint 2 has no partner within 2 px
    assert gt.dist0[0, 0] < 1e-4 and abs(gt.dist0[0, 1] - math.hypot(0.5, 0.5)) < 1e-4
    # Padded keypoints never match.
    gt2 = keypoint_correspondences(kpts0, kpts1, d0, d1, T01, T10, K, K, radius_px=2.0,
                                   kpts_valid0=torch.tensor([[False, True, True]]))
    assert not gt2.matrix[0, 0].any() and gt2.matrix[0, 1, 1]


def test_focal_loss_known_values_and_empty_classes():
    scores = torch.tensor([[[0.5, 0.25]]])
    target = torch.tensor([[[True, False]]])
    loss = focal_loss(scores, target, alpha=0.25, gamma=2.0)
    expected = 0.25 * 0.25 * math.log(2) + 0.75 * 0.0625 * -math.log(0.75)
    assert abs(loss.item() - expected) < 1e-6
    no_pos = focal_loss(scores.requires_grad_(True), torch.zeros_like(target))
    no_pos.backward()
    assert torch.isfinite(scores.grad).all()
    # Better scores give lower loss.
    good = focal_loss(torch.tensor([[[0.9, 0.05]]]), target)
    assert good < loss


def test_focal_loss_bf16_scores_are_finite():
    s = torch.softmax(torch.randn(2, 8, 9), -1).to(torch.bfloat16).requires_grad_(True)
    t = torch.zeros(2, 8, 9, dtype=torch.bool)
    t[:, 0, 0] = True
    loss = focal_loss(s, t)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad.float()).all()


def test_fine_loss_weights_and_validity():
    pred = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    target = torch.zeros(2, 2)
    same_std = fine_loss(pred, torch.ones(2), target)
    assert abs(same_std.item() - 2.5) < 1e-6  # mean of 1 and 4
    # Inverse variance: the confident (std 0.5) match dominates.
    weighted = fine_loss(pred, torch.tensor([0.5, 1.0]), target)
    w = torch.tensor([4.0, 1.0])
    w = w / w.mean()
    assert abs(weighted.item() - (w * torch.tensor([1.0, 4.0])).mean().item()) < 1e-6
    assert fine_loss(pred, torch.ones(2), target, valid=torch.tensor([False, False])).item() == 0.0
    assert abs(fine_loss(pred, torch.ones(2), target, max_error_px=1.5).item() - 1.0) < 1e-6
    weighted.backward()
    assert pred.grad.abs().sum() > 0
    std = torch.ones(2, requires_grad=True)
    nll = uncertainty_nll(pred, std, target)
    nll.backward()
    assert std.grad is not None and pred.grad is not None


def test_keypoint_loss_moves_detections_onto_the_same_point():
    K, T01, T10, d0, d1 = plane_pair()
    kpts0 = torch.tensor([[[10.0, 10.0], [30.0, 20.0]]], requires_grad=True)
    kpts1 = torch.tensor([[[8.5, 10.0], [27.5, 20.0]]], requires_grad=True)  # first one 1 px off
    gt = keypoint_correspondences(kpts0, kpts1, d0, d1, T01, T10, K, K, radius_px=3.0)
    logits0 = torch.zeros(1, 2, requires_grad=True)
    logits1 = torch.zeros(1, 2, requires_grad=True)
    rep, loc = keypoint_loss(logits0, logits1, kpts0, kpts1, gt.matrix, gt.warped0, gt.warped1,
                             gt.valid0, gt.valid1)
    (rep + loc).backward()
    assert loc.item() > 0 and kpts1.grad[0, 0, 0] > 0  # moving kpt1[0] left (to 7.5) lowers the loss
    assert logits0.grad[0].lt(0).all()  # both have partners: raise their scores
    # No pairs: zero localisation with a defined gradient.
    rep2, loc2 = keypoint_loss(logits0, logits1, kpts0, kpts1, torch.zeros_like(gt.matrix), gt.warped0,
                               gt.warped1, gt.valid0, gt.valid1)
    assert loc2.item() == 0.0 and rep2.requires_grad


def test_supervision_agrees_with_projection():
    K, T01, T10, d0, d1 = plane_pair()
    kpts0 = torch.rand(1, 20, 2) * torch.tensor([W - 1.0, H - 1.0])
    kpts0 = kpts0.round()  # depth is sampled at the nearest pixel
    gt = keypoint_correspondences(kpts0, kpts0, d0, d1, T01, T10, K, K)
    X = unproject(kpts0, torch.full((1, 20), 4.0), K)
    expected = project(transform_points(T01, X), K)
    assert torch.allclose(gt.warped0[gt.valid0], expected[gt.valid0], atol=1e-4)


# ------------------------------------------------------------ S2DNet: correspondence maps as classification
def test_bilinear_cell_targets_spread_over_the_four_nearest_cells():
    t = bilinear_cell_targets(torch.tensor([[1.25, 2.5], [0.0, 0.0], [4.0, 2.0], [-0.5, 1.0]]), size=5)
    assert t.shape == (4, 25)
    grid = t[0].view(5, 5)  # rows = y, columns = x
    expected = {(2, 1): 0.375, (2, 2): 0.125, (3, 1): 0.375, (3, 2): 0.125}
    for (y, x), w in expected.items():
        assert float(grid[y, x]) == pytest.approx(w)
    assert float(t[0].sum()) == pytest.approx(1.0)
    assert float(t[1, 0]) == 1.0 and float(t[2].view(5, 5)[2, 4]) == 1.0  # on a cell: all of it there
    assert float(t[3].sum()) == pytest.approx(0.5)  # half outside the window: that half is dropped
    with pytest.raises(ValueError, match="offset must be"):
        bilinear_cell_targets(torch.zeros(3), 5)


def test_window_classification_loss_is_minimal_at_the_target_and_trains_the_logits():
    target = bilinear_cell_targets(torch.tensor([[1.25, 2.5], [3.0, 1.0]]), size=5)
    entropy = -(target * target.clamp_min(1e-12).log()).sum(-1).mean()
    exact = target.clamp_min(1e-9).log()
    assert float(window_classification_loss(exact, target)) == pytest.approx(float(entropy), abs=1e-4)
    logits = torch.randn(2, 25, requires_grad=True)
    loss = window_classification_loss(logits, target)
    assert torch.isfinite(loss) and float(loss) > float(entropy)
    loss.backward()
    assert float(logits.grad.abs().sum()) > 0
    empty = window_classification_loss(logits, target, torch.zeros(2, dtype=torch.bool))
    assert float(empty) == 0 and empty.requires_grad
