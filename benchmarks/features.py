"""Local features benchmark: SIFT (RootSIFT) against XFeat on the shared data sets, pair by pair.

For each data set and feature method: extraction time per image (wall and CPU seconds, one thread, as inside the
executor's workers), then for each pair (every pair on templeSparseRing, neighbouring images i, i+1 elsewhere)
matching time, putative matches, verified inliers (`mapforge.sfm.verification.verify_pair` with the known
intrinsics) and, where ground-truth poses exist, the relative rotation error and translation direction error of
the pose from E. Matching uses each method's defaults (`MatchingConfig.for_features`); XFeat is also scored with
the XFeat paper's matcher: mutual nearest neighbours with cosine similarity above 0.82, no ratio test
("xfeat+sim0.82").

    .venv/bin/python benchmarks/features.py [--datasets templeSparseRing fountain sceaux_castle] [--max-image-size 1600]

Writes benchmarks/results/features.json (merged with earlier runs, keyed by data set and method) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapforge.datasets import load_dataset  # noqa: E402
from mapforge.geometry.rotations import rotation_angle_deg  # noqa: E402
from mapforge.io.atomic import atomic_path  # noqa: E402
from mapforge.sfm.features import FeatureConfig, extract_image  # noqa: E402
from mapforge.sfm.matching import MatchingConfig, match_descriptors  # noqa: E402
from mapforge.sfm.verification import verify_pair  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
DATASETS = {
    "templeSparseRing": "middlebury_templeSparseRing",
    "fountain": "strecha_fountain-P11",
    "sceaux_castle": "sceaux_castle",
}
# Pairs whose ground-truth relative rotation is at most this many degrees are scored as overlapping.
OVERLAP_DEG = 45.0
RESULTS = REPO / "benchmarks" / "results" / "features.json"
# Matching variants scored per feature method: (name, features method, MatchingConfig overrides).
VARIANTS = [
    ("sift", "sift", {}),
    ("xfeat", "xfeat", {}),
    ("xfeat+sim0.82", "xfeat", {"ratio": 1.0, "min_similarity": 0.82}),
]


def _timed(fn, *args, **kwargs):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _direction_error_deg(a: np.ndarray, b: np.ndarray) -> float:
    cosine = a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12)
    return float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))


def _median(values: list[float]) -> float | None:
    return float(np.median(values)) if values else None


def benchmark_dataset(name: str, max_image_size: int) -> dict:
    dataset = load_dataset(SHARED / DATASETS[name])
    count = len(dataset.image_names)
    images = [dataset.load_image(k) for k in range(count)]
    if name == "templeSparseRing":
        pairs = [(i, j) for i in range(count) for j in range(i + 1, count)]
    else:
        pairs = [(i, i + 1) for i in range(count - 1)]
    results = {}
    features_by_method = {}
    for method in ("sift", "xfeat"):
        config = FeatureConfig(method=method, max_image_size=max_image_size)
        extract_image(images[0], config)  # warm-up: model loading and first-call overheads are not per image
        walls, cpus, features = [], [], []
        for image in images:
            f, wall, cpu = _timed(extract_image, image, config)
            features.append(f)
            walls.append(wall)
            cpus.append(cpu)
        features_by_method[method] = (features, walls, cpus)
    for variant, method, overrides in VARIANTS:
        features, walls, cpus = features_by_method[method]
        matching = MatchingConfig.for_features(method, **overrides)
        rows = []
        for i, j in pairs:
            matches, match_wall, match_cpu = _timed(
                match_descriptors, features[i].descriptors, features[j].descriptors, matching.ratio,
                matching.mutual, min_similarity=matching.min_similarity,
            )  # fmt: skip
            geometry = verify_pair(
                features[i].keypoints, features[j].keypoints, matches, dataset.cameras[i], dataset.cameras[j]
            )
            row = {"pair": [i, j], "matches": len(matches), "inliers": geometry.num_inliers,
                   "config": geometry.config, "match_seconds": match_wall, "match_cpu_seconds": match_cpu}  # fmt: skip
            row["posed"] = geometry.cam2_from_cam1 is not None
            if dataset.cam_from_world is not None:
                gt = dataset.cam_from_world[j] * dataset.cam_from_world[i].inverse()
                row["gt_rotation_deg"] = float(rotation_angle_deg(gt.rotation))
                if row["posed"]:
                    est = geometry.cam2_from_cam1
                    row["rot_err_deg"] = float(rotation_angle_deg(est.rotation @ gt.rotation.T))
                    row["trans_err_deg"] = _direction_error_deg(est.translation, gt.translation)
            rows.append(row)
        posed = [r for r in rows if "rot_err_deg" in r]
        # pairs that overlap (ground-truth relative rotation up to OVERLAP_DEG): the median there counts pairs
        # without a pose as failures (infinite error), so a method cannot gain by rejecting the hard ones
        overlapping = [r for r in rows if r.get("gt_rotation_deg", np.inf) <= OVERLAP_DEG]
        overlapping_errors = [r.get("rot_err_deg", np.inf) for r in overlapping]
        results[variant] = {
            "features_per_image": float(np.mean([len(f) for f in features])),
            "extract_seconds_per_image": float(np.mean(walls)),
            "extract_cpu_seconds_per_image": float(np.mean(cpus)),
            "match_seconds_per_pair": float(np.mean([r["match_seconds"] for r in rows])),
            "match_cpu_seconds_per_pair": float(np.mean([r["match_cpu_seconds"] for r in rows])),
            "pairs": len(rows),
            "pairs_with_pose": sum(r["posed"] for r in rows),
            "median_matches": _median([r["matches"] for r in rows]),
            "median_inliers": _median([r["inliers"] for r in rows]),
            "median_rot_err_deg": _median([r["rot_err_deg"] for r in posed]),
            "median_trans_err_deg": _median([r["trans_err_deg"] for r in posed]),
            "pairs_rot_err_below_1deg": sum(r["rot_err_deg"] < 1.0 for r in posed),
            "wrong_poses_above_10deg": sum(r["rot_err_deg"] > 10.0 for r in posed),
            "overlapping_pairs": len(overlapping),
            "median_rot_err_deg_overlapping": _median(overlapping_errors) if overlapping else None,
            "per_pair": rows,
        }
    return {"images": count, "max_image_size": max_image_size, "methods": results}


def _table(results: dict) -> str:
    header = (f"{'data set':18s} {'method':14s} {'feat/img':>8s} {'ext s/img':>9s} {'ext cpu':>8s} {'match s':>8s} "
              f"{'inliers':>8s} {'posed':>7s} {'<1deg':>6s} {'>10deg':>6s} {'rot med':>8s} {'trans med':>9s} "
              f"{'rot med (overlap)':>17s}")  # fmt: skip
    lines = [header]
    for name, entry in results.items():
        for method, r in entry["methods"].items():
            rot = "-" if r["median_rot_err_deg"] is None else f"{r['median_rot_err_deg']:.3f}"
            trans = "-" if r["median_trans_err_deg"] is None else f"{r['median_trans_err_deg']:.3f}"
            overlap = r["median_rot_err_deg_overlapping"]
            overlap = "-" if overlap is None else f"{overlap:.3f} ({r['overlapping_pairs']} pairs)"
            lines.append(
                f"{name:18s} {method:14s} {r['features_per_image']:8.0f} {r['extract_seconds_per_image']:9.2f} "
                f"{r['extract_cpu_seconds_per_image']:8.2f} {r['match_seconds_per_pair']:8.3f} "
                f"{r['median_inliers']:8.0f} {r['pairs_with_pose']:3d}/{r['pairs']:<3d} "
                f"{r['pairs_rot_err_below_1deg']:6d} {r['wrong_poses_above_10deg']:6d} {rot:>8s} {trans:>9s} "
                f"{overlap:>17s}"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--max-image-size", type=int, default=1600)
    args = parser.parse_args()
    import cv2
    import torch

    # one thread, as in the executor's workers (and fair on a machine shared with other jobs)
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    run = {}
    for name in args.datasets:
        if not (SHARED / DATASETS[name]).is_dir():
            print(f"skipping {name}: {SHARED / DATASETS[name]} not found")
            continue
        run[name] = benchmark_dataset(name, args.max_image_size)
        results[name] = run[name]
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(RESULTS) as tmp:
            tmp.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    print(_table(run))
    return 0


if __name__ == "__main__":
    sys.exit(main())
