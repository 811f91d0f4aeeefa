"""Dataset readers: pairs files, COLMAP models, MegaDepth-1500 and ScanNet-1500 indices."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from helpers import pose, raises_one_line, rotation
from imatch_s2ld.data import (
    DatasetConfig,
    PairSample,
    find_pairs_files,
    load_pairs,
    read_colmap_pairs,
    read_megadepth_pairs,
    read_pairs_file,
    read_scannet_pairs,
    write_pairs_file,
)
from imatch_s2ld.data.colmap import ColmapPairsConfig
from imatch_s2ld.data.scene_info import load_scene_info
from imatch_s2ld.errors import InputError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not available")

K = np.array([[500.0, 0, 319.5], [0, 510.0, 239.5], [0, 0, 1]])


def _pose(angle_deg: float = 10.0, t=(0.5, 0.0, 0.1)) -> np.ndarray:
    """A camera turned ``angle_deg`` about y and moved by ``t``."""
    return pose(rotation("y", angle_deg), t)


def _write_image(path: Path, size=(64, 48)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((size[1], size[0], 3), 127, np.uint8))
    return path


def _pairs_dir(tmp_path: Path, n: int = 3) -> Path:
    images = tmp_path / "images"
    for i in range(n + 1):
        _write_image(images / f"{i:04d}.png")
    samples = [
        PairSample(f"{i:04d}.png", f"{i + 1:04d}.png", Path(), Path(), K, K, _pose(5.0 * (i + 1)))
        for i in range(n)
    ]
    return write_pairs_file(tmp_path / "pairs_with_gt.txt", samples)


def _good_line() -> str:
    nums = np.concatenate([K.ravel(), K.ravel(), _pose().ravel()])
    return "0000.png 0001.png 0 0 " + " ".join(repr(float(v)) for v in nums)


# ------------------------------------------------------------------ pairs_with_gt.txt


def test_pairs_roundtrip(tmp_path):
    path = _pairs_dir(tmp_path)
    samples = read_pairs_file(path)  # images default to <dir>/images
    assert len(samples) == 3
    s = samples[1]
    assert (s.name0, s.name1) == ("0001.png", "0002.png")
    assert s.path0 == tmp_path / "images" / "0001.png"
    np.testing.assert_allclose(s.K0, K)
    np.testing.assert_allclose(s.T_0to1, _pose(10.0))
    assert s.scene == tmp_path.name and s.rot0 == s.rot1 == 0
    assert len(read_pairs_file(path, max_pairs=2)) == 2
    assert len({x.key for x in samples}) == 3


def test_pairs_comments_and_blank_lines(tmp_path):
    _pairs_dir(tmp_path)
    path = tmp_path / "p.txt"
    path.write_text(f"# header\n\n{_good_line()}  # trailing\n")
    assert len(read_pairs_file(path, tmp_path / "images")) == 1


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("0000.png 0001.png", "no ground truth"),
        ("0000.png 0001.png 0 0 1 2 3", "expected 38 fields"),
        (_good_line().replace(" 500.0 ", " abc ", 1), "non-numeric"),
        (_good_line().replace("0000.png 0001.png 0 0", "0000.png 0001.png 1 0"), "EXIF rotation"),
        (_good_line().replace(" 500.0 ", " -500.0 ", 1), "K0"),
    ],
)
def test_pairs_malformed_line_names_file_and_line(tmp_path, line, needle):
    _pairs_dir(tmp_path)
    path = tmp_path / "bad.txt"
    path.write_text(f"{_good_line()}\n{line}\n")
    assert f"{path}:2:" in raises_one_line(read_pairs_file, path, tmp_path / "images", match=needle)


def test_pairs_bad_pose(tmp_path):
    _pairs_dir(tmp_path)
    nums = np.concatenate([K.ravel(), K.ravel(), (2 * _pose()).ravel()])
    path = tmp_path / "bad.txt"
    path.write_text("0000.png 0001.png 0 0 " + " ".join(map(str, nums)) + "\n")
    with pytest.raises(InputError, match=rf"{path}:1: T_0to1"):
        read_pairs_file(path, tmp_path / "images")


def test_pairs_missing_image_and_file(tmp_path):
    path = _pairs_dir(tmp_path)
    (tmp_path / "images" / "0002.png").unlink()
    with pytest.raises(InputError, match=r"0002\.png: image not found \(listed in .*:2\)"):
        read_pairs_file(path)
    with pytest.raises(InputError, match="pairs file not found"):
        read_pairs_file(tmp_path / "nope.txt")
    with pytest.raises(InputError, match="images directory not found"):
        read_pairs_file(path, tmp_path / "no_images")


def test_synthetic_dataset_layouts(tmp_path):
    one = _pairs_dir(tmp_path / "single")
    assert find_pairs_files(tmp_path / "single") == [one]
    a, b = _pairs_dir(tmp_path / "multi" / "a"), _pairs_dir(tmp_path / "multi" / "b")
    assert find_pairs_files(tmp_path / "multi") == [a, b]
    samples = load_pairs(DatasetConfig(name="synthetic", data=str(tmp_path / "multi"), max_pairs=4))
    assert [s.scene for s in samples] == ["a", "a", "a", "b"]
    _pairs_dir(tmp_path / "gen" / "video" / "s1" / "eval")
    _pairs_dir(tmp_path / "gen" / "video" / "s2" / "eval")
    gen = load_pairs(DatasetConfig(name="synthetic", data=str(tmp_path / "gen")))
    assert len({s.key for s in gen}) == 6 and gen[0].scene == "video/s1/eval"
    assert all(s.dataset == "synthetic" for s in samples)
    with pytest.raises(InputError, match="no pairs_with_gt.txt"):
        find_pairs_files(tmp_path / "multi" / "a" / "images")


def test_load_pairs_errors(tmp_path):
    with pytest.raises(InputError, match="unknown dataset 'foo'"):
        load_pairs(DatasetConfig(name="foo"))
    with pytest.raises(InputError, match="--pairs is required"):
        load_pairs(DatasetConfig(name="pairs"))
    with pytest.raises(InputError, match="--root is required"):
        load_pairs(DatasetConfig(name="megadepth1500", index=str(tmp_path)))


# ------------------------------------------------------------------ COLMAP


def _write_colmap_text(model: Path, camera_line: str) -> None:
    """3 images; images 1-2 share 3 points, image 3 shares 1 point with image 1."""
    model.mkdir(parents=True)
    (model / "cameras.txt").write_text(camera_line + "\n")
    lines, obs = [], {1: [], 2: [], 3: []}
    tracks = {1: [1, 2, 3], 2: [1, 2], 3: [1, 2], 4: [1, 3]}
    for pid, imgs in tracks.items():
        for im in imgs:
            obs[im].append(pid)
    for im, angle in ((1, 0.0), (2, 8.0), (3, 16.0)):
        T = _pose(angle, (0.3 * im, 0, 0))
        q = _quat(T[:3, :3])
        pts = " ".join(f"{10.0 * k} {5.0 * k} {pid}" for k, pid in enumerate(obs[im]))
        lines += [f"{im} {' '.join(map(str, q))} {' '.join(map(str, T[:3, 3]))} 1 {im:04d}.png", pts]
    (model / "images.txt").write_text("\n".join(lines) + "\n")
    pts3d = []
    for pid, imgs in tracks.items():
        track = " ".join(f"{im} {obs[im].index(pid)}" for im in imgs)
        pts3d.append(f"{pid} 0 0 {5 + pid} 128 128 128 0.5 {track}")
    (model / "points3D.txt").write_text("\n".join(pts3d) + "\n")


def _quat(R: np.ndarray) -> tuple[float, float, float, float]:
    w = np.sqrt(max(0.0, 1 + np.trace(R))) / 2
    return (w, (R[2, 1] - R[1, 2]) / (4 * w), (R[0, 2] - R[2, 0]) / (4 * w),
            (R[1, 0] - R[0, 1]) / (4 * w))


def test_colmap_covisibility_and_intrinsics(tmp_path):
    _write_colmap_text(tmp_path / "sparse", "1 PINHOLE 640 480 500 510 320 240")
    for i in (1, 2, 3):
        _write_image(tmp_path / "images" / f"{i:04d}.png")
    with pytest.raises(InputError, match="no image pair passes"):  # default min_covisible=100
        read_colmap_pairs(tmp_path / "sparse", tmp_path / "images")
    with_min3 = read_colmap_pairs(
        tmp_path / "sparse", tmp_path / "images", ColmapPairsConfig(min_covisible=3)
    )
    assert [(s.name0, s.name1) for s in with_min3] == [("0001.png", "0002.png")]
    np.testing.assert_allclose(with_min3[0].K0, K)  # principal point shifted by -0.5
    expected = _pose(8.0, (0.6, 0, 0)) @ np.linalg.inv(_pose(0.0, (0.3, 0, 0)))
    np.testing.assert_allclose(with_min3[0].T_0to1, expected, atol=1e-9)
    one = read_colmap_pairs(
        tmp_path / "sparse", tmp_path / "images", ColmapPairsConfig(min_covisible=1)
    )
    assert len(one) == 3


def test_colmap_rejects_distortion_and_models(tmp_path):
    _write_colmap_text(tmp_path / "a", "1 OPENCV 640 480 500 510 320 240 0.1 0 0 0")
    _write_colmap_text(tmp_path / "b", "1 OPENCV_FISHEYE 640 480 500 510 320 240 0 0 0 0")
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="non-zero distortion"):
        read_colmap_pairs(tmp_path / "a", tmp_path / "images")
    with pytest.raises(InputError, match="OPENCV_FISHEYE is not supported"):
        read_colmap_pairs(tmp_path / "b", tmp_path / "images")
    with pytest.raises(InputError, match="--model"):
        read_colmap_pairs(tmp_path / "c", tmp_path / "images")


def test_colmap_missing_image(tmp_path):
    _write_colmap_text(tmp_path / "sparse", "1 SIMPLE_PINHOLE 640 480 500 320 240")
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match=r"0001\.png: image not found"):
        load_pairs(DatasetConfig(name="colmap", model=str(tmp_path / "sparse"), min_covisible=1))


@needs_shared
def test_colmap_strecha_view_angle_matches_pairs_file():
    scene = SHARED / "strecha" / "fountain-P11"
    from_model = read_colmap_pairs(scene / "sparse", scene / "images")
    from_file = read_pairs_file(scene / "pairs_with_gt.txt")
    assert [(s.name0, s.name1) for s in from_model] == [(s.name0, s.name1) for s in from_file]
    for a, b in zip(from_model, from_file):
        np.testing.assert_allclose(a.T_0to1, b.T_0to1, atol=1e-6)
        # pairs_with_gt.txt keeps the COLMAP principal point; the reader shifts it by -0.5.
        np.testing.assert_allclose(a.K0[:2, 2], b.K0[:2, 2] - 0.5, atol=1e-6)


# ------------------------------------------------------------------ MegaDepth-1500


@needs_shared
def test_megadepth_real_index(tmp_path):
    index = SHARED / "megadepth_test_1500_index"
    first = load_scene_info(index / "0022_0.1_0.3.npz")  # first listed index
    for p in first.pairs[:3]:
        for i in (p.i, p.j):
            _write_image(tmp_path / first.image_paths[i])
    samples = read_megadepth_pairs(index, tmp_path, max_pairs=3)
    assert len(samples) == 3
    p, s = first.pairs[0], samples[0]
    assert s.scene == "0022_0.1_0.3" and s.path0 == tmp_path / first.image_paths[p.i]
    np.testing.assert_allclose(s.K0, first.intrinsics[p.i])
    np.testing.assert_allclose(s.T_0to1, first.poses[p.j] @ np.linalg.inv(first.poses[p.i]))
    # One more pair: its images are missing -> the first missing file and the root are named.
    p4 = first.pairs[3]
    missing = [first.image_paths[i] for i in (p4.i, p4.j) if not (tmp_path / first.image_paths[i]).exists()]
    with pytest.raises(InputError) as err:
        read_megadepth_pairs(index, tmp_path, max_pairs=4)
    assert str(tmp_path / missing[0]) in str(err.value) and f"root {tmp_path}" in str(err.value)
    with pytest.raises(InputError, match="MegaDepth root not found"):
        read_megadepth_pairs(index, tmp_path / "nope")


def test_megadepth_list_names_missing_index(tmp_path):
    (tmp_path / "megadepth_test_1500.txt").write_text("0015_0.1_0.3\n")
    with pytest.raises(InputError, match=r"megadepth_test_1500.txt:1: index .* not found"):
        read_megadepth_pairs(tmp_path, tmp_path)


# ------------------------------------------------------------------ ScanNet-1500


@needs_shared
def test_scannet_real_index(tmp_path):
    index = SHARED / "scannet_test_1500_index"
    test = np.load(index / "test.npz")
    scene_id, sub, f0, f1 = test["name"][0]
    _write_image(tmp_path / f"scene{scene_id:04d}_{sub:02d}" / "color" / f"{f0}.jpg")
    _write_image(tmp_path / f"scene{scene_id:04d}_{sub:02d}" / "color" / f"{f1}.jpg")
    (s,) = read_scannet_pairs(index, tmp_path, max_pairs=1)
    assert s.name0 == f"scene{scene_id:04d}_{sub:02d}/color/{f0}.jpg"
    np.testing.assert_allclose(s.T_0to1[:3].ravel(), test["rel_pose"][0])
    np.testing.assert_allclose(s.K0, np.load(index / "intrinsics.npz")[s.scene])
    assert s.image_size0 == (640, 480)
    with pytest.raises(InputError, match=r"ScanNet image not found \(root "):
        read_scannet_pairs(index, tmp_path, max_pairs=2)


def test_scannet_missing_intrinsics(tmp_path):
    np.savez(tmp_path / "test.npz", name=np.array([[1, 0, 5, 10]]), rel_pose=np.eye(4)[:3].reshape(1, 12))
    np.savez(tmp_path / "intrinsics.npz", scene0002_00=K)
    for f in (5, 10):
        _write_image(tmp_path / "root" / "scene0001_00" / "color" / f"{f}.jpg")
    with pytest.raises(InputError, match=r"intrinsics.npz: no intrinsics for scene0001_00"):
        read_scannet_pairs(tmp_path, tmp_path / "root")
    np.savez(tmp_path / "intrinsics.npz", scene0001_00=K)
    assert len(read_scannet_pairs(tmp_path, tmp_path / "root")) == 1
