"""`mapforge model convert|info`: COLMAP's model converter and analyzer."""

from __future__ import annotations

import argparse

from mapforge.analysis import model_statistics
from mapforge.io.colmap import read_model
from mapforge.io.convert import FORMATS, convert_model


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("model", help="inspect and convert COLMAP models")
    commands = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)

    convert = commands.add_parser("convert", help="convert a model between COLMAP binary, text and PLY points")
    convert.add_argument("input", help="COLMAP model folder (binary or text)")
    convert.add_argument("output", help="output folder (bin, txt) or .ply file (ply)")
    convert.add_argument("--format", required=True, choices=FORMATS, help="output format")
    convert.set_defaults(func=_convert)

    info = commands.add_parser("info", help="counts, track lengths and reprojection error of a model")
    info.add_argument("input", help="COLMAP model folder (binary or text)")
    info.set_defaults(func=_info)


def _convert(args: argparse.Namespace) -> int:
    out = convert_model(args.input, args.output, args.format)
    print(f"wrote {out}")
    return 0


def _info(args: argparse.Namespace) -> int:
    print(model_statistics(read_model(args.input)).summary())
    return 0
