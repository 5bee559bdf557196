"""A nerfstudio or instant-ngp capture: a folder with one `transforms.json` (see `mapforge.io.transforms_json`).

The split comes from the file's `train_filenames` / `val_filenames` / `test_filenames` when present (nerfstudio's
convention), otherwise every 8th image is a test image. Images with alpha are composited over `background`.
Cameras are rescaled to the image files when those are a uniformly downsampled copy.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.loaders import check_downscale, downscale_cameras, fit_camera_to_image, image_loader, share_cameras
from mapforge.errors import InputError
from mapforge.io.images import has_alpha, image_size
from mapforge.io.transforms_json import read_transforms

TRANSFORMS_FILE = "transforms.json"
# No split in the file: every 8th image is a test image, as in the 3DGS / gsplat evaluations.
TEST_EVERY = 8
# White, the usual choice for object captures with alpha (and nerfstudio's Blender default).
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)


def is_nerfstudio(path: Path) -> bool:
    return (path / TRANSFORMS_FILE).is_file() or (path.is_file() and path.suffix == ".json")


def _split_from_filenames(metadata: dict, paths: list[Path], root: Path, file: Path) -> dict[str, list[int]] | None:
    if "train_filenames" not in metadata:
        return None
    index_of = {p.resolve(): i for i, p in enumerate(paths)}
    split = {}
    for name in ("train", "val", "test"):
        listed = metadata.get(f"{name}_filenames")
        if listed is None:
            continue
        if not isinstance(listed, list) or not all(isinstance(n, str) for n in listed):
            raise InputError(f"{file}: field '{name}_filenames' must be a list of file names")
        indices = []
        for entry in listed:
            resolved = (root / entry).resolve()
            if resolved not in index_of:
                raise InputError(f"{file}: '{name}_filenames' lists {entry}, which is not a frame")
            indices.append(index_of[resolved])
        split[name] = indices
    split.setdefault("test", split.get("val", split["train"]))
    return split


def load_nerfstudio(path: str | Path, background: Sequence[float] = DEFAULT_BACKGROUND, downscale: int = 1) -> Dataset:
    """Read a folder holding `transforms.json` (or the path of such a file)."""
    path = Path(path)
    downscale = check_downscale(downscale)
    file = path if path.is_file() else path / TRANSFORMS_FILE
    if not file.is_file():
        raise InputError(f"{path}: no {TRANSFORMS_FILE}")
    data = read_transforms(file)
    root = file.parent
    # Images may be a downsampled copy of what the intrinsics describe (nerfstudio's images_2, ...).
    fitted = share_cameras(
        [fit_camera_to_image(c, *image_size(p), where=str(p)) for c, p in zip(data.cameras, data.image_paths)]
    )
    split = _split_from_filenames(data.metadata, data.image_paths, root, file)
    if split is None:
        split = every_nth_split(len(data.image_paths), TEST_EVERY)
    alpha = has_alpha(data.image_paths[0])
    background_rgb = np.asarray(background, dtype=np.float32).reshape(3) if alpha else None
    cameras = downscale_cameras(fitted, downscale)
    names = []
    for image_path in data.image_paths:
        try:
            names.append(image_path.relative_to(root.resolve()).as_posix())
        except ValueError:
            names.append(str(image_path))
    return Dataset(
        name=root.name,
        image_names=names,
        cameras=cameras,
        cam_from_world=data.cam_from_world,
        split=split,
        loader=image_loader(data.image_paths, cameras, downscale, background_rgb),
        background=background_rgb,
        image_dir=root,
        image_paths=data.image_paths,
        metadata={"layout": "nerfstudio", "flavour": data.flavour, **data.metadata},
    )
