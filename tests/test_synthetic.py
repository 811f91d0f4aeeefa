"""Tests of the synthetic scene generator (small sizes: the whole file runs in well under 60 s)."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import cv2
import h5py
import numpy as np
import pycolmap
import pytest
import torch

from imatch_s2ld.data.scene_info import load_scene_info
from imatch_s2ld.errors import InputError
from imatch_s2ld.synthetic import (
    Domain,
    Renderer,
    build_scene,
    generate,
    intrinsics,
    look_at,
    main,
    make_texture,
    resolve_config,
    sample_wide_views,
    world_points,
)
from imatch_s2ld.synthetic.config import PRESETS
from imatch_s2ld.synthetic.overlap import pair_overlap

MEGADEPTH_INDEX = Path("/work/shared/data/megadepth_test_1500_index")
SMALL = dict(size=(160, 120), texture_density=0.3, progress=False)


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("synth")
    return generate(
        "default",
        out,
        seed=0,
        size=(320, 240),
        views=6,
        video_frames=5,
        eval_views=4,
        texture_density=0.4,
        progress=False,
    )


@pytest.fixture(scope="module")
def room_pair():
    """A room scene, a renderer and two overlapping views (poses, depths, world maps)."""
    scene = build_scene("room", "r", np.random.default_rng(3), Domain(), texture_density=0.6)
    w, h = 320, 240
    K = intrinsics(w, h, 65.0)
    renderer = Renderer(scene, w, h)
    poses = sample_wide_views(scene.hints, 8, np.random.default_rng(4))
    renders = [renderer.rasterize(K, T) for T in poses]
    best = max(
        ((i, j) for i in range(8) for j in range(i + 1, 8)),
        key=lambda ij: pair_overlap(
            renders[ij[0]].depth, renders[ij[1]].depth, K, K, poses[ij[0]], poses[ij[1]]
        )[0],
    )
    i, j = best
    return scene, renderer, K, poses[i], poses[j], renders[i], renders[j]


def _project(K: np.ndarray, T_0to1: np.ndarray, kpts: np.ndarray, z: np.ndarray) -> np.ndarray:
    X0 = (np.linalg.inv(K) @ np.column_stack([kpts, np.ones(len(kpts))]).T) * z
    X1 = T_0to1[:3, :3] @ X0 + T_0to1[:3, 3:4]
    return ((K @ X1)[:2] / X1[2]).T


def _interior_points(r0, r1, K, T0, T1, step: int = 7):
    """Grid pixels of view 0 whose warp lands inside view 1 on the same quad (no occlusion)."""
    h, w = r0.depth.shape
    v, u = np.mgrid[3 : h - 3 : step, 3 : w - 3 : step]
    kpts = np.stack([u.ravel(), v.ravel()], 1).astype(np.float64)
    z = r0.depth[v.ravel(), u.ravel()].astype(np.float64)
    T_0to1 = T1 @ np.linalg.inv(T0)
    p1 = _project(K, T_0to1, kpts, np.where(z > 0, z, 1.0))
    inside = (z > 0) & (p1[:, 0] > 1) & (p1[:, 0] < w - 2) & (p1[:, 1] > 1) & (p1[:, 1] < h - 2)
    q0 = r0.quad_id[v.ravel(), u.ravel()]
    x0 = np.floor(np.where(inside, p1[:, 0], 0)).astype(int)
    y0 = np.floor(np.where(inside, p1[:, 1], 0)).astype(int)
    same = np.ones_like(inside)
    for dy in (0, 1):  # all four bilinear neighbours show the same quad
        for dx in (0, 1):
            same &= r1.quad_id[y0 + dy, x0 + dx] == q0
    keep = inside & same
    return kpts[keep], z[keep], p1[keep], T_0to1


def test_reprojection_hits_same_world_point(room_pair):
    _, _, K, T0, T1, r0, r1 = room_pair
    kpts0, z0, kpts1, _ = _interior_points(r0, r1, K, T0, T1)
    assert len(kpts0) > 200
    W0, W1 = world_points(r0.depth, K, T0), world_points(r1.depth, K, T1)
    X0 = W0[kpts0[:, 1].astype(int), kpts0[:, 0].astype(int)]
    X1 = cv2.remap(
        W1.astype(np.float32),
        kpts1[:, 0:1].astype(np.float32),
        kpts1[:, 1:2].astype(np.float32),
        cv2.INTER_LINEAR,
    )[:, 0].astype(np.float64)
    # Error in pixels of view 1: reproject the interpolated world point there.
    Xc = X1 @ T1[:3, :3].T + T1[:3, 3]
    reproj = (Xc @ K.T)[:, :2] / Xc[:, 2:3]
    assert np.max(np.linalg.norm(reproj - kpts1, axis=1)) < 0.05
    footprint = z0 / K[0, 0]  # metres per pixel at the point
    assert np.max(np.linalg.norm(X1 - X0, axis=1) / footprint) < 0.1


def test_depth_is_exact_camera_z(room_pair):
    _, _, K, T0, _, r0, _ = room_pair
    W0 = world_points(r0.depth, K, T0)
    cam = W0 @ T0[:3, :3].T + T0[:3, 3]
    ok = r0.depth > 0
    np.testing.assert_allclose(cam[ok][:, 2], r0.depth[ok], rtol=1e-6)
    # Every pixel of the closed room is covered; depth is float32 camera z.
    assert ok.all() and r0.depth.dtype == np.float32


@pytest.mark.skipif(
    importlib.util.find_spec("imatch_s2ld.geometry.warp") is None,
    reason="imatch_s2ld.geometry.warp not available yet",
)
def test_warp_keypoints_agrees_with_renderer(room_pair):
    from imatch_s2ld.geometry.warp import warp_keypoints

    _, _, K, T0, T1, r0, r1 = room_pair
    kpts0, _, kpts1_np, T_0to1 = _interior_points(r0, r1, K, T0, T1)
    t = lambda a: torch.from_numpy(np.asarray(a, np.float32))[None]  # noqa: E731
    valid, kpts1 = warp_keypoints(t(kpts0), t(r0.depth), t(r1.depth), t(T_0to1), t(K), t(K))
    valid, kpts1 = valid[0].numpy(), kpts1[0].double().numpy()
    assert valid.mean() > 0.95
    assert np.max(np.linalg.norm(kpts1[valid] - kpts1_np[valid], axis=1)) < 0.01
    W0, W1 = world_points(r0.depth, K, T0), world_points(r1.depth, K, T1)
    X0 = W0[kpts0[valid, 1].astype(int), kpts0[valid, 0].astype(int)]
    X1 = cv2.remap(
        W1.astype(np.float32),
        kpts1[valid, 0:1].astype(np.float32),
        kpts1[valid, 1:2].astype(np.float32),
        cv2.INTER_LINEAR,
    )[:, 0]
    footprint = r0.depth[kpts0[valid, 1].astype(int), kpts0[valid, 0].astype(int)] / K[0, 0]
    assert np.max(np.linalg.norm(X1 - X0, axis=1) / footprint) < 0.1


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path):
    kw = dict(SMALL, layouts=("room",), num_scenes=1, views=3, video_frames=2, eval_views=0)
    a = _hash_tree(generate("default", tmp_path / "a", seed=5, **kw).root)
    b = _hash_tree(generate("default", tmp_path / "b", seed=5, workers=1, **kw).root)
    c = _hash_tree(generate("default", tmp_path / "c", seed=6, **kw).root)
    assert a == b and len(a) > 10
    assert a.keys() == c.keys()
    assert a != c
    assert all(not name.startswith(".tmp_") for name in a)


def test_scene_info_like_megadepth(dataset):
    real = load_scene_info(MEGADEPTH_INDEX / "0015_0.1_0.3.npz")
    assert len(real) > 0
    assert len(dataset.scene_infos) == 2
    for path in dataset.scene_infos:
        info = load_scene_info(path)
        assert len(info) > 0
        for ip, dp, K, T in zip(info.image_paths, info.depth_paths, info.intrinsics, info.poses):
            assert ip.startswith("Undistorted_SfM/") and (dataset.root / ip).is_file()
            assert np.allclose(T[3], [0, 0, 0, 1]) and np.allclose(
                T[:3, :3] @ T[:3, :3].T, np.eye(3)
            )
            with h5py.File(dataset.root / dp, "r") as f:
                depth = f["depth"][()]
            assert depth.dtype == np.float32 and depth.shape == (240, 320)
            assert K.shape == (3, 3)
        for p in info.pairs:
            assert 0.0 <= p.overlap <= 1.0 and p.central_matches.shape == (4,)
            # The central match is a true correspondence: warp (x0, y0) through the GT.
            with h5py.File(dataset.root / info.depth_paths[p.i], "r") as f:
                d0 = f["depth"][()]
            x0, y0, x1, y1 = p.central_matches
            T_0to1 = info.poses[p.j] @ np.linalg.inv(info.poses[p.i])
            proj = _project(
                info.intrinsics[p.i], T_0to1, np.array([[x0, y0]]), d0[int(y0), int(x0)]
            )
            assert np.allclose(proj[0], [x1, y1], atol=1e-3)
        raw = np.load(path, allow_pickle=True).item()
        (ij, score, central) = raw["pair_infos"][0]
        assert ij.dtype == np.int64 and central.dtype == np.float64 and central.shape == (4,)
    assert dataset.scene_list.read_text().split() == [p.name for p in dataset.scene_infos]


def _read_pairs(path: Path) -> list[tuple[str, str, np.ndarray]]:
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        assert len(parts) == 38  # 2 names + rot0 rot1 + K0 (9) + K1 (9) + T_0to1 (16)
        rows.append((parts[0], parts[1], np.array(parts[2:], float)))
    return rows


def test_pairs_files_and_colmap_model(dataset):
    for pairs_file, info_path in zip(dataset.pairs_files, dataset.scene_infos):
        info = load_scene_info(info_path)
        rows = _read_pairs(pairs_file)
        assert len(rows) == len(info)
        by_name = {Path(p).name: k for k, p in enumerate(info.image_paths)}
        for n0, n1, nums in rows:
            assert (pairs_file.parent / "images" / n0).is_file()
            assert nums[0] == 0 and nums[1] == 0
            i, j = by_name[n0], by_name[n1]
            np.testing.assert_allclose(nums[2:11].reshape(3, 3), info.intrinsics[i])
            expected = info.poses[j] @ np.linalg.inv(info.poses[i])
            np.testing.assert_allclose(nums[20:].reshape(4, 4), expected, atol=1e-9)
    assert len(dataset.video_dirs) == 2
    for folder in dataset.video_dirs:
        frames = sorted((folder / "frames").glob("*.png"))
        assert [f.name for f in frames] == [f"{k:06d}.png" for k in range(5)]
        K = np.loadtxt(folder / "intrinsics.txt")
        rec = pycolmap.Reconstruction(str(folder / "gt_sparse"))
        assert rec.num_images() == 5
        cam = next(iter(rec.cameras.values()))
        assert cam.model.name == "PINHOLE"
        np.testing.assert_allclose(cam.params, [K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5])
        poses = {im.name: im.cam_from_world().matrix() for im in rec.images.values()}
        eval_rows = _read_pairs(folder / "eval" / "pairs_with_gt.txt")
        assert len(eval_rows) > 0
        for n0, n1, nums in eval_rows:
            np.testing.assert_allclose(nums[2:11].reshape(3, 3), K)
            assert (folder / "eval" / "images" / n0).is_file()
            assert (folder / "eval" / "images" / n1).is_file()
        # Consecutive frames move smoothly (small motion).
        centres = [-P[:, :3].T @ P[:, 3] for P in (poses[f.name] for f in frames)]
        steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        assert np.all(steps < 0.5) and np.all(steps > 0)


_READERS = ("imatch_s2ld.data.megadepth", "imatch_s2ld.data.pairs_file", "imatch_s2ld.data.colmap")


@pytest.mark.skipif(
    any(importlib.util.find_spec(m) is None for m in _READERS),
    reason="the project's dataset readers are not available",
)
def test_project_readers_accept_outputs(dataset):
    from imatch_s2ld.data.colmap import read_colmap_pairs
    from imatch_s2ld.data.megadepth import read_megadepth_pairs
    from imatch_s2ld.data.pairs_file import read_pairs_file

    samples = read_megadepth_pairs(dataset.root / "scene_info", dataset.root, dataset="synthetic")
    assert len(samples) == sum(len(load_scene_info(p)) for p in dataset.scene_infos)
    for pairs_file in dataset.pairs_files + dataset.eval_pairs_files:
        from_file = read_pairs_file(pairs_file)
        assert len(from_file) > 0 and all(x.path0.is_file() for x in from_file)
    for folder in dataset.video_dirs:
        K = np.loadtxt(folder / "intrinsics.txt")
        pairs = read_colmap_pairs(folder / "gt_sparse", folder / "frames")
        assert len(pairs) > 0
        np.testing.assert_allclose(pairs[0].K0, K, atol=1e-9)


def test_sift_finds_correct_matches():
    scene = build_scene("facade", "f", np.random.default_rng(11), Domain(), texture_density=0.7)
    w, h = 640, 480
    K = intrinsics(w, h, 65.0)
    renderer = Renderer(scene, w, h)
    focus, normal = scene.hints.focus_points[0], scene.hints.focus_normals[0]
    side = np.cross([0, 0, 1.0], normal)
    T0 = look_at(focus + 14 * normal + 2 * side + [0, 0, 1.0], focus)
    T1 = look_at(focus + 12 * normal - 3 * side + [0, 0, 2.0], focus)
    img0, d0 = renderer.render(K, T0, Domain(), np.random.default_rng(0))
    img1, d1 = renderer.render(K, T1, Domain(), np.random.default_rng(1))
    sift = cv2.SIFT_create(nfeatures=2000)
    k0, des0 = sift.detectAndCompute(cv2.cvtColor(img0, cv2.COLOR_RGB2GRAY), None)
    k1, des1 = sift.detectAndCompute(cv2.cvtColor(img1, cv2.COLOR_RGB2GRAY), None)
    matches = [
        m for m, n in cv2.BFMatcher().knnMatch(des0, des1, k=2) if m.distance < 0.8 * n.distance
    ]
    p0 = np.array([k0[m.queryIdx].pt for m in matches])
    p1 = np.array([k1[m.trainIdx].pt for m in matches])
    z = d0[np.rint(p0[:, 1]).astype(int), np.rint(p0[:, 0]).astype(int)].astype(np.float64)
    gt = _project(K, T1 @ np.linalg.inv(T0), p0, np.where(z > 0, z, 1.0))
    correct = (z > 0) & (np.linalg.norm(gt - p1, axis=1) < 3.0)
    assert correct.sum() >= 150, (correct.sum(), len(matches))
    assert correct.mean() > 0.6


def _stats(img: np.ndarray) -> tuple[float, float, float]:
    hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
    grey = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY).astype(float)
    return grey.mean(), float(hsv[..., 1].mean()), grey.std()


def test_domains_differ_but_geometry_does_not(room_pair):
    scene, renderer, K, T0, _, r0, _ = room_pair
    base = renderer.render(K, T0, PRESETS["default"][1].domain, np.random.default_rng(0))
    night = renderer.render(K, T0, PRESETS["target-night"][1].domain, np.random.default_rng(0))
    fog = renderer.render(
        K, T0, PRESETS["target-fog"][1].domain.replace(fog_density=0.3), np.random.default_rng(0)
    )
    for _, depth in (base, night, fog):
        np.testing.assert_array_equal(depth, r0.depth)
    mean_b, sat_b, contrast_b = _stats(base[0])
    mean_n, _, _ = _stats(night[0])
    mean_f, sat_f, contrast_f = _stats(fog[0])
    assert mean_n < 0.6 * mean_b  # night is dark
    assert mean_f > mean_b  # fog is bright, washed out and low in contrast
    assert sat_f < 0.7 * sat_b and contrast_f < 0.7 * contrast_b


def test_user_texture_folder(tmp_path: Path, capsys: pytest.CaptureFixture):
    tex = tmp_path / "tex"
    tex.mkdir()
    rng = np.random.default_rng(0)
    for k, fam in enumerate(("noise", "bricks", "text")):
        cv2.imwrite(str(tex / f"t{k}.png"), make_texture(fam, (96, 80), rng))
    out = tmp_path / "out"
    args = [
        "--preset",
        "default",
        "--out",
        str(out),
        "--textures",
        str(tex),
        "--size",
        "160x120",
        "--num-scenes",
        "1",
        "--views",
        "3",
        "--frames",
        "0",
        "--quiet",
    ]
    assert main(args) == 0
    assert "render rate" in capsys.readouterr().out
    assert len(list((out / "Undistorted_SfM" / "facade_0000" / "images").glob("*.jpg"))) == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        generate("default", tmp_path / "o2", textures=str(empty), **SMALL)
    args[args.index(str(tex))] = str(empty)
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert str(empty) in err and len(err.splitlines()) == 1


def test_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["--preset", "nope", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nope" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(InputError, match="'nope'"):
        generate("nope", tmp_path)
    with pytest.raises(InputError, match="'bogus'"):
        resolve_config("default", bogus=1)
    with pytest.raises(InputError, match="'fogg'"):
        resolve_config("default", domain={"fogg": 0.1})
    with pytest.raises(InputError, match="size"):
        resolve_config("default", size="640by480")
    with pytest.raises(SystemExit) as exc:
        main(["--preset", "default", "--out", str(tmp_path), "--views", "many"])
    assert exc.value.code == 2
    assert main(["--list-presets"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("default", "facade", "room", "target-fog"))
