"""Matchers: registry, SIFT/ORB on a generated textured pair, LoFTR with local weights."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from helpers import H_TRUE, homography_error, textured_pair
from imatch_s2ld import load_matcher as top_level_load_matcher
from imatch_s2ld.errors import InputError
from imatch_s2ld.matchers import (
    Matcher,
    available_matchers,
    load_matcher,
    register_matcher,
    wants_grayscale,
)


@pytest.mark.parametrize("name", ["sift", "orb"])
def test_opencv_matchers_recover_homography(name):
    image0, image1 = textured_pair()
    matcher = load_matcher(name)
    assert isinstance(matcher, Matcher) and matcher.name == name and wants_grayscale(matcher)
    kpts0, kpts1, conf = matcher.match(image0, image1)
    assert kpts0.dtype == kpts1.dtype == conf.dtype == np.float32
    assert kpts0.shape == kpts1.shape == (len(conf), 2)
    assert len(conf) > 50 and np.all((conf >= 0) & (conf <= 1))
    proj = cv2.perspectiveTransform(kpts0[:, None].astype(np.float64), H_TRUE)[:, 0]
    assert np.mean(np.linalg.norm(proj - kpts1, axis=1) < 3) > 0.8
    assert homography_error(kpts0, kpts1) < 2.0
    # grayscale input gives the same kind of output
    k0g, _, _ = matcher.match(cv2.cvtColor(image0, cv2.COLOR_RGB2GRAY),
                              cv2.cvtColor(image1, cv2.COLOR_RGB2GRAY))
    assert len(k0g) > 50


def test_matchers_on_blank_images_return_empty():
    blank = np.full((120, 160), 128, np.uint8)
    for name in ("sift", "orb"):
        k0, k1, c = load_matcher(name).match(blank, blank)
        assert k0.shape == (0, 2) and k1.shape == (0, 2) and c.shape == (0,)


def test_registry():
    assert {"sift", "orb", "loftr"} <= set(available_matchers())
    with pytest.raises(InputError, match=r"unknown matcher 'nope'.*known: .*sift"):
        load_matcher("nope")
    with pytest.raises(InputError, match="takes no ':' argument"):
        load_matcher("sift:foo")
    assert top_level_load_matcher("sift", num_features=100).detector.getNFeatures() == 100

    class Dummy:
        name = "dummy"

        def match(self, image0, image1):
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32), np.zeros(0, np.float32)

    register_matcher("dummy-test", lambda arg, **conf: Dummy(), overwrite=True)
    assert load_matcher("dummy-test:anything").name == "dummy"
    with pytest.raises(ValueError, match="already registered"):
        register_matcher("dummy-test", lambda arg, **conf: Dummy())


def test_loftr_with_local_random_weights(tmp_path):
    from kornia.feature import LoFTR

    torch.manual_seed(0)
    state = LoFTR(pretrained=None).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"state_dict": {f"matcher.{k}": v for k, v in state.items()}}, tmp_path / "pl.ckpt")
    image0, image1 = textured_pair(size=(96, 72))
    for path in ("plain.pt", "pl.ckpt"):
        matcher = load_matcher(f"loftr:{tmp_path / path}")
        assert matcher.name == "loftr"
        k0, k1, c = matcher.match(image0, image1)
        assert k0.dtype == np.float32 and k0.shape == k1.shape == (len(c), 2)
        if len(c):
            assert k0[:, 0].max() < 96 and k0[:, 1].max() < 72


def test_loftr_errors(tmp_path):
    with pytest.raises(InputError, match=r"missing\.ckpt: LoFTR weights not found"):
        load_matcher(f"loftr:{tmp_path / 'missing.ckpt'}")
    with pytest.raises(InputError, match="loftr needs weights"):
        load_matcher("loftr")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(InputError, match=r"bad\.pt: not a LoFTR state dict"):
        load_matcher(f"loftr:{tmp_path / 'bad.pt'}")
