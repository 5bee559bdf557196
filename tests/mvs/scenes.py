"""Small views of the built-in synthetic scene with exact depth and normals, shared by the MVS tests."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from mapforge.datasets.base import Dataset
from mapforge.datasets.synthetic import SyntheticConfig, make_scene
from mapforge.mvs.patchmatch.api import StereoView

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


@lru_cache(maxsize=4)
def orbit(width: int, height: int, num_views: int = 30) -> Dataset:
    """The built-in scene on its 30-view orbit (12 degrees apart)."""
    return make_scene(SyntheticConfig(width=width, height=height, num_views=num_views))


def grey(dataset: Dataset, index: int) -> np.ndarray:
    return np.ascontiguousarray(dataset.load_image(index) @ LUMA)


def view(dataset: Dataset, index: int, device: str = "cpu", depth: bool = False) -> StereoView:
    """A `StereoView` of view `index`; with `depth`, carrying its exact depth map."""
    image = torch.from_numpy(grey(dataset, index)).to(device)
    depth_map = torch.from_numpy(dataset.load_depth(index)).to(device) if depth else None
    return StereoView(image, dataset.cameras[index].K, dataset.cam_from_world[index], depth_map)


def exact_normals(dataset: Dataset, index: int) -> np.ndarray:
    """`[H, W, 3]` float32 surface normals in camera `index`'s frame, facing the camera."""
    camera, pose = dataset.cameras[index], dataset.cam_from_world[index]
    cols, rows = np.meshgrid(np.arange(camera.width) + 0.5, np.arange(camera.height) + 0.5)
    rays = camera.unproject(np.stack([cols.ravel(), rows.ravel()], 1))
    world_rays = rays @ pose.rotation  # R^T applied to row vectors
    hits = dataset.metadata["scene"].cast_rays(pose.inverse().translation, world_rays)
    normals = hits.normals @ pose.rotation.T
    facing = np.where((normals * rays).sum(1, keepdims=True) > 0, -normals, normals)
    return facing.reshape(camera.height, camera.width, 3).astype(np.float32)


def relative_errors(depth: np.ndarray, truth: np.ndarray) -> np.ndarray:
    valid = depth > 0
    return np.abs(depth[valid] - truth[valid]) / truth[valid]
