"""ScanNet-1500 (LoFTR split): ``test.npz`` + ``intrinsics.npz`` + an image root.

``test.npz``: ``name`` (N, 4) ints ``scene, sub-scene, frame0, frame1`` -> images
``<root>/scene%04d_%02d/color/%d.jpg``; ``rel_pose`` (N, 12) the top 3x4 of ``T_0to1``.
``intrinsics.npz``: ``sceneXXXX_YY`` -> (3, 3) K for 640x480 images (stored in
``PairSample.image_size*`` so other image sizes get rescaled intrinsics).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..io import read_npz
from .sample import PairSample, check_intrinsics

SCANNET_SIZE = (640, 480)


def read_scannet_pairs(
    index_dir: str | os.PathLike,
    root: str | os.PathLike,
    dataset: str = "scannet1500",
    max_pairs: int | None = None,
    check_images: bool = True,
) -> list[PairSample]:
    """The pairs of ``<index_dir>/test.npz`` (first ``max_pairs``), images under ``root``.

    Raises:
        InputError: missing/malformed index, missing intrinsics for a scene, or missing image
            (names the first missing file and the root).
    """
    index_dir, root = Path(index_dir), Path(root)
    if not index_dir.is_dir():
        raise InputError(f"{index_dir}: ScanNet index directory not found (--index)")
    if check_images and not root.is_dir():
        raise InputError(f"{root}: ScanNet root not found (--root)")
    test_path, intr_path = index_dir / "test.npz", index_dir / "intrinsics.npz"
    test = read_npz(test_path, "ScanNet index", ("name", "rel_pose"), " (--index)")
    intrinsics = read_npz(intr_path, "ScanNet index", missing_hint=" (--index)")
    names, rel = np.asarray(test["name"]), np.asarray(test["rel_pose"], dtype=np.float64)
    if names.ndim != 2 or names.shape[1] != 4 or rel.shape != (len(names), 12):
        raise InputError(
            f"{test_path}: expected name (N, 4) and rel_pose (N, 12), "
            f"got {names.shape} and {rel.shape}"
        )
    n = len(names) if max_pairs is None else min(max_pairs, len(names))
    samples = []
    for k in range(n):
        scene_id, sub, f0, f1 = (int(v) for v in names[k])
        scene = f"scene{scene_id:04d}_{sub:02d}"
        if scene not in intrinsics:
            raise InputError(f"{intr_path}: no intrinsics for {scene} (pair {k} of {test_path})")
        K = check_intrinsics(intrinsics[scene], f"{intr_path}: {scene}")
        T = np.eye(4)
        T[:3, :4] = rel[k].reshape(3, 4)
        name0, name1 = f"{scene}/color/{f0}.jpg", f"{scene}/color/{f1}.jpg"
        s = PairSample(
            name0, name1, root / name0, root / name1, K, K.copy(), T, dataset=dataset,
            scene=scene, image_size0=SCANNET_SIZE, image_size1=SCANNET_SIZE,
        )
        if check_images:
            for p in (s.path0, s.path1):
                if not p.is_file():
                    raise InputError(f"{p}: ScanNet image not found (root {root}, --root)")
        samples.append(s)
    return samples
