"""Screened Poisson surface reconstruction of an oriented cloud (Kazhdan and Hoppe 2013), trimmed by density.

The solver is MeshLab's build of Kazhdan's PoissonRecon, through pymeshlab (the optional `mesh` extra: it is
GPL-3, so mapforge's core does not depend on it). It returns, per vertex, the sampling density that PoissonRecon's
`--density` writes: an octree depth, about log2 of the local point spacing relative to the cloud's size, so it
rises by one where points are twice as close. Where there are no points Poisson still closes the surface with
smooth, low-density sheets; trimming drops them, as COLMAP's `poisson_mesher` does with PoissonRecon's
SurfaceTrimmer, and MeshLab interpolates the input colours onto the vertices (as PoissonRecon's `--colors`).
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mapforge.errors import InputError, MapforgeError, ReconstructionError
from mapforge.io.ply import write_mesh

MIN_POINTS = 100  # below this screened Poisson returns nothing or a blob unrelated to the points


@dataclass
class PoissonConfig:
    """Screened Poisson meshing and its trimming.

    Attributes:
        depth: maximum octree depth, an upper bound as the octree adapts to the sampling (9; COLMAP uses 13,
            PoissonRecon 8). Our measurement on 2.5 million points of a noisy open surface, 2 threads on a
            shared 2-core machine: depth 8 takes 9 s and 1.1 GB at peak (66k vertices), depth 9 20 s and 1.6 GB
            (255k vertices), depth 10 310 s and 4.3 GB (1.0 M vertices); 9 keeps a fused cloud of a few million
            points within a minute and the MVS stage's 4 GB budget.
        point_weight: the screening weight of the point interpolation (1, COLMAP's `point_weight`; 0 is the
            unscreened Poisson of 2006, PoissonRecon and MeshLab default to 2 and 4).
        samples_per_node: minimum points per octree node, how far the depth adapts to sparse regions (1.5,
            PoissonRecon's and MeshLab's default; COLMAP keeps it).
        scale: ratio of the reconstruction cube to the cloud's bounding cube (1.1, PoissonRecon's default).
        trim_levels: drop vertices whose density is more than this many levels below the median density at the
            input points (then the triangles that use them); None keeps everything. COLMAP trims at an absolute
            density of 10, which suits its multi-million-point clouds (ours sit at 10.3 to 10.5 with 2.5 million
            points) but would remove every vertex of a smaller cloud (6 at 10 thousand points): the level relative to
            the data is the same rule at any size. 1 level (points twice as far apart as typical), measured on a
            noisy hemisphere: of the sheet that closes it only a rim 2 to 3 point spacings wide stays (the
            farthest vertex 5% of the radius from the data at 10 thousand points, 2% at 100 thousand), and
            every input point keeps a vertex nearby.
        max_points: clouds above this are subsampled (seeded, uniformly) before meshing (4 million: twice the
            fused cloud the MVS stage aims at; at depth 9, 5 million points take 38 s and 2.1 GB at peak, about
            200 bytes more a point than 2.5 million).
        threads: solver threads (None: every core, as COLMAP's num_threads -1).
        seed: for the subsampling.
    """

    depth: int = 9
    point_weight: float = 1.0
    samples_per_node: float = 1.5
    scale: float = 1.1
    trim_levels: float | None = 1.0
    max_points: int = 4_000_000
    threads: int | None = None
    seed: int = 0


def require_mesher() -> None:
    """Raise `InputError` now, before any work, when pymeshlab is not installed."""
    if importlib.util.find_spec("pymeshlab") is None:
        raise InputError("meshing needs pymeshlab: install mapforge[mesh] (or choose --mesh none)")


def poisson_mesh(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray, config: PoissonConfig | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mesh an oriented cloud: `points [N, 3]`, `normals [N, 3]` (pointing out of the surface, any length),
    `colors [N, 3]` uint8. Points with a non-finite coordinate or a zero normal are left out.

    Returns `(vertices [V, 3] float64, faces [F, 3] int64, vertex_colors [V, 3] uint8)`, trimmed by density.
    """
    config = config or PoissonConfig()
    points, normals, colors = _oriented_points(points, normals, colors, config)
    vertices, faces, vertex_colors, density = _screened_poisson(points, normals, colors, config)
    if len(faces) and config.trim_levels is not None:
        keep = density >= _data_density(vertices, density, points, config.seed) - config.trim_levels
        vertices, faces, vertex_colors = _keep_vertices(vertices, faces, vertex_colors, keep)
    if len(faces) == 0:
        raise ReconstructionError(f"screened Poisson left no surface from {len(points)} points "
                                  f"(depth {config.depth}, trim {config.trim_levels})")
    return vertices, faces, vertex_colors


def write_poisson_mesh(
    path: str | Path, points: np.ndarray, normals: np.ndarray, colors: np.ndarray, config: PoissonConfig | None = None
) -> tuple[Path, int, int]:
    """Mesh the cloud with `poisson_mesh` and write it as a PLY mesh with vertex colours (COLMAP's
    meshed-poisson.ply), atomically. Returns `(path, number of vertices, number of triangles)`."""
    vertices, faces, vertex_colors = poisson_mesh(points, normals, colors, config)
    write_mesh(path, vertices, faces, vertex_colors)
    return Path(path), len(vertices), len(faces)


def _oriented_points(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray, config: PoissonConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    points, normals, colors = (np.asarray(a) for a in (points, normals, colors))
    if points.ndim != 2 or points.shape[1] != 3 or normals.shape != points.shape or colors.shape != points.shape:
        raise MapforgeError(f"points, normals and colours must all have shape [N, 3], got {list(points.shape)}, "
                            f"{list(normals.shape)} and {list(colors.shape)}")
    if colors.dtype != np.uint8:
        raise MapforgeError(f"colours must be uint8, got {colors.dtype}")
    valid = np.isfinite(points).all(1) & np.isfinite(normals).all(1) & (np.abs(normals).sum(1) > 0)
    if valid.sum() < MIN_POINTS:
        raise InputError(f"a Poisson mesh needs at least {MIN_POINTS} points with normals, got {int(valid.sum())}")
    index = np.flatnonzero(valid)
    if len(index) > config.max_points:
        index = np.sort(np.random.default_rng(config.seed).choice(index, config.max_points, replace=False))
    return points[index].astype(np.float64), normals[index].astype(np.float64), colors[index]


def _screened_poisson(
    points: np.ndarray, normals: np.ndarray, colors: np.ndarray, config: PoissonConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`(vertices [V, 3], faces [F, 3], vertex colours [V, 3] uint8, density [V])` of the untrimmed surface."""
    try:
        import pymeshlab
    except ImportError:
        raise InputError("meshing needs pymeshlab: install mapforge[mesh]") from None
    rgba = np.concatenate([colors / 255.0, np.ones((len(colors), 1))], axis=1)
    meshes = pymeshlab.MeshSet()
    meshes.add_mesh(pymeshlab.Mesh(vertex_matrix=points, v_normals_matrix=normals, v_color_matrix=rgba))
    try:
        meshes.generate_surface_reconstruction_screened_poisson(
            depth=config.depth, pointweight=config.point_weight, samplespernode=config.samples_per_node,
            scale=config.scale, threads=config.threads or os.cpu_count() or 1, preclean=False, visiblelayer=False,
        )
    except pymeshlab.PyMeshLabException as exc:
        raise ReconstructionError(f"screened Poisson failed: {' '.join(str(exc).split())[:200]}") from exc
    mesh = meshes.current_mesh()
    vertex_colors = np.round(np.clip(mesh.vertex_color_matrix()[:, :3], 0.0, 1.0) * 255).astype(np.uint8)
    faces = mesh.face_matrix().astype(np.int64)
    return mesh.vertex_matrix().astype(np.float64), faces, vertex_colors, mesh.vertex_scalar_array()


def _data_density(vertices: np.ndarray, density: np.ndarray, points: np.ndarray, seed: int) -> float:
    """The median density of the vertices nearest to (up to 100 thousand of) the input points: the level
    where there is data, whatever share of the mesh the untrimmed sheets take."""
    from scipy.spatial import cKDTree

    if len(points) > 100_000:
        points = points[np.random.default_rng(seed).choice(len(points), 100_000, replace=False)]
    _, nearest = cKDTree(vertices).query(points)
    return float(np.median(density[nearest]))


def _keep_vertices(
    vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray, keep: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mesh without the vertices where `keep [V]` is False, the faces that use them, and vertices left unused."""
    faces = faces[keep[faces].all(axis=1)]
    used = np.zeros(len(vertices), dtype=bool)
    used[faces.ravel()] = True
    new_index = np.cumsum(used) - 1
    return vertices[used], new_index[faces], colors[used]
