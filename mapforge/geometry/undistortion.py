"""Image undistortion: the pinhole camera that sees what a distorted camera sees, and images resampled into it.

Lives beside the spine types (it builds `scene.Camera`s) rather than in `cameras.py`, whose math the spine's
`Camera` itself uses, so that neither module imports the other.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.cameras import CAMERA_MODELS, calibration_matrix, project, unproject
from mapforge.scene import Camera


@dataclass
class UndistortConfig:
    """How `undistorted_camera` chooses the pinhole camera.

    `blank_pixels` blends between 0 (the output shows only valid pixels: the largest axis-aligned rectangle inside
    the undistorted image border) and 1 (the output shows the whole undistorted image, with black borders), as
    COLMAP's `--blank_pixels`. `max_scale` bounds the output size relative to the input (COLMAP's default 2), which
    keeps strong fisheye images finite by lowering the focal length instead.
    """

    blank_pixels: float = 0.0
    max_scale: float = 2.0
    border_samples: int = 256


def undistorted_camera(camera: Camera, config: UndistortConfig | None = None) -> Camera:
    """A PINHOLE camera seeing what `camera` sees, without distortion.

    Choice: keep the focal lengths (so the image centre keeps its resolution) and place the image bounds at the
    undistorted image border, chosen per side (see `UndistortConfig.blank_pixels`); the principal point moves with
    them. If that border would make the image larger than `max_scale` times the input, both focal lengths shrink
    by the same factor. A pinhole camera is returned as PINHOLE with the same parameters.
    """
    config = config or UndistortConfig()
    m = CAMERA_MODELS[camera.model]
    if not m.focal_idxs:
        raise InputError(f"camera model {m.name} cannot be undistorted to a pinhole camera")
    K = calibration_matrix(m, camera.params)
    fx, fy, cx, cy = float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])
    if m.pinhole:
        return Camera("PINHOLE", camera.width, camera.height, [fx, fy, cx, cy])
    w, h = camera.width, camera.height
    t = np.linspace(0.0, 1.0, config.border_samples)
    sides = {
        "left": np.stack([np.zeros_like(t), t * h], -1),
        "right": np.stack([np.full_like(t, w), t * h], -1),
        "top": np.stack([t * w, np.zeros_like(t)], -1),
        "bottom": np.stack([t * w, np.full_like(t, h)], -1),
    }
    rays = {k: unproject(m, camera.params, p) for k, p in sides.items()}
    b = float(np.clip(config.blank_pixels, 0.0, 1.0))

    def blend(inner: float, outer: float) -> float:
        return (1 - b) * inner + b * outer

    def finite(values: np.ndarray) -> np.ndarray:
        values = values[np.isfinite(values)]
        if values.size == 0:
            raise InputError(f"camera {m.name} {camera.params.tolist()}: the image border does not unproject")
        return values

    left = blend(finite(rays["left"][:, 0]).max(), finite(rays["left"][:, 0]).min())
    right = blend(finite(rays["right"][:, 0]).min(), finite(rays["right"][:, 0]).max())
    top = blend(finite(rays["top"][:, 1]).max(), finite(rays["top"][:, 1]).min())
    bottom = blend(finite(rays["bottom"][:, 1]).min(), finite(rays["bottom"][:, 1]).max())
    if not (left < 0 < right and top < 0 < bottom):
        raise InputError(f"camera {m.name} {camera.params.tolist()}: the principal point is outside the valid image")
    width_px, height_px = fx * (right - left), fy * (bottom - top)
    shrink = min(1.0, config.max_scale * w / width_px, config.max_scale * h / height_px)
    new_fx, new_fy = fx * shrink, fy * shrink
    new_w = max(1, int(math.floor(new_fx * (right - left))))
    new_h = max(1, int(math.floor(new_fy * (bottom - top))))
    return Camera("PINHOLE", new_w, new_h, [new_fx, new_fy, -left * new_fx, -top * new_fy])


def undistortion_maps(camera: Camera, target: Camera) -> tuple[np.ndarray, np.ndarray]:
    """For each pixel of `target`, the position in `camera`'s image array to sample: two `[H_t, W_t]` float32 maps.

    Map values are array coordinates (pixel coordinate - 0.5), as `cv2.remap` expects.
    """
    map_x = np.empty((target.height, target.width), dtype=np.float32)
    map_y = np.empty_like(map_x)
    cols = np.arange(target.width, dtype=np.float64) + 0.5
    # Blocks of ~64k pixels keep the temporaries in cache: several times faster than whole 12 MP images.
    block = max(1, 65536 // max(target.width, 1))
    for start in range(0, target.height, block):
        rows = np.arange(start, min(start + block, target.height), dtype=np.float64) + 0.5
        grid = np.stack(np.meshgrid(cols, rows, indexing="xy"), -1)  # [rows, W_t, 2]
        rays = unproject(target.model, target.params, grid)
        source = project(camera.model, camera.params, rays) - 0.5
        source = np.where(np.isfinite(source), source, -1e6)
        map_x[start : start + len(rows)] = source[..., 0]
        map_y[start : start + len(rows)] = source[..., 1]
    return map_x, map_y


def undistort_image(image: np.ndarray, camera: Camera, target: Camera | None = None) -> tuple[np.ndarray, Camera]:
    """Resample an image `[H, W]` or `[H, W, C]` taken by `camera` into the pinhole camera `target`.

    `target` defaults to `undistorted_camera(camera)`. Bilinear interpolation (sampling positions quantised to
    1/32 pixel by `cv2.remap`); pixels seeing outside the input image are 0. Returns the image (same dtype) and
    the target camera.
    """
    image = np.asarray(image)
    if image.shape[:2] != (camera.height, camera.width):
        raise InputError(f"image is {image.shape[1]}x{image.shape[0]} but its camera is {camera.width}x{camera.height}")
    target = target or undistorted_camera(camera)
    map_x, map_y = undistortion_maps(camera, target)
    work = image.astype(np.float32) if image.dtype in (np.float64, np.bool_) else image
    chunks = [work] if work.ndim == 2 or work.shape[2] <= 4 else [work[..., i : i + 4] for i in range(0, work.shape[2], 4)]
    # The input covers array positions [-0.5, size - 0.5]: replicate the edge within that half pixel, 0 beyond.
    out = [cv2.remap(c, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE) for c in chunks]
    out = [o[..., None] if (o.ndim == 2 and work.ndim == 3) else o for o in out]
    result = out[0] if len(out) == 1 else np.concatenate(out, axis=-1)
    outside = (map_x < -0.5) | (map_x > camera.width - 0.5) | (map_y < -0.5) | (map_y > camera.height - 0.5)
    result[outside] = 0
    return result.astype(image.dtype, copy=False), target
