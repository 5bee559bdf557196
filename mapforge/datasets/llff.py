"""LLFF forward-facing captures: `poses_bounds.npy` beside `images/` and/or downsampled `images_N/` folders.

`poses_bounds.npy` is `[N, 17]`, one row per image in sorted file-name order: a `[3, 5]` matrix flattened row by
row, then the near and far scene depths. The matrix is `[c_down | c_right | c_back | C | hwf]`: the first three
columns are the camera's down, right and backward axes in world coordinates, C its centre, and
hwf = (height, width, focal) of the full-resolution images. So in OpenCV axes world_from_cam has columns
(right, down, -back) = (col 1, col 0, -col 2). The world frame is COLMAP's (the file is written from a COLMAP
model, unscaled), so the `sparse/0` points of the capture project with these poses directly.

Intrinsics: a pinhole camera with that focal length and the principal point at the image centre (LLFF ignores
COLMAP's distortion), scaled to the size of the images actually read.

`metadata["forward_facing"]` is True: NeRF trainers then render in LLFF's normalised device coordinates.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.loaders import check_downscale, downscale_cameras, image_loader, list_images
from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.io.images import image_size
from mapforge.scene import Camera, Reconstruction, check_camera, check_finite

# LLFF/NeRF hold out every 8th image (`llffhold = 8`) for testing.
TEST_EVERY = 8


def is_llff(path: Path) -> bool:
    return (path / "poses_bounds.npy").is_file()


def _image_folders(path: Path) -> dict[int, Path]:
    folders = {}
    for child in path.iterdir():
        match = re.fullmatch(r"images(?:_(\d+))?", child.name)
        if child.is_dir() and match:
            folders[int(match.group(1) or 1)] = child
    return folders


def read_poses_bounds(file: Path) -> tuple[list[Rigid3], np.ndarray, np.ndarray]:
    """`poses_bounds.npy` -> (cam_from_world `[N]` in OpenCV axes, hwf `[N, 3]` full-resolution, bounds `[N, 2]`)."""
    try:
        table = np.load(file)
    except (OSError, ValueError) as exc:
        raise InputError(f"{file}: cannot read as a NumPy array ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != 17:
        raise InputError(f"{file}: expected an [N, 17] array, got shape {table.shape}")
    for row, values in enumerate(table):
        check_finite(values[:15], f"the pose of row {row} (image {row} in name order)", str(file))
        check_finite(values[15:], f"the depth bounds of row {row}", str(file))
    matrices = table[:, :15].reshape(-1, 3, 5).astype(np.float64)
    poses = []
    for matrix in matrices:
        rotation = np.stack([matrix[:, 1], matrix[:, 0], -matrix[:, 2]], axis=1)  # world_from_cam, OpenCV axes
        u, _, vt = np.linalg.svd(rotation)
        poses.append(Rigid3(u @ vt, matrix[:, 3]).inverse())
    return poses, matrices[:, :, 4], table[:, 15:17].astype(np.float64)


def load_llff(path: str | Path, factor: int | None = None, downscale: int = 1) -> Dataset:
    """Read an LLFF capture.

    Args:
        factor: read `images_{factor}` (1 = `images`); by default the largest images present.
        downscale: shrink further by this integer factor when loading.

    `near_far` holds the per-image depth bounds, `split` every 8th image as test (LLFF's llffhold), and
    `points` the `sparse/0` points when present (without images: COLMAP's LLFF export omits images.bin).
    """
    path = Path(path)
    downscale = check_downscale(downscale)
    file = path / "poses_bounds.npy"
    if not file.is_file():
        raise InputError(f"{path}: no poses_bounds.npy (not an LLFF capture)")
    poses, hwf, bounds = read_poses_bounds(file)
    folders = _image_folders(path)
    if not folders:
        raise InputError(f"{path}: no images/ or images_N/ folder")
    if factor is None:
        factor = min(folders)
    if factor not in folders:
        wanted = "images" if factor == 1 else f"images_{factor}"
        have = ", ".join(sorted(folder.name for folder in folders.values()))
        raise InputError(f"{path}: no {wanted} folder (have: {have})")
    image_dir = folders[factor]
    paths = list_images(image_dir)
    if len(paths) != len(poses):
        raise InputError(f"{file}: {len(poses)} poses but {len(paths)} images in {image_dir}")
    cameras = []
    shared: dict[tuple, Camera] = {}
    for image_path, (height, width, focal) in zip(paths, hwf):
        actual_w, actual_h = image_size(image_path)
        if abs(actual_h * width / actual_w - height) > max(1.0, width / actual_w):
            raise InputError(
                f"{image_path}: image is {actual_w}x{actual_h}, not the {width:g}x{height:g} aspect of poses_bounds.npy"
            )
        f = focal * actual_w / width
        key = (actual_w, actual_h, f)
        if key not in shared:
            camera = Camera("PINHOLE", actual_w, actual_h, [f, f, actual_w / 2.0, actual_h / 2.0])
            shared[key] = check_camera(camera, f"the camera of {image_path.name}", str(file))
        cameras.append(shared[key])
    cameras = downscale_cameras(cameras, downscale)
    return Dataset(
        name=path.name,
        image_names=[p.name for p in paths],
        cameras=cameras,
        cam_from_world=poses,
        split=every_nth_split(len(paths), TEST_EVERY),
        loader=image_loader(paths, cameras, downscale),
        near_far=bounds,
        points=_sparse_points(path),
        image_dir=image_dir,
        image_paths=paths,
        metadata={"layout": "llff", "full_resolution_hwf": hwf, "forward_facing": True},
    )


def _sparse_points(path: Path) -> Reconstruction | None:
    """The points (and cameras) of `sparse/0`, or None when there is no such model."""
    from mapforge.io import colmap

    folder = path / "sparse" / "0"
    if colmap.model_format(folder) is not None and any((folder / f"images.{e}").is_file() for e in ("bin", "txt")):
        return colmap.read_model(folder)
    for ext, read_cameras, read_points in (
        ("bin", colmap.read_cameras_binary, colmap.read_points3D_binary),
        ("txt", colmap.read_cameras_text, colmap.read_points3D_text),
    ):
        if (folder / f"points3D.{ext}").is_file():
            cameras = read_cameras(folder / f"cameras.{ext}") if (folder / f"cameras.{ext}").is_file() else {}
            return Reconstruction(cameras=cameras, images={}, points3D=read_points(folder / f"points3D.{ext}"))
    return None
