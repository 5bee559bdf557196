"""Image preparation for DUSt3R / MASt3R, identical to the upstream `load_images`.

Size 512 (and any size other than 224): the long side is resized to `size`, then the image is centre-cropped to
multiples of the patch size; a square result is further cropped to 4:3 unless `square_ok`. Size 224: the short side
is resized to 224 and the centre square is kept. Pixels are mapped to [-1, 1]. Resizing uses Pillow (Lanczos when
shrinking, bicubic otherwise) so that results match the released models' preprocessing bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from mapforge.errors import InputError
from mapforge.io.images import IMAGE_EXTENSIONS, read_upright_rgb


def image_paths(folder_or_list: str | Path | Sequence[str | Path]) -> list[Path]:
    """The images of a folder (sorted by name, known extensions only) or the given list, checked to exist."""
    if isinstance(folder_or_list, (str, Path)):
        folder = Path(folder_or_list)
        if not folder.is_dir():
            raise InputError(f"image folder {folder} does not exist")
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not paths:
            raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {folder}")
        return paths
    paths = [Path(p) for p in folder_or_list]
    if not paths:
        raise InputError("no images given")
    for p in paths:
        if not p.is_file():
            raise InputError(f"image {p} does not exist")
    return paths


def _resize_long_side(img: PIL.Image.Image, long_side: int) -> PIL.Image.Image:
    current = max(img.size)
    resample = PIL.Image.LANCZOS if current > long_side else PIL.Image.BICUBIC
    new_size = tuple(int(round(s * long_side / current)) for s in img.size)
    return img.resize(new_size, resample)


def prepare_image(img: PIL.Image.Image, size: int = 512, square_ok: bool = False, patch_size: int = 16) -> torch.Tensor:
    """An RGB Pillow image -> `[1, 3, H, W]` float32 in [-1, 1], resized and cropped as described above."""
    width, height = img.size
    if size == 224:
        img = _resize_long_side(img, round(size * max(width / height, height / width)))
    else:
        img = _resize_long_side(img, size)
    width, height = img.size
    cx, cy = width // 2, height // 2
    if size == 224:
        half = min(cx, cy)
        box = (cx - half, cy - half, cx + half, cy + half)
    else:
        half_w = ((2 * cx) // patch_size) * patch_size / 2
        half_h = ((2 * cy) // patch_size) * patch_size / 2
        if not square_ok and width == height:
            half_h = 3 * half_w / 4
        box = (cx - half_w, cy - half_h, cx + half_w, cy + half_h)
    img = img.crop(tuple(int(round(v)) for v in box))
    if min(img.size) < patch_size:
        raise InputError(f"image is too small: {img.size[0]}x{img.size[1]} after cropping to the patch grid")
    pixels = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)
    return ((pixels - 0.5) / 0.5).unsqueeze(0)


def load_images(
    folder_or_list: str | Path | Sequence[str | Path],
    size: int = 512,
    square_ok: bool = False,
    patch_size: int = 16,
) -> list[dict]:
    """Read and prepare images for the networks.

    Returns one dict per image, in order: `img [1, 3, H, W]` float32 in [-1, 1], `true_shape [1, 2]` int32 (H, W),
    `idx` (its index) and `instance` (the index as a string), the layout upstream's inference code expects.
    EXIF orientation is applied; alpha is dropped.
    """
    if size <= 0:
        raise InputError(f"image size must be positive, got {size}")
    views = []
    for path in image_paths(folder_or_list):
        tensor = prepare_image(read_upright_rgb(path), size, square_ok, patch_size)
        index = len(views)
        views.append({
            "img": tensor,
            "true_shape": torch.tensor([tensor.shape[-2:]], dtype=torch.int32),
            "idx": index,
            "instance": str(index),
        })
    return views
