"""Which source images each reference image is matched against, and the depth range it is searched in.

With 3D points (an SfM model): COLMAP's rule. Two images overlap by the points they share; a pair counts only when
the 75th percentile of its points' triangulation angles reaches `min_triangulation_angle`; each image takes the
`num_sources` overlapping images that share the most points. Depth ranges are the 1st and 99th percentiles of
the depths of the points an image observes, widened by 25% (COLMAP's `Model::ComputeDepthRanges`).

Without points (poses only): viewing geometry. A grid of rays of the reference, at depths spread over its range,
gives sample points; a source scores the fraction of them it sees in front of it and inside its image, counted
only where the triangulation angle reaches the minimum. The depth range is the one given, or estimated from
where the cameras look: the point closest to all optical axes, at a quarter to four times its depth.
"""

from __future__ import annotations

import numpy as np

from mapforge.errors import InputError
from mapforge.scene import Reconstruction

DEPTH_PERCENTILES = (1.0, 99.0)
DEPTH_STRETCH = 0.25
ANGLE_PERCENTILE = 75.0


def _centers(rec: Reconstruction, ids: list[int]) -> np.ndarray:
    return np.stack([rec.images[i].center for i in ids])


def _observation_pairs(rec: Reconstruction, index: dict[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of distinct images observing the same point: `(first [M], second [M], point [M])` indices."""
    firsts, seconds, points = [], [], []
    tracks: dict[int, list[np.ndarray]] = {}
    for p, point in enumerate(rec.points3D.values()):
        images = np.unique([index[i] for i in point.track[:, 0] if i in index])
        if len(images) > 1:
            tracks.setdefault(len(images), []).append(np.concatenate([[p], images]))
    for length, rows in tracks.items():
        table = np.stack(rows)
        a, b = np.triu_indices(length, 1)
        firsts.append(table[:, 1 + a].ravel())
        seconds.append(table[:, 1 + b].ravel())
        points.append(np.repeat(table[:, 0], len(a)))
    if not firsts:
        empty = np.zeros(0, np.int64)
        return empty, empty, empty
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(points)


def _angles(centers: np.ndarray, first: np.ndarray, second: np.ndarray, xyz: np.ndarray) -> np.ndarray:
    a = xyz - centers[first]
    b = xyz - centers[second]
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-300)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def sources_from_points(rec: Reconstruction, num_sources: int, min_triangulation_angle: float = 1.0) -> dict[int, list[int]]:
    """For every image id, up to `num_sources` source image ids, most shared points first (COLMAP's rule)."""
    ids = sorted(rec.images)
    index = {image_id: k for k, image_id in enumerate(ids)}
    first, second, point = _observation_pairs(rec, index)
    sources: dict[int, list[int]] = {image_id: [] for image_id in ids}
    if not len(first):
        return sources
    xyz = rec.points_xyz()[point]
    angles = _angles(_centers(rec, ids), first, second, xyz)
    key = first * len(ids) + second
    order = np.lexsort((angles, key))
    keys, starts, counts = np.unique(key[order], return_index=True, return_counts=True)
    percentile = angles[order][starts + np.minimum((counts * ANGLE_PERCENTILE / 100).astype(int), counts - 1)]
    good = percentile >= min_triangulation_angle
    shared: list[list[tuple[int, int]]] = [[] for _ in ids]
    for k, count in zip(keys[good], counts[good]):
        i, j = divmod(int(k), len(ids))
        shared[i].append((-int(count), j))
        shared[j].append((-int(count), i))
    for i, image_id in enumerate(ids):
        sources[image_id] = [ids[j] for _, j in sorted(shared[i])[:num_sources]]
    return sources


def depth_ranges_from_points(rec: Reconstruction) -> dict[int, tuple[float, float] | None]:
    """Per image id, the (min, max) depth of the points it observes (COLMAP's percentiles and stretch), or None."""
    ranges: dict[int, tuple[float, float] | None] = {}
    xyz = rec.points_xyz()
    position = {point_id: k for k, point_id in enumerate(rec.points3D)}
    for image_id, image in rec.images.items():
        observed = [position[p] for p in image.point3D_ids[image.point3D_ids >= 0] if p in position]
        depth = image.cam_from_world.apply(xyz[observed])[:, 2] if observed else np.zeros(0)
        depth = depth[depth > 0]
        if len(depth) == 0:
            ranges[image_id] = None
            continue
        low, high = np.percentile(depth, DEPTH_PERCENTILES)
        ranges[image_id] = (float(low) * (1 - DEPTH_STRETCH), float(high) * (1 + DEPTH_STRETCH))
    return ranges


def estimated_depth_ranges(rec: Reconstruction) -> dict[int, tuple[float, float]]:
    """Per image id, a depth range from where the cameras look (see the module docstring)."""
    axes = [(image.center, image.cam_from_world.rotation[2]) for image in rec.images.values()]
    # the point minimising the summed squared distance to all optical axes
    A = sum(np.eye(3) - np.outer(d, d) for _, d in axes)
    b = sum((np.eye(3) - np.outer(d, d)) @ c for c, d in axes)
    try:
        focus = np.linalg.solve(A, b)
    except np.linalg.LinAlgError:
        focus = None
    ranges = {}
    for image_id, image in rec.images.items():
        depth = float(image.cam_from_world.apply(focus[None])[0, 2]) if focus is not None else -1.0
        if not depth > 0:
            raise InputError(
                f"image {image.name}: the model has no 3D points and the cameras do not look at a common point; "
                "give a depth range (--depth-range MIN MAX)"
            )
        ranges[image_id] = (depth / 4.0, depth * 4.0)
    return ranges


def sources_from_geometry(
    rec: Reconstruction, num_sources: int, depth_ranges: dict[int, tuple[float, float]], min_triangulation_angle: float = 1.0
) -> dict[int, list[int]]:
    """For every image id, up to `num_sources` source ids that see most of its frustum at a usable angle."""
    ids = sorted(rec.images)
    sources = {}
    for image_id in ids:
        image = rec.images[image_id]
        camera = rec.cameras[image.camera_id]
        u, v = np.meshgrid(np.linspace(0.05, 0.95, 16) * camera.width, np.linspace(0.05, 0.95, 12) * camera.height)
        rays = camera.unproject(np.stack([u.ravel(), v.ravel()], 1))
        low, high = depth_ranges[image_id]
        depths = np.geomspace(low, high, 5)
        points = image.cam_from_world.inverse().apply((rays[None] * depths[:, None, None]).reshape(-1, 3))
        scores = []
        for other_id in ids:
            if other_id == image_id:
                continue
            other = rec.images[other_id]
            other_camera = rec.cameras[other.camera_id]
            local = other.cam_from_world.apply(points)
            front = local[:, 2] > 0
            pixels = other_camera.project(np.where(front[:, None], local, 1.0))
            inside = front & (pixels[:, 0] >= 0) & (pixels[:, 1] >= 0) & (pixels[:, 0] <= other_camera.width) & (pixels[:, 1] <= other_camera.height)
            angles = _angles(np.stack([image.center, other.center]), np.zeros(len(points), int), np.ones(len(points), int), points)
            seen = inside & (angles >= min_triangulation_angle)
            if seen.mean() > 0.05:
                scores.append((-float(seen.mean()), other_id))
        sources[image_id] = [other_id for _, other_id in sorted(scores)[:num_sources]]
    return sources
