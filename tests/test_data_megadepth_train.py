"""MegaDepth-layout training pipeline: dataset, scene-balanced sampler, photometric augmentation."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from imatch_s2ld.data.augment import PhotometricAugmentConfig, photometric_augment
from imatch_s2ld.data.images import scale_keypoints
from imatch_s2ld.data.megadepth_train import (
    MegaDepthPairDataset,
    MegaDepthTrainConfig,
    build_megadepth_dataset,
    resize_depth_nearest,
    resized_size,
)
from imatch_s2ld.data.sampling import SceneBalancedSampler
from imatch_s2ld.data.scene_info import load_scene_info, save_scene_info
from imatch_s2ld.errors import InputError
from imatch_s2ld.geometry.camera import scale_intrinsics
from imatch_s2ld.geometry.warp import warp_keypoints

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_INDEX = SHARED_DATA / "megadepth_test_1500_index" / "0015_0.1_0.3.npz"

# 160x120 synthetic images resized to longer side 120 -> 120x90 -> floored to multiples of 8: 120x88.
CONF = {"img_resize": 120, "df": 8}
SX, SY = 120 / 160, 88 / 120


@pytest.fixture(scope="module")
def syn_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from imatch_s2ld.synthetic import generate

    root = tmp_path_factory.mktemp("megadepth_train_syn")
    generate("default", root, seed=0, progress=False, views=6, video_frames=0, eval_views=0, size=(160, 120))
    return root


def _scene_indices(root: Path) -> list[Path]:
    return sorted((root / "scene_info").glob("*.npz"))


def _first_scene(root: Path) -> Path:
    return _scene_indices(root)[0]


def test_item_shapes_dtypes_and_geometry(syn_root: Path) -> None:
    index = _first_scene(syn_root)
    info = load_scene_info(index)
    ds = MegaDepthPairDataset(index, syn_root, CONF, check_files=True)
    assert len(ds) == len(info.pairs) > 0
    item = ds[0]
    assert item is not ds[0]  # a new dict each call
    for v in (0, 1):
        assert item[f"image{v}"].shape == (1, 120, 120) and item[f"image{v}"].dtype == torch.float32
        assert item[f"depth{v}"].shape == (120, 120) and item[f"depth{v}"].dtype == torch.float32
        assert item[f"K{v}"].shape == (3, 3) and item[f"K{v}"].dtype == torch.float32
        assert item[f"image_mask{v}"].shape == (120, 120) and item[f"image_mask{v}"].dtype == torch.bool
        assert item[f"mask{v}"].shape == (15, 15) and item[f"mask{v}"].dtype == torch.bool
        assert item[f"scale{v}"].shape == (2,) and item[f"scale{v}"].dtype == torch.float32
        image = item[f"image{v}"]
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0 and float(image.max()) > 0.0
        # Padding (bottom rows 88..119) is zero everywhere and flagged invalid.
        assert item[f"image_mask{v}"][:88].all() and not item[f"image_mask{v}"][88:].any()
        assert item[f"mask{v}"][:11].all() and not item[f"mask{v}"][11:].any()
        assert float(image[:, 88:].abs().max()) == 0.0 and float(item[f"depth{v}"][88:].abs().max()) == 0.0
        assert (item[f"depth{v}"][:88] > 0).any()
        torch.testing.assert_close(item[f"scale{v}"], torch.tensor([1 / SX, 1 / SY]))
    pair = ds.pairs[0]
    for v, k in ((0, pair.i), (1, pair.j)):
        expected = torch.from_numpy(scale_intrinsics(info.intrinsics[k], SX, SY).astype(np.float32))
        torch.testing.assert_close(item[f"K{v}"], expected)
    for key in ("T_0to1", "T_1to0"):
        assert item[key].shape == (4, 4) and item[key].dtype == torch.float32
    T_0to1 = info.poses[pair.j] @ np.linalg.inv(info.poses[pair.i])
    np.testing.assert_allclose(item["T_0to1"].numpy(), T_0to1, atol=1e-5)
    torch.testing.assert_close(item["T_0to1"] @ item["T_1to0"], torch.eye(4), atol=1e-5, rtol=0)
    assert item["pair_names"] == (info.image_paths[pair.i], info.image_paths[pair.j])
    assert item["scene"] == index.stem
    assert item["overlap"].dtype == torch.float32 and item["overlap"].shape == ()


def test_no_padding_options(syn_root: Path) -> None:
    index = _first_scene(syn_root)
    item = MegaDepthPairDataset(index, syn_root, {**CONF, "img_pad": False, "depth_pad": False})[0]
    assert item["image0"].shape == (1, 88, 120) and item["depth0"].shape == (88, 120)
    assert item["mask0"].shape == (11, 15) and item["mask0"].all() and item["image_mask0"].all()
    item = MegaDepthPairDataset(index, syn_root, {**CONF, "depth_pad": False})[0]
    assert item["image0"].shape == (1, 120, 120) and item["depth0"].shape == (88, 120)
    conf = {"img_resize": None, "img_pad": False, "grayscale": False}
    item = MegaDepthPairDataset(index, syn_root, conf)[0]
    assert item["image0"].shape == (3, 120, 160) and item["depth0"].shape == (120, 160)
    torch.testing.assert_close(item["scale0"], torch.ones(2))


def test_resize_helpers() -> None:
    assert resized_size(160, 120, 120, 8) == (120, 88)
    assert resized_size(1600, 1066, 840, 8) == (840, 560)
    assert resized_size(100, 60, None, 8) == (96, 56)
    depth = np.array([[1.0, 0.0], [2.0, 3.0]], dtype=np.float32)
    up = resize_depth_nearest(depth, (4, 4))
    np.testing.assert_array_equal(up, np.kron(depth, np.ones((2, 2), dtype=np.float32)))
    down = resize_depth_nearest(np.arange(16, dtype=np.float32).reshape(4, 4), (2, 2))
    assert set(down.ravel().tolist()) <= set(range(16))  # copied values, never blended


def test_warp_at_resized_resolution_matches_original(syn_root: Path) -> None:
    """Warping with resized depth/K lands where warping with the original data (then scaled) lands."""
    index = _first_scene(syn_root)
    info = load_scene_info(index)
    ds = MegaDepthPairDataset(index, syn_root, {**CONF, "min_overlap": 0.3})
    assert len(ds) > 0
    item, pair = ds[0], ds.pairs[0]

    def read_depth(k: int) -> torch.Tensor:
        with h5py.File(syn_root / str(info.depth_paths[k]), "r") as f:
            return torch.from_numpy(np.asarray(f["depth"][()], dtype=np.float32))

    # Integer pixels of the resized image (nearest-neighbour depth is exact there). Their original
    # positions are (x + 0.5) / s - 0.5; drop the few where rounding in the original image is a tie.
    ys, xs = np.mgrid[0:88, 0:120]
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float64)
    a = (grid + 0.5) / np.array([SX, SY])
    keep = (np.abs(a - np.round(a)) > 1e-3).all(axis=1)
    kpts_r = torch.from_numpy(grid[keep].astype(np.float32))
    n = len(kpts_r)
    valid_r, warped_r = warp_keypoints(
        kpts_r[None], item["depth0"][None], item["depth1"][None], item["T_0to1"][None],
        item["K0"][None], item["K1"][None],
    )
    kpts_o = torch.from_numpy(((kpts_r.double().numpy() + 0.5) / np.array([SX, SY]) - 0.5).astype(np.float32))
    f32 = lambda a: torch.from_numpy(np.asarray(a, dtype=np.float32))[None]  # noqa: E731
    T = info.poses[pair.j] @ np.linalg.inv(info.poses[pair.i])
    valid_o, warped_o = warp_keypoints(
        kpts_o[None], read_depth(pair.i)[None], read_depth(pair.j)[None], f32(T),
        f32(info.intrinsics[pair.i]), f32(info.intrinsics[pair.j]),
    )
    valid_r, valid_o = valid_r[0], valid_o[0]
    assert int(valid_r.sum()) > 0.1 * n  # most co-visible keypoints get a consistent correspondence
    assert float((valid_r == valid_o).float().mean()) > 0.95
    both = valid_r & valid_o
    warped_o_scaled = torch.from_numpy(scale_keypoints(warped_o[0][both].numpy(), (SX, SY)))
    err = (warped_r[0][both] - warped_o_scaled).norm(dim=-1)
    assert float(err.max()) < 1e-2, f"{int(both.sum())} common valid keypoints, max error {float(err.max())}"
    # Depth at the warped location agrees with the warped point's depth (occlusion check).
    d1 = item["depth1"][warped_r[0][valid_r].round().long()[:, 1], warped_r[0][valid_r].round().long()[:, 0]]
    assert (d1 > 0).all()


def test_overlap_filtering_and_scene_skipping(syn_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    indices = _scene_indices(syn_root)
    infos = [load_scene_info(f) for f in indices]
    lo, hi = 0.3, 0.5
    ds = MegaDepthPairDataset(indices[0], syn_root, {**CONF, "min_overlap": lo, "max_overlap": hi})
    expected = [p for p in infos[0].pairs if lo <= p.overlap <= hi]
    assert len(ds) == len(expected)
    assert all(lo <= float(ds[k]["overlap"]) <= hi for k in range(len(ds)))
    capped = MegaDepthPairDataset(indices[0], syn_root, {**CONF, "max_pairs": 2})
    assert len(capped) == min(2, len(infos[0].pairs))

    full = build_megadepth_dataset(syn_root / "scene_info", syn_root, CONF)
    assert len(full.datasets) == len(indices) and len(full) == sum(len(i.pairs) for i in infos)
    listed = build_megadepth_dataset(syn_root / "scene_info" / "scene_list.txt", syn_root, CONF)
    assert len(listed) == len(full)
    # A range that only the scene with the largest overlap reaches: the others are skipped (logged).
    best = [max(p.overlap for p in i.pairs) for i in infos]
    if len(set(best)) > 1:
        threshold = (sorted(best)[-1] + sorted(best)[-2]) / 2
        with caplog.at_level(logging.INFO, logger="imatch_s2ld.data.megadepth_train"):
            some = build_megadepth_dataset(indices, syn_root, {**CONF, "min_overlap": threshold})
        assert len(some.datasets) == 1 and "skipping scene" in caplog.text
    with pytest.raises(InputError, match="no scene has a pair"):
        build_megadepth_dataset(indices, syn_root, {**CONF, "min_overlap": 1.0, "max_overlap": 1.0})
    with pytest.raises(InputError, match="unknown option"):
        MegaDepthPairDataset(indices[0], syn_root, {"img_size": 640})


@pytest.mark.skipif(not REAL_INDEX.is_file(), reason="MegaDepth-1500 index not available")
def test_real_megadepth_index_with_fake_files(tmp_path: Path) -> None:
    info = load_scene_info(REAL_INDEX)
    conf = {"img_resize": 32, "max_pairs": 3}
    with pytest.raises(InputError, match="not found"):
        MegaDepthPairDataset(REAL_INDEX, tmp_path, conf, check_files=True)
    rng = np.random.default_rng(0)
    used = {k for p in info.pairs[:3] for k in (p.i, p.j)}
    for k in used:
        image_path = tmp_path / str(info.image_paths[k])
        depth_path = tmp_path / str(info.depth_paths[k])
        image_path.parent.mkdir(parents=True, exist_ok=True)
        depth_path.parent.mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(image_path), rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
        with h5py.File(depth_path, "w") as f:
            f.create_dataset("depth", data=rng.uniform(1, 10, (48, 64)).astype(np.float32))
    ds = MegaDepthPairDataset(REAL_INDEX, tmp_path, conf, check_files=True)
    assert len(ds) == 3
    item = ds[2]
    assert item["image0"].shape == (1, 32, 32) and item["depth1"].shape == (32, 32)
    assert item["mask0"].shape == (4, 4) and item["mask0"][:3].all() and not item["mask0"][3:].any()
    expected = scale_intrinsics(info.intrinsics[ds.pairs[2].i], 0.5, 0.5).astype(np.float32)
    np.testing.assert_allclose(item["K0"].numpy(), expected, rtol=1e-6)
    assert item["scene"] == "0015_0.1_0.3"
    assert item["pair_names"][0].startswith("Undistorted_SfM/0015/images/")


def test_errors_name_the_file(syn_root: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(syn_root, root)
    index = _first_scene(root)
    info = load_scene_info(index)
    pair = MegaDepthPairDataset(index, root, CONF).pairs[0]

    depth_path = root / str(info.depth_paths[pair.i])
    depth_path.unlink()
    ds = MegaDepthPairDataset(index, root, CONF)  # cheap: files are not checked by default
    with pytest.raises(InputError, match=f"{depth_path}.*not found.*{index.name}"):
        ds[0]
    with pytest.raises(InputError, match=str(depth_path)):
        MegaDepthPairDataset(index, root, CONF, check_files=True)

    image_path = root / str(info.image_paths[pair.j])
    image_path.write_bytes(b"this is not a jpeg at all" * 10)
    ds = MegaDepthPairDataset(index, root, {**CONF, "max_pairs": 1})
    shutil.copy(syn_root / str(info.depth_paths[pair.i]), depth_path)
    with pytest.raises(InputError, match=f"{image_path}.*cannot read image"):
        ds[0]

    bad = tmp_path / "bad_index.npz"
    with open(bad, "wb") as f:  # the LoFTR layout (pickled dict under a .npz name), lacking pair_infos
        np.save(f, {"image_paths": [], "depth_paths": [], "intrinsics": [], "poses": []}, allow_pickle=True)
    with pytest.raises(InputError, match=f"{bad}.*pair_infos"):
        MegaDepthPairDataset(bad, root, CONF)

    no_pose = tmp_path / "no_pose.npz"
    save_scene_info(
        no_pose, info.image_paths, info.depth_paths, info.intrinsics,
        [None if k == pair.i else t for k, t in enumerate(info.poses)],
        [((p.i, p.j), p.overlap, p.central_matches) for p in info.pairs],
    )
    with pytest.raises(InputError, match=f"{no_pose}.*no poses"):
        MegaDepthPairDataset(no_pose, root, CONF)


def test_sampler_balanced_deterministic_disjoint() -> None:
    sizes = [3, 10, 25]
    n = 8
    s = SceneBalancedSampler(sizes, n, seed=1)
    offsets = np.cumsum([0] + sizes)
    for epoch in (0, 1):
        s.set_epoch(epoch)
        idx = list(s)
        assert len(idx) == len(s) == n * len(sizes)
        scene_of = np.searchsorted(offsets, idx, side="right") - 1
        assert np.bincount(scene_of, minlength=3).tolist() == [n] * 3
        counts_small = np.bincount(np.asarray(idx)[scene_of == 0], minlength=3)
        assert counts_small.min() >= n // 3  # the small scene is drawn with replacement, evenly
    s.set_epoch(0)
    again = SceneBalancedSampler(sizes, n, seed=1)
    again.set_epoch(0)
    assert list(s) == list(again)
    assert s.epoch_indices(0) != s.epoch_indices(1)
    assert SceneBalancedSampler(sizes, n, seed=2).epoch_indices(0) != s.epoch_indices(0)

    replicas = [SceneBalancedSampler(sizes, 7, seed=1, num_replicas=4, rank=r) for r in range(4)]
    per_rank = [r.rank_indices(3) for r in replicas]
    assert len({len(p) for p in per_rank}) == 1 and len(per_rank[0]) == len(replicas[0]) == 6
    full = replicas[0].epoch_indices(3)
    interleaved = [per_rank[r][k] for k in range(6) for r in range(4)]
    assert interleaved == full  # each rank gets disjoint positions of the same epoch list
    assert sorted(full[:21]) == sorted(SceneBalancedSampler(sizes, 7, seed=1).epoch_indices(3))


def test_sampler_state_round_trip() -> None:
    s = SceneBalancedSampler([5, 9], 6, seed=3, num_replicas=2, rank=1)
    s.set_epoch(2)
    it = iter(s)
    head = [next(it) for _ in range(4)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["num_consumed"] == 4
    rest = list(it)
    restored = SceneBalancedSampler([5, 9], 6, seed=3, num_replicas=2, rank=1)
    restored.load_state_dict(state)
    restored.set_epoch(2)  # the usual loop re-sets the resumed epoch: the offset is kept
    assert head + list(restored) == s.rank_indices(2)
    assert list(restored) == s.rank_indices(2)  # the next pass is a full epoch again
    restored.load_state_dict(state)
    assert list(restored) == rest
    with pytest.raises(ValueError, match="scene_sizes"):
        SceneBalancedSampler([5, 8], 6, seed=3, num_replicas=2, rank=1).load_state_dict(state)


def test_sampler_with_dataloader(syn_root: Path) -> None:
    ds = build_megadepth_dataset(syn_root / "scene_info", syn_root, CONF)
    sampler = SceneBalancedSampler.from_concat(ds, 2, seed=0)
    batch = next(iter(DataLoader(ds, batch_size=2, sampler=sampler)))
    assert batch["image0"].shape == (2, 1, 120, 120) and batch["depth1"].shape == (2, 120, 120)
    assert batch["mask0"].shape == (2, 15, 15) and len(batch["scene"]) == 2


def test_augmentation_deterministic_and_range() -> None:
    rng = np.random.default_rng(0)
    image_u8 = rng.integers(0, 256, (40, 50), dtype=np.uint8)
    image_f = rng.uniform(0, 1, (40, 50, 3)).astype(np.float32)
    always = PhotometricAugmentConfig(p_brightness=1, p_contrast=1, p_gamma=1, p_blur=1, p_noise=1,
                                      noise_std=(0.01, 0.02))
    for image in (image_u8, image_f):
        makers = (np.random.default_rng, np.random.RandomState, lambda s: torch.Generator().manual_seed(s))
        for make in makers:
            a = photometric_augment(image, always, make(5))
            b = photometric_augment(image, always, make(5))
            c = photometric_augment(image, always, make(6))
            assert isinstance(a, np.ndarray) and a.shape == image.shape and a.dtype == image.dtype
            np.testing.assert_array_equal(a, b)
            assert not np.array_equal(a, c) and not np.array_equal(a, image)
            hi = 255 if image.dtype == np.uint8 else 1.0
            assert a.min() >= 0 and a.max() <= hi
    tensor = torch.rand(1, 30, 20, generator=torch.Generator().manual_seed(0))
    out = photometric_augment(tensor, always, torch.Generator().manual_seed(1))
    assert isinstance(out, torch.Tensor) and out.shape == tensor.shape and out.dtype == torch.float32
    never = PhotometricAugmentConfig(p_brightness=0, p_contrast=0, p_gamma=0, p_blur=0, p_noise=0)
    np.testing.assert_array_equal(photometric_augment(image_f, never, np.random.default_rng(0)), image_f)
    with pytest.raises(InputError, match="augment"):
        PhotometricAugmentConfig.from_dict({"sharpness": 1.0})


def test_dataset_augmentation_is_photometric_only(syn_root: Path) -> None:
    index = _first_scene(syn_root)
    plain = MegaDepthPairDataset(index, syn_root, CONF)[0]
    conf = MegaDepthTrainConfig.from_dict({**CONF, "augment": {"p_brightness": 1.0}, "augment_seed": 0})
    ds = MegaDepthPairDataset(index, syn_root, conf)
    a, b = ds[0], ds[0]
    torch.testing.assert_close(a["image0"], b["image0"])
    assert not torch.equal(a["image0"], plain["image0"])
    assert float(a["image0"][:, 88:].abs().max()) == 0.0  # padding untouched
    for key in ("depth0", "depth1", "K0", "K1", "T_0to1", "mask0"):
        assert torch.equal(a[key], plain[key])
