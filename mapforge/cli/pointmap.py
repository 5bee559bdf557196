"""`mapforge pointmap IMAGES --weights FILE -o OUT`: cameras and dense points from a DUSt3R / MASt3R network."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import int_in, non_negative_float, non_negative_int, positive_float, positive_int
from mapforge.pointmap.graph import SCENE_GRAPHS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "pointmap",
        help="pointmap reconstruction (DUSt3R/MASt3R): photos -> COLMAP model (sparse/0), points.ply, depth maps",
        description="Run a DUSt3R or MASt3R checkpoint on pairs of photographs and align the pairwise pointmaps "
        "into one scene (global alignment), without SfM. Writes sparse/0 (COLMAP binary, cameras for the original "
        "photographs), points.ply, depth/*.npy and report.json.",
    )
    parser.add_argument("images", help="folder of images (sorted by name), at least 2")
    parser.add_argument("--weights", required=True,
                        help="checkpoint: a released DUSt3R/MASt3R .pth, a state dict .pth or a .safetensors file")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--size", type=int_in(16), default=None,
                        help="network image size (default: the checkpoint's, 512 or 224)")
    parser.add_argument("--scene-graph", default="complete",
                        help=f"image pairs to run: {', '.join(SCENE_GRAPHS)} (default complete; swin/logwin accept "
                        "-noncyclic)")
    parser.add_argument("--iterations", type=non_negative_int, default=300, help="global alignment iterations (default 300)")
    parser.add_argument("--lr", type=positive_float, default=0.01, help="global alignment learning rate (default 0.01)")
    parser.add_argument("--min-conf", type=non_negative_float, default=3.0,
                        help="confidence threshold of the point cloud (default 3)")
    parser.add_argument("--batch-size", type=positive_int, default=1, help="pairs per network call (default 1)")
    parser.add_argument("--intrinsics", default=None,
                        help="known intrinsics of the photographs: 3x3 K text file or COLMAP cameras.txt/.bin")
    parser.add_argument("--max-points", type=positive_int, default=1_000_000,
                        help="at most this many points in points.ply (default 1000000)")
    parser.add_argument("--matches-only", action="store_true",
                        help="MASt3R only: write its reciprocal matches to OUT/database.db (COLMAP database) for "
                        "`mapforge sfm IMAGES --database OUT/database.db`, instead of aligning the pointmaps")
    parser.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda (default: cuda if available)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.matches_only:
        return _match(args)
    from mapforge.pointmap.pipeline import PointmapRunConfig, run_pointmap

    config = PointmapRunConfig(
        image_size=args.size, scene_graph=args.scene_graph, batch_size=args.batch_size, iterations=args.iterations,
        lr=args.lr, min_conf=args.min_conf, intrinsics=args.intrinsics, max_points=args.max_points,
        device=args.device,
    )
    run_pointmap(args.images, args.weights, args.output, config)
    print(f"wrote {args.output}/sparse/0, {args.output}/points.ply, {args.output}/depth and {args.output}/report.json")
    return 0


def _match(args: argparse.Namespace) -> int:
    from mapforge.pointmap.correspondences import MatchConfig, run_matching

    config = MatchConfig(image_size=args.size, scene_graph=args.scene_graph, batch_size=args.batch_size,
                         device=args.device)
    result = run_matching(args.images, args.weights, args.output, config)
    print(f"wrote {result.path} and {args.output}/report.json; next: mapforge sfm {args.images} --database {result.path}")
    return 0
