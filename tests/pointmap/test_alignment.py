"""DUSt3R global alignment: parity with upstream on the stored synthetic case, known intrinsics, mixed image sizes,
the reconstruction export and bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.geometry.rotations import axis_angle_to_matrix, rotation_angle_deg
from mapforge.geometry.transforms import Rigid3
from mapforge.pointmap.alignment import (
    AlignmentConfig,
    PairPredictions,
    estimate_focal,
    global_alignment,
)
from mapforge.pointmap.graph import make_pairs
from mapforge.scene import Camera
from tests.conftest import shared_dataset


def _max_relative_rotation_error(cam_from_world: list[Rigid3], true_cam_from_world: list[Rigid3]) -> float:
    errors = []
    for a in range(len(cam_from_world)):
        for b in range(a + 1, len(cam_from_world)):
            estimated = cam_from_world[a].rotation @ cam_from_world[b].rotation.T
            true = true_cam_from_world[a].rotation @ true_cam_from_world[b].rotation.T
            errors.append(float(rotation_angle_deg(estimated @ true.T)))
    return max(errors)


def _load_parity():
    folder = shared_dataset("dust3r_parity")
    data = torch.load(folder / "ga_synth_3img.pth", weights_only=True)
    numpy_globals = [np._core.multiarray._reconstruct, np.ndarray, np.dtype, np.dtypes.Float64DType]
    with torch.serialization.safe_globals(numpy_globals):
        truth = torch.load(folder / "ga_synth_3img_groundtruth.pth", weights_only=True)
    true_poses = [Rigid3.from_matrix(m).inverse() for m in truth["cam2world"]]
    return data, truth, true_poses


def test_parity_with_upstream_on_synthetic_scene() -> None:
    data, truth, true_poses = _load_parity()
    torch.manual_seed(0)
    result = global_alignment(data["inference_output"],
                              AlignmentConfig(iterations=300, lr=0.01, schedule="cosine", device="cpu", progress=False))
    assert result.loss_history[0] == pytest.approx(data["loss_after_init"], rel=0.01)
    assert result.loss_history[-1] == pytest.approx(data["final_loss"], rel=0.02)
    np.testing.assert_allclose(result.focals, data["result"]["focals"].numpy().ravel(), rtol=0.005)
    assert _max_relative_rotation_error(result.cam_from_world, true_poses) < 0.05
    for depth, ref in zip(result.depths, data["result"]["depthmaps"]):
        np.testing.assert_allclose(depth, ref.numpy(), rtol=0.01)
    for mask, ref in zip(result.masks, data["result"]["masks"]):
        np.testing.assert_array_equal(mask, ref.numpy())


def test_known_focals_stay_fixed_on_parity_case() -> None:
    data, truth, true_poses = _load_parity()
    result = global_alignment(data["inference_output"], AlignmentConfig(iterations=60, device="cpu", progress=False),
                              known_focals=[60.0, None, 61.0])
    assert result.focals[0] == 60.0 and result.focals[2] == 61.0
    assert result.focals[1] != pytest.approx(81.0, abs=1.0)
    assert _max_relative_rotation_error(result.cam_from_world, true_poses) < 0.5


def _synthetic_scene(shapes, focal, rng, noise=0.002):
    """Pair predictions of a bumpy surface seen by cameras looking along +z (same layout as upstream's pairs)."""
    n = len(shapes)
    centres = np.array([[0.5 * k - 0.5, 0.2 * (k % 2), 0.0] for k in range(n)])
    poses = []
    for k in range(n):
        rotation = axis_angle_to_matrix(np.array([0.03 * k, -0.08 * (k - 1), 0.02]))  # cam_from_world rotation
        poses.append(Rigid3(rotation, -rotation @ centres[k]))
    cam_points = []
    for (h, w), pose in zip(shapes, poses):
        ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
        rays_cam = np.stack([(xs - w / 2 - 0.5) / focal, (ys - h / 2 - 0.5) / focal, np.ones_like(xs)], -1)
        rays = rays_cam @ pose.rotation  # world directions (cam z = 1)
        origin = pose.inverse().translation
        t = np.full((h, w), 4.0)
        for _ in range(30):  # fixed point onto z = 4 + 0.4 sin(1.3 x) cos(0.9 y)
            p = origin + t[..., None] * rays
            t = (4 + 0.4 * np.sin(1.3 * p[..., 0]) * np.cos(0.9 * p[..., 1]) - origin[2]) / rays[..., 2]
        cam_points.append(rays_cam * t[..., None])  # z = depth
    world = [pose.inverse().apply(p) for pose, p in zip(poses, cam_points)]
    edges = make_pairs(n)
    pts_i, pts_j, conf_i, conf_j = [], [], [], []
    for i, j in edges:
        scale = rng.uniform(0.5, 2.0)
        for pts, target, out, conf in ((world[i], i, pts_i, conf_i), (world[j], j, pts_j, conf_j)):
            local = poses[i].apply(pts) * scale + noise * rng.standard_normal(pts.shape)
            out.append(torch.tensor(local, dtype=torch.float32))
            conf.append(torch.tensor(rng.uniform(1.5, 9.5, pts.shape[:2]), dtype=torch.float32))
    return PairPredictions(edges, pts_i, pts_j, conf_i, conf_j), poses


def test_mixed_sizes_known_cameras_and_reconstruction(rng) -> None:
    shapes = [(24, 32), (20, 28), (24, 32)]
    pred, true_poses = _synthetic_scene(shapes, 30.0, rng)
    cameras = [Camera("SIMPLE_PINHOLE", 32, 24, [30.0, 16.5, 12.5]), None, None]
    result = global_alignment(pred, AlignmentConfig(iterations=150, device="cpu", progress=False), cameras=cameras)
    assert result.focals[0] == 30.0
    np.testing.assert_allclose(result.focals, 30.0, rtol=0.02)
    np.testing.assert_allclose(result.principal_points, [[16.5, 12.5], [14.5, 10.5], [16.5, 12.5]])
    assert result.loss_history[-1] < result.loss_history[0] * 1.5
    assert _max_relative_rotation_error(result.cam_from_world, true_poses) < 0.3
    assert [d.shape for d in result.depths] == shapes
    # The world points are the depth maps lifted through each camera.
    for k, (h, w) in enumerate(shapes):
        p_cam = result.cam_from_world[k].apply(result.points[k].reshape(-1, 3).astype(np.float64))
        np.testing.assert_allclose(p_cam[:, 2], result.depths[k].ravel(), rtol=1e-4)

    images = [np.full((h, w, 3), 0.25 * (k + 1), dtype=np.float32) for k, (h, w) in enumerate(shapes)]
    rec = result.to_reconstruction(images, min_conf=0.0, stride=2, names=["a", "b", "c"])
    assert sorted(rec.images) == [1, 2, 3] and all(c.model == "PINHOLE" for c in rec.cameras.values())
    assert [rec.images[k].name for k in (1, 2, 3)] == ["a", "b", "c"]
    assert len(rec.points3D) == sum((h // 2) * (w // 2) for h, w in shapes)
    assert np.abs(rec.reprojection_errors()).max() < 1e-3
    assert set(map(tuple, rec.points_rgb())) == {(64, 64, 64), (128, 128, 128), (191, 191, 191)}
    assert rec.images[2].cam_from_world.rotation == pytest.approx(result.cam_from_world[1].rotation)


def test_reference_graph_without_symmetrisation(rng) -> None:
    # Images 1..3 are never a first view: their focals and poses come from PnP over tentative focals.
    pred, true_poses = _synthetic_scene([(24, 32)] * 4, 30.0, rng)
    keep = [pred.edges.index(pair) for pair in make_pairs(4, "oneref-0", symmetrize=False)]
    sub = PairPredictions([pred.edges[e] for e in keep], [pred.pts_i[e] for e in keep], [pred.pts_j[e] for e in keep],
                          [pred.conf_i[e] for e in keep], [pred.conf_j[e] for e in keep])
    result = global_alignment(sub, AlignmentConfig(iterations=100, device="cpu", progress=False))
    np.testing.assert_allclose(result.focals, 30.0, rtol=0.02)
    assert _max_relative_rotation_error(result.cam_from_world, true_poses) < 0.2


def test_estimate_focal_on_exact_pointmap() -> None:
    h, w, focal = 30, 40, 35.0
    ys, xs = np.meshgrid(np.arange(h) + 0.5, np.arange(w) + 0.5, indexing="ij")
    depth = 2 + np.sin(xs / 7)
    pts = np.stack([(xs - 20.5) / focal * depth, (ys - 15.5) / focal * depth, depth], -1)
    assert estimate_focal(pts, np.array([20.5, 15.5])) == pytest.approx(focal, rel=1e-6)


def test_bad_input(rng) -> None:
    pred, _ = _synthetic_scene([(12, 16)] * 4, 15.0, rng)
    keep = [pred.edges.index((1, 0)), pred.edges.index((3, 2))]
    with pytest.raises(InputError, match="connect"):
        global_alignment(PairPredictions([pred.edges[e] for e in keep], [pred.pts_i[e] for e in keep],
                                         [pred.pts_j[e] for e in keep], [pred.conf_i[e] for e in keep],
                                         [pred.conf_j[e] for e in keep]), AlignmentConfig(progress=False))
    with pytest.raises(InputError):
        global_alignment(pred, AlignmentConfig(schedule="step", progress=False))
    with pytest.raises(InputError, match="in no pair"):
        e = pred.edges.index((2, 0))
        single = PairPredictions([(2, 0)], pred.pts_i[e : e + 1], pred.pts_j[e : e + 1], pred.conf_i[e : e + 1],
                                 pred.conf_j[e : e + 1])
        global_alignment(single, AlignmentConfig(progress=False))
    with pytest.raises(InputError):
        global_alignment(pred, AlignmentConfig(progress=False), known_focals=[10.0, 10.0])
    with pytest.raises(InputError):
        global_alignment(pred, AlignmentConfig(progress=False), cameras=[Camera("PINHOLE", 20, 12, [9, 9, 8, 6]),
                                                                           None, None, None])
    with pytest.raises(InputError):
        global_alignment({"view1": {}}, AlignmentConfig(progress=False))
