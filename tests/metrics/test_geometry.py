from __future__ import annotations

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.metrics.geometry import (
    accuracy,
    chamfer_distance,
    completeness,
    depth_errors,
    evaluate_point_cloud,
    nearest_distances,
    precision_recall_fscore,
)


def grid(size: int = 10) -> np.ndarray:
    """Points on the z = 0 plane with unit spacing: `[size * size, 3]`."""
    u, v = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64))
    return np.stack([u.ravel(), v.ravel(), np.zeros(size * size)], axis=1)


def test_identical_clouds():
    points = grid()
    assert accuracy(points, points).max() == 0 and completeness(points, points).max() == 0
    assert chamfer_distance(points, points) == 0
    assert precision_recall_fscore(points, points, 0.01) == (1.0, 1.0, 1.0)


def test_shifted_cloud_has_known_distances():
    gt = grid()
    pred = gt + [0.0, 0.0, 0.1]
    np.testing.assert_allclose(accuracy(pred, gt), 0.1)
    np.testing.assert_allclose(completeness(pred, gt), 0.1)
    assert chamfer_distance(pred, gt) == pytest.approx(0.1)
    assert precision_recall_fscore(pred, gt, 0.2) == (1.0, 1.0, 1.0)
    assert precision_recall_fscore(pred, gt, 0.05) == (0.0, 0.0, 0.0)


def test_partial_prediction_is_precise_but_incomplete():
    gt = grid()
    pred = gt[gt[:, 0] < 5]  # the left half
    assert accuracy(pred, gt).max() == 0
    comp = completeness(pred, gt)
    assert comp.shape == (100,) and np.sort(comp)[50:].min() == pytest.approx(1.0)
    precision, recall, fscore = precision_recall_fscore(pred, gt, 0.5)
    assert (precision, recall) == (1.0, 0.5) and fscore == pytest.approx(2 / 3)
    result = evaluate_point_cloud(pred, gt, 0.5)
    assert (result.precision, result.recall, result.fscore) == (precision, recall, pytest.approx(fscore))
    assert result.accuracy_mean == 0 and result.completeness_mean == pytest.approx(comp.mean())
    assert result.chamfer == pytest.approx(chamfer_distance(pred, gt))
    assert "F-score 66.7%" in result.summary()


def test_bad_clouds():
    with pytest.raises(InputError):
        accuracy(np.zeros((0, 3)), grid())
    with pytest.raises(InputError):
        accuracy(np.zeros((4, 2)), grid())
    with pytest.raises(InputError):
        accuracy(np.full((4, 3), np.nan), grid())
    with pytest.raises(InputError):
        precision_recall_fscore(grid(), grid(), 0.0)


def test_depth_errors(rng):
    gt = rng.uniform(1.0, 5.0, size=(20, 30))
    perfect = depth_errors(gt, gt)
    assert perfect["abs_rel"] == 0 and perfect["rmse"] == 0 and perfect["delta1"] == 1 and perfect["count"] == 600
    doubled = depth_errors(2 * gt, gt)
    assert doubled["abs_rel"] == pytest.approx(1.0) and doubled["delta3"] == 0  # 1.25^3 < 2
    half_more = depth_errors(1.5 * gt, gt)
    assert (half_more["delta1"], half_more["delta2"]) == (0.0, 1.0)
    assert doubled["rmse_log"] == pytest.approx(np.log(2))
    aligned = depth_errors(2 * gt, gt, median_align=True)
    assert aligned["scale"] == pytest.approx(0.5) and aligned["abs_rel"] == pytest.approx(0.0, abs=1e-12)
    assert depth_errors(gt + 1, gt)["rmse"] == pytest.approx(1.0)


def test_depth_validity_and_mask(rng):
    gt = rng.uniform(1.0, 5.0, size=(10, 10))
    gt[0] = 0.0
    gt[1, 0] = np.nan
    pred = gt.copy()
    pred[5:] += 1.0
    mask = np.zeros((10, 10), dtype=bool)
    mask[:5] = True
    result = depth_errors(pred, gt, mask)
    assert result["count"] == 39 and result["rmse"] == 0
    assert depth_errors(pred, gt)["count"] == 89
    bad = gt.copy()
    bad[2:4] = -1.0  # invalid predictions count as errors, not as skipped pixels
    assert depth_errors(bad, gt)["delta3"] == pytest.approx(69 / 89)
    with pytest.raises(InputError):
        depth_errors(gt, np.zeros_like(gt))
    with pytest.raises(InputError):
        depth_errors(gt[:5], gt)
    with pytest.raises(InputError):
        depth_errors(gt, gt, mask[:5])


def test_nearest_distances_survive_flush_to_zero() -> None:
    """scipy's balanced cKDTree crashed the process on clouds with many exact zeros while denormals were
    flushed (the rasterizer turns flushing on); the metric keeps denormals meanwhile and restores the setting."""
    rng = np.random.default_rng(0)
    cloud = rng.uniform(-4, 4, (300000, 3))
    cloud[rng.random(300000) < 0.3, 2] = 0.0
    torch.set_flush_denormal(True)
    distances = nearest_distances(cloud[:1000] + 1e-3, cloud)
    assert np.all(distances < 2e-3)
    assert float(np.float64(5e-324) * np.float64(1.0)) == 0.0  # flushing is back on
