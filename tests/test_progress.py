"""Progress bars in a batch job's log: plain lines at an interval, silenced on request."""

from __future__ import annotations

import io
import sys

import pytest

from caex.utils.progress import progress


def _run_bar(monkeypatch: pytest.MonkeyPatch, **env: str) -> str:
    log = io.StringIO()  # a file, not a terminal: what SLURM or `2> log` gives
    monkeypatch.setattr(sys, "stderr", log)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    bar = progress(total=50, desc="train CAE")
    for _ in range(50):
        bar.update(1)
        bar.set_postfix(loss="0.5", refresh=False)
    bar.close()
    return log.getvalue()


def test_a_bar_written_to_a_log_is_lines_without_carriage_returns(monkeypatch) -> None:
    """Redrawn with \\r ten times a second, the bar made a log one line of megabytes an hour."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("TQDM_MININTERVAL", raising=False)
    lines = _run_bar(monkeypatch).splitlines()
    assert "\r" not in "".join(lines)
    assert len(lines) == 2  # the start, then the end: well within LOG_INTERVAL seconds
    assert lines[0].startswith("train CAE:   0%") and lines[1].startswith("train CAE: 100%")
    assert lines[1].endswith("loss=0.5]")  # the last postfix, drawn with the last update


def test_tqdm_disable_silences_every_bar(monkeypatch) -> None:
    assert _run_bar(monkeypatch, TQDM_DISABLE="1") == ""
