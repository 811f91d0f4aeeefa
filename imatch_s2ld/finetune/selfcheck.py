"""Label-free check on the video itself: relative-pose AUC of the matcher against reference BA poses.

The reference is the training geometry when it does not depend on the matcher, else SIFT
(:func:`.geometry.reference_source`; named in the report as ``self_check.reference``); below "SIFT"
stands for it. A user fine-tuning on their own video has no ground truth, but the SIFT bundle adjustment of
a window (4 frames, hundreds of tracks) gives relative poses an order of magnitude more precise than
two-view estimates (docs/finetuning_reference.md: true correspondences lie 0.09 px from its epipolar lines
on the synthetic target video). :func:`pseudo_pairs` takes the frame pairs of evenly spaced usable windows
with their BA relative poses as pseudo ground truth; :func:`self_check` scores a matcher on them with the
protocol of the evaluation (OpenCV RANSAC 0.5 px, pose error = max(rotation, translation direction),
AUC@5/10/20).

:func:`track_check` measures the precision of the matcher's output tracks on the same windows against
the same poses held fixed: each keypoint of a window's first frame with predictions in two or more other
frames is triangulated from all of them (DLT) with the SIFT BA poses, and its reprojection errors are
the BA reprojection error of the matcher's tracks at the fixed BA solution (what fine-tuning minimises).

The windows are windows fine-tuning trains on: the check says how much the matcher improved **on this
video**, not on held-out scenes. On the synthetic target videos it tracks the AUC against the true poses
within 2 AUC points (docs/finetuning.md).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..data.sample import PairSample
from ..eval.score import ScoreConfig, score_pair, summarize
from ..geometry.triangulation import reprojection_residuals, triangulate_tracks
from ..models.s2ld import S2LD
from .data import VideoWindows, evenly_spaced, uint8_frames
from .geometry import reference_source
from .model import FinetuneModel
from .window import match_window_reference, window_pairs

__all__ = ["PseudoPair", "pseudo_pairs", "self_check", "track_check"]

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


def pseudo_pairs(model: FinetuneModel, windows: VideoWindows, usable: Sequence[int], count: int,
                 reconstructions: Mapping[int, Any] | None = None) -> list[PseudoPair]:
    """The pairs of ``count`` evenly spaced windows of ``usable`` whose reference reconstruction
    succeeds, both frames registered. The reference (:func:`.geometry.reference_source`): the training
    geometry when it does not depend on the matcher (``reconstructions`` by window index, from the
    window selection, else solved here), else SIFT (solved here)."""
    if count <= 0 or not usable:
        return []
    pairs = []
    for index in (usable[i] for i in evenly_spaced(len(usable), count)):
        rec = (reconstructions or {}).get(index)
        if rec is None:
            item = windows[index]
            rec = model.independent_reconstruction(item["images"], item["K"],
                                                   reference_source(model.conf["geometry_from"]))
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
        frames = uint8_frames(windows[index]["images"])
        for p in (p for p in pairs if p.window == index):
            tic = time.perf_counter()
            k0, k1, _ = net.match(frames[p.a], frames[p.b])
            seconds = time.perf_counter() - tic
            row = score_pair(score, p.sample(K, windows.video.path), k0.astype(np.float64),
                             k1.astype(np.float64), K, K)
            rows.append({**row, "time_s": seconds})
    summary = summarize(rows, score)
    return {key: summary[key] for key in SUMMARY_KEYS}


def track_check(net: S2LD, windows: VideoWindows, pairs: Sequence[PseudoPair],
                inlier_px: float = 4.0) -> dict[str, Any] | None:
    """Reprojection error of ``net``'s output tracks with the poses of ``pairs`` held fixed.

    In each window whose pairs include ``(0, b)`` for two or more frames ``b``, S2LD's output matches
    from frame 0 (:func:`.window.match_window_reference`) form tracks; a track seen in >= 3 frames is
    triangulated (DLT) with the poses ``T_0tob`` (frame 0 = world) and kept when every reprojection
    error is below ``inlier_px``. None without such a window.

    Returns:
        ``{"windows", "tracks", "rms_px", "median_px", "observations"}``, where ``observations`` lists
        ``[window, frame, anchor, x, y, residual_px]`` (``anchor``: the frame-0 keypoint at ``(x, y)``)
        for comparing two matchers on the same tracks (:func:`.report.probe_common`).
    """
    K = windows.K.double()
    obs: list[list[float]] = []
    n_windows = n_tracks = 0
    for index in dict.fromkeys(p.window for p in pairs):
        poses = {0: np.eye(4)} | {p.b: p.T_0to1 for p in pairs if p.window == index and p.a == 0}
        if len(poses) < 3:
            continue
        frames = sorted(poses)
        wm = match_window_reference(net, windows[index]["images"][frames])
        xy = wm.keypoints.xy
        V, n_kp = len(frames), len(xy[0])
        pts = torch.zeros(V, n_kp, 2, dtype=torch.float64)
        vis = torch.zeros(V, n_kp, dtype=torch.bool)
        pts[0], vis[0] = torch.as_tensor(xy[0], dtype=torch.float64), True
        for pm in wm.pairs:
            ref = torch.as_tensor(pm.matches[:, 0], dtype=torch.long)
            pts[pm.j, ref] = torch.as_tensor(xy[pm.j], dtype=torch.float64)[pm.matches[:, 1]]
            vis[pm.j, ref] = True
        keep = torch.nonzero(vis.sum(0) >= 3).flatten()
        if len(keep) == 0:
            continue
        T = torch.as_tensor(np.stack([poses[f] for f in frames]), dtype=torch.float64)
        Kv = K.expand(V, 3, 3)
        X, ok = triangulate_tracks(pts[:, keep], Kv, T, weights=vis[:, keep].double())
        r = reprojection_residuals(X, pts[:, keep], Kv, T).norm(dim=-1)  # (V, M)
        r = torch.where(vis[:, keep], r, torch.zeros_like(r))
        good = ok & (r.max(0).values < inlier_px)
        n_windows += 1
        n_tracks += int(good.sum())
        for m in torch.nonzero(good).flatten().tolist():
            k = int(keep[m])
            x, y = (float(v) for v in pts[0, k])
            obs += [[index, frames[v], k, round(x, 3), round(y, 3), round(float(r[v, m]), 5)]
                    for v in range(V) if bool(vis[v, k])]
    if n_windows == 0:
        return None
    res = np.array([o[-1] for o in obs])
    return {"windows": n_windows, "tracks": n_tracks,
            "rms_px": float(np.sqrt(np.mean(res**2))) if len(res) else None,
            "median_px": float(np.median(res)) if len(res) else None, "observations": obs}
