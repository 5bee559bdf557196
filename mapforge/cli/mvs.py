"""`mapforge mvs MODEL_OR_RUN -o OUT`: depth and normal maps, a fused dense cloud and a mesh from posed photos."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import positive_float, positive_int
from mapforge.mvs import MESHERS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "mvs",
        help="multi-view stereo: posed photos -> depth/normal maps, fused.ply and meshed-poisson.ply (COLMAP layout)",
        description="Undistort, compute PatchMatch depth and normal maps for every image (photometric, then "
        "geometric pass), fuse them into a dense cloud and mesh it. OUT is a COLMAP dense workspace; an "
        "interrupted run resumes at the next image.",
    )
    parser.add_argument(
        "model", metavar="MODEL_OR_RUN",
        help="a COLMAP project folder (images/ beside sparse/ or sparse/0), a model folder (with --images), or a "
        "mapforge run folder",
    )  # fmt: skip
    parser.add_argument("-o", "--output", required=True, help="output folder (the dense workspace)")
    parser.add_argument("--images", default=None, help="folder of the model's photos (default: images/ beside it)")
    parser.add_argument("--max-image-size", type=int, default=1600, help="longer side of the undistorted images (default 1600; 0 = full size)")
    parser.add_argument("--num-sources", type=positive_int, default=10, help="source images per reference (default 10)")
    parser.add_argument("--no-geom-consistency", action="store_true", help="skip the geometric pass; fuse filtered photometric maps")
    parser.add_argument("--mesh", choices=MESHERS, default="poisson", help="mesher (default poisson)")
    parser.add_argument("--depth-range", type=positive_float, nargs=2, metavar=("MIN", "MAX"), default=None,
                        help="depth range for every image (default: from the model's points)")  # fmt: skip
    parser.add_argument("--device", default="auto", help="torch device for PatchMatch (default auto: CUDA if present)")
    parser.add_argument("--cache-gb", type=positive_float, default=2.0, help="images and maps held in memory (default 2 GB)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mapforge.mvs.pipeline import MVSConfig, run_mvs, summary_text
    from mapforge.run import mvs_inputs

    config = MVSConfig(
        max_image_size=args.max_image_size, num_sources=args.num_sources, geom_consistency=not args.no_geom_consistency,
        mesh=args.mesh, depth_range=tuple(args.depth_range) if args.depth_range else None, device=args.device,
        cache_gb=args.cache_gb,
    )  # fmt: skip
    model, images = mvs_inputs(args.model, args.images)
    result = run_mvs(model, images, args.output, config)
    print(summary_text(result.report))
    print(f"wrote {result.workspace.fused}" + (f" and {result.workspace.mesh}" if result.report["mesh"] else ""))
    return 0
