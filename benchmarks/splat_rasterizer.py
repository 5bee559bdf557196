"""Time forward + backward of the Gaussian rasterizer backends on one synthetic scene.

A sphere shell of Gaussians (plus a filled interior) seen from a few views at 400x400, roughly the density of a
trained Blender scene. Reports ms per iteration, Gaussian-pixel evaluations per second (tile-list entries x
pixels per tile) and the torch/cpu speed ratio, and writes benchmarks/results/splat_rasterizer.json.

    nice -n 10 .venv/bin/python benchmarks/splat_rasterizer.py [--gaussians 100000] [--size 400] [--device cuda]

`--device` names where the torch reference backend runs (default cpu; "auto" or "cuda" for the GPU figure); the
numba backend always runs on the CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapforge.devices import select_device  # noqa: E402
from mapforge.io.atomic import atomic_path  # noqa: E402
from mapforge.splat.rasterize import rasterize  # noqa: E402


def sphere_scene(n: int, seed: int = 0) -> list[torch.Tensor]:
    """`n` Gaussians: 80% near a unit sphere, 20% inside; activated parameters, float32, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, 3, generator=g)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)
    radius = torch.where(torch.rand(n, generator=g) < 0.8, 1.0 + 0.02 * torch.randn(n, generator=g), torch.rand(n, generator=g))
    means = dirs * radius[:, None]
    quats = torch.randn(n, 4, generator=g)
    scales = torch.exp(torch.empty(n, 3).uniform_(math.log(0.004), math.log(0.03), generator=g))
    opacities = torch.empty(n).uniform_(0.05, 1.0, generator=g)
    colors = torch.rand(n, 3, generator=g)
    return [t.requires_grad_() for t in (means, quats, scales, opacities, colors)]


def look_at(eye: torch.Tensor) -> torch.Tensor:
    """cam_from_world [4, 4] (OpenCV axes) of a camera at `eye` looking at the origin."""
    forward = -eye / eye.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
    right = right / right.norm()
    down = torch.linalg.cross(forward, right)
    rot = torch.stack([right, down, forward])
    viewmat = torch.eye(4)
    viewmat[:3, :3] = rot
    viewmat[:3, 3] = -rot @ eye
    return viewmat


def time_backend(params, views, K, size: int, backend: str, iterations: int, warmup: int) -> dict:
    """Forward + L1 loss + backward per iteration, cycling through `views`; wall and process CPU time."""
    device = params[0].device
    target = torch.rand(size, size, 3, generator=torch.Generator().manual_seed(1)).to(device)
    wall, cpu, evaluations = 0.0, 0.0, 0
    for it in range(warmup + iterations):
        viewmat = views[it % len(views)].to(device)
        for p in params:
            p.grad = None
        start, start_cpu = time.perf_counter(), time.process_time()
        image, alpha, depth, meta = rasterize(*params, viewmat, K.to(device), size, size,
                                              background=torch.ones(3, device=device), backend=backend)
        loss = (image - target).abs().mean()
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if it >= warmup:
            wall += time.perf_counter() - start
            cpu += time.process_time() - start_cpu
            evaluations += meta["n_intersections"] * meta["tile_size"] ** 2
    return {
        "ms_per_iteration": 1000.0 * wall / iterations,
        "cpu_ms_per_iteration": 1000.0 * cpu / iterations,
        "gaussian_pixel_evaluations_per_second": evaluations / wall,
        "mean_tile_intersections": evaluations / iterations / meta["tile_size"] ** 2,
        "iterations": iterations,
    }


def cold_start_seconds() -> dict:
    """Import + first forward/backward in a fresh interpreter (numba kernels loaded from the on-disk cache)."""
    code = (
        "import time; t = time.perf_counter(); import torch, sys; sys.path.insert(0, %r);"
        "from mapforge.splat.rasterize import rasterize; n = 100;"
        "m = torch.randn(n, 3, requires_grad=True); v = torch.eye(4); v[2, 3] = 5;"
        "K = torch.tensor([[50., 0, 32], [0, 50, 32], [0, 0, 1]]);"
        "img, *_ = rasterize(m, torch.randn(n, 4), torch.full((n, 3), 0.05), torch.full((n,), 0.5), torch.rand(n, 3), v, K, 64, 64, backend='cpu');"
        "img.sum().backward(); print(time.perf_counter() - t)"
    ) % str(REPO)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=os.environ)
    return {"import_and_first_call_s": float(result.stdout.strip().splitlines()[-1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gaussians", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=400)
    parser.add_argument("--cpu-iterations", type=int, default=10)
    parser.add_argument("--torch-iterations", type=int, default=2)
    parser.add_argument("--skip-torch", action="store_true", help="time only the CPU backend (no JSON written)")
    parser.add_argument("--device", default="cpu", help="device of the torch backend (default cpu; auto, cuda, ...)")
    args = parser.parse_args()
    torch.set_flush_denormal(True)

    params = sphere_scene(args.gaussians)
    focal = 0.5 * args.size / math.tan(0.5 * 0.69)  # the Blender lego field of view
    K = torch.tensor([[focal, 0.0, args.size / 2], [0.0, focal, args.size / 2], [0.0, 0.0, 1.0]])
    views = [look_at(torch.tensor([4.0 * math.cos(a), 4.0 * math.sin(a), 1.5])) for a in (0.3, 1.9, 3.5, 5.1)]

    cold = cold_start_seconds()
    # one warm-up iteration for the CPU backend (loads the compiled kernels from numba's cache)
    cpu = time_backend(params, views, K, args.size, "cpu", args.cpu_iterations, warmup=1)
    print(f"cpu:   {cpu['ms_per_iteration']:.1f} ms/iteration ({cpu['cpu_ms_per_iteration']:.1f} ms CPU time), "
          f"{cpu['gaussian_pixel_evaluations_per_second']:.3g} evaluations/s")
    if args.skip_torch:
        return
    device = select_device(args.device)
    on_device = [p.detach().to(device).requires_grad_() for p in params]
    # On a GPU the first call compiles and allocates: one untimed warm-up iteration.
    reference = time_backend(on_device, views, K, args.size, "torch", args.torch_iterations,
                             warmup=int(device.type == "cuda"))
    print(f"torch ({device}): {reference['ms_per_iteration']:.1f} ms/iteration ({reference['cpu_ms_per_iteration']:.1f} ms CPU time), "
          f"{reference['gaussian_pixel_evaluations_per_second']:.3g} evaluations/s")
    ratio = reference["ms_per_iteration"] / cpu["ms_per_iteration"]
    print(f"cpu backend is {ratio:.1f}x faster than the torch reference; cold import + first call {cold['import_and_first_call_s']:.2f} s")

    result = {
        "scene": {"gaussians": args.gaussians, "width": args.size, "height": args.size, "views": len(views)},
        "cpu": cpu,
        "torch": {**reference, "device": str(device)},
        "speedup_cpu_over_torch": ratio,
        "cold_start": cold,
        "machine": {
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0],
            "platform": platform.platform(),
        },
    }
    out = REPO / "benchmarks" / "results" / "splat_rasterizer.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
