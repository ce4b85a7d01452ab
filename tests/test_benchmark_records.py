"""The benchmark figures files and the documents that cite them stay in step, and no rerun overwrites one."""

from __future__ import annotations

import fnmatch
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), BENCHMARKS / "README.md"]


def _patterns(text: str) -> set[str]:
    """``bench_*.json`` names in backticks or prose, placeholders (``<N>``, ``…``) read as wildcards."""
    names = re.findall(r"[\w*?<>…\[\]-]*bench_[\w*?<>…\[\]-]*\.json", text)
    return {re.sub(r"<[^>]*>|…", "*", name).replace("[", "").replace("]", "") for name in names}


def _files() -> list[str]:
    return sorted(path.name for path in BENCHMARKS.glob("*.json"))


def test_every_figures_file_is_listed_in_the_benchmarks_index() -> None:
    listed = _patterns((BENCHMARKS / "README.md").read_text(encoding="utf-8"))
    unlisted = [name for name in _files() if not any(fnmatch.fnmatchcase(name, pattern) for pattern in listed)]
    assert not unlisted, f"benchmarks/README.md does not say what these are: {unlisted}"


@pytest.mark.parametrize("document", DOCS, ids=lambda path: path.name)
def test_every_cited_figures_file_exists(document: Path) -> None:
    files = _files()
    missing = sorted(pattern for pattern in _patterns(document.read_text(encoding="utf-8"))
                     if not any(fnmatch.fnmatchcase(name, pattern) for name in files))
    assert not missing, f"{document.name} cites figures files that benchmarks/ lacks: {missing}"


@pytest.mark.slow
def test_a_benchmark_refuses_to_overwrite_a_record_before_working(tmp_path: Path) -> None:
    record = tmp_path / "bench_manifold_old.json"
    record.write_text("{}")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "bench_manifold.py"), "--json", str(record),
                           "--cae-run", str(tmp_path / "nowhere")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and record.read_text() == "{}"
    assert f"{record} exists (a recorded result, see benchmarks/README.md)" in done.stderr
    assert "pass --replace" in done.stderr and not (tmp_path / "nowhere").exists()
