from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial import cKDTree

from mapforge.errors import InputError
from mapforge.io.ply import read_mesh
from mapforge.mvs.meshing import MIN_POINTS, PoissonConfig, poisson_mesh, write_poisson_mesh

needs_pymeshlab = pytest.mark.skipif(importlib.util.find_spec("pymeshlab") is None,
                                     reason="meshing needs pymeshlab (pip install mapforge[mesh])")

SMALL = PoissonConfig(depth=6, threads=1)


def _sphere(n: int, seed: int = 0, noise: float = 0.005) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Points on the unit sphere with Gaussian noise, outward normals and a colour that follows x: `[N, 3]` each."""
    rng = np.random.default_rng(seed)
    normals = rng.normal(size=(n, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    points = normals + rng.normal(0.0, noise, size=(n, 3))
    return points, normals, _colour(points)


def _colour(xyz: np.ndarray) -> np.ndarray:
    red = np.clip((xyz[:, 0] + 1.0) / 2.0, 0.0, 1.0)
    return np.stack([255 * red, 255 * (1 - red), np.full(len(xyz), 60.0)], axis=1).round().astype(np.uint8)


@needs_pymeshlab
def test_sphere_is_meshed_closed_and_on_the_surface() -> None:
    vertices, faces, colors = poisson_mesh(*_sphere(3000), SMALL)
    assert vertices.dtype == np.float64 and faces.dtype == np.int64 and colors.dtype == np.uint8
    assert len(vertices) > 500 and faces.shape[1] == 3 and faces.max() < len(vertices)
    radius = np.linalg.norm(vertices, axis=1)
    assert np.abs(radius - 1.0).max() < 0.03
    # closed: every edge is shared by two triangles (trimming a cloud without holes removes nothing)
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    assert (counts == 2).mean() > 0.999
    # colours carried from the points: within a few levels of the colour the surface has there
    error = np.abs(colors.astype(int) - _colour(vertices).astype(int))
    assert np.median(error) <= 3 and np.percentile(error, 99) < 25


@needs_pymeshlab
def test_trimming_removes_the_surface_poisson_invents_where_there_are_no_points() -> None:
    points, normals, colors = _sphere(6000, seed=1)
    upper = points[:, 2] > 0.0
    points, normals, colors = points[upper], normals[upper], colors[upper]
    untrimmed, _, _ = poisson_mesh(points, normals, colors, PoissonConfig(depth=6, threads=1, trim_levels=None))
    assert (untrimmed[:, 2] < -0.3).sum() > 100  # Poisson closes the hemisphere far below the data
    vertices, faces, _ = poisson_mesh(points, normals, colors, SMALL)
    distance, _ = cKDTree(points).query(vertices)
    assert distance.max() < 0.15 and vertices[:, 2].min() > -0.1  # a rim about 3 point spacings wide stays
    assert cKDTree(vertices).query(points)[0].max() < 0.05  # and the data stays covered
    assert len(np.unique(faces)) == len(vertices)  # no vertex left without a triangle


@needs_pymeshlab
def test_write_poisson_mesh_and_deterministic_subsampling(tmp_path: Path) -> None:
    points, normals, colors = _sphere(2000, seed=2)
    points[0] = np.nan
    normals[1] = 0.0  # both left out
    path, num_vertices, num_faces = write_poisson_mesh(tmp_path / "meshed-poisson.ply", points, normals, colors,
                                                       PoissonConfig(depth=5, threads=1, max_points=800))
    vertices, faces, vertex_colors = read_mesh(path)
    assert (len(vertices), len(faces)) == (num_vertices, num_faces) and vertex_colors is not None
    again = poisson_mesh(points, normals, colors, PoissonConfig(depth=5, threads=1, max_points=800))
    np.testing.assert_allclose(again[0], vertices, atol=1e-5)  # the PLY stores float32
    np.testing.assert_array_equal(again[1], faces)


def test_too_small_clouds_and_missing_pymeshlab_are_input_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    points, normals, colors = _sphere(MIN_POINTS + 5)
    normals[:10] = 0.0
    with pytest.raises(InputError, match=f"at least {MIN_POINTS} points"):
        poisson_mesh(points, normals, colors)
    with pytest.raises(InputError, match="at least"):
        poisson_mesh(np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3), np.uint8))
    monkeypatch.setitem(sys.modules, "pymeshlab", None)  # what an environment without the extra sees
    with pytest.raises(InputError, match=r"install mapforge\[mesh\]"):
        poisson_mesh(*_sphere(500))
