"""The helpers every command shares: here, the warning about files an earlier run left in ``--out``."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from caex.cli.common import warn_stale_files
from caex.utils.io import atomic_write_text


def test_files_not_rewritten_are_named_once_and_kept(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for name in ("a.json", "b.json", "old.png", ".DS_Store"):
        atomic_write_text(out / name, name)
    (out / "sub").mkdir()
    with pytest.warns(UserWarning) as caught, warn_stale_files(out):
        atomic_write_text(out / "a.json", "new")
        atomic_write_text(out / "b.json", "b.json")  # the same bytes again: rewritten all the same
        atomic_write_text(out / "c.json", "new")  # new files are this run's
    assert [str(warning.message) for warning in caught] == [
        f"{out} also holds 1 file(s) that this run did not write, e.g. of an earlier run (first: old.png); "
        "use a fresh --out to keep runs apart"]
    assert (out / "old.png").read_text() == "old.png"


def test_a_rewrite_within_the_mtime_granularity_counts_as_rewritten(tmp_path: Path) -> None:
    """A file system that keeps whole seconds (or two) gives a quick rerun's file the same mtime as the old one."""
    path = atomic_write_text(tmp_path / "results.csv", "old")
    old = path.stat().st_mtime_ns
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warn_stale_files(tmp_path):
            atomic_write_text(path, "new")
            os.utime(path, ns=(old, old))


def test_an_out_that_does_not_exist_yet_or_an_error_warns_of_nothing(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "old.png", "old")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with warn_stale_files(tmp_path / "new"):
            atomic_write_text(tmp_path / "new" / "a.json", "new")
        with pytest.raises(KeyboardInterrupt), warn_stale_files(tmp_path):  # the error is the message, not this
            raise KeyboardInterrupt
