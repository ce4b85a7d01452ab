"""The CLI run unattended: stderr piped into a reader that leaves, SIGTERM at any moment, logs read later and
ASCII-only streams."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from caex.cli.main import main


def _pipe_without_reader() -> int:
    """The write end of a pipe whose reader left, as ``| head -1`` leaves it."""
    read, write = os.pipe()
    os.close(read)
    return write


def test_a_reader_of_stderr_that_left_loses_the_messages_not_the_work(monkeypatch) -> None:
    """`caex train ... 2>&1 >out | head -1` stopped training at its second progress line, exit 1 and no word:
    the progress bar let EPIPE through, and the CLI took it for stdout's reader leaving."""
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
    with open(_pipe_without_reader(), "w", buffering=1) as stderr:  # line-buffered, as sys.stderr
        monkeypatch.setattr(sys, "stderr", stderr)
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
    if stdout == "/dev/full" and not Path(stdout).exists():
        pytest.skip("no /dev/full here")
    fd = _pipe_without_reader() if stdout == "closed pipe" else os.open(stdout, os.O_WRONLY)
    try:
        done = subprocess.run([sys.executable, "-m", "caex", "--version"], stdout=fd, stderr=subprocess.PIPE,
                              text=True, timeout=120)
    finally:
        os.close(fd)
    assert (done.returncode, done.stderr) == (status, message)


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


def _results(interrupted: bool, has_masks: bool):
    from caex.evaluation.runner import EvaluationResults, MethodResult

    per_class = {"a": 0.1, "b": 0.2}
    return EvaluationResults(
        methods=[MethodResult(name, aopc=0.1, curve=[0.1], aopc_per_class=per_class) for name in ("cae", "random")],
        settings={"patch": 7, "n_images": 4, "data": "synthetic", "seed": 0, "classifier": "c", "n_patches": 2,
                  "covered_share_max": 0.5, "image_size": 8, "fill": "uniform", "batch_size": 2, "device": "cpu",
                  "has_masks": has_masks, "interrupted": interrupted, "images_per_class": {"a": 2, "b": 2}},
        image_indices=[0, 1, 2, 3], maps={})


@pytest.mark.parametrize(("interrupted", "has_masks", "after_table"), [
    (True, False, ["", "Interrupted: only the methods in the table ran.",
                   "Localisation: the data has no ground-truth masks (—)."]),
    (False, True, []),  # nothing follows: no blank line either
])
def test_the_notes_after_the_per_class_table_are_no_rows_of_it(interrupted: bool, has_masks: bool,
                                                               after_table: list[str]) -> None:
    """They followed the table's last row directly, so Markdown rendered them as more rows."""
    lines = _results(interrupted, has_masks).to_markdown().splitlines()
    assert lines[-len(after_table) - 1] == "| random | 0.100 | 0.200 |"
    assert lines[len(lines) - len(after_table):] == after_table


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
