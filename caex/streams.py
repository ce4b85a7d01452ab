"""Streams written to on a best-effort basis: a reader that left must not stop the work.

A top-level module, like :mod:`caex.errors`, because the CLI imports it before torch (``caex.utils``' package
imports torch) and :mod:`caex.utils.progress` writes its log lines through it.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any, TextIO


#: A stream's write fails with one of these once nothing more reaches its reader: the reader left (``2>&1 | head
#: -1``, EPIPE), the terminal hung up (EIO) or the disk under the log is full (ENOSPC), or the user's disk quota
#: is (EDQUOT, where the platform has it, on shared clusters' home folders above all); or the descriptor is not
#: open for writing (EBADF: ``caex ... 2>&-`` started through a wrapper script, a pyenv shim or a cluster's module
#: wrapper, left the script itself read-only on descriptor 2).
GONE = frozenset({errno.EPIPE, errno.EIO, errno.ENOSPC, errno.EBADF}
                 | ({errno.EDQUOT} if hasattr(errno, "EDQUOT") else set()))


class BestEffortStream:
    """A stream, stderr above all, written to only as long as it takes the text: once it is gone (:data:`GONE`),
    what is written to it is lost, but the work goes on (the first lost write stopped training or explaining without
    a word) and the command ends with its own exit status. Any other error is raised: a bug, not the user's setup.

    A full disk gives the stream up for good too, for progress lines and messages (warnings, the closing error line)
    alike, rather than losing only the lines that did not fit: a log that stops where the disk filled up shows it,
    where one with lines missing in between would look whole; and the exit status still says how the command ended.
    A progress bar written as log lines goes through one as well, so that a library caller's stderr loses only its
    lines.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        self._attempt(self.stream.write, text)
        return len(text)  # written or lost, it is done with

    def flush(self) -> None:
        self._attempt(self.stream.flush)

    def __getattr__(self, name: str) -> Any:  # isatty, fileno, encoding: the stream's own
        return getattr(self.stream, name)

    def _attempt(self, action: Callable[..., object], *args: str) -> None:
        if self.gone:
            return
        try:
            action(*args)
        except OSError as exc:
            if exc.errno not in GONE:
                raise
            self.gone = True
