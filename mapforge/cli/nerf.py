"""`mapforge nerf train|render|export`: neural radiance fields from posed images, rendering and geometry export."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import positive_float, positive_int
from mapforge.cli.training import DEVICE_HELP, LPIPS_HELP, add_training_options


def _setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), value.strip()


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("nerf", help="neural radiance fields: train on posed images, render, export")
    commands = parser.add_subparsers(dest="nerf_command", metavar="ACTION", required=True)
    _add_train(commands)
    _add_render(commands)
    _add_export(commands)


def _add_train(commands: argparse._SubParsersAction) -> None:
    from mapforge.nerf.config import FastNeRFConfig, OriginalNeRFConfig

    train = commands.add_parser(
        "train",
        help="train a NeRF on a posed data set",
        description="Train a radiance field on DATA (Blender scene, nerfstudio/instant-ngp transforms.json, COLMAP "
        "project as `mapforge sfm` writes it, LLFF, ...). OUT receives checkpoint.pt, config.json, history.json, "
        "training_curve.svg, metrics.json (test PSNR/SSIM) and renders/test/*.png.",
    )
    add_training_options(train, f"optimisation steps (default {FastNeRFConfig.iterations} fast, "
                         f"{OriginalNeRFConfig.iterations} nerf)")
    train.add_argument("--model", choices=("fast", "nerf"), default="fast",
                       help="fast: hash grid + occupancy grid (instant-ngp style, minutes on a CPU); nerf: the "
                       "original NeRF (hours). Default fast")
    train.add_argument("--eval-views", type=positive_int, help="evaluate only this many test views (default all)")
    train.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], type=_setting,
                       help="override any field of the model's config (see mapforge.nerf.config.FastNeRFConfig / "
                       "OriginalNeRFConfig), e.g. --set grid_resolution=64; repeatable")
    train.set_defaults(func=_train)


def _add_render(commands: argparse._SubParsersAction) -> None:
    render = commands.add_parser(
        "render",
        help="render the views of a data set split, or a camera path, with a trained NeRF",
        description="Render every view of a split of DATA with the NeRF trained in OUT, one PNG per view named like "
        "the view's image, plus metrics.json (PSNR, SSIM); and/or, with --path, a camera path (an orbit, or a "
        "spiral for forward-facing scenes) as .mp4, .gif or a folder of PNGs.",
    )
    render.add_argument("model", metavar="OUT", help="training output folder (or its checkpoint.pt)")
    render.add_argument("--data", metavar="DATA", help="data set folder (default: the one the model was trained on)")
    render.add_argument("--split", default="test", help="split to render (default test)")
    render.add_argument("-o", "--output", metavar="DIR", help="folder for the renders of the split")
    render.add_argument("--path", metavar="FILE", help="also render a camera path to FILE (.mp4, .gif or a folder)")
    render.add_argument("--frames", type=positive_int, default=120, help="frames of the camera path (default 120)")
    render.add_argument("--fps", type=positive_int, default=30, help="frames per second of a video (default 30)")
    render.add_argument("--downscale", type=positive_int, help="shrink images by this factor (default: as trained)")
    render.add_argument("--lpips-weights", nargs="+", metavar="FILE", default=(), help=LPIPS_HELP)
    render.add_argument("--device", default="auto", help=DEVICE_HELP)
    render.set_defaults(func=_render)


def _add_export(commands: argparse._SubParsersAction) -> None:
    export = commands.add_parser(
        "export",
        help="export a mesh and/or a point cloud from a trained NeRF",
        description="Extract a coloured mesh (marching cubes on the density) to FILE and/or a point cloud (expected "
        "depth of the training views) to --points.",
    )
    export.add_argument("model", metavar="OUT", help="training output folder (or its checkpoint.pt)")
    export.add_argument("-o", "--output", metavar="FILE", help="mesh PLY to write")
    export.add_argument("--points", metavar="FILE", help="point-cloud PLY to write")
    export.add_argument("--resolution", type=positive_int, default=256,
                        help="marching-cubes grid cells per side (default 256)")
    export.add_argument("--threshold", type=positive_float,
                        help="density of the surface (default: instant-ngp's 2.5 scaled to the scene box)")
    export.add_argument("--data", metavar="DATA", help="data set for --points (default: the one trained on)")
    export.add_argument("--stride", type=positive_int, default=4,
                        help="--points: use every STRIDE-th pixel of each training view (default 4)")
    export.add_argument("--device", default="auto", help=DEVICE_HELP)
    export.set_defaults(func=_export)


def _train(args: argparse.Namespace) -> int:
    from mapforge.nerf.config import make_config
    from mapforge.nerf.trainer import train_path

    options: dict[str, object] = dict(args.set)
    options.update({"device": args.device, "seed": args.seed})
    if args.lpips_weights:
        options["lpips_weights"] = tuple(args.lpips_weights)
    if args.eval_views:
        options["eval_views"] = args.eval_views
    if args.iterations:
        options["iterations"] = args.iterations
    if args.minutes:
        options["minutes"] = args.minutes
    config = make_config(args.model, options)
    result = train_path(args.data, config, args.output, downscale=args.downscale, resume=args.resume)
    print(f"{result.summary(f'the {args.model} NeRF')}; wrote {args.output}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from mapforge.errors import InputError
    from mapforge.nerf.render import render_model, render_run_path
    from mapforge.training.evaluation import quality_text

    if args.output is None and args.path is None:
        raise InputError("give -o DIR for the split's views and/or --path FILE for a camera path")
    if args.output is not None:
        metrics = render_model(args.model, args.data, args.output, args.split, args.downscale, args.device,
                               args.lpips_weights)
        print(f"rendered to {args.output}: {quality_text(metrics)}")
    if args.path is not None:
        render_run_path(args.model, args.path, args.data, args.frames, args.fps, args.downscale, args.device)
        print(f"rendered a {args.frames}-frame camera path to {args.path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from mapforge.errors import InputError
    from mapforge.nerf.export import export_model

    if args.output is None and args.points is None:
        raise InputError("give -o FILE for a mesh and/or --points FILE for a point cloud")
    summary = export_model(args.model, args.output, args.points, args.resolution, args.threshold, args.data,
                           args.stride, args.device)
    if "mesh" in summary:
        mesh = summary["mesh"]
        print(f"wrote {mesh['path']}: {mesh['vertices']} vertices, {mesh['faces']} faces "
              f"(density threshold {mesh['threshold']:.4g})")
    if "points" in summary:
        print(f"wrote {summary['points']['path']}: {summary['points']['count']} points")
    return 0
