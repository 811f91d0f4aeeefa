"""Deterministic, atomic file writers: images, depth ``.h5``, intrinsics, COLMAP text, pairs files.

Every file is written to a temporary name in its folder and renamed with ``os.replace``. No
timestamps are stored anywhere (JPEG quality fixed, HDF5 ``track_times=False``), so the same
inputs give byte-identical files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import h5py
import numpy as np

from ..io import atomic_path


def write_bytes(path: Path, data: bytes) -> Path:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_text(path: Path, text: str) -> Path:
    """Atomically write UTF-8 text with ``\\n`` line endings."""
    return write_bytes(path, text.encode("utf-8"))


def write_image(path: Path, rgb: np.ndarray, jpeg_quality: int = 95) -> Path:
    """Write an RGB uint8 (H, W, 3) image as JPEG (fixed quality) or PNG, by the suffix."""
    params = (
        [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality]
        if path.suffix.lower() in (".jpg", ".jpeg")
        else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    )
    ok, buf = cv2.imencode(path.suffix, np.ascontiguousarray(rgb[..., ::-1]), params)
    if not ok:
        raise OSError(f"{path}: image encoding failed")
    return write_bytes(path, buf.tobytes())


def write_depth_h5(path: Path, depth: np.ndarray) -> Path:
    """Write a float32 (H, W) depth map as dataset ``depth`` of an HDF5 file (MegaDepth style)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver="earliest", track_order=False) as f:
            f.create_dataset(
                "depth",
                data=depth.astype(np.float32),
                track_times=False,
                compression="gzip",
                compression_opts=4,
                shuffle=True,
            )
    return path


def format_matrix(m: np.ndarray) -> str:
    """Row-major numbers of a matrix separated by spaces (17 significant digits, exact)."""
    return " ".join(_num(x) for x in np.asarray(m, np.float64).ravel())


def _num(x: float) -> str:
    s = f"{x:.17g}"
    return "0" if s in ("0", "-0") else s


def write_intrinsics_txt(path: Path, K: np.ndarray) -> Path:
    """``intrinsics.txt``: the 3x3 K, one row per line (as in the TUM sample sequence)."""
    return write_text(path, "".join(format_matrix(row) + "\n" for row in np.asarray(K)))


def rotmat_to_qvec(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qw, qx, qy, qz)`` of a rotation matrix (3, 3), with ``qw >= 0``."""
    m = np.asarray(R, np.float64)
    tr = np.trace(m)
    cands = np.array(
        [
            1 + tr,
            1 + m[0, 0] - m[1, 1] - m[2, 2],
            1 - m[0, 0] + m[1, 1] - m[2, 2],
            1 - m[0, 0] - m[1, 1] + m[2, 2],
        ]
    )
    k = int(np.argmax(cands))
    r = np.sqrt(cands[k]) * 2  # = 4 * |component k|
    if k == 0:
        q = [r / 4, (m[2, 1] - m[1, 2]) / r, (m[0, 2] - m[2, 0]) / r, (m[1, 0] - m[0, 1]) / r]
    elif k == 1:
        q = [(m[2, 1] - m[1, 2]) / r, r / 4, (m[0, 1] + m[1, 0]) / r, (m[0, 2] + m[2, 0]) / r]
    elif k == 2:
        q = [(m[0, 2] - m[2, 0]) / r, (m[0, 1] + m[1, 0]) / r, r / 4, (m[1, 2] + m[2, 1]) / r]
    else:
        q = [(m[1, 0] - m[0, 1]) / r, (m[0, 2] + m[2, 0]) / r, (m[1, 2] + m[2, 1]) / r, r / 4]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def write_colmap_model(
    folder: Path,
    names: Sequence[str],
    K: np.ndarray,
    poses: Sequence[np.ndarray],
    width: int,
    height: int,
) -> Path:
    """Ground-truth COLMAP text model: one shared PINHOLE camera, one image per pose, no points.

    ``poses`` are world-to-camera (4, 4). COLMAP puts the top-left pixel centre at (0.5, 0.5), so
    ``cx, cy`` are written as ``K[0, 2] + 0.5, K[1, 2] + 0.5``.
    """
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2] + 0.5, K[1, 2] + 0.5
    cams = "# Camera list with one line of data per camera:\n"
    cams += "#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]\n# Number of cameras: 1\n"
    cams += f"1 PINHOLE {width} {height} {_num(fx)} {_num(fy)} {_num(cx)} {_num(cy)}\n"
    imgs = "# Image list with two lines of data per image:\n"
    imgs += "#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME\n"
    imgs += "#   POINTS2D[] as (X, Y, POINT3D_ID)\n"
    imgs += f"# Number of images: {len(names)}, mean observations per image: 0\n"
    for k, (name, T) in enumerate(zip(names, poses)):
        q = rotmat_to_qvec(T[:3, :3])
        imgs += f"{k + 1} {format_matrix(q)} {format_matrix(T[:3, 3])} 1 {name}\n\n"
    pts = "# 3D point list with one line of data per point:\n"
    pts += "#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)\n"
    pts += "# Number of points: 0, mean track length: 0\n"
    write_text(folder / "cameras.txt", cams)
    write_text(folder / "images.txt", imgs)
    write_text(folder / "points3D.txt", pts)
    return folder


def pairs_line(
    name0: str, name1: str, K0: np.ndarray, K1: np.ndarray, T0: np.ndarray, T1: np.ndarray
) -> str:
    """One ``pairs_with_gt.txt`` line: names, ``0 0``, K0, K1 and ``T_0to1 = T1 @ inv(T0)``."""
    T_0to1 = T1 @ np.linalg.inv(T0)
    return f"{name0} {name1} 0 0 {format_matrix(K0)} {format_matrix(K1)} {format_matrix(T_0to1)}"
