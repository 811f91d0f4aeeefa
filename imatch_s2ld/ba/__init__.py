"""Bundle adjustment on PyPose: problem, sparse Schur Levenberg-Marquardt solver, reference backends,
tracks and initialisation from matches.

Stable contract::

    from imatch_s2ld.ba import BundleProblem, solve
    problem = BundleProblem.from_arrays(K, poses, points, obs_frame, obs_point, obs_xy, fixed_frames=(0,))
    result = solve(problem)            # result.poses (N, 4, 4), result.points (M, 3), result.rms_px, ...

From a matcher's output for a window of frames::

    rec = reconstruct_window(keypoints, pair_matches, K)   # tracks -> initialisation -> BA
    frame_kpt, target_xy, weight = rec.keypoint_targets()
"""

from .config import BACKENDS, DEFAULT_CONF, ba_conf
from .initialize import InitResult, initialize_window, triangulate_tracks
from .pipeline import WindowReconstruction, reconstruct_window
from .problem import BAResult, BundleProblem, poses_to_se3
from .robust import KERNELS, robust_rho, robust_weight
from .solve import solve
from .synthetic import (
    SyntheticBA,
    SyntheticWindow,
    make_synthetic_problem,
    pose_errors,
    synthetic_window,
    window_from_observations,
)
from .tracks import Keypoints, PairMatches, Tracks, build_tracks

__all__ = [
    "BACKENDS", "BAResult", "BundleProblem", "DEFAULT_CONF", "InitResult", "KERNELS", "Keypoints",
    "PairMatches", "SyntheticBA", "SyntheticWindow", "Tracks", "WindowReconstruction", "ba_conf",
    "build_tracks", "initialize_window", "make_synthetic_problem", "pose_errors", "poses_to_se3",
    "reconstruct_window", "robust_rho", "robust_weight", "solve", "synthetic_window", "triangulate_tracks",
    "window_from_observations",
]
