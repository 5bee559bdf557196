"""Rigid and similarity transforms in float64, named `X_from_Y` by the frames they map between.

`cam_from_world.apply(p_world)` gives the point in camera coordinates (OpenCV axes: x right, y down, z forward).
Composition reads like the names: `a_from_c = a_from_b * b_from_c`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mapforge.geometry.rotations import matrix_to_quat, quat_to_matrix


def _as_rotation(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3):
        raise ValueError(f"rotation must be 3x3, got {matrix.shape}")
    return matrix


@dataclass
class Rigid3:
    """A rigid transform `x -> R x + t`. `rotation: [3, 3]`, `translation: [3]`, both float64."""

    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.rotation = _as_rotation(self.rotation)
        self.translation = np.asarray(self.translation, dtype=np.float64).reshape(3)

    @classmethod
    def from_quat(cls, quat_wxyz: np.ndarray, translation: np.ndarray) -> Rigid3:
        """From a COLMAP quaternion `[4]` (w, x, y, z) and a translation `[3]`."""
        return cls(quat_to_matrix(np.asarray(quat_wxyz, dtype=np.float64)), translation)

    @classmethod
    def from_matrix(cls, matrix: np.ndarray) -> Rigid3:
        """From a `[3, 4]` or `[4, 4]` matrix `[R | t]`."""
        matrix = np.asarray(matrix, dtype=np.float64)
        return cls(matrix[:3, :3], matrix[:3, 3])

    @property
    def quat(self) -> np.ndarray:
        """The rotation as a unit quaternion `[4]` (w, x, y, z), w >= 0."""
        return matrix_to_quat(self.rotation)

    def matrix(self) -> np.ndarray:
        """The `[3, 4]` matrix `[R | t]`."""
        return np.concatenate([self.rotation, self.translation[:, None]], axis=1)

    def matrix4(self) -> np.ndarray:
        """The homogeneous `[4, 4]` matrix."""
        out = np.eye(4)
        out[:3] = self.matrix()
        return out

    def inverse(self) -> Rigid3:
        rot_t = self.rotation.T
        return Rigid3(rot_t, -rot_t @ self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points `[..., 3]`."""
        return np.asarray(points, dtype=np.float64) @ self.rotation.T + self.translation

    def __mul__(self, other: Rigid3) -> Rigid3:
        return Rigid3(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def copy(self) -> Rigid3:
        return Rigid3(self.rotation.copy(), self.translation.copy())


@dataclass
class Sim3:
    """A similarity transform `x -> s R x + t`. `scale: float`, `rotation: [3, 3]`, `translation: [3]`."""

    scale: float = 1.0
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def __post_init__(self) -> None:
        self.scale = float(self.scale)
        self.rotation = _as_rotation(self.rotation)
        self.translation = np.asarray(self.translation, dtype=np.float64).reshape(3)

    def matrix(self) -> np.ndarray:
        """The `[3, 4]` matrix `[s R | t]`."""
        return np.concatenate([self.scale * self.rotation, self.translation[:, None]], axis=1)

    def inverse(self) -> Sim3:
        rot_t = self.rotation.T
        return Sim3(1.0 / self.scale, rot_t, -rot_t @ self.translation / self.scale)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points `[..., 3]`."""
        return self.scale * (np.asarray(points, dtype=np.float64) @ self.rotation.T) + self.translation

    def __mul__(self, other: Sim3) -> Sim3:
        return Sim3(
            self.scale * other.scale,
            self.rotation @ other.rotation,
            self.scale * (self.rotation @ other.translation) + self.translation,
        )

    def transform_pose(self, cam_from_world: Rigid3) -> Rigid3:
        """Re-express a `cam_from_world` pose in the new world frame `new_from_world = self`.

        Returns `cam_from_new` such that a point `p` and its image `self.apply(p)` project identically
        (camera translations are scaled along with the scene).
        """
        rotation = cam_from_world.rotation @ self.rotation.T
        translation = self.scale * cam_from_world.translation - rotation @ self.translation
        return Rigid3(rotation, translation)
