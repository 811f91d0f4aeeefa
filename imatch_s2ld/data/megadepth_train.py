"""MegaDepth-layout training pairs (real MegaDepth or the synthetic generator's output).

One :class:`MegaDepthPairDataset` serves the pairs of one ``scene_info`` index (loaded with
:func:`imatch_s2ld.data.scene_info.load_scene_info`) whose overlap lies in
``[min_overlap, max_overlap]``. Paths of the index are relative to ``image_root`` (images) and
``depth_root`` (depth ``.h5`` files, dataset ``depth``; defaults to ``image_root``).
:func:`build_megadepth_dataset` concatenates many scenes.

Geometry of an item (see :mod:`imatch_s2ld.conventions`):

- The image is resized so that its longer side is ``img_resize`` and each side is then floored to
  a multiple of ``df`` (per-axis factors ``sx = W'/W``, ``sy = H'/H``, so the aspect ratio is kept
  only up to that rounding); ``K`` is rescaled per axis with
  :func:`imatch_s2ld.geometry.camera.scale_intrinsics`.
- The depth map is resized to the same ``(H', W')`` with **nearest neighbour** on pixel centres
  (resized pixel ``x`` reads original pixel ``floor((x + 0.5) / sx)``): depths stay exact values of
  the original map and 0 ("unknown") stays 0, never blended with its neighbours. Supervision warps
  keypoints at the resized resolution with the resized ``K``, so depth must live on that grid.
- With ``img_pad`` the image is zero-padded at the bottom/right to ``img_resize x img_resize``
  (so a batch collates); ``image_mask*`` / ``mask*`` flag the valid (non-padded) pixels / coarse
  ``df x df`` cells. With ``depth_pad`` the depth map is zero-padded to the same padded size (it
  always has exactly the image's spatial shape); otherwise it keeps ``(H', W')``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset

from ..conf import reject_unknown
from ..errors import InputError
from ..geometry.camera import scale_intrinsics
from .augment import PhotometricAugmentConfig, photometric_augment
from .images import read_image
from .scene_info import PairInfo, SceneInfo, load_scene_info, scene_index_files

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class MegaDepthTrainConfig:
    """Options of :class:`MegaDepthPairDataset`.

    Attributes:
        img_resize: new longer side (``None``: keep the size, only floored to a multiple of ``df``).
        df: divisibility factor of the resized sides (the coarse stride, 8 for LoFTR-like models).
        img_pad: zero-pad images to ``img_resize x img_resize`` (needs ``img_resize``).
        depth_pad: zero-pad depth maps to the padded image size (else they keep ``(H', W')``).
        min_overlap, max_overlap: overlap-score range of the pairs used (inclusive).
        max_pairs: keep only the first ``max_pairs`` pairs of the range (index order) per scene.
        augment: photometric augmentation (``None``: off). A mapping is accepted by ``from_dict``.
        augment_seed: ``None``: augmentation draws a seed from torch's global RNG per item
            (reproducible under ``torch.manual_seed`` and a seeded ``DataLoader``, different every
            epoch); an int: item ``k`` is always augmented with ``default_rng([augment_seed, k])``.
        grayscale: ``image*`` are ``(1, H, W)``; else ``(3, H, W)`` RGB.
    """

    img_resize: int | None = 640
    df: int = 8
    img_pad: bool = True
    depth_pad: bool = True
    min_overlap: float = 0.0
    max_overlap: float = 1.0
    max_pairs: int | None = None
    augment: PhotometricAugmentConfig | None = None
    augment_seed: int | None = None
    grayscale: bool = True

    def __post_init__(self) -> None:
        if self.df < 1:
            raise InputError(f"df: expected an integer >= 1, got {self.df!r}")
        if self.img_resize is not None and (self.img_resize < self.df or self.img_resize % self.df):
            raise InputError(
                f"img_resize: expected a positive multiple of df={self.df}, got {self.img_resize!r}"
            )
        if self.img_pad and self.img_resize is None:
            raise InputError("img_pad: padding to a square needs img_resize (got img_resize=None)")
        if not 0.0 <= self.min_overlap <= self.max_overlap:
            raise InputError(
                "min_overlap/max_overlap: need 0 <= min <= max, "
                f"got {self.min_overlap!r}, {self.max_overlap!r}"
            )
        if self.max_pairs is not None and self.max_pairs < 1:
            raise InputError(f"max_pairs: expected None or an integer >= 1, got {self.max_pairs!r}")

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | None = None) -> MegaDepthTrainConfig:
        """Strict construction from a mapping: unknown keys raise :class:`InputError`."""
        values = dict(values or {})
        reject_unknown(values, (f.name for f in dataclasses.fields(cls)), "megadepth config")
        aug = values.get("augment")
        if isinstance(aug, Mapping):
            values["augment"] = PhotometricAugmentConfig.from_dict(aug)
        return cls(**values)  # type: ignore[arg-type]


def resized_size(width: int, height: int, img_resize: int | None, df: int) -> tuple[int, int]:
    """``(W', H')``: longer side ``img_resize`` (or kept), each side floored to a multiple of ``df``."""
    if img_resize is None:
        w, h = width, height
    else:
        scale = img_resize / max(width, height)
        w, h = round(width * scale), round(height * scale)
    return max(df, w // df * df), max(df, h // df * df)


def resize_depth_nearest(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize on pixel centres of an ``(H, W)`` depth map to ``size = (W', H')``.

    Resized pixel ``x`` reads original pixel ``floor((x + 0.5) * W / W')``: values are copied, never
    interpolated, so 0 (unknown) stays 0 and valid depths stay exact.
    """
    h, w = depth.shape
    new_w, new_h = size
    xs = np.minimum(((np.arange(new_w) + 0.5) * (w / new_w)).astype(np.int64), w - 1)
    ys = np.minimum(((np.arange(new_h) + 0.5) * (h / new_h)).astype(np.int64), h - 1)
    return np.ascontiguousarray(depth[ys[:, None], xs[None, :]])


def read_depth_h5(path: str | os.PathLike) -> np.ndarray:
    """Read the ``depth`` dataset of a MegaDepth ``.h5`` file as ``(H, W)`` float32 (0 = unknown).

    Raises:
        InputError: missing/unreadable file, no ``depth`` dataset, or not 2-D (names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: depth file not found")
    try:
        with h5py.File(path, "r") as f:
            if "depth" not in f:
                raise InputError(f"{path}: depth file has no 'depth' dataset (has {sorted(f.keys())})")
            depth = np.asarray(f["depth"][()], dtype=np.float32)
    except OSError as err:
        raise InputError(f"{path}: cannot read depth file ({err})") from None
    if depth.ndim != 2:
        raise InputError(f"{path}: depth has shape {depth.shape}, expected (H, W)")
    return depth


def _pad(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Zero-pad the last two axes (H, W) of ``array`` at the bottom/right to ``size = (W, H)``."""
    h, w = array.shape[-2:]
    out = np.zeros(array.shape[:-2] + (size[1], size[0]), dtype=array.dtype)
    out[..., :h, :w] = array
    return out


class MegaDepthPairDataset(Dataset):
    """Training pairs of one MegaDepth-layout scene (see the module doc for the geometry).

    Args:
        index: path of a ``scene_info`` ``.npz`` or an already loaded :class:`SceneInfo`.
        image_root: root the index's ``image_paths`` are relative to.
        conf: :class:`MegaDepthTrainConfig` or a mapping of its fields (strict).
        depth_root: root of the ``depth_paths`` (default ``image_root``).
        check_files: check at construction that the images and depths of the used pairs exist.
        scene: scene name in items (default: the index file stem).

    Raises:
        InputError: malformed index, a used image without intrinsics/pose/depth path, or (with
            ``check_files``) a missing file; names the file and the index.

    Items (a new dict each call; ``H x W`` = padded size, ``h x w`` = resized size, ``C`` = 1 or 3):
        ``image0/1`` (C, H, W) float32 in [0, 1]; ``depth0/1`` (H, W) float32 ((h, w) without
        ``depth_pad``); ``K0/1`` (3, 3) float32; ``T_0to1``, ``T_1to0`` (4, 4) float32;
        ``image_mask0/1`` (H, W) bool; ``mask0/1`` (H/df, W/df) bool; ``scale0/1`` (2,) float32
        ``(W/w, H/h)`` original/resized (original pixel = ``(x + 0.5) * scale - 0.5``);
        ``overlap`` () float32; ``pair_names`` (str, str) the index's image paths; ``scene`` str.
    """

    def __init__(
        self,
        index: str | os.PathLike | SceneInfo,
        image_root: str | os.PathLike,
        conf: MegaDepthTrainConfig | Mapping[str, object] | None = None,
        depth_root: str | os.PathLike | None = None,
        check_files: bool = False,
        scene: str | None = None,
    ) -> None:
        self.conf = conf if isinstance(conf, MegaDepthTrainConfig) else MegaDepthTrainConfig.from_dict(conf)
        self.info = index if isinstance(index, SceneInfo) else load_scene_info(index)
        self.image_root = Path(image_root)
        self.depth_root = Path(depth_root) if depth_root is not None else self.image_root
        self.scene = scene if scene is not None else self.info.path.stem
        pairs = self.info.pairs_in_overlap(self.conf.min_overlap, self.conf.max_overlap)
        if self.conf.max_pairs is not None:
            pairs = pairs[: self.conf.max_pairs]
        self.pairs: tuple[PairInfo, ...] = tuple(pairs)
        used = sorted({k for p in self.pairs for k in (p.i, p.j)})
        for k in used:
            for what, entries in (
                ("intrinsics", self.info.intrinsics),
                ("poses", self.info.poses),
                ("depth_paths", self.info.depth_paths),
            ):
                if entries[k] is None:
                    raise InputError(f"{self.info.path}: image {k} is used by a pair but has no {what}")
        if check_files:
            for k in used:
                for path, what in ((self.image_path(k), "image"), (self.depth_path(k), "depth file")):
                    if not path.is_file():
                        raise InputError(f"{path}: {what} not found (listed in index {self.info.path})")

    def __len__(self) -> int:
        return len(self.pairs)

    def image_path(self, k: int) -> Path:
        """Path of image ``k`` of the index."""
        return self.image_root / str(self.info.image_paths[k])

    def depth_path(self, k: int) -> Path:
        """Path of the depth file of image ``k`` of the index."""
        return self.depth_root / str(self.info.depth_paths[k])

    def _load_view(
        self, k: int, rng: np.random.Generator | None
    ) -> dict[str, torch.Tensor]:
        """Image, depth, K and masks of view ``k`` after resize/pad (and augmentation)."""
        conf = self.conf
        image_path, depth_path = self.image_path(k), self.depth_path(k)
        try:
            image = read_image(image_path, grayscale=conf.grayscale)
            depth = read_depth_h5(depth_path)
        except InputError as err:
            raise InputError(f"{err} (listed in index {self.info.path})") from None
        h0, w0 = image.shape[:2]
        if depth.shape != (h0, w0):
            raise InputError(
                f"{depth_path}: depth is {depth.shape[1]}x{depth.shape[0]} but image {image_path} "
                f"is {w0}x{h0} (index {self.info.path})"
            )
        w, h = resized_size(w0, h0, conf.img_resize, conf.df)
        if (w, h) != (w0, h0):
            interp = cv2.INTER_AREA if w * h < w0 * h0 else cv2.INTER_LINEAR
            image = cv2.resize(image, (w, h), interpolation=interp)
            depth = resize_depth_nearest(depth, (w, h))
        sx, sy = w / w0, h / h0
        img = image.astype(np.float32) / np.float32(255.0)
        if conf.augment is not None and rng is not None:
            img = photometric_augment(img, conf.augment, rng)  # type: ignore[assignment]
        img = img[None] if img.ndim == 2 else np.ascontiguousarray(img.transpose(2, 0, 1))
        padded = (conf.img_resize, conf.img_resize) if conf.img_pad and conf.img_resize else (w, h)
        valid = np.ones((h, w), dtype=bool)
        img, valid = _pad(img, padded), _pad(valid, padded)
        if conf.depth_pad:
            depth = _pad(depth, padded)
        K = scale_intrinsics(self.info.intrinsics[k], sx, sy)
        return {
            "image": torch.from_numpy(img),
            "depth": torch.from_numpy(np.ascontiguousarray(depth, dtype=np.float32)),
            "K": torch.from_numpy(np.asarray(K, dtype=np.float32)),
            "image_mask": torch.from_numpy(valid),
            "mask": torch.from_numpy(np.ascontiguousarray(valid[:: conf.df, :: conf.df])),
            "scale": torch.tensor([w0 / w, h0 / h], dtype=torch.float32),
        }

    def _rng(self, idx: int) -> np.random.Generator | None:
        if self.conf.augment is None:
            return None
        if self.conf.augment_seed is not None:
            return np.random.default_rng([self.conf.augment_seed, idx])
        return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))

    def __getitem__(self, idx: int) -> dict[str, object]:
        if not -len(self) <= idx < len(self):
            raise IndexError(f"pair {idx} out of range for {len(self)} pairs of {self.info.path}")
        pair = self.pairs[idx]
        rng = self._rng(idx % len(self))
        view0 = self._load_view(pair.i, rng)
        view1 = self._load_view(pair.j, rng)
        T0, T1 = self.info.poses[pair.i], self.info.poses[pair.j]
        T_0to1 = np.asarray(T1, dtype=np.float64) @ np.linalg.inv(np.asarray(T0, dtype=np.float64))
        T_1to0 = np.linalg.inv(T_0to1)
        item: dict[str, object] = {
            f"{key}{v}": view[key] for v, view in ((0, view0), (1, view1)) for key in view
        }
        item.update(
            {
                "T_0to1": torch.from_numpy(T_0to1.astype(np.float32)),
                "T_1to0": torch.from_numpy(T_1to0.astype(np.float32)),
                "overlap": torch.tensor(pair.overlap, dtype=torch.float32),
                "pair_names": (str(self.info.image_paths[pair.i]), str(self.info.image_paths[pair.j])),
                "scene": self.scene,
            }
        )
        return item


def build_megadepth_dataset(
    index: str | os.PathLike | Sequence[str | os.PathLike],
    root: str | os.PathLike,
    conf: MegaDepthTrainConfig | Mapping[str, object] | None = None,
    depth_root: str | os.PathLike | None = None,
    check_files: bool = False,
) -> ConcatDataset:
    """One :class:`MegaDepthPairDataset` per scene index, concatenated (scene order kept).

    Scenes without a pair in the overlap range are skipped (logged at INFO level). Pair with
    :meth:`imatch_s2ld.data.sampling.SceneBalancedSampler.from_concat` for scene-balanced epochs.

    Args:
        index: see :func:`scene_index_files`.
        root: image root (and depth root unless ``depth_root``).
        conf: :class:`MegaDepthTrainConfig` or a mapping of its fields (strict).

    Raises:
        InputError: bad index/list, bad config, or no scene with a pair in range.
    """
    conf = conf if isinstance(conf, MegaDepthTrainConfig) else MegaDepthTrainConfig.from_dict(conf)
    scenes: list[MegaDepthPairDataset] = []
    for f in scene_index_files(index):
        ds = MegaDepthPairDataset(f, root, conf, depth_root=depth_root, check_files=check_files)
        if len(ds) == 0:
            logger.info(
                "skipping scene %s: no pair with overlap in [%s, %s]", f, conf.min_overlap, conf.max_overlap
            )
            continue
        scenes.append(ds)
    if not scenes:
        raise InputError(
            f"{index}: no scene has a pair with overlap in [{conf.min_overlap}, {conf.max_overlap}]"
        )
    return ConcatDataset(scenes)
