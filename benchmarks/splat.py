"""Train 3D Gaussian splatting on Blender lego (400x400, 100 train views, white background) and evaluate it.

Trains with the default `SplatConfig` under a training-time budget (`--minutes`, default 30: the quality bar is
>= 33 dB PSNR on the 200 test views after 30 minutes on a 2-core CPU), measures test PSNR on a fixed subset of test
views every `--eval-every` minutes (outside the training clock) for a PSNR-vs-time curve, then evaluates all test
views (or `--test-views`), and times the rasterizer's backends on the final Gaussians. Writes
benchmarks/results/splat.json (and the usual training outputs to `--out`, a temporary folder by default). With
`--data` pointing elsewhere (e.g. ../shared/data/llff_fern, whose every 8th view is the test split) the result goes
to benchmarks/results/splat_<data folder name>.json.

    nice -n 10 .venv/bin/python benchmarks/splat.py [--minutes 30] [--test-views 200] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapforge.datasets import load_dataset  # noqa: E402
from mapforge.io.atomic import atomic_path  # noqa: E402
from mapforge.splat.evaluate import evaluate  # noqa: E402
from mapforge.splat.rasterize import rasterize  # noqa: E402
from mapforge.splat.sh import sh0_to_rgb  # noqa: E402
from mapforge.splat.config import SplatConfig  # noqa: E402
from mapforge.splat.trainer import SplatTrainer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "blender_lego_400"


def rasterizer_throughput(trainer: SplatTrainer, iterations: dict[str, int], warmup: int = 1) -> dict:
    """Forward + L1 loss + backward of each rasterizer backend on the trained Gaussians (DC colours) at full
    resolution, cycling through three training views: wall and process CPU milliseconds per iteration."""
    g = trainer.gaussians
    params = [
        g.means.detach().clone(), g.params["quats"].detach().clone(), g.scales.detach().clone(),
        g.opacities.detach().clone(), torch.clamp_min(sh0_to_rgb(g.params["sh_dc"].detach()[:, 0]), 0.0),
    ]
    params = [p.requires_grad_() for p in params]
    views = trainer.views[:3]
    results: dict = {}
    for backend, count in iterations.items():
        if count < 1:
            continue
        wall = cpu = 0.0
        intersections = 0
        for it in range(warmup + count):
            view = views[it % len(views)]
            camera = view.camera
            for p in params:
                p.grad = None
            start, start_cpu = time.perf_counter(), time.process_time()
            image, _, _, meta = rasterize(*params, view.viewmat(), torch.as_tensor(camera.K, dtype=torch.float32),
                                          camera.width, camera.height, background=trainer.background, backend=backend)
            image.mean().backward()
            if it >= warmup:
                wall += time.perf_counter() - start
                cpu += time.process_time() - start_cpu
                intersections += meta["n_intersections"]
        results[backend] = {"ms_per_iteration": 1000 * wall / count, "cpu_ms_per_iteration": 1000 * cpu / count,
                            "mean_tile_intersections": intersections / count, "iterations": count}
    if "torch" in results and "cpu" in results:
        results["torch_over_cpu"] = results["torch"]["ms_per_iteration"] / results["cpu"]["ms_per_iteration"]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--minutes", type=float, default=30.0, help="training budget (default 30)")
    parser.add_argument("--test-views", type=int, default=200, help="test views in the final evaluation (default all 200)")
    parser.add_argument("--eval-every", type=float, default=5.0, help="minutes between PSNR-vs-time probes")
    parser.add_argument("--probe-views", type=int, default=10, help="test views per probe, spread over the test split")
    parser.add_argument("--out", type=Path, help="training output folder (default: a temporary folder)")
    parser.add_argument("--torch-iterations", type=int, default=1, help="timed torch-backend iterations (slow; 0 skips)")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"data set not found: {args.data}")

    out = args.out or Path(tempfile.mkdtemp(prefix="mapforge_splat_"))
    dataset = load_dataset(args.data)
    test = dataset.subset("test")
    probe = test[:: max(1, len(test) // args.probe_views)][: args.probe_views]
    final = test[: args.test_views]
    config = SplatConfig(minutes=args.minutes, checkpoint_minutes=0)

    start = time.perf_counter()
    cpu_start = time.process_time()
    trainer = SplatTrainer(dataset, config, out)
    setup_seconds = time.perf_counter() - start
    curve = []
    next_probe = [60.0 * args.eval_every]

    def probe_quality(trainer: SplatTrainer) -> None:
        # Runs off the training clock, between steps.
        if trainer.seconds >= next_probe[0] or trainer.progress() >= 1.0:
            metrics = evaluate(trainer.gaussians, dataset, probe, trainer.background)
            curve.append({"minutes": trainer.seconds / 60, "iterations": trainer.step,
                          "gaussians": len(trainer.gaussians), "probe_psnr": metrics["psnr"]})
            print(json.dumps(curve[-1]), flush=True)
            next_probe[0] += 60.0 * args.eval_every

    trainer.run(callback=probe_quality)
    train_cpu_seconds = time.process_time() - cpu_start
    trainer.write_outputs({"data": str(args.data)})
    metrics = evaluate(trainer.gaussians, dataset, final, trainer.background, out / "test")
    throughput = rasterizer_throughput(trainer, {"cpu": 5, "torch": args.torch_iterations})
    result = {
        "data": args.data.name,
        "test_views": len(final),
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "train_minutes": trainer.seconds / 60,
        "setup_seconds": setup_seconds,
        "train_cpu_seconds": train_cpu_seconds,
        "iterations": trainer.step,
        "gaussians": len(trainer.gaussians),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "psnr_vs_time": curve,
        "probe_views": len(probe),
        "rasterizer": throughput,
        "config": {"minutes": args.minutes, "resolution_schedule": config.resolution_schedule},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average": os.getloadavg()},
        "output": str(out),
    }
    name = "splat.json" if args.data.resolve() == DATA.resolve() else f"splat_{args.data.name}.json"
    path = REPO / "benchmarks" / "results" / name
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    psnr = "n/a" if metrics["psnr"] is None or not math.isfinite(metrics["psnr"]) else f"{metrics['psnr']:.2f}"
    print(f"{args.data.name}: {psnr} dB PSNR, SSIM {metrics['ssim']:.4f} on {len(final)} test views after "
          f"{trainer.seconds / 60:.1f} min, {trainer.step} iterations, {len(trainer.gaussians)} Gaussians; wrote {path}")


if __name__ == "__main__":
    main()
