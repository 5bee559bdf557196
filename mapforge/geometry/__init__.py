"""Shared geometry: rotations, rigid and similarity transforms, camera models, triangulation, alignment."""

from mapforge.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quat,
    quat_to_matrix,
    rotation_angle_deg,
)
from mapforge.geometry.transforms import Rigid3, Sim3

__all__ = [
    "Rigid3",
    "Sim3",
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_quat",
    "quat_to_matrix",
    "rotation_angle_deg",
]
