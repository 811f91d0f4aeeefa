"""Relative-pose evaluation: scoring, failures, caching, and the CLI end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import pose, rotation
from imatch_s2ld.data import PairSample, write_pairs_file
from imatch_s2ld.eval import ScoreConfig, evaluate, score_pair, summarize
from imatch_s2ld.eval.cli import main
from imatch_s2ld.eval.score import intrinsics_for_size
from imatch_s2ld.matchers import load_matcher, register_matcher

SUMMARY_KEYS = {
    "auc@5", "auc@10", "auc@20", "precision", "median_matches", "runtime_s_per_pair", "num_pairs",
    "num_failures", "protocol",
}
W, H = 320, 240
K = np.array([[300.0, 0, 159.5], [0, 300.0, 119.5], [0, 0, 1]])
DEPTHS = (4.0, 2.5)  # left / right half of view 0: two fronto-parallel planes


def _gt_pose() -> np.ndarray:
    return pose(rotation("y", -6.0), [-0.4, 0.05, 0.1])


def _plane_homography(T: np.ndarray, depth: float) -> np.ndarray:
    """Pixels of view 0 -> view 1 for the fronto-parallel plane z = depth of camera 0."""
    n = np.array([0.0, 0.0, 1.0])
    return K @ (T[:3, :3] + np.outer(T[:3, 3], n) / depth) @ np.linalg.inv(K)


def _render_view1(image0: np.ndarray) -> np.ndarray:
    """Warp each half of view 0 with its plane's homography (no occlusion handling)."""
    out = np.zeros_like(image0)
    for half, depth in enumerate(DEPTHS):
        mask = np.zeros(image0.shape[:2], np.uint8)
        mask[:, half * W // 2:(half + 1) * W // 2] = 255
        Hd = _plane_homography(_gt_pose(), depth)
        warped = cv2.warpPerspective(image0, Hd, (W, H))
        warped_mask = cv2.warpPerspective(mask, Hd, (W, H), flags=cv2.INTER_NEAREST)
        out[warped_mask > 0] = warped[warped_mask > 0]
    return out


def _scene(tmp_path: Path, blank_pair: bool = True) -> Path:
    """images/{a,b}.png: a textured plane seen from two poses; {c,d}.png: blank."""
    rng = np.random.default_rng(0)
    big = cv2.resize(rng.integers(0, 256, (H // 4, W // 4, 3)).astype(np.uint8), (W, H),
                     interpolation=cv2.INTER_CUBIC)
    image0 = cv2.GaussianBlur(
        cv2.addWeighted(big, 0.7, rng.integers(0, 256, (H, W, 3)).astype(np.uint8), 0.3, 0),
        (3, 3), 0.8)
    image1 = _render_view1(image0)
    images = tmp_path / "images"
    images.mkdir(parents=True)
    cv2.imwrite(str(images / "a.png"), image0)
    cv2.imwrite(str(images / "b.png"), image1)
    samples = [PairSample("a.png", "b.png", Path(), Path(), K, K, _gt_pose())]
    if blank_pair:
        for name in ("c.png", "d.png"):
            cv2.imwrite(str(images / name), np.full((H, W, 3), 90, np.uint8))
        samples.append(PairSample("c.png", "d.png", Path(), Path(), K, K, _gt_pose()))
    return write_pairs_file(tmp_path / "pairs_with_gt.txt", samples)


def test_cli_end_to_end(tmp_path, capsys):
    pairs = _scene(tmp_path)
    out = tmp_path / "out"
    code = main(["--dataset", "pairs", "--pairs", str(pairs), "--images", str(tmp_path / "images"),
                 "--matcher", "sift", "--out", str(out), "--no-progress"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["num_pairs"] == 2 and summary["num_failures"] == 1
    proto = summary["protocol"]
    assert proto["estimator"] == "ransac" and proto["threshold_px"] == 0.5
    assert proto["confidence"] == 0.99999 and proto["epipolar_threshold"] == 5e-4
    assert proto["max_iters"] == 1000
    assert proto["matcher"] == "sift" and proto["resize"] == "none"
    assert {"opencv", "pycolmap"} <= set(proto["versions"])
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert [r["name0"] for r in rows] == ["a.png", "c.png"]
    good, blank = rows
    assert int(good["n_matches"]) > 50 and float(good["precision"]) > 0.9
    assert float(good["err_pose"]) < 5.0
    assert blank["n_matches"] == "0" and blank["err_pose"] == "inf" and blank["failure"]
    per_pair = json.loads((out / "results.json").read_text())
    assert per_pair[1]["err_pose"] is None  # inf -> null in strict JSON
    assert (out / "auc_curve.png").stat().st_size > 0
    assert len(list((out / "viz").glob("*.png"))) == 2
    stdout = capsys.readouterr().out
    for needle in ("auc@5", "auc@20", "estimator_description", "opencv-RANSAC 0.5px", "threshold_px"):
        assert needle in stdout


def test_evaluate_resize_keeps_original_pixel_frame(tmp_path):
    pairs = _scene(tmp_path, blank_pair=False)
    summary = evaluate({"dataset": "pairs", "pairs": str(pairs), "out": str(tmp_path / "o"),
                        "resize": "200", "viz": 0, "progress": False})
    assert summary["protocol"]["resize"] == 200
    assert summary["precision"] > 90.0  # precision in percent, epipolar check in original pixels
    assert summary["auc@20"] > 50.0


class _CountingMatcher:
    name = "counting"
    grayscale = True
    calls = 0

    def __init__(self):
        self.sift = load_matcher("sift")

    def match(self, image0, image1):
        type(self).calls += 1
        return self.sift.match(image0, image1)


def test_prediction_cache_is_reused(tmp_path):
    register_matcher("counting-test", lambda arg, **conf: _CountingMatcher(), overwrite=True)
    pairs = _scene(tmp_path)
    conf = {"pairs": str(pairs), "matcher": "counting-test", "out": str(tmp_path / "o"),
            "viz": 0, "progress": False}
    first = evaluate(conf)
    assert _CountingMatcher.calls == 2
    second = evaluate(conf)
    assert _CountingMatcher.calls == 2  # nothing recomputed
    assert second["auc@20"] == first["auc@20"] and second["precision"] == first["precision"]
    evaluate({**conf, "estimator": "magsac"})  # scoring settings do not invalidate the cache
    assert _CountingMatcher.calls == 2
    evaluate({**conf, "resize": 256})  # other resize -> recomputed
    assert _CountingMatcher.calls == 4
    evaluate({**conf, "resize": 256, "overwrite": True})
    assert _CountingMatcher.calls == 6


def test_too_few_matches_and_failed_estimation_are_failures(monkeypatch):
    sample = PairSample("a", "b", Path("a"), Path("b"), K, K, _gt_pose())
    conf = ScoreConfig()
    few = np.array([[10.0, 10.0], [20.0, 30.0], [40.0, 50.0]])
    row = score_pair(conf, sample, few, few + 1, K, K)
    assert row["err_pose"] == np.inf and row["n_matches"] == 3 and "too few" in row["failure"]
    many = np.random.default_rng(0).uniform(0, 300, (20, 2))
    monkeypatch.setattr("imatch_s2ld.eval.score.estimate_relative_pose", lambda *a, **k: None)
    row = score_pair(conf, sample, many, many + 1, K, K)
    assert row["err_pose"] == row["err_R"] == np.inf and row["failure"] == "estimation failed"
    empty = np.zeros((0, 2))
    row = score_pair(conf, sample, empty, empty, K, K)
    assert row["precision"] == 0.0 and row["err_pose"] == np.inf
    summary = summarize([{**row, "time_s": 0.1}], conf)
    assert summary["auc@5"] == 0.0 and summary["num_failures"] == 1


def test_precision_uses_epipolar_geometry():
    T = _gt_pose()
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.uniform(-1, 1, 200), rng.uniform(-1, 1, 200), rng.uniform(3, 6, 200)])
    X1 = X @ T[:3, :3].T + T[:3, 3]
    p0 = (X @ K.T)[:, :2] / X[:, 2:]
    p1 = (X1 @ K.T)[:, :2] / X1[:, 2:]
    sample = PairSample("a", "b", Path("a"), Path("b"), K, K, T)
    row = score_pair(ScoreConfig(), sample, p0, p1, K, K)
    assert row["precision"] == 1.0 and row["err_pose"] < 0.5
    row = score_pair(ScoreConfig(), sample, p0, p1 + [0, 40.0], K, K)
    assert row["precision"] < 0.2


def test_intrinsics_for_other_image_size():
    K2 = intrinsics_for_size(K, (320, 240), (640, 480))
    np.testing.assert_allclose(K2, [[600, 0, 319.5], [0, 600, 239.5], [0, 0, 1]])
    assert intrinsics_for_size(K, None, (640, 480)) is K


def _run(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def test_cli_bad_inputs_exit_2_with_one_line(tmp_path, capsys):
    pairs = _scene(tmp_path, blank_pair=False)
    out = str(tmp_path / "out")
    bad = tmp_path / "bad.txt"
    bad.write_text(pairs.read_text() + "a.png b.png\n")
    (tmp_path / "idx").mkdir()
    np.savez(tmp_path / "idx" / "test.npz", name=np.array([[1, 0, 1, 2]]),
             rel_pose=np.eye(4)[:3].reshape(1, 12))
    np.savez(tmp_path / "idx" / "intrinsics.npz", scene0009_00=K)
    for f in (1, 2):
        p = tmp_path / "scannet" / "scene0001_00" / "color" / f"{f}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(p), np.zeros((8, 8), np.uint8))
    cases = [
        (["--dataset", "nope", "--out", out], "--dataset: unknown dataset 'nope'"),
        (["--pairs", str(tmp_path / "missing.txt"), "--out", out], "missing.txt: pairs file not found"),
        (["--pairs", str(bad), "--out", out], f"{bad}:2: only image names"),
        (["--dataset", "scannet1500", "--index", str(tmp_path / "idx"), "--root",
          str(tmp_path / "scannet"), "--out", out], "intrinsics.npz: no intrinsics for scene0001_00"),
        (["--pairs", str(pairs), "--matcher", "magic", "--out", out], "unknown matcher 'magic'"),
        (["--pairs", str(pairs), "--estimator", "lmeds", "--out", out], "--estimator"),
        (["--pairs", str(pairs), "--resize", "huge", "--out", out], "--resize"),
        (["--pairs", str(pairs)], "--out"),
        (["--pairs", str(pairs), "--out", out, "--max-pairs", "x"], "--max-pairs"),
        (["--pairs", str(pairs), "--out", out, "--max-pairs", "0"], "--max-pairs"),
        (["--pairs", str(pairs), "--out", out, "--threshold", "-1"], "--threshold"),
        (["--pairs", str(pairs), "--out", out, "--confidence", "1.5"], "--confidence"),
    ]
    for argv, needle in cases:
        code, err = _run(argv, capsys)
        assert code == 2, argv
        assert needle in err, (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err


@pytest.mark.parametrize("estimator", ["magsac", "pycolmap"])
def test_other_estimators(tmp_path, estimator):
    pairs = _scene(tmp_path, blank_pair=False)
    summary = evaluate({"pairs": str(pairs), "out": str(tmp_path / "o"), "estimator": estimator,
                        "viz": 0, "progress": False})
    assert summary["protocol"]["threshold_px"] == 1.0
    assert estimator.upper()[:5] in summary["protocol"]["estimator_description"].upper()
    assert summary["num_pairs"] == 1


SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "megadepth_test_1500_index").is_dir(), reason="no shared data")
def test_megadepth1500_end_to_end_with_fake_images(tmp_path):
    from imatch_s2ld.data.megadepth import index_files
    from imatch_s2ld.data.scene_info import load_scene_info

    info = load_scene_info(index_files(SHARED / "megadepth_test_1500_index")[0])
    for p in info.pairs[:2]:
        for i in (p.i, p.j):
            path = tmp_path / "root" / info.image_paths[i]
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), np.full((60, 80, 3), 100, np.uint8))
    summary = evaluate({"dataset": "megadepth1500", "root": str(tmp_path / "root"),
                        "max_pairs": 2, "out": str(tmp_path / "o"), "progress": False})
    assert summary["num_pairs"] == 2 and summary["num_failures"] == 2
    assert summary["auc@5"] == 0.0
    assert summary["protocol"]["dataset"] == "megadepth1500"


def test_cli_help_returns_zero(capsys):
    assert main(["--help"]) == 0
    assert "--dataset" in capsys.readouterr().out
