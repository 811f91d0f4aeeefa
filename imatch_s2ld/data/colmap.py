"""Pairs with ground truth from a COLMAP model (text or binary) and an images directory.

Pairs are chosen by co-visibility (number of shared 3D points) when the model has 3D points,
otherwise by viewing angle (optical axes at most ``max_angle_deg`` apart, distinct centres).
Intrinsics follow ``imatch_s2ld.conventions``: COLMAP's principal point is shifted by -0.5.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

from ..errors import InputError
from .sample import PairSample, relative_pose

# Models whose extra parameters are distortion coefficients that must all be zero.
_PINHOLE_LIKE = {
    "SIMPLE_PINHOLE": (0, 0, 1, 2, 3),  # f, cx, cy (fx idx, fy idx, cx idx, cy idx, n_intr)
    "PINHOLE": (0, 1, 2, 3, 4),
    "SIMPLE_RADIAL": (0, 0, 1, 2, 3),
    "RADIAL": (0, 0, 1, 2, 3),
    "OPENCV": (0, 1, 2, 3, 4),
}


@dataclass(frozen=True)
class ColmapPairsConfig:
    """Pair selection for :func:`read_colmap_pairs`."""

    min_covisible: int = 100  # shared 3D points (models with points3D)
    max_angle_deg: float = 45.0  # optical-axis angle (models without points3D)
    min_baseline: float = 1e-6  # centres closer than this count as identical


def colmap_intrinsics(camera: pycolmap.Camera, where: str) -> np.ndarray:
    """(3, 3) K in the OpenCV pixel-centre convention (COLMAP cx, cy minus 0.5).

    Raises:
        InputError: unsupported camera model or non-zero distortion.
    """
    model = camera.model.name
    if model not in _PINHOLE_LIKE:
        raise InputError(
            f"{where}: camera model {model} is not supported "
            f"(use one of {sorted(_PINHOLE_LIKE)} with zero distortion; undistort the images first)"
        )
    ifx, ify, icx, icy, n = _PINHOLE_LIKE[model]
    params = np.asarray(camera.params, dtype=np.float64)
    if np.any(params[n:] != 0):
        raise InputError(
            f"{where}: camera {camera.camera_id} ({model}) has non-zero distortion "
            f"{params[n:].tolist()}; undistort the images first"
        )
    return np.array(
        [[params[ifx], 0, params[icx] - 0.5], [0, params[ify], params[icy] - 0.5], [0, 0, 1]]
    )


def _world_to_camera(image: pycolmap.Image) -> np.ndarray:
    T = np.eye(4)
    T[:3, :4] = image.cam_from_world().matrix()
    return T


def read_colmap_pairs(
    model_dir: str | os.PathLike,
    images_dir: str | os.PathLike,
    conf: ColmapPairsConfig | None = None,
    dataset: str = "colmap",
    scene: str | None = None,
    max_pairs: int | None = None,
    check_images: bool = True,
) -> list[PairSample]:
    """Pairs ``(i, j)``, images sorted by name, ``i < j``, with GT from the model.

    Raises:
        InputError: unreadable model, unsupported camera, or missing image.
    """
    conf = conf or ColmapPairsConfig()
    model_dir, images_dir = Path(model_dir), Path(images_dir)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: COLMAP model directory not found (--model)")
    if not images_dir.is_dir():
        raise InputError(f"{images_dir}: images directory not found (--images)")
    try:
        rec = pycolmap.Reconstruction(str(model_dir))
    except (RuntimeError, ValueError) as err:
        raise InputError(f"{model_dir}: cannot read COLMAP model ({err})") from None
    scene = model_dir.parent.name if scene is None else scene
    images = sorted((im for im in rec.images.values() if im.has_pose), key=lambda im: im.name)
    if len(images) < 2:
        raise InputError(f"{model_dir}: COLMAP model has fewer than 2 posed images")
    Ks = [colmap_intrinsics(rec.cameras[im.camera_id], str(model_dir / "cameras")) for im in images]
    Ts = [_world_to_camera(im) for im in images]

    if rec.num_points3D() > 0:
        visible = [
            {p.point3D_id for p in im.points2D if p.has_point3D()} for im in images
        ]
        selected = [
            (i, j)
            for i in range(len(images))
            for j in range(i + 1, len(images))
            if len(visible[i] & visible[j]) >= conf.min_covisible
        ]
    else:
        axes = [T[2, :3] for T in Ts]  # camera z axis in world coordinates
        centres = [-T[:3, :3].T @ T[:3, 3] for T in Ts]
        cos_max = np.cos(np.deg2rad(conf.max_angle_deg))
        selected = [
            (i, j)
            for i in range(len(images))
            for j in range(i + 1, len(images))
            if float(axes[i] @ axes[j]) >= cos_max - 1e-12
            and np.linalg.norm(centres[i] - centres[j]) > conf.min_baseline
        ]
    if not selected:
        raise InputError(f"{model_dir}: no image pair passes the co-visibility/view-angle test")
    if max_pairs is not None:
        selected = selected[:max_pairs]
    samples = []
    for i, j in selected:
        s = PairSample(
            images[i].name, images[j].name, images_dir / images[i].name,
            images_dir / images[j].name, Ks[i], Ks[j], relative_pose(Ts[i], Ts[j]),
            dataset=dataset, scene=scene,
        )
        if check_images:
            for p in (s.path0, s.path1):
                if not p.is_file():
                    raise InputError(f"{p}: image not found (from COLMAP model {model_dir})")
        samples.append(s)
    return samples
