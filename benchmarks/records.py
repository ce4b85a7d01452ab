"""The benchmarks' figures files are records that the README and docs/ cite (benchmarks/README.md lists
which), so a rerun never replaces one by mistake: an existing file is refused before any work starts."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_replace_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--replace", action="store_true",
                        help="allow writing over an existing figures file (they are records the docs cite)")


def figures_file(parser: argparse.ArgumentParser, path: Path, replace: bool) -> Path:
    """``path`` when it is free to write, or ``--replace`` allows it; otherwise a usage error now, not after
    minutes of benchmarking."""
    if path.exists() and not replace:
        parser.error(f"{path} exists (a recorded result, see benchmarks/README.md): name a new file, "
                     "or pass --replace to write over it")
    return path
