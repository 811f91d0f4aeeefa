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

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..data.sample import PairSample
from ..eval.score import ScoreConfig, score_pair, summarize
from ..models.s2ld import S2LD
from .data import VideoWindows, evenly_spaced, gray_uint8
from .model import FinetuneModel
from .window import window_pairs

__all__ = ["PseudoPair", "pseudo_pairs", "self_check"]

SUMMARY_KEYS = ("auc@5", "auc@10", "auc@20", "median_matches", "num_pairs", "num_failures")


@dataclass(frozen=True)
class PseudoPair:
    """Frames ``a``, ``b`` (positions in window ``window``) and their BA relative pose ``T_0to1`` (4, 4)."""

    window: int
    a: int
    b: int
    T_0to1: np.ndarray

    def sample(self, K: np.ndarray, video: Any) -> PairSample:
        """The pair as an evaluation record (names ``w<window>/<frame position>``, both paths ``video``)."""
        return PairSample(f"w{self.window}/{self.a}", f"w{self.window}/{self.b}", video, video, K, K,
                          self.T_0to1, dataset="self_check")


def pseudo_pairs(model: FinetuneModel, windows: VideoWindows, usable: Sequence[int],
                 count: int) -> list[PseudoPair]:
    """The pairs of ``count`` evenly spaced windows of ``usable`` whose SIFT reconstruction succeeds
    (cached by the window selection with ``--geometry-from sift``, else solved here), both frames
    registered."""
    if count <= 0 or not usable:
        return []
    pairs = []
    for index in (usable[i] for i in evenly_spaced(len(usable), count)):
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


def self_check(net: S2LD, windows: VideoWindows, pairs: Sequence[PseudoPair],
               score: ScoreConfig | None = None) -> dict[str, Any] | None:
    """Score ``net`` on ``pairs`` with :func:`imatch_s2ld.eval.score.score_pair` (None without pairs).

    Returns:
        ``{"auc@5", "auc@10", "auc@20", "median_matches", "num_pairs", "num_failures"}``.
    """
    if not pairs:
        return None
    score = score or ScoreConfig()
    K = windows.K.double().numpy()
    rows = []
    for index in dict.fromkeys(p.window for p in pairs):  # each window's frames loaded once
        gray = gray_uint8(windows[index]["images"])
        for p in (p for p in pairs if p.window == index):
            tic = time.perf_counter()
            k0, k1, _ = net.match(gray[p.a], gray[p.b])
            seconds = time.perf_counter() - tic
            row = score_pair(score, p.sample(K, windows.video.path), k0.astype(np.float64),
                             k1.astype(np.float64), K, K)
            rows.append({**row, "time_s": seconds})
    summary = summarize(rows, score)
    return {key: summary[key] for key in SUMMARY_KEYS}
