"""The numba backend behind `patch_match`: the same calls as `torch_ref`, on CPU tensors through numpy views."""

from __future__ import annotations

import numpy as np
import torch

from mapforge.mvs.patchmatch import cpu_kernels, rules
from mapforge.mvs.patchmatch.torch_ref import Problem, Settings


class Arrays:
    """`Problem`'s tensors as the contiguous numpy arrays the kernels take (sources padded to one size)."""

    def __init__(self, problem: Problem):
        self.ref = np.ascontiguousarray(problem.ref.numpy(), np.float32)
        count = len(problem.srcs)
        height = max(src.shape[0] for src in problem.srcs)
        width = max(src.shape[1] for src in problem.srcs)
        self.srcs = np.zeros((count, height, width), np.float32)
        self.size = np.zeros((count, 2), np.int32)
        for s, src in enumerate(problem.srcs):
            self.srcs[s, : src.shape[0], : src.shape[1]] = src.numpy()
            self.size[s] = (src.shape[1], src.shape[0])
        self.depths = np.zeros((count, 1, 1), np.float32)
        if problem.src_depths is not None:
            self.depths = np.zeros((count, height, width), np.float32)
            for s, depth in enumerate(problem.src_depths):
                self.depths[s, : depth.shape[0], : depth.shape[1]] = depth.numpy()
        self.geo = np.ascontiguousarray(problem.geo.numpy(), np.float64)
        self.kref = np.ascontiguousarray(problem.kref.numpy(), np.float64)


def _params(s: Settings) -> tuple[np.ndarray, np.ndarray]:
    iparams = np.array([s.window_radius, s.window_step, s.num_best_views, int(s.geometric), s.num_scored_views], np.int64)
    fparams = np.array(
        [s.sigma_spatial, s.sigma_color, s.perturbation, s.depth_min, s.depth_max, s.geom_weight, s.geom_max_cost],
        np.float64,
    )
    return iparams, fparams


def plane_costs(arrays: Arrays, depth: torch.Tensor, normal: torch.Tensor, s: Settings) -> tuple[torch.Tensor, torch.Tensor]:
    iparams, fparams = _params(s)
    cost, views = cpu_kernels.plane_costs(
        arrays.ref, arrays.srcs, arrays.size, arrays.geo, arrays.kref, depth.numpy(), normal.numpy(), iparams, fparams,
        arrays.depths,
    )  # fmt: skip
    return torch.from_numpy(cost), torch.from_numpy(views)


def sweep(colour: int, arrays: Arrays, depth, normal, cost, views, rnd: torch.Tensor, s: Settings) -> None:
    iparams, fparams = _params(s)
    cpu_kernels.sweep(
        colour, arrays.ref, arrays.srcs, arrays.size, arrays.geo, arrays.kref, depth.numpy(), normal.numpy(),
        cost.numpy(), views.numpy(), rnd.numpy(), rules.REGION_OFFSETS, rules.REGION_COUNTS, iparams, fparams,
        arrays.depths,
    )  # fmt: skip


def consistent_views(arrays: Arrays, depth, normal, s: Settings, min_ncc: float, min_angle: float, geom_max: float) -> torch.Tensor:
    iparams, fparams = _params(s)
    filter_params = np.array([min_ncc, min_angle, geom_max], np.float64)
    out = cpu_kernels.consistent_views(
        arrays.ref, arrays.srcs, arrays.size, arrays.geo, arrays.kref, depth.numpy(), normal.numpy(), iparams, fparams,
        arrays.depths, filter_params,
    )  # fmt: skip
    return torch.from_numpy(out)

