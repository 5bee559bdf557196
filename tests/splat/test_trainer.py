"""Training on a tiny scene rendered by the rasterizer itself: quality, checkpoint / resume, exports, budgets."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from mapforge.datasets.base import Dataset, every_nth_split
from mapforge.datasets.synthetic import look_at
from mapforge.scene import Camera
from mapforge.splat.gaussians import PARAM_NAMES, Gaussians
from mapforge.splat.config import SplatConfig
from mapforge.splat.trainer import SplatTrainer
from mapforge.splat.views import pinhole_views
from mapforge.training.bounds import focus_box


def tiny_scene(views: int = 8, width: int = 64, height: int = 48) -> Dataset:
    """40 coloured Gaussians in a cube rendered over white from `views` cameras on a ring; every 4th is a test view."""
    rng = np.random.default_rng(0)
    truth = Gaussians.from_points(rng.uniform(-0.6, 0.6, (40, 3)), rng.random((40, 3)), sh_degree=0, opacity=0.8)
    with torch.no_grad():
        truth.params["log_scales"].fill_(math.log(0.15))
    camera = Camera("PINHOLE", width, height, [60.0, 60.0, width / 2, height / 2])
    poses = []
    for k in range(views):
        angle = 2 * math.pi * k / views
        poses.append(look_at(np.array([3 * math.cos(angle), 3 * math.sin(angle), 0.8]), np.zeros(3)))
    with torch.no_grad():
        images = [
            truth.render(camera, torch.tensor(p.matrix4(), dtype=torch.float32), background=torch.ones(3))[0].numpy()
            for p in poses
        ]
    return Dataset(
        name="tiny", image_names=[f"{k:03d}.png" for k in range(views)], cameras=[camera] * views,
        cam_from_world=poses, split=every_nth_split(views, 4), loader=lambda i: images[i].copy(),
        background=np.ones(3, np.float32),
    )


@pytest.fixture(scope="module")
def scene() -> Dataset:
    return tiny_scene()


def small_config(**overrides) -> SplatConfig:
    values = {"iterations": 300, "sh_degree": 1, "init_random_points": 500, "checkpoint_minutes": 1e9}
    values.update(overrides)
    return SplatConfig(**values)


def test_training_reaches_quality_and_writes_outputs(scene, tmp_path) -> None:
    trainer = SplatTrainer(scene, small_config(), tmp_path)
    trainer.run()
    metrics = trainer.finish()
    assert metrics["count"] == 2 and metrics["psnr"] > 25.0 and metrics["ssim"] > 0.85
    history = trainer.history.entries
    assert history[-1]["iteration"] == 300 and history[-1]["psnr"] > history[0]["psnr"] + 5
    assert len(trainer.gaussians) != 500  # density control ran
    for name in ("point_cloud.ply", "scene.splat", "config.json", "metrics.json", "training_curve.svg",
                 "checkpoint.pt", "history.json", "renders/test/000.png", "renders/test/004.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "scene.splat").stat().st_size == 32 * len(trainer.gaussians)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["iterations"] == 300 and saved["num_gaussians"] == len(trainer.gaussians)
    assert json.loads((tmp_path / "config.json").read_text())["config"]["iterations"] == 300
    assert (tmp_path / "training_curve.svg").read_text().startswith("<svg")

    # The exported PLY brings back the trained model exactly, and renders the same.
    back = Gaussians.load(tmp_path / "point_cloud.ply")
    for name in PARAM_NAMES:
        torch.testing.assert_close(back.params[name], trainer.gaussians.params[name].detach())
    view = pinhole_views(scene, [0])[0]
    with torch.no_grad():
        a = trainer.gaussians.render(view.camera, view.viewmat(), background=torch.ones(3))[0]
        b = back.render(view.camera, view.viewmat(), background=torch.ones(3))[0]
    torch.testing.assert_close(a, b)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(scene, tmp_path) -> None:
    # Densification every 5 steps and an opacity reset every 10, so both happen on either side of the interruption.
    config = small_config(iterations=40, densify_min_interval=5, densify_per_reset=2, densify_stop=0.9)
    straight = SplatTrainer(scene, config, tmp_path / "a")
    straight.run()

    first = SplatTrainer(scene, config, tmp_path / "b")
    first.run(max_steps=17)
    assert first.step == 17 and (tmp_path / "b" / "checkpoint.pt").is_file()
    resumed = SplatTrainer(scene, config, tmp_path / "b", resume=True)
    assert resumed.step == 17 and len(resumed.gaussians) == len(first.gaussians)
    resumed.run()
    assert resumed.step == 40
    assert len(resumed.gaussians) == len(straight.gaussians)
    for name in PARAM_NAMES:
        torch.testing.assert_close(resumed.gaussians.params[name], straight.gaussians.params[name], rtol=1e-4, atol=1e-5)


def test_ctrl_c_leaves_a_resumable_checkpoint(scene, tmp_path, monkeypatch) -> None:
    trainer = SplatTrainer(scene, small_config(iterations=20), tmp_path)
    step = trainer.train_step

    def interrupted_after_seven(progress):
        if trainer.step == 7:
            raise KeyboardInterrupt
        return step(progress)

    monkeypatch.setattr(trainer, "train_step", interrupted_after_seven)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    resumed = SplatTrainer(scene, small_config(iterations=20), tmp_path, resume=True)
    assert resumed.step == 7
    resumed.run()
    assert resumed.step == 20


def test_minutes_budget_ends_training_on_the_training_clock(scene, tmp_path) -> None:
    # A fake clock on which every step takes 1.5 s: a 0.1-minute budget is exactly 4 steps, whatever the machine.
    trainer = SplatTrainer(scene, small_config(minutes=0.1, iterations=2), tmp_path)
    ticks = iter(np.arange(1000) * 1.5)
    trainer.clock = lambda: float(next(ticks))
    trainer.run()
    assert trainer.step == 4 and trainer.seconds == pytest.approx(6.0)
    assert trainer.progress() == pytest.approx(1.0)
    assert trainer.history.entries[-1]["iteration"] == 4  # the last step is always logged


def test_distorted_cameras_are_undistorted(scene) -> None:
    camera = Camera("SIMPLE_RADIAL", 64, 48, [60.0, 32.0, 24.0, -0.05])
    distorted = Dataset(
        name="distorted", image_names=scene.image_names, cameras=[camera] * len(scene),
        cam_from_world=scene.cam_from_world, split=scene.split, loader=scene.loader,
    )
    views = pinhole_views(distorted)
    assert all(v.camera.model == "PINHOLE" for v in views)
    image = views[0].load_image(distorted)
    assert image.shape == (views[0].camera.height, views[0].camera.width, 3)


def test_random_box_is_centred_on_what_the_cameras_look_at(scene) -> None:
    low, high = focus_box(scene.cam_from_world, 1.3 / 4.0)
    np.testing.assert_allclose((low + high) / 2, 0.0, atol=1e-6)
    distance = math.hypot(3.0, 0.8)
    np.testing.assert_allclose(high - low, 2 * 1.3 / 4.0 * distance, rtol=1e-6)
