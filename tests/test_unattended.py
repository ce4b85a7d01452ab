"""The CLI run unattended: stderr piped into a reader that leaves or written to a full disk, SIGTERM at any moment,
logs read later and ASCII-only streams."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from caex.cli.main import main


def _unwritable(where: str) -> int:
    """A file descriptor that takes no more writes: the write end of a pipe whose reader left, as ``| head -1`` leaves
    it, or /dev/full, a full disk (the test is skipped without one)."""
    if where == "closed pipe":
        read, write = os.pipe()
        os.close(read)
        return write
    if not Path(where).exists():
        pytest.skip(f"no {where} here")
    return os.open(where, os.O_WRONLY)


@pytest.mark.parametrize("stderr", ["closed pipe", "/dev/full"])
def test_a_stderr_that_is_gone_loses_the_messages_not_the_work(monkeypatch, stderr: str) -> None:
    """`caex train ... 2>&1 >out | head -1` stopped training at its second progress line, exit 1 and no word:
    the progress bar let EPIPE through, and the CLI took it for stdout's reader leaving. A log on a full disk
    stopped the command at its next message."""
    import caex.cli.data
    from caex.utils.progress import progress

    monkeypatch.setenv("TQDM_MININTERVAL", "0")
    done = []

    def work(args) -> int:
        print("loading the data", file=sys.stderr)
        for step in progress(range(5), desc="work"):
            done.append(step)
        print("saving", file=sys.stderr)
        return 0

    monkeypatch.setattr(caex.cli.data, "run_show", work)
    with open(_unwritable(stderr), "w", buffering=1) as stream:  # line-buffered, as sys.stderr
        monkeypatch.setattr(sys, "stderr", stream)
        assert main(["data", "show", "synthetic", "--out", "unused.png"]) == 0
    assert done == [0, 1, 2, 3, 4]


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_sigterm_that_python_ignored_in_a_destructor_still_stops_the_command(monkeypatch, capsys) -> None:
    """SIGTERM's Terminated, raised inside a __del__ or a weakref callback, was printed as "Exception ignored" and
    lost: the command went on and exited 0 (1 in 9 timed kills of `caex manifold`)."""
    import caex.cli.data

    class SignalledWhileCollected:
        def __del__(self) -> None:
            signal.raise_signal(signal.SIGTERM)

    def work(args) -> int:
        SignalledWhileCollected()  # dropped at once: its __del__ receives the SIGTERM
        return 0

    monkeypatch.setattr(caex.cli.data, "run_show", work)
    assert main(["data", "show", "synthetic", "--out", "unused.png"]) == 143
    assert capsys.readouterr().err.splitlines()[-1] == "caex data show: stopped by SIGTERM"


@pytest.mark.slow
@pytest.mark.parametrize(("stdout", "status", "message"), [
    ("closed pipe", 1, ""),  # `caex --version | true`: quietly, as every command
    ("/dev/full", 2, "caex: error: stdout: No space left on device\n"),
])
def test_version_to_a_stdout_that_cannot_take_it_is_no_traceback(stdout: str, status: int, message: str) -> None:
    """The fast --version path ran before the CLI handles output errors: both printed a traceback."""
    fd = _unwritable(stdout)
    try:
        done = subprocess.run([sys.executable, "-m", "caex", "--version"], stdout=fd, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(fd)
    assert (done.returncode, done.stderr) == (status, message)


@pytest.mark.slow
@pytest.mark.parametrize("stderr", ["closed pipe", "/dev/full"])
def test_an_error_line_that_stderr_cannot_take_leaves_the_commands_exit_status(stderr: str, tmp_path: Path) -> None:
    """A full disk failed the closing error line too, for a traceback that went nowhere and status 1: lost there as
    to a reader that left, the line leaves the error's status, 2."""
    fd = _unwritable(stderr)
    try:
        done = subprocess.run([sys.executable, "-m", "caex", "data", "show", "no/such/folder", "--out", "g.png"],
                              stdout=subprocess.PIPE, stderr=fd, text=True, timeout=120, cwd=tmp_path)
    finally:
        os.close(fd)
    assert (done.returncode, done.stdout) == (2, "")


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("stream", "before"), [(io.StringIO, ""), (_Terminal, "\n")])
def test_the_training_stop_notice_ends_a_terminals_bar_but_leaves_no_blank_line_in_a_log(
        monkeypatch, stream: type[io.StringIO], before: str) -> None:
    """The notice began with a line end in a log too, where every progress line already ends with one."""
    from caex.training.stopping import StopRequest

    monkeypatch.setattr(sys, "stderr", stream())
    StopRequest()(signal.SIGTERM, None)
    assert sys.stderr.getvalue() == before + "SIGTERM: stopping within a few iterations, checkpoint first\n"


def test_ascii_only_stdout_and_stderr_replace_the_same_characters_alike(monkeypatch) -> None:
    """Under PYTHONIOENCODING=ascii stdout showed '?' but stderr (backslashreplace, its default) '\\u2026'."""
    from caex.cli.main import _replace_unencodable

    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="ascii", errors=errors)
               for name, errors in (("stdout", "strict"), ("stderr", "backslashreplace"))}
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    _replace_unencodable()
    for stream in streams.values():
        stream.write("50 \u2026 \u2191\n")
        stream.flush()
    assert [stream.buffer.getvalue() for stream in streams.values()] == [b"50 ? ?\n", b"50 ? ?\n"]


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_a_command_started_without_stdout_or_stderr_does_its_work(tmp_path, monkeypatch, stream: str) -> None:
    """`caex explain ... >&-` wrote its files, then ended in "unexpected error: AttributeError: 'NoneType' object
    has no attribute 'flush'" with exit 1."""
    monkeypatch.setattr(sys, stream, None)  # what Python gives a process started with that stream closed
    out = tmp_path / "grid.png"
    assert main(["data", "show", "synthetic:classes=2,per_class=4", "--size", "32", "--out", str(out)]) == 0
    assert out.is_file()
    getattr(sys, stream).close()  # the devnull file caex opened in its place
