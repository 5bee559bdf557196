"""Source images and depth ranges: COLMAP's rules on a model with points, viewing geometry without them."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.geometry.transforms import Rigid3
from mapforge.mvs import view_selection as vs
from mapforge.scene import Camera, Image, Reconstruction
from tests.mvs.scenes import orbit


def _model(points: int = 4000) -> Reconstruction:
    data = orbit(64, 48)
    return data.metadata["scene"].ground_truth_reconstruction(data, points, seed=1)


def _orbit_distance(a: int, b: int, count: int = 30) -> int:
    return min((a - b) % count, (b - a) % count)


def test_sources_from_points_rank_by_shared_points() -> None:
    rec = _model()
    shared: dict[tuple[int, int], int] = {}
    for point in rec.points3D.values():
        images = sorted(set(point.track[:, 0].tolist()))
        for a in images:
            for b in images:
                if a != b:
                    shared[a, b] = shared.get((a, b), 0) + 1
    sources = vs.sources_from_points(rec, num_sources=4, min_triangulation_angle=0.0)
    for image_id, chosen in sources.items():
        counts = sorted((-n, b) for (a, b), n in shared.items() if a == image_id)
        assert chosen == [b for _, b in counts[:4]]


def test_min_triangulation_angle_drops_near_duplicates() -> None:
    rec = _model()
    twin = rec.images[1]
    rec.images[99] = Image("twin.png", twin.camera_id, Rigid3(twin.cam_from_world.rotation, twin.cam_from_world.translation + 1e-4), twin.keypoints, twin.point3D_ids)
    for point_id in np.unique(twin.point3D_ids[twin.point3D_ids >= 0]):
        track = rec.points3D[int(point_id)].track
        rec.points3D[int(point_id)].track = np.vstack([track, [[99, 0]]])
    assert 99 in vs.sources_from_points(rec, 30, min_triangulation_angle=0.0)[1]
    assert 99 not in vs.sources_from_points(rec, 30, min_triangulation_angle=1.0)[1]


def test_depth_ranges_cover_the_true_depths() -> None:
    data = orbit(64, 48)
    rec = _model()
    ranges = vs.depth_ranges_from_points(rec)
    for index in (0, 7, 15):
        low, high = ranges[index + 1]
        depth = data.load_depth(index)
        assert np.mean((depth >= low) & (depth <= high)) > 0.95


def test_without_points_the_geometry_picks_neighbours() -> None:
    data = orbit(64, 48)
    rec = data.to_reconstruction()
    ranges = vs.estimated_depth_ranges(rec)
    depth = data.load_depth(3)
    low, high = ranges[4]
    assert low < np.median(depth) < high
    sources = vs.sources_from_geometry(rec, 4, ranges)
    distances = [_orbit_distance(3, s - 1) for s in sources[4]]
    assert max(distances[:2]) <= 2 and sorted(distances)[2] <= 5


def test_no_points_and_no_common_focus_asks_for_a_depth_range() -> None:
    camera = Camera("PINHOLE", 100, 80, [80, 80, 50, 40])
    # two cameras looking away from each other
    rec = Reconstruction(cameras={1: camera})
    rec.images[1] = Image("a.png", 1, Rigid3(np.eye(3), np.zeros(3)))
    rec.images[2] = Image("b.png", 1, Rigid3(np.diag([-1.0, 1.0, -1.0]), np.array([0.0, 0.0, -1.0])))
    with pytest.raises(InputError, match="depth range"):
        vs.estimated_depth_ranges(rec)
