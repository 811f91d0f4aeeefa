"""Step 1: run a matcher on every pair and cache the matches in ``OUT/predictions.h5``.

Each pair is a group named :attr:`PairSample.key` holding ``kpts0``/``kpts1`` (N, 2) float32 in
pixels of the **resized** images, ``confidence`` (N,), and attributes ``scale0``/``scale1``
(``(sx, sy)`` resized / original), ``size0``/``size1`` (original ``(W, H)``), ``time_s`` (the
``match`` call only), ``path0``/``path1``. The file attribute ``settings`` fingerprints the
matcher and resize settings: a file with other settings (or ``overwrite``) is recomputed.

Matchers declaring ``grayscale = True`` get images decoded straight to grayscale
(``cv2.IMREAD_GRAYSCALE``, as in the reference SIFT protocol); others get RGB.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from tqdm import tqdm

from ..data.images import Resize, read_image, resize_image, unscale_keypoints
from ..data.sample import PairSample
from ..matchers import Matcher, load_matcher, wants_grayscale

logger = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.h5"


@dataclass(frozen=True)
class ExportConfig:
    """Matcher (``"sift"``, ``"loftr:PATH"``...), its options, and the image resize."""

    matcher: str = "sift"
    matcher_conf: dict[str, Any] = field(default_factory=dict)
    resize: Resize = None
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class Prediction:
    """Cached matches of one pair, keypoints in pixels of the **original** images.

    Attributes:
        kpts0, kpts1: (N, 2) float32; confidence: (N,) float32.
        size0, size1: original image ``(W, H)``; time_s: seconds of the ``match`` call.
    """

    kpts0: np.ndarray
    kpts1: np.ndarray
    confidence: np.ndarray
    size0: tuple[int, int]
    size1: tuple[int, int]
    time_s: float


def settings_fingerprint(conf: ExportConfig) -> str:
    """JSON string of everything that changes the predictions (weights file stat included)."""
    weights = None
    _, _, arg = conf.matcher.partition(":")
    if arg and Path(arg).is_file():
        stat = Path(arg).stat()
        weights = {"path": str(Path(arg).resolve()), "size": stat.st_size, "mtime": stat.st_mtime}
    resize = list(conf.resize) if isinstance(conf.resize, tuple) else conf.resize
    return json.dumps(
        {"matcher": conf.matcher, "matcher_conf": conf.matcher_conf, "resize": resize,
         "weights": weights},
        sort_keys=True, default=str,
    )


def _cached(group: h5py.Group | None, sample: PairSample) -> bool:
    return (
        group is not None
        and group.attrs.get("path0") == str(sample.path0)
        and group.attrs.get("path1") == str(sample.path1)
        and all(k in group for k in ("kpts0", "kpts1", "confidence"))
    )


def main(
    conf: ExportConfig, pairs: list[PairSample], out_dir: str | Path, matcher: Matcher | None = None
) -> Path:
    """Match every pair not yet cached; return the predictions file.

    Args:
        conf: matcher/resize settings.
        pairs: the pairs to match.
        out_dir: output directory (created).
        matcher: an already built matcher (default: ``load_matcher(conf.matcher, **conf.matcher_conf)``,
            built only when some pair needs matching).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / PREDICTIONS_FILE
    fingerprint = settings_fingerprint(conf)
    if path.exists():
        with h5py.File(path, "r") as f:
            stale = f.attrs.get("settings") != fingerprint
        if conf.overwrite or stale:
            logger.info("Recomputing %s (%s)", path, "overwrite" if conf.overwrite else "settings changed")
            path.unlink()
    with h5py.File(path, "a") as f:
        f.attrs["settings"] = fingerprint
        todo = [s for s in pairs if not _cached(f.get(s.key), s)]
        if len(todo) < len(pairs):
            logger.info("Reusing cached matches for %d/%d pairs", len(pairs) - len(todo), len(pairs))
        if todo and matcher is None:
            matcher = load_matcher(conf.matcher, **conf.matcher_conf)
        for sample in tqdm(todo, desc=f"matching ({conf.matcher})", disable=not conf.progress):
            _export_pair(f, sample, matcher, conf.resize, wants_grayscale(matcher))
            f.flush()
    return path


def _export_pair(
    f: h5py.File, sample: PairSample, matcher: Matcher, resize: Resize, grayscale: bool
) -> None:
    image0, image1 = read_image(sample.path0, grayscale), read_image(sample.path1, grayscale)
    size0, size1 = (image0.shape[1], image0.shape[0]), (image1.shape[1], image1.shape[0])
    image0, scale0 = resize_image(image0, resize)
    image1, scale1 = resize_image(image1, resize)
    start = time.perf_counter()
    kpts0, kpts1, confidence = matcher.match(image0, image1)
    elapsed = time.perf_counter() - start
    if sample.key in f:
        del f[sample.key]
    group = f.create_group(sample.key)
    group.create_dataset("kpts0", data=np.asarray(kpts0, np.float32).reshape(-1, 2))
    group.create_dataset("kpts1", data=np.asarray(kpts1, np.float32).reshape(-1, 2))
    group.create_dataset("confidence", data=np.asarray(confidence, np.float32).reshape(-1))
    group.attrs.update(
        scale0=scale0, scale1=scale1, size0=size0, size1=size1, time_s=elapsed,
        path0=str(sample.path0), path1=str(sample.path1), grayscale=grayscale,
    )


def load_prediction(f: h5py.File, sample: PairSample) -> Prediction:
    """Read one pair from an open predictions file; keypoints mapped to original-image pixels."""
    group = f[sample.key]
    a = group.attrs
    return Prediction(
        unscale_keypoints(group["kpts0"][()], tuple(a["scale0"])),
        unscale_keypoints(group["kpts1"][()], tuple(a["scale1"])),
        group["confidence"][()].astype(np.float32),
        tuple(int(v) for v in a["size0"]),
        tuple(int(v) for v in a["size1"]),
        float(a["time_s"]),
    )
