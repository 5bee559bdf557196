"""COLMAP's fusion rules on exact depth maps and on hand-made disagreements."""

from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.io.colmap_dense import write_array
from mapforge.io.images import write_image
from mapforge.mvs.fusion import FusionConfig, fuse, load_input
from mapforge.mvs.workspace import GEOMETRIC, Workspace
from tests.mvs.scenes import exact_normals, orbit

VIEWS = list(range(0, 8))


def _workspace(tmp_path, data, depth_scale: dict[int, float] | None = None):
    """A workspace holding the exact maps (and photos) of `VIEWS` of `data`, depths optionally scaled per view."""
    ws = Workspace(tmp_path / "dense")
    model = data.to_reconstruction()
    for i in VIEWS:
        name = model.images[i + 1].name
        depth = data.load_depth(i) * (depth_scale or {}).get(i, 1.0)
        write_array(ws.depth_map(name, GEOMETRIC), depth)
        write_array(ws.normal_map(name, GEOMETRIC), exact_normals(data, i))
        write_image(ws.images / name, data.load_image(i))
    model.images = {i + 1: model.images[i + 1] for i in VIEWS}
    overlap = {i + 1: [j + 1 for j in VIEWS if j != i] for i in VIEWS}
    return ws, model, overlap


def _scene_distance(data, points: np.ndarray) -> np.ndarray:
    """Distance of points to the scene along the ray from the first camera (exact for visible points)."""
    origin = data.cam_from_world[0].inverse().translation
    hits = data.metadata["scene"].cast_rays(origin, points - origin)
    return np.abs(hits.t - 1.0) * np.linalg.norm(points - origin, axis=1)


def _inputs(tmp_path, data, depth_scale: dict[int, float] | None = None):
    ws, model, overlap = _workspace(tmp_path, data, depth_scale)
    return ws, model, {i: GEOMETRIC for i in model.images}, overlap


def test_exact_maps_fuse_onto_the_surfaces(tmp_path) -> None:
    data = orbit(64, 48)
    cloud = fuse(load_input(*_inputs(tmp_path, data)))
    assert len(cloud.points) > 500
    assert np.all(cloud.num_pixels >= 5)
    np.testing.assert_allclose(np.linalg.norm(cloud.normals, axis=1), 1.0, atol=1e-5)
    seen_from_first = data.cam_from_world[0].apply(cloud.points.astype(np.float64))[:, 2] > 0
    assert np.median(_scene_distance(data, cloud.points[seen_from_first].astype(np.float64))) < 0.01


def test_inconsistent_depths_do_not_fuse(tmp_path) -> None:
    data = orbit(64, 48)
    exact = fuse(load_input(*_inputs(tmp_path / "exact", data)))
    # every view 10% deeper than the one before: pixels of different views no longer agree...
    scaled = load_input(*_inputs(tmp_path / "scaled", data, {i: 1.1**i for i in VIEWS}))
    assert len(fuse(scaled).points) < 0.01 * len(exact.points)
    # ...so with one pixel enough, points come from single views (a pixel or two of the same image)
    single = fuse(scaled, FusionConfig(min_num_pixels=1))
    assert len(single.points) > len(exact.points) and np.median(single.num_pixels) == 1


def test_more_pixels_needed_fewer_points(tmp_path) -> None:
    inputs = load_input(*_inputs(tmp_path, orbit(64, 48)))
    counts = [len(fuse(inputs, FusionConfig(min_num_pixels=k)).points) for k in (3, 5, 7)]
    assert counts[0] > counts[1] > counts[2]


def test_bad_fusion_settings_are_input_errors() -> None:
    with pytest.raises(InputError, match="max_normal_error"):
        FusionConfig(max_normal_error=0)
    with pytest.raises(InputError, match="max_num_pixels"):
        FusionConfig(min_num_pixels=10, max_num_pixels=5)
