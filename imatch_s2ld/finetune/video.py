"""Frames of an unlabeled video: a folder of images or a video file that OpenCV can read.

:func:`open_video` validates the input once (path, frame count, frame sizes) and returns a
:class:`VideoSource` that loads frames lazily, resized to ``image_size``. :func:`open_videos` opens
several videos of one camera (``--video`` repeated) as a :class:`VideoSet`: one sequence of frames
whose ``segments`` keep windows inside each video.

Resize rule (``resize`` argument, parsed by :func:`imatch_s2ld.data.images.parse_resize`):

- ``None``: frames keep their size.
- an int ``n``: the longer side becomes exactly ``n``; the other side is ``max(1, round(side * n / longer))``
  with Python's ``round`` (ties to even), e.g. 1024x683 -> 512x342 and 100x33 -> 50x16. This is the rule
  of :func:`imatch_s2ld.data.images.resize_image`.
- ``(W, H)``: exactly that size (the aspect ratio may change).

The per-axis scale is ``(sx, sy) = (W' / W, H' / H)``; intrinsics follow
:func:`imatch_s2ld.geometry.camera.scale_intrinsics` (see :mod:`imatch_s2ld.conventions`).
"""

from __future__ import annotations

import os
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..data.images import Resize, parse_resize, read_image, resize_image, resized_size, to_grayscale
from ..errors import InputError, first_line
from ..geometry.camera import scale_intrinsics

FRAME_EXTENSIONS = (".jpg", ".jpeg", ".png")
"""Frame files of a folder (case-insensitive); other files, sub-folders and hidden files are ignored."""

PIL_ERRORS = (OSError, ValueError, Image.DecompressionBombError)
"""What Pillow raises for a missing, unidentified, corrupt or oversized image."""

_EXIF_ORIENTATION = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height


def natural_key(name: str) -> tuple[tuple[str | int, ...], str]:
    """Sort key that orders digit runs by value: ``"frame2.png" < "frame10.png"``.

    Text runs compare case-insensitively; ties (``"f01"`` vs ``"f1"``, case) fall back to the name.
    """
    parts = re.split(r"(\d+)", name)
    key = tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(parts))
    return key, name


def frame_header_size(path: Path) -> tuple[int, int]:
    """``(W, H)`` of an image as ``cv2.imread`` returns it, from the file header (no decoding).

    OpenCV applies the EXIF orientation, so orientations 5-8 swap W and H. For PNG files only EXIF
    chunks placed before the image data are looked at (a later chunk would need a full decode).

    Raises:
        InputError: the file cannot be identified as an image (names the file).
    """
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(_EXIF_ORIENTATION) if "exif" in im.info else None
    except PIL_ERRORS as err:
        raise InputError(f"{path}: cannot read frame ({first_line(err)})") from None
    return (h, w) if orientation in _TRANSPOSED_ORIENTATIONS else (w, h)


class _VideoReader:
    """Sequential decoder of a video file with exact frame indices.

    Reading forward skips frames with ``grab``; reading backwards reopens the file (OpenCV seeking is
    not frame-accurate for every codec). Not thread-safe; pickling drops the open capture.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._cap: Any = None
        self._next = 0  # index of the frame the next read returns

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "_cap": None, "_next": 0}

    def close(self) -> None:
        """Release the capture (reopened on the next read)."""
        if self._cap is not None:
            self._cap.release()
        self._cap, self._next = None, 0

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` of the file as decoded by OpenCV: (H, W, 3) uint8 BGR.

        Raises:
            InputError: a frame up to ``index`` fails to decode (names the file and the index).
        """
        if self._cap is None or index < self._next:
            self.close()
            self._cap = cv2.VideoCapture(str(self.path))
            if not self._cap.isOpened():
                self.close()
                raise InputError(f"{self.path}: OpenCV cannot reopen the video file")
        while self._next < index:
            if not self._cap.grab():
                self._fail(self._next)
            self._next += 1
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._fail(index)
        self._next += 1
        return frame

    def _fail(self, index: int) -> None:
        self.close()
        raise InputError(f"{self.path}: cannot decode frame {index} of the video")


@dataclass(frozen=True)
class VideoSource:
    """Selected frames of a folder or a video file, loaded lazily; build with :func:`open_video`.

    Attributes:
        path: the folder or video file.
        names: per selected frame, the file name (folders) or ``frame_%06d`` of its index in the video.
        original_size: ``(W, H)`` of the frames as stored.
        image_size: ``(W, H)`` of the frames returned by :meth:`frame` (after resize).
        files: folders: the selected frame files, in natural order; video files: ``()``.
        frame_indices: per selected frame, its index among all frames of the folder / video.
    """

    path: Path
    names: tuple[str, ...]
    original_size: tuple[int, int]
    image_size: tuple[int, int]
    files: tuple[Path, ...] = ()
    frame_indices: tuple[int, ...] = ()
    _reader: _VideoReader | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """``((start, stop),)``: the frame ranges a window may span (one video: all of it)."""
        return ((0, len(self)),)

    @property
    def videos(self) -> tuple[VideoSource, ...]:
        """``(self,)``: the videos of the sequence, as :attr:`VideoSet.videos`."""
        return (self,)

    @property
    def is_folder(self) -> bool:
        """True for a folder of frames, False for a video file."""
        return self._reader is None

    @property
    def scale(self) -> tuple[float, float]:
        """``(sx, sy) = (W' / W, H' / H)`` from the original to the resized frames."""
        return (self.image_size[0] / self.original_size[0], self.image_size[1] / self.original_size[1])

    def scale_intrinsics(self, K: np.ndarray) -> np.ndarray:
        """(3, 3) intrinsics of the original frames -> (3, 3) intrinsics of the resized frames."""
        return scale_intrinsics(np.asarray(K, dtype=np.float64), *self.scale)

    def frame_rgb(self, i: int) -> np.ndarray:
        """Frame ``i`` (0-based among the selected frames) as (H, W, 3) uint8 RGB, resized.

        Raises:
            IndexError: ``i`` is not in ``range(len(self))``.
            InputError: the frame cannot be read or decoded, or its size differs from the first frame.
        """
        if not 0 <= i < len(self):
            raise IndexError(f"frame index {i} out of range for {len(self)} frames")
        if self._reader is None:
            where = str(self.files[i])
            image = read_image(self.files[i])
        else:
            where = f"{self.path} frame {self.frame_indices[i]}"
            image = cv2.cvtColor(self._reader.read(self.frame_indices[i]), cv2.COLOR_BGR2RGB)
        size = (image.shape[1], image.shape[0])
        if size != self.original_size:
            raise InputError(
                f"{where}: decoded size {size[0]}x{size[1]} differs from the first frame "
                f"({self.original_size[0]}x{self.original_size[1]})"
            )
        return resize_image(image, self.image_size)[0]

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` as (H, W) float32 grayscale in [0, 1], resized (see :meth:`frame_rgb`)."""
        return to_grayscale(self.frame_rgb(i)).astype(np.float32) / 255.0


def open_video(
    path: str | os.PathLike,
    stride: int = 1,
    max_frames: int | None = None,
    resize: Resize | str = None,
    min_frames: int = 3,
) -> VideoSource:
    """Open a folder of frames or a video file, keeping every ``stride``-th frame, at most ``max_frames``.

    Folders: files ending in ``.jpg``, ``.jpeg`` or ``.png`` (any case, hidden files excluded) in
    natural order (:func:`natural_key`); the header of every selected frame is read to check its size.
    Video files: ``cv2.VideoCapture``; the frame count comes from the container, or from decoding the
    whole file when the container does not state it; the first frame is decoded to get the size.

    Args:
        path: folder or video file (``--video``).
        stride: keep frames ``0, stride, 2 * stride, ...`` (``--stride``).
        max_frames: keep at most this many of them (``--max-frames``); None keeps all.
        resize: None, the longer side in pixels, or ``(W, H)`` (see the module docstring).
        min_frames: fewer selected frames than this is an error.

    Raises:
        InputError: missing path, no frames, fewer than ``min_frames`` selected frames, an unreadable
            frame or video, frames of different sizes, or an invalid option (one line naming it).
    """
    path = Path(path)
    _check_options(stride, max_frames, min_frames)
    resize = parse_resize(resize)
    if not path.exists():
        raise InputError(f"{path}: video folder or file not found (--video)")
    if path.is_dir():
        return _open_folder(path, stride, max_frames, resize, min_frames)
    return _open_file(path, stride, max_frames, resize, min_frames)


@dataclass(frozen=True)
class VideoSet:
    """Several videos of one camera as one sequence of frames (video 0's frames, then video 1's, ...);
    build with :func:`open_videos`. It has :class:`VideoSource`'s interface; ``path`` is the first
    video's, ``segments`` the frame range of each video (windows never cross one)."""

    videos: tuple[VideoSource, ...]

    def __post_init__(self) -> None:
        if not self.videos:
            raise ValueError("VideoSet: no videos")

    def __len__(self) -> int:
        return self.segments[-1][1]

    @cached_property
    def segments(self) -> tuple[tuple[int, int], ...]:
        """``(start, stop)`` of each video's frames in the sequence."""
        stops = np.cumsum([len(v) for v in self.videos]).tolist()
        return tuple(zip([0, *stops[:-1]], stops, strict=True))

    @property
    def path(self) -> Path:
        return self.videos[0].path

    @property
    def names(self) -> tuple[str, ...]:
        """Per frame, its video's path relative to the videos' common folder, then its own name
        (``room_0/frames/000.png``): unique, since no video is given twice."""
        paths = [v.path.resolve() for v in self.videos]
        root = Path(os.path.commonpath([p.parent for p in paths]))
        return tuple(f"{p.relative_to(root).as_posix()}/{n}" for v, p in zip(self.videos, paths, strict=True)
                     for n in v.names)

    @property
    def original_size(self) -> tuple[int, int]:
        return self.videos[0].original_size

    @property
    def image_size(self) -> tuple[int, int]:
        return self.videos[0].image_size

    @property
    def files(self) -> tuple[Path, ...]:
        return tuple(f for v in self.videos for f in v.files)

    @property
    def is_folder(self) -> bool:
        """True when every video is a folder of frames."""
        return all(v.is_folder for v in self.videos)

    @property
    def scale(self) -> tuple[float, float]:
        return self.videos[0].scale

    def scale_intrinsics(self, K: np.ndarray) -> np.ndarray:
        return self.videos[0].scale_intrinsics(K)

    def _locate(self, i: int) -> tuple[VideoSource, int]:
        if not 0 <= i < len(self):
            raise IndexError(f"frame index {i} out of range for {len(self)} frames")
        k = bisect_right([stop for _, stop in self.segments], i)
        return self.videos[k], i - self.segments[k][0]

    def frame_rgb(self, i: int) -> np.ndarray:
        """Frame ``i`` of the sequence (see :meth:`VideoSource.frame_rgb`)."""
        video, j = self._locate(i)
        return video.frame_rgb(j)

    def frame(self, i: int) -> np.ndarray:
        """Frame ``i`` of the sequence (see :meth:`VideoSource.frame`)."""
        video, j = self._locate(i)
        return video.frame(j)


def open_videos(
    paths: str | os.PathLike | Sequence[str | os.PathLike],
    stride: int = 1,
    max_frames: int | None = None,
    resize: Resize | str = None,
    min_frames: int = 3,
) -> VideoSource | VideoSet:
    """:func:`open_video` for one path; for several, each opened with the same options (``max_frames``
    per video) and joined into a :class:`VideoSet`.

    Raises:
        InputError: what :func:`open_video` raises, a path given twice, or videos whose frames differ
            in size (one camera: one frame size and one set of intrinsics).
    """
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    paths = [Path(p) for p in paths]
    if not paths:
        raise InputError("--video is required")
    if len(paths) == 1:
        return open_video(paths[0], stride, max_frames, resize, min_frames)
    seen = set()
    for p in paths:
        if p.resolve() in seen:
            raise InputError(f"{p}: given twice (--video)")
        seen.add(p.resolve())
    videos = tuple(open_video(p, stride, max_frames, resize, min_frames) for p in paths)
    first = videos[0]
    for v in videos[1:]:
        if v.original_size != first.original_size:
            raise InputError(
                f"{v.path}: frames of {v.original_size[0]}x{v.original_size[1]} differ from {first.path} "
                f"({first.original_size[0]}x{first.original_size[1]}); several --video must come from "
                "one camera at one frame size"
            )
    return VideoSet(videos)


def _check_options(stride: int, max_frames: int | None, min_frames: int) -> None:
    def positive(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not positive(stride):
        raise InputError(f"--stride must be a positive integer, got {stride!r}")
    if max_frames is not None and not positive(max_frames):
        raise InputError(f"--max-frames must be a positive integer or none, got {max_frames!r}")
    if not positive(min_frames):
        raise InputError(f"min_frames must be a positive integer, got {min_frames!r}")


def _select(path: Path, n_total: int, stride: int, max_frames: int | None, min_frames: int) -> list[int]:
    """Indices ``range(0, n_total, stride)[:max_frames]``; InputError if fewer than ``min_frames``."""
    indices = list(range(0, n_total, stride))[:max_frames]
    if len(indices) < min_frames:
        raise InputError(
            f"{path}: {len(indices)} frame(s) selected out of {n_total} (--stride {stride}, "
            f"--max-frames {max_frames}); at least {min_frames} are needed"
        )
    return indices


def _list_frames(folder: Path) -> list[Path]:
    """Frame files of ``folder`` in natural order."""
    files = [
        p for p in folder.iterdir()
        if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: natural_key(p.name))


def _open_folder(path: Path, stride: int, max_frames: int | None, resize: Resize,
                 min_frames: int) -> VideoSource:
    files = _list_frames(path)
    if not files:
        expected = ", ".join(FRAME_EXTENSIONS)
        raise InputError(f"{path}: no frames in folder (expected {expected} files) (--video)")
    indices = _select(path, len(files), stride, max_frames, min_frames)
    selected = [files[i] for i in indices]
    size = frame_header_size(selected[0])
    for p in selected[1:]:
        other = frame_header_size(p)
        if other != size:
            raise InputError(
                f"{p}: frame size {other[0]}x{other[1]} differs from {selected[0].name} "
                f"({size[0]}x{size[1]}); all frames must have the same size"
            )
    return VideoSource(
        path=path, names=tuple(p.name for p in selected), original_size=size,
        image_size=resized_size(size, resize), files=tuple(selected), frame_indices=tuple(indices),
    )


def _open_file(path: Path, stride: int, max_frames: int | None, resize: Resize,
               min_frames: int) -> VideoSource:
    if path.suffix.lower() in FRAME_EXTENSIONS:
        raise InputError(f"{path}: is a single image; --video expects a folder of frames or a video file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise InputError(
                f"{path}: OpenCV cannot open this video file (unknown container or codec) (--video)"
            )
        ok, first = cap.read()
        if not ok or first is None:
            raise InputError(f"{path}: no readable frames in the video file (--video)")
        n_total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if n_total <= 0:  # the container does not say: count by decoding
            n_total = 1
            while cap.grab():
                n_total += 1
    finally:
        cap.release()
    indices = _select(path, n_total, stride, max_frames, min_frames)
    size = (first.shape[1], first.shape[0])
    return VideoSource(
        path=path, names=tuple(f"frame_{i:06d}" for i in indices), original_size=size,
        image_size=resized_size(size, resize), frame_indices=tuple(indices), _reader=_VideoReader(path),
    )
