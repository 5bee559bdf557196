"""Evaluation metrics: camera poses, rendered images (PSNR, SSIM, LPIPS) and geometry (point clouds, depth)."""

from mapforge.metrics.geometry import (
    PointCloudEvaluation,
    accuracy,
    chamfer_distance,
    completeness,
    depth_errors,
    evaluate_point_cloud,
    precision_recall_fscore,
)
from mapforge.metrics.image import psnr, ssim, ssim_map
from mapforge.metrics.lpips import LPIPS
from mapforge.metrics.pose import (
    PoseEvaluation,
    absolute_pose_errors,
    align_centres,
    evaluate_poses,
    pose_auc,
    relative_pose_errors,
    rra_rta,
    trajectory_error,
)

__all__ = [
    "LPIPS",
    "PointCloudEvaluation",
    "PoseEvaluation",
    "absolute_pose_errors",
    "accuracy",
    "align_centres",
    "chamfer_distance",
    "completeness",
    "depth_errors",
    "evaluate_point_cloud",
    "evaluate_poses",
    "pose_auc",
    "precision_recall_fscore",
    "psnr",
    "relative_pose_errors",
    "rra_rta",
    "ssim",
    "ssim_map",
    "trajectory_error",
]
