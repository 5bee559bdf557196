"""Rendered checkerboard images with a known (distorted) camera and known board poses, for calibration tests.

Each output pixel is sampled `supersample`^2 times; every sample is undistorted to a normalised ray with the
camera's exact model (`mapforge.geometry.cameras.unproject`), intersected with the board plane and shaded:
black and white squares, a white margin around them, and a grey background beyond. Pixel centres follow COLMAP
(the top-left pixel's centre is (0.5, 0.5)).

Board frame: the origin is the first inner corner, x runs along a row of inner corners (`cols` of them), y along a
column (`rows`), the board lies in z = 0. Inner corner (i, j) (column i, row j) is at (i * square, j * square, 0),
the order in which OpenCV's detector lists them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from mapforge.geometry.rotations import axis_angle_to_matrix
from mapforge.geometry.transforms import Rigid3
from mapforge.scene import Camera

BLACK = 0.08
WHITE = 0.92


def board_points(pattern: tuple[int, int], square_size: float) -> np.ndarray:
    """Inner corners `[cols * rows, 3]` in the board frame, row by row (x fastest)."""
    cols, rows = pattern
    grid = np.stack(np.meshgrid(np.arange(cols), np.arange(rows)), axis=-1).reshape(-1, 2)
    return np.concatenate([grid * float(square_size), np.zeros((len(grid), 1))], axis=1)


def board_outline(pattern: tuple[int, int], square_size: float, margin: float = 1.0) -> np.ndarray:
    """The four corners `[4, 3]` of the board including its white margin (`margin` in squares)."""
    cols, rows = pattern
    low = -(1 + margin) * square_size
    high_x, high_y = (cols + margin) * square_size, (rows + margin) * square_size
    return np.array([[low, low, 0], [high_x, low, 0], [high_x, high_y, 0], [low, high_y, 0]], dtype=np.float64)


def project_corners(camera: Camera, cam_from_board: Rigid3, pattern: tuple[int, int], square_size: float) -> np.ndarray:
    """Exact pixel positions `[cols * rows, 2]` (COLMAP convention) of the inner corners."""
    return camera.project(cam_from_board.apply(board_points(pattern, square_size)))


def render_checkerboards(
    camera: Camera,
    cams_from_board: Sequence[Rigid3],
    pattern: tuple[int, int],
    square_size: float,
    supersample: int = 3,
    margin: float = 1.0,
    background: float = 0.45,
    noise_sigma: float = 0.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """Render one `[H, W, 3]` float32 image in [0, 1] per board pose (grey, replicated to three channels).

    `supersample` samples per pixel side average out the edges (3 -> 9 samples, plenty for sub-pixel corners);
    `margin` is the white border around the squares, in squares (detectors need about one); `noise_sigma` adds
    Gaussian noise (seeded by `seed`) to mimic a sensor. The rays are computed once for all poses.
    """
    s = int(supersample)
    width, height = camera.width, camera.height
    xs = (np.arange(width * s) + 0.5) / s
    ys = (np.arange(height * s) + 0.5) / s
    rays = camera.unproject(np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)).reshape(height * s, width * s, 3)
    valid_ray = np.isfinite(rays[..., 0]) & np.isfinite(rays[..., 1])
    ray_u, ray_v = np.where(valid_ray, rays[..., 0], 0.0), np.where(valid_ray, rays[..., 1], 0.0)
    del rays
    cols, rows = pattern
    outline = board_outline(pattern, square_size, margin)
    perimeter = _perimeter(outline)
    rng = np.random.default_rng(seed)
    images = []
    for cam_from_board in cams_from_board:
        image = np.full((height, width), background, dtype=np.float64)
        # only the pixels around the board's projection need rays; the rest is background
        y0, y1, x0, x1 = _pixel_window(camera, cam_from_board, perimeter)
        window = np.s_[y0 * s : y1 * s, x0 * s : x1 * s]
        u, v, ok = ray_u[window], ray_v[window], valid_ray[window]
        rotation, origin = cam_from_board.rotation, cam_from_board.translation
        normal = rotation[:, 2]
        # the ray (u, v, 1) * t meets the plane through `origin` with normal `normal`
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (origin @ normal) / (u * normal[0] + v * normal[1] + normal[2])
        hit = ok & (t > 0) & np.isfinite(t)
        t = np.where(hit, t, 0.0)
        dx, dy, dz = u * t - origin[0], v * t - origin[1], t - origin[2]
        bx = dx * rotation[0, 0] + dy * rotation[1, 0] + dz * rotation[2, 0]
        by = dx * rotation[0, 1] + dy * rotation[1, 1] + dz * rotation[2, 1]
        # squares: index -1 .. cols along x, -1 .. rows along y; (0, 0) is the square right of the origin
        sx, sy = np.floor(bx / square_size), np.floor(by / square_size)
        on_squares = hit & (sx >= -1) & (sx <= cols - 1) & (sy >= -1) & (sy <= rows - 1)
        on_board = hit & (bx >= outline[0, 0]) & (bx <= outline[2, 0]) & (by >= outline[0, 1]) & (by <= outline[2, 1])
        black = on_squares & ((sx + sy) % 2 == 0)
        value = np.where(black, BLACK, np.where(on_board, WHITE, background))
        image[y0:y1, x0:x1] = value.reshape(y1 - y0, s, x1 - x0, s).mean(axis=(1, 3))
        if noise_sigma > 0:
            image = image + rng.normal(0.0, noise_sigma, image.shape)
        images.append(np.repeat(np.clip(image, 0.0, 1.0).astype(np.float32)[..., None], 3, axis=2))
    return images


def _perimeter(outline: np.ndarray, per_edge: int = 16) -> np.ndarray:
    """Points `[4 * per_edge, 3]` along the closed polygon `outline [4, 3]`."""
    steps = np.linspace(0.0, 1.0, per_edge, endpoint=False)[:, None, None]
    return (outline + steps * (np.roll(outline, -1, axis=0) - outline)).reshape(-1, 3)


def _pixel_window(camera: Camera, cam_from_board: Rigid3, perimeter: np.ndarray, pad: int = 3) -> tuple[int, int, int, int]:
    """Rows y0:y1 and columns x0:x1 covering the board's projection (the whole image if it reaches behind)."""
    points = cam_from_board.apply(perimeter)
    if np.any(points[:, 2] <= 0):
        return 0, camera.height, 0, camera.width
    pixels = camera.project(points)
    if not np.isfinite(pixels).all():
        return 0, camera.height, 0, camera.width
    x0, y0 = np.floor(pixels.min(axis=0)).astype(int) - pad
    x1, y1 = np.ceil(pixels.max(axis=0)).astype(int) + pad
    return max(0, y0), min(camera.height, y1), max(0, x0), min(camera.width, x1)


def random_board_poses(
    camera: Camera,
    pattern: tuple[int, int],
    square_size: float,
    count: int,
    seed: int = 0,
    max_tilt_deg: float = 50.0,
    fill: tuple[float, float] = (0.4, 0.8),
    margin: float = 1.0,
) -> list[Rigid3]:
    """`count` varied `cam_from_board` poses that keep the whole board (with margin) inside the image.

    Boards are tilted up to `max_tilt_deg` about random in-plane axes (strong tilts pin down the focal length and
    principal point), rolled up to 20 degrees, sized to cover `fill` of the image width, and spread over the whole
    image (corners included, where distortion shows).
    """
    rng = np.random.default_rng(seed)
    outline = board_outline(pattern, square_size, margin)
    center = outline.mean(axis=0)
    perimeter = _perimeter(outline)  # with distortion, edges bow out between the corners
    board_width = outline[1, 0] - outline[0, 0]
    fx = camera.K[0, 0]
    poses: list[Rigid3] = []
    for _ in range(1000 * count):
        if len(poses) == count:
            break
        axis_angle = rng.uniform(0, 2 * math.pi)
        tilt = np.array([math.cos(axis_angle), math.sin(axis_angle), 0.0]) * math.radians(rng.uniform(5, max_tilt_deg))
        roll = np.array([0.0, 0.0, math.radians(rng.uniform(-20, 20))])
        rotation = axis_angle_to_matrix(roll) @ axis_angle_to_matrix(tilt)
        distance = fx * board_width / (rng.uniform(*fill) * camera.width)
        target = np.array([rng.uniform(0.15, 0.85) * camera.width, rng.uniform(0.15, 0.85) * camera.height])
        direction = camera.unproject(target[None])[0]
        pose = Rigid3(rotation, direction * distance - rotation @ center)
        corners_cam = pose.apply(perimeter)
        if np.any(corners_cam[:, 2] <= 0.05 * distance):
            continue
        projected = camera.project(corners_cam)
        border = 4.0
        if np.all((projected >= border) & (projected <= [camera.width - border, camera.height - border])):
            poses.append(pose)
    if len(poses) < count:
        raise ValueError("could not place the requested boards inside the image; use a smaller board or fill")
    return poses
