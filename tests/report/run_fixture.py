"""A small synthetic run folder, as `mapforge run` writes it, for the report, viewer and export tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mapforge.datasets.synthetic import look_at
from mapforge.geometry.rotations import axis_angle_to_matrix
from mapforge.geometry.transforms import Sim3
from mapforge.io.colmap import read_model, write_model
from mapforge.io.colmap_dense import PatchMatchProblem, map_path, write_array, write_fusion_cfg, write_patch_match_cfg
from mapforge.io.gaussians import SH_C0, GaussianData, write_gaussian_ply, write_splat
from mapforge.io.images import write_image
from mapforge.io.ply import write_mesh, write_point_cloud
from mapforge.scene import Camera, Image, Point3D, Reconstruction

WIDTH, HEIGHT = 64, 48
POINT_COLOR = np.array([230, 40, 30], dtype=np.uint8)  # a saturated red that a screenshot test can look for
DENSE_COLOR = np.array([40, 200, 60], dtype=np.uint8)  # the fused cloud's green


def make_run_folder(
    root: Path, num_views: int = 6, num_points: int = 300, num_gaussians: int = 400, seed: int = 0, parts: str = "all"
) -> Path:
    """Write `root/out` (the run folder) and `root/images` (its input photos); return the run folder.

    `parts`: "all", or "sfm" for a run that stopped after structure from motion.
    The estimated world is a similarity transform of the ground-truth world (z up, cameras on a circle of
    radius 3 looking at the origin), so the report's alignment has something to undo.
    """
    rng = np.random.default_rng(seed)
    out, images_dir = root / "out", root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    camera = Camera("PINHOLE", WIDTH, HEIGHT, [60.0, 60.0, WIDTH / 2, HEIGHT / 2])

    angles = np.linspace(0, 2 * np.pi, num_views, endpoint=False)
    gt_centers = np.stack([3 * np.cos(angles), 3 * np.sin(angles), 0.6 + 0.2 * np.sin(2 * angles)], axis=1)
    gt_poses = [look_at(c, np.zeros(3)) for c in gt_centers]
    est_from_gt = Sim3(0.5, axis_angle_to_matrix(np.array([0.3, -0.2, 0.5])), np.array([1.0, -2.0, 0.5]))

    names = [f"view_{i:02d}.png" for i in range(num_views)]
    rec = Reconstruction(cameras={1: camera})
    gt_points = rng.uniform(-0.8, 0.8, size=(num_points, 3))
    points = est_from_gt.apply(gt_points)
    keypoints: list[list[np.ndarray]] = [[] for _ in names]
    tracks: list[list[tuple[int, int]]] = [[] for _ in range(num_points)]
    est_poses = [est_from_gt.transform_pose(p) for p in gt_poses]
    for i, pose in enumerate(est_poses):
        p_cam = pose.apply(points)
        pixels = camera.project(p_cam) + rng.normal(0, 0.3, size=(num_points, 2))
        inside = (p_cam[:, 2] > 0) & (pixels[:, 0] > 0) & (pixels[:, 0] < WIDTH) & (pixels[:, 1] > 0) & (pixels[:, 1] < HEIGHT)
        for j in np.flatnonzero(inside):
            tracks[j].append((i + 1, len(keypoints[i])))
            keypoints[i].append(pixels[j])
    for i, (name, pose) in enumerate(zip(names, est_poses)):
        kps = np.asarray(keypoints[i]).reshape(-1, 2)
        ids = np.full(len(kps), -1, dtype=np.int64)
        rec.images[i + 1] = Image(name, 1, pose, kps, ids)
    for j in range(num_points):
        if len(tracks[j]) >= 2:
            point_id = len(rec.points3D) + 1
            rec.points3D[point_id] = Point3D(points[j], POINT_COLOR, 0.3, np.asarray(tracks[j]))
            for image_id, index in tracks[j]:
                rec.images[image_id].point3D_ids[index] = point_id

    for i, name in enumerate(names):
        yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH] / np.array([HEIGHT, WIDTH])[:, None, None]
        photo = np.stack([xx, yy, np.full_like(xx, i / num_views)], axis=-1).astype(np.float32)
        write_image(images_dir / name, photo)

    (out / "sfm").mkdir(parents=True)
    write_model(rec, out / "sfm" / "sparse" / "0")
    write_point_cloud(out / "sfm" / "points.ply", rec.points_xyz(), rec.points_rgb())
    (out / "sfm" / "report.json").write_text(json.dumps({
        "registered_images": len(rec.images), "points": len(rec.points3D),
        "mean_track_length": float(rec.track_lengths().mean()), "mean_reprojection_error": 0.4,
        "seconds": {"features": 1.5, "matching": 2.0, "mapping": 3.0},
    }))
    (out / "run.toml").write_text(f'images = "{images_dir.as_posix()}"\nseed = {seed}\n')
    timings = {"sfm": 6.5}
    (out / "ground_truth.json").write_text(json.dumps({
        "camera_centers": {name: c.tolist() for name, c in zip(names, gt_centers)},
        "num_images": num_views, "num_registered": num_views, "ate_rmse": 0.01,
        "accuracy": {"RRA@5": 1.0, "RTA@5": 1.0},
    }))
    if parts == "all":
        splat = out / "splat"
        (splat / "renders" / "test").mkdir(parents=True)
        index = rng.choice(len(rec.points3D), size=num_gaussians)
        means = rec.points_xyz()[index] + rng.normal(0, 0.02, size=(num_gaussians, 3))
        sh = np.zeros((num_gaussians, 4, 3), np.float32)
        sh[:, 0, :] = (POINT_COLOR / 255.0 - 0.5) / SH_C0
        gaussians = GaussianData(
            means=means, log_scales=np.full((num_gaussians, 3), np.log(0.04)),
            quats=np.tile([1.0, 0.0, 0.0, 0.0], (num_gaussians, 1)), opacity_logits=np.full(num_gaussians, 2.0), sh=sh,
        )
        write_gaussian_ply(splat / "point_cloud.ply", gaussians)
        write_splat(splat / "scene.splat", gaussians)
        history = [{"iteration": it, "loss": 0.3 * 0.97**it, "psnr": 12 + 0.1 * it, "num_gaussians": 100 + 3 * it,
                    "seconds": 0.2 * it} for it in range(0, 101, 10)]
        (splat / "history.json").write_text(json.dumps(history))
        (splat / "metrics.json").write_text(json.dumps({"psnr": 22.5, "ssim": 0.81, "num_test_views": 2}))
        for name in names[::3]:
            write_image(splat / "renders" / "test" / name, np.full((HEIGHT, WIDTH, 3), 0.6, np.float32))
        nerf = out / "nerf"
        nerf.mkdir()
        (nerf / "history.json").write_text(json.dumps([{"iteration": it, "loss": 0.2 * 0.98**it, "psnr": 14 + 0.08 * it}
                                                      for it in range(0, 101, 20)]))
        (nerf / "metrics.json").write_text(json.dumps({"psnr": 20.1, "ssim": 0.7}))
        timings.update({"splat": 40.0, "nerf": 55.0})
    (out / "timings.json").write_text(json.dumps(timings))
    return out


def add_dense_workspace(out: Path, num_points: int = 1500, seed: int = 0) -> Path:
    """Add what the MVS stage writes to run folder `out` (from `make_run_folder`): `out/dense` with undistorted
    images, their model, depth and normal maps (geometric for all views but the last, which has only the
    photometric pass), the stereo config files, a fused cloud around the sparse points in `DENSE_COLOR`, a small
    coloured mesh and report.json. Returns the workspace."""
    rng = np.random.default_rng(seed)
    dense = out / "dense"
    rec = read_model(out / "sfm" / "sparse" / "0")
    write_model(rec, dense / "sparse")
    names = sorted(image.name for image in rec.images.values())
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH]
    for i, name in enumerate(names):
        write_image(dense / "images" / name, np.full((HEIGHT, WIDTH, 3), 0.2 + 0.1 * i, np.float32))
        depth = (2.0 + 0.02 * xx + 0.01 * yy + 0.1 * i).astype(np.float32)
        depth[: HEIGHT // 4, : WIDTH // 4] = 0.0  # no depth in a corner
        normals = np.zeros((HEIGHT, WIDTH, 3), np.float32)
        normals[..., 0] = (xx - WIDTH / 2) / WIDTH
        normals[..., 2] = -1.0
        normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
        normals[depth == 0] = 0.0
        kinds = ["photometric"] + (["geometric"] if i < len(names) - 1 else [])
        for kind in kinds:
            write_array(map_path(dense, "depth", name, kind), depth)
            write_array(map_path(dense, "normal", name, kind), normals)
    write_patch_match_cfg(dense / "stereo" / "patch-match.cfg", [PatchMatchProblem(n, auto=20) for n in names])
    write_fusion_cfg(dense / "stereo" / "fusion.cfg", names)
    sparse = rec.points_xyz()
    xyz = sparse[rng.integers(0, len(sparse), num_points)] + rng.normal(0, 0.02, size=(num_points, 3))
    normals = rng.normal(size=(num_points, 3))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    write_point_cloud(dense / "fused.ply", xyz, np.tile(DENSE_COLOR, (num_points, 1)), normals)
    centre, radius = sparse.mean(axis=0), 0.3
    corners = centre + radius * np.concatenate([np.eye(3), -np.eye(3)])
    faces = np.array([[0, 1, 2], [1, 3, 2], [3, 4, 2], [4, 0, 2], [1, 0, 5], [3, 1, 5], [4, 3, 5], [0, 4, 5]])
    write_mesh(dense / "meshed-poisson.ply", corners, faces, np.tile(DENSE_COLOR, (6, 1)))
    (dense / "report.json").write_text(json.dumps({  # the layout `mapforge.mvs.pipeline.run_mvs` writes
        "num_images": len(names), "image_size": WIDTH, "fused_points": num_points, "mesh": {"vertices": 6, "triangles": 8},
        "seconds": {"photometric": 30.0, "geometric": 8.0, "fusion": 4.0, "total": 42.0}, "peak_memory_gb": 0.5,
        "images": [{"image": n, "pass": "photometric", "seconds": 6.5, "valid_fraction": 0.9} for n in names],
    }))
    return dense
