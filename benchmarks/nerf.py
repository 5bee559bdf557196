"""Train both NeRF models on Blender lego (400x400, 100 train views, white background) and evaluate them.

Each run trains under a wall-clock budget in its own process (so that peak memory is per run): `fast` (the hash-grid
model, `--fast-minutes`, default 15), `fast_hour` (the same model under `--hour-minutes`, default 60, for the hour
bar; not run by default) and `nerf` (the original model, `--nerf-minutes`, default 30). The model is copied at every
`--eval-every` fraction of the budget (default 0.2) and each copy is scored after training, outside the training
clock, for a quality-vs-time curve. The fast model is scored on whole test views (`--test-views`, default all 200:
PSNR and SSIM). The original NeRF renders a 400x400 view in some 15 minutes on 2 cores, so it is scored by PSNR on
every `--nerf-stride`-th pixel (default 8) of `--nerf-test-views` evenly spread test views (default 8), no SSIM;
its learning rate stays at the paper's 5e-4 (the start of its 200k-step decay) rather than decaying over the budget.
Quality bar on a quiet 2-core CPU: the fast model >= 30 dB after 15 minutes and 32 dB after an hour.

Writes benchmarks/results/nerf.json, keeping the runs of earlier invocations that this one did not repeat: per run
the curve [{minutes, iterations, psnr, ssim, views}], final test PSNR/SSIM, iterations, training / evaluation
seconds, density samples per second, peak resident memory (ru_maxrss) and the machine's load when it ended.
Training outputs go to `--out` (a temporary folder by default).

    nice -n 10 .venv/bin/python benchmarks/nerf.py [--fast-minutes 15] [--nerf-minutes 30] [--models fast,nerf,fast_hour]
        [--set KEY=VALUE ...]  (config overrides, e.g. --set target_samples=65536 or --set 'lpips_weights=["w.pth"]')
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapforge.datasets import load_dataset  # noqa: E402
from mapforge.io.atomic import atomic_path  # noqa: E402
from mapforge.metrics.image import psnr  # noqa: E402
from mapforge.nerf.config import OriginalNeRFConfig, make_config  # noqa: E402
from mapforge.nerf.evaluate import evaluate  # noqa: E402
from mapforge.nerf.setup import model_rays  # noqa: E402
from mapforge.nerf.trainer import NeRFTrainer  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "blender_lego_400"
RESULTS = REPO / "benchmarks" / "results" / "nerf.json"
QUALITY_BAR = {"fast": {"minutes": 15, "psnr": 30.0}, "fast_hour": {"minutes": 60, "psnr": 32.0}}


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


# Run name -> the trainer's model name.
RUNS = {"fast": "fast", "fast_hour": "fast", "nerf": "nerf"}


def pixel_psnr(model: torch.nn.Module, setup, dataset, views: list[int], stride: int) -> float:
    """Mean over `views` of the PSNR on every `stride`-th pixel in x and y (from (stride/2, stride/2)): the
    original NeRF's curve, where whole 400x400 views take some 15 minutes each on 2 cores."""
    values = []
    background = torch.tensor(setup.background, dtype=torch.float32)
    model.eval()
    for i in views:
        image = dataset.load_image(i)[..., :3]
        height, width = image.shape[:2]
        rows, cols = np.arange(stride // 2, height, stride), np.arange(stride // 2, width, stride)
        pixels = torch.from_numpy((rows[:, None] * width + cols[None, :]).ravel())
        o, d, near, far = (t[pixels] for t in model_rays(setup, dataset.cameras[i], dataset.cam_from_world[i]))
        target = image[rows[:, None], cols[None, :]]
        with torch.no_grad():
            rgb = torch.cat([model.final(model.render_rays(o[s : s + 1024], d[s : s + 1024], near[s : s + 1024],
                                                           far[s : s + 1024], background)).rgb.clamp(0, 1)
                             for s in range(0, o.shape[0], 1024)])
        values.append(float(psnr(rgb.view(target.shape).numpy(), target)))
    model.train()
    return float(np.mean(values))


def run_model(run: str, minutes: float, args: argparse.Namespace, out_dir: Path) -> dict:
    """Train and evaluate one run (see `RUNS`) in this process; returns its results.

    The model is copied at every `--eval-every` fraction of the budget; after training each copy is scored like
    the final model (fast: all test views, whole images; nerf: `pixel_psnr` on `--nerf-test-views` views), so the
    curve's points are comparable with the final result and cost no training time."""
    model = RUNS[run]
    dataset = load_dataset(args.data, downscale=args.downscale)
    test = dataset.split["test"]
    fast = model == "fast"
    count = (args.test_views if fast else args.nerf_test_views) or len(test)
    views = [test[int(k)] for k in np.linspace(0, len(test) - 1, min(count, len(test))).round()]
    # The trainer scores the fast model's final state itself; the original NeRF's is scored here by pixel_psnr.
    settings = {"minutes": minutes, "eval_views": len(views) if fast else 0, "checkpoint_minutes": 0}
    if not fast:
        # The curve is the first minutes of the paper's schedule (5e-4 decaying tenfold over 200k steps; a few
        # hundred steps in, within 0.2% of its start), not a decay squeezed into the budget.
        settings["lr_final"] = dict(args.set).get("lr", OriginalNeRFConfig.lr)
    settings.update(dict(args.set))
    trainer = NeRFTrainer(dataset, make_config(model, settings), out_dir / run)
    snapshots: list[tuple[float, int, torch.nn.Module]] = []
    interval = args.eval_every * minutes * 60.0

    def snapshot(trainer: NeRFTrainer) -> None:
        # Runs off the training clock, between steps.
        if trainer.seconds >= interval * (len(snapshots) + 1) and trainer.seconds < minutes * 60.0 - 1.0:
            snapshots.append((trainer.seconds, trainer.step, copy.deepcopy(trainer.model)))

    trainer.run(callback=snapshot)
    metrics = trainer.finish()
    if fast:
        final = {"psnr": metrics["psnr"], "ssim": metrics["ssim"]}
    else:
        final = {"psnr": pixel_psnr(trainer.model, trainer.setup, dataset, views, args.nerf_stride), "ssim": None}
    curve = []
    for seconds, step, net in snapshots:
        if fast:
            quality = evaluate(net, trainer.setup, dataset, views)
            point = {"psnr": quality["psnr"], "ssim": quality["ssim"]}
        else:
            point = {"psnr": pixel_psnr(net, trainer.setup, dataset, views, args.nerf_stride), "ssim": None}
        curve.append({"minutes": seconds / 60.0, "iterations": step, **point, "views": len(views)})
        print(f"[{run}] {seconds / 60:.1f} min, {step} iterations: test PSNR {point['psnr']:.2f} dB", flush=True)
    curve.append({"minutes": trainer.seconds / 60.0, "iterations": trainer.step, **final, "views": len(views)})
    return {
        **final,
        "test_views": len(views),
        "pixel_stride": 1 if fast else args.nerf_stride,
        "train_minutes": trainer.seconds / 60.0,
        "budget_minutes": minutes,
        "iterations": trainer.step,
        "samples_per_second": metrics["samples_per_second"],
        "setup_seconds": metrics["setup_seconds"],
        "eval_seconds_per_view": metrics["eval_seconds"] / len(views) if fast else None,
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "curve": curve,
        "config": {k: v for k, v in json.loads((out_dir / run / "config.json").read_text())["config"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--models", default="fast,nerf",
                        help="comma-separated runs: fast, nerf, fast_hour (default fast,nerf)")
    parser.add_argument("--fast-minutes", type=float, default=15.0)
    parser.add_argument("--nerf-minutes", type=float, default=30.0)
    parser.add_argument("--hour-minutes", type=float, default=60.0, help="budget of the fast_hour run (default 60)")
    parser.add_argument("--eval-every", type=float, default=0.2,
                        help="a curve point every this fraction of the budget (default 0.2)")
    parser.add_argument("--test-views", type=int, default=0,
                        help="test views for the fast model's final score (default 0: all)")
    parser.add_argument("--nerf-test-views", type=int, default=8,
                        help="test views (evenly spread) for the original NeRF's curve (default 8; 0: all)")
    parser.add_argument("--nerf-stride", type=int, default=8,
                        help="the original NeRF is scored on every this-many-th pixel in x and y (default 8: one "
                        "400x400 view is 41M evaluations of its 256-wide MLP, some 15 minutes on 2 cores)")
    parser.add_argument("--downscale", type=int, default=1, help="shrink the images by this factor (default 1)")
    parser.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], type=_setting,
                        help="override a field of the models' configs (e.g. --set target_samples=65536); repeatable")
    parser.add_argument("--out", type=Path, help="training outputs (default: a temporary folder)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--only", help=argparse.SUPPRESS)  # internal: run one model, print its JSON
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found: {args.data}")
    budgets = {"fast": args.fast_minutes, "fast_hour": args.hour_minutes, "nerf": args.nerf_minutes}
    if args.only:
        print("RESULT " + json.dumps(run_model(args.only, budgets[args.only], args, args.out)), flush=True)
        return

    out = args.out or Path(tempfile.mkdtemp(prefix="nerf_bench_"))
    results: dict = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        if model not in budgets:
            sys.exit(f"unknown run {model!r} ({', '.join(RUNS)})")
        command = [sys.executable, __file__, "--only", model, "--out", str(out), "--data", str(args.data),
                   "--fast-minutes", str(args.fast_minutes), "--nerf-minutes", str(args.nerf_minutes),
                   "--hour-minutes", str(args.hour_minutes),
                   "--eval-every", str(args.eval_every), "--nerf-stride", str(args.nerf_stride),
                   "--test-views", str(args.test_views), "--nerf-test-views", str(args.nerf_test_views),
                   "--downscale", str(args.downscale)]
        command += [f"--set={key}={value}" for key, value in args.set]
        start = time.time()
        proc = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
        print("\n".join(line for line in proc.stdout.splitlines() if not line.startswith("RESULT ")))
        if proc.returncode != 0 or not lines:
            sys.exit(f"{model} benchmark failed (exit code {proc.returncode})")
        results[model] = json.loads(lines[-1][len("RESULT "):])
        results[model]["wall_minutes"] = (time.time() - start) / 60.0
        results[model]["load_average"] = os.getloadavg()
        print(f"{model}: test PSNR {results[model]['psnr']:.2f} dB, SSIM {results[model]['ssim'] or float('nan'):.4f} on "
              f"{results[model]['test_views']} views after {results[model]['train_minutes']:.1f} min "
              f"({results[model]['iterations']} iterations)")
    if args.results.is_file():
        earlier = json.loads(args.results.read_text()).get("models", {})
        results = {**{k: v for k, v in earlier.items() if k not in results}, **results}
    report = {
        "data": args.data.name,
        "downscale": args.downscale,
        "models": results,
        "quality_bar": QUALITY_BAR,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__, "load_average": os.getloadavg()},
        "output": str(out),
    }
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.results) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
