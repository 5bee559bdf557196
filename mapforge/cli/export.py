"""`mapforge export OUT --format colmap|nerfstudio|ply|splat|mesh -o DEST [--video]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from mapforge.cli.arguments import positive_int
from mapforge.errors import InputError
from mapforge.export import FORMATS, VideoConfig, export, export_video


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a run's results (COLMAP, nerfstudio, PLY, .splat, mesh) or a fly-through video",
        description="Export a run folder. With --format, DEST is the exported folder (colmap, nerfstudio) or file "
        "(ply, splat: .splat, mesh: .ply). With --video alone, DEST is the .mp4; with both, the video is written "
        "beside DEST with the suffix .mp4.",
    )
    parser.add_argument("run", metavar="OUT", help="run folder written by `mapforge run`")
    parser.add_argument("--format", choices=FORMATS, help="what to export")
    parser.add_argument("-o", "--output", required=True, metavar="DEST", help="destination file or folder")
    parser.add_argument("--text", action="store_true", help="colmap: write the text format instead of binary")
    parser.add_argument("--video", action="store_true", help="also render an .mp4 along the registered cameras")
    parser.add_argument("--frames-per-camera", type=positive_int, default=VideoConfig.frames_per_camera,
                        help=f"video frames between consecutive cameras (default {VideoConfig.frames_per_camera})")
    parser.add_argument("--fps", type=positive_int, default=VideoConfig.fps, help=f"video frame rate (default {VideoConfig.fps})")
    parser.add_argument("--max-size", type=positive_int, default=VideoConfig.max_size,
                        help=f"longest video side in pixels (default {VideoConfig.max_size})")
    parser.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    if args.format is None and not args.video:
        raise InputError("nothing to export: give --format and/or --video")
    dest = Path(args.output)
    if args.format is not None:
        path, what = export(args.run, args.format, dest, text=args.text)
        print(f"wrote {path}: {what}")
    if args.video:
        video = dest if args.format is None else dest.with_name(dest.stem + ".mp4")
        config = VideoConfig(frames_per_camera=args.frames_per_camera, fps=args.fps, max_size=args.max_size)
        path, what = export_video(args.run, video, config)
        print(f"wrote {path}: {what}")
    return 0
