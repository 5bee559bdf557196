"""`mapforge view OUT [--port P] [--host 127.0.0.1]`: the run's web viewer."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import port


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view", help="open a run in the web viewer (cameras, points, Gaussian splats)",
        description="Serve a local web page showing a run folder: camera frustums with their photos, sparse and "
        "dense points, the trained Gaussian splats, and any registered view to look through.",
    )
    parser.add_argument("run", metavar="OUT", help="run folder written by `mapforge run`")
    parser.add_argument("--port", type=port, default=8080, help="port to serve on (default 8080; the next free one "
                        "is used when it is busy; 0 for any free port)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; "
                        "0.0.0.0 shares the viewer with the network)")
    parser.set_defaults(func=_view)


def _view(args: argparse.Namespace) -> int:
    from mapforge.viewer import serve

    try:
        serve(args.run, host=args.host, port=args.port)
    except KeyboardInterrupt:
        print("viewer stopped")
    return 0
