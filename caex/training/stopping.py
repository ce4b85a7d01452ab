"""Stop a training run on SIGINT/SIGTERM (and SIGUSR1/SIGUSR2/SIGHUP) within a few iterations, after saving its
checkpoint.

A scheduler (SLURM, Kubernetes) sends SIGTERM some seconds before it kills a
job, and Ctrl-C is SIGINT: without this, either would lose every iteration
since the last periodic checkpoint (up to ``ckpt_every``). The first signal
only sets :attr:`StopRequest.signum`; the loop sees it within ``log_every``
iterations (under DDP, a signal to any rank stops every rank at once), saves the checkpoint and stops. A
second Ctrl-C aborts at once, for when saving itself hangs.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from caex.errors import Interrupted

#: Ctrl-C, a scheduler's stop (SLURM's SIGTERM), its early warnings (``#SBATCH --signal=USR1@120``; SGE and LSF
#: send SIGUSR1/SIGUSR2) and a closed terminal: each checkpoints and stops; the last three only where they exist.
HANDLED = (signal.SIGINT, signal.SIGTERM,
           *(getattr(signal, name) for name in ("SIGUSR1", "SIGUSR2", "SIGHUP") if hasattr(signal, name)))


class StopRequest:
    """What the training loop polls: the first stop signal received, or ``None``."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def __call__(self, signum: int, frame: object) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: do not wait for the save
        if self.signum is None:
            self.signum = signum
            again = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
            with contextlib.suppress(OSError):  # a hung-up terminal: the stop must not fail on its notice
                end_bar = "\n" if sys.stderr.isatty() else ""  # a terminal's bar has no line end yet; a log's has
                print(f"{end_bar}{signal.Signals(signum).name}: stopping within a few iterations, checkpoint "
                      f"first{again}", file=sys.stderr, flush=True)

    def error(self, iteration: int, signum: int) -> Interrupted:
        """The run's end; ``signum`` is the signal that stopped it, received by this rank or another."""
        return Interrupted(f"stopped by {signal.Signals(signum).name} after iteration {iteration}, checkpoint saved",
                           exit_code=128 + signum)


@contextmanager
def stop_requests(enabled: bool = True) -> Iterator[StopRequest]:
    """Route the stop signals (:data:`HANDLED`) to a :class:`StopRequest` while the block runs (main thread only: Python
    delivers signals there; elsewhere, or when not ``enabled``, the default handling stays)."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return
    # A signal the process ignores stays ignored: `nohup caex train` must not stop when the terminal closes.
    previous = {signum: signal.signal(signum, request) for signum in HANDLED
                if signal.getsignal(signum) is not signal.SIG_IGN}
    try:
        yield request
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
