"""Rays of posed cameras, and LLFF's normalised device coordinates for forward-facing scenes."""

from __future__ import annotations

import numpy as np
import torch

from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera


def pixel_centres(width: int, height: int) -> np.ndarray:
    """All pixel centres `[H*W, 2]` (x, y) in row-major order; the top-left centre is (0.5, 0.5) (COLMAP)."""
    xs, ys = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    return np.stack([xs.ravel(), ys.ravel()], -1)


def camera_rays(
    camera: Camera, cam_from_world: Rigid3, pixels: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World rays through `pixels [N, 2]` (default: every pixel centre, row-major) of any camera model.

    Returns `origins [N, 3]`, unit `directions [N, 3]` (float64, world frame) and `z_per_distance [N]`, the
    camera-frame z of each unit direction (a distance `t` along the ray is at depth `t * z_per_distance`).
    """
    if pixels is None:
        pixels = pixel_centres(camera.width, camera.height)
    rays_cam = np.asarray(camera.unproject(np.asarray(pixels, dtype=np.float64)), dtype=np.float64)  # z = 1
    norms = np.linalg.norm(rays_cam, axis=-1)
    directions = (rays_cam / norms[:, None]) @ cam_from_world.rotation  # R^T d, row-vector form
    centre = -cam_from_world.rotation.T @ cam_from_world.translation
    origins = np.broadcast_to(centre, directions.shape).copy()
    return origins, directions, 1.0 / norms


def forward_facing_frame(cams_from_world: list[Rigid3]) -> Rigid3:
    """`frame_from_world` of the mean camera of a forward-facing capture: origin at the mean centre, +z the mean
    viewing direction, +y the mean image-down direction (OpenCV axes), for `ndc_rays`."""
    rotations = np.stack([p.rotation for p in cams_from_world])
    centres = np.stack([-p.rotation.T @ p.translation for p in cams_from_world])
    forward = rotations[:, 2].mean(0)
    down = rotations[:, 1].mean(0)
    z = forward / np.linalg.norm(forward)
    x = np.cross(down, z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z])  # rows: frame axes in world coordinates
    return Rigid3(rotation, -rotation @ centres.mean(0))


def ndc_rays(
    origins: torch.Tensor, directions: torch.Tensor, fx: float, fy: float, width: int, height: int, near: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map rays `[N, 3]` given in a forward-facing frame (+z forward, see `forward_facing_frame`) to NDC.

    NeRF's appendix C, written for OpenCV axes: the frustum from the plane z = `near` to infinity becomes the
    cube [-1, 1]^3 (x_ndc = fx / (W/2) * x / z, y_ndc = fy / (H/2) * y / z, z_ndc = 1 - 2 near / z). Origins are
    first moved along their rays onto z = `near`; the NDC ray reaches z_ndc = 1 (infinity) at t = 1, so NDC
    rays are sampled on t in [0, 1]. Returned directions are not unit length.
    """
    t_near = (near - origins[:, 2]) / directions[:, 2]
    origins = origins + t_near[:, None] * directions
    ax, ay = fx / (width / 2.0), fy / (height / 2.0)
    ox, oy, oz = origins.unbind(-1)
    dx, dy, dz = directions.unbind(-1)
    o_ndc = torch.stack([ax * ox / oz, ay * oy / oz, 1.0 - 2.0 * near / oz], -1)
    d_ndc = torch.stack([ax * (dx / dz - ox / oz), ay * (dy / dz - oy / oz), 2.0 * near / oz], -1)
    return o_ndc, d_ndc


def ray_aabb_intersect(
    origins: torch.Tensor, directions: torch.Tensor, aabb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Entry and exit distances `[N]` of rays `[N, 3]` through the box `aabb [2, 3]` (slab method); rays that miss
    get entry > exit."""
    inverse = 1.0 / torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12), directions)
    t0 = (aabb[0] - origins) * inverse
    t1 = (aabb[1] - origins) * inverse
    t_enter = torch.minimum(t0, t1).amax(-1)
    t_exit = torch.maximum(t0, t1).amin(-1)
    return t_enter, t_exit


def ndc_to_frame(points: np.ndarray, fx: float, fy: float, width: int, height: int, near: float) -> np.ndarray:
    """Inverse of `ndc_rays`' point mapping: NDC points `[N, 3]` (z_ndc < 1) back to the forward-facing frame."""
    points = np.asarray(points, dtype=np.float64)
    z = 2.0 * near / np.maximum(1.0 - points[:, 2], 1e-6)
    x = points[:, 0] * z * (width / 2.0) / fx
    y = points[:, 1] * z * (height / 2.0) / fy
    return np.stack([x, y, z], -1)
