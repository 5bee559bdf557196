from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mapforge.errors import InputError
from mapforge.metrics.image import psnr
from mapforge.nerf.fields import NeRFField
from mapforge.nerf.models import NeRFModel
from mapforge.nerf.config import FastNeRFConfig, OriginalNeRFConfig
from mapforge.nerf.evaluate import render_image
from mapforge.nerf.setup import SceneSetup, training_rays
from mapforge.nerf.trainer import load_checkpoint, train
from tests.nerf.scenes import sphere_dataset

FAST = dict(
    batch_rays=1024, target_samples=1 << 14, num_levels=8, log2_hashmap_size=14, finest_resolution=128,
    grid_resolution=32, render_steps=128, grid_warmup_steps=32, grid_update_every=8, grid_update_fraction=0.25,
    lr_final=1e-3, warmup_steps=0,
)


def test_fast_model_fits_sphere_and_resumes(tmp_path):
    dataset = sphere_dataset(3, 24)
    result = train(dataset, FastNeRFConfig(iterations=150, **FAST), tmp_path)
    assert result.metrics["psnr"] > 27.0, result.metrics
    assert result.step == 150
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["psnr"] == pytest.approx(result.metrics["psnr"])
    assert len(list((tmp_path / "renders" / "test").glob("*.png"))) == 3

    model, config, setup, state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert isinstance(config, FastNeRFConfig) and state["step"] == 150
    view = render_image(model, setup, dataset.cameras[0], dataset.cam_from_world[0])
    again = render_image(result.trainer.model, result.trainer.setup, dataset.cameras[0], dataset.cam_from_world[0])
    np.testing.assert_allclose(view["rgb"], again["rgb"], atol=1e-6)
    assert view["depth"].shape == (24, 24)
    # the sphere is opaque, the corners see only background
    assert view["opacity"][12, 12] > 0.9 and view["opacity"][0, 0] < 0.05
    assert psnr(view["rgb"], dataset.load_image(0)) > 27.0

    resumed = train(dataset, FastNeRFConfig(iterations=160, **FAST), tmp_path, resume=True)
    assert resumed.step == 160
    with pytest.raises(InputError):
        train(dataset, OriginalNeRFConfig(iterations=1), tmp_path, resume=True)


def test_nerf_hierarchical_sampling_and_loss():
    model = NeRFModel(num_coarse=8, num_fine=16, width=32)
    seen = []
    model.fine.register_forward_hook(lambda module, args, out: seen.append(args[0].shape[0]))
    origins = torch.tensor([[0.0, 0.0, -3.0], [0.5, 0.0, -3.0]])
    directions = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    out = model.render_rays(origins, directions, torch.full((2,), 2.0), torch.full((2,), 4.0), torch.ones(3), perturb=True)
    assert set(out) == {"coarse", "fine"}
    assert seen == [2 * 24]  # the fine network sees coarse and fine samples together
    assert out["coarse"].weights.shape == (2, 8) and out["fine"].weights.shape == (2, 24)
    target = torch.zeros(2, 3)
    loss = NeRFModel.loss(out, target)
    torch.testing.assert_close(loss, ((out["coarse"].rgb - target) ** 2).mean() + ((out["fine"].rgb - target) ** 2).mean())


def test_original_nerf_fits_a_tiny_scene(tmp_path):
    # The paper's architecture (8 layers with the skip, L = 10 / 4, 64-wide here) and hierarchical sampling on two
    # 16x16 views of the sphere; the untrained network scores about 8 dB on them.
    dataset = sphere_dataset(2, 16)
    config = OriginalNeRFConfig(iterations=200, batch_rays=256, num_coarse=16, num_fine=16, width=64, lr=5e-3,
                                lr_final=5e-4, precrop_steps=50, checkpoint_minutes=0)
    result = train(dataset, config, tmp_path)
    assert result.step == 200
    assert result.metrics["psnr"] > 29.0, result.metrics
    assert (tmp_path / "checkpoint.pt").is_file()


def test_nerf_density_is_alive_at_initialisation():
    # With PyTorch's default initialisation the 8-layer trunk's output shrinks until the density is the sign of
    # the output bias: zero (and without gradient) everywhere for most seeds. Glorot weights and zero biases, as
    # in the paper's code, leave a density that is positive over much of the box.
    for seed in range(4):
        torch.manual_seed(seed)
        field = NeRFField(width=64)
        density = field.density_at(torch.rand(4096, 3) * 2 - 1)
        assert (density > 0).float().mean() > 0.2


def test_precrop_indices_are_the_central_pixels():
    dataset = sphere_dataset(1, 16)
    rays, crop = training_rays(dataset, SceneSetup(aabb=np.array([[-1.0] * 3, [1.0] * 3])), 1.0, 0.5)
    assert rays["rgb"].shape == (256, 3)
    rows, cols = crop // 16, crop % 16
    assert len(crop) == 64 and rows.min() == cols.min() == 4 and rows.max() == cols.max() == 11
    assert len(training_rays(dataset, SceneSetup(aabb=np.array([[-1.0] * 3, [1.0] * 3])), 1.0)[1]) == 0


def test_fast_model_renders_background_where_the_grid_is_empty():
    from mapforge.nerf.models import FastNeRFModel

    model = FastNeRFModel(torch.tensor([[-1.0] * 3, [1.0] * 3]), grid_resolution=8, render_steps=64, num_levels=4,
                          log2_hashmap_size=10, finest_resolution=32)
    model.grid.occupied[:] = False
    origins = torch.tensor([[0.0, 0.0, -3.0]]).repeat(4, 1)
    directions = torch.tensor([[0.0, 0.0, 1.0]]).repeat(4, 1)
    out = model.render_rays(origins, directions, torch.zeros(4), torch.full((4,), 10.0), torch.tensor([0.1, 0.2, 0.3]))
    torch.testing.assert_close(out["fine"].rgb, torch.tensor([[0.1, 0.2, 0.3]]).repeat(4, 1))
    assert model.last_num_samples == 0


def test_fast_model_compaction_keeps_the_visible_samples():
    # Density e^2.5 everywhere: rays are opaque after some 15 of their ~37 steps. Compaction drops the samples
    # behind that point (the rendering changes by at most the 1e-4 of light left there); with a threshold no ray
    # reaches, the precomputed encodings give exactly the full evaluation's colours and gradients.
    from mapforge.nerf.models import FastNeRFModel

    torch.manual_seed(0)
    aabb = torch.tensor([[-1.0] * 3, [1.0] * 3])
    model = FastNeRFModel(aabb, grid_resolution=8, render_steps=64, num_levels=4, log2_hashmap_size=10,
                          finest_resolution=32)
    with torch.no_grad():
        model.field.density_mlp[-1].bias[0] = 2.5
    generator = torch.Generator().manual_seed(0)
    origins = torch.cat([torch.rand(16, 2, generator=generator) - 0.5, torch.full((16, 1), -3.0)], 1)
    directions = torch.tensor([[0.0, 0.0, 1.0]]).repeat(16, 1)
    near, far = torch.zeros(16), torch.full((16,), 10.0)
    results = {}
    for threshold in (0.0, 1e-30, 1e-4):
        model.train_min_transmittance = threshold
        model.zero_grad()
        out = model.render_rays(origins, directions, near, far, torch.ones(3))["fine"]
        out.rgb.sum().backward()
        results[threshold] = (out.rgb.detach(), model.field.encoding.table.grad.clone(), model.last_num_trained)
    assert results[0.0][2] == results[1e-30][2] == model.last_num_samples
    torch.testing.assert_close(results[1e-30][0], results[0.0][0], atol=1e-6, rtol=0)
    torch.testing.assert_close(results[1e-30][1], results[0.0][1], atol=1e-7, rtol=1e-5)
    assert results[1e-4][2] < 0.5 * model.last_num_samples
    torch.testing.assert_close(results[1e-4][0], results[0.0][0], atol=1e-4, rtol=0)
