"""A plain folder of photographs (directly in the folder or in its `images/`), without poses.

Intrinsics come from, in order: an explicit file, `K.txt` (a 3x3 matrix, as in openMVG's sample data) or a COLMAP
`cameras.txt` / `cameras.bin` in the image folder or the folder given; otherwise each image gets a guess from its
EXIF focal length, or COLMAP's default of 1.2 x max(width, height) pixels, with the principal point at the image
centre. `metadata["focal_source"]` says, per image, which one was used ("file", "exif" or "default"), so SfM can
decide what to refine.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.loaders import check_downscale, downscale_cameras, fit_camera_to_image, image_loader, list_images
from mapforge.errors import InputError
from mapforge.io import colmap
from mapforge.io.images import exif_focal_px, image_size
from mapforge.scene import Camera, check_camera, check_finite

# COLMAP's ImageReaderOptions.default_focal_length_factor: focal = 1.2 * max(width, height) without EXIF.
DEFAULT_FOCAL_FACTOR = 1.2
# No split in a plain folder; every 8th image is a test image, as in the 3DGS / gsplat evaluations.
TEST_EVERY = 8
INTRINSICS_FILES = ("K.txt", "cameras.txt", "cameras.bin")


def image_folder(path: Path) -> Path | None:
    """`path` if it holds images, else its `images/` if that does, else None."""
    for candidate in (path, path / "images"):
        if candidate.is_dir() and list_images(candidate):
            return candidate
    return None


def is_image_folder(path: Path) -> bool:
    return image_folder(path) is not None


def read_k_txt(file: Path) -> np.ndarray:
    """A 3x3 calibration matrix written as 9 numbers (whitespace or commas, any line endings)."""
    try:
        values = [float(v) for v in file.read_text(encoding="utf-8").replace(",", " ").split()]
    except ValueError as exc:
        raise InputError(f"{file}: not a 3x3 matrix of numbers ({exc})") from exc
    if len(values) != 9:
        raise InputError(f"{file}: expected 9 numbers (a 3x3 matrix), found {len(values)}")
    K = np.array(values).reshape(3, 3)
    check_finite(K, "the calibration matrix", str(file))
    if np.abs(K[2] - [0, 0, 1]).max() > 1e-9 or abs(K[1, 0]) > 0:
        raise InputError(f"{file}: not a calibration matrix [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]")
    if abs(K[0, 1]) > 1e-6 * abs(K[0, 0]):
        raise InputError(f"{file}: skewed calibration matrices are not supported")
    return K


def _find_intrinsics(path: Path, image_dir: Path) -> Path | None:
    for folder in dict.fromkeys((image_dir, path)):
        for name in INTRINSICS_FILES:
            if (folder / name).is_file():
                return folder / name
    return None


def cameras_from_file(file: Path, sizes: list[tuple[int, int]], names: list[str]) -> list[Camera]:
    """One camera per image of size `sizes[k]` named `names[k]`, from a K.txt (one matrix for images of one size)
    or a COLMAP `cameras.txt` / `cameras.bin` (see `load_folder`)."""
    if not file.is_file():
        raise InputError(f"intrinsics file {file} does not exist")
    if file.name.startswith("cameras."):
        return _cameras_from_colmap(file, sizes, names)
    return _cameras_from_k(read_k_txt(file), sizes, file)


def _cameras_from_k(K: np.ndarray, sizes: list[tuple[int, int]], file: Path) -> list[Camera]:
    if len(set(sizes)) != 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(set(sizes)))
        raise InputError(f"{file}: one K for images of different sizes ({listed}); give a cameras.txt instead")
    width, height = sizes[0]
    camera = check_camera(Camera("PINHOLE", width, height, [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]),
                          "the calibration matrix", str(file))
    if not (0 < K[0, 2] < width and 0 < K[1, 2] < height):
        raise InputError(f"{file}: principal point ({K[0, 2]:g}, {K[1, 2]:g}) lies outside the {width}x{height} images")
    return [camera] * len(sizes)


def _cameras_from_colmap(file: Path, sizes: list[tuple[int, int]], names: list[str]) -> list[Camera]:
    read = colmap.read_cameras_binary if file.suffix == ".bin" else colmap.read_cameras_text
    available = list(read(file).values())
    if not available:
        raise InputError(f"{file}: no cameras")
    cameras, fitted = [], {}
    for name, size in zip(names, sizes):
        if size not in fitted:
            exact = [c for c in available if (c.width, c.height) == size]
            if len(exact) > 1:
                raise InputError(f"{file}: several cameras are {size[0]}x{size[1]}; which one is {name}'s is unknown")
            if exact:
                fitted[size] = exact[0]
            elif len(available) == 1:
                fitted[size] = fit_camera_to_image(available[0], *size, where=f"{file} for {name}")
            else:
                raise InputError(f"{file}: no camera is {size[0]}x{size[1]} like {name}")
        cameras.append(fitted[size])
    return cameras


def _guessed_cameras(paths: list[Path], sizes: list[tuple[int, int]]) -> tuple[list[Camera], list[str]]:
    cameras, sources, shared = [], [], {}
    for image_path, (width, height) in zip(paths, sizes):
        focal = exif_focal_px(image_path)
        sources.append("default" if focal is None else "exif")
        if focal is None:
            focal = DEFAULT_FOCAL_FACTOR * max(width, height)
        key = (width, height, focal)
        if key not in shared:
            shared[key] = Camera("SIMPLE_PINHOLE", width, height, [focal, width / 2.0, height / 2.0])
        cameras.append(shared[key])
    return cameras, sources


def load_folder(path: str | Path, intrinsics: str | Path | None = None, downscale: int = 1) -> Dataset:
    """Read a folder of images (no poses). `intrinsics`: a K.txt or COLMAP cameras file (default: looked for)."""
    path = Path(path)
    downscale = check_downscale(downscale)
    image_dir = image_folder(path)
    if image_dir is None:
        raise InputError(f"{path}: no images here or in {path / 'images'}")
    paths = list_images(image_dir)
    sizes = [image_size(p) for p in paths]
    file = Path(intrinsics) if intrinsics is not None else _find_intrinsics(path, image_dir)
    if file is None:
        cameras, sources = _guessed_cameras(paths, sizes)
    else:
        cameras, sources = cameras_from_file(file, sizes, [p.name for p in paths]), ["file"] * len(paths)
    cameras = downscale_cameras(cameras, downscale)
    return Dataset(
        name=path.name,
        image_names=[p.name for p in paths],
        cameras=cameras,
        cam_from_world=None,
        split=every_nth_split(len(paths), TEST_EVERY),
        loader=image_loader(paths, cameras, downscale),
        image_dir=image_dir,
        image_paths=paths,
        metadata={"layout": "folder", "focal_source": sources, "intrinsics_file": file},
    )
