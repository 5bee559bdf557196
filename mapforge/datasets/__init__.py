"""Data set readers: every layout yields a `Dataset` of images, cameras, known poses and a train/test split.

`load_dataset(path)` recognises, in this order: a Blender scene (`transforms_train.json`), a nerfstudio /
instant-ngp capture (`transforms.json`), an LLFF capture (`poses_bounds.npy`), a Middlebury MVS set
(`*_par.txt`), a Strecha set (`gt_dense_cameras/`), a COLMAP project (`sparse/0` with images) and finally a
plain image folder.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.blender import is_blender, load_blender
from mapforge.datasets.colmap import is_colmap, load_colmap
from mapforge.datasets.folder import is_image_folder, load_folder
from mapforge.datasets.llff import is_llff, load_llff
from mapforge.datasets.middlebury import is_middlebury, load_middlebury
from mapforge.datasets.nerfstudio import is_nerfstudio, load_nerfstudio
from mapforge.datasets.strecha import is_strecha, load_strecha
from mapforge.errors import InputError

# name -> (recogniser, reader), in detection order: specific layouts before the plain image folder.
LAYOUTS: dict[str, tuple[Callable[[Path], bool], Callable[..., Dataset]]] = {
    "blender": (is_blender, load_blender),
    "nerfstudio": (is_nerfstudio, load_nerfstudio),
    "llff": (is_llff, load_llff),
    "middlebury": (is_middlebury, load_middlebury),
    "strecha": (is_strecha, load_strecha),
    "colmap": (is_colmap, load_colmap),
    "folder": (is_image_folder, load_folder),
}


def detect_layout(path: str | Path) -> str:
    """The name of the first layout in `LAYOUTS` that `path` matches; `InputError` when none does."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"data set not found: {path}")
    if path.is_file():
        if path.suffix == ".json":
            return "nerfstudio"
        raise InputError(f"{path} is a file; give the data set's folder (or a transforms.json)")
    for name, (recognise, _) in LAYOUTS.items():
        if recognise(path):
            return name
    raise InputError(
        f"{path}: not a recognised data set (no transforms*.json, poses_bounds.npy, *_par.txt, gt_dense_cameras/, "
        "COLMAP sparse model, nor any image files here or in images/)"
    )


def load_dataset(path: str | Path, layout: str | None = None, **options) -> Dataset:
    """Read the data set at `path`, recognising its layout unless `layout` names one of `LAYOUTS`.

    `options` go to the reader (all take `downscale`; see each reader for the others); an option the reader
    does not take raises `InputError`.
    """
    if layout is None:
        layout = detect_layout(path)
    if layout not in LAYOUTS:
        raise InputError(f"unknown data set layout {layout!r} (known: {', '.join(LAYOUTS)})")
    reader = LAYOUTS[layout][1]
    accepted = set(inspect.signature(reader).parameters) - {"path"}
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise InputError(f"the {layout} reader does not take {', '.join(unknown)} (it takes: {', '.join(sorted(accepted))})")
    return reader(path, **options)


__all__ = ["LAYOUTS", "Dataset", "detect_layout", "every_nth_split", "load_dataset"]
