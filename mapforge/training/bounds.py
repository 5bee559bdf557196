"""Where the cameras look: the scene's scale and a box around what the cameras see, from the poses alone."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mapforge.geometry.transforms import Rigid3


def camera_centers(cams_from_world: Sequence[Rigid3]) -> np.ndarray:
    """`[N, 3]` camera centres in world coordinates."""
    return np.stack([pose.inverse().translation for pose in cams_from_world])


def camera_extent(cams_from_world: Sequence[Rigid3]) -> float:
    """3DGS's scene scale: 1.1 times the largest distance of a camera centre from their mean (1 if degenerate)."""
    centers = camera_centers(cams_from_world)
    radius = float(np.linalg.norm(centers - centers.mean(axis=0), axis=1).max()) * 1.1
    return radius if radius > 1e-6 else 1.0


def focus_box(cams_from_world: Sequence[Rigid3], half_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A cube `(low [3], high [3])` around the point closest to all optical axes (least squares), with half side
    `half_scale` times the median camera distance to it. Falls back to the camera centroid when the axes are
    near parallel or the point lies behind most cameras, and to `camera_extent` when the distance vanishes."""
    centers = camera_centers(cams_from_world)
    axes = np.stack([pose.rotation[2] for pose in cams_from_world])
    projectors = np.eye(3)[None] - axes[:, :, None] * axes[:, None, :]
    system = projectors.sum(axis=0)
    rhs = np.einsum("nij,nj->i", projectors, centers)
    focus = centers.mean(axis=0)
    if np.linalg.cond(system) < 1e6:
        candidate = np.linalg.solve(system, rhs)
        if np.mean(np.einsum("ij,ij->i", candidate - centers, axes) > 0) > 0.5:
            focus = candidate
    distance = float(np.median(np.linalg.norm(centers - focus, axis=1)))
    half = half_scale * (distance if distance > 1e-6 else camera_extent(cams_from_world))
    return focus - half, focus + half
