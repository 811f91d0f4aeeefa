"""MegaDepth-1500 (LoFTR split): ``scene_info`` indices + a MegaDepth root with the images.

Intrinsics are used exactly as stored in the indices (the standard LoFTR/SuperGlue protocol).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from .sample import PairSample, relative_pose
from .scene_info import load_scene_info, scene_index_files


def index_files(index_dir: str | os.PathLike) -> list[Path]:
    """The ``.npz`` indices of ``index_dir``: those named in its list file
    (``megadepth_test_1500.txt``), else all ``*.npz`` sorted (see :func:`scene_index_files`).

    Raises:
        InputError: missing directory, missing listed index, or no index at all.
    """
    if not Path(index_dir).is_dir():
        raise InputError(f"{index_dir}: MegaDepth index directory not found (--index)")
    return scene_index_files(index_dir)


def read_megadepth_pairs(
    index_dir: str | os.PathLike,
    root: str | os.PathLike,
    dataset: str = "megadepth1500",
    max_pairs: int | None = None,
    check_images: bool = True,
) -> list[PairSample]:
    """All pairs of the listed indices (scene = index file stem), first ``max_pairs`` kept.

    Image paths are ``root / image_paths[i]`` (e.g. ``Undistorted_SfM/0015/images/x.jpg``).

    Raises:
        InputError: bad index, pair without intrinsics/pose, or missing image (names the first
            missing file and the root).
    """
    root = Path(root)
    if check_images and not root.is_dir():
        raise InputError(f"{root}: MegaDepth root not found (--root)")
    samples: list[PairSample] = []
    for path in index_files(index_dir):
        info = load_scene_info(path)
        for k, pair in enumerate(info.pairs):
            if max_pairs is not None and len(samples) >= max_pairs:
                break
            i, j = pair.i, pair.j
            K0, K1, T0, T1 = info.intrinsics[i], info.intrinsics[j], info.poses[i], info.poses[j]
            if K0 is None or K1 is None:
                raise InputError(f"{path}: pair_infos[{k}] lacks intrinsics for image {i} or {j}")
            if T0 is None or T1 is None:
                raise InputError(f"{path}: pair_infos[{k}] lacks a pose for image {i} or {j}")
            name0, name1 = info.image_paths[i], info.image_paths[j]
            samples.append(
                PairSample(
                    name0, name1, root / name0, root / name1, np.array(K0), np.array(K1),
                    relative_pose(T0, T1), dataset=dataset, scene=path.stem,
                )
            )
    if check_images:
        for s in samples:
            for p in (s.path0, s.path1):
                if not p.is_file():
                    raise InputError(f"{p}: MegaDepth image not found (root {root}, --root)")
    return samples
