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
        result = args.func(args)
    except MapforgeError as exc:
        print(f"mapforge {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BaseException as exc:
        if not is_interrupt(exc):
            raise
        print(f"mapforge {args.command}: interrupted; finished outputs are kept and a re-run resumes", file=sys.stderr)
        return 130
    return int(result or 0)


def is_interrupt(exc: BaseException) -> bool:
    """Whether `exc` is a Ctrl-C: a KeyboardInterrupt, or an error it caused.

    A Ctrl-C that lands while a numba kernel calls back into Python (to raise or unpickle) comes out of the
    kernel as a SystemError chained to the KeyboardInterrupt.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


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
