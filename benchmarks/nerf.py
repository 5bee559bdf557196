"""Train both NeRF models on Blender lego (400x400, 100 train views, white background) and evaluate them.

Each run trains under a wall-clock budget in its own process (so that peak memory is per run): `fast` (the hash-grid
model, `--fast-minutes`, default 15), `fast_hour` (the same model under `--hour-minutes`, default 60, for the hour
bar; not run by default) and `nerf` (the original model, `--nerf-minutes`, default 30). Every `--eval-every`
fraction of the budget, test PSNR/SSIM is measured on a fixed subset of `--probe-views` test views (outside the training clock) for a quality-vs-time curve; at the
end the test views are rendered and scored (`--test-views`, default all 200, for the fast model;
`--nerf-test-views`, default 10 evenly spread, for the original NeRF, whose renders take minutes per view). Quality bar on a quiet 2-core CPU:
the fast model >= 30 dB after 15 minutes and 32 dB after an hour.

Writes benchmarks/results/nerf.json, keeping the runs of earlier invocations that this one did not repeat: per run
the curve [{minutes, iterations, psnr, ssim, views}], final test PSNR/SSIM, iterations, training / evaluation
seconds, density samples per second, peak resident memory (ru_maxrss) and the machine's load when it ended. Training outputs go to `--out` (a temporary folder by default).

    nice -n 10 .venv/bin/python benchmarks/nerf.py [--fast-minutes 15] [--nerf-minutes 30] [--models fast,nerf,fast_hour]
        [--set KEY=VALUE ...]  (config overrides, e.g. --set target_samples=65536 or --set 'lpips_weights=["w.pth"]')
"""

from __future__ import annotations

import argparse
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
from mapforge.nerf.trainer import evaluate, make_config, train  # noqa: E402

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


def run_model(run: str, minutes: float, args: argparse.Namespace, out_dir: Path) -> dict:
    """Train and evaluate one run (see `RUNS`) in this process; returns its results."""
    model = RUNS[run]
    dataset = load_dataset(args.data, downscale=args.downscale)
    test = dataset.split["test"]
    probe = [test[int(k)] for k in np.linspace(0, len(test) - 1, min(args.probe_views, len(test))).round()]
    test_views = (args.test_views if model == "fast" else args.nerf_test_views) or len(test)
    settings = {"time_budget": minutes * 60.0, "steps": 10**9, "eval_views": test_views, "checkpoint_every": 0}
    settings.update(dict(args.set))
    config = make_config(model, settings)
    curve: list[dict] = []
    next_probe = [args.eval_every * minutes * 60.0]

    def probe_quality(step: int, seconds: float, net: torch.nn.Module, setup) -> None:
        if seconds < next_probe[0]:
            return
        next_probe[0] += args.eval_every * minutes * 60.0
        quality = evaluate(net, setup, dataset, probe, progress=False)
        curve.append({"minutes": seconds / 60.0, "iterations": step, "psnr": quality["psnr"], "ssim": quality["ssim"],
                      "views": len(probe)})
        print(f"[{run}] {seconds / 60:.1f} min, {step} iterations: probe PSNR {quality['psnr']:.2f} dB", flush=True)

    result = train(dataset, config, out_dir / run, callback=probe_quality)
    metrics = result.metrics
    curve.append({"minutes": result.seconds / 60.0, "iterations": result.step, "psnr": metrics["psnr"],
                  "ssim": metrics["ssim"], "views": metrics["count"]})
    return {
        "psnr": metrics["psnr"],
        "ssim": metrics["ssim"],
        "test_views": metrics["count"],
        "train_minutes": result.seconds / 60.0,
        "budget_minutes": minutes,
        "iterations": result.step,
        "samples_per_second": metrics["samples_per_second"],
        "setup_seconds": metrics["setup_seconds"],
        "eval_seconds_per_view": metrics["eval_seconds"] / max(metrics["count"], 1),
        "peak_memory_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "curve": curve,
        "probe_views": len(probe),
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
    parser.add_argument("--eval-every", type=float, default=0.2, help="probe evaluation every this fraction of the budget")
    parser.add_argument("--probe-views", type=int, default=5)
    parser.add_argument("--test-views", type=int, default=0,
                        help="test views for the fast model's final score (default 0: all)")
    parser.add_argument("--nerf-test-views", type=int, default=10,
                        help="test views for the original NeRF's final score (default 10, evenly spread: one 400x400 "
                        "view is 41M evaluations of its 256-wide MLP, minutes on a CPU; 0: all)")
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
                   "--eval-every", str(args.eval_every), "--probe-views", str(args.probe_views),
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
        print(f"{model}: test PSNR {results[model]['psnr']:.2f} dB, SSIM {results[model]['ssim']:.4f} on "
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
