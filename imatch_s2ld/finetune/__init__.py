"""Self-supervised fine-tuning on an unlabeled video: inputs (frames, intrinsics)."""

from .intrinsics import (
    FileIntrinsics,
    Intrinsics,
    exif_intrinsics,
    load_intrinsics,
    prior_intrinsics,
    resolve_intrinsics,
)
from .video import VideoSet, VideoSource, natural_key, open_video, open_videos

__all__ = [
    "FileIntrinsics", "Intrinsics", "VideoSet", "VideoSource", "exif_intrinsics", "load_intrinsics",
    "natural_key", "open_video", "open_videos", "prior_intrinsics", "resolve_intrinsics",
]
