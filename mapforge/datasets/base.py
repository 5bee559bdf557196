"""The `Dataset` every reader returns and every trainer consumes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera, Image, Reconstruction


@dataclass
class Dataset:
    """Images with their cameras, ground-truth or estimated poses where known, and a split.

    Images are loaded lazily through `load_image`, so large sets cost nothing until used.

    Attributes:
        name: short name of the data set.
        image_names: one name per image (file name relative to `image_dir` when there is one).
        cameras: one `Camera` per image (images may share the same object).
        cam_from_world: one pose per image, or None when the data has no poses.
        split: index lists, at least "train" and "test" (these may be equal when there is no held-out set).
        loader: `loader(i) -> [H, W, 3] float32 in [0, 1]`, alpha already composited over `background`.
        background: `[3]` float32 background colour for data with alpha (Blender); None when no alpha is expected
            (any alpha that does turn up is composited over black).
        depth_loader: `depth_loader(i) -> [H, W] float32` z-depth (0 where unknown), or None.
        near_far: `[N, 2]` per-image depth bounds when the data gives them (LLFF), else None.
        points: a sparse model that came with the data (COLMAP folders), for initialisation, else None. Its cameras
            keep the model's own resolution even when the images were downscaled; point coordinates are unaffected.
        image_dir: the folder images were read from, when there is one.
        image_paths: the file of every image, when images come from files (frames of a transforms.json may lie
            outside `image_dir`); empty for in-memory data such as the built-in scene.
    """

    name: str
    image_names: list[str]
    cameras: list[Camera]
    cam_from_world: list[Rigid3] | None
    split: dict[str, list[int]]
    loader: Callable[[int], np.ndarray]
    background: np.ndarray | None = None
    depth_loader: Callable[[int], np.ndarray] | None = None
    near_far: np.ndarray | None = None
    points: Reconstruction | None = None
    image_dir: Path | None = None
    image_paths: list[Path] = field(default_factory=list)
    metadata: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.image_names)

    def load_image(self, index: int) -> np.ndarray:
        """Image `index` as `[H, W, 3]` float32 in [0, 1]."""
        return self.loader(index)

    def load_depth(self, index: int) -> np.ndarray | None:
        """Depth of image `index` as `[H, W]` float32 (z along the optical axis, 0 = unknown), or None."""
        return None if self.depth_loader is None else self.depth_loader(index)

    def subset(self, split: str) -> list[int]:
        return list(self.split[split])

    def to_reconstruction(self) -> Reconstruction:
        """The posed images as a COLMAP-style model (no keypoints, no points). Requires poses."""
        if self.cam_from_world is None:
            raise ValueError(f"data set {self.name} has no poses")
        rec = Reconstruction()
        camera_ids: dict[int, int] = {}
        for i, (name, camera, pose) in enumerate(zip(self.image_names, self.cameras, self.cam_from_world)):
            key = id(camera)
            if key not in camera_ids:
                camera_ids[key] = len(rec.cameras) + 1
                rec.cameras[camera_ids[key]] = camera
            rec.images[i + 1] = Image(name=name, camera_id=camera_ids[key], cam_from_world=pose)
        return rec


def every_nth_split(count: int, n: int = 8) -> dict[str, list[int]]:
    """The 3DGS/gsplat evaluation split: index % n == 0 is test, the rest train."""
    test = [i for i in range(count) if i % n == 0]
    train = [i for i in range(count) if i % n != 0]
    return {"train": train, "test": test}
