"""Bundle adjustment on PyPose: problem, sparse Schur Levenberg-Marquardt solver, reference backends,
tracks and initialisation from matches.

Stable contract::

    from imatch_s2ld.ba import BundleProblem, solve
    problem = BundleProblem.from_arrays(K, poses, points, obs_frame, obs_point, obs_xy, fixed_frames=(0,))
    result = solve(problem)            # result.poses (N, 4, 4), result.points (M, 3), result.rms_px, ...
"""

from .config import BACKENDS, DEFAULT_CONF, ba_conf
from .problem import BAResult, BundleProblem, poses_to_se3
from .robust import KERNELS, robust_rho, robust_weight
from .solve import solve
from .synthetic import SyntheticBA, make_synthetic_problem, pose_errors

__all__ = [
    "BACKENDS", "BAResult", "BundleProblem", "DEFAULT_CONF", "KERNELS", "SyntheticBA", "ba_conf",
    "make_synthetic_problem", "pose_errors", "poses_to_se3", "robust_rho", "robust_weight", "solve",
]
