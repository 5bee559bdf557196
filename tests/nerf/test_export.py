from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from mapforge.errors import ReconstructionError
from mapforge.nerf.export import extract_mesh, to_world
from mapforge.nerf.rays import ndc_rays, ndc_to_frame
from mapforge.nerf.render import orbit_path, render_path
from mapforge.nerf.setup import SceneSetup
from mapforge.scene import Camera
from tests.nerf.scenes import look_at


class SphereField(nn.Module):
    """Density 100 inside a sphere of `radius`, falling off linearly; colour encodes the viewing direction."""

    def __init__(self, radius: float = 0.6):
        super().__init__()
        self.radius = radius
        self.dummy = nn.Parameter(torch.zeros(1))

    def density(self, points: torch.Tensor) -> torch.Tensor:
        return (100.0 * (self.radius - points.norm(dim=-1)) + 50.0).clamp(0.0, 100.0)

    def color(self, points: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1.0 - directions)


def test_mesh_of_an_analytic_sphere():
    setup = SceneSetup(aabb=np.array([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    vertices, faces, colors = extract_mesh(SphereField(0.6), setup, resolution=48, threshold=50.0)
    radii = np.linalg.norm(vertices, axis=1)
    assert len(faces) > 1000
    np.testing.assert_allclose(radii, 0.6, atol=0.01)
    # seen head-on: the view direction is the inward normal, so the colour is (1 + outward normal) / 2
    expected = np.round(0.5 * (1.0 + vertices / radii[:, None]) * 255)
    assert np.abs(colors.astype(float) - expected).max() < 12
    with pytest.raises(ReconstructionError):
        extract_mesh(SphereField(0.6), setup, resolution=16, threshold=500.0)


def test_ndc_points_map_back_to_the_frame():
    origins = torch.tensor([[0.1, -0.2, 0.0]], dtype=torch.float64)
    directions = torch.tensor([[0.2, 0.1, 1.0]], dtype=torch.float64)
    near, fx, fy, w, h = 1.5, 50.0, 60.0, 80, 60
    o_ndc, d_ndc = ndc_rays(origins, directions, fx, fy, w, h, near)
    start = ndc_to_frame(o_ndc.numpy(), fx, fy, w, h, near)
    np.testing.assert_allclose(start, origins.numpy() + 1.5 * directions.numpy(), atol=1e-9)
    half = ndc_to_frame((o_ndc + 0.5 * d_ndc).numpy(), fx, fy, w, h, near)
    # NDC t = 1/2 is twice the near depth, on the same ray
    np.testing.assert_allclose(half, origins.numpy() + 3.0 * directions.numpy(), atol=1e-9)
    setup = SceneSetup(aabb=np.zeros((2, 3)), ndc=True, ndc_from_world=np.eye(4)[:3], ndc_focal=(fx, fy, w, h),
                       ndc_near=near)
    np.testing.assert_allclose(to_world(setup, o_ndc.numpy()), start)


def test_orbit_and_render_path_to_pngs(tmp_path):
    from mapforge.nerf.models import FastNeRFModel

    poses = [look_at(np.array([2.0 * np.cos(a), 2.0 * np.sin(a), 0.5])) for a in (0.0, 2.0944, 4.1888)]  # evenly spread: their mean up is +z
    path = orbit_path(poses, np.zeros(3), count=4)
    centres = np.stack([p.rotation.T @ -p.translation for p in path])
    np.testing.assert_allclose(np.hypot(centres[:, 0], centres[:, 1]), 2.0, atol=1e-4)
    np.testing.assert_allclose(centres[:, 2], 0.5, atol=1e-4)
    for pose in path:  # every pose looks at the centre
        np.testing.assert_allclose(pose.apply(np.zeros(3))[:2], 0.0, atol=1e-9)
    model = FastNeRFModel(torch.tensor([[-1.0] * 3, [1.0] * 3]), grid_resolution=8, render_steps=32, num_levels=2,
                          log2_hashmap_size=8, finest_resolution=16)
    camera = Camera("PINHOLE", 9, 7, [8.0, 8.0, 4.5, 3.5])
    out = render_path(model, camera, path, tmp_path / "frames", SceneSetup(aabb=np.array([[-1.0] * 3, [1.0] * 3])))
    assert sorted(p.name for p in out.glob("*.png")) == [f"{k:05d}.png" for k in range(4)]
    gif = render_path(model, camera, path[:2], tmp_path / "path.gif", SceneSetup(aabb=np.array([[-1.0] * 3, [1.0] * 3])))
    assert gif.stat().st_size > 0


def test_early_stopping_render_matches_full_compositing():
    from mapforge.nerf.models import FastNeRFModel

    model = FastNeRFModel(torch.tensor([[-1.0] * 3, [1.0] * 3]), grid_resolution=8, render_steps=64, num_levels=4,
                          log2_hashmap_size=10, finest_resolution=32)
    with torch.no_grad():
        model.field.encoding.table.uniform_(-1.0, 1.0)
        model.field.density_mlp[-1].bias[0] = 2.0  # dense enough that rays saturate inside the box
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(64, 3, generator=generator), dim=-1)
    origins = -2.5 * directions + 0.3 * torch.randn(64, 3, generator=generator)
    near, far = torch.zeros(64), torch.full((64,), 10.0)
    background = torch.tensor([0.2, 0.5, 0.8])
    with torch.no_grad():
        full = model.render_rays(origins, directions, near, far, background, early_stop=False)["fine"]
        all_samples = model.last_num_samples
        fast = model.render_rays(origins, directions, near, far, background)["fine"]
    assert model.last_num_samples < all_samples
    torch.testing.assert_close(fast.rgb, full.rgb, atol=2e-3, rtol=0)
    torch.testing.assert_close(fast.opacity, full.opacity, atol=2e-4, rtol=0)
    torch.testing.assert_close(fast.depth, full.depth, atol=2e-3, rtol=0)
