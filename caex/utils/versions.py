"""The software and processor recorded beside results: a seed reproduces weights bit for bit only on the same.

The same torch version on two processors can still train other weights from one seed: oneDNN and
ATen pick kernels by the processor's vector extensions (``cpu_capability``), and those round
differently. Benchmark files and every run's ``summary.json`` record both.
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np
import torch


def software_versions() -> dict[str, str | int]:
    """caex, torch, numpy and Python versions, the processor's model, the vector extensions torch uses and its
    CPU thread count: what, beside the seed, decides the floating-point results of a training run."""
    from caex import __version__

    return {"caex": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "torch_threads": torch.get_num_threads()}


def cpu_model() -> str:
    """The processor's model name (``/proc/cpuinfo`` on Linux, else what :mod:`platform` knows)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else (platform.processor() or platform.machine())
