"""Self-supervised fine-tuning on an unlabeled video: inputs (frames, intrinsics)."""

from .intrinsics import (
    FileIntrinsics,
    Intrinsics,
    exif_intrinsics,
    load_intrinsics,
    prior_intrinsics,
    resolve_intrinsics,
)
from .video import VideoSource, natural_key, open_video

__all__ = [
    "FileIntrinsics", "Intrinsics", "VideoSource", "exif_intrinsics", "load_intrinsics", "natural_key",
    "open_video", "prior_intrinsics", "resolve_intrinsics",
]
