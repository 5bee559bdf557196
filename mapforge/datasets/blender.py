"""NeRF-synthetic ("Blender") scenes: `transforms_{train,val,test}.json` beside the RGBA renders.

Focal length = 0.5 * W / tan(camera_angle_x / 2) with the principal point at the image centre (Blender renders
with pixel centres at +0.5, i.e. COLMAP's convention). RGBA renders are composited over `background`.

Some copies ship 8-bit `*_depth_*.png` test images; their encoding is not documented (in the shared lego copy
the alpha channel equals the grey value, and no linear mapping to depth is clearly consistent across views), so
they are not offered as depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mapforge.datasets.base import Dataset
from mapforge.datasets.loaders import check_downscale, downscale_cameras, image_loader, share_cameras
from mapforge.errors import InputError
from mapforge.io.transforms_json import read_transforms

SPLITS = ("train", "val", "test")
# White, as in the NeRF paper's Blender experiments (`white_bkgd`), which published metrics assume.
DEFAULT_BACKGROUND = (1.0, 1.0, 1.0)
# The scene box `[min, max]` handed to NeRF trainers as metadata "aabb": the NeRF-synthetic objects fit inside
# [-1.5, 1.5]^3 (instant-ngp's default box for these scenes: its unit cube at the 0.33 scale it applies to them).
SCENE_AABB = ((-1.5, -1.5, -1.5), (1.5, 1.5, 1.5))


def is_blender(path: Path) -> bool:
    return any((path / f"transforms_{split}.json").is_file() for split in SPLITS)


def load_blender(
    path: str | Path, background: Sequence[float] = DEFAULT_BACKGROUND, downscale: int = 1
) -> Dataset:
    """Read a Blender scene folder. Images are ordered train, val, test (those present), in file order.

    `split` has "train" and "test" (and "val" when present); without a test file "test" is the val split, or
    the train split when that is all there is.
    """
    path = Path(path)
    downscale = check_downscale(downscale)
    if not is_blender(path):
        raise InputError(f"{path}: no transforms_train.json / transforms_val.json / transforms_test.json")
    paths, cameras, poses = [], [], []
    split: dict[str, list[int]] = {}
    for name in SPLITS:
        file = path / f"transforms_{name}.json"
        if not file.is_file():
            continue
        data = read_transforms(file)
        split[name] = list(range(len(paths), len(paths) + len(data.image_paths)))
        paths += data.image_paths
        cameras += data.cameras
        poses += data.cam_from_world
    if "train" not in split:
        split["train"] = split.get("val", split.get("test"))
    if "test" not in split:
        split["test"] = split.get("val", split["train"])
    cameras = downscale_cameras(share_cameras(cameras), downscale)
    background_rgb = np.asarray(background, dtype=np.float32).reshape(3)
    names = [_relative_name(p, path) for p in paths]
    return Dataset(
        name=path.name,
        image_names=names,
        cameras=cameras,
        cam_from_world=poses,
        split=split,
        loader=image_loader(paths, cameras, downscale, background_rgb),
        background=background_rgb,
        image_dir=path,
        image_paths=paths,
        metadata={"layout": "blender", "aabb": [list(SCENE_AABB[0]), list(SCENE_AABB[1])]},
    )


def _relative_name(image_path: Path, root: Path) -> str:
    try:
        return image_path.relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(image_path)
