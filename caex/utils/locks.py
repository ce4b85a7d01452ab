"""Locks that a forked child (a DataLoader worker, a multiprocessing pool) does not inherit held."""

from __future__ import annotations

import os
import threading


class ForkSafeLock:
    """A re-entrant lock, made afresh in a forked child: one held by another thread of the parent at the fork would
    be held there for good. Take it as ``with lock.lock:``, so that the lock released is the one acquired."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        if hasattr(os, "register_at_fork"):  # not on Windows, which does not fork
            os.register_at_fork(after_in_child=self._renew)

    def _renew(self) -> None:
        self.lock = threading.RLock()
