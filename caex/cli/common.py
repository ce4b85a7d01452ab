"""Arguments several commands share, so they read the same everywhere."""

from __future__ import annotations

import argparse


def add_data_arguments(parser: argparse.ArgumentParser, *, positional: bool = True) -> None:
    """DATA spec plus the options that shape how it is loaded."""
    if positional:
        parser.add_argument(
            "data",
            metavar="DATA",
            help="data spec: synthetic[:classes=4,per_class=400], mnist[:4,9], digits[:0,1], "
                 "an image folder (root/<class>/*.png, optional train/ test/), or a .npz file",
        )
    parser.add_argument("--size", type=int, default=None, help="image size in pixels (default: the source's own)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=None,
                        help="force 1 (grayscale) or 3 (RGB) channels (default: detected)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip unreadable images with a warning instead of stopping")


def add_seed_argument(parser: argparse.ArgumentParser, default: int = 0) -> None:
    parser.add_argument("--seed", type=int, default=default, help=f"random seed (default: {default})")


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, mps or auto (default: auto)")


def load_data_from_args(args: argparse.Namespace):
    """Load the DATA spec the way every command does."""
    from caex.data import load_dataset

    return load_dataset(args.data, size=args.size, channels=args.channels,
                        seed=getattr(args, "seed", 0), skip_bad=args.skip_bad)
