"""caex passes mypy: it ships ``py.typed``, so its annotations are what users' type checkers read."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_caex_passes_mypy() -> None:
    """``python -m mypy`` from the repository root, with pyproject.toml's [tool.mypy] settings (about 20 s)."""
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed: pip install -e '.[test]' installs the version the project pins")
    result = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
