"""Adaptive density control of 3DGS (Kerbl et al. 2023, section 5): clone, split, prune, reset opacity.

Every change of the Gaussian set goes through `replace_parameters`, which keeps the Adam state in step: moments of
kept Gaussians move with them, new Gaussians start with zero moments, removed ones drop theirs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from mapforge.geometry.rotations import quat_to_matrix
from mapforge.splat.gaussians import PARAM_NAMES, Gaussians


@dataclass
class DensifyConfig:
    """Thresholds of adaptive density control. Defaults are those of the 3DGS reference implementation.

    Attributes:
        grad_threshold: densify Gaussians whose mean view-space positional gradient (in normalised device
            coordinates, i.e. pixel gradient times width/2 and height/2, as 3DGS measures it) exceeds this.
        percent_dense: Gaussians with largest scale <= percent_dense * scene extent are cloned, larger ones split.
        split_samples: a split Gaussian is replaced by this many samples drawn from it.
        split_scale_divisor: scales of split samples are divided by this (0.8 * split_samples = 1.6).
        min_opacity: prune Gaussians less opaque than this.
        max_screen_radius: prune (after the first opacity reset) Gaussians whose largest screen radius since the
            last densification exceeded this many pixels at full training resolution.
        max_world_scale: ... or whose largest scale exceeds this fraction of the scene extent.
        reset_opacity: opacity resets clamp every opacity to at most this.
        max_gaussians: never grow beyond this many Gaussians (0 = no limit); when the budget is short, the
            Gaussians with the largest gradients are densified first. A CPU guard against runaway growth.
    """

    grad_threshold: float = 0.0002
    percent_dense: float = 0.01
    split_samples: int = 2
    split_scale_divisor: float = 1.6
    min_opacity: float = 0.005
    max_screen_radius: float = 20.0
    max_world_scale: float = 0.1
    reset_opacity: float = 0.01
    max_gaussians: int = 0


def replace_parameters(
    gaussians: Gaussians,
    optimizer: torch.optim.Optimizer,
    keep: torch.Tensor | None = None,
    new: dict[str, torch.Tensor] | None = None,
) -> None:
    """Keep the rows `keep [N]` (bool; None = all) of every parameter and append `new` rows, in place.

    The parameters are replaced by new `nn.Parameter`s in `gaussians.params` and in the optimizer's parameter
    groups (found by identity); Adam's `exp_avg` / `exp_avg_sq` are indexed the same way, zeros for new rows.
    """
    for name in PARAM_NAMES:
        old = gaussians.params[name]
        data = old.detach() if keep is None else old.detach()[keep]
        if new is not None:
            data = torch.cat([data, new[name].to(data)], dim=0)
        param = torch.nn.Parameter(data.contiguous())
        state = optimizer.state.pop(old, None)
        if state:
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    moment = state[key] if keep is None else state[key][keep]
                    if new is not None:
                        moment = torch.cat([moment, torch.zeros_like(new[name], dtype=moment.dtype, device=moment.device)])
                    state[key] = moment.contiguous()
            optimizer.state[param] = state
        for group in optimizer.param_groups:
            group["params"] = [param if p is old else p for p in group["params"]]
        gaussians.params[name] = param


class DensityController:
    """Accumulates view-space gradients between densification steps and applies clone / split / prune."""

    def __init__(self, config: DensifyConfig, count: int, device: torch.device | str = "cpu"):
        self.config = config
        self.reset_statistics(count, device)

    def reset_statistics(self, count: int, device: torch.device | str = "cpu") -> None:
        self.grad_sum = torch.zeros(count, device=device)
        self.visible_count = torch.zeros(count, device=device)
        self.max_radii = torch.zeros(count, device=device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"grad_sum": self.grad_sum, "visible_count": self.visible_count, "max_radii": self.max_radii}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.grad_sum, self.visible_count, self.max_radii = state["grad_sum"], state["visible_count"], state["max_radii"]

    @torch.no_grad()
    def accumulate(
        self, means2d_grad: torch.Tensor, radii: torch.Tensor, width: int, height: int, radius_scale: float = 1.0
    ) -> None:
        """Add one view's statistics: `means2d_grad [N, 2]` (pixels), `radii [N]` (0 = not visible) of an image
        `width` x `height`; `radius_scale` converts radii to full training resolution (coarse-to-fine)."""
        # Masked arithmetic instead of boolean indexing: culled Gaussians have zero gradient and radius.
        visible = (radii > 0).to(self.grad_sum.dtype)
        norm = torch.hypot(means2d_grad[:, 0] * (0.5 * width), means2d_grad[:, 1] * (0.5 * height))
        self.grad_sum.add_(norm * visible)
        self.visible_count.add_(visible)
        torch.maximum(self.max_radii, radii.to(self.max_radii.dtype) * radius_scale, out=self.max_radii)

    @torch.no_grad()
    def densify_and_prune(
        self, gaussians: Gaussians, optimizer: torch.optim.Optimizer, extent: float, prune_large: bool,
        generator: torch.Generator | None = None,
    ) -> dict[str, int]:
        """Clone small and split large Gaussians with a large mean gradient, then prune transparent ones (and,
        with `prune_large`, huge ones); reset the statistics. Returns the counts of each action."""
        cfg = self.config
        n = len(gaussians)
        average = self.grad_sum / self.visible_count.clamp_min(1)
        max_scale = gaussians.scales.max(dim=1).values
        candidates = average >= cfg.grad_threshold
        small = max_scale <= cfg.percent_dense * extent
        clone, split = candidates & small, candidates & ~small
        if cfg.max_gaussians > 0:
            clone, split = self._within_budget(clone, split, average, n)

        new = {name: gaussians.params[name].detach()[clone] for name in PARAM_NAMES}
        split_new = self._split_samples(gaussians, split, generator)
        new = {name: torch.cat([new[name], split_new[name]]) for name in PARAM_NAMES}
        replace_parameters(gaussians, optimizer, keep=~split, new=new)

        opacity = gaussians.opacities
        prune = opacity < cfg.min_opacity
        if prune_large:
            # Split parents are gone and new Gaussians have not been seen yet: carry the radii of the kept ones.
            kept_radii = self.max_radii[~split]
            radii = torch.cat([kept_radii, kept_radii.new_zeros(len(gaussians) - len(kept_radii))])
            prune |= radii > cfg.max_screen_radius
            prune |= gaussians.scales.max(dim=1).values > cfg.max_world_scale * extent
        if bool(prune.any()):
            replace_parameters(gaussians, optimizer, keep=~prune)
        self.reset_statistics(len(gaussians), gaussians.device)
        return {"cloned": int(clone.sum()), "split": int(split.sum()), "pruned": int(prune.sum())}

    def _within_budget(
        self, clone: torch.Tensor, split: torch.Tensor, average: torch.Tensor, n: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Restrict clone / split to the largest gradients so that the result has at most `max_gaussians`."""
        budget = self.config.max_gaussians - n
        cost = clone.float() + split.float() * (self.config.split_samples - 1)
        if float(cost.sum()) <= budget:
            return clone, split
        order = torch.argsort(torch.where(cost > 0, average, torch.full_like(average, -1.0)), descending=True)
        allowed = torch.zeros_like(clone)
        allowed[order] = torch.cumsum(cost[order], 0) <= max(budget, 0)
        return clone & allowed, split & allowed

    def _split_samples(
        self, gaussians: Gaussians, split: torch.Tensor, generator: torch.Generator | None
    ) -> dict[str, torch.Tensor]:
        """`split_samples` Gaussians drawn from each Gaussian in `split`, with scales / `split_scale_divisor`."""
        samples = self.config.split_samples
        parents = {name: gaussians.params[name].detach()[split] for name in PARAM_NAMES}
        scales = torch.exp(parents["log_scales"]).repeat(samples, 1)
        quats = parents["quats"] / parents["quats"].norm(dim=1, keepdim=True).clamp_min(1e-12)
        rotations = quat_to_matrix(quats.repeat(samples, 1))
        offsets = torch.randn(scales.shape, generator=generator, device=scales.device) * scales
        out = {name: value.repeat(samples, *([1] * (value.ndim - 1))) for name, value in parents.items()}
        out["means"] = out["means"] + torch.einsum("nij,nj->ni", rotations, offsets)
        out["log_scales"] = out["log_scales"] - math.log(self.config.split_scale_divisor)
        return out


@torch.no_grad()
def reset_opacity(gaussians: Gaussians, optimizer: torch.optim.Optimizer, ceiling: float) -> None:
    """Clamp every opacity to at most `ceiling` and zero the opacity's Adam moments (3DGS opacity reset)."""
    logits = gaussians.params["opacity_logits"]
    logits.clamp_(max=math.log(ceiling / (1.0 - ceiling)))
    state = optimizer.state.get(logits)
    if state:
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key].zero_()
