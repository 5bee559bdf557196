"""`mapforge calibrate`: a camera's intrinsics from checkerboard photographs, written as COLMAP cameras.txt."""

from __future__ import annotations

import argparse
from pathlib import Path

from mapforge.calibration import CALIBRATION_MODELS, calibrate_checkerboard
from mapforge.cli.arguments import positive_float
from mapforge.errors import InputError


def _pattern(text: str) -> tuple[int, int]:
    try:
        cols, rows = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"pattern must look like 9x6 (inner corners per row x per column), got {text!r}") from None
    return cols, rows


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="calibrate a camera from checkerboard photographs",
        description="Find a checkerboard in each image, fit the camera model and write a COLMAP cameras.txt "
        "(pass it to reconstruction to fix the intrinsics).",
    )
    parser.add_argument("images", nargs="+", help="image files and/or folders of images of the board")
    parser.add_argument("--pattern", type=_pattern, required=True,
                        help="inner corners per row x per column, e.g. 9x6 for a board of 10 x 7 squares")
    parser.add_argument("--square", type=positive_float, required=True, help="side of one square (e.g. 0.025 for 25 mm)")
    parser.add_argument("--model", default="OPENCV", choices=CALIBRATION_MODELS, help="camera model (default OPENCV)")
    parser.add_argument("-o", "--output", default="cameras.txt", help="output cameras.txt (default ./cameras.txt)")
    parser.set_defaults(func=_run)


def _image_files(items: list[str]) -> list[Path]:
    from mapforge.io.images import IMAGE_EXTENSIONS

    files: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            files.extend(sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS))
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"{path} does not exist")
    if not files:
        raise InputError(f"no images found in {', '.join(items)}")
    return files


def _run(args: argparse.Namespace) -> int:
    from mapforge.geometry.cameras import CAMERA_MODELS
    from mapforge.io.colmap import write_cameras_text

    files = _image_files(args.images)
    result = calibrate_checkerboard(files, args.pattern, args.square, args.model, progress=True)
    camera = result.camera
    write_cameras_text({1: camera}, args.output)
    names = CAMERA_MODELS[camera.model].param_names
    print(f"calibrated {camera.model} camera {camera.width}x{camera.height} from {len(result.used)} of {len(files)} "
          f"images: RMS reprojection error {result.rms:.3f} px")
    print("  " + "  ".join(f"{name}={value:.6g}" for name, value in zip(names, camera.params)))
    for name, reason in result.rejected.items():
        print(f"  skipped {name}: {reason}")
    print(f"wrote {args.output}")
    return 0
