"""The `mapforge` command: one subcommand module per stage, argument parsing only.

Each module in `COMMANDS` exposes `register(subparsers)`, which adds its subcommand(s) and sets `func` to a
callable taking the parsed arguments. Logic lives in the stage packages, never here.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from mapforge import __version__
from mapforge.cli.arguments import OneLineParser
from mapforge.errors import MapforgeError
from mapforge.interrupts import keyboard_interrupts

COMMANDS = ["model", "calibrate", "sfm", "mvs", "splat", "nerf", "pointmap", "run", "view", "export"]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="mapforge",
        description="Photographs to 3D maps: SfM, MVS, NeRF, Gaussian splatting and pointmaps, fast on a CPU.",
    )
    parser.add_argument("--version", action="version", version=f"mapforge {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"mapforge.cli.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        with keyboard_interrupts():
            result = args.func(args)
    except MapforgeError as exc:
        print(f"mapforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mapforge {args.command}: interrupted; finished outputs are kept and a re-run resumes", file=sys.stderr)
        return 130
    return int(result or 0)


def entry() -> None:
    """The `mapforge` program: `main` on the command line, then exit with its status."""
    status = main()
    if status == 130:
        # Python's shutdown takes a while with torch loaded; a second Ctrl-C then would kill the process with
        # status -2 (SIGINT) after the one line was printed.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":
    entry()
