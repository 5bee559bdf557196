"""Geometry out of a trained radiance field: a coloured mesh by marching cubes on the density, and a point cloud
from the expected depth of rendered views."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from mapforge.errors import InputError, ReconstructionError
from mapforge.geometry.transforms import Rigid3
from mapforge.nerf.rays import ndc_to_frame
from mapforge.nerf.evaluate import render_image
from mapforge.nerf.setup import SceneSetup, model_rays
from mapforge.nerf.trainer import load_checkpoint
from mapforge.scene import Camera
from mapforge.training.checkpoint import find_checkpoint, read_run_config

# instant-ngp's marching-cubes density threshold (2.5), stated for its unit cube: densities scale inversely with
# length, so in a box of side s the same surface lies at 2.5 / s.
UNIT_CUBE_THRESHOLD = 2.5


def default_threshold(setup: SceneSetup) -> float:
    """The density level of the surface when none is given: `UNIT_CUBE_THRESHOLD / longest box side`."""
    return UNIT_CUBE_THRESHOLD / float(np.max(setup.aabb[1] - setup.aabb[0]))


def to_world(setup: SceneSetup, points: np.ndarray) -> np.ndarray:
    """Points `[N, 3]` of the model's space (NDC for forward-facing scenes) in world coordinates."""
    points = np.asarray(points, dtype=np.float64)
    if not setup.ndc:
        return points
    fx, fy, width, height = setup.ndc_focal
    frame_points = ndc_to_frame(points, fx, fy, int(width), int(height), setup.ndc_near)
    return Rigid3.from_matrix(setup.ndc_from_world).inverse().apply(frame_points)


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def density_grid(model: torch.nn.Module, setup: SceneSetup, resolution: int = 256, chunk: int = 1 << 18) -> np.ndarray:
    """The model's density at the `resolution^3` lattice spanning `setup.aabb` corner to corner, `[R, R, R]`
    float32 indexed (x, y, z)."""
    axes = [np.linspace(setup.aabb[0, k], setup.aabb[1, k], resolution, dtype=np.float32) for k in range(3)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    device = _device(model)
    out = np.empty(len(grid), dtype=np.float32)
    for s in tqdm(range(0, len(grid), chunk), desc="density grid", unit="chunk", leave=False, disable=None):
        out[s : s + chunk] = model.density(torch.from_numpy(grid[s : s + chunk]).to(device)).float().cpu().numpy()
    return out.reshape(resolution, resolution, resolution)


@torch.no_grad()
def surface_colors(model: torch.nn.Module, vertices: np.ndarray, normals: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Colours `[V, 3]` uint8 of surface points `vertices [V, 3]` (model space) seen head-on, i.e. along the
    inward direction `-normals [V, 3]` (outward unit normals), as a camera facing the surface would see them."""
    device = _device(model)
    directions = -normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    colors = np.empty((len(vertices), 3), dtype=np.uint8)
    for s in range(0, len(vertices), chunk):
        p = torch.from_numpy(vertices[s : s + chunk].astype(np.float32)).to(device)
        d = torch.from_numpy(directions[s : s + chunk].astype(np.float32)).to(device)
        rgb = model.color(p, d).clamp(0, 1).cpu().numpy()
        colors[s : s + chunk] = np.round(rgb * 255).astype(np.uint8)
    return colors


def extract_mesh(
    model: torch.nn.Module, setup: SceneSetup, resolution: int = 256, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Marching cubes (`skimage.measure.marching_cubes`) on the density over the scene box at level `threshold`
    (default `default_threshold`). Returns world `vertices [V, 3]` float64, `faces [F, 3]` int64 and vertex
    `colors [V, 3]` uint8 from the colour network (see `surface_colors`).

    Raises `ReconstructionError` when the density never crosses the threshold inside the box.
    """
    if resolution < 8:
        raise InputError(f"mesh resolution must be at least 8, got {resolution}")
    level = default_threshold(setup) if threshold is None else float(threshold)
    densities = density_grid(model, setup, resolution)
    low, high = float(densities.min()), float(densities.max())
    if not low < level < high:
        raise ReconstructionError(
            f"no surface at density {level:.4g}: the field ranges over [{low:.4g}, {high:.4g}] in the scene box "
            "(choose --threshold inside it)"
        )
    from skimage.measure import marching_cubes

    spacing = tuple((setup.aabb[1] - setup.aabb[0]) / (resolution - 1))
    # With the default gradient direction the normals point toward lower values, i.e. out of the dense object.
    vertices, faces, normals, _ = marching_cubes(densities, level=level, spacing=spacing)
    vertices = vertices.astype(np.float64) + setup.aabb[0]
    colors = surface_colors(model, vertices, normals)
    return to_world(setup, vertices), faces.astype(np.int64), colors


@torch.no_grad()
def depth_points(
    model: torch.nn.Module,
    setup: SceneSetup,
    cameras: list[Camera],
    cams_from_world: list[Rigid3],
    stride: int = 4,
    min_opacity: float = 0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """A point cloud from rendered views: every `stride`-th pixel (views rendered at 1/`stride` size) whose
    accumulated opacity is at least `min_opacity` gives the point at its expected depth (normalised by the
    opacity), coloured by its rendered colour. Returns world `xyz [N, 3]` float64 and `rgb [N, 3]` uint8."""
    xyz, rgb = [], []
    for camera, pose in tqdm(list(zip(cameras, cams_from_world)), desc="depth points", unit="view", leave=False,
                             disable=None):
        small = camera.scaled(1.0 / stride) if stride > 1 else camera
        out = render_image(model, setup, small, pose)
        origins, directions, _, _ = model_rays(setup, small, pose)
        opacity = out["opacity"].reshape(-1)
        keep = opacity >= min_opacity
        distance = out["depth"].reshape(-1)[keep] / opacity[keep]
        points = origins.numpy()[keep] + distance[:, None] * directions.numpy()[keep]
        xyz.append(to_world(setup, points))
        rgb.append(np.round(out["rgb"].reshape(-1, 3)[keep] * 255).astype(np.uint8))
    if not xyz:
        return np.zeros((0, 3)), np.zeros((0, 3), dtype=np.uint8)
    return np.concatenate(xyz), np.concatenate(rgb)


def export_model(
    run_dir: str | Path,
    mesh_path: str | Path | None = None,
    points_path: str | Path | None = None,
    resolution: int = 256,
    threshold: float | None = None,
    data: str | Path | None = None,
    stride: int = 4,
    device: str = "auto",
) -> dict:
    """Export the model trained in `run_dir` (a `mapforge nerf train` output folder or its `checkpoint.pt`): a
    coloured mesh PLY to `mesh_path` (`extract_mesh`) and/or a point cloud PLY to `points_path` (`depth_points`
    over the training views of `data`, by default the data set recorded in the folder's `config.json`).
    Returns {"mesh": {"path", "vertices", "faces", "threshold"}, "points": {"path", "count"}} for what was written."""
    from mapforge.io.ply import write_mesh, write_point_cloud

    if mesh_path is None and points_path is None:
        raise InputError("nothing to export: give a mesh file and/or a point-cloud file")
    checkpoint = find_checkpoint(run_dir, "mapforge nerf train")
    model, _, setup, _ = load_checkpoint(checkpoint, device)
    model.eval()
    summary: dict = {}
    if mesh_path is not None:
        vertices, faces, colors = extract_mesh(model, setup, resolution, threshold)
        write_mesh(mesh_path, vertices, faces, colors)
        summary["mesh"] = {"path": str(mesh_path), "vertices": len(vertices), "faces": len(faces),
                           "threshold": default_threshold(setup) if threshold is None else threshold}
    if points_path is not None:
        from mapforge.datasets import load_dataset

        trained = read_run_config(checkpoint.parent)
        data = data if data is not None else trained.get("data")
        if data is None:
            raise InputError(f"{run_dir}: no data set recorded in config.json; give the data set for the point cloud")
        dataset = load_dataset(data, downscale=int(trained.get("downscale", 1)))
        if dataset.cam_from_world is None:
            raise InputError(f"data set {dataset.name} has no camera poses")
        train = dataset.split["train"]
        xyz, rgb = depth_points(model, setup, [dataset.cameras[i] for i in train],
                                [dataset.cam_from_world[i] for i in train], stride)
        write_point_cloud(points_path, xyz, rgb)
        summary["points"] = {"path": str(points_path), "count": len(xyz)}
    return summary

