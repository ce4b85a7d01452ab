"""The software versions recorded beside results: a seed reproduces weights bit for bit only on the same ones."""

from __future__ import annotations

import platform

import numpy as np
import torch


def software_versions() -> dict[str, str]:
    """caex, torch, numpy and Python versions (a newer torch may round differently, so the same seed and
    thread count can train other weights; benchmark files and ``summary.json`` say which versions made them)."""
    from caex import __version__

    return {"caex": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
