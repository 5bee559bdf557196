"""The options `splat train` and `nerf train` share, with one spelling and one meaning (see `mapforge.training`)."""

from __future__ import annotations

import argparse

from mapforge.cli.arguments import non_negative_int, positive_float, positive_int

LPIPS_HELP = ("also measure LPIPS on the test views: one combined weights file, or the AlexNet and the lpips linear "
              "weights files (mapforge downloads nothing)")
DEVICE_HELP = "torch device (default auto: cuda if available, else cpu)"


def add_training_options(train: argparse.ArgumentParser, iterations_help: str) -> None:
    """DATA, -o OUT, the budget (--iterations or --minutes), --downscale, --resume, --lpips-weights, --device and
    --seed."""
    train.add_argument("data", metavar="DATA", help="data set folder (or transforms.json)")
    train.add_argument("-o", "--output", metavar="OUT", required=True, help="output folder")
    length = train.add_mutually_exclusive_group()
    length.add_argument("--iterations", type=positive_int, help=iterations_help)
    length.add_argument("--minutes", type=positive_float,
                        help="training-time budget in minutes: the schedule is laid over it and training stops "
                        "when it is spent")
    train.add_argument("--downscale", type=positive_int, default=1, help="shrink images by this factor (default 1)")
    train.add_argument("--resume", action="store_true", help="continue from the checkpoint in OUT if there is one")
    train.add_argument("--lpips-weights", nargs="+", metavar="FILE", default=(), help=LPIPS_HELP)
    train.add_argument("--device", default="auto", help=DEVICE_HELP)
    train.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
