"""Camera calibration from checkerboard photographs (OpenCV's detector and Zhang's method via cv2.calibrateCamera).

The result is a mapforge `Camera` in COLMAP's conventions. OpenCV puts the first pixel's centre at (0, 0) while
COLMAP (and mapforge) put it at (0.5, 0.5), so detected corners are shifted by +0.5 before anything else and the
principal point comes out in COLMAP's convention. OpenCV's distortion model (k1, k2, p1, p2[, k3..k6]) is the
same as COLMAP's OPENCV / FULL_OPENCV models, so those coefficients carry over unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera

# COLMAP model -> calibrateCamera flags that leave exactly that model's parameters free. `k3` is fixed for the
# five-coefficient models because it is poorly constrained by a flat board and COLMAP's OPENCV model has none.
_FLAGS = {
    "SIMPLE_PINHOLE": cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3
    | cv2.CALIB_ZERO_TANGENT_DIST,
    "PINHOLE": cv2.CALIB_FIX_K1 | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "SIMPLE_RADIAL": cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K2 | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "RADIAL": cv2.CALIB_FIX_ASPECT_RATIO | cv2.CALIB_FIX_K3 | cv2.CALIB_ZERO_TANGENT_DIST,
    "OPENCV": cv2.CALIB_FIX_K3,
    "FULL_OPENCV": cv2.CALIB_RATIONAL_MODEL,
}
CALIBRATION_MODELS = tuple(_FLAGS)


@dataclass
class CalibrationResult:
    """A calibrated camera and how well it explains the boards.

    Attributes:
        camera: the camera, COLMAP model and conventions.
        rms: root-mean-square reprojection error over all corners of the boards used, pixels.
        per_image_rms: `{name: rms}` for every board used.
        used: names of the images whose board was used.
        rejected: `{name: reason}` for images left out (no board found, or an outlier after a first fit).
        cam_from_board: `{name: pose}` of every board used (board frame as in `board_points`).
        corners: `{name: [cols * rows, 2]}` detected corners (COLMAP pixel convention).
    """

    camera: Camera
    rms: float
    per_image_rms: dict[str, float]
    used: list[str]
    rejected: dict[str, str]
    cam_from_board: dict[str, Rigid3] = field(default_factory=dict)
    corners: dict[str, np.ndarray] = field(default_factory=dict)


def _to_gray(image: np.ndarray, name: str) -> np.ndarray:
    """`[H, W]`, `[H, W, 1|3|4]` uint8 or float in [0, 1] -> `[H, W]` uint8."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] in (1, 3, 4):
        image = image[..., 0] if image.shape[2] == 1 else cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2GRAY)
    if image.ndim != 2:
        raise InputError(f"{name}: expected an [H, W] or [H, W, 3] image, got shape {image.shape}")
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.uint16:
        return (image >> 8).astype(np.uint8)
    return np.clip(np.round(image.astype(np.float64) * 255), 0, 255).astype(np.uint8)


def find_checkerboard(gray: np.ndarray, pattern: tuple[int, int]) -> np.ndarray | None:
    """Sub-pixel inner corners `[cols * rows, 2]` (COLMAP pixel convention) of a checkerboard in `gray [H, W]`
    uint8, in OpenCV's order (row by row), or None when the whole pattern is not found."""
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE
    found, corners = cv2.findChessboardCorners(gray, pattern, flags=flags)
    if found:
        corners = corners.reshape(-1, 2).astype(np.float32)
        grid = corners.reshape(pattern[1], pattern[0], 2)
        spacing = min(np.linalg.norm(np.diff(grid, axis=0), axis=2).min(), np.linalg.norm(np.diff(grid, axis=1), axis=2).min())
        # the search window must stay within one square around each corner
        half = int(np.clip(round(float(spacing) * 0.4), 2, 11))
        criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 100, 1e-4)
        corners = corners[:, None].copy()  # an in-place output: OpenCV refuses numpy views
        corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), criteria).reshape(-1, 2)
    else:
        # the sector-based detector copes with blur, glare and strong distortion that defeat the classic one
        found, corners = cv2.findChessboardCornersSB(gray, pattern, flags=cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_EXHAUSTIVE | cv2.CALIB_CB_ACCURACY)
        if not found:
            return None
        corners = corners.reshape(-1, 2)
    return corners.astype(np.float64) + 0.5


def _load(images: Sequence[str | Path | np.ndarray]) -> list[tuple[str, np.ndarray]]:
    from mapforge.io.images import read_image

    loaded = []
    for index, item in enumerate(images):
        if isinstance(item, (str, Path)):
            name = Path(item).name
            loaded.append((name, _to_gray(read_image(item), name)))
        else:
            name = f"image_{index:03d}"
            loaded.append((name, _to_gray(item, name)))
    return loaded


def _camera_from_opencv(model: str, width: int, height: int, matrix: np.ndarray, dist: np.ndarray) -> Camera:
    fx, fy = matrix[0, 0], matrix[1, 1]
    cx, cy = matrix[0, 2] + 0.5, matrix[1, 2] + 0.5  # OpenCV pixel centres at integers -> COLMAP's at +0.5
    k1, k2, p1, p2 = dist[:4]
    params = {
        "SIMPLE_PINHOLE": [fx, cx, cy],
        "PINHOLE": [fx, fy, cx, cy],
        "SIMPLE_RADIAL": [fx, cx, cy, k1],
        "RADIAL": [fx, cx, cy, k1, k2],
        "OPENCV": [fx, fy, cx, cy, k1, k2, p1, p2],
        "FULL_OPENCV": [fx, fy, cx, cy, *dist[:8]],
    }[model]
    return Camera(model, width, height, params)


def _fit(model: str, size: tuple[int, int], object_points: list[np.ndarray], image_points: list[np.ndarray]):
    width, height = size
    # with a fixed aspect ratio OpenCV keeps fx / fy from this matrix (1: square pixels) and ignores the rest
    matrix = np.eye(3)
    dist = np.zeros(8 if model == "FULL_OPENCV" else 5)
    criteria = (cv2.TERM_CRITERIA_COUNT + cv2.TERM_CRITERIA_EPS, 200, 1e-12)
    _, matrix, dist, rvecs, tvecs = cv2.calibrateCamera(
        [p.astype(np.float32) for p in object_points],
        [(p - 0.5).astype(np.float32)[:, None] for p in image_points],  # back to OpenCV's pixel convention
        (width, height), matrix, dist, flags=_FLAGS[model], criteria=criteria,
    )
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    camera = _camera_from_opencv(model, width, height, matrix, dist)
    poses = [Rigid3(cv2.Rodrigues(r)[0], np.asarray(t, dtype=np.float64).reshape(3)) for r, t in zip(rvecs, tvecs)]
    errors = []
    for pose, points3d, points2d in zip(poses, object_points, image_points):
        residual = camera.project(pose.apply(points3d)) - points2d
        errors.append(float(np.sqrt((residual**2).sum(axis=1).mean())))
    return camera, poses, np.asarray(errors)


def calibrate_checkerboard(
    images: Sequence[str | Path | np.ndarray],
    pattern: tuple[int, int],
    square_size: float,
    camera_model: str = "OPENCV",
    min_images: int = 3,
    progress: bool = False,
) -> CalibrationResult:
    """Calibrate one camera from photographs of a flat checkerboard.

    Args:
        images: image files, or arrays `[H, W]` / `[H, W, 3]` (uint8, or float in [0, 1]); all the same size.
        pattern: inner corners per row and per column, `(cols, rows)` (a board of 10 x 7 squares is (9, 6)).
        square_size: side of one square in the unit the poses should use (e.g. metres).
        camera_model: COLMAP model to fit, one of `CALIBRATION_MODELS`.
        min_images: fewest boards to calibrate from (3: each board gives two constraints on the intrinsics).
        progress: show a progress bar while detecting corners (on a terminal only).

    Boards whose reprojection error is more than three times the median (and above 1 pixel) after a first fit
    are dropped and the camera refitted, so one mis-detected board cannot spoil the result.
    """
    from tqdm import tqdm

    if camera_model not in _FLAGS:
        raise InputError(f"cannot calibrate camera model {camera_model!r}; choose one of {', '.join(CALIBRATION_MODELS)}")
    cols, rows = (int(v) for v in pattern)
    if cols < 3 or rows < 3:
        raise InputError(f"checkerboard pattern {cols}x{rows}: OpenCV's detector needs at least 3x3 inner corners")
    if not square_size > 0:
        raise InputError(f"square size must be positive, got {square_size}")
    if len(images) == 0:
        raise InputError("no images given for calibration")

    from mapforge.datasets.checkerboard import board_points

    board = board_points((cols, rows), square_size)
    size = None
    names, corners, rejected = [], [], {}
    for name, gray in tqdm(_load(images), desc="finding checkerboards", unit="image", disable=None if progress else True):
        if size is None:
            size = (gray.shape[1], gray.shape[0])
        elif (gray.shape[1], gray.shape[0]) != size:
            raise InputError(f"{name} is {gray.shape[1]}x{gray.shape[0]} but the first image is {size[0]}x{size[1]}; "
                             "calibrate one camera (one image size) at a time")
        found = find_checkerboard(gray, (cols, rows))
        if found is None:
            rejected[name] = f"no {cols}x{rows} checkerboard found"
        else:
            names.append(name)
            corners.append(found)
    if len(names) < min_images:
        raise InputError(f"a {cols}x{rows} checkerboard (inner corners) was found in {len(names)} of {len(images)} "
                         f"images, need at least {min_images}; check --pattern and the photographs")

    camera, poses, errors = _fit(camera_model, size, [board] * len(names), corners)
    outliers = (errors > 3 * np.median(errors)) & (errors > 1.0)
    if outliers.any() and (~outliers).sum() >= min_images:
        for i in np.flatnonzero(outliers):
            rejected[names[i]] = f"reprojection error {errors[i]:.2f} px, far above the others"
        keep = np.flatnonzero(~outliers)
        names, corners = [names[i] for i in keep], [corners[i] for i in keep]
        camera, poses, errors = _fit(camera_model, size, [board] * len(names), corners)
    total = sum(float((e**2) * len(board)) for e in errors)
    return CalibrationResult(
        camera=camera,
        rms=float(np.sqrt(total / (len(board) * len(names)))),
        per_image_rms=dict(zip(names, errors.tolist())),
        used=names,
        rejected=rejected,
        cam_from_board=dict(zip(names, poses)),
        corners=dict(zip(names, corners)),
    )
