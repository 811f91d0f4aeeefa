"""Label-free check on the video itself: relative-pose AUC of the matcher against SIFT BA poses.

A user fine-tuning on their own video has no ground truth, but the SIFT bundle adjustment of a
window (4 frames, hundreds of tracks) gives relative poses an order of magnitude more precise than
two-view estimates (README: true correspondences lie 0.09 px from its epipolar lines on the synthetic
target video). :func:`pseudo_pairs` takes the frame pairs of evenly spaced usable windows with their BA
relative poses as pseudo ground truth; :func:`self_check` scores a matcher on them with the protocol of
the evaluation (OpenCV RANSAC 0.5 px, pose error = max(rotation, translation direction), AUC@5/10/20).

The windows are windows fine-tuning trains on: the check says how much the matcher improved **on this
video**, not on held-out scenes. On the synthetic target videos it tracks the AUC against the true poses
within 2 AUC points (README).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..eval.score import ScoreConfig
from ..geometry.estimate import MIN_MATCHES, estimate_relative_pose
from ..geometry.metrics import pose_auc
from ..geometry.pose import pose_error
from ..models.s2ld import S2LD
from .data import VideoWindows
from .model import FinetuneModel
from .window import window_pairs

__all__ = ["PseudoPair", "pseudo_pairs", "self_check"]


@dataclass(frozen=True)
class PseudoPair:
    """Frames ``a``, ``b`` (positions in window ``window``) and their BA relative pose ``T_0to1`` (4, 4)."""

    window: int
    a: int
    b: int
    T_0to1: np.ndarray


def pseudo_pairs(model: FinetuneModel, windows: VideoWindows, usable: Sequence[int],
                 count: int) -> list[PseudoPair]:
    """The pairs of ``count`` evenly spaced windows of ``usable`` whose SIFT reconstruction succeeds
    (cached by the window selection with ``--geometry-from sift``, else solved here), both frames
    registered."""
    if count <= 0 or not usable:
        return []
    picks = sorted({usable[int(round(x))] for x in np.linspace(0, len(usable) - 1, min(count, len(usable)))})
    pairs = []
    for index in picks:
        rec = model.sift_cache.get(index)
        if rec is None:
            item = windows[index]
            rec = model.sift_reconstruction(item["images"], item["K"])
        if not rec.success or rec.ba is None:
            continue
        poses = rec.ba.poses.detach().double().cpu().numpy()
        slot = {int(f): k for k, f in enumerate(rec.init.frames)}
        for a, b in window_pairs(windows.length, model.conf["max_gap"]):
            if a in slot and b in slot:
                pairs.append(PseudoPair(index, a, b, poses[slot[b]] @ np.linalg.inv(poses[slot[a]])))
    return pairs


def _uint8(image: Any) -> np.ndarray:
    return np.clip(image[0].numpy() * 255.0 + 0.5, 0, 255).astype(np.uint8)


def self_check(net: S2LD, windows: VideoWindows, pairs: Sequence[PseudoPair],
               score: ScoreConfig | None = None) -> dict[str, Any] | None:
    """Score ``net`` on ``pairs`` (None without pairs).

    Returns:
        ``{"auc@5", "auc@10", "auc@20", "median_matches", "num_pairs", "num_failures"}``.
    """
    if not pairs:
        return None
    score = score or ScoreConfig()
    K = windows.K.double().numpy()
    errors, counts, images = [], [], {}
    for p in pairs:
        if p.window not in images:
            images = {p.window: windows[p.window]["images"]}
        ims = images[p.window]
        k0, k1, _ = net.match(_uint8(ims[p.a]), _uint8(ims[p.b]))
        counts.append(len(k0))
        pose = None
        if len(k0) >= MIN_MATCHES:
            pose = estimate_relative_pose(k0.astype(np.float64), k1.astype(np.float64), K, K, score.estimator,
                                          score.threshold, score.confidence, score.max_iters)
        errors.append(float("inf") if pose is None else max(pose_error(pose.R, pose.t, p.T_0to1)))
    return {**pose_auc(errors, score.auc_thresholds), "median_matches": float(np.median(counts)),
            "num_pairs": len(pairs), "num_failures": int(sum(not np.isfinite(e) for e in errors))}
