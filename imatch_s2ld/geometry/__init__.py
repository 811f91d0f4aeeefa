"""Geometry core: batched torch camera/pose/epipolar functions, pose estimation and metrics.

Conventions: :mod:`imatch_s2ld.conventions`.
"""

from .camera import from_homogeneous, project, scale_intrinsics, to_homogeneous, transform_points, unproject
from .epipolar import sampson_distance, symmetric_epipolar_distance
from .estimate import ESTIMATORS, RelativePose, describe_estimator, estimate_relative_pose
from .metrics import matching_accuracy, mean_matching_accuracy, pose_auc
from .pose import (
    essential_from_pose,
    fundamental_from_essential,
    invert_pose,
    pose_error,
    relative_pose,
    rotation_error_deg,
    skew,
    translation_error_deg,
)
from .triangulation import (
    camera_centers,
    reprojection_residuals,
    triangulate_dlt,
    triangulate_pair,
    triangulation_angle,
)
from .warp import sample_depth_nearest, warp_keypoints

__all__ = [
    "camera_centers", "reprojection_residuals", "triangulate_dlt", "triangulate_pair", "triangulation_angle",
    "ESTIMATORS", "RelativePose", "describe_estimator", "essential_from_pose", "estimate_relative_pose",
    "from_homogeneous", "fundamental_from_essential", "invert_pose", "matching_accuracy",
    "mean_matching_accuracy", "pose_auc", "pose_error", "project", "relative_pose", "rotation_error_deg",
    "sample_depth_nearest", "sampson_distance", "scale_intrinsics", "skew", "symmetric_epipolar_distance",
    "to_homogeneous", "transform_points", "translation_error_deg", "unproject", "warp_keypoints",
]
