"""SfM benchmark: mapforge vs pycolmap (CPU) on the shared data sets.

Both get the same images, the same maximum image size and the same intrinsics (known: the data set's K, held
fixed; unknown: a SIMPLE_RADIAL camera from the 1.2 x max(w, h) prior, refined). Every entry has the registered
images, the mean reprojection error (pixels of the full-size images), the points and the seconds per stage. Data
sets with ground-truth poses (templeSparseRing, fountain) are scored by `mapforge.metrics.pose.evaluate_poses`
(relative pose errors of all pairs, unregistered pairs count as failures). sceaux_castle has intrinsics only: its
entry `agreement` compares the two tools' poses with each other (the same relative pose differences, on the images
both registered), which measures agreement, not error.

    .venv/bin/python benchmarks/sfm.py [--datasets templeSparseRing fountain sceaux_castle] [--modes known]
        [--max-image-size 1600] [--output benchmarks/results/sfm.json]

Writes the results file (merged with earlier runs, keyed by data set, mode and method).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapforge.datasets import load_dataset  # noqa: E402
from mapforge.geometry.transforms import Rigid3  # noqa: E402
from mapforge.io.colmap import write_cameras_text  # noqa: E402
from mapforge.metrics.pose import evaluate_poses  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATASETS = {
    "templeSparseRing": "middlebury_templeSparseRing",
    "fountain": "strecha_fountain-P11",
    "sceaux_castle": "sceaux_castle",
}


def _scores(est: dict[str, Rigid3], gt: dict[str, Rigid3]) -> dict:
    evaluation = evaluate_poses(est, gt)
    return {
        "median_rot_err_deg": evaluation.median_rot_err_deg,
        "median_trans_err_deg": evaluation.median_trans_err_deg,
        "AUC@5": evaluation.auc["AUC@5"],
    }


def _agreement(est: dict[str, Rigid3], reference: dict[str, Rigid3]) -> dict:
    """Relative pose differences of `est` from `reference` on the images both registered (not errors: neither is
    ground truth)."""
    common = sorted(set(est) & set(reference))
    entry = {
        "note": "agreement between mapforge and pycolmap, not error: no ground-truth poses; relative pose "
        "differences over all pairs of the images both registered",
        "common_images": len(common),
    }
    if len(common) < 2:
        return entry
    evaluation = evaluate_poses({n: est[n] for n in common}, {n: reference[n] for n in common})
    return {
        **entry,
        "median_rot_diff_deg": evaluation.median_rot_err_deg,
        "median_trans_diff_deg": evaluation.median_trans_err_deg,
        "max_rot_diff_deg": float(evaluation.rot_err_deg.max()),
        "max_trans_diff_deg": float(evaluation.trans_err_deg.max()),
        "AUC@5": evaluation.auc["AUC@5"],
    }


def run_mapforge(image_dir: Path, work: Path, intrinsics: Path | None, max_image_size: int) -> tuple[dict, dict, dict]:
    """(poses by image name, model statistics, seconds per stage)."""
    from mapforge.sfm.pipeline import SfMConfig, run_sfm

    config = SfMConfig(intrinsics=intrinsics, workers=2)
    config.features.max_image_size = max_image_size
    result = run_sfm(image_dir, work / "mapforge", config)
    est = {image.name: image.cam_from_world for image in result.reconstruction.images.values()}
    summary = result.report["models"][0]
    model = {"mean_reprojection_error_px": summary["mean_reprojection_error_px"], "points": summary["points"]}
    return est, model, dict(result.report["seconds"])


def run_pycolmap(image_dir: Path, work: Path, camera, known: bool, max_image_size: int) -> tuple[dict, dict, dict]:
    """(poses by image name, model statistics, seconds per stage) of pycolmap's largest model."""
    import pycolmap

    out = work / "pycolmap"
    out.mkdir(parents=True, exist_ok=True)
    database = out / "database.db"
    reader = pycolmap.ImageReaderOptions()
    if known:
        reader.camera_model = camera.model
        reader.camera_params = ",".join(f"{p:.10g}" for p in camera.params)
    else:
        reader.camera_model = "SIMPLE_RADIAL"
    extraction = pycolmap.FeatureExtractionOptions()
    extraction.max_image_size = max_image_size
    extraction.use_gpu = False
    extraction.num_threads = 2
    names = sorted(p.name for p in image_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    seconds = {}
    t0 = time.perf_counter()
    pycolmap.extract_features(database, image_dir, image_names=names, camera_mode=pycolmap.CameraMode.SINGLE,
                              reader_options=reader, extraction_options=extraction, device=pycolmap.Device.cpu)  # fmt: skip
    seconds["extract"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    matching = pycolmap.FeatureMatchingOptions()
    matching.use_gpu = False
    matching.num_threads = 2
    pycolmap.match_exhaustive(database, matching_options=matching, device=pycolmap.Device.cpu)
    seconds["match+verify"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    options = pycolmap.IncrementalPipelineOptions()
    options.num_threads = 2
    if known:
        options.ba_refine_focal_length = False
        options.ba_refine_extra_params = False
    models = pycolmap.incremental_mapping(database, image_dir, out / "sparse", options)
    seconds["map"] = time.perf_counter() - t0
    seconds["total"] = sum(seconds.values())
    est, model = {}, {"mean_reprojection_error_px": None, "points": 0}
    if models:
        best = max(models.values(), key=lambda rec: rec.num_reg_images())
        for image in best.images.values():
            if image.has_pose:
                pose = image.cam_from_world()
                est[image.name] = Rigid3(pose.rotation.matrix(), pose.translation)
        model = {"mean_reprojection_error_px": best.compute_mean_reprojection_error(), "points": best.num_points3D()}
    return est, model, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--modes", nargs="+", default=["known"], choices=["known", "unknown"])
    parser.add_argument("--methods", nargs="+", default=["mapforge", "pycolmap"], choices=["mapforge", "pycolmap"])
    parser.add_argument("--max-image-size", type=int, default=1600)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "sfm.json")
    args = parser.parse_args()

    results_file = args.output
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    for key in args.datasets:
        folder = SHARED / DATASETS[key]
        if not folder.is_dir():
            print(f"skipping {key}: {folder} not found")
            continue
        dataset = load_dataset(folder)
        gt = dict(zip(dataset.image_names, dataset.cam_from_world)) if dataset.cam_from_world is not None else None
        for mode in args.modes:
            known = mode == "known"
            poses = {}
            for method in args.methods:
                work = Path(tempfile.mkdtemp(prefix=f"sfm_bench_{key}_"))
                try:
                    # A clean image folder (no K.txt / cameras.txt beside the images for the unknown mode).
                    images = work / "images"
                    images.mkdir()
                    for name in dataset.image_names:
                        (images / name).symlink_to(Path(dataset.image_dir) / name)
                    intrinsics = None
                    if known:
                        intrinsics = work / "cameras.txt"
                        write_cameras_text({1: dataset.cameras[0]}, intrinsics)
                    print(f"== {key} ({mode} intrinsics): {method}", flush=True)
                    if method == "mapforge":
                        est, model, seconds = run_mapforge(images, work, intrinsics, args.max_image_size)
                    else:
                        est, model, seconds = run_pycolmap(images, work, dataset.cameras[0], known, args.max_image_size)
                    poses[method] = est
                    entry = {
                        "registered": sum(1 for name in dataset.image_names if name in est),
                        "images": len(dataset.image_names),
                        **(_scores(est, gt) if gt is not None else {}),
                        **model,
                        "seconds": seconds,
                        "max_image_size": args.max_image_size,
                    }
                    print(json.dumps(entry, indent=1), flush=True)
                    results.setdefault(key, {}).setdefault(mode, {})[method] = entry
                finally:
                    shutil.rmtree(work, ignore_errors=True)
            pair = results.get(key, {}).get(mode, {})
            if "mapforge" in pair and "pycolmap" in pair:
                pair["time_ratio_mapforge_over_pycolmap"] = pair["mapforge"]["seconds"]["total"] / pair["pycolmap"]["seconds"]["total"]
            if gt is None and len(poses) == 2:
                pair["agreement"] = _agreement(poses["mapforge"], poses["pycolmap"])
                print(json.dumps(pair["agreement"], indent=1), flush=True)
            elif gt is None and poses:
                pair.pop("agreement", None)  # it compared poses this run has replaced
            results_file.parent.mkdir(parents=True, exist_ok=True)
            results_file.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {results_file}")


if __name__ == "__main__":
    main()
