"""Helpers shared by the test files (``from helpers import ...``; pytest puts ``tests/`` on the path).

Fixtures live in ``conftest.py`` (``device``, rendered scenes, a tiny checkpoint); these are plain
functions: synthetic images, poses, a two-view scene, and the one-line-error assertion every
bad-input test makes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import pytest
import torch

from imatch_s2ld.errors import InputError

__all__ = ["H_TRUE", "homography_error", "one_line", "panning_images", "pose", "raises_one_line", "rotation",
           "textured_pair", "two_view_scene"]


def raises_one_line(fn: Callable[..., Any], *args: Any, match: str, **kwargs: Any) -> str:
    """Call ``fn(*args, **kwargs)``; assert it raises an :class:`InputError` of one line matching
    ``match`` (a regular expression); return the message."""
    with pytest.raises(InputError, match=match) as info:
        fn(*args, **kwargs)
    return one_line(info.value)


def one_line(err: BaseException | str) -> str:
    """The text of an error (or a captured stderr) that must be a single line."""
    text = str(err).strip()
    assert text and "\n" not in text, f"not one line: {text!r}"
    return text


def panning_images(n: int = 3, h: int = 96, w: int = 128, seed: int = 0) -> torch.Tensor:
    """``(n, 1, h, w)`` smooth random texture in [0, 1] seen by a camera panning right: the content
    moves 4 px left per frame."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 1, h // 4, w // 4 + n, generator=g)
    base = torch.nn.functional.interpolate(noise, size=(h, w + 4 * n), mode="bilinear", align_corners=False)
    return torch.cat([base[..., 4 * i: 4 * i + w] for i in range(n)])


def rotation(axis: str, deg: float) -> np.ndarray:
    """``(3, 3)`` float64 right-handed rotation by ``deg`` degrees about ``axis`` ("x", "y" or "z")."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    i, j = [k for k in range(3) if k != "xyz".index(axis)]
    R = np.eye(3)
    R[i, i], R[i, j], R[j, i], R[j, j] = c, -s, s, c
    if axis == "y":  # about y the right-handed sense puts +sin at (0, 2)
        R = R.T
    return R


def pose(R: Any = None, t: Sequence[float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """``(4, 4)`` float64 pose ``[R | t]`` (world-to-camera by the project's convention); ``R`` defaults
    to the identity and may be a numpy array or a tensor."""
    T = np.eye(4)
    if R is not None:
        T[:3, :3] = np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def two_view_scene(T_0to1: np.ndarray, K: np.ndarray, n: int = 200, seed: int = 0,
                   depth: tuple[float, float] = (4.0, 8.0)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` random points in front of camera 0 (x, y in [-2, 2], z in ``depth``) and their exact pixels in
    both views: ``X0 (n, 3)`` in camera-0 coordinates, ``kpts0``, ``kpts1`` ``(n, 2)`` (float64)."""
    rng = np.random.default_rng(seed)
    X0 = rng.uniform([-2, -2, depth[0]], [2, 2, depth[1]], size=(n, 3))
    X1 = X0 @ T_0to1[:3, :3].T + T_0to1[:3, 3]
    f, c = K[[0, 1], [0, 1]], K[:2, 2]
    return X0, X0[:, :2] / X0[:, 2:] * f + c, X1[:, :2] / X1[:, 2:] * f + c


H_TRUE = np.array([[0.95, 0.08, 12.0], [-0.06, 0.97, 8.0], [1e-4, -5e-5, 1.0]])


def textured_pair(seed: int = 0, size=(320, 240)) -> tuple[np.ndarray, np.ndarray]:
    """A blurred-noise RGB image and its warp by :data:`H_TRUE` (uint8, (H, W, 3))."""
    rng = np.random.default_rng(seed)
    w, h = size
    base = rng.integers(0, 256, (h // 4, w // 4, 3)).astype(np.uint8)
    image0 = cv2.resize(base, (w, h), interpolation=cv2.INTER_CUBIC)
    image0 = cv2.addWeighted(image0, 0.7, rng.integers(0, 256, (h, w, 3)).astype(np.uint8), 0.3, 0)
    image0 = cv2.GaussianBlur(image0, (3, 3), 0.8)
    image1 = cv2.warpPerspective(image0, H_TRUE, (w, h))
    return image0, image1


def homography_error(kpts0: np.ndarray, kpts1: np.ndarray) -> float:
    """Largest corner distance (pixels) between the RANSAC homography of the matches and :data:`H_TRUE`."""
    H, _ = cv2.findHomography(kpts0, kpts1, cv2.RANSAC, 2.0)
    corners = np.array([[0, 0], [319, 0], [319, 239], [0, 239]], np.float64)[:, None]
    a = cv2.perspectiveTransform(corners, H)
    b = cv2.perspectiveTransform(corners, H_TRUE)
    return float(np.abs(a - b).max())
