"""Geometric accuracy: point cloud against point cloud (DTU / Tanks and Temples style) and depth maps.

Point clouds are `[N, 3]` float64 in the same frame and units (align them first, e.g. with
`mapforge.geometry.alignment.umeyama` on the cameras). Nearest neighbours come from `scipy.spatial.cKDTree`.
These are the metrics themselves; the benchmarks' protocols around them (DTU's observation masks and 20 mm
outlier cap, Tanks and Temples' cropping volumes and voxel down-sampling) are not reproduced here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial import cKDTree

from mapforge.denormals import denormals_kept
from mapforge.errors import InputError


def _cloud(points: np.ndarray, name: str) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise InputError(f"{name} point cloud must be [N, 3], got shape {points.shape}")
    if points.shape[0] == 0:
        raise InputError(f"{name} point cloud is empty")
    if not np.isfinite(points).all():
        raise InputError(f"{name} point cloud has non-finite coordinates")
    return points


def nearest_distances(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """For every point of `source [N, 3]`, the distance to its nearest neighbour in `target [M, 3]`: `[N]`."""
    source, target = _cloud(source, "source"), _cloud(target, "target")
    with denormals_kept():
        distances, _ = cKDTree(target).query(source, k=1, workers=-1)
    return distances


def accuracy(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Distances `[N]` from each predicted point to the ground truth (how correct the prediction is)."""
    return nearest_distances(pred, gt)


def completeness(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Distances `[M]` from each ground-truth point to the prediction (how much of the truth is covered)."""
    return nearest_distances(gt, pred)


def chamfer_distance(pred: np.ndarray, gt: np.ndarray) -> float:
    """Symmetric Chamfer distance: `(mean accuracy + mean completeness) / 2`, in the clouds' units.

    This is DTU's "overall" score. (Some papers report the sum instead of the mean of the two terms, or use
    squared distances; halve or compare accordingly.)
    """
    return 0.5 * (float(accuracy(pred, gt).mean()) + float(completeness(pred, gt).mean()))


def precision_recall_fscore(pred: np.ndarray, gt: np.ndarray, threshold: float) -> tuple[float, float, float]:
    """Precision, recall and F-score at a distance threshold, as in Tanks and Temples (Knapitsch et al. 2017).

    Precision is the fraction of predicted points within `threshold` of the ground truth, recall the fraction of
    ground-truth points within `threshold` of the prediction (both strictly `<`), and the F-score their harmonic
    mean (0 when both are 0). The threshold is in the clouds' units (Tanks and Temples fixes it per scene).
    """
    if not threshold > 0:
        raise InputError(f"F-score threshold must be positive, got {threshold}")
    precision = float(np.mean(accuracy(pred, gt) < threshold))
    recall = float(np.mean(completeness(pred, gt) < threshold))
    return precision, recall, _fscore(precision, recall)


def _fscore(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


@dataclass
class PointCloudEvaluation:
    """Summary of `evaluate_point_cloud`; distances in the clouds' units."""

    threshold: float
    accuracy_mean: float
    accuracy_median: float
    completeness_mean: float
    completeness_median: float
    chamfer: float
    precision: float
    recall: float
    fscore: float

    def summary(self) -> str:
        return (
            f"accuracy mean {self.accuracy_mean:.4g} (median {self.accuracy_median:.4g}), completeness mean "
            f"{self.completeness_mean:.4g} (median {self.completeness_median:.4g}), Chamfer {self.chamfer:.4g}\n"
            f"at {self.threshold:g}: precision {100 * self.precision:.1f}%, recall {100 * self.recall:.1f}%, "
            f"F-score {100 * self.fscore:.1f}%"
        )


def evaluate_point_cloud(pred: np.ndarray, gt: np.ndarray, threshold: float) -> PointCloudEvaluation:
    """All point cloud metrics at once (one nearest-neighbour search each way)."""
    if not threshold > 0:
        raise InputError(f"F-score threshold must be positive, got {threshold}")
    acc, comp = accuracy(pred, gt), completeness(pred, gt)
    precision, recall = float(np.mean(acc < threshold)), float(np.mean(comp < threshold))
    return PointCloudEvaluation(
        threshold=float(threshold),
        accuracy_mean=float(acc.mean()),
        accuracy_median=float(np.median(acc)),
        completeness_mean=float(comp.mean()),
        completeness_median=float(np.median(comp)),
        chamfer=0.5 * (float(acc.mean()) + float(comp.mean())),
        precision=precision,
        recall=recall,
        fscore=_fscore(precision, recall),
    )


def depth_errors(
    pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None, median_align: bool = False
) -> dict[str, float]:
    """Standard monocular-depth errors (Eigen et al. 2014) of a depth map against ground truth.

    Args:
        pred: `[H, W]` predicted depth.
        gt: `[H, W]` ground-truth depth; pixels with `gt <= 0` or non-finite are unknown and skipped.
        mask: optional `[H, W]` bool, further restricting the evaluated pixels.
        median_align: scale the prediction by `median(gt) / median(pred)` over the evaluated pixels first, as
            for scale-ambiguous (monocular, SfM) depth.

    Within the evaluated pixels, predictions that are not positive and finite are set to a tiny positive depth
    (1e-6 x the median ground truth) rather than dropped, so they count as large errors.

    Returns:
        `abs_rel = mean(|p - g| / g)`, `sq_rel = mean((p - g)^2 / g)`, `rmse`, `rmse_log` (natural log),
        `delta1/2/3` = fraction with `max(p / g, g / p) < 1.25, 1.25^2, 1.25^3`, `scale` (the median-alignment
        factor, 1 without it) and `count` (pixels evaluated).
    """
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise InputError(f"depth maps differ in shape: {pred.shape} vs {gt.shape}")
    valid = np.isfinite(gt) & (gt > 0)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise InputError(f"depth mask of shape {mask.shape} does not match depth of shape {gt.shape}")
        valid &= mask
    if not valid.any():
        raise InputError("no pixel has valid ground-truth depth")
    g = gt[valid]
    floor = 1e-6 * float(np.median(g))
    p = pred[valid]
    p = np.where(np.isfinite(p) & (p > 0), p, floor)
    scale = 1.0
    if median_align:
        scale = float(np.median(g) / np.median(p))
        p = np.maximum(p * scale, floor)
    ratio = np.maximum(p / g, g / p)
    diff = p - g
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "scale": scale,
        "count": int(valid.sum()),
    }
