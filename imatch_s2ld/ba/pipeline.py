"""Matches of a window of frames -> tracks -> initial problem -> bundle adjustment, in one call.

This is what self-supervised fine-tuning runs for every window: :func:`reconstruct_window` never raises
on degenerate geometry (it returns ``success=False`` and the reason of the step that failed), and
:meth:`WindowReconstruction.keypoint_targets` gives, for each inlier observation, the keypoint it came
from and where the BA solution reprojects it (fixed targets: no gradient flows into the solution).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..conf import merge_conf
from .config import DEFAULT_CONF as BA_DEFAULT_CONF
from .config import ba_conf
from .initialize import DEFAULT_CONF as INIT_DEFAULT_CONF
from .initialize import InitResult, init_conf, initialize_window
from .problem import BAResult
from .solve import solve
from .tracks import Keypoints, PairMatches, Tracks, as_pair_matches, build_tracks

__all__ = ["DEFAULT_CONF", "WindowReconstruction", "reconstruct_window"]

DEFAULT_CONF: dict[str, Any] = {
    "tracks": {"min_length": 2, "conflict": "split"},  # build_tracks options
    "init": INIT_DEFAULT_CONF,  # imatch_s2ld.ba.initialize options
    "ba": merge_conf(BA_DEFAULT_CONF, {"robust_kernel": "cauchy", "robust_scale_px": 2.0}),  # solve options
}


@dataclass(frozen=True)
class WindowReconstruction:
    """Result of :func:`reconstruct_window`.

    Attributes:
        success: tracks, initialisation and BA all succeeded.
        reason: the failing step's reason (prefixed ``init:`` or ``ba:``), or a summary.
        tracks: the window's tracks; init: the initialisation (problem before BA);
        ba: the bundle-adjustment result (None when the initialisation failed).
    """

    success: bool
    reason: str
    tracks: Tracks
    init: InitResult
    ba: BAResult | None

    def keypoint_targets(self) -> tuple[Tensor, Tensor, Tensor]:
        """Inlier observations of the BA solution as keypoint targets.

        Returns:
            frame_kpt: ``(P, 2)`` int64 (window frame, keypoint index).
            target_xy: ``(P, 2)`` reprojection of the optimised point with the optimised pose (pixels).
            weight: ``(P,)`` the observation weight times the final robust weight.
        """
        if not self.success or self.ba is None or self.init.problem is None:
            empty = torch.zeros(0, 2)
            return torch.zeros(0, 2, dtype=torch.long), empty, empty[:, 0]
        problem, ba = self.init.problem, self.ba
        keep = ba.inliers
        target = (problem.obs_xy + ba.residuals)[keep]
        weight = (problem.obs_weight * ba.robust_weights)[keep]
        frame_kpt = torch.as_tensor(self.init.obs_keypoint, device=keep.device)[keep]
        return frame_kpt, target.detach(), weight.detach()


def reconstruct_window(
    keypoints: Keypoints | Sequence[Any],
    pair_matches: Sequence[PairMatches] | Mapping[tuple[int, int], Any],
    K: Any,
    config: Mapping[str, Any] | None = None,
) -> WindowReconstruction:
    """Tracks (union-find), initialisation (essential matrix, DLT, PnP) and bundle adjustment of a window.

    Args:
        keypoints: :class:`Keypoints` or a list of per-frame ``(K_i, 2)`` pixel arrays.
        pair_matches: :class:`PairMatches` list or ``{(i, j): (L, 2) indices | (indices, confidences)}``.
        K: ``(3, 3)`` or ``(N, 3, 3)`` intrinsics.
        config: overrides of :data:`DEFAULT_CONF` (strict, per section).
    Raises:
        InputError: bad configuration or inconsistent inputs (shapes, indices); never for bad geometry.
    """
    conf = merge_conf(DEFAULT_CONF, config)
    init_c, ba_c = init_conf(conf["init"]), ba_conf(conf["ba"])
    kp = keypoints if isinstance(keypoints, Keypoints) else Keypoints.create(list(keypoints))
    tracks = build_tracks(kp.counts, as_pair_matches(pair_matches), **conf["tracks"])
    init = initialize_window(kp, tracks, K, init_c)
    if not init.success or init.problem is None:
        return WindowReconstruction(False, f"init: {init.reason}", tracks, init, None)
    ba = solve(init.problem, ba_c)
    if not ba.success:
        return WindowReconstruction(False, f"ba: {ba.reason}", tracks, init, ba)
    n_in = int(ba.inliers.sum())
    reason = (f"ok: {len(init.frames)}/{kp.num_frames} frames, {init.problem.num_points} points, "
              f"{n_in}/{init.problem.num_observations} inlier observations, RMS {ba.rms_px:.3f} px")
    return WindowReconstruction(True, reason, tracks, init, ba)

