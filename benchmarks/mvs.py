"""MVS benchmark: mapforge's PatchMatch stereo, fusion and meshing, with a peer measured in the same run.

Sections (each runs in its own process, so its time, CPU use and peak memory are its own):

- `motorcycle`: the Middlebury 2014 motorcycle pair that scikit-image ships (741x500, GT disparity). Our depth
  (photometric pass on both views, then the geometric pass on the left) as disparity, against OpenCV's
  StereoSGBM on the same pair with OpenCV's own sample settings and with its full 8-path mode; bad-pixel rates at 1
  and 2 px on the pixels with GT, a pixel without an estimate counting as bad for both.
- `synthetic`: the built-in scene, 640x480, 30 views, from its exact model (cameras, poses, points): depth-map
  errors against the exact depth, and the fused cloud's accuracy, completeness and F-score at 1% (and 0.5%) of the
  scene's extent (the diagonal of the room's bounding box) against 300k points sampled on the scene's surfaces and
  seen by at least two cameras; COLMAP's own fusion (pycolmap.stereo_fusion) of the same depth maps is the peer.
- `fountain`: fountain-P11 with its ground-truth cameras at 1600 px: time of every step (undistortion, both passes
  over all 11 images, fusion, mesh), fused points, peak memory, and pictures of the cloud and the mesh seen from
  image 5. Its sparse points (for COLMAP's view selection and depth ranges) come from mapforge SfM, aligned to the
  ground-truth cameras; that SfM run is timed apart. COLMAP's fusion of the same maps is the peer for the point count.

- `patchmatch`: one view of the built-in scene at 640x480 against its 10 nearest views, the photometric pass alone,
  on the numba kernels and, with `--device cuda` (or any torch device), on the torch path there: seconds and the
  depth error against the exact depth. Not run by default; it is the per-image figure for other devices.

    .venv/bin/python benchmarks/mvs.py [--sections motorcycle synthetic fountain] [--device cuda]
        [--output benchmarks/results/mvs.json]

Run it alone on the machine: it measures wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHARED = REPO.parent / "shared" / "data"
RESULTS = REPO / "benchmarks" / "results"
SECTIONS = ("motorcycle", "synthetic", "fountain", "patchmatch")
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _usage(start_wall: float, start_cpu: float) -> dict:
    wall = time.perf_counter() - start_wall
    cpu = time.process_time() - start_cpu
    return {
        "wall_seconds": round(wall, 2),
        "cpu_seconds": round(cpu, 2),
        "cpu_utilisation": round(cpu / wall, 2),
        "peak_memory_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }


# ---------------------------------------------------------------------------------------------------------------
# Motorcycle


def _bad_pixels(estimate: np.ndarray, truth: np.ndarray) -> dict:
    known = np.isfinite(truth)
    error = np.abs(estimate - truth)[known]
    error = np.where(np.isfinite(error), error, np.inf)  # no estimate: bad at every threshold
    valid = np.isfinite(estimate[known])
    return {
        "bad_1px": round(float(np.mean(error > 1.0)), 4),
        "bad_2px": round(float(np.mean(error > 2.0)), 4),
        "coverage": round(float(valid.mean()), 4),
        "mean_abs_error_px": round(float(error[valid].mean()), 3),
    }


def _sgbm(left: np.ndarray, right: np.ndarray, num_disparities: int, full: bool) -> np.ndarray:
    import cv2

    block = 5 if full else 3  # OpenCV's samples/python/stereo_match.py uses 3; 5 with MODE_HH is its usual pairing
    matcher = cv2.StereoSGBM_create(
        minDisparity=0, numDisparities=num_disparities, blockSize=block, P1=8 * 3 * block**2, P2=32 * 3 * block**2,
        disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100, speckleRange=32,
        mode=cv2.STEREO_SGBM_MODE_HH if full else cv2.STEREO_SGBM_MODE_SGBM,
    )  # fmt: skip
    disparity = matcher.compute(left, right).astype(np.float32) / 16.0
    return np.where(disparity >= 0, disparity, np.nan)


def motorcycle() -> dict:
    import torch
    from skimage import data

    from mapforge.geometry.transforms import Rigid3
    from mapforge.mvs.patchmatch.api import PatchMatchConfig, StereoView, patch_match

    left, right, truth = data.stereo_motorcycle()
    f, cx, cy, doffs, baseline = 994.978, 311.193, 254.877, 31.086, 0.193001  # the scikit-image docstring
    K_left = np.array([[f, 0, cx + 0.5], [0, f, cy + 0.5], [0, 0, 1.0]])  # + 0.5: mapforge's pixel centres
    K_right = K_left.copy()
    K_right[0, 2] += doffs
    num_disparities = 96  # covers the GT's 7 to 60 px with margin; the same search range for both methods
    depth_range = (f * baseline / (num_disparities + doffs), f * baseline / doffs)
    result: dict = {"image_size": [int(left.shape[1]), int(left.shape[0])], "disparity_range": [0, num_disparities]}

    start = time.perf_counter()
    grey = [torch.from_numpy((img.astype(np.float32) / 255.0) @ LUMA) for img in (left, right)]
    views = [StereoView(grey[0], K_left, Rigid3()), StereoView(grey[1], K_right, Rigid3(np.eye(3), [-baseline, 0, 0]))]
    config = PatchMatchConfig(filter_min_num_consistent=1)
    photometric = [patch_match(views[0], [views[1]], depth_range, config, filter=False),
                   patch_match(views[1], [views[0]], depth_range, config, filter=False)]
    views[1].depth = photometric[1].depth
    geometric = patch_match(views[0], [views[1]], depth_range, config, init=photometric[0], geometric=True, filter=False)
    seconds = time.perf_counter() - start
    filtered = patch_match(views[0], [views[1]], depth_range, config, init=photometric[0], geometric=True)

    def disparity(depth):
        depth = depth.numpy()
        return np.where(depth > 0, f * baseline / np.where(depth > 0, depth, 1.0) - doffs, np.nan)

    result["mapforge"] = {"seconds": round(seconds, 2), **_bad_pixels(disparity(geometric.depth), truth)}
    result["mapforge_photometric_only"] = _bad_pixels(disparity(photometric[0].depth), truth)
    result["mapforge_filtered"] = _bad_pixels(disparity(filtered.depth), truth)
    grey8 = [np.round(g.numpy() * 255).astype(np.uint8) for g in grey]
    for name, full in (("opencv_sgbm", False), ("opencv_sgbm_hh", True)):
        start = time.perf_counter()
        estimate = _sgbm(grey8[0], grey8[1], num_disparities, full)
        result[name] = {"seconds": round(time.perf_counter() - start, 3), **_bad_pixels(estimate, truth)}
    peer = min(result["opencv_sgbm"]["bad_2px"], result["opencv_sgbm_hh"]["bad_2px"])
    result["bad_2px_reduction_vs_best_sgbm"] = round(1.0 - result["mapforge"]["bad_2px"] / peer, 4)
    return result


# ---------------------------------------------------------------------------------------------------------------
# Synthetic scene


def _cloud_scores(points: np.ndarray, truth: np.ndarray, extent: float) -> dict:
    from mapforge.metrics.geometry import nearest_distances

    accuracy = nearest_distances(points.astype(np.float64), truth)
    completeness = nearest_distances(truth, points.astype(np.float64))
    scores = {"points": int(len(points)), "accuracy_mean_m": round(float(accuracy.mean()), 4),
              "accuracy_median_m": round(float(np.median(accuracy)), 4),
              "completeness_mean_m": round(float(completeness.mean()), 4),
              "completeness_median_m": round(float(np.median(completeness)), 4)}  # fmt: skip
    for fraction in (0.01, 0.005):
        tau = fraction * extent
        precision, recall = float(np.mean(accuracy < tau)), float(np.mean(completeness < tau))
        fscore = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[f"at_{fraction:g}_extent"] = {"threshold_m": round(tau, 4), "precision": round(precision, 4),
                                             "recall": round(recall, 4), "fscore": round(fscore, 4)}  # fmt: skip
    return scores


def _colmap_fusion(workspace: Path, out: Path) -> tuple[np.ndarray, float] | None:
    try:
        import pycolmap
    except ImportError:
        return None
    from mapforge.io.ply import read_point_cloud

    start = time.perf_counter()
    pycolmap.stereo_fusion(str(out), str(workspace), input_type="geometric", output_type="ply")
    return read_point_cloud(out)[0], time.perf_counter() - start


def _depth_scores(result, dataset) -> dict:
    from mapforge.io.colmap_dense import read_array

    errors, valid = [], []
    for index, name in enumerate(dataset.image_names):
        depth = read_array(result.workspace.depth_map(name, "geometric"))
        truth = dataset.load_depth(index)
        kept = depth > 0
        valid.append(float(kept.mean()))
        errors.append(np.abs(depth[kept] - truth[kept]) / truth[kept])
    errors = np.concatenate(errors)
    return {"valid_fraction": round(float(np.mean(valid)), 4), "median_relative_error": float(np.median(errors)),
            "within_1pct_of_valid": round(float(np.mean(errors < 0.01)), 4),
            "within_1pct_of_all_pixels": round(float(np.mean(errors < 0.01) * np.mean(valid)), 4)}  # fmt: skip


def synthetic(work: Path) -> dict:
    from mapforge.datasets.synthetic import SyntheticConfig, make_scene, write_scene
    from mapforge.io.colmap import read_model
    from mapforge.mvs.pipeline import MVSConfig, run_mvs

    config = SyntheticConfig(width=640, height=480, num_views=30)
    dataset = make_scene(config)
    scene_dir = write_scene(dataset, work / "scene")
    result = run_mvs(read_model(scene_dir / "sparse_gt"), scene_dir / "images", work / "dense", MVSConfig())
    scene = dataset.metadata["scene"]
    points = scene.sample_surface_points(300_000, 1, dataset.cam_from_world, dataset.cameras[0])
    seen = scene.visibility(points, dataset.cam_from_world, dataset.cameras[0]).sum(1)
    truth = points[seen >= 2]
    extent = float(np.linalg.norm(scene.bounding_box[1] - scene.bounding_box[0]))
    entry = {
        "scene": {"width": config.width, "height": config.height, "views": config.num_views, "extent_m": round(extent, 3),
                  "ground_truth_points": int(len(truth)), "ground_truth": "surface points seen by >= 2 cameras"},
        "seconds": result.report["seconds"],
        "seconds_per_image": _per_image(result.report),
        "depth_maps": _depth_scores(result, dataset),
        "mapforge_fusion": _cloud_scores(result.cloud.points, truth, extent),
        "mesh": result.report["mesh"],
    }  # fmt: skip
    colmap = _colmap_fusion(work / "dense", work / "colmap_fused.ply")
    if colmap is not None:
        entry["colmap_fusion_of_the_same_maps"] = {"seconds": round(colmap[1], 2), **_cloud_scores(colmap[0], truth, extent)}
    return entry


def _per_image(report: dict) -> dict:
    out = {}
    for kind in ("photometric", "geometric"):
        seconds = [s["seconds"] for s in report["images"] if s["pass"] == kind]
        if seconds:
            out[kind] = round(float(np.mean(seconds)), 2)
    return out


# ---------------------------------------------------------------------------------------------------------------
# fountain-P11


def _fountain_model(work: Path):
    """The ground-truth cameras and poses with sparse points from mapforge SfM, aligned to them by a similarity
    fitted to the camera centres; returns (model, SfM seconds, alignment residual in metres)."""
    from mapforge.datasets import load_dataset
    from mapforge.geometry.alignment import align_cameras
    from mapforge.scene import Image, Point3D
    from mapforge.sfm.pipeline import SfMConfig, run_sfm

    data = SHARED / "strecha_fountain-P11"
    truth = load_dataset(data).to_reconstruction()
    start = time.perf_counter()
    config = SfMConfig(intrinsics=str(data / "images" / "K.txt"))
    config.features.max_image_size = 1600
    sfm = run_sfm(data / "images", work / "sfm", config).reconstruction
    seconds = time.perf_counter() - start
    by_name = {image.name: image_id for image_id, image in truth.images.items()}
    pairs = [(by_name[image.name], image) for image in sfm.images.values() if image.name in by_name]
    sim = align_cameras([image.cam_from_world for _, image in pairs], [truth.images[i].cam_from_world for i, _ in pairs])
    residual = np.median([np.linalg.norm(sim.apply(image.center[None])[0] - truth.images[i].center) for i, image in pairs])
    new_id = {image_id: by_name[image.name] for image_id, image in sfm.images.items() if image.name in by_name}
    for old_id, image in sfm.images.items():
        if old_id in new_id:
            target = truth.images[new_id[old_id]]
            truth.images[new_id[old_id]] = Image(target.name, target.camera_id, target.cam_from_world,
                                                 np.zeros((len(image.point3D_ids), 2)), image.point3D_ids)  # fmt: skip
    for point_id, point in sfm.points3D.items():
        track = np.array([[new_id[i], k] for i, k in point.track if i in new_id], np.int64).reshape(-1, 2)
        truth.points3D[point_id] = Point3D(sim.apply(point.xyz[None])[0], point.rgb, point.error, track)
    return truth, seconds, float(residual)


def _render_mesh(vertices: np.ndarray, faces: np.ndarray, K: np.ndarray, pose, size: tuple[int, int]) -> np.ndarray:
    """Grey Lambert shading lit from the camera, painter's order (far triangles first)."""
    import cv2

    width, height = size
    local = pose.apply(vertices.astype(np.float64))
    tri = local[faces]  # [F, 3, 3]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
    centres = tri.mean(1)
    shade = np.abs((normals * centres).sum(1)) / np.maximum(np.linalg.norm(centres, axis=1), 1e-12)
    keep = (tri[:, :, 2] > 0).all(1)
    pixels = (tri @ K.T)[..., :2] / tri[..., 2:3]
    image = np.full((height, width, 3), 255, np.uint8)
    for k in np.flatnonzero(keep)[np.argsort(-centres[keep, 2])]:
        grey = int(40 + 200 * shade[k])
        cv2.fillConvexPoly(image, np.round(pixels[k] * 4).astype(np.int32), (grey, grey, grey), lineType=cv2.LINE_AA, shift=2)
    return image


def fountain(work: Path) -> dict:
    from mapforge.io.colmap import read_model
    from mapforge.io.images import write_image
    from mapforge.io.ply import read_mesh
    from mapforge.mvs.pipeline import MVSConfig, run_mvs
    from mapforge.report.html import perspective_cloud_picture

    data = SHARED / "strecha_fountain-P11"
    model, sfm_seconds, residual = _fountain_model(work)
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    result = run_mvs(model, data / "images", work / "dense", MVSConfig())
    usage = _usage(start_wall, start_cpu)
    entry = {
        "image_size": result.report["image_size"],
        "images": result.report["num_images"],
        "mvs_seconds": result.report["seconds"],
        "seconds_per_image": _per_image(result.report),
        "mvs_cpu_utilisation": usage["cpu_utilisation"],
        "fused_points": result.report["fused_points"],
        "mean_pixels_per_point": round(result.report["mean_pixels_per_point"], 2),
        "valid_pixel_fraction": round(float(np.mean([s["valid_fraction"] for s in result.report["images"] if s["pass"] == "geometric"] or [0])), 4),
        "mesh": result.report["mesh"],
        "peak_memory_gb": result.report["peak_memory_gb"],
        "sparse_points_from": {"mapforge_sfm_seconds": round(sfm_seconds, 1), "points": len(model.points3D),
                               "alignment_median_centre_residual_m": round(residual, 4)},
    }  # fmt: skip
    colmap = _colmap_fusion(work / "dense", work / "colmap_fused.ply")
    if colmap is not None:
        entry["colmap_fusion_of_the_same_maps"] = {"seconds": round(colmap[1], 2), "points": int(len(colmap[0]))}
    view = result.workspace
    dense_model = read_model(view.sparse)  # the undistorted cameras
    _, image = dense_model.image_by_name("0005.jpg")
    camera = dense_model.cameras[image.camera_id]
    scale = 1000 / max(camera.width, camera.height)
    K = np.diag([scale, scale, 1.0]) @ camera.K
    size = (round(camera.width * scale), round(camera.height * scale))
    pictures = {"cloud": RESULTS / "mvs_fountain_cloud.jpg", "mesh": RESULTS / "mvs_fountain_mesh.jpg"}
    cloud = perspective_cloud_picture(result.cloud.points, result.cloud.colors, K, image.cam_from_world, size)
    write_image(pictures["cloud"], cloud, quality=85)
    if view.mesh.is_file():
        vertices, faces, _ = read_mesh(view.mesh)
        write_image(pictures["mesh"], _render_mesh(vertices, faces, K, image.cam_from_world, size), quality=85)
    entry["pictures"] = {k: str(p.relative_to(REPO)) for k, p in pictures.items() if p.is_file()}
    return entry


# ---------------------------------------------------------------------------------------------------------------
# One view on each device


def patchmatch(device: str) -> dict:
    import torch

    from mapforge.datasets.synthetic import SyntheticConfig, make_scene
    from mapforge.devices import select_device
    from mapforge.mvs.patchmatch.api import PatchMatchConfig, StereoView, patch_match

    dataset = make_scene(SyntheticConfig(width=640, height=480, num_views=30))
    ref, count = 3, len(dataset)
    truth = dataset.load_depth(ref)
    depth_range = (0.8 * float(truth.min()), 1.25 * float(truth.max()))
    entry: dict = {"image_size": [640, 480], "sources": 10, "pass": "photometric"}
    for name in ["cpu"] + ([device] if device != "cpu" else []):
        target = select_device(name)
        backend = "cpu" if target.type == "cpu" else "torch"

        def view(i: int) -> StereoView:
            grey = torch.from_numpy(np.ascontiguousarray(dataset.load_image(i) @ LUMA)).to(target)
            return StereoView(grey, dataset.cameras[i].K, dataset.cam_from_world[i])

        sources = [view((ref + k) % count) for k in (1, -1, 2, -2, 3, -3, 4, -4, 5, -5)]
        patch_match(view(ref), sources, depth_range, PatchMatchConfig(num_levels=1, iterations=(1,)), filter=False,
                    backend=backend)  # compiles the kernels, warms the device
        start = time.perf_counter()
        result = patch_match(view(ref), sources, depth_range, PatchMatchConfig(), filter=False, backend=backend)
        if target.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        errors = np.abs(result.depth.cpu().numpy() - truth) / truth
        entry[f"{backend}_on_{target}"] = {"seconds": round(seconds, 2), "median_relative_error": float(np.median(errors)),
                                           "within_1pct": round(float(np.mean(errors < 0.01)), 4)}  # fmt: skip
    return entry


# ---------------------------------------------------------------------------------------------------------------


def _run_section(name: str, out: Path, device: str) -> None:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory(prefix=f"mvs_{name}_") as tmp:
        work = Path(tmp)
        if name == "patchmatch":
            entry = patchmatch(device)
        else:
            entry = motorcycle() if name == "motorcycle" else synthetic(work) if name == "synthetic" else fountain(work)
    entry["process"] = _usage(start_wall, start_cpu)
    out.write_text(json.dumps(entry, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS[:3]))
    parser.add_argument("--device", default="cpu", help="torch device for the patchmatch section (default cpu)")
    parser.add_argument("--output", type=Path, default=RESULTS / "mvs.json")
    parser.add_argument("--_section", help=argparse.SUPPRESS)
    parser.add_argument("--_out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._section:
        _run_section(args._section, args._out, args.device)
        return
    results = json.loads(args.output.read_text()) if args.output.is_file() else {}
    for name in args.sections:
        if name == "fountain" and not (SHARED / "strecha_fountain-P11").is_dir():
            print(f"{name}: skipped, {SHARED / 'strecha_fountain-P11'} not found")
            continue
        with tempfile.NamedTemporaryFile(suffix=".json") as tmp:
            command = [sys.executable, __file__, "--_section", name, "--_out", tmp.name, "--device", args.device]
            subprocess.run(command, check=True)
            results[name] = json.loads(Path(tmp.name).read_text())
        results[name]["machine"] = {"cpus": os.cpu_count(), "platform": platform.platform()}
        print(json.dumps({name: results[name]}, indent=2))
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
