"""The spine's data model: cameras, images, 3D points and the reconstruction that holds them.

Mirrors COLMAP's model (and pycolmap's names): ids are the keys of the reconstruction's dicts, poses are
`cam_from_world` in OpenCV axes, keypoints are pixels with the top-left pixel's centre at (0.5, 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.cameras import CAMERA_MODELS, calibration_matrix, project, scale_params, unproject
from mapforge.geometry.transforms import Rigid3


@dataclass
class Camera:
    """An intrinsic camera. `model` is a COLMAP model name, `params` follow COLMAP's order for that model."""

    model: str
    width: int
    height: int
    params: np.ndarray

    def __post_init__(self) -> None:
        if self.model not in CAMERA_MODELS:
            raise InputError(f"unknown camera model {self.model!r} (known: {', '.join(CAMERA_MODELS)})")
        self.params = np.asarray(self.params, dtype=np.float64).reshape(-1)
        expected = CAMERA_MODELS[self.model].num_params
        if self.params.size != expected:
            raise InputError(f"camera model {self.model} takes {expected} parameters, got {self.params.size}")
        self.width, self.height = int(self.width), int(self.height)

    @property
    def K(self) -> np.ndarray:
        """The `[3, 3]` calibration matrix (focal lengths and principal point; distortion is not in it)."""
        return calibration_matrix(self.model, self.params)

    @property
    def has_distortion(self) -> bool:
        return not CAMERA_MODELS[self.model].pinhole

    def project(self, points_cam: np.ndarray) -> np.ndarray:
        """Camera-frame points `[N, 3]` to pixels `[N, 2]`."""
        return project(self.model, self.params, points_cam)

    def unproject(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels `[N, 2]` to camera-frame rays `[N, 3]` with z = 1 (not normalised)."""
        return unproject(self.model, self.params, pixels)

    def scaled(self, factor: float) -> Camera:
        """The same camera for an image resized by `factor` (e.g. 0.5 for half size)."""
        width = int(round(self.width * factor))
        height = int(round(self.height * factor))
        return Camera(self.model, width, height, scale_params(self.model, self.params, width / self.width, height / self.height))

    def copy(self) -> Camera:
        return Camera(self.model, self.width, self.height, self.params.copy())


@dataclass
class Image:
    """A posed image. `keypoints: [N, 2]` pixels, `point3D_ids: [N]` int64 with -1 for unmatched keypoints."""

    name: str
    camera_id: int
    cam_from_world: Rigid3 = field(default_factory=Rigid3)
    keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    point3D_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        self.keypoints = np.asarray(self.keypoints, dtype=np.float64).reshape(-1, 2)
        self.point3D_ids = np.asarray(self.point3D_ids, dtype=np.int64).reshape(-1)
        if len(self.point3D_ids) != len(self.keypoints):
            raise ValueError(f"image {self.name}: {len(self.keypoints)} keypoints but {len(self.point3D_ids)} point ids")

    @property
    def world_from_cam(self) -> Rigid3:
        return self.cam_from_world.inverse()

    @property
    def center(self) -> np.ndarray:
        """The camera centre in world coordinates, `[3]`."""
        return -self.cam_from_world.rotation.T @ self.cam_from_world.translation

    @property
    def num_points3D(self) -> int:
        return int((self.point3D_ids >= 0).sum())


@dataclass
class Point3D:
    """A triangulated point. `xyz: [3]`, `rgb: [3]` uint8, `error` in pixels, `track: [M, 2]` (image_id, keypoint index)."""

    xyz: np.ndarray
    rgb: np.ndarray = field(default_factory=lambda: np.zeros(3, dtype=np.uint8))
    error: float = -1.0
    track: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=np.int64))

    def __post_init__(self) -> None:
        self.xyz = np.asarray(self.xyz, dtype=np.float64).reshape(3)
        self.rgb = np.asarray(self.rgb, dtype=np.uint8).reshape(3)
        self.error = float(self.error)
        self.track = np.asarray(self.track, dtype=np.int64).reshape(-1, 2)


@dataclass
class Reconstruction:
    """Cameras, images and points keyed by their ids, as in a COLMAP model."""

    cameras: dict[int, Camera] = field(default_factory=dict)
    images: dict[int, Image] = field(default_factory=dict)
    points3D: dict[int, Point3D] = field(default_factory=dict)

    def image_by_name(self, name: str) -> tuple[int, Image]:
        for image_id, image in self.images.items():
            if image.name == name:
                return image_id, image
        raise KeyError(name)

    def points_xyz(self) -> np.ndarray:
        """All point positions, `[N, 3]`, in the order of `points3D`."""
        if not self.points3D:
            return np.zeros((0, 3))
        return np.stack([p.xyz for p in self.points3D.values()])

    def points_rgb(self) -> np.ndarray:
        """All point colours, `[N, 3]` uint8, in the order of `points3D`."""
        if not self.points3D:
            return np.zeros((0, 3), dtype=np.uint8)
        return np.stack([p.rgb for p in self.points3D.values()])

    def reprojection_errors(self) -> np.ndarray:
        """The pixel distance between every observation and its point's projection, `[num_observations]`.

        Observations behind their camera are left out.
        """
        if not self.points3D:
            return np.zeros(0)
        xyz = self.points_xyz()
        tracks = [p.track for p in self.points3D.values()]
        obs = np.concatenate(tracks)  # [M, 2] (image_id, keypoint_index)
        point_index = np.repeat(np.arange(len(tracks)), [len(t) for t in tracks])
        errors = []
        for image_id in np.unique(obs[:, 0]):
            sel = obs[:, 0] == image_id
            image = self.images[int(image_id)]
            p_cam = image.cam_from_world.apply(xyz[point_index[sel]])
            front = p_cam[:, 2] > 0
            projected = self.cameras[image.camera_id].project(p_cam[front])
            errors.append(np.linalg.norm(projected - image.keypoints[obs[sel, 1][front]], axis=1))
        return np.concatenate(errors)

    def track_lengths(self) -> np.ndarray:
        """Track length of every point, `[N]`."""
        return np.asarray([len(p.track) for p in self.points3D.values()], dtype=np.int64)


# ---------------------------------------------------------------------------------------------------------------
# Checks of what a file says, done once by each reader of cameras and poses


def check_finite(values: np.ndarray | list[float], what: str, where: str) -> None:
    """Raise `InputError` ("`where`: NaN in `what`") unless every number of `values` is finite."""
    array = np.asarray(values, dtype=np.float64)
    if np.isnan(array).any():
        raise InputError(f"{where}: NaN in {what}")
    if not np.isfinite(array).all():
        raise InputError(f"{where}: infinity in {what}")


def check_camera(camera: Camera, what: str, where: str) -> Camera:
    """`camera` when its parameters are finite, its size and focal lengths positive and its principal point not
    negative; otherwise `InputError` naming the problem (`what`: e.g. "camera 3", `where`: the file)."""
    check_finite(camera.params, f"the parameters of {what}", where)
    if camera.width < 1 or camera.height < 1:
        raise InputError(f"{where}: {what} is {camera.width}x{camera.height} pixels; width and height must be positive")
    model = CAMERA_MODELS[camera.model]
    focals = camera.params[list(model.focal_idxs)]
    if (focals <= 0).any():
        raise InputError(f"{where}: {what} has focal length {focals.min():g}; focal lengths must be positive")
    principal_point = camera.params[list(model.principal_point_idxs)]
    if (principal_point < 0).any():
        raise InputError(f"{where}: {what} has principal point ({', '.join(f'{v:g}' for v in principal_point)}); "
                         "its coordinates must not be negative")
    return camera
