"""Image reading and resizing (keeps track of the per-axis scale for the intrinsics)."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

Resize = int | tuple[int, int] | None


def read_image(path: str | os.PathLike, grayscale: bool = False) -> np.ndarray:
    """Read an image as uint8: (H, W) when ``grayscale`` else (H, W, 3) in **RGB** order.

    Raises:
        InputError: the file is missing, truncated (:func:`truncated`) or cannot be decoded (names
            the file).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: image not found")
    data = path.read_bytes()
    if truncated(data):  # decoders would fill the missing part with grey and carry on
        raise InputError(f"{path}: truncated image file (no end-of-image marker: an incomplete copy?)")
    flag = cv2.IMREAD_GRAYSCALE if grayscale else cv2.IMREAD_COLOR
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flag) if data else None
    if image is None:
        raise InputError(f"{path}: cannot read image (unsupported or corrupt file)")
    if not grayscale:
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def truncated(data: bytes) -> bool:
    """Whether JPEG or PNG bytes lack their end: a JPEG without its end-of-image marker (FFD9) in the
    second half of the file (compressed data never contains it, so data appended after the image,
    as in motion photos, still passes), a PNG without its ``IEND`` chunk in the last 4 KiB. Other
    formats: False."""
    if data[:2] == b"\xff\xd8":
        return b"\xff\xd9" not in data[len(data) // 2:]
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return b"IEND" not in data[-4096:]
    return False


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) RGB uint8 -> (H, W) uint8."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 1:
        return image[..., 0]
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")


def parse_resize(value: str | int | tuple[int, int] | list | None) -> Resize:
    """Parse ``None``/``"none"``, an int (longer side) or ``"WxH"``/``(W, H)``.

    Raises:
        InputError: anything else (names the ``--resize`` argument).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise InputError(f"--resize: expected none, an integer or WxH, got {value!r}")
    if isinstance(value, int):
        resize: Resize = value
    elif isinstance(value, (tuple, list)) and len(value) == 2:
        resize = (int(value[0]), int(value[1]))
    elif isinstance(value, str):
        text = value.strip().lower()
        if text in ("", "none", "null"):
            return None
        try:
            if "x" in text:
                w, h = text.split("x")
                resize = (int(w), int(h))
            else:
                resize = int(text)
        except ValueError:
            raise InputError(
                f"--resize: expected none, an integer or WxH, got {value!r}"
            ) from None
    else:
        raise InputError(f"--resize: expected none, an integer or WxH, got {value!r}")
    sizes = resize if isinstance(resize, tuple) else (resize,)
    if any(s <= 0 for s in sizes):
        raise InputError(f"--resize: sizes must be positive, got {value!r}")
    return resize


def resized_size(size: tuple[int, int], resize: Resize) -> tuple[int, int]:
    """``(W', H')`` of a ``(W, H)`` image after ``resize`` (the rule of :func:`resize_image`): an int is
    the new longer side, the other side ``max(1, round(side * scale))``; ``(W, H)`` is taken as is."""
    if resize is None:
        return size
    if isinstance(resize, tuple):
        return int(resize[0]), int(resize[1])
    scale = resize / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def resize_image(image: np.ndarray, resize: Resize) -> tuple[np.ndarray, tuple[float, float]]:
    """Resize an (H, W[, C]) image.

    Args:
        image: (H, W) or (H, W, C) array.
        resize: ``None`` (keep), an int (new longer side, aspect kept up to rounding) or ``(W, H)``.

    Returns:
        The resized image and the per-axis scale ``(sx, sy) = (W' / W, H' / H)``: a pixel ``x``
        maps to ``(x + 0.5) * sx - 0.5`` (see ``imatch_s2ld.conventions``); rescale intrinsics with
        ``imatch_s2ld.geometry.camera.scale_intrinsics(K, sx, sy)``.
    """
    h, w = image.shape[:2]
    if resize is None:
        return image, (1.0, 1.0)
    new_w, new_h = resized_size((w, h), resize)
    if (new_w, new_h) == (w, h):
        return image, (1.0, 1.0)
    interp = cv2.INTER_AREA if new_w * new_h < w * h else cv2.INTER_LINEAR
    resized = cv2.resize(image, (new_w, new_h), interpolation=interp)
    return resized, (new_w / w, new_h / h)


def scale_keypoints(kpts: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Map (N, 2) pixels of an image to pixels of its copy resized by ``scale = (sx, sy)``."""
    s = np.asarray(scale, dtype=np.float64)
    return ((np.asarray(kpts, dtype=np.float64) + 0.5) * s - 0.5).astype(np.float32)


def unscale_keypoints(kpts: np.ndarray, scale: tuple[float, float]) -> np.ndarray:
    """Inverse of :func:`scale_keypoints`: resized-image pixels -> original-image pixels."""
    s = np.asarray(scale, dtype=np.float64)
    return ((np.asarray(kpts, dtype=np.float64) + 0.5) / s - 0.5).astype(np.float32)
