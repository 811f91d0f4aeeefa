"""The common pair record returned by every dataset reader."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError


@dataclass(frozen=True, eq=False)
class PairSample:
    """One image pair with ground-truth intrinsics and relative pose.

    Attributes:
        name0, name1: image names as listed by the source (unique within ``scene``).
        path0, path1: image files.
        K0, K1: (3, 3) float64 intrinsics in pixels of the images as stored on disk, or of
            ``image_size0`` / ``image_size1`` when those are given (the evaluator rescales K when
            the file on disk has another size, e.g. ScanNet intrinsics given for 640x480).
        T_0to1: (4, 4) float64 relative pose mapping camera-0 to camera-1 coordinates.
        rot0, rot1: EXIF-style rotations (multiples of 90 degrees) from a pairs file; readers
            reject non-zero values, so these are always 0 in practice.
        dataset, scene: where the pair comes from (used in result keys and reports).
        image_size0, image_size1: optional ``(W, H)`` the intrinsics refer to.
    """

    name0: str
    name1: str
    path0: Path
    path1: Path
    K0: np.ndarray
    K1: np.ndarray
    T_0to1: np.ndarray
    rot0: int = 0
    rot1: int = 0
    dataset: str = ""
    scene: str = ""
    image_size0: tuple[int, int] | None = field(default=None)
    image_size1: tuple[int, int] | None = field(default=None)

    @property
    def key(self) -> str:
        """A unique, HDF5-safe identifier ``scene|name0|name1`` (``/`` replaced by ``:``)."""
        return "|".join((self.scene, self.name0, self.name1)).replace("/", ":")


def check_intrinsics(K: np.ndarray, where: str) -> np.ndarray:
    """Validate a (3, 3) pinhole matrix (finite, positive focals, last row ``0 0 1``)."""
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3) or not np.all(np.isfinite(K)):
        raise InputError(f"{where}: intrinsics must be a finite 3x3 matrix, got shape {K.shape}")
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise InputError(f"{where}: intrinsics are not a pinhole K (fx, fy > 0, last row 0 0 1)")
    return K


def check_pose(T: np.ndarray, where: str) -> np.ndarray:
    """Validate a (4, 4) rigid transform (finite, last row ``0 0 0 1``, rotation orthonormal)."""
    T = np.asarray(T, dtype=np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        raise InputError(f"{where}: pose must be a finite 4x4 matrix, got shape {T.shape}")
    if not np.allclose(T[3], [0, 0, 0, 1]):
        raise InputError(f"{where}: pose last row is {T[3].tolist()}, expected [0, 0, 0, 1]")
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise InputError(f"{where}: pose rotation is not a rotation matrix")
    return T


def relative_pose(T_0w: np.ndarray, T_1w: np.ndarray) -> np.ndarray:
    """``T_0to1 = T_1w @ inv(T_0w)`` for world-to-camera poses (4, 4)."""
    return T_1w @ np.linalg.inv(T_0w)


def missing_image_error(path: Path, root: Path | None = None, what: str = "image") -> InputError:
    """The one-line error for a missing image file."""
    suffix = f" (root {root})" if root is not None else ""
    return InputError(f"{path}: {what} not found{suffix}")
