"""Depth-map fusion into one coloured, oriented cloud: COLMAP's `StereoFusion`, rule for rule.

Images are visited in order and their pixels row by row. An unfused pixel with a depth starts a point: its 3D
point and world normal are the reference; the traversal projects every accepted pixel's point into that image's
overlapping images (those not yet visited as references), and a reached pixel joins when its depth agrees with
the reference point's projected depth (relative error `max_depth_error`), the reference projects within
`max_reproj_error` pixels of it, and its normal is within `max_normal_error` degrees of the reference normal.
Joined pixels are marked fused. A point with at least `min_num_pixels` pixels is kept, at the median of their
positions, normals and colours. Pixel centres follow mapforge's convention, (col + 0.5, row + 0.5), where COLMAP
uses (col, row): a half-pixel shift of the same rule.

The maps of all images are held compactly (float32 depth, int8 normals, uint8 colours: 10 bytes a pixel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from mapforge.errors import InputError, MapforgeError, check_settings
from mapforge.io.colmap_dense import read_array
from mapforge.io.images import read_image
from mapforge.mvs.workspace import Workspace
from mapforge.scene import Reconstruction


@dataclass
class FusionConfig:
    """COLMAP's `StereoFusionOptions` defaults.

    Attributes:
        min_num_pixels: pixels a point needs to be kept (5).
        max_num_pixels: pixels fused into one point at most (10000).
        max_traversal_depth: steps from the reference pixel at most (100).
        max_reproj_error: pixels (2).
        max_depth_error: relative (0.01).
        max_normal_error: degrees (10).
        check_num_images: overlapping images checked from each image (50).
    """

    min_num_pixels: int = 5
    max_num_pixels: int = 10000
    max_traversal_depth: int = 100
    max_reproj_error: float = 2.0
    max_depth_error: float = 0.01
    max_normal_error: float = 10.0
    check_num_images: int = 50

    def __post_init__(self) -> None:
        check_settings("fusion", {
            "min_num_pixels": self.min_num_pixels >= 1,
            "max_num_pixels": self.max_num_pixels >= self.min_num_pixels,
            "max_traversal_depth": self.max_traversal_depth >= 1,
            "max_reproj_error": self.max_reproj_error > 0,
            "max_depth_error": self.max_depth_error > 0,
            "max_normal_error": 0 < self.max_normal_error <= 180,
            "check_num_images": self.check_num_images >= 1,
        })  # fmt: skip


@dataclass
class FusionInput:
    """All images' maps, concatenated: image i's pixels are `offsets[i]:offsets[i + 1]`, row-major.

    `sizes [N, 2]` (width, height), `depth [T]` float32, `normals [T, 3]` int8 (world frame, times 127),
    `colors [T, 3]` uint8, `P [N, 3, 4]` world-to-pixel projections, `K_inv [N, 3, 3]`, `R [N, 3, 3]` and
    `t [N, 3]` (cam_from_world), `overlap [N, M]` overlapping image indices (-1 padded).
    """

    offsets: np.ndarray
    sizes: np.ndarray
    depth: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    P: np.ndarray
    K_inv: np.ndarray
    R: np.ndarray
    t: np.ndarray
    overlap: np.ndarray


@dataclass
class FusedCloud:
    """`points [N, 3]` float32, `normals [N, 3]` float32, `colors [N, 3]` uint8, `num_pixels [N]` int32."""

    points: np.ndarray
    normals: np.ndarray
    colors: np.ndarray
    num_pixels: np.ndarray


@njit(cache=True)
def _point(inp_K_inv, R, t, i, row, col, d):
    """World point of pixel (row, col) of image i at depth d."""
    x = d * (inp_K_inv[i, 0, 0] * (col + 0.5) + inp_K_inv[i, 0, 1] * (row + 0.5) + inp_K_inv[i, 0, 2])
    y = d * (inp_K_inv[i, 1, 0] * (col + 0.5) + inp_K_inv[i, 1, 1] * (row + 0.5) + inp_K_inv[i, 1, 2])
    z = d
    x, y, z = x - t[i, 0], y - t[i, 1], z - t[i, 2]
    return (
        R[i, 0, 0] * x + R[i, 1, 0] * y + R[i, 2, 0] * z,
        R[i, 0, 1] * x + R[i, 1, 1] * y + R[i, 2, 1] * z,
        R[i, 0, 2] * x + R[i, 1, 2] * y + R[i, 2, 2] * z,
    )


@njit(cache=True)
def _fuse(offsets, sizes, depth, normals, colors, P, K_inv, R, t, overlap, iparams, fparams):
    """The fusion loop; `iparams` = (min_num_pixels, max_num_pixels, max_traversal_depth), `fparams` =
    (max_reproj_error, max_depth_error, cos of max_normal_error). Returns the kept points' arrays."""
    min_pixels, max_pixels, max_depth_steps = iparams[0], iparams[1], iparams[2]
    max_sq_reproj, max_depth_error, min_cos_normal = fparams[0] * fparams[0], fparams[1], fparams[2]
    count = offsets.shape[0] - 1
    num_overlap = overlap.shape[1]
    fused = np.zeros(depth.shape[0], np.uint8)
    visited = np.zeros(count, np.uint8)
    capacity = int((depth > 0).sum() // min_pixels + 1)
    out_xyz = np.empty((capacity, 3), np.float32)
    out_n = np.empty((capacity, 3), np.float32)
    out_rgb = np.empty((capacity, 3), np.uint8)
    out_count = np.empty(capacity, np.int32)
    stack = np.empty((max_pixels * num_overlap + num_overlap + 1, 4), np.int64)
    buf = np.empty((max_pixels, 9), np.float64)
    kept = 0
    for i in range(count):
        width, height = sizes[i, 0], sizes[i, 1]
        for row in range(height):
            for col in range(width):
                start = offsets[i] + row * width + col
                if fused[start] or not depth[start] > 0:
                    continue
                top = 0
                stack[0, 0], stack[0, 1], stack[0, 2], stack[0, 3] = i, row, col, 0
                top = 1
                n = 0
                rx = ry = rz = 0.0
                rnx = rny = rnz = 0.0
                while top > 0:
                    top -= 1
                    j, r, c, steps = stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3]
                    w = sizes[j, 0]
                    index = offsets[j] + r * w + c
                    if fused[index]:
                        continue
                    d = depth[index]
                    if not d > 0:
                        continue
                    if steps > 0:
                        pz = P[j, 2, 0] * rx + P[j, 2, 1] * ry + P[j, 2, 2] * rz + P[j, 2, 3]
                        if abs((pz - d) / d) > max_depth_error:
                            continue
                        px = (P[j, 0, 0] * rx + P[j, 0, 1] * ry + P[j, 0, 2] * rz + P[j, 0, 3]) / pz - (c + 0.5)
                        py = (P[j, 1, 0] * rx + P[j, 1, 1] * ry + P[j, 1, 2] * rz + P[j, 1, 3]) / pz - (r + 0.5)
                        if px * px + py * py > max_sq_reproj:
                            continue
                    nx, ny, nz = normals[index, 0] / 127.0, normals[index, 1] / 127.0, normals[index, 2] / 127.0
                    norm = math.sqrt(nx * nx + ny * ny + nz * nz)
                    if norm > 0:
                        nx, ny, nz = nx / norm, ny / norm, nz / norm
                    if steps > 0 and rnx * nx + rny * ny + rnz * nz < min_cos_normal:
                        continue
                    x, y, z = _point(K_inv, R, t, j, r, c, d)
                    fused[index] = 1
                    buf[n, 0], buf[n, 1], buf[n, 2] = x, y, z
                    buf[n, 3], buf[n, 4], buf[n, 5] = nx, ny, nz
                    buf[n, 6], buf[n, 7], buf[n, 8] = colors[index, 0], colors[index, 1], colors[index, 2]
                    n += 1
                    if steps == 0:
                        rx, ry, rz, rnx, rny, rnz = x, y, z, nx, ny, nz
                    if n >= max_pixels:
                        break
                    if steps >= max_depth_steps - 1:
                        continue
                    for k in range(num_overlap):
                        nxt = overlap[j, k]
                        if nxt < 0 or visited[nxt]:
                            continue
                        qz = P[nxt, 2, 0] * x + P[nxt, 2, 1] * y + P[nxt, 2, 2] * z + P[nxt, 2, 3]
                        if not qz > 0:
                            continue
                        qc = math.floor((P[nxt, 0, 0] * x + P[nxt, 0, 1] * y + P[nxt, 0, 2] * z + P[nxt, 0, 3]) / qz)
                        qr = math.floor((P[nxt, 1, 0] * x + P[nxt, 1, 1] * y + P[nxt, 1, 2] * z + P[nxt, 1, 3]) / qz)
                        if qc < 0 or qr < 0 or qc >= sizes[nxt, 0] or qr >= sizes[nxt, 1] or top >= stack.shape[0]:
                            continue
                        stack[top, 0], stack[top, 1], stack[top, 2], stack[top, 3] = nxt, qr, qc, steps + 1
                        top += 1
                if n < min_pixels:
                    continue
                mnx, mny, mnz = np.median(buf[:n, 3]), np.median(buf[:n, 4]), np.median(buf[:n, 5])
                norm = math.sqrt(mnx * mnx + mny * mny + mnz * mnz)
                if norm < 1.1920929e-07:
                    continue
                out_xyz[kept, 0], out_xyz[kept, 1], out_xyz[kept, 2] = np.median(buf[:n, 0]), np.median(buf[:n, 1]), np.median(buf[:n, 2])
                out_n[kept, 0], out_n[kept, 1], out_n[kept, 2] = mnx / norm, mny / norm, mnz / norm
                for ch in range(3):
                    out_rgb[kept, ch] = min(255, int(math.floor(np.median(buf[:n, 6 + ch]) + 0.5)))
                out_count[kept] = n
                kept += 1
        visited[i] = 1
    return out_xyz[:kept], out_n[:kept], out_rgb[:kept], out_count[:kept]


def fuse(inp: FusionInput, config: FusionConfig | None = None) -> FusedCloud:
    """Fuse the maps of `inp` into one cloud (see the module docstring)."""
    config = config or FusionConfig()
    if len(inp.offsets) < 2:
        raise MapforgeError("fusion needs at least one depth map")
    iparams = np.array([config.min_num_pixels, config.max_num_pixels, config.max_traversal_depth], np.int64)
    fparams = np.array([config.max_reproj_error, config.max_depth_error, math.cos(math.radians(config.max_normal_error))])
    xyz, normals, rgb, count = _fuse(
        inp.offsets, inp.sizes, inp.depth, inp.normals, inp.colors, inp.P, inp.K_inv, inp.R, inp.t, inp.overlap,
        iparams, fparams,
    )  # fmt: skip
    return FusedCloud(xyz, normals, rgb, count)


def load_input(workspace: Workspace, model: Reconstruction, kinds: dict[int, str], overlap: dict[int, list[int]]) -> FusionInput:
    """The maps of the images in `kinds` (image id -> map kind to fuse), in image-id order, with colours from the
    workspace's undistorted images and `overlap` (image id -> overlapping image ids)."""
    ids = sorted(kinds)
    index = {image_id: k for k, image_id in enumerate(ids)}
    sizes, depths, normals, colors, P, K_inv, R, t = [], [], [], [], [], [], [], []
    for image_id in ids:
        image = model.images[image_id]
        K = model.cameras[image.camera_id].K
        rotation, translation = image.cam_from_world.rotation, image.cam_from_world.translation
        depth = read_array(workspace.depth_map(image.name, kinds[image_id]))
        normal = read_array(workspace.normal_map(image.name, kinds[image_id]))
        rgb = read_image(workspace.images / image.name)[..., :3]
        if rgb.shape[:2] != depth.shape:
            raise InputError(f"{image.name}: the depth map is {depth.shape[1]}x{depth.shape[0]}, the image {rgb.shape[1]}x{rgb.shape[0]}")
        sizes.append((depth.shape[1], depth.shape[0]))
        depths.append(depth.reshape(-1))
        normals.append(np.round((normal.reshape(-1, 3) @ rotation) * 127).astype(np.int8))  # world = R^T n
        colors.append(np.round(rgb.reshape(-1, 3) * 255).astype(np.uint8))
        P.append(K @ np.hstack([rotation, translation[:, None]]))
        K_inv.append(np.linalg.inv(K))
        R.append(rotation)
        t.append(translation)
    width = max([len(overlap.get(i, [])) for i in ids] + [1])
    table = np.full((len(ids), width), -1, np.int64)
    for k, image_id in enumerate(ids):
        others = [index[o] for o in overlap.get(image_id, []) if o in index]
        table[k, : len(others)] = others
    return FusionInput(
        offsets=np.concatenate([[0], np.cumsum([len(d) for d in depths])]).astype(np.int64),
        sizes=np.asarray(sizes, np.int64), depth=np.concatenate(depths).astype(np.float32),
        normals=np.concatenate(normals), colors=np.concatenate(colors), P=np.stack(P), K_inv=np.stack(K_inv),
        R=np.stack(R), t=np.stack(t), overlap=table,
    )  # fmt: skip
