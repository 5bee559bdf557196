"""Middlebury multi-view stereo sets (Seitz et al. 2006): images beside a `<name>_par.txt` calibration file.

`_par.txt` starts with the image count, then one line per image: `name k11..k33 r11..r33 t1 t2 t3`, where the
projection is K [R | t], i.e. R, t are cam_from_world in OpenCV axes (image origin top-left, y down). K is used
as given: the Middlebury README does not state a pixel-centre convention, and the half-pixel question is far
below the calibration's accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.loaders import check_downscale, downscale_cameras, image_loader
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.images import image_size
from mapforge.scene import Camera, check_camera, check_finite

# No official split; hold out every 8th view as for the other data without one.
TEST_EVERY = 8


def par_files(path: Path) -> list[Path]:
    return sorted(path.glob("*_par.txt"))


def is_middlebury(path: Path) -> bool:
    return bool(par_files(path))


def read_par(file: Path) -> list[tuple[str, np.ndarray, Rigid3]]:
    """`*_par.txt` -> `[(image name, K [3, 3], cam_from_world)]` in file order."""
    lines = [line.split() for line in file.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    if not lines:
        raise InputError(f"{file}: empty calibration file")
    if len(lines[0]) == 1:
        count = lines[0][0]
        lines = lines[1:]
        if not count.isdigit() or int(count) != len(lines):
            raise InputError(f"{file}: header says {count} images but {len(lines)} lines follow")
    entries = []
    for number, fields in enumerate(lines, start=2):
        if len(fields) != 22:
            raise InputError(f"{file}: line {number} has {len(fields)} fields, expected 22 (name, K 9, R 9, t 3)")
        try:
            values = np.array([float(v) for v in fields[1:]])
        except ValueError as exc:
            raise InputError(f"{file}: line {number}: {exc}") from exc
        check_finite(values, f"the calibration of {fields[0]}", f"{file}:{number}")
        K = values[:9].reshape(3, 3)
        rotation = values[9:18].reshape(3, 3)
        if np.abs(rotation @ rotation.T - np.eye(3)).max() > 1e-4 or abs(K[2, 2] - 1) > 1e-9:
            raise InputError(f"{file}: line {number}: R is not a rotation or K[2, 2] != 1")
        u, _, vt = np.linalg.svd(rotation)
        entries.append((fields[0], K, Rigid3(u @ vt, values[18:21])))
    return entries


def load_middlebury(path: str | Path, downscale: int = 1) -> Dataset:
    """Read a Middlebury MVS folder (the first `*_par.txt` in it). Every 8th image is a test image."""
    path = Path(path)
    downscale = check_downscale(downscale)
    files = par_files(path)
    if not files:
        raise InputError(f"{path}: no *_par.txt calibration file")
    entries = read_par(files[0])
    paths, cameras, poses = [], [], []
    shared: dict[tuple, Camera] = {}
    for name, K, pose in entries:
        image_path = path / name
        if not image_path.is_file():
            raise InputError(f"{files[0]}: image {name} not found in {path}")
        if abs(K[0, 1]) > 1e-6 * K[0, 0]:
            raise InputError(f"{files[0]}: image {name} has a skewed K, which mapforge cameras cannot represent")
        width, height = image_size(image_path)
        key = (width, height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        if key not in shared:
            shared[key] = check_camera(Camera("PINHOLE", width, height, list(key[2:])), f"the camera of {name}",
                                       str(files[0]))
        cameras.append(shared[key])
        paths.append(image_path)
        poses.append(pose)
    cameras = downscale_cameras(cameras, downscale)
    return Dataset(
        name=path.name,
        image_names=[name for name, _, _ in entries],
        cameras=cameras,
        cam_from_world=poses,
        split=every_nth_split(len(paths), TEST_EVERY),
        loader=image_loader(paths, cameras, downscale),
        image_dir=path,
        image_paths=paths,
        metadata={"layout": "middlebury", "calibration": files[0]},
    )
