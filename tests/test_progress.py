"""Progress bars in a batch job's log: plain lines at an interval, silenced on request."""

from __future__ import annotations

import errno
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
    lines = _run_bar(monkeypatch).splitlines()
    assert "\r" not in "".join(lines)
    assert len(lines) == 2  # the start, then the end: well within LOG_INTERVAL seconds
    assert lines[0].startswith("train CAE:   0%") and lines[1].startswith("train CAE: 100%")
    assert lines[1].endswith("loss=0.5]")  # the last postfix, drawn with the last update


def test_tqdm_disable_silences_every_bar(monkeypatch) -> None:
    assert _run_bar(monkeypatch, TQDM_DISABLE="1") == ""


@pytest.mark.parametrize("error", [BrokenPipeError(errno.EPIPE, "Broken pipe"), OSError(errno.EIO, "I/O error")])
def test_a_log_that_cannot_be_written_ends_the_bar_not_the_loop(monkeypatch, error: OSError) -> None:
    """`2>&1 | head -1`: the reader's leaving (EPIPE) stopped any long command at its next progress line."""
    attempts = []

    class Gone(io.StringIO):
        def write(self, text: str) -> int:
            attempts.append(text)
            raise error

    monkeypatch.setattr(sys, "stderr", Gone())
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    assert list(progress(range(5), desc="explain")) == [0, 1, 2, 3, 4]
    assert len(attempts) == 1  # the bar's first line; then none


@pytest.mark.parametrize(("env", "interval"), [({}, 30.0), ({"TQDM_MININTERVAL": "45"}, 45.0)])
def test_a_log_gets_no_line_between_two_intervals(monkeypatch, env: dict[str, str], interval: float) -> None:
    """tqdm's monitor thread redrew a bar not drawn for maxinterval (10 s), so a log had lines every 10 s, half of
    them stale, where one every 30 s was asked for."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    with progress(total=3, desc="train CAE") as bar:
        assert (bar.mininterval, bar.maxinterval) == (interval, interval)
