"""The torch paths of splatting on every available device: the rasterizer's torch reference against the CPU
kernels, and short training runs with a checkpoint and resume on the device."""

from __future__ import annotations

import torch

from mapforge.splat.config import SplatConfig
from mapforge.splat.rasterize import rasterize
from mapforge.splat.trainer import SplatTrainer
from tests.splat.test_rasterize import camera, random_scene, render_and_grads
from tests.splat.test_trainer import tiny_scene


def test_torch_rasterizer_on_the_device_matches_the_cpu_kernels(device):
    params = random_scene(120, torch.float32, seed=3)
    viewmat, K = camera(0.3, torch.float32, 40, 30)
    background = torch.tensor([0.1, 0.2, 0.3])
    reference, _ = render_and_grads(params, viewmat, K, 40, 30, "cpu", background)
    on_device = [p.to(device) for p in params]
    ours, meta = render_and_grads(on_device, viewmat.to(device), K.to(device), 40, 30, "torch", background.to(device))
    assert meta["backend"] == "torch" and ours[0].device.type == device
    for a, b in zip(reference, ours):
        scale = max(1.0, a.abs().max().item())
        assert (a - b.cpu()).abs().max().item() <= 5e-5 * scale


def test_auto_backend_follows_the_device(device):
    params = [p.to(device) for p in random_scene(20, torch.float32, seed=1)]
    viewmat, K = camera(0.0, torch.float32, 32, 24)
    _, _, _, meta = rasterize(*params, viewmat.to(device), K.to(device), 32, 24, backend="auto")
    assert meta["backend"] == ("cpu" if device == "cpu" else "torch")


def test_training_steps_checkpoint_and_resume_on_the_device(device, tmp_path):
    scene = tiny_scene(views=4, width=32, height=24)
    config = SplatConfig(iterations=6, sh_degree=1, init_random_points=200, device=device, log_interval=2)
    first = SplatTrainer(scene, config, tmp_path)
    first.run(max_steps=3)
    assert first.gaussians.device.type == device
    resumed = SplatTrainer(scene, config, tmp_path, resume=True)
    assert resumed.step == 3 and resumed.gaussians.device.type == device
    for name, value in first.gaussians.params.items():
        torch.testing.assert_close(resumed.gaussians.params[name], value)
    resumed.run()
    metrics = resumed.finish()
    assert resumed.step == 6 and metrics["count"] == 1 and metrics["psnr"] > 5.0
    assert all(torch.isfinite(p).all() for p in resumed.gaussians.params.values())
    assert [e["iteration"] for e in resumed.history.entries] == [2, 4, 6]


def test_evaluation_renders_on_the_device(device, tmp_path):
    from mapforge.splat.evaluate import evaluate
    from mapforge.splat.gaussians import Gaussians

    scene = tiny_scene(views=4, width=32, height=24)
    gaussians = Gaussians.random_in_box(50, [-0.5] * 3, [0.5] * 3, 0, 0, device)
    metrics = evaluate(gaussians, scene, scene.subset("test"), torch.ones(3), tmp_path)
    assert metrics["count"] == 1 and (tmp_path / "000.png").is_file()
