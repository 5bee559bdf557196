"""`mapforge run` (photos to a scene, resumable) and `mapforge demo` (the same on the built-in scene)."""

from __future__ import annotations

import argparse
from dataclasses import fields

from mapforge.cli.arguments import int_in, non_negative_float, positive_float, positive_int
from mapforge.errors import InputError
from mapforge.run import FEATURES, INITS, METHODS, RunConfig, run, run_demo, summary_text
from mapforge.sfm.features import MIN_IMAGE_SIZE
from mapforge.sfm.pairs import PAIR_METHODS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="photos to a 3D scene: SfM, then Gaussian splatting (or NeRF); resumes an interrupted run",
        description="Each stage writes its own folder under OUT and is skipped when already complete. The options "
        "are saved to OUT/run.toml; `mapforge run --config OUT/run.toml` repeats the run.",
    )
    parser.add_argument("images", nargs="?", help="folder of photos")
    parser.add_argument("-o", "--output", help="output folder")
    parser.add_argument("--config", help="a run.toml written by an earlier run (other options override it)")
    parser.add_argument("--method", choices=METHODS, help="what to train after the poses (default splat)")
    parser.add_argument("--init", choices=INITS, help="poses from SfM or from pointmaps (default sfm)")
    parser.add_argument("--weights", help="DUSt3R/MASt3R checkpoint for --init pointmap")
    parser.add_argument("--dense", action="store_true", default=None, help="also run multi-view stereo")
    parser.add_argument("--intrinsics", help="3x3 K text file or COLMAP cameras.txt")
    parser.add_argument("--camera-model", dest="camera_model", help="camera model for unknown intrinsics")
    parser.add_argument("--features", choices=FEATURES,
                        help="SfM features: sift (default), xfeat, or mast3r (MASt3R matches; needs --weights)")
    parser.add_argument("--matcher", choices=PAIR_METHODS, help="SfM pair selection")
    parser.add_argument("--max-image-size", dest="max_image_size", type=int_in(MIN_IMAGE_SIZE),
                        help="SfM feature image size")
    parser.add_argument("--minutes", type=non_negative_float, help="training budget in minutes (default 5)")
    parser.add_argument("--iterations", type=positive_int, help="training iterations when --minutes is 0")
    parser.add_argument("--downscale", type=positive_int, help="train on images reduced N times")
    parser.add_argument("--ground-truth", dest="ground_truth", help="COLMAP model with true poses to score against")
    parser.add_argument("--overwrite", action="store_true", default=None, help="recompute complete stages")
    parser.set_defaults(func=_run)

    demo = subparsers.add_parser("demo", help="run the whole pipeline on the built-in synthetic scene")
    demo.add_argument("-o", "--output", default="outputs/demo", help="output folder (default outputs/demo)")
    demo.add_argument("--minutes", type=positive_float, default=4.0, help="splat training budget in minutes (default 4)")
    demo.set_defaults(func=_demo)


def _run(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for f in fields(RunConfig) if getattr(args, f.name, None) is not None}
    if args.config:
        values = {k: v for k, v in vars(RunConfig.from_file(args.config)).items()}
        values.update(given)
    else:
        if not args.images or not args.output:
            raise InputError("give IMAGES and -o OUT, or --config FILE")
        values = given
    print(summary_text(run(RunConfig(**values))))
    return 0


def _demo(args: argparse.Namespace) -> int:
    print(summary_text(run_demo(args.output, args.minutes)))
    return 0
