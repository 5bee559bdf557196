"""Pointmap benchmark: the full-size DUSt3R ViT-Large / 512 / DPT network on this machine.

Times (wall clock and process CPU time) and peak memory (ru_maxrss) of
- building the network (random initialisation of `PointmapNet` with the released architecture, the default
  `PointmapConfig`: 571 M parameters, the key list of the released `DUSt3R_ViTLarge_BaseDecoder_512_dpt`; inference
  time does not depend on the weight values, so no checkpoint is needed),
- one pair of 512x384 images (both images encoded, then both decoders and heads),
- a 4-image complete scene graph, symmetrised (12 pairs; each image encoded once), and global alignment of
  4 images / 12 pairs at 512x384 (300 iterations, upstream defaults) on synthetic consistent pointmaps.
Images are seeded random 512x384 tensors. Upstream DUSt3R took 46-56 s and 3.0 GB per pair on this machine.

    .venv/bin/python benchmarks/pointmap.py [--skip-graph] [--skip-alignment] [--threads 1] [--batch-size 1]

Writes benchmarks/results/pointmap.json (the latest run, with the load average at the start and end, since other
processes on the machine change the wall-clock numbers).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mapforge.pointmap.alignment import AlignmentConfig, PairPredictions, global_alignment  # noqa: E402
from mapforge.pointmap.graph import make_pairs  # noqa: E402
from mapforge.pointmap.inference import iter_pair_predictions  # noqa: E402
from mapforge.pointmap.models import PointmapConfig, PointmapNet  # noqa: E402

HEIGHT, WIDTH = 384, 512


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class Timer:
    def __enter__(self) -> Timer:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu
        self.peak_rss_gb = peak_rss_gb()

    def record(self, **extra) -> dict:
        return {"wall_s": round(self.wall, 2), "cpu_s": round(self.cpu, 2), "peak_rss_gb": round(self.peak_rss_gb, 3),
                **extra}


def views(count: int) -> list[dict]:
    generator = torch.Generator().manual_seed(0)
    return [
        {"img": torch.rand(1, 3, HEIGHT, WIDTH, generator=generator) * 2 - 1,
         "true_shape": torch.tensor([[HEIGHT, WIDTH]], dtype=torch.int32), "idx": i, "instance": str(i)}
        for i in range(count)
    ]


def run_pairs(model: PointmapNet, images: list[dict], pairs: list[tuple[int, int]], batch_size: int) -> PairPredictions:
    kept = []
    for batch in iter_pair_predictions(model, images, pairs, batch_size, "cpu", progress=True):
        for b in range(len(batch["view1"]["idx"])):
            kept.append((batch["pred1"]["pts3d"][b].clone(), batch["pred2"]["pts3d_in_other_view"][b].clone(),
                         batch["pred1"]["conf"][b].clone(), batch["pred2"]["conf"][b].clone()))
    pts_i, pts_j, conf_i, conf_j = (list(column) for column in zip(*kept))
    return PairPredictions(list(pairs), pts_i, pts_j, conf_i, conf_j)


def synthetic_predictions(count: int) -> PairPredictions:
    """Consistent pointmaps of a wavy wall seen by `count` cameras side by side (focal 500 px), for timing the
    alignment on inputs that make sense (random network outputs can lie behind the camera)."""
    ys, xs = torch.meshgrid(torch.arange(HEIGHT) + 0.5, torch.arange(WIDTH) + 0.5, indexing="ij")
    rays = torch.stack([(xs - WIDTH / 2) / 500, (ys - HEIGHT / 2) / 500, torch.ones_like(xs)], dim=-1)
    generator = torch.Generator().manual_seed(0)
    edges = make_pairs(count, "complete", symmetrize=True)
    pts_i, pts_j, conf_i, conf_j = [], [], [], []
    for i, j in edges:
        for image, out in ((i, pts_i), (j, pts_j)):
            depth = 2 + 0.1 * torch.sin(xs / 40 + image) * torch.cos(ys / 30)
            out.append(rays * depth[..., None] + torch.tensor([0.1 * (image - i), 0.0, 0.0]))
        conf_i.append(1 + 5 * torch.rand(HEIGHT, WIDTH, generator=generator))
        conf_j.append(1 + 5 * torch.rand(HEIGHT, WIDTH, generator=generator))
    return PairPredictions(edges, pts_i, pts_j, conf_i, conf_j)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-graph", action="store_true", help="time only the single pair")
    parser.add_argument("--skip-alignment", action="store_true", help="do not run global alignment on the graph")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=1, help="pairs per network call (default 1)")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "pointmap.json"))
    args = parser.parse_args()
    torch.set_flush_denormal(True)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "torch": torch.__version__,
                    "threads": torch.get_num_threads(), "load_average_start": list(os.getloadavg()),
                    "niceness": os.nice(0)},
        "model": "DUSt3R_ViTLarge_BaseDecoder_512_dpt architecture, random weights",
        "image_size_hw": [HEIGHT, WIDTH],
        "batch_size": args.batch_size,
        "upstream_per_pair": {"wall_s": "46-56", "peak_rss_gb": 3.0},
    }

    with torch.no_grad(), Timer() as t:
        model = PointmapNet(PointmapConfig()).eval()
    results["build_model"] = t.record(parameters=sum(p.numel() for p in model.parameters()))
    print(f"model built: {results['build_model']}")

    with Timer() as t:
        run_pairs(model, views(2), [(0, 1)], args.batch_size)
    results["one_pair"] = t.record()
    print(f"one pair: {results['one_pair']}")

    if not args.skip_graph:
        pairs = make_pairs(4, "complete", symmetrize=True)
        with Timer() as t:
            run_pairs(model, views(4), pairs, args.batch_size)
        results["complete_graph_4_images"] = t.record(pairs=len(pairs), per_pair_wall_s=round(t.wall / len(pairs), 2))
        print(f"4-image complete graph: {results['complete_graph_4_images']}")
        del model
        if not args.skip_alignment:
            with Timer() as t:
                aligned = global_alignment(synthetic_predictions(4), AlignmentConfig(device="cpu"))
            results["global_alignment_4_images"] = t.record(
                iterations=300, final_loss=aligned.loss_history[-1],
                inputs="synthetic consistent 512x384 pointmaps (12 pairs), not the random network's outputs")
            print(f"global alignment: {results['global_alignment_4_images']}")

    results["machine"]["load_average_end"] = list(os.getloadavg())
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
