"""Strecha et al. (CVPR 2008) multi-view benchmark: `images/` and `gt_dense_cameras/<image name>.camera`.

A `.camera` file has 9 lines: K (3 rows), radial distortion (3 numbers, zero in the published sets), R (3 rows,
camera-to-world rotation), the camera centre C, and "width height". Hence cam_from_world = (R^T, -R^T C).
K is used as given (the benchmark does not state a pixel-centre convention).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.loaders import check_downscale, check_image_sizes, downscale_cameras, image_loader
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera, check_camera, check_finite

CAMERA_FOLDER = "gt_dense_cameras"
# No official split; hold out every 8th view as for the other data without one.
TEST_EVERY = 8


def is_strecha(path: Path) -> bool:
    return (path / CAMERA_FOLDER).is_dir() and any((path / CAMERA_FOLDER).glob("*.camera"))


def read_camera_file(file: Path) -> tuple[Camera, Rigid3]:
    """One `.camera` file -> (PINHOLE camera, cam_from_world)."""
    try:
        rows = [[float(v) for v in line.split()] for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
    except ValueError as exc:
        raise InputError(f"{file}: not a Strecha .camera file ({exc})") from exc
    if len(rows) < 9 or [len(r) for r in rows[:9]] != [3, 3, 3, 3, 3, 3, 3, 3, 2]:
        raise InputError(f"{file}: expected 9 lines (K 3x3, distortion 3, R 3x3, centre 3, width height)")
    check_finite([v for row in rows[:9] for v in row], "the calibration and pose", str(file))
    K = np.array(rows[0:3])
    if any(rows[3]):
        raise InputError(f"{file}: non-zero radial distortion {rows[3]} is not supported (its model is undocumented)")
    world_from_cam_rotation = np.array(rows[4:7])
    if np.abs(world_from_cam_rotation.T @ world_from_cam_rotation - np.eye(3)).max() > 1e-4:
        raise InputError(f"{file}: R is not a rotation")
    u, _, vt = np.linalg.svd(world_from_cam_rotation)
    centre = np.array(rows[7])
    width, height = int(rows[8][0]), int(rows[8][1])
    camera = check_camera(Camera("PINHOLE", width, height, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]), "K", str(file))
    return camera, Rigid3(u @ vt, centre).inverse()


def load_strecha(path: str | Path, downscale: int = 1) -> Dataset:
    """Read a Strecha folder; images are those with a `.camera` file, sorted by name. Every 8th is a test image."""
    path = Path(path)
    downscale = check_downscale(downscale)
    files = sorted((path / CAMERA_FOLDER).glob("*.camera"))
    if not files:
        raise InputError(f"{path}: no {CAMERA_FOLDER}/*.camera files")
    image_dir = path / "images"
    paths, cameras, poses = [], [], []
    shared: dict[tuple, Camera] = {}
    for file in files:
        image_path = image_dir / file.name[: -len(".camera")]
        if not image_path.is_file():
            raise InputError(f"{file}: its image {image_path} does not exist")
        camera, pose = read_camera_file(file)
        paths.append(image_path)
        cameras.append(shared.setdefault((camera.width, camera.height, tuple(camera.params)), camera))
        poses.append(pose)
    check_image_sizes(paths, cameras)
    cameras = downscale_cameras(cameras, downscale)
    return Dataset(
        name=path.name,
        image_names=[p.name for p in paths],
        cameras=cameras,
        cam_from_world=poses,
        split=every_nth_split(len(paths), TEST_EVERY),
        loader=image_loader(paths, cameras, downscale),
        image_dir=image_dir,
        image_paths=paths,
        metadata={"layout": "strecha"},
    )
