"""Windows of an unlabeled video as a map-style dataset (one item = one window)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, default_collate

from ..errors import InputError
from ..models.keypoints import COARSE_STRIDE
from .video import VideoSet, VideoSource

__all__ = ["GeometryWindows", "VideoWindows", "cropped_size", "evenly_spaced", "uint8_frames"]


def cropped_size(image_size: tuple[int, int]) -> tuple[int, int]:
    """``(W, H)`` cropped down to multiples of the coarse stride (8): the right/bottom rows are dropped,
    so the intrinsics do not change."""
    w, h = image_size
    return (w // COARSE_STRIDE * COARSE_STRIDE, h // COARSE_STRIDE * COARSE_STRIDE)


def evenly_spaced(n: int, count: int) -> list[int]:
    """``count`` (clipped to ``[1, n]``) evenly spaced indices of ``range(n)``, first and last included."""
    count = max(1, min(int(count), n))
    return sorted({int(round(x)) for x in np.linspace(0, n - 1, count)})


def uint8_frames(images: torch.Tensor) -> list[np.ndarray]:
    """A window's ``(N, 3, H, W)`` RGB (or ``(N, 1, H, W)`` gray) images in [0, 1] -> N ``(H, W, 3)``
    (or ``(H, W)``) uint8 images, as matchers take them (``S2LD.match``, OpenCV)."""
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (N, 3, H, W) or (N, 1, H, W), got {tuple(images.shape)}")
    pixels = np.clip(images.detach().float().cpu().numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return [im[0] if im.shape[0] == 1 else np.ascontiguousarray(im.transpose(1, 2, 0)) for im in pixels]


class VideoWindows(Dataset):
    """Window ``s`` = frames ``f, f + spacing, ..., f + (length - 1) * spacing`` of the (selected) video,
    for every first frame ``f`` and every spacing (several spacings: windows of several baselines, all
    spacings' windows in one index, the smallest spacing first). Several videos: a window lies inside
    one video (``video.segments``); windows are indexed spacing first, then video, then first frame.

    Args:
        video: from :func:`imatch_s2ld.finetune.open_video` or
            :func:`~imatch_s2ld.finetune.open_videos`.
        K: ``(3, 3)`` intrinsics of the frames as :meth:`VideoSource.frame` returns them.
        length: frames per window (>= 2); spacing: frame step inside a window (>= 1), or several.
    Items: ``{"images": (length, 3, H, W) float32 RGB in [0, 1], "K": (3, 3) float32, "start": int}``
    with ``(W, H)`` = :func:`cropped_size` of the video frames and ``start`` the window's index (the
    frames in colour: the matcher and each geometry source take what they read, e.g. SIFT gray).

    Raises:
        InputError: bad ``length`` / ``spacing`` or a video too short for a window of every spacing.
    """

    def __init__(self, video: VideoSource | VideoSet, K: np.ndarray, length: int,
                 spacing: int | Sequence[int]) -> None:
        spacings = (spacing,) if isinstance(spacing, int | np.integer) else tuple(spacing)
        if int(length) < 2:
            raise InputError(f"--window-length: expected an integer >= 2, got {length!r}")
        if not spacings or any(int(sp) != sp or int(sp) < 1 for sp in spacings):
            raise InputError(f"--window-spacing: expected integers >= 1, got {spacing!r}")
        self.video, self.length = video, int(length)
        self.spacings = tuple(sorted({int(sp) for sp in spacings}))
        self.spacing = self.spacings[0]
        span = (self.length - 1) * self.spacings[-1] + 1
        for clip in video.videos:
            if len(clip) < span:
                raise InputError(
                    f"{clip.path}: {len(clip)} frames selected, a window of {self.length} frames "
                    f"spaced {self.spacings[-1]} needs {span} (lower --window-length / "
                    "--window-spacing or use more frames)"
                )
        self.size = cropped_size(video.image_size)
        if min(self.size) < 4 * COARSE_STRIDE:
            raise InputError(
                f"{video.path}: frames of {video.image_size[0]}x{video.image_size[1]} are too "
                "small (at least 32x32 after --resize)"
            )
        self.K = torch.as_tensor(np.asarray(K, dtype=np.float32))
        self._windows = [
            (first, sp) for sp in self.spacings for start, stop in video.segments
            for first in range(start, stop - (self.length - 1) * sp)
        ]

    def __len__(self) -> int:
        return len(self._windows)

    def frames(self, index: int) -> list[int]:
        """Selected-frame indices of window ``index``."""
        first, sp = self._windows[index]
        return [first + k * sp for k in range(self.length)]

    def __getitem__(self, index: int) -> dict[str, Any]:
        w, h = self.size
        images = np.stack([self.video.frame_rgb(f)[:h, :w] for f in self.frames(index)])
        images = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
        return {"images": images.contiguous(), "K": self.K.clone(), "start": int(index)}


class GeometryWindows(Dataset):
    """The windows training draws from when their geometry does not depend on the matcher: the usable
    ``indices`` of ``windows`` and their reconstructions (solved once before training, keyed by window
    index). Items are the windows' items plus ``"geometry"``: the window's reconstruction
    (:class:`imatch_s2ld.ba.pipeline.WindowReconstruction`), which :meth:`collate` keeps as a list.
    """

    def __init__(self, windows: VideoWindows, indices: Sequence[int],
                 reconstructions: dict[int, Any]) -> None:
        missing = [i for i in indices if i not in reconstructions]
        if missing:
            raise ValueError(f"GeometryWindows: no reconstruction for windows {missing[:5]}")
        self.windows, self.indices, self.reconstructions = windows, list(indices), dict(reconstructions)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        window = self.indices[index]
        return {**self.windows[window], "geometry": self.reconstructions[window]}

    @staticmethod
    def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
        """``default_collate`` of everything but ``geometry`` (a list, one per item)."""
        batch = default_collate([{k: v for k, v in item.items() if k != "geometry"} for item in items])
        batch["geometry"] = [item["geometry"] for item in items]
        return batch
