"""A COLMAP project: an image folder and a sparse model (`sparse/0`, `sparse`, or a given model folder).

Images are ordered by name. A camera whose size differs from its image file by a uniform factor (images
downsampled after reconstruction, as 3DGS's `images_2`) is rescaled to the file; other mismatches are errors.
Cameras keep their distortion: consumers needing pinhole images undistort them.
"""

from __future__ import annotations

from pathlib import Path

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.loaders import check_downscale, downscale_cameras, fit_camera_to_image, image_loader
from mapforge.errors import InputError
from mapforge.io import colmap
from mapforge.io.images import image_size
from mapforge.scene import Camera, Reconstruction

# No split in COLMAP data; every 8th image is a test image, as in the 3DGS / gsplat evaluations.
TEST_EVERY = 8


def _has_model(folder: Path) -> bool:
    return colmap.model_format(folder) is not None and any((folder / f"images.{e}").is_file() for e in ("bin", "txt"))


def find_model(path: Path) -> Path | None:
    """The model folder of a project folder (or the folder itself), or None."""
    for candidate in (path, path / "sparse" / "0", path / "sparse", path / "0"):
        if candidate.is_dir() and _has_model(candidate):
            return candidate
    return None


def is_colmap(path: Path) -> bool:
    return find_model(path) is not None


def _find_image_dir(path: Path, model_dir: Path) -> Path:
    for candidate in (path / "images", model_dir.parent / "images", model_dir.parent.parent / "images"):
        if candidate.is_dir():
            return candidate
    raise InputError(f"{path}: no images/ folder next to the COLMAP model {model_dir}; pass image_dir")


def load_colmap(
    path: str | Path, model: str | Path | None = None, image_dir: str | Path | None = None, downscale: int = 1
) -> Dataset:
    """Read a COLMAP project folder.

    Args:
        path: the project folder (with `images/` and `sparse/0`), or a model folder.
        model: the model folder, when not under `path` (default: found from `path`).
        image_dir: the image folder (default: `images/` in `path` or beside the model's `sparse/`).
        downscale: shrink images (and cameras) by this integer factor.

    `points` is the whole model; `metadata["image_ids"]` maps dataset indices to its image ids.
    """
    path = Path(path)
    downscale = check_downscale(downscale)
    model_dir = Path(model) if model is not None else find_model(path)
    if model_dir is None:
        raise InputError(f"{path}: no COLMAP model (cameras, images and points3D files) here or in sparse/0")
    rec: Reconstruction = colmap.read_model(model_dir)
    if not rec.images:
        raise InputError(f"{model_dir}: the COLMAP model has no images")
    folder = Path(image_dir) if image_dir is not None else _find_image_dir(path, model_dir)
    order = sorted(rec.images, key=lambda image_id: rec.images[image_id].name)
    paths, cameras, poses = [], [], []
    fitted: dict[tuple, Camera] = {}
    for image_id in order:
        image = rec.images[image_id]
        image_path = folder / image.name
        if not image_path.is_file():
            raise InputError(f"{model_dir}: image {image.name} not found in {folder}")
        width, height = image_size(image_path)
        key = (image.camera_id, width, height)
        if key not in fitted:
            fitted[key] = fit_camera_to_image(rec.cameras[image.camera_id], width, height, str(image_path))
        paths.append(image_path)
        cameras.append(fitted[key])
        poses.append(image.cam_from_world)
    cameras = downscale_cameras(cameras, downscale)
    return Dataset(
        name=path.name,
        image_names=[rec.images[i].name for i in order],
        cameras=cameras,
        cam_from_world=poses,
        split=every_nth_split(len(order), TEST_EVERY),
        loader=image_loader(paths, cameras, downscale),
        points=rec,
        image_dir=folder,
        image_paths=paths,
        metadata={"layout": "colmap", "image_ids": order, "model": model_dir},
    )
