"""match_window: per-frame keypoints are shared by every pair, matches index them."""

from __future__ import annotations

import numpy as np
import torch

from helpers import panning_images
from imatch_s2ld.finetune.data import evenly_spaced, uint8_frames
from imatch_s2ld.finetune.window import match_window, match_window_reference, window_pairs
from imatch_s2ld.models import S2LD


def test_evenly_spaced():
    assert evenly_spaced(10, 3) == [0, 4, 9]  # first and last included (4.5 rounds to even)
    assert evenly_spaced(10, 1) == [0] and evenly_spaced(10, 0) == [0]  # at least one
    assert evenly_spaced(4, 12) == [0, 1, 2, 3]  # never more than there are


def test_uint8_frames_round_and_clip():
    images = torch.tensor([0.0, 0.5, 1.0, 1.2, -0.1]).reshape(1, 1, 1, 5)
    (gray,) = uint8_frames(images)
    assert gray.dtype == np.uint8 and gray.shape == (1, 5)
    assert gray.tolist() == [[0, 128, 255, 255, 0]]
    (rgb,) = uint8_frames(images.expand(1, 3, 1, 5))
    assert rgb.shape == (1, 5, 3) and rgb[0, :, 1].tolist() == [0, 128, 255, 255, 0]


def test_window_pairs():
    assert window_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    assert window_pairs(4, max_gap=1) == [(0, 1), (1, 2), (2, 3)]


def test_keypoints_are_shared_across_pairs(tiny_checkpoint):
    model = S2LD.from_checkpoint(tiny_checkpoint)
    model.coarse.threshold = 0.0  # random weights: keep every mutual nearest neighbour
    images = panning_images()
    model.train()
    wm = match_window(model, images, window_pairs(3))
    assert model.training  # mode restored
    assert wm.keypoints.num_frames == 3 and len(wm.pairs) == 3
    # Frame 1 appears in (0, 1) and (1, 2): the same keypoints either way (eval mode, per-image head).
    with torch.no_grad():
        out01 = model.eval()(images[0:1], images[1:2])
        out12 = model(images[1:2], images[2:3])
    torch.testing.assert_close(out01.kpts1[0], out12.kpts0[0])
    # match_window encodes each frame alone (batch 1), forward both in one batch: float rounding only
    np.testing.assert_allclose(wm.keypoints.xy[1], out01.kpts1[0].numpy(), atol=1e-4)
    assert sum(len(pm.matches) for pm in wm.pairs) > 0
    for pm in wm.pairs:
        assert pm.matches.shape[1] == 2
        assert (pm.matches[:, 0] < len(wm.keypoints.xy[pm.i])).all()
        assert (pm.matches[:, 1] < len(wm.keypoints.xy[pm.j])).all()


def test_reference_tracks_use_the_output_matches(tiny_checkpoint):
    """match_window_reference: frame 0's detected keypoints linked to the local-dense predictions
    (the matcher's output locations) of pairs (0, b); one point per match in frame b."""
    model = S2LD.from_checkpoint(tiny_checkpoint)
    model.coarse.threshold = 0.0
    images = panning_images()
    wm = match_window_reference(model, images)
    assert wm.keypoints.num_frames == 3 and [(pm.i, pm.j) for pm in wm.pairs] == [(0, 1), (0, 2)]
    with torch.no_grad():
        out = model.eval()(images[0:1], images[2:3])
    np.testing.assert_allclose(wm.keypoints.xy[0], out.kpts0[0].numpy())
    pm = wm.pairs[1]
    assert len(pm.matches) == len(wm.keypoints.xy[2]) == len(out.matches_i) > 0
    np.testing.assert_array_equal(pm.matches[:, 0], out.matches_i.numpy())
    np.testing.assert_array_equal(pm.matches[:, 1], np.arange(len(pm.matches)))
    np.testing.assert_allclose(wm.keypoints.xy[2], out.mkpts1.numpy(), rtol=1e-5, atol=1e-4)
