"""Undistortion into a dense workspace: a model and its photos to PINHOLE cameras and images, as COLMAP's
`image_undistorter` does (valid pixels only, `max_image_size` on the longer side)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.undistortion import undistort_image, undistorted_camera
from mapforge.io.colmap import model_format, read_model, write_model
from mapforge.io.images import image_size, read_rgb, write_image
from mapforge.mvs.workspace import Workspace
from mapforge.scene import Camera, Image, Reconstruction

_WRITABLE = (".png", ".jpg", ".jpeg")


def target_camera(camera: Camera, max_image_size: int) -> Camera:
    """The PINHOLE camera an image of `camera` is undistorted into, its longer side at most `max_image_size`
    (0 = no limit)."""
    target = undistorted_camera(camera)
    longest = max(target.width, target.height)
    if max_image_size and longest > max_image_size:
        target = target.scaled(max_image_size / longest)
    return target


def undistorted_name(name: str) -> str:
    """The workspace name of image `name`: the same, with `.png` appended when the format cannot be written."""
    return name if Path(name).suffix.lower() in _WRITABLE else f"{name}.png"


def _check_images(rec: Reconstruction, image_dir: Path) -> None:
    if not rec.images:
        raise InputError("the model has no registered images")
    for image in rec.images.values():
        path = image_dir / image.name
        if not path.is_file():
            raise InputError(f"image {image.name} of the model is not in {image_dir}")
        width, height = image_size(path)
        camera = rec.cameras[image.camera_id]
        if (width, height) != (camera.width, camera.height):
            raise InputError(
                f"image {image.name} is {width}x{height} but its camera in the model is {camera.width}x{camera.height}"
            )


def _undistorted_model(rec: Reconstruction, targets: dict[int, Camera]) -> Reconstruction:
    out = Reconstruction(cameras=dict(targets), points3D=rec.points3D)
    for image_id, image in rec.images.items():
        camera, target = rec.cameras[image.camera_id], targets[image.camera_id]
        keypoints = image.keypoints
        if len(keypoints):
            keypoints = target.project(camera.unproject(keypoints))
        out.images[image_id] = Image(undistorted_name(image.name), image.camera_id, image.cam_from_world, keypoints, image.point3D_ids)
    return out


def _is_done(workspace: Workspace, expected: Reconstruction) -> bool:
    """True when the workspace already holds exactly these undistorted cameras, poses and images."""
    if model_format(workspace.sparse) is None:
        return False
    try:
        done = read_model(workspace.sparse)
    except InputError:
        return False
    same_cameras = done.cameras.keys() == expected.cameras.keys() and all(
        (c.width, c.height) == (e.width, e.height) and np.allclose(c.params, e.params)
        for c, e in ((done.cameras[k], expected.cameras[k]) for k in expected.cameras)
    )
    same_images = {i.name for i in done.images.values()} == {i.name for i in expected.images.values()}
    return same_cameras and same_images and all((workspace.images / i.name).is_file() for i in expected.images.values())


def undistort(rec: Reconstruction, image_dir: str | Path, workspace: Workspace, max_image_size: int = 0, workers: int = 2) -> Reconstruction:
    """Undistort the model's images from `image_dir` into `workspace` (images/ and sparse/); returns the
    undistorted model. An existing workspace with the same cameras and images is kept as it is."""
    image_dir = Path(image_dir)
    _check_images(rec, image_dir)
    targets = {camera_id: target_camera(camera, max_image_size) for camera_id, camera in rec.cameras.items()}
    model = _undistorted_model(rec, targets)
    if _is_done(workspace, model):
        return model

    def one(image_id: int) -> None:
        image = rec.images[image_id]
        pixels = read_rgb(image_dir / image.name)
        undistorted, _ = undistort_image(pixels, rec.cameras[image.camera_id], targets[image.camera_id])
        write_image(workspace.images / undistorted_name(image.name), undistorted)

    workspace.images.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(one, sorted(rec.images)))
    write_model(model, workspace.sparse, "bin")
    return model
