from __future__ import annotations

import numpy as np
import pytest

from mapforge.errors import InputError
from mapforge.geometry.rotations import axis_angle_to_matrix
from mapforge.geometry.transforms import Rigid3, Sim3
from mapforge.metrics.pose import (
    absolute_pose_errors,
    align_centres,
    evaluate_poses,
    pose_auc,
    relative_pose_errors,
    rra_rta,
    trajectory_error,
)


def random_poses(rng: np.random.Generator, count: int) -> list[Rigid3]:
    return [Rigid3(axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 2) for _ in range(count)]


def rotation_about(axis: np.ndarray, degrees: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64)
    return axis_angle_to_matrix(axis / np.linalg.norm(axis) * np.radians(degrees))


def random_sim(rng: np.random.Generator) -> Sim3:
    return Sim3(2.7, axis_angle_to_matrix(rng.normal(size=3)), rng.normal(size=3) * 5)


def test_perfect_poses_give_zero_errors_and_full_scores(rng):
    gt = random_poses(rng, 6)
    rot, trans = relative_pose_errors(gt, gt)
    assert rot.shape == trans.shape == (15,)
    assert np.abs(rot).max() < 1e-6 and np.abs(trans).max() < 1e-6
    assert all(v == 1.0 for v in rra_rta((rot, trans)).values())
    for method in ("binned", "exact", "trapezoid"):
        assert pose_auc(rot, trans, method=method) == pytest.approx({f"AUC@{t}": 1.0 for t in (5, 10, 20, 30)})


def test_relative_errors_ignore_world_frame_and_scale(rng):
    gt = random_poses(rng, 5)
    sim = random_sim(rng)
    est = [sim.transform_pose(p) for p in gt]
    rot, trans = relative_pose_errors(est, gt)
    assert np.abs(rot).max() < 1e-6 and np.abs(trans).max() < 1e-6


def test_known_rotation_error_of_one_camera(rng):
    gt = random_poses(rng, 5)
    # Turning camera 0 about its own centre by 10 degrees changes only the rotation of the pairs (0, j).
    turn = Rigid3(rotation_about([1.0, 2.0, -0.5], 10.0))
    est = [turn * gt[0]] + gt[1:]
    rot, trans = relative_pose_errors(est, gt)
    first = np.triu_indices(5, 1)[0] == 0
    np.testing.assert_allclose(rot[first], 10.0, atol=1e-9)
    np.testing.assert_allclose(rot[~first], 0.0, atol=1e-9)
    np.testing.assert_allclose(trans, 0.0, atol=1e-6)
    scores = rra_rta((rot, trans), thresholds=(5, 15))
    assert scores["RRA@5"] == pytest.approx(6 / 10) and scores["RRA@15"] == 1.0 and scores["RTA@5"] == 1.0


def test_translation_direction_error_is_scale_invariant_and_signed():
    gt = [Rigid3(), Rigid3(np.eye(3), [1.0, 0.0, 0.0])]
    angle = np.radians(20.0)
    est = [Rigid3(), Rigid3(np.eye(3), 3.0 * np.array([np.cos(angle), np.sin(angle), 0.0]))]
    rot, trans = relative_pose_errors(est, gt)
    assert rot[0] == pytest.approx(0.0, abs=1e-9) and trans[0] == pytest.approx(20.0)
    flipped = [Rigid3(), Rigid3(np.eye(3), [-0.5, 0.0, 0.0])]
    assert relative_pose_errors(flipped, gt)[1][0] == pytest.approx(180.0)
    assert relative_pose_errors(flipped, gt, sign_invariant=True)[1][0] == pytest.approx(0.0, abs=1e-9)


def test_zero_translation_cases():
    gt = [Rigid3(), Rigid3(), Rigid3(np.eye(3), [0.0, 0.0, 1.0])]
    est = [Rigid3(), Rigid3(), Rigid3()]
    _, trans = relative_pose_errors(est, gt)
    # pairs (0, 1): zero in both -> 0; (0, 2) and (1, 2): zero only in the estimate -> 90.
    np.testing.assert_allclose(trans, [0.0, 90.0, 90.0])


def test_auc_methods_on_known_errors():
    rot = np.array([0.0, 2.0, 4.0, np.inf])
    trans = np.zeros(4)
    # exact: mean(max(0, 1 - e / 5)) = (1 + 0.6 + 0.2 + 0) / 4
    assert pose_auc(rot, trans, (5,), "exact")["AUC@5"] == pytest.approx(0.45)
    # binned: fraction below 1, 2, 3, 4 and at most 5 = 1/4, 1/4, 2/4, 2/4, 3/4
    assert pose_auc(rot, trans, (5,), "binned")["AUC@5"] == pytest.approx(0.45)
    # trapezoid through (0, 0), (0, 1/4), (2, 2/4), (4, 3/4), then flat to 5: (0.75 + 1.25 + 0.75) / 5
    assert pose_auc(rot, trans, (5,), "trapezoid")["AUC@5"] == pytest.approx(0.55)
    # the pair error is the larger of the two
    assert pose_auc(trans, rot, (5,), "exact")["AUC@5"] == pytest.approx(0.45)
    with pytest.raises(InputError):
        pose_auc(rot, trans, method="nope")


def test_absolute_errors_vanish_after_similarity_alignment(rng):
    gt = random_poses(rng, 6)
    sim = random_sim(rng)
    est = [sim.transform_pose(p) for p in gt]
    rot, pos = absolute_pose_errors(est, gt)
    assert rot.max() < 1e-6 and pos.max() < 1e-9
    assert trajectory_error(est, gt) < 1e-9
    aligned = align_centres(est, gt)
    assert aligned.scale == pytest.approx(1 / 2.7)


def test_absolute_rotation_error_of_turned_cameras(rng):
    gt = random_poses(rng, 6)
    turn = Rigid3(rotation_about([0.0, 1.0, 0.0], 3.0))
    est = [turn * p for p in gt]  # same centres, every camera turned by 3 degrees
    rot, pos = absolute_pose_errors(est, gt)
    np.testing.assert_allclose(rot, 3.0, atol=1e-9)
    np.testing.assert_allclose(pos, 0.0, atol=1e-9)


def test_trajectory_error_is_rmse_of_aligned_centres(rng):
    gt = random_poses(rng, 20)
    noisy = []
    for p in gt:
        centre = -p.rotation.T @ p.translation + rng.normal(size=3) * 0.05
        noisy.append(Rigid3(p.rotation, -p.rotation @ centre))
    _, pos = absolute_pose_errors(noisy, gt)
    ate = trajectory_error(noisy, gt)
    assert ate == pytest.approx(np.sqrt(np.mean(pos**2)))
    offsets = [a.rotation.T @ a.translation - b.rotation.T @ b.translation for a, b in zip(noisy, gt)]
    unaligned = np.sqrt(np.mean(np.sum(np.square(offsets), axis=1)))
    assert 0 < ate <= unaligned


def test_alignment_rejects_degenerate_input():
    line = [Rigid3(np.eye(3), [0.0, 0.0, float(k)]) for k in range(4)]
    with pytest.raises(InputError):
        align_centres(line, line)
    with pytest.raises(InputError):
        align_centres(line[:2], line[:2])
    with pytest.raises(InputError):
        relative_pose_errors(line, line[:3])


def test_evaluate_poses_counts_unregistered_images_as_failures(rng):
    poses = random_poses(rng, 6)
    gt = {f"img{k}.jpg": p for k, p in enumerate(poses)}
    sim = random_sim(rng)
    est = {name: sim.transform_pose(p) for name, p in gt.items() if name not in ("img1.jpg", "img4.jpg")}
    est["img4.jpg"] = None
    est["other.jpg"] = poses[0]
    result = evaluate_poses(est, gt)
    assert (result.num_images, result.num_registered, result.num_unregistered, result.num_extra) == (6, 4, 2, 1)
    assert result.num_pairs == 15
    # 6 of the 15 pairs have both images registered, and those are perfect.
    assert all(v == pytest.approx(6 / 15) for v in result.accuracy.values())
    assert all(v == pytest.approx(6 / 15) for v in result.auc.values())
    assert np.isinf(result.rot_err_deg).sum() == 9
    assert result.median_rot_err_deg < 1e-6
    assert result.ate_rmse < 1e-9 and result.abs_rot_err_deg.shape == (4,)
    assert result.registered_names == ["img0.jpg", "img2.jpg", "img3.jpg", "img5.jpg"]
    text = result.summary()
    assert "4/6" in text and "ATE" in text


def test_evaluate_poses_without_alignment():
    gt = {f"{k}": Rigid3(np.eye(3), [0.0, 0.0, float(k)]) for k in range(4)}
    result = evaluate_poses({"0": gt["0"], "1": gt["1"]}, gt)
    assert result.num_registered == 2 and np.isnan(result.ate_rmse)
    assert "not computed" in result.summary()
    assert result.accuracy["RRA@5"] == pytest.approx(1 / 6)
    with pytest.raises(InputError):
        evaluate_poses({}, {})
