"""Joint optimisation of Gaussians and camera poses (InstantSplat-style) on a tiny scene with perturbed poses."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.synthetic import look_at
from mapforge.errors import InputError
from mapforge.geometry.rotations import axis_angle_to_matrix, rotation_angle_deg
from mapforge.geometry.transforms import Rigid3, Sim3
from mapforge.metrics.pose import align_centres
from mapforge.io.colmap import read_model
from mapforge.scene import Camera, Point3D, Reconstruction
from mapforge.splat.gaussians import PARAM_NAMES, Gaussians
from mapforge.splat.poses import PoseCorrection
from mapforge.splat.config import SplatConfig
from mapforge.splat.trainer import SplatTrainer


def _perturb(pose: Rigid3, rng: np.random.Generator, degrees: float, shift: float) -> Rigid3:
    axis = rng.normal(size=3)
    delta = Rigid3(axis_angle_to_matrix(axis / np.linalg.norm(axis) * math.radians(degrees)), rng.normal(size=3))
    delta.translation *= shift / np.linalg.norm(delta.translation)
    return delta * pose


def perturbed_scene(views: int = 10) -> tuple[Dataset, list[Rigid3]]:
    """300 small coloured Gaussians on a textured sphere rendered over white from a ring of `views` cameras
    (every 5th a test view). The data set's poses are the true ones perturbed by 1.5 degrees and 5 cm (cameras
    1.8 m from the centre); its sparse points are the Gaussians' centres. Returns the data and the true poses."""
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(300, 3))
    xyz = 0.7 * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    colors = rng.random((300, 3))
    truth = Gaussians.from_points(xyz, colors, sh_degree=0, opacity=0.9)
    with torch.no_grad():
        truth.params["log_scales"].fill_(math.log(0.08))
    camera = Camera("PINHOLE", 64, 48, [60.0, 60.0, 32.0, 24.0])
    poses = [look_at(np.array([1.8 * math.cos(a), 1.8 * math.sin(a), 0.8 + 0.3 * math.sin(3 * a)]), np.zeros(3))
             for a in np.linspace(0, 2 * math.pi, views, endpoint=False)]
    with torch.no_grad():
        images = [truth.render(camera, torch.tensor(p.matrix4(), dtype=torch.float32), background=torch.ones(3))[0]
                  .numpy() for p in poses]
    noisy = [_perturb(p, rng, 1.5, 0.05) for p in poses]
    rgb = np.round(colors * 255)
    points = Reconstruction(points3D={i + 1: Point3D(p, c) for i, (p, c) in enumerate(zip(xyz, rgb))})
    dataset = Dataset(
        name="perturbed", image_names=[f"{k:03d}.png" for k in range(views)], cameras=[camera] * views,
        cam_from_world=noisy, split=every_nth_split(views, 5), loader=lambda i: images[i].copy(),
        background=np.ones(3, np.float32), points=points,
    )
    return dataset, poses


def pose_errors(estimated: list[Rigid3], truth: list[Rigid3], gauge: Sim3 | None = None) -> tuple[float, float]:
    """Mean rotation error (degrees) and camera centre error after mapping the estimate into the true frame by
    `gauge` (`true_world_from_world`; default: the rigid motion that best aligns the camera centres). Joint
    optimisation fixes the poses only up to a common rigid motion of cameras and Gaussians."""
    gauge = gauge or align_centres(estimated, truth, with_scale=False)
    aligned = [gauge.transform_pose(pose) for pose in estimated]
    angles = [float(rotation_angle_deg(e.rotation @ t.rotation.T)) for e, t in zip(aligned, truth)]
    centers = [np.linalg.norm(e.inverse().translation - t.inverse().translation) for e, t in zip(aligned, truth)]
    return float(np.mean(angles)), float(np.mean(centers))


def config(**overrides) -> SplatConfig:
    values = {"iterations": 1200, "sh_degree": 0, "density_control": False, "resolution_schedule": ((0.0, 1),),
              "checkpoint_minutes": 1e9, "test_pose_iterations": 100}
    values.update(overrides)
    return SplatConfig(**values)


@pytest.fixture(scope="module")
def scene() -> tuple[Dataset, list[Rigid3]]:
    return perturbed_scene()


def test_pose_correction_is_identity_at_init_and_differentiable() -> None:
    correction = PoseCorrection(3)
    pose = torch.tensor(look_at(np.array([1.0, 2.0, 0.5]), np.zeros(3)).matrix4(), dtype=torch.float32)
    torch.testing.assert_close(correction.corrected(1, pose), pose)
    rigid = Rigid3.from_matrix(pose.double().numpy())
    np.testing.assert_allclose(correction.corrected_rigid(1, rigid).matrix4(), rigid.matrix4())

    target = torch.tensor([1.0, 0.0, 0.0])
    loss = (correction.corrected(2, pose)[:3, :3] @ target).sum() + correction.corrected(2, pose)[:3, 3].sum()
    loss.backward()
    assert torch.all(torch.isfinite(correction.rotations.grad))
    assert correction.rotations.grad[2].abs().sum() > 0 and correction.translations.grad[2].abs().sum() > 0
    assert correction.rotations.grad[[0, 1]].abs().sum() == 0  # only the view used gets a gradient

    with torch.no_grad():
        correction.rotations[0] = torch.tensor([0.0, 0.0, 0.1])
        correction.translations[0] = torch.tensor([0.5, 0.0, 0.0])
    corrected = correction.corrected_rigid(0, rigid)
    expected = Rigid3(axis_angle_to_matrix(np.array([0.0, 0.0, 0.1])), np.array([0.5, 0.0, 0.0])) * rigid
    np.testing.assert_allclose(corrected.matrix4(), expected.matrix4(), atol=1e-7)
    np.testing.assert_allclose(correction.corrected(0, pose).detach().numpy(), expected.matrix4(), atol=1e-5)


def test_joint_optimisation_recovers_perturbed_poses(scene, tmp_path) -> None:
    dataset, truth = scene
    train = dataset.subset("train")
    train_truth = [truth[i] for i in train]
    before = pose_errors([dataset.cam_from_world[i] for i in train], train_truth)

    joint = SplatTrainer(dataset, config(optimize_poses=True), tmp_path / "joint")
    joint.run()
    gauge = align_centres(joint.train_poses(), train_truth, with_scale=False)
    after = pose_errors(joint.train_poses(), train_truth, gauge)
    assert after[0] < 0.5 * before[0] and after[1] < 0.5 * before[1], (before, after)

    fixed = SplatTrainer(dataset, config(), tmp_path / "fixed")
    fixed.run()
    joint_metrics = joint.finish()
    fixed_metrics = fixed.finish()
    # Training views, each rendered at the pose the run ends with, and held-out views (aligned first when joint).
    assert joint.history.entries[-1]["psnr"] > fixed.history.entries[-1]["psnr"] + 3.0
    assert joint_metrics["psnr"] > fixed_metrics["psnr"] + 3.0

    refined = read_model(tmp_path / "joint" / "sparse" / "0")
    by_name = {image.name: image.cam_from_world for image in refined.images.values()}
    poses = [by_name[name] for name in dataset.image_names]
    test = dataset.subset("test")
    test_before = pose_errors([dataset.cam_from_world[i] for i in test], [truth[i] for i in test], Sim3())
    test_after = pose_errors([poses[i] for i in test], [truth[i] for i in test], gauge)
    assert test_after[0] < 0.5 * test_before[0], (test_before, test_after)
    assert joint_metrics["pose_refinement"]["train"]["views"] == len(train)
    assert not (tmp_path / "fixed" / "sparse").exists()


def test_resume_restores_pose_corrections(scene, tmp_path) -> None:
    dataset, _ = scene
    cfg = config(iterations=30, optimize_poses=True)
    straight = SplatTrainer(dataset, cfg, tmp_path / "a")
    straight.run()

    first = SplatTrainer(dataset, cfg, tmp_path / "b")
    first.run(max_steps=12)
    resumed = SplatTrainer(dataset, cfg, tmp_path / "b", resume=True)
    torch.testing.assert_close(resumed.poses.rotations, first.poses.rotations)
    resumed.run()
    assert resumed.step == 30
    torch.testing.assert_close(resumed.poses.rotations, straight.poses.rotations, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(resumed.poses.translations, straight.poses.translations, rtol=1e-4, atol=1e-6)
    for name in PARAM_NAMES:
        torch.testing.assert_close(resumed.gaussians.params[name], straight.gaussians.params[name], rtol=1e-4, atol=1e-5)

    with pytest.raises(InputError, match="pose optimisation"):
        SplatTrainer(dataset, dataclasses.replace(cfg, optimize_poses=False), tmp_path / "b", resume=True)


def test_cli_flags_reach_the_config(monkeypatch, tmp_path) -> None:
    import mapforge.cli as cli
    import mapforge.splat.trainer as trainer

    seen = {}

    class Result:
        metrics = {"num_gaussians": 1}

        def summary(self, what: str) -> str:
            return f"trained {what}"

    def fake_train_path(data, config, out, downscale, resume):
        seen["config"] = config
        return Result()

    monkeypatch.setattr(trainer, "train_path", fake_train_path)
    out = str(tmp_path / "out")
    assert cli.main(["splat", "train", str(tmp_path), "-o", out, "--optimize-poses", "--no-densify"]) == 0
    assert seen["config"].optimize_poses and not seen["config"].density_control
    assert cli.main(["splat", "train", str(tmp_path), "-o", out]) == 0
    assert not seen["config"].optimize_poses and seen["config"].density_control
