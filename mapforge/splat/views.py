"""The views of a data set as the rasterizer sees them: pinhole cameras (undistorted if need be) with poses."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mapforge.datasets.base import Dataset
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.geometry.undistortion import undistort_image, undistorted_camera
from mapforge.scene import Camera
from mapforge.training.bounds import camera_extent


@dataclass
class PinholeView:
    """One image of a data set as the rasterizer sees it: a pinhole camera (undistorted if need be) and a pose."""

    index: int
    name: str
    camera: Camera
    cam_from_world: Rigid3
    source_camera: Camera

    def viewmat(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """`[4, 4]` float32 cam_from_world."""
        return torch.as_tensor(self.cam_from_world.matrix4(), dtype=torch.float32, device=device)

    def load_image(self, dataset: Dataset) -> np.ndarray:
        """The image `[H, W, 3]` float32, undistorted into `camera` when the source camera has distortion."""
        image = dataset.load_image(self.index)
        if self.source_camera.has_distortion:
            image, _ = undistort_image(image, self.source_camera, self.camera)
        return image


def pinhole_views(dataset: Dataset, indices: list[int] | None = None) -> list[PinholeView]:
    """`PinholeView`s of `indices` (default: all images); distorted cameras are replaced by `undistorted_camera`."""
    if dataset.cam_from_world is None:
        raise InputError(f"data set {dataset.name} has no camera poses; run structure from motion first (mapforge sfm)")
    indices = list(range(len(dataset))) if indices is None else list(indices)
    undistorted: dict[int, Camera] = {}
    views = []
    for i in indices:
        camera = dataset.cameras[i]
        if id(camera) not in undistorted:
            undistorted[id(camera)] = undistorted_camera(camera)
        views.append(PinholeView(i, dataset.image_names[i], undistorted[id(camera)], dataset.cam_from_world[i], camera))
    return views


def scene_extent(views: list[PinholeView]) -> float:
    """3DGS's scene scale of the cameras of `views` (see `camera_extent`)."""
    return camera_extent([view.cam_from_world for view in views])
