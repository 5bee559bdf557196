"""Pieces every data set reader shares: listing image files, downscaling cameras, lazy image loaders."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.cameras import scale_params
from mapforge.io.images import IMAGE_EXTENSIONS, image_size, read_rgb
from mapforge.scene import Camera


def list_images(folder: Path) -> list[Path]:
    """Image files directly in `folder`, sorted by name (hidden files skipped)."""
    if not folder.is_dir():
        raise InputError(f"image folder not found: {folder}")
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def check_downscale(downscale: int) -> int:
    if isinstance(downscale, bool) or int(downscale) != downscale or downscale < 1:
        raise InputError(f"downscale must be a positive integer, got {downscale!r}")
    return int(downscale)


def share_cameras(cameras: Sequence[Camera]) -> list[Camera]:
    """`cameras` with equal ones (model, size, parameters) replaced by a single shared object."""
    shared: dict[tuple, Camera] = {}
    return [shared.setdefault((c.model, c.width, c.height, tuple(c.params)), c) for c in cameras]


def downscale_cameras(cameras: Sequence[Camera], downscale: int) -> list[Camera]:
    """`cameras` for images shrunk by the integer `downscale`, keeping shared cameras shared."""
    if downscale == 1:
        return list(cameras)
    scaled: dict[int, Camera] = {}
    return [scaled.setdefault(id(camera), camera.scaled(1.0 / downscale)) for camera in cameras]


def fit_camera_to_image(camera: Camera, width: int, height: int, where: str) -> Camera:
    """`camera` rescaled to an image of `width` x `height` pixels (same aspect ratio, within one pixel).

    Data sets often ship images smaller than the calibration (LLFF's images_8, COLMAP models with images_2).
    """
    if (camera.width, camera.height) == (width, height):
        return camera
    sx, sy = width / camera.width, height / camera.height
    if abs(camera.height * sx - height) > 1.0 or abs(camera.width * sy - width) > 1.0:
        raise InputError(
            f"{where}: image is {width}x{height} but its camera is {camera.width}x{camera.height} (different aspect ratio)"
        )
    return Camera(camera.model, width, height, scale_params(camera.model, camera.params, sx, sy))


def check_image_sizes(paths: Sequence[Path], cameras: Sequence[Camera]) -> None:
    """Raise `InputError` when an image file's size (header only) differs from its camera's."""
    for path, camera in zip(paths, cameras):
        size = image_size(path)
        if size != (camera.width, camera.height):
            raise InputError(f"{path}: image is {size[0]}x{size[1]} but its camera says {camera.width}x{camera.height}")


def image_loader(
    paths: Sequence[Path], cameras: Sequence[Camera], downscale: int = 1, background: np.ndarray | None = None
) -> Callable[[int], np.ndarray]:
    """`loader(i) -> [H, W, 3]` float32 in [0, 1]: image `i` shrunk by `downscale`, alpha over `background`.

    The result is checked against `cameras[i]`, so a file changed on disk cannot silently mismatch its camera.
    """
    paths = list(paths)

    def load(index: int) -> np.ndarray:
        image = read_rgb(paths[index], background, downscale)
        camera = cameras[index]
        if image.shape[:2] != (camera.height, camera.width):
            raise InputError(
                f"{paths[index]}: loaded image is {image.shape[1]}x{image.shape[0]} but its camera says "
                f"{camera.width}x{camera.height}"
            )
        return image

    return load
