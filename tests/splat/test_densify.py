"""Adaptive density control on constructed cases: clone, split, prune, budget, opacity reset, Adam state."""

from __future__ import annotations

import math

import numpy as np
import torch

from mapforge.splat.densify import DensifyConfig, DensityController, replace_parameters, reset_opacity
from mapforge.splat.gaussians import PARAM_NAMES, Gaussians

EXTENT = 1.0


def make_case() -> tuple[Gaussians, torch.optim.Adam]:
    """Five Gaussians: 0 small + large gradient (clone), 1 large + large gradient (split), 2 small + small
    gradient (kept), 3 transparent (pruned), 4 large + small gradient (kept)."""
    xyz = np.array([[0.0, 0, 0], [1.0, 0, 0], [2.0, 0, 0], [3.0, 0, 0], [4.0, 0, 0]])
    g = Gaussians.from_points(xyz, np.full((5, 3), 0.5), sh_degree=1, opacity=0.5)
    with torch.no_grad():
        g.params["log_scales"].copy_(torch.log(torch.tensor([0.005, 0.05, 0.005, 0.005, 0.05]))[:, None].repeat(1, 3))
        g.params["opacity_logits"][3] = math.log(0.001 / 0.999)
        g.params["sh_rest"].copy_(torch.arange(5 * 3 * 3, dtype=torch.float32).reshape(5, 3, 3))
    groups = [{"params": [g.params[name]], "lr": 1e-3, "name": name} for name in PARAM_NAMES]
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    # One step so that every parameter has Adam moments; row i of every moment is then filled with i + 1.
    loss = sum((p**2).sum() for p in g.params.values())
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    for name in PARAM_NAMES:
        state = optimizer.state[g.params[name]]
        for key in ("exp_avg", "exp_avg_sq"):
            shape = (5,) + (1,) * (state[key].ndim - 1)
            state[key].copy_(torch.arange(1.0, 6.0).reshape(shape).expand_as(state[key]))
    return g, optimizer


def controller_with_gradients(count: int, config: DensifyConfig | None = None) -> DensityController:
    controller = DensityController(config or DensifyConfig(), count)
    # Gradients in pixels of a 200 x 100 image; in NDC units they are multiplied by 100 and 50.
    grads = torch.zeros(count, 2)
    grads[[0, 1], 0] = 1e-5  # 1e-3 in NDC: above the 2e-4 threshold
    grads[[2, 4], 0] = 1e-7  # 1e-5: below
    radii = torch.full((count,), 3, dtype=torch.int32)
    controller.accumulate(grads, radii, 200, 100)
    controller.accumulate(grads, radii, 200, 100)
    return controller


def test_clone_split_prune_counts_and_values() -> None:
    g, optimizer = make_case()
    before = {name: p.detach().clone() for name, p in g.params.items()}
    controller = controller_with_gradients(5)
    counts = controller.densify_and_prune(g, optimizer, EXTENT, prune_large=False, generator=torch.Generator().manual_seed(0))
    assert counts == {"cloned": 1, "split": 1, "pruned": 1}
    # Kept: 0, 2, 4 (3 pruned, 1 replaced), then the clone of 0, then two samples of 1.
    assert len(g) == 6
    means = g.means.detach()
    torch.testing.assert_close(means[:3], before["means"][[0, 2, 4]])
    torch.testing.assert_close(means[3], before["means"][0])
    samples = means[4:]
    assert torch.all((samples - before["means"][1]).norm(dim=1) < 0.05 * 5)
    assert not torch.allclose(samples[0], samples[1])
    torch.testing.assert_close(g.scales[4:].detach(), torch.exp(before["log_scales"][[1, 1]]) / 1.6)
    torch.testing.assert_close(g.params["sh_rest"][4:].detach(), before["sh_rest"][[1, 1]])
    torch.testing.assert_close(g.params["sh_rest"][3].detach(), before["sh_rest"][0])
    assert controller.grad_sum.shape == (6,) and float(controller.grad_sum.sum()) == 0.0


def test_adam_state_follows_the_gaussians() -> None:
    g, optimizer = make_case()
    controller_with_gradients(5).densify_and_prune(g, optimizer, EXTENT, prune_large=False)
    for group in optimizer.param_groups:
        (param,) = group["params"]
        assert param is g.params[group["name"]]
        state = optimizer.state[param]
        for key in ("exp_avg", "exp_avg_sq"):
            assert state[key].shape == param.shape
            rows = state[key].reshape(len(param), -1)[:, 0]
            torch.testing.assert_close(rows, torch.tensor([1.0, 3.0, 5.0, 0.0, 0.0, 0.0]))
    # Old parameter objects are gone from the state, and the optimizer still steps.
    assert len(optimizer.state) == len(PARAM_NAMES)
    loss = sum((p**2).sum() for p in g.params.values())
    loss.backward()
    optimizer.step()


def test_prune_large_removes_huge_screen_and_world_sizes() -> None:
    g, optimizer = make_case()
    config = DensifyConfig(grad_threshold=1.0, max_world_scale=0.04)  # nothing densifies; 1 and 4 are too large
    controller = DensityController(config, 5)
    radii = torch.tensor([25, 1, 1, 1, 1], dtype=torch.int32)  # 0 is too large on screen
    controller.accumulate(torch.zeros(5, 2), radii, 64, 64)
    counts = controller.densify_and_prune(g, optimizer, EXTENT, prune_large=True)
    assert counts == {"cloned": 0, "split": 0, "pruned": 4}
    assert len(g) == 1 and abs(float(g.means.detach()[0, 0]) - 2.0) < 0.01


def test_screen_radius_is_measured_at_full_resolution() -> None:
    controller = DensityController(DensifyConfig(), 2)
    controller.accumulate(torch.zeros(2, 2), torch.tensor([6, 0], dtype=torch.int32), 50, 50, radius_scale=4.0)
    torch.testing.assert_close(controller.max_radii, torch.tensor([24.0, 0.0]))
    assert controller.visible_count.tolist() == [1.0, 0.0]


def test_budget_keeps_the_largest_gradients() -> None:
    g, optimizer = make_case()
    controller = controller_with_gradients(5, DensifyConfig(max_gaussians=6))
    controller.grad_sum[1] *= 2  # the split candidate has the larger gradient and costs one extra Gaussian
    counts = controller.densify_and_prune(g, optimizer, EXTENT, prune_large=False)
    assert counts["split"] == 1 and counts["cloned"] == 0
    assert len(g) == 5  # 5 + 1 from the split, - 1 pruned


def test_reset_opacity_clamps_and_zeroes_moments() -> None:
    g, optimizer = make_case()
    reset_opacity(g, optimizer, 0.01)
    opacities = g.opacities.detach()
    assert float(opacities.max()) <= 0.01 + 1e-6
    assert float(opacities[3]) < 0.002  # already below: untouched
    state = optimizer.state[g.params["opacity_logits"]]
    assert float(state["exp_avg"].abs().sum()) == 0.0 and float(state["exp_avg_sq"].abs().sum()) == 0.0


def test_replace_parameters_appends_with_zero_moments() -> None:
    g, optimizer = make_case()
    new = {name: g.params[name].detach()[:2].clone() for name in PARAM_NAMES}
    replace_parameters(g, optimizer, keep=None, new=new)
    assert len(g) == 7
    state = optimizer.state[g.params["means"]]
    torch.testing.assert_close(state["exp_avg"][:, 0], torch.tensor([1.0, 2, 3, 4, 5, 0, 0]))
