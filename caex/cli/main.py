"""Entry point of the ``caex`` command.

Each sub-command lives in its own module under ``caex.cli`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a function
taking the parsed arguments. This module owns only the error policy: user
errors (:class:`caex.errors.CaexError`, and file-system errors that name a
path, such as an output folder under a file or a full disk) become one line
and exit 2; a dependency that does not import (even for ``--help``, as the
commands' parsers import torch) becomes one line naming it, and exit 1;
unexpected errors become one line too, and exit 1, with ``--debug`` for the
traceback.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import contextvars
import importlib
import itertools
import os
import re
import select
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import NoReturn, TextIO

from caex import __version__
from caex.errors import CaexError, Interrupted, OtherRankFailed, Terminated
from caex.streams import BestEffortStream

VERSION = f"caex {__version__}"

#: What an interrupted command keeps and how to continue, for the commands that pick up where they stopped.
RESUME_HINTS = {"train": ("finished checkpoints are kept", "rerun with --resume to continue"),
                "demo": ("finished stages are kept", "rerun the same command to continue"),
                "explain": ("finished explanations are kept", "rerun with --skip-done to explain the rest")}

# Order is the order shown in ``caex --help``: the pipeline, front door first.
COMMAND_MODULES = [
    "demo",
    "data",
    "train_classifier",
    "train",
    "explain",
    "manifold",
    "evaluate",
    "report",
]


class _OneLineErrors(argparse.ArgumentParser):
    """argparse's errors as one line naming the command (its default prints the whole usage block first)."""

    def error(self, message: str) -> NoReturn:
        needs_value = re.fullmatch(r"argument (?:\S+/)?(\S+): expected one argument", message)
        if needs_value and self._value_read_as_a_flag(needs_value[1]):  # -1e-3 is no number to argparse
            message += f"; a value that starts with '-' is given as {needs_value[1]}=VALUE"
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def _value_read_as_a_flag(self, flag: str) -> bool:
        """Whether ``flag`` (or an abbreviation of it) was followed by something that starts with '-' and names
        no option of the command: a value, not a value left out before the next flag."""
        typed = _TYPED.get()
        return any((token == flag or (token.startswith("--") and flag.startswith(token)))
                   and following.startswith("-") and not self._names_an_option(following)
                   for token, following in itertools.pairwise(typed))

    def _names_an_option(self, token: str) -> bool:
        name = token.split("=", 1)[0]
        return name != "-" and any(option.startswith(name) for option in self._option_string_actions)


#: The command line being parsed (set by :func:`_parse`), for what argparse's messages leave out.
_TYPED: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar("caex_typed", default=())


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineErrors(
        prog="caex",
        description="Explain image classifiers with Class Association Embedding (CAE).",
    )
    parser.add_argument("--version", action="version", version=VERSION)
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f"caex.cli.{name}").register(subparsers)
    _finish_commands(subparsers)
    return parser


def _finish_commands(subparsers: argparse._SubParsersAction) -> None:
    """Every command and sub-command accepts ``--debug`` after it too (``caex data show ... --debug``), as its error
    message suggests, and records its ``prog`` ("caex data show"), which the command's errors and warnings name as
    its usage errors do, and its parser, which refuses the arguments no parser knew."""
    for command in subparsers.choices.values():
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show full tracebacks on errors")
        command.set_defaults(prog=command.prog, command_parser=command)  # the innermost sub-command's win
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):
                _finish_commands(action)


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[Callable[[], bool]]:
    """While a command runs, SIGTERM raises :class:`Terminated` (training installs its own graceful handler
    inside, and puts this one back). Yields a test of whether SIGTERM came: raised inside a ``__del__`` or a
    weakref callback, Terminated is printed as "Exception ignored" and lost, and the command went on to exit 0."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield lambda: False
        return
    received: list[int] = []

    def terminate(signum: int, frame: object) -> None:
        received.append(signum)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield lambda: bool(received)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _resume_hint(args: argparse.Namespace) -> tuple[str, str] | None:
    """What to say about resuming an interrupted command: for ``train`` only once a checkpoint exists, for
    ``explain`` once an explanation is written."""
    from caex.training.checkpoint import CHECKPOINT_FILE

    if args.command == "train" and not (Path(args.out) / CHECKPOINT_FILE).is_file():
        return None
    if args.command == "explain" and not any(Path(args.out).glob("*.json")):
        return None
    return RESUME_HINTS.get(args.command)


def main(argv: Sequence[str] | None = None) -> int:
    _open_closed_streams()
    with _stream_errors_kept():
        _replace_unencodable()
        # from the first moment: SIGTERM while torch imported ended it without a word
        with _sigterm_as_interrupt() as sigterm_received, _stderr_best_effort():
            return _run(argv, sigterm_received)


@contextlib.contextmanager
def _stream_errors_kept() -> Iterator[None]:
    """The streams' error handlers a command sets for itself are put back when it ends, for a notebook or a test
    that calls :func:`main` in its own process (as ``--threads`` is, by the command); the ``caex`` command's
    process ends anyway."""
    streams = [(stream, stream.errors) for stream in (sys.stdout, sys.stderr)
               if isinstance(getattr(stream, "errors", None), str) and hasattr(stream, "reconfigure")]
    try:
        yield
    finally:
        for stream, errors in streams:
            with contextlib.suppress(OSError, ValueError):  # a stream the command found gone or closed
                stream.reconfigure(errors=errors)


def _open_closed_streams() -> None:
    """A command started with ``>&-`` or ``2>&-`` has no stdout or stderr (Python sets them to None): what it would
    write there is lost, as to a reader that left, where it ended in "unexpected error: AttributeError" after the
    work was done."""
    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process


def _replace_unencodable() -> None:
    """Let an ASCII-only terminal or pipe (``LC_ALL=C``) show '?' for '↑' or '±' instead of failing the command
    after its work is done. Undecodable bytes of file names (which the C locale's surrogateescape carries) still
    come out as they were, so a script can read the paths back. stderr's default, backslashreplace, is replaced
    too, so that both streams show the same text."""
    for stream in (sys.stdout, sys.stderr):
        if (getattr(stream, "errors", None) in ("strict", "surrogateescape", "backslashreplace")
                and hasattr(stream, "reconfigure")):
            stream.reconfigure(errors=_ESCAPE_OR_REPLACE)


def _escape_or_replace(error: UnicodeError) -> tuple[bytes, int]:
    """Each character the encoding cannot take: a file name's undecodable byte (the surrogate that carries it)
    as that byte, anything else as '?'."""
    if not isinstance(error, UnicodeEncodeError):
        raise error
    return bytes(ord(char) - 0xDC00 if 0xDC80 <= ord(char) <= 0xDCFF else ord("?")
                 for char in error.object[error.start:error.end]), error.end


_ESCAPE_OR_REPLACE = "caex.escape_or_replace"
codecs.register_error(_ESCAPE_OR_REPLACE, _escape_or_replace)


def _stdout_closed() -> bool:
    """Whether stdout's reader has gone (``| head``), as opposed to another pipe the command wrote to: the write
    end of a pipe without a reader polls as an error. Where poll() does not exist (Windows), assumed so."""
    if not hasattr(select, "poll"):
        return True
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError, AttributeError):  # no file descriptor: a test's captured stdout
        return False
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


def _quiet_broken_pipe() -> int:
    """``caex ... | head -1``: the reader left, so the rest of the output has nowhere to go."""
    _to_devnull(sys.stdout)
    return 1


def _to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at devnull, so that what it still holds and what it is given next are
    dropped, and (as the Python docs advise for a closed pipe) the interpreter's last flush does not fail at exit
    and turn the exit status into 120."""
    with contextlib.suppress(OSError, ValueError):  # no file descriptor (a test's captured stream)
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


@contextlib.contextmanager
def _stderr_best_effort() -> Iterator[None]:
    """While a command runs, stderr is a :class:`BestEffortStream`: its ``print(..., file=sys.stderr)`` lines,
    warnings and progress bars alike. Once gone, it is pointed at devnull as the command ends, so that what a failed
    write left in its buffer (a line without its end) is dropped, not flushed at exit into another error that turns
    the exit status into 1."""
    stderr = sys.stderr
    sys.stderr = best_effort = BestEffortStream(stderr)
    try:
        yield
    finally:
        sys.stderr = stderr
        if best_effort.gone:
            _to_devnull(stderr)


def _asks_for_version(argv: Sequence[str]) -> bool:
    """Whether argparse would print the version first: ``caex --version``, maybe after ``--debug``. Answered before
    the parser is built, as the commands' choices import torch (seconds)."""
    first = next((arg for arg in argv if arg != "--debug"), None)
    return first == "--version"


def _run(argv: Sequence[str] | None, sigterm_received: Callable[[], bool]) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _asks_for_version(argv):
        try:
            print(VERSION, flush=True)
        except OSError as exc:  # `caex --version | true`, `> /dev/full`: as for every command
            return _output_failed("caex", exc, "stdout")
        sys.exit(0)  # as argparse's --version ends the program
    try:
        parser = build_parser()  # imports torch: seconds in which Ctrl-C must not show a traceback either
        args = _parse(parser, argv)
    except SystemExit as exc:  # a usage error, already printed as one line: its status, as for every error
        if not exc.code:
            raise  # --help and --version end the program as argparse means them to
        return int(exc.code)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, Terminated)
        print(f"caex: {'stopped by SIGTERM' if terminated else 'interrupted'}", file=sys.stderr)
        return 143 if terminated else 130
    except ImportError as exc:
        if "--debug" in argv:
            raise
        return _missing_dependency("caex", exc)
    if args.command is None:  # a usage error: its help goes where errors go, and stdout stays for results
        parser.print_help(sys.stderr)
        return 2
    from caex.utils.device import torchrun_rank  # imports torch: not at the top, before Ctrl-C is caught

    rank = torchrun_rank()
    if rank is not None and args.command != "train":  # N copies would race for one output folder
        if rank == 0:
            print(f"{args.prog}: error: runs as one process; of the commands only `caex train` runs "
                  "under torchrun (start this one without it)", file=sys.stderr)
        return 2
    default_format = warnings.formatwarning
    warnings.formatwarning = lambda message, *_args, **_kwargs: f"{args.prog}: warning: {message}\n"
    try:
        from caex.cli.common import threads_set

        with threads_set(getattr(args, "threads", None)):  # before any work, in every command that takes it
            result = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, where it is handled, not at the interpreter's exit
    except BrokenPipeError as exc:
        return _output_failed(args.prog, exc)
    except (Interrupted, OtherRankFailed) as exc:
        # under torchrun the rank that failed says why, once for the job; the others end silently
        if rank or isinstance(exc, OtherRankFailed):
            return exc.exit_code
        # stopped on request, progress saved: not an error of the user's
        _, action = RESUME_HINTS.get(args.command, (None, None))
        _last_line(f"{args.prog}: {exc}" + (f" ({action})" if action else ""))
        return exc.exit_code
    except CaexError as exc:
        if args.debug:
            raise
        _last_line(f"{args.prog}: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return _stopped(args, isinstance(exc, Terminated))
    except Warning as exc:  # a caex warning turned error (PYTHONWARNINGS=error, -W error): the user asked for it
        if args.debug:
            raise
        _last_line(f"{args.prog}: error: {exc}")
        return 2
    except ImportError as exc:  # captum, say, imported on first use
        if args.debug:
            raise
        return _missing_dependency(args.prog, exc)
    except Exception as exc:  # the CLI never shows a raw traceback
        if args.debug:
            raise
        if isinstance(exc, OSError) and exc.filename is not None:
            # an output folder under a file, a full disk, no permission: the user's to fix, so one line
            _last_line(f"{args.prog}: error: {exc.filename}: {exc.strerror or exc}")
            return 2
        if rank and "closed by peer" in str(exc):  # gloo's word for a rank that left: its own line says why
            _last_line(f"{args.prog}: rank {rank} stopped: another process of the job ended (see its "
                       "message)")
            return 1
        _last_line(f"{args.prog}: unexpected error: {type(exc).__name__}: {exc} "
                   "(rerun with --debug for the traceback)")
        return 1
    finally:
        warnings.formatwarning = default_format  # one-line warnings for the command only, not its callers
    if sigterm_received():  # its Terminated was raised where Python ignores exceptions, and the command went on
        return _stopped(args, terminated=True)
    return int(result or 0)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    """``parser.parse_args``, but with arguments no parser knew refused by the (sub-)command they were given to:
    argparse's own refusal named ``caex`` and its help, where ``caex explain --help`` lists the options."""
    _TYPED.set(tuple(argv))
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        argv = list(argv)
        command_at = argv.index(args.command) if args.command in argv else len(argv)
        before = [token for token in unknown if token in argv[:command_at]]  # `caex --bogus data show ...`
        if before:
            parser.error(f"unrecognized arguments: {' '.join(before)}")
        getattr(args, "command_parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def _missing_dependency(prog: str, exc: ImportError) -> int:
    """One line for a dependency that does not import (uninstalled since, a broken environment): it is the user's
    to fix by reinstalling, where a traceback came, even for ``caex --help``, or an "unexpected error"."""
    _last_line(f"{prog}: error: cannot import {exc.name or 'a dependency'} ({exc}); reinstall caex with its "
               "dependencies: pip install -e . (in caex's source folder)")
    return 1


def _stopped(args: argparse.Namespace, terminated: bool) -> int:
    """The line and exit status of a command that Ctrl-C (or SIGTERM, if ``terminated``) stopped."""
    hint = _resume_hint(args)
    stopped = "stopped by SIGTERM" if terminated else "interrupted"
    _last_line(f"{args.prog}: {stopped}" + (f" ({'; '.join(hint)})" if hint else ""))
    return 143 if terminated else 130


def _output_failed(prog: str, exc: OSError, where: str = "a pipe") -> int:
    """A write to ``where`` failed: quietly where stdout's reader left (``| head``), else one line."""
    if isinstance(exc, BrokenPipeError) and _stdout_closed():
        return _quiet_broken_pipe()
    _last_line(f"{prog}: error: {exc.filename or where}: {exc.strerror or exc}")
    return 2


def _last_line(message: str) -> None:
    """Print the command's closing message on a line of its own: a progress bar the error or Ctrl-C left open
    would otherwise carry it at its end (none is, where their module, which imports torch, was never loaded)."""
    progress = sys.modules.get("caex.utils.progress")
    if progress is not None:
        progress.close_bars()
    print(message, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
