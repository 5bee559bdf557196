"""A tiny analytic scene for the NeRF tests: a sphere coloured by its surface normal, over a white background."""

from __future__ import annotations

import math

import numpy as np

from mapforge.datasets.base import Dataset
from mapforge.geometry.transforms import Rigid3
from mapforge.nerf.rays import camera_rays
from mapforge.scene import Camera


def look_at(centre: np.ndarray, target: np.ndarray = np.zeros(3), up: np.ndarray = np.array([0.0, 0.0, 1.0])) -> Rigid3:
    """`cam_from_world` of a camera at `centre` looking at `target` (OpenCV axes, image up ~ world `up`)."""
    z = target - centre
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    rotation = np.stack([x, y, z])
    return Rigid3(rotation, -rotation @ centre)


def sphere_dataset(num_views: int = 3, size: int = 40, radius: float = 0.6, distance: float = 2.5) -> Dataset:
    """`num_views` views of a normal-coloured sphere of `radius` at the origin; all views are train and test."""
    focal = size / 2 / math.tan(math.radians(25))
    camera = Camera("PINHOLE", size, size, [focal, focal, size / 2, size / 2])
    poses, images = [], []
    for k in range(num_views):
        angle = 2 * math.pi * k / num_views
        centre = distance * np.array([math.cos(angle), math.sin(angle), 0.3])
        pose = look_at(centre)
        origins, directions, _ = camera_rays(camera, pose)
        b = np.einsum("ij,ij->i", origins, directions)
        c = np.einsum("ij,ij->i", origins, origins) - radius**2
        disc = b * b - c
        hit = disc > 0
        t = -b - np.sqrt(np.maximum(disc, 0))
        normals = (origins + t[:, None] * directions) / radius
        rgb = np.where(hit[:, None], 0.5 + 0.45 * normals, 1.0)
        poses.append(pose)
        images.append(rgb.reshape(size, size, 3).astype(np.float32))
    return Dataset(
        name="sphere",
        image_names=[f"{k}.png" for k in range(num_views)],
        cameras=[camera] * num_views,
        cam_from_world=poses,
        split={"train": list(range(num_views)), "test": list(range(num_views))},
        loader=lambda i: images[i].copy(),
        background=np.ones(3, dtype=np.float32),
        metadata={"aabb": np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])},
    )
