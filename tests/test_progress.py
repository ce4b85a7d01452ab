"""Progress bars in a batch job's log: plain lines at an interval, silenced on request."""

from __future__ import annotations

import errno
import io
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest
from tqdm import std as tqdm_std
from tqdm.std import TMonitor

from caex.utils.progress import _Bar, _Lines, progress


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


def test_a_second_bar_at_once_writes_plain_lines_to_a_log(monkeypatch) -> None:
    """Bars of several threads at once: the lower one's cursor-up codes made lines of '\x1b[A' alone in a log."""
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress(total=2, desc="first") as first, progress(total=2, desc="second") as second:
        second.update(2)
        first.update(2)
    lines = log.getvalue().splitlines()
    assert "\x1b" not in log.getvalue() and all(line.strip() for line in lines)
    assert {line.split(":")[0] for line in lines} == {"first", "second"}


def test_tqdm_disable_silences_every_bar(monkeypatch) -> None:
    assert _run_bar(monkeypatch, TQDM_DISABLE="1") == ""


class _Unwritable(io.StringIO):
    """A stderr whose every write fails with ``error``; it counts the attempts."""

    def __init__(self, error: OSError) -> None:
        super().__init__()
        self.error = error
        self.attempts = 0

    def write(self, text: str) -> int:
        self.attempts += 1
        raise self.error


@pytest.mark.parametrize("error", [BrokenPipeError(errno.EPIPE, "Broken pipe"), OSError(errno.EIO, "I/O error"),
                                   OSError(errno.ENOSPC, "No space left on device"),
                                   OSError(errno.EDQUOT, "Disk quota exceeded"),
                                   OSError(errno.EBADF, "Bad file descriptor")])  # 2>&- through a wrapper script
def test_a_log_that_cannot_be_written_ends_the_bar_not_the_loop(monkeypatch, error: OSError) -> None:
    """`2>&1 | head -1`: the reader's leaving (EPIPE) stopped any long command at its next progress line."""
    stderr = _Unwritable(error)
    monkeypatch.setattr(sys, "stderr", stderr)
    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    assert list(progress(range(5), desc="explain")) == [0, 1, 2, 3, 4]
    assert stderr.attempts == 1  # the bar's first line; then none


def test_a_log_error_of_another_kind_is_raised_not_hidden() -> None:
    """The bar ended quietly on any OSError, a bug (an invalid write) as much as a reader that left. (Written to
    directly: raised inside tqdm, the error would leave tqdm's lock held, and the next test's bars waiting on it.)"""
    lines = _Lines(_Unwritable(OSError(errno.EINVAL, "Invalid argument")))
    with pytest.raises(OSError, match=r"^\[Errno 22\] Invalid argument$"):
        lines.write("\rexplain:  40%")


class _Clock:
    """tqdm's clock, and the event its monitor thread sleeps on for 10 s between two checks of the bars: both moved
    on by the test, so that a minute of a bar's life takes no time."""

    def __init__(self) -> None:
        self.now = time.time()  # never behind: a monitor of another test's bars must find this bar drawn just now
        self._stopped = False
        self._first_sleep = True
        self._woken = threading.Semaphore(0)
        self._asleep = threading.Semaphore(0)

    def __call__(self) -> float:
        return self.now

    def check_bars(self) -> None:
        """Let the monitor check the bars, as it does every 10 s, and wait until it has."""
        self._woken.release()
        assert self._asleep.acquire(timeout=60), "tqdm's monitor thread did not check the bars"

    # the monitor's side: its threading.Event
    def wait(self, timeout: float) -> None:
        if not self._first_sleep:
            self._asleep.release()
        self._first_sleep = False
        self._woken.acquire()

    def is_set(self) -> bool:
        return self._stopped

    def set(self) -> None:
        self._stopped = True
        self._woken.release()


@pytest.fixture
def clock(monkeypatch) -> Iterator[_Clock]:
    """The clock of every bar and of a monitor thread started for the test's first bar."""
    clock = _Clock()
    monkeypatch.setattr(tqdm_std, "time", clock)
    monkeypatch.setitem(TMonitor._test, "time", clock)
    monkeypatch.setitem(TMonitor._test, "Event", lambda: clock)
    monkeypatch.setattr(_Bar, "monitor_interval", 10)  # tqdm's default, whatever earlier tests did to it
    monkeypatch.setattr(_Bar, "monitor", None)
    yield clock
    if _Bar.monitor is not None:
        _Bar.monitor.exit()


@pytest.mark.parametrize(("env", "printed"), [({}, [0, 30, 60, 90, 100]),
                                              ({"TQDM_MININTERVAL": "45"}, [0, 45, 90, 100])])
def test_a_log_gets_no_line_between_two_intervals(monkeypatch, clock: _Clock, env: dict[str, str],
                                                  printed: list[int]) -> None:
    """tqdm's monitor thread redrew a bar not drawn for maxinterval (10 s), so a log had lines every 10 s, half of
    them stale, where one every 30 s was asked for."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    with progress(total=100, desc="train CAE") as bar:  # one step a second
        for second in range(1, 101):
            clock.now += 1
            bar.update(1)
            if second % 10 == 0:
                clock.check_bars()
    assert [int(re.search(r" (\d+)/100 ", line)[1]) for line in log.getvalue().splitlines()] == printed


@pytest.mark.slow
def test_a_bar_leaves_the_start_method_to_the_caller() -> None:
    """tqdm's lock fixed multiprocessing's start method, even for a silent bar inside train_classifier, so a
    caller's later ``set_start_method("spawn")`` raised "context has already been set"; and a lock caex gave tqdm
    from the default (fork) context broke the caller's spawn process_map ("A SemLock created in a fork context")."""
    code = ("import multiprocessing as mp\n"
            "from tqdm.contrib.concurrent import process_map\n"
            "from caex.utils.progress import progress\n"
            "for _ in progress(range(3), desc='x', enabled=False): pass\n"
            "print(mp.get_start_method(allow_none=True))\n"
            "mp.set_start_method('spawn'); print(mp.get_start_method())\n"
            "print(process_map(abs, [-1, -2], max_workers=1, disable=True))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "None\nspawn\n[1, 2]\n"), done.stderr
