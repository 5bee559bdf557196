"""The torch paths of the NeRF models on every available device: hash-grid encoding, packed compositing and
marching against their references, rendering, and short training runs with a checkpoint and resume."""

from __future__ import annotations

import torch

from mapforge.nerf.config import FastNeRFConfig, OriginalNeRFConfig
from mapforge.nerf.evaluate import render_image
from mapforge.nerf.models import FastNeRFModel
from mapforge.nerf.rendering import composite_packed, volume_render
from mapforge.nerf.trainer import NeRFTrainer, load_checkpoint
from tests.nerf.scenes import sphere_dataset
from tests.nerf.test_encodings import _small_grid
from tests.nerf.test_trainer import TINY


def test_hash_grid_torch_path_on_the_device_matches_the_reference(device):
    from mapforge.nerf.encodings import hash_grid_reference

    grid = _small_grid("torch")
    x = torch.rand(300, 3, generator=torch.Generator().manual_seed(0))
    weights = torch.randn(300, grid.out_dim, generator=torch.Generator().manual_seed(1))
    reference = hash_grid_reference(grid.table, x, grid)
    (grad_ref,) = torch.autograd.grad((reference * weights).sum(), grid.table)
    grid = grid.to(device)
    out = grid(x.to(device))
    (grad,) = torch.autograd.grad((out * weights.to(device)).sum(), grid.table)
    torch.testing.assert_close(out.detach().cpu(), reference.detach(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(grad.cpu(), grad_ref, atol=1e-5, rtol=1e-5)


def test_packed_compositing_on_the_device_matches_dense_rendering(device):
    generator = torch.Generator().manual_seed(0)
    density = torch.rand(4, 12, generator=generator) * 3
    rgb = torch.rand(4, 12, 3, generator=generator)
    t = torch.sort(torch.rand(4, 12, generator=generator) * 3, -1).values
    deltas = torch.rand(4, 12, generator=generator) * 0.2
    background = torch.tensor([0.2, 0.4, 0.6])
    dense = volume_render(density, rgb, deltas, t, background)
    rows = torch.arange(4).repeat_interleave(12)
    packed = composite_packed(*(a.reshape(-1, *a.shape[2:]).to(device) for a in (density, rgb, deltas, t)),
                              rows.to(device), 4, background.to(device))
    torch.testing.assert_close(packed.rgb.cpu(), dense.rgb)
    torch.testing.assert_close(packed.depth.cpu(), dense.depth)


def test_fast_model_renders_the_same_on_the_device(device):
    torch.manual_seed(0)
    model = FastNeRFModel(torch.tensor([[-1.0] * 3, [1.0] * 3]), grid_resolution=8, render_steps=64, num_levels=4,
                          log2_hashmap_size=10, finest_resolution=32)
    origins = torch.tensor([[0.0, 0.0, -3.0], [0.3, -0.2, -3.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.1, 1.0]])
    directions = directions / directions.norm(dim=-1, keepdim=True)
    near, far = torch.zeros(2), torch.full((2,), 6.0)
    cpu = model.render_rays(origins, directions, near, far, torch.ones(3))["fine"]
    model.to(device)
    ours = model.render_rays(origins.to(device), directions.to(device), near.to(device), far.to(device),
                             torch.ones(3, device=device))["fine"]
    torch.testing.assert_close(ours.rgb.cpu(), cpu.rgb, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.opacity.cpu(), cpu.opacity, atol=1e-4, rtol=1e-4)


def test_training_steps_checkpoint_and_resume_on_the_device(device, tmp_path):
    dataset = sphere_dataset(2, 16)
    for name, config in (("fast", FastNeRFConfig(iterations=6, device=device, **TINY)),
                         ("nerf", OriginalNeRFConfig(iterations=6, batch_rays=64, num_coarse=8, num_fine=8, width=16,
                                                     depth=2, precrop_steps=2, log_interval=2, device=device))):
        first = NeRFTrainer(dataset, config, tmp_path / name)
        first.run(max_steps=3)
        resumed = NeRFTrainer(dataset, config, tmp_path / name, resume=True)
        assert resumed.step == 3 and next(resumed.model.parameters()).device.type == device
        resumed.run()
        metrics = resumed.finish()
        assert resumed.step == 6 and metrics["count"] == 2 and metrics["psnr"] > 5.0, name
        model, _, setup, _ = load_checkpoint(tmp_path / name / "checkpoint.pt", device)
        view = render_image(model, setup, dataset.cameras[0], dataset.cam_from_world[0])
        assert view["rgb"].shape == (16, 16, 3)
