"""`mapforge splat train|render`: 3D Gaussian splatting from posed images, and rendering a trained model."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import non_negative_int, positive_int
from mapforge.cli.training import DEVICE_HELP, LPIPS_HELP, add_training_options
from mapforge.splat.config import SplatConfig
from mapforge.splat.densify import DensifyConfig
from mapforge.splat.rasterize.api import BACKENDS


def _color(text: str) -> tuple[float, float, float]:
    named = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}
    if text.lower() in named:
        return named[text.lower()]
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"background must be white, black or R,G,B in [0, 1], got {text!r}")
    return values  # type: ignore[return-value]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("splat", help="3D Gaussian splatting: train on posed images, render views")
    commands = parser.add_subparsers(dest="splat_command", metavar="ACTION", required=True)
    _add_train(commands)
    _add_render(commands)


def _add_train(commands: argparse._SubParsersAction) -> None:
    train = commands.add_parser(
        "train",
        help="train Gaussians on a posed data set",
        description="Train 3D Gaussian splatting on DATA (Blender scene, nerfstudio/instant-ngp transforms.json, "
        "COLMAP project as `mapforge sfm` writes it, LLFF, ...). OUT receives point_cloud.ply (3DGS layout), "
        "scene.splat, config.json, metrics.json, training_curve.svg, renders of the test views and a checkpoint.",
    )
    add_training_options(train, f"optimisation steps (default {SplatConfig.iterations})")
    train.add_argument("--init", metavar="PATH",
                       help="start from a 3DGS .ply or .splat, a point-cloud .ply or a COLMAP model folder "
                       "(default: the data's sparse points, else random Gaussians in the scene's box)")
    train.add_argument("--sh-degree", type=int, choices=range(4), default=SplatConfig.sh_degree,
                       help=f"highest spherical-harmonic degree (default {SplatConfig.sh_degree})")
    train.add_argument("--random-points", type=positive_int, default=SplatConfig.init_random_points,
                       help=f"Gaussians for random initialisation (default {SplatConfig.init_random_points})")
    train.add_argument("--max-gaussians", type=non_negative_int, default=0,
                       help="cap on the number of Gaussians (default 0: none)")
    train.add_argument("--optimize-poses", action="store_true",
                       help="optimise the training views' poses with the Gaussians and align the held-out views' "
                       "poses before evaluation (for poses from `mapforge pointmap`); refined poses go to OUT/sparse/0")
    train.add_argument("--no-densify", action="store_true",
                       help="no adaptive density control (clone, split, prune, opacity reset): for dense "
                       "initial points such as a pointmap's")
    train.add_argument("--background", type=_color, help="white, black or R,G,B (default: the data's, else black)")
    train.add_argument("--backend", choices=BACKENDS, default="auto", help="rasterizer backend (default auto)")
    train.set_defaults(func=_train)


def _add_render(commands: argparse._SubParsersAction) -> None:
    render = commands.add_parser(
        "render",
        help="render the views of a data set split with trained Gaussians",
        description="Render every view of a split of DATA with the Gaussians in OUT (a training output folder or "
        "any 3DGS .ply or .splat), one PNG per view named like the view's image, plus metrics.json (PSNR, SSIM).",
    )
    render.add_argument("model", metavar="OUT", help="training output folder, 3DGS .ply or .splat file")
    render.add_argument("--data", metavar="DATA", required=True,
                        help="data set folder giving the cameras (and images to compare)")
    render.add_argument("--split", default="test", help="split to render (default test)")
    render.add_argument("-o", "--output", metavar="DIR", required=True, help="folder for the renders")
    render.add_argument("--downscale", type=positive_int, help="shrink images by this factor (default: as trained)")
    render.add_argument("--background", type=_color, help="white, black or R,G,B (default: as trained)")
    render.add_argument("--backend", choices=BACKENDS, default="auto", help="rasterizer backend (default auto)")
    render.add_argument("--device", default="auto", help=DEVICE_HELP)
    render.add_argument("--lpips-weights", nargs="+", metavar="FILE", default=(), help=LPIPS_HELP)
    render.set_defaults(func=_render)


def _train(args: argparse.Namespace) -> int:
    from mapforge.splat.trainer import train_path

    config = SplatConfig(
        iterations=args.iterations or SplatConfig.iterations,
        minutes=args.minutes,
        sh_degree=args.sh_degree,
        init_random_points=args.random_points,
        densify=DensifyConfig(max_gaussians=args.max_gaussians),
        density_control=not args.no_densify,
        optimize_poses=args.optimize_poses,
        background=args.background,
        backend=args.backend,
        device=args.device,
        seed=args.seed,
        lpips_weights=tuple(args.lpips_weights),
        init=args.init or "",
    )
    result = train_path(args.data, config, args.output, downscale=args.downscale, resume=args.resume)
    print(f"{result.summary(str(result.metrics['num_gaussians']) + ' Gaussians')}; wrote {args.output}")
    return 0


def _render(args: argparse.Namespace) -> int:
    from mapforge.splat.evaluate import render_model
    from mapforge.training.evaluation import quality_text

    metrics = render_model(args.model, args.data, args.output, args.split, args.downscale, args.background,
                           args.backend, args.device, args.lpips_weights)
    print(f"rendered to {args.output}: {quality_text(metrics)}")
    return 0
